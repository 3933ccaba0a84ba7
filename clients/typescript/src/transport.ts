import type { ServerEvent } from "./types.js";

/** The part of the WebSocket interface the SDK uses: the browser's and the `ws` package's. */
export interface SocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type SocketConstructor = new (url: string) => SocketLike;

const OPEN = 1;

export interface TransportHandlers {
  open(): void;
  frame(ev: ServerEvent): void;
  /** Called once, whoever ends the socket. */
  closed(code: number, reason: string): void;
}

/** One WebSocket: JSON frames in and out, one `closed` callback however it ends. */
export class Transport {
  private readonly socket: SocketLike;
  private ended = false;

  constructor(Ctor: SocketConstructor, url: string, private readonly handlers: TransportHandlers) {
    this.socket = new Ctor(url);
    this.socket.onopen = () => {
      if (!this.ended) handlers.open();
    };
    this.socket.onmessage = (ev) => {
      if (this.ended || typeof ev.data !== "string") return;
      let parsed: unknown;
      try {
        parsed = JSON.parse(ev.data);
      } catch {
        return; // the server sends JSON only; anything else is not ours to interpret
      }
      if (parsed !== null && typeof parsed === "object" && typeof (parsed as { type?: unknown }).type === "string") {
        handlers.frame(parsed as ServerEvent);
      }
    };
    this.socket.onclose = (ev) => this.end(ev.code, ev.reason);
    // An error is always followed by a close; the close carries what the SDK needs.
    this.socket.onerror = () => {};
  }

  /** Sends a frame if the socket is open. */
  send(frame: object): boolean {
    if (this.ended || this.socket.readyState !== OPEN) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  /** Closes the socket now; `closed` is reported at once, not when the peer answers. */
  drop(reason: string): void {
    if (this.ended) return;
    try {
      this.socket.close(1000, reason);
    } catch {
      // Still connecting in some implementations, or already closing: nothing more to do.
    }
    this.end(1000, reason);
  }

  private end(code: number, reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.handlers.closed(code, reason);
  }
}
