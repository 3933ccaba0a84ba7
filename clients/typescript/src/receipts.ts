import type { StatusUpdateEvent } from "./types.js";

type Frame = { type: "status_update"; message_id: number; delivered?: boolean; read?: boolean };

interface Marks {
  /** Highest message id asked for (by `markRead` / `markDelivered`). */
  wantRead: number;
  wantDelivered: number;
  /** Highest sent on this connection or confirmed by the server's relay. */
  sentRead: number;
  sentDelivered: number;
  confirmedRead: number;
  confirmedDelivered: number;
}

/**
 * Read and delivery receipts per room. The server's watermarks only move forward, so a receipt
 * goes out only when it is above what was already sent for that room (ids of one room grow with
 * its seqs), and a burst of them coalesces into the highest. Receipts the server's
 * `status_update` relay has not confirmed are sent again on the next connection.
 */
export class Receipts {
  private readonly marks = new Map<number, Marks>();
  private open = false;

  constructor(private readonly send: (frame: Frame) => boolean) {}

  mark(room: number, messageId: number, read: boolean): void {
    const m = this.marksOf(room);
    if (read) m.wantRead = Math.max(m.wantRead, messageId);
    m.wantDelivered = Math.max(m.wantDelivered, messageId);
    this.flushRoom(m);
  }

  /** The server's relay of a receipt of this user. */
  onStatus(ev: StatusUpdateEvent, me: number): void {
    if (ev.user_id !== me) return;
    const m = this.marks.get(ev.room_id);
    if (m === undefined) return;
    // The relay carries the message's booleans, not what was reported: it proves only that a
    // receipt of this user for this message committed, so it confirms up to what was sent.
    m.confirmedRead = Math.max(m.confirmedRead, Math.min(ev.message_id, m.sentRead));
    m.confirmedDelivered = Math.max(m.confirmedDelivered, Math.min(ev.message_id, m.sentDelivered));
  }

  setOpen(open: boolean): void {
    this.open = open;
    for (const m of this.marks.values()) {
      if (!open) {
        m.sentRead = m.confirmedRead;
        m.sentDelivered = m.confirmedDelivered;
      } else {
        this.flushRoom(m);
      }
    }
  }

  private flushRoom(m: Marks): void {
    if (!this.open) return;
    if (m.wantRead > m.sentRead) {
      if (!this.send({ type: "status_update", message_id: m.wantRead, read: true })) return;
      m.sentRead = m.wantRead;
      m.sentDelivered = Math.max(m.sentDelivered, m.wantRead);
    }
    if (m.wantDelivered > m.sentDelivered) {
      if (!this.send({ type: "status_update", message_id: m.wantDelivered, delivered: true })) return;
      m.sentDelivered = m.wantDelivered;
    }
  }

  private marksOf(room: number): Marks {
    let m = this.marks.get(room);
    if (m === undefined) {
      m = { wantRead: 0, wantDelivered: 0, sentRead: 0, sentDelivered: 0, confirmedRead: 0, confirmedDelivered: 0 };
      this.marks.set(room, m);
    }
    return m;
  }
}
