type State = "start" | "stop";

interface Room {
  /** A start was sent and no stop since. */
  active: boolean;
  lastStartAt: number;
  lastSentAt: number;
  /** What waits for the gap to pass (only the latest wish is kept). */
  pending: State | null;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/** The server relays at most `limits.typing_per_sec` (default 1) typing frames per user and
 * room and drops the rest silently. A "stop" that ends a relayed "start" is exempt on current
 * servers, but earlier ones counted it too: frames of a room are spaced this far, so a stop is
 * never lost on either. */
export const TYPING_GAP_MS = 1000;

/**
 * Typing indicators of one connection, per room: "start" at most once per `intervalMs` while
 * typing goes on, "stop" only after a start, and frames at least `gapMs` apart so the server's
 * throttle never swallows a stop (a stop that comes too soon waits for the gap).
 */
export class Typing {
  private readonly rooms = new Map<number, Room>();

  constructor(
    /** Sends a frame now, or returns false when it cannot (then the wish is dropped). */
    private readonly send: (room: number, state: State) => boolean,
    /** Whether frames must wait (a `sync` is in flight); `flush()` is called when it ends. */
    private readonly held: () => boolean,
    private readonly intervalMs: number,
    private readonly gapMs = TYPING_GAP_MS,
  ) {}

  set(room: number, state: State): void {
    const r = this.room(room);
    const now = Date.now();
    if (r.pending === state) return;
    if (state === "start") {
      // Typing again before a waiting stop went out: the start sent before still holds.
      if (r.pending === "stop") return this.cancel(r);
      if (r.active && now - r.lastStartAt < this.intervalMs) return;
    } else {
      // A start that never went out needs no stop.
      if (r.pending === "start" && !r.active) return this.cancel(r);
      if (!r.active) return;
    }
    r.pending = state;
    this.pump(room, r);
  }

  /** Sends what waited for a `sync` to end. */
  flush(): void {
    for (const [room, r] of this.rooms) this.pump(room, r);
  }

  /** The connection is gone: the server forgets typing with it. */
  reset(): void {
    for (const r of this.rooms.values()) clearTimeout(r.timer);
    this.rooms.clear();
  }

  private pump(room: number, r: Room): void {
    if (r.pending === null || r.timer !== undefined || this.held()) return;
    const wait = r.lastSentAt + this.gapMs - Date.now();
    if (wait > 0) {
      r.timer = setTimeout(() => {
        r.timer = undefined;
        this.pump(room, r);
      }, wait);
      return;
    }
    const state = r.pending;
    r.pending = null;
    if (!this.send(room, state)) return;
    r.lastSentAt = Date.now();
    r.active = state === "start";
    if (r.active) r.lastStartAt = r.lastSentAt;
  }

  private cancel(r: Room): void {
    clearTimeout(r.timer);
    r.timer = undefined;
    r.pending = null;
  }

  private room(room: number): Room {
    let r = this.rooms.get(room);
    if (r === undefined) {
      r = { active: false, lastStartAt: 0, lastSentAt: -Infinity, pending: null, timer: undefined };
      this.rooms.set(room, r);
    }
    return r;
  }
}
