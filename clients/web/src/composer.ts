// The message box: Enter sends, Shift+Enter is a newline; "reply" puts a quote bar above it;
// `@name` of a room member becomes a mention (with suggestions while typing); typing
// indicators go out while the text changes.

import type { LivechatClient, Member } from "livechat-client";
import { fill, h } from "./dom";
import type { Directory } from "./members";
import type { Item } from "./message";

const MAX_CHARS = 4096;

/** Where a composed message goes (the timeline, which shows it as pending). */
export interface ComposerTarget {
  send(content: string, replyTo: number | null, mentions: number[]): void;
}

export class Composer {
  readonly el: HTMLFormElement;
  private input: HTMLTextAreaElement;
  private replyBar: HTMLElement;
  private suggestions: HTMLElement;
  private status: HTMLElement;
  private replyTo: Item | null = null;
  private roomId: number | null = null;

  constructor(
    private client: LivechatClient,
    private dir: Directory,
    private me: number,
    private target: ComposerTarget,
    private members: () => readonly Member[],
  ) {
    this.input = h("textarea", { id: "composer-input", rows: 1, placeholder: "Write a message", autocomplete: "off" });
    this.replyBar = h("div", { class: "reply-bar", hidden: true });
    this.suggestions = h("div", { class: "suggestions", role: "group", "aria-label": "Mention suggestions", hidden: true });
    this.status = h("p", { class: "form-status", role: "status" });
    this.el = h(
      "form",
      { class: "composer" },
      this.replyBar,
      h("label", { for: "composer-input", class: "sr-only" }, "Message"),
      h("div", { class: "row" }, this.input, h("button", { type: "submit", class: "send" }, "Send")),
      this.suggestions,
      this.status,
    );
    this.el.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.submit();
    });
    this.input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        this.submit();
      } else if (ev.key === "Escape" && this.replyTo) {
        this.setReply(null);
      }
    });
    this.input.addEventListener("input", () => {
      this.status.textContent = "";
      if (this.roomId !== null) this.client.typing(this.roomId, this.input.value.trim() ? "start" : "stop");
      this.suggest();
    });
  }

  setRoom(roomId: number, name: string): void {
    if (this.roomId !== null && this.roomId !== roomId && this.input.value.trim()) this.client.typing(this.roomId, "stop");
    this.roomId = roomId;
    this.input.placeholder = `Message #${name}`;
    this.setReply(null);
    this.suggestions.hidden = true;
  }

  setReply(item: Item | null): void {
    this.replyTo = item;
    this.replyBar.hidden = !item;
    if (!item) {
      this.replyBar.replaceChildren();
      return;
    }
    const text = item.content.length > 80 ? `${item.content.slice(0, 79)}…` : item.content;
    fill(
      this.replyBar,
      h("span", {}, "Replying to ", h("strong", {}, this.dir.name(item.senderId)), `: ${text}`),
      h("button", { type: "button", class: "cancel-reply", onclick: () => this.setReply(null) }, "Cancel reply"),
    );
    this.input.focus();
  }

  private submit(): void {
    const content = this.input.value.trim();
    if (!content || this.roomId === null) return;
    if (content.length > MAX_CHARS) {
      this.status.textContent = `A message is at most ${MAX_CHARS} characters (this one has ${content.length}).`;
      return;
    }
    this.target.send(content, this.replyTo?.id ?? null, this.mentionsIn(content));
    this.client.typing(this.roomId, "stop");
    this.input.value = "";
    this.setReply(null);
    this.suggestions.hidden = true;
    this.input.focus();
  }

  /** Members named as `@name` (not followed by more of a name, so `@ann` is not in `@anna`). */
  private mentionsIn(content: string): number[] {
    return this.members()
      .filter((m) => m.user_id !== this.me)
      .filter((m) => new RegExp(`(^|[^\\p{L}\\p{N}_])@${escapeRegExp(m.username)}(?![\\p{L}\\p{N}_])`, "u").test(content))
      .map((m) => m.user_id);
  }

  /** Offers the members whose name starts with the `@word` being typed before the caret. */
  private suggest(): void {
    const before = this.input.value.slice(0, this.input.selectionStart);
    const typed = /(?:^|\s)@([^\s@]*)$/.exec(before)?.[1];
    const matches =
      typed === undefined
        ? []
        : this.members()
            .filter((m) => m.user_id !== this.me && m.username.toLowerCase().startsWith(typed.toLowerCase()))
            .slice(0, 5);
    this.suggestions.hidden = !matches.length;
    fill(
      this.suggestions,
      matches.map((m) =>
        h("button", { type: "button", class: "suggestion", onclick: () => this.complete(typed ?? "", m.username) }, `@${m.username}`),
      ),
    );
  }

  private complete(typed: string, username: string): void {
    const caret = this.input.selectionStart;
    const start = caret - typed.length;
    const value = this.input.value;
    this.input.value = `${value.slice(0, start)}${username} ${value.slice(caret)}`;
    const at = start + username.length + 1;
    this.input.focus();
    this.input.setSelectionRange(at, at);
    this.suggestions.hidden = true;
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
