// The open room's messages: the newest page of history, older pages on demand, live room
// events applied in place, this page's unacknowledged sends, "seen by" and read marking.
//
// Merging history with live events: when the room opens, every event up to the SDK's
// `lastSeq` has already been delivered and is reflected in the history read that follows,
// so those are skipped (`floor`); events after it that arrive while the page loads wait in
// `buffer` and are applied after it, messages deduplicated by id (edits and deletes set
// state, so applying one that history already shows changes nothing).

import type { HistoryMessage, LivechatClient, Member, Message, Room, RoomEvent } from "livechat-client";
import { errorText, h, randomId } from "./dom";
import type { Directory } from "./members";
import { fromEvent, fromHistory, type Item, type MessageView, type Pending, renderItem, renderPending, setTabStop } from "./message";

const PAGE = 50;

export interface TimelineHooks {
  /** The room was read up to its newest message. */
  read(roomId: number): void;
  reply(item: Item): void;
  /** A message arrived from this user: they stopped typing. */
  spoke(roomId: number, userId: number): void;
  /** The number of unacknowledged sends changed. */
  pendingChanged(): void;
  /** A message came from someone whose name the page does not know yet. */
  unknownSender(): void;
}

export class Timeline {
  readonly el: HTMLElement;
  readonly title: HTMLElement;
  private scroller: HTMLElement;
  private list: HTMLOListElement;
  private older: HTMLButtonElement;
  private status: HTMLElement;
  private announcer: HTMLElement;
  private room: Room | null = null;
  private items = new Map<number, Item>();
  /** Items in seq order; the list shows them in this order, then this room's pending sends. */
  private order: Item[] = [];
  private pending = new Map<string, Pending>();
  private floor = 0;
  private buffer: RoomEvent[] | null = null;
  /** While an older page loads: events for messages not loaded yet, applied once they are. */
  private orphans: RoomEvent[] | null = null;
  private readSeq = 0;
  /** Announcements waiting for their sender's name (a member who joined a moment ago). */
  private unnamed: Message[] = [];
  /** The message Tab lands on in the list (roving tabindex): the last one focused, else the newest. */
  private current: Item | null = null;
  private visible = new Set<Element>();
  private observer: IntersectionObserver;
  private view: MessageView;

  constructor(
    private client: LivechatClient,
    private dir: Directory,
    private me: number,
    private hooks: TimelineHooks,
  ) {
    this.title = h("h2", { id: "room-title", tabindex: -1 }, "");
    this.older = h("button", { type: "button", class: "older", hidden: true, onclick: () => void this.loadOlder() }, "Load older messages");
    this.status = h("p", { class: "timeline-status", role: "status" });
    this.list = h("ol", { class: "messages", "aria-labelledby": "room-title", "aria-describedby": "messages-keys" });
    this.list.addEventListener("focusin", (ev) => {
      const li = (ev.target as Element).closest("li.msg[data-id]");
      const item = li && this.items.get(Number((li as HTMLElement).dataset.id));
      if (item) this.setCurrent(item);
    });
    this.list.addEventListener("keydown", (ev) => this.onKey(ev));
    this.scroller = h("div", { class: "scroller" }, this.older, this.status, this.list);
    this.announcer = h("div", { class: "sr-only", "aria-live": "polite", id: "announcer" });
    this.el = h(
      "section",
      { class: "timeline", "aria-labelledby": "room-title" },
      this.scroller,
      this.announcer,
      h("p", { class: "sr-only", id: "messages-keys" }, "Up and down arrows move between messages; Tab reaches the actions of one."),
    );
    this.observer = new IntersectionObserver(
      (entries) => {
        for (const e of entries) {
          if (e.isIntersecting) this.visible.add(e.target);
          else this.visible.delete(e.target);
        }
        this.markRead();
      },
      { root: this.scroller },
    );
    for (const ev of ["focus", "visibilitychange"]) addEventListener(ev, () => this.markRead());
    this.view = this.messageView();
  }

  get roomId(): number | null {
    return this.room?.id ?? null;
  }

  /** Whether new messages of this room are on screen for someone looking at it now. */
  reading(roomId: number): boolean {
    return this.room?.id === roomId && this.attentive() && this.atBottom();
  }

  async open(room: Room): Promise<void> {
    this.room = room;
    this.items.clear();
    this.order = [];
    this.visible.clear();
    this.observer.disconnect();
    this.list.replaceChildren();
    this.older.hidden = true;
    this.readSeq = room.read_seq ?? 0;
    this.unnamed = [];
    this.current = null;
    this.title.textContent = room.name;
    this.status.textContent = "Loading…";
    let page: HistoryMessage[] = [];
    // A reaction event cannot be deduplicated against history (history has counts, not who),
    // so if one came in while the page loaded, read the page again rather than count it twice.
    for (let attempt = 0; attempt < 3; attempt++) {
      this.floor = this.client.lastSeq(room.id);
      this.buffer = [];
      try {
        page = await this.client.history(room.id, { limit: PAGE });
      } catch (e) {
        if (this.room !== room) return;
        this.buffer = null;
        this.status.replaceChildren(`Could not load messages: ${errorText(e)} `, h("button", { type: "button", onclick: () => void this.open(room) }, "Retry"));
        return;
      }
      if (this.room !== room) return;
      if (!this.buffer.some((e) => e.type === "reaction")) break;
    }
    this.status.textContent = "";
    for (const m of page.reverse()) this.insert(this.learn(m));
    this.older.hidden = page.length < PAGE;
    const buffered = this.buffer ?? [];
    this.buffer = null;
    for (const ev of buffered) this.apply(ev);
    for (const p of this.pending.values()) if (p.roomId === room.id) this.list.append(p.el);
    this.scrollToBottom();
  }

