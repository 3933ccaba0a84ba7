// One message of the timeline: its state (history object or live event, then edits,
// deletes and reactions applied in seq order) and its element.

import type { HistoryMessage, Message } from "livechat-client";
import { h, timeOf } from "./dom";

export const QUICK_EMOJI = ["👍", "❤️", "😂", "🎉", "😮"];

export interface Item {
  id: number;
  seq: number;
  senderId: number;
  content: string;
  timestamp: string;
  clientMsgId: string | null;
  replyTo: number | null;
  mentions: number[];
  editedAt: string | null;
  deleted: boolean;
  /** emoji → count and whether I reacted; insertion order is display order. */
  reactions: Map<string, { count: number; me: boolean }>;
  editing: boolean;
  /** A failed edit or delete, shown under the message until the next change. */
  error: string;
  seenBy: string[];
  el: HTMLLIElement;
}

/** A message sent from this page and not yet acknowledged (or that failed). */
export interface Pending {
  clientMsgId: string;
  roomId: number;
  content: string;
  replyTo: number | null;
  mentions: number[];
  error: string;
  el: HTMLLIElement;
}

/** What a message needs from the timeline to render and to act. */
export interface MessageView {
  me: number;
  /** Whether this message is the list's one tab stop (arrow keys move between messages). */
  isCurrent(item: Item): boolean;
  name(userId: number): string;
  find(messageId: number): Item | undefined;
  reply(item: Item): void;
  react(item: Item, emoji: string): void;
  startEdit(item: Item): void;
  saveEdit(item: Item, content: string): void;
  cancelEdit(item: Item): void;
  remove(item: Item): void;
  retry(p: Pending): void;
  discard(p: Pending): void;
}

/** The fields a message's item shares however it arrived (history page or event). */
function fromMessage(m: Message | HistoryMessage): Item {
  return {
    id: m.id,
    seq: m.seq,
    senderId: m.sender_id,
    content: m.content,
    timestamp: m.timestamp,
    clientMsgId: m.client_msg_id,
    replyTo: m.reply_to,
    mentions: m.mentions,
    editedAt: null,
    deleted: false,
    reactions: new Map(),
    editing: false,
    error: "",
    seenBy: [],
    el: h("li"),
  };
}

export function fromHistory(m: HistoryMessage): Item {
  const item = fromMessage(m);
  item.editedAt = m.edited_at;
  item.deleted = m.deleted;
  item.reactions = new Map(m.reactions.map((r) => [r.emoji, { count: r.count, me: r.me }]));
  return item;
}

export function fromEvent(m: Message): Item {
  const item = fromMessage(m);
  // A replay shows a deleted message with "" (its delete event follows); live content is never empty.
  item.deleted = m.content === "";
  return item;
}

/** (Re)builds an item's element in place, so its identity (and focus nearby) is kept. */
export function renderItem(item: Item, v: MessageView): void {
  const mine = item.senderId === v.me;
  const el = item.el;
  // A re-render while editing (a reaction came in) keeps the editor and what was typed.
  const openEditor = item.editing ? el.querySelector<HTMLFormElement>("form.edit") : null;
  // Focus inside the message survives the rebuild: on the same control, else on the message.
  const active = document.activeElement;
  const hadFocus = active instanceof HTMLElement && el.contains(active) && active !== el;
  const focusKey = hadFocus ? active.dataset.key : undefined;
  el.className = [
    "msg",
    mine ? "mine" : "",
    item.deleted ? "deleted" : "",
    !item.deleted && item.mentions.includes(v.me) ? "mentions-me" : "",
  ].filter(Boolean).join(" ");
  el.id = `m-${item.id}`;
  el.dataset.id = String(item.id);
  el.dataset.seq = String(item.seq);
  el.replaceChildren(
    item.replyTo !== null ? quote(item.replyTo, v) : "",
    h(
      "div",
      { class: "meta" },
      h("span", { class: "author" }, v.name(item.senderId)),
      " ",
      h("time", { datetime: item.timestamp }, timeOf(item.timestamp)),
      item.editedAt && !item.deleted ? h("span", { class: "edited" }, " (edited)") : "",
    ),
    item.deleted
      ? h("p", { class: "body tombstone" }, "This message was deleted.")
      : item.editing
        ? (openEditor ?? editor(item, v))
        : h("p", { class: "body" }, ...withMentions(item.content, item.mentions, v)),
    item.deleted ? "" : reactions(item, v),
    item.deleted || item.editing ? "" : actions(item, v, mine),
    item.error ? h("p", { class: "error", role: "alert" }, item.error) : "",
    item.seenBy.length ? h("p", { class: "seen" }, `Seen by ${item.seenBy.join(", ")}`) : "",
  );
  setTabStop(item, v.isCurrent(item));
  if (hadFocus) {
    const again = openEditor?.contains(active) ? active : focusKey && el.querySelector<HTMLElement>(`[data-key="${CSS.escape(focusKey)}"]`);
    (again || el).focus();
  }
}

