// Who is in the open room: names, presence dots, read watermarks ("seen by") and the
// "add member" form. Live presence events update the dots in place; receipts and joins
// reload the list (the members endpoint is the truth for read_seq: a status_update's `read`
// is the message's flag, not proof that its reporter read it).

import type { LivechatClient, Member, PresenceEvent } from "livechat-client";
import { debounce, errorText, fill, h } from "./dom";

/** Usernames the page has learnt, from member lists and history. */
export class Directory {
  private names = new Map<number, string>();
  /** Bumped when a name is learnt or changes: rendered names may need a refresh. */
  version = 0;

  learn(id: number, username: string): void {
    if (this.names.get(id) === username) return;
    this.names.set(id, username);
    this.version += 1;
  }

  has(id: number): boolean {
    return this.names.has(id);
  }

  name(id: number): string {
    return this.names.get(id) ?? `user ${id}`;
  }
}

export class MembersPanel {
  readonly el: HTMLElement;
  private list: HTMLUListElement;
  private status: HTMLElement;
  private roomId: number | null = null;
  private members: Member[] = [];
  /** Reloads the list shortly after a burst of receipts or joins. */
  readonly reload = debounce(() => void this.load(), 250);

  constructor(
    private client: LivechatClient,
    private dir: Directory,
    private me: number,
    /** Called whenever names, presence or watermarks changed. */
    private changed: () => void,
  ) {
    this.list = h("ul", { class: "members", "aria-label": "Members" });
    this.status = h("p", { class: "form-status", role: "status" });
    const input = h("input", {
      id: "add-member-id",
      inputmode: "numeric",
      pattern: "[0-9]+",
      required: true,
      placeholder: "user id",
    });
    const form = h(
      "form",
      { class: "add-member" },
      h("label", { for: "add-member-id" }, "Add member (user id)"),
      h("div", { class: "row" }, input, h("button", { type: "submit" }, "Add")),
      this.status,
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (this.roomId === null) return;
      const userId = Number(input.value.trim());
      this.status.textContent = "";
      try {
        await this.client.addMember(this.roomId, userId);
        input.value = "";
        this.status.textContent = `Added user ${userId}.`;
        void this.load();
      } catch (e) {
        this.status.textContent = `Could not add: ${errorText(e)}`;
      }
    });
    this.el = h("aside", { class: "panel members-panel", id: "members", "aria-labelledby": "members-title" },
      h("h2", { id: "members-title" }, "Members"),
      this.list,
      form,
    );
  }

  async open(roomId: number): Promise<void> {
    this.roomId = roomId;
    this.members = [];
    this.render();
    await this.load();
  }

  all(): readonly Member[] {
    return this.members;
  }

  onPresence(ev: PresenceEvent): void {
    const m = this.members.find((x) => x.user_id === ev.user_id);
    if (ev.room_id !== this.roomId || !m) return;
    m.online = ev.online;
    this.render();
  }

  private async load(): Promise<void> {
    const roomId = this.roomId;
    if (roomId === null) return;
    try {
      const members = await this.client.members(roomId);
      if (roomId !== this.roomId) return;
      for (const m of members) this.dir.learn(m.user_id, m.username);
      this.members = members;
      this.render();
      this.changed();
    } catch (e) {
      this.status.textContent = `Could not load members: ${errorText(e)}`;
    }
  }

  private render(): void {
    fill(
      this.list,
      this.members.map((m) =>
        h(
          "li",
          { class: m.online ? "online" : "offline", "data-user-id": m.user_id },
          h("span", { class: "dot", "aria-hidden": "true" }),
          h("span", { class: "name" }, m.username, m.user_id === this.me ? " (you)" : ""),
          h("span", { class: "sr-only" }, m.online ? ", online" : ", offline"),
          h("span", { class: "uid" }, `#${m.user_id}`),
        ),
      ),
    );
  }
}
