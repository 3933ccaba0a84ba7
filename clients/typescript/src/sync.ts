import type { ServerError, SyncedEvent } from "./types.js";

/** Most rooms in one `sync` (the server's `sync.max_rooms` default). */
export const SYNC_MAX_ROOMS = 500;
/** A room whose sync made no progress (its replay failed) is synced again after this long. */
const RETRY_MS = 1000;

/** What the sync queue needs from the client. */
export interface SyncHost {
  send(frame: { type: "sync"; rooms: Record<string, number> }): boolean;
  /** Highest seq delivered in the room. */
  position(room: number): number;
  tracked(room: number): boolean;
  hasGap(room: number): boolean;
  /** The server left the room out of `synced` after `forbidden`: the user is not a member. */
  notMember(room: number): void;
  /** Nothing in flight and nothing wanted (the first time on a connection: the resume is done). */
  idle(): void;
}

interface InFlight {
  /** room → position sent. */
  rooms: Map<number, number>;
  /** A replay failed (`unavailable`): rooms left out of `synced` are synced again later. */
  replayFailed: boolean;
}

/**
 * The `sync` requests of one connection: at most one in flight, so each `synced` answers the
 * one sent, and an `error` without `ref` during it (`rate_limited`, `unavailable`,
 * `forbidden`) is known to be its own. At most {@link SYNC_MAX_ROOMS} rooms each; a room is
 * synced again while the server says `more` or events still wait behind a gap.
 */
export class SyncQueue {
  private readonly wanted = new Set<number>();
  private inFlight: InFlight | null = null;
  /** Send one even with no room: it ends the server's `resume=1` hold, or probes liveness. */
  private mustSend = false;
  private active = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly later = new Set<number>();
  private laterTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly host: SyncHost) {}

  /** A connection is up: sync these rooms (at least one `sync` goes out). */
  start(rooms: Iterable<number>): void {
    this.stop();
    this.active = true;
    for (const r of rooms) this.wanted.add(r);
    this.mustSend = true;
    this.pump();
  }

  /** The connection is gone: nothing is in flight any more. */
  stop(): void {
    this.active = false;
    this.inFlight = null;
    this.mustSend = false;
    this.wanted.clear();
    this.later.clear();
    clearTimeout(this.timer);
    clearTimeout(this.laterTimer);
    this.timer = this.laterTimer = undefined;
  }

  busy(): boolean {
    return this.inFlight !== null || this.timer !== undefined;
  }

  /** Sync a room from its position (a gap was seen). */
  request(room: number): void {
    if (this.inFlight?.rooms.has(room)) return; // checked again when its `synced` arrives
    this.wanted.add(room);
    this.pump();
  }

  /** A cheap round trip (an empty `sync`) whose `synced` proves the connection is alive. */
  probe(): void {
    if (this.busy() || this.wanted.size > 0) return;
    this.mustSend = true;
    this.pump();
  }

  onSynced(ev: SyncedEvent): void {
    const sent = this.inFlight;
    if (sent === null) return;
    this.inFlight = null;
    for (const [room, position] of sent.rooms) {
      if (!this.host.tracked(room)) continue; // left meanwhile
      if (!(String(room) in ev.rooms)) {
        if (sent.replayFailed) this.retryLater(room);
        else this.host.notMember(room);
      } else if (this.host.hasGap(room) || (ev.more && this.host.position(room) > position)) {
        if (this.host.position(room) > position) this.wanted.add(room);
        else this.retryLater(room);
      }
    }
    this.pump();
    if (this.inFlight === null && this.wanted.size === 0) this.host.idle();
  }

  /** An `error` without `ref`: true if it belongs to the `sync` in flight. */
  onError(err: ServerError): boolean {
    const sent = this.inFlight;
    if (sent === null) return false;
    switch (err.code) {
      case "rate_limited":
        // Refused whole: no `synced` will come. Send it again when the bucket has refilled.
        this.inFlight = null;
        for (const room of sent.rooms.keys()) this.wanted.add(room);
        if (sent.rooms.size === 0) this.mustSend = true;
        this.timer = setTimeout(() => {
          this.timer = undefined;
          this.pump();
        }, err.retry_after_ms ?? RETRY_MS);
        return true;
      case "unavailable":
        sent.replayFailed = true;
        return true;
      case "forbidden":
        return true;
      default:
        return false;
    }
  }

  private retryLater(room: number): void {
    this.later.add(room);
    this.laterTimer ??= setTimeout(() => {
      this.laterTimer = undefined;
      for (const r of this.later) this.wanted.add(r);
      this.later.clear();
      this.pump();
    }, RETRY_MS);
  }

  private pump(): void {
    if (!this.active || this.inFlight !== null || this.timer !== undefined) return;
    const rooms = new Map<number, number>();
    for (const room of this.wanted) {
      if (rooms.size >= SYNC_MAX_ROOMS) break;
      if (this.host.tracked(room)) rooms.set(room, this.host.position(room));
      else this.wanted.delete(room);
    }
    if (rooms.size === 0 && !this.mustSend) return;
    const frame = { type: "sync" as const, rooms: Object.fromEntries([...rooms].map(([r, p]) => [String(r), p])) };
    if (!this.host.send(frame)) return;
    for (const room of rooms.keys()) this.wanted.delete(room);
    this.mustSend = false;
    this.inFlight = { rooms, replayFailed: false };
  }
}
