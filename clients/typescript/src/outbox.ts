import { LivechatError } from "./errors.js";
import type { Message, ServerError } from "./types.js";

/** A `message` frame as the SDK sends it. */
export interface MessageFrame {
  type: "message";
  room_id: number;
  content: string;
  client_msg_id: string;
  reply_to?: number;
  mentions?: number[];
}

interface PendingSend {
  frame: MessageFrame;
  resolve(m: Message): void;
  reject(e: LivechatError): void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/** Codes after which the same write is sent again (README "Protocol notes": retry with the same id). */
export function retryable(code: string): boolean {
  return code === "unavailable" || code === "rate_limited";
}

/**
 * Sends not yet acknowledged, in the order `send()` was called. One is in flight at a time:
 * the server stores a connection's messages in the order they arrive, but a refusal
 * (`unavailable`, `rate_limited`) of one does not stop the next from committing, so only a
 * window of one keeps the room's seq order equal to the send order across retries. On a new
 * connection the head is sent again with the same `client_msg_id`: the server stores it at
 * most once and echoes the original.
 */
export class Outbox {
  private readonly queue: PendingSend[] = [];
  private open = false;
  private inFlight = false;
  private hold: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly transmit: (frame: MessageFrame) => boolean) {}

  get size(): number {
    return this.queue.length;
  }

  add(frame: MessageFrame, timeoutMs: number | undefined): Promise<Message> {
    return new Promise<Message>((resolve, reject) => {
      const p: PendingSend = { frame, resolve, reject, timer: undefined };
      if (timeoutMs !== undefined) {
        p.timer = setTimeout(() => {
          this.remove(p);
          reject(new LivechatError("timeout", `send not acknowledged within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this.queue.push(p);
      this.pump();
    });
  }

  /** Sends go out only while the connection is open (synced); closing forgets what was in flight. */
  setOpen(open: boolean): void {
    this.open = open;
    if (!open) {
      this.inFlight = false;
      clearTimeout(this.hold);
      this.hold = undefined;
    }
    this.pump();
  }

  /** A `message` of the user: true if it acknowledged a pending send. */
  onMessage(m: Message): boolean {
    const p = this.queue.find((q) => q.frame.client_msg_id === m.client_msg_id);
    if (p === undefined) return false;
    this.remove(p);
    p.resolve(m);
    return true;
  }

  /** An `error` whose `ref` is a string: true if it answered a pending send. */
  onError(ref: string, err: ServerError): boolean {
    const p = this.queue.find((q) => q.frame.client_msg_id === ref);
    if (p === undefined) return false;
    if (retryable(err.code)) {
      // Keep it at the head, and everything behind it waiting, until the server can take it.
      if (p === this.queue[0]) {
        this.inFlight = false;
        clearTimeout(this.hold);
        this.hold = setTimeout(() => {
          this.hold = undefined;
          this.pump();
        }, err.retry_after_ms ?? 1000);
      }
      return true;
    }
    this.remove(p);
    p.reject(new LivechatError(err.code, err.message, retryAfter(err)));
    return true;
  }

  /** Rejects every pending send (the client is closed). */
  close(err: LivechatError): void {
    for (const p of this.queue.splice(0)) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.setOpen(false);
  }

  private remove(p: PendingSend): void {
    const i = this.queue.indexOf(p);
    if (i < 0) return;
    clearTimeout(p.timer);
    this.queue.splice(i, 1);
    if (i === 0) {
      this.inFlight = false;
      this.pump();
    }
  }

  private pump(): void {
    const head = this.queue[0];
    if (!this.open || this.inFlight || this.hold !== undefined || head === undefined) return;
    this.inFlight = this.transmit(head.frame);
  }
}

export function retryAfter(err: ServerError): { retryAfterMs?: number } {
  return err.retry_after_ms === undefined ? {} : { retryAfterMs: err.retry_after_ms };
}
