import type { RoomEvent } from "./types.js";

interface Cursor {
  /** Highest seq delivered: everything up to it was delivered once, in order. */
  last: number;
  /** Events past a gap, waiting for the seqs before them. */
  early: Map<number, RoomEvent>;
}

/** The result of {@link RoomOrder.accept}: events now deliverable, in seq order. */
export interface Accepted {
  deliver: RoomEvent[];
  /** The room has events waiting behind a missing seq: sync it from {@link RoomOrder.last}. */
  gap: boolean;
}

/**
 * Per room: delivers each room event once, in seq order. Pure logic, no I/O.
 *
 * Rooms are added with the position to continue from (`track`), or on their first event when
 * unknown (a room joined while connected: its stream starts with the join). A `leave` of the
 * user removes its room; later events of that room are dropped unless the user joins again.
 */
export class RoomOrder {
  private readonly cursors = new Map<number, Cursor>();
  /** Rooms the user left, with the seq of the leave. */
  private readonly left = new Map<number, number>();

  constructor(private readonly me: () => number) {}

  rooms(): number[] {
    return [...this.cursors.keys()];
  }

  has(room: number): boolean {
    return this.cursors.has(room);
  }

  wasLeft(room: number): boolean {
    return this.left.has(room);
  }

  /** Highest seq delivered in the room (0 when unknown). */
  last(room: number): number {
    return this.cursors.get(room)?.last ?? 0;
  }

  /** Follows a room from `position`, unless it is followed already. */
  track(room: number, position: number): void {
    if (this.cursors.has(room)) return;
    this.left.delete(room);
    this.cursors.set(room, { last: position, early: new Map() });
  }

  /** Stops following a room (the user is no longer a member). */
  forget(room: number): void {
    const c = this.cursors.get(room);
    if (c === undefined) return;
    this.cursors.delete(room);
    this.left.set(room, c.last);
  }

  hasGap(room: number): boolean {
    return (this.cursors.get(room)?.early.size ?? 0) > 0;
  }

  accept(ev: RoomEvent): Accepted {
    const room = ev.room_id;
    let c = this.cursors.get(room);
    if (c === undefined) {
      const leftAt = this.left.get(room);
      if (leftAt !== undefined && !(this.isMyMembership(ev, "join") && ev.seq > leftAt)) {
        return { deliver: [], gap: false };
      }
      this.left.delete(room);
      c = { last: ev.seq - 1, early: new Map() };
      this.cursors.set(room, c);
    }
    if (ev.seq <= c.last) return { deliver: [], gap: false };
    c.early.set(ev.seq, ev);
    const deliver: RoomEvent[] = [];
    for (let next = c.early.get(c.last + 1); next !== undefined; next = c.early.get(c.last + 1)) {
      c.early.delete(next.seq);
      c.last = next.seq;
      deliver.push(next);
      if (this.isMyMembership(next, "leave")) {
        // The leave is the last event of the room the user receives.
        this.forget(room);
        return { deliver, gap: false };
      }
    }
    return { deliver, gap: c.early.size > 0 };
  }

  private isMyMembership(ev: RoomEvent, action: "join" | "leave"): boolean {
    return ev.type === "member" && ev.action === action && ev.user_id === this.me();
  }
}
