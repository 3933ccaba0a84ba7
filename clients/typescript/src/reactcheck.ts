import type { Op } from "./ops.js";
import type { Listed, Rest } from "./rest.js";
import type { RoomEvent } from "./types.js";

/** Message locations remembered (the newest this many). */
const LOCATIONS_MAX = 10_000;
/** Most event pages one check reads before it asks again later. */
const CHECK_PAGES_MAX = 10;
const PAGE = 500;

/** Where each message the SDK has seen lives (room, seq): from `message` events and from the
 * REST listings. A react names only its message; checking it needs the room and the seq. */
export class MessageLocations {
  private readonly at = new Map<number, { room: number; seq: number }>();

  get(id: number): { room: number; seq: number } | undefined {
    return this.at.get(id);
  }

  add(id: number, room: number, seq: number): void {
    if (this.at.has(id)) return;
    this.at.set(id, { room, seq });
    if (this.at.size > LOCATIONS_MAX) {
      const oldest = this.at.keys().next().value;
      if (oldest !== undefined) this.at.delete(oldest);
    }
  }

  /** History and search list messages; the events listing lists messages among other events. */
  observe(items: readonly Listed[]): void {
    for (const it of items) {
      if (it.id !== undefined && (it.type === undefined || it.type === "message")) this.add(it.id, it.room_id, it.seq);
    }
  }
}

/**
 * A react with no answer yet: did it commit, or change nothing (the server sends nothing then)?
 * Reads the message as it stands (its `reactions[].me`), THEN the room's events since the react
 * was first sent: an event of this react committed before the first read is in the second.
 * Found → that event; not found and the reaction already as asked → null (nothing changed);
 * otherwise not processed yet → undefined (ask again later). A message never seen cannot be
 * checked: null (API.md).
 */
export async function checkReact(op: Op, api: Rest, locations: MessageLocations): Promise<RoomEvent | null | undefined> {
  if (op.frame.type !== "react") return undefined;
  const { message_id: id, emoji, on } = op.frame;
  const at = locations.get(id);
  if (at === undefined || op.floor === null) return null;
  const [m] = await api.history(at.room, { beforeSeq: at.seq + 1, limit: 1 });
  let after = op.floor;
  for (let page = 0; page < CHECK_PAGES_MAX; page++) {
    const events = await api.events(at.room, { afterSeq: after, limit: PAGE });
    const mine = events.find(op.matches);
    if (mine !== undefined) return mine;
    if (events.length < PAGE) {
      const asAsked = m?.id === id && m.reactions.some((r) => r.emoji === emoji && r.me) === on;
      return asAsked ? null : undefined;
    }
    after = events[events.length - 1]!.seq;
  }
  return undefined;
}
