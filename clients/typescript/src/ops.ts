import { LivechatError } from "./errors.js";
import { retryable, retryAfter } from "./outbox.js";
import type { RoomEvent, ServerError } from "./types.js";

export type OpFrame =
  | { type: "edit"; message_id: number; content: string }
  | { type: "delete"; message_id: number }
  | { type: "react"; message_id: number; emoji: string; on: boolean };

/** An edit, delete or react waiting for its room event (the server's answer to the actor). */
export interface Op {
  readonly frame: OpFrame;
  /** The room event that answers it: same type and message, by the user, same emoji/on. */
  readonly matches: (ev: RoomEvent) => boolean;
  /** Events at or below this seq of the message's room predate the op (null: room unknown). */
  floor: number | null;
  sent: boolean;
  everSent: boolean;
  retryTimer: ReturnType<typeof setTimeout> | undefined;
  checkTimer: ReturnType<typeof setTimeout> | undefined;
  settle(v: RoomEvent | null, err?: LivechatError): void;
}

export interface OpsHost {
  send(frame: OpFrame): boolean;
  /** The position of the message's room now, if the SDK knows the room. */
  floorOf(messageId: number): number | null;
  /** A react that got no answer yet: is its event committed, or did it change nothing?
   * `undefined`: cannot tell yet, ask again later. */
  check(op: Op): Promise<RoomEvent | null | undefined>;
}

/** How long a react waits for its event before asking the server whether it changed anything. */
export const REACT_CHECK_MS = 500;

/**
 * Pending edits, deletes and reacts. Sent at once while the connection is open (their order
 * does not matter: each names its message), queued while it is not, and sent again on the next
 * connection unless their event arrived in the resume replay. `unavailable` / `rate_limited`
 * send them again after `retry_after_ms`; other errors reject them.
 */
export class Ops {
  private readonly pending: Op[] = [];
  private open = false;

  constructor(private readonly host: OpsHost) {}

  add(frame: OpFrame, matches: (ev: RoomEvent) => boolean): Promise<RoomEvent | null> {
    return new Promise((resolve, reject) => {
      const op: Op = {
        frame,
        matches,
        floor: null,
        sent: false,
        everSent: false,
        retryTimer: undefined,
        checkTimer: undefined,
        settle: (v, err) => {
          const i = this.pending.indexOf(op);
          if (i < 0) return;
          this.pending.splice(i, 1);
          clearTimeout(op.retryTimer);
          clearTimeout(op.checkTimer);
          if (err === undefined) resolve(v);
          else reject(err);
        },
      };
      this.pending.push(op);
      this.transmit(op);
    });
  }

  setOpen(open: boolean): void {
    this.open = open;
    for (const op of this.pending) {
      if (!open) {
        op.sent = false;
        clearTimeout(op.retryTimer);
        clearTimeout(op.checkTimer);
        op.retryTimer = op.checkTimer = undefined;
      } else if (!op.sent) {
        this.transmit(op);
      }
    }
  }

  /** A delivered room event: settles the oldest op it answers. */
  onEvent(ev: RoomEvent): void {
    const op = this.pending.find((o) => o.everSent && o.matches(ev) && (o.floor === null || ev.seq > o.floor));
    op?.settle(ev);
  }

  /** An `error` whose `ref` is a message id: true if it answered a pending op. */
  onError(ref: number, err: ServerError): boolean {
    const op = this.pending.find((o) => o.sent && o.frame.message_id === ref);
    if (op === undefined) return false;
    if (retryable(err.code)) {
      op.sent = false;
      clearTimeout(op.checkTimer);
      op.retryTimer = setTimeout(() => {
        op.retryTimer = undefined;
        this.transmit(op);
      }, err.retry_after_ms ?? 1000);
    } else {
      op.settle(null, new LivechatError(err.code, err.message, retryAfter(err)));
    }
    return true;
  }

  close(err: LivechatError): void {
    for (const op of [...this.pending]) op.settle(null, err);
    this.open = false;
  }

  private transmit(op: Op): void {
    if (!this.open || op.sent || !this.host.send(op.frame)) return;
    op.sent = true;
    if (!op.everSent) {
      op.everSent = true;
      op.floor = this.host.floorOf(op.frame.message_id);
    }
    if (op.frame.type === "react") this.armCheck(op);
  }

  private armCheck(op: Op): void {
    clearTimeout(op.checkTimer);
    op.checkTimer = setTimeout(() => {
      op.checkTimer = undefined;
      if (!op.sent) return;
      this.host.check(op).then(
        (answer) => {
          if (answer === undefined) {
            if (op.sent) this.armCheck(op);
          } else {
            op.settle(answer);
          }
        },
        () => {
          if (op.sent) this.armCheck(op);
        },
      );
    }, REACT_CHECK_MS);
  }
}
