// The caller's rooms with unread and mention badges, and the "new room" form.
//
// Counts come from GET /v1/rooms, which counts up to each room's `last_seq` at that moment;
// a live message counts on top only if its seq is past that, so a message that is both in
// the fetched count and delivered (or replayed) over the socket is counted once.

import type { LivechatClient, Message, Room, RoomEvent } from "livechat-client";
import { debounce, errorText, fill, h } from "./dom";

interface Entry {
  room: Room;
  unread: number;
  mentions: number;
}

/** A live message that raised a badge, kept until a reload of the counts covers its seq. */
interface Counted {
  seq: number;
  mention: boolean;
}

export class RoomList {
  readonly el: HTMLElement;
  private list: HTMLUListElement;
  private status: HTMLElement;
  private rooms = new Map<number, Entry>();
  private live = new Map<number, Counted[]>();
  private openId: number | null = null;
  /** Re-reads the counts, e.g. after a delete or a read in another tab. */
  readonly reload = debounce(() => void this.load(), 300);

  constructor(
    private client: LivechatClient,
    private me: number,
    private open: (room: Room) => void,
    /** Whether the open room's new messages are being read right now (no badge for them). */
    private reading: () => boolean,
    /** Told the unread total over all rooms after every change. */
    private total: (unread: number) => void,
  ) {
    this.list = h("ul", { class: "rooms", "aria-label": "Rooms" });
    this.status = h("p", { class: "form-status", role: "status" });
    this.el = h("nav", { class: "panel rooms-panel", id: "rooms", "aria-labelledby": "rooms-title" },
      h("h2", { id: "rooms-title" }, "Rooms"),
      this.list,
      this.createForm(),
    );
  }

  async load(): Promise<void> {
    let rooms: Room[];
    try {
      rooms = await this.client.rooms();
    } catch (e) {
      this.status.textContent = `Could not load rooms: ${errorText(e)}`;
      return;
    }
    this.rooms.clear();
    for (const room of rooms) {
      const after = (this.live.get(room.id) ?? []).filter((c) => c.seq > room.last_seq);
      this.live.set(room.id, after);
      this.rooms.set(room.id, {
        room,
        unread: (room.unread ?? 0) + after.length,
        mentions: (room.mentions ?? 0) + after.filter((c) => c.mention).length,
      });
    }
    this.render();
  }

  get(roomId: number): Room | undefined {
    return this.rooms.get(roomId)?.room;
  }

  first(): Room | undefined {
    return this.rooms.get(1)?.room ?? [...this.rooms.values()][0]?.room;
  }

  setOpen(roomId: number | null): void {
    this.openId = roomId;
    this.render();
  }

  /** The open room was read up to its newest message. */
  markRead(roomId: number): void {
    const e = this.rooms.get(roomId);
    this.live.set(roomId, []);
    if (!e || (e.unread === 0 && e.mentions === 0)) return;
    e.unread = 0;
    e.mentions = 0;
    this.render();
  }

  onEvent(ev: RoomEvent): void {
    if (ev.type === "message") this.onMessage(ev);
    else if (ev.type === "delete" && ev.room_id !== this.openId) this.reload();
    else if (ev.type === "member" && ev.user_id === this.me) {
      // Joined (a room created by someone else, or added to one) or removed: re-read the list.
      if (ev.action === "leave" && this.rooms.delete(ev.room_id)) this.render();
      this.reload();
    }
  }

  private onMessage(m: Message): void {
    if (m.sender_id === this.me || (m.room_id === this.openId && this.reading())) return;
    const mention = m.mentions.includes(this.me);
    const counted = this.live.get(m.room_id) ?? [];
    counted.push({ seq: m.seq, mention });
    this.live.set(m.room_id, counted);
    const e = this.rooms.get(m.room_id);
    if (!e) return;
    e.unread += 1;
    if (mention) e.mentions += 1;
    this.render();
  }

  private render(): void {
    const entries = [...this.rooms.values()].sort((a, b) => a.room.id - b.room.id);
    // A badge changing under a keyboard user must not take their focus away.
    const active = document.activeElement;
    const focused = active instanceof HTMLElement && this.list.contains(active) ? active.dataset.roomId : undefined;
    fill(
      this.list,
      entries.map(({ room, unread, mentions }) => {
        const label = [
          unread ? `${unread} unread` : "",
          mentions ? `${mentions} mention${mentions > 1 ? "s" : ""}` : "",
        ].filter(Boolean).join(", ");
        return h(
          "li",
          {},
          h(
            "button",
            {
              type: "button",
              class: unread ? "room-link has-unread" : "room-link",
              "data-room-id": room.id,
              "aria-current": room.id === this.openId ? "page" : null,
              onclick: () => this.open(room),
            },
            h("span", { class: "room-name" }, room.name),
            mentions ? h("span", { class: "badge mention-badge", "aria-hidden": "true" }, "@") : null,
            unread ? h("span", { class: "badge unread-badge", "aria-hidden": "true" }, unread > 999 ? "999+" : String(unread)) : null,
            label ? h("span", { class: "sr-only" }, `, ${label}`) : null,
          ),
        );
      }),
    );
    if (focused) this.list.querySelector<HTMLElement>(`[data-room-id="${focused}"]`)?.focus();
    this.total(entries.reduce((n, e) => n + e.unread, 0));
  }

  private createForm(): HTMLFormElement {
    const name = h("input", { id: "new-room-name", required: true, maxlength: 100 });
    const members = h("input", {
      id: "new-room-members",
      placeholder: "e.g. 2, 3",
      pattern: "[0-9 ,]*",
      "aria-describedby": "new-room-members-hint",
    });
    const form = h(
      "form",
      { class: "new-room" },
      h("h3", {}, "New room"),
      h("label", { for: "new-room-name" }, "Room name"),
      name,
      h("label", { for: "new-room-members" }, "Member ids"),
      members,
      h("small", { id: "new-room-members-hint" }, "Comma-separated; you are added too"),
      h("button", { type: "submit" }, "Create room"),
      this.status,
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      this.status.textContent = "";
      const ids = members.value.split(/[\s,]+/).filter(Boolean).map(Number);
      try {
        const room = await this.client.createRoom(name.value.trim(), ids);
        this.rooms.set(room.id, { room, unread: 0, mentions: 0 });
        form.reset();
        this.open(room);
      } catch (e) {
        this.status.textContent = `Could not create the room: ${errorText(e)}`;
      }
    });
    return form;
  }
}
