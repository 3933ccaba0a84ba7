// "ann is typing…" for the open room. A typing user's client repeats `start` every few
// seconds while they type; the server may drop a `stop` (typing is rate-limited), so an
// entry also expires on its own, and ends when that user's message arrives.

import type { TypingEvent } from "livechat-client";
import { h } from "./dom";
import type { Directory } from "./members";

const EXPIRE_MS = 6000;

export class TypingIndicator {
  readonly el: HTMLElement;
  private roomId: number | null = null;
  private typing = new Map<number, ReturnType<typeof setTimeout>>();

  constructor(private dir: Directory) {
    // Not a live region: announcing every start and stop would drown out the messages.
    this.el = h("p", { class: "typing" });
  }

  setRoom(roomId: number): void {
    this.roomId = roomId;
    for (const t of this.typing.values()) clearTimeout(t);
    this.typing.clear();
    this.render();
  }

  onTyping(ev: TypingEvent): void {
    if (ev.room_id !== this.roomId) return;
    if (ev.state === "stop") {
      this.stop(ev.room_id, ev.user_id);
      return;
    }
    clearTimeout(this.typing.get(ev.user_id));
    this.typing.set(ev.user_id, setTimeout(() => this.stop(ev.room_id, ev.user_id), EXPIRE_MS));
    this.render();
  }

  stop(roomId: number, userId: number): void {
    if (roomId !== this.roomId || !this.typing.has(userId)) return;
    clearTimeout(this.typing.get(userId));
    this.typing.delete(userId);
    this.render();
  }

  private render(): void {
    const names = [...this.typing.keys()].map((id) => this.dir.name(id));
    this.el.textContent =
      names.length === 0
        ? ""
        : names.length === 1
          ? `${names[0]} is typing…`
          : names.length <= 3
            ? `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]} are typing…`
            : "Several people are typing…";
  }
}