/** Makes the message and its controls reachable with Tab, or only with the arrow keys. */
export function setTabStop(item: Item, on: boolean): void {
  item.el.tabIndex = on ? 0 : -1;
  for (const c of item.el.querySelectorAll<HTMLElement>("button, a, textarea")) c.tabIndex = on ? 0 : -1;
}

export function renderPending(p: Pending, v: MessageView): void {
  p.el.className = p.error ? "msg mine pending failed" : "msg mine pending";
  p.el.dataset.clientMsgId = p.clientMsgId;
  p.el.replaceChildren(
    p.replyTo !== null ? quote(p.replyTo, v) : "",
    h("div", { class: "meta" }, h("span", { class: "author" }, v.name(v.me)), " ", h("span", { class: "state" }, p.error ? "not sent" : "sending…")),
    h("p", { class: "body" }, p.content),
    p.error
      ? h(
          "div",
          { class: "actions" },
          h("span", { class: "error", role: "alert" }, p.error),
          h("button", { type: "button", onclick: () => v.retry(p) }, "Retry"),
          h("button", { type: "button", onclick: () => v.discard(p) }, "Discard"),
        )
      : "",
  );
}

function quote(parentId: number, v: MessageView): HTMLElement {
  const parent = v.find(parentId);
  const text = !parent ? "an earlier message" : parent.deleted ? "a deleted message" : `${v.name(parent.senderId)}: ${clip(parent.content, 80)}`;
  return h(
    "a",
    {
      class: "quote",
      href: `#m-${parentId}`,
      onclick: (ev: Event) => {
        ev.preventDefault();
        const target = v.find(parentId)?.el;
        target?.scrollIntoView({ block: "center" });
        target?.focus();
      },
    },
    h("span", { class: "sr-only" }, "In reply to "),
    h("span", { "aria-hidden": "true" }, "↪ "),
    text,
  );
}

/** The content with each `@name` of a mentioned user wrapped, so mentions stand out. */
function withMentions(content: string, mentions: number[], v: MessageView): (string | HTMLElement)[] {
  const names = mentions.map((id) => ({ id, at: `@${v.name(id)}` })).filter((m) => content.includes(m.at));
  if (!names.length) return [content];
  const out: (string | HTMLElement)[] = [];
  let rest = content;
  while (rest) {
    let best: { id: number; at: string; i: number } | null = null;
    for (const m of names) {
      const i = rest.indexOf(m.at);
      if (i >= 0 && (!best || i < best.i)) best = { ...m, i };
    }
    if (!best) {
      out.push(rest);
      break;
    }
    if (best.i) out.push(rest.slice(0, best.i));
    out.push(h("span", { class: best.id === v.me ? "mention me" : "mention" }, best.at));
    rest = rest.slice(best.i + best.at.length);
  }
  return out;
}

function reactions(item: Item, v: MessageView): HTMLElement | "" {
  if (!item.reactions.size) return "";
  return h(
    "div",
    { class: "reactions" },
    [...item.reactions].map(([emoji, r]) =>
      h(
        "button",
        {
          type: "button",
          class: "reaction",
          "data-emoji": emoji,
          "data-key": `reaction-${emoji}`,
          "aria-pressed": String(r.me),
          "aria-label": `${emoji} ${r.count}${r.me ? ", including you" : ""}`,
          onclick: () => v.react(item, emoji),
        },
        emoji,
        h("span", { class: "count" }, String(r.count)),
      ),
    ),
  );
}

function actions(item: Item, v: MessageView, mine: boolean): HTMLElement {
  return h(
    "div",
    { class: "actions" },
    h("button", { type: "button", class: "act-reply", "data-key": "reply", onclick: () => v.reply(item) }, "Reply"),
    QUICK_EMOJI.map((emoji) =>
      h(
        "button",
        {
          type: "button",
          class: "act-react",
          "data-emoji": emoji,
          "data-key": `react-${emoji}`,
          "aria-label": `React ${emoji}`,
          "aria-pressed": String(item.reactions.get(emoji)?.me ?? false),
          onclick: () => v.react(item, emoji),
        },
        emoji,
      ),
    ),
    mine ? h("button", { type: "button", class: "act-edit", "data-key": "edit", onclick: () => v.startEdit(item) }, "Edit") : "",
    mine ? h("button", { type: "button", class: "act-delete", "data-key": "delete", onclick: () => v.remove(item) }, "Delete") : "",
  );
}

function editor(item: Item, v: MessageView): HTMLElement {
  const id = `edit-${item.id}`;
  const input = h("textarea", { id, class: "edit-input", rows: 2 }, item.content);
  const form = h(
    "form",
    { class: "edit" },
    h("label", { for: id, class: "sr-only" }, "Edit message"),
    input,
    h("button", { type: "submit" }, "Save"),
    h("button", { type: "button", onclick: () => v.cancelEdit(item) }, "Cancel"),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    v.saveEdit(item, input.value);
  });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") v.cancelEdit(item);
    else if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });
  queueMicrotask(() => {
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  });
  return form;
}

function clip(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}