  onEvent(ev: RoomEvent): void {
    if (!this.room || ev.room_id !== this.room.id || ev.seq <= this.floor) return;
    if (this.buffer) this.buffer.push(ev);
    else this.apply(ev);
  }

  /** Sends a message: shown as pending at once, replaced by the committed one on its echo. */
  send(content: string, replyTo: number | null, mentions: number[]): void {
    if (!this.room) return;
    const p: Pending = { clientMsgId: randomId(), roomId: this.room.id, content, replyTo, mentions, error: "", el: h("li") };
    this.pending.set(p.clientMsgId, p);
    renderPending(p, this.view);
    this.list.append(p.el);
    this.scrollToBottom();
    this.dispatch(p);
  }

  /** Recomputes "seen by": each member under the newest of my messages their read_seq covers. */
  seenBy(members: readonly Member[]): void {
    const mine = this.order.filter((i) => i.senderId === this.me && !i.deleted);
    const seen = new Map<Item, string[]>();
    for (const m of members) {
      if (m.user_id === this.me) continue;
      const last = mine.findLast((i) => i.seq <= m.read_seq);
      if (last) seen.set(last, [...(seen.get(last) ?? []), m.username]);
    }
    for (const item of this.order) {
      const names = seen.get(item) ?? [];
      if (names.join() === item.seenBy.join()) continue;
      item.seenBy = names;
      renderItem(item, this.view);
    }
  }

  /** Re-renders every message, e.g. once member names are known. */
  refresh(): void {
    for (const item of this.order) renderItem(item, this.view);
    for (const p of this.pending.values()) renderPending(p, this.view);
  }

  /** The member list was read: what is still unnamed stays so, announce it anyway. */
  membersLoaded(): void {
    const waiting = this.unnamed;
    this.unnamed = [];
    for (const m of waiting) this.announce(m);
  }

  private apply(ev: RoomEvent): void {
    if (ev.type === "message") {
      this.onMessage(ev);
      return;
    }
    if (ev.type === "member") return;
    const item = this.items.get(ev.message_id);
    if (!item) {
      this.orphans?.push(ev);
      return;
    }
    if (ev.type === "edit") {
      item.content = ev.content;
      item.editedAt = ev.edited_at;
    } else if (ev.type === "delete") {
      item.deleted = true;
      item.content = "";
      item.editing = false;
      item.reactions.clear();
    } else {
      const r = item.reactions.get(ev.emoji) ?? { count: 0, me: false };
      r.count += ev.on ? 1 : -1;
      if (ev.user_id === this.me) r.me = ev.on;
      if (r.count > 0) item.reactions.set(ev.emoji, r);
      else item.reactions.delete(ev.emoji);
    }
    item.error = "";
    renderItem(item, this.view);
    if (ev.type !== "reaction") this.renderRepliesTo([item.id]);
  }

  private onMessage(m: Message): void {
    const p = m.client_msg_id ? this.pending.get(m.client_msg_id) : undefined;
    if (p && m.sender_id === this.me) this.drop(p);
    if (this.items.has(m.id)) return;
    const stick = this.atBottom() || m.sender_id === this.me;
    this.insert(fromEvent(m));
    this.hooks.spoke(m.room_id, m.sender_id);
    if (m.sender_id !== this.me && this.dir.has(m.sender_id)) this.announce(m);
    else if (m.sender_id !== this.me) {
      this.unnamed.push(m);
      this.hooks.unknownSender();
    }
    if (stick) this.scrollToBottom();
  }

  private learn(m: HistoryMessage): Item {
    this.dir.learn(m.sender.id, m.sender.username);
    return fromHistory(m);
  }

  /** Puts an item in seq order (binary search: live items land at the end, older pages at the start). */
  private insert(item: Item): void {
    let lo = 0;
    let hi = this.order.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.order[mid].seq < item.seq) lo = mid + 1;
      else hi = mid;
    }
    const next = this.order[lo];
    this.order.splice(lo, 0, item);
    this.items.set(item.id, item);
    renderItem(item, this.view);
    this.list.insertBefore(item.el, next ? next.el : this.list.querySelector(".pending"));
    this.observer.observe(item.el);
    // Tab lands on the newest message, unless the reader is moving through the list.
    if (!next && !this.list.contains(document.activeElement)) this.setCurrent(item);
  }

  private setCurrent(item: Item): void {
    if (this.current === item) return;
    if (this.current) setTabStop(this.current, false);
    this.current = item;
    setTabStop(item, true);
  }

  private onKey(ev: KeyboardEvent): void {
    const li = ev.target as HTMLElement;
    if (!li.matches("li.msg[data-id]")) return;
    const at = this.order.findIndex((i) => i.el === li);
    const to = { ArrowUp: at - 1, ArrowDown: at + 1, Home: 0, End: this.order.length - 1 }[ev.key];
    if (to === undefined || !this.order[to]) return;
    ev.preventDefault();
    this.order[to].el.focus();
  }

  private async loadOlder(): Promise<void> {
    const room = this.room;
    const oldest = this.order[0];
    if (!room || !oldest) return;
    this.older.disabled = true;
    this.orphans = [];
    try {
      const page = await this.client.history(room.id, { limit: PAGE, beforeSeq: oldest.seq });
      if (this.room !== room) return;
      // Prepending moves everything down: keep what the reader was looking at in place.
      const fromBottom = this.scroller.scrollHeight - this.scroller.scrollTop;
      const added = page.filter((m) => !this.items.has(m.id)).map((m) => this.learn(m));
      for (const item of added) this.insert(item);
      this.older.hidden = page.length < PAGE;
      const orphans = this.orphans;
      this.orphans = null;
      for (const ev of orphans) this.apply(ev);
      this.renderRepliesTo(added.map((i) => i.id));
      this.scroller.scrollTop = this.scroller.scrollHeight - fromBottom;
      this.status.textContent = page.length < PAGE ? "This is the beginning of the room." : "";
    } catch (e) {
      this.status.textContent = `Could not load older messages: ${errorText(e)}`;
    } finally {
      this.orphans = null;
      this.older.disabled = false;
    }
  }

  private dispatch(p: Pending): void {
    const sent = this.client.send(p.roomId, p.content, {
      clientMsgId: p.clientMsgId,
      ...(p.replyTo !== null ? { replyTo: p.replyTo } : {}),
      ...(p.mentions.length ? { mentions: p.mentions } : {}),
    });
    this.hooks.pendingChanged();
    sent
      // The echo usually comes first as an event; the resolved message covers the other order.
      .then((m) => {
        this.drop(p);
        this.onEvent(m);
      })
      .catch((e) => {
        if (!this.pending.has(p.clientMsgId)) return;
        p.error = errorText(e);
        renderPending(p, this.view);
        this.hooks.pendingChanged();
      });
  }

  private drop(p: Pending): void {
    if (!this.pending.delete(p.clientMsgId)) return;
    p.el.remove();
    this.hooks.pendingChanged();
  }

  private renderRepliesTo(ids: number[]): void {
    const set = new Set(ids);
    for (const item of this.order) if (item.replyTo !== null && set.has(item.replyTo)) renderItem(item, this.view);
  }

  /** Marks the newest message on screen read, while the page is looked at. */
  private markRead(): void {
    const room = this.room;
    if (!room || !this.attentive()) return;
    let newest: Item | undefined;
    for (const el of this.visible) {
      const item = this.items.get(Number((el as HTMLElement).dataset.id));
      if (item && (!newest || item.seq > newest.seq)) newest = item;
    }
    if (!newest) return;
    if (newest.seq > this.readSeq) {
      this.readSeq = newest.seq;
      this.client.markRead(room.id, newest.id);
    }
    if (newest === this.order[this.order.length - 1]) this.hooks.read(room.id);
  }

  private attentive(): boolean {
    return document.visibilityState === "visible" && document.hasFocus();
  }

  private atBottom(): boolean {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 48;
  }

  private scrollToBottom(): void {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  private announce(m: Message): void {
    const text = `${this.dir.name(m.sender_id)}: ${m.content}`;
    this.announcer.textContent = text.length > 140 ? `${text.slice(0, 139)}…` : text;
  }

  private messageView(): MessageView {
    const fail = (item: Item) => (e: unknown) => {
      item.error = errorText(e);
      renderItem(item, this.view);
    };
    return {
      me: this.me,
      isCurrent: (item) => item === this.current,
      name: (id) => this.dir.name(id),
      find: (id) => this.items.get(id),
      reply: (item) => this.hooks.reply(item),
      react: (item, emoji) => {
        const on = !item.reactions.get(emoji)?.me;
        this.client.react(item.id, emoji, on).catch(fail(item));
      },
      startEdit: (item) => {
        item.editing = true;
        renderItem(item, this.view);
      },
      saveEdit: (item, content) => {
        const text = content.trim();
        if (!text || text === item.content) {
          item.editing = false;
          renderItem(item, this.view);
          item.el.focus();
          return;
        }
        this.client.edit(item.id, text).then(() => {
          item.editing = false;
          renderItem(item, this.view);
          item.el.focus();
        }, fail(item));
      },
      cancelEdit: (item) => {
        item.editing = false;
        renderItem(item, this.view);
        item.el.focus();
      },
      remove: (item) => {
        if (confirm("Delete this message for everyone?")) this.client.delete(item.id).catch(fail(item));
      },
      retry: (p) => {
        p.error = "";
        renderPending(p, this.view);
        this.dispatch(p);
      },
      discard: (p) => this.drop(p),
    };
  }
}
