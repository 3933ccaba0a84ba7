// The header's message search: a form, and under it a panel of results (newest first, paged
// back with `beforeId`) with the query's words highlighted. A result opens its room.
//
// The server indexes a message shortly after it is sent (README "Search"), so a search right
// after a send may miss it; searching again finds it. Results are a snapshot: they are not
// updated by later edits or deletes.

import type { HistoryMessage, LivechatClient, Room } from "livechat-client";
import { append, errorText, h } from "./dom";

const PAGE = 20;
/** Characters of a long message shown around its first match. */
const SNIPPET = 280;

export class SearchBox {
  readonly el: HTMLElement;
  private input: HTMLInputElement;
  private here: HTMLInputElement;
  private region: HTMLElement;
  private title: HTMLElement;
  private status: HTMLElement;
  private list: HTMLOListElement;
  private more: HTMLButtonElement;
  /** What the shown results answer: the query, its room (if limited to one), how many. */
  private shown: { q: string; roomId: number | undefined; lastId: number; count: number } | null = null;
  /** Bumped by every new search and by closing: an answer to an older one is dropped. */
  private generation = 0;

  constructor(
    private client: LivechatClient,
    /** A room of the caller's list by id, for its name and to open it. */
    private roomOf: (roomId: number) => Room | undefined,
    /** The open room, for "This room only". */
    private openRoomId: () => number | null,
    private open: (room: Room) => void,
  ) {
    this.input = h("input", { id: "search-input", type: "search", required: true, maxlength: 200, placeholder: "Search messages", autocomplete: "off" });
    this.here = h("input", { id: "search-here", type: "checkbox" });
    const form = h(
      "form",
      { class: "search-form", role: "search" },
      h("label", { for: "search-input", class: "sr-only" }, "Search messages"),
      this.input,
      h("label", { class: "search-here" }, this.here, "This room only"),
      h("button", { type: "submit" }, "Search"),
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.search();
    });
    this.title = h("h2", { id: "search-title", "aria-live": "polite" });
    this.status = h("p", { class: "form-status", role: "status" });
    this.list = h("ol", { class: "search-list", "aria-labelledby": "search-title" });
    this.more = h("button", { type: "button", class: "older", hidden: true, onclick: () => void this.loadMore() }, "Load more");
    this.region = h(
      "section",
      { class: "search-results", id: "search-results", role: "region", "aria-label": "Search results", hidden: true },
      h("div", { class: "search-head" }, this.title, h("button", { type: "button", class: "search-close", onclick: () => this.close(true) }, "Close")),
      this.status,
      this.list,
      this.more,
    );
    this.el = h("div", { class: "search" }, form, this.region);
    // Escape inside the search (not elsewhere: it also cancels a reply or an edit) closes the
    // results. With none shown it is left alone, so the search field's own Escape clears it.
    this.el.addEventListener("keydown", (ev) => {
      if (ev.key !== "Escape" || this.region.hidden) return;
      ev.preventDefault();
      this.close(true);
    });
  }

  /** Hides the results; `refocus` gives focus back to the search field. */
  close(refocus: boolean): void {
    this.generation += 1;
    this.shown = null;
    this.region.hidden = true;
    this.region.removeAttribute("aria-busy");
    this.list.replaceChildren();
    if (refocus) this.input.focus();
  }

  private async search(): Promise<void> {
    const q = this.input.value.trim();
    const openId = this.openRoomId();
    const roomId = this.here.checked && openId !== null ? openId : undefined;
    const generation = ++this.generation;
    this.shown = null;
    this.list.replaceChildren();
    this.more.hidden = true;
    this.title.textContent = "Searching…";
    this.status.textContent = "";
    this.region.hidden = false;
    this.region.setAttribute("aria-busy", "true");
    let page: HistoryMessage[];
    try {
      page = await this.client.search(q, { limit: PAGE, ...(roomId !== undefined ? { roomId } : {}) });
    } catch (e) {
      if (generation !== this.generation) return;
      this.title.textContent = "Search failed";
      this.status.textContent = `Could not search: ${errorText(e)}`;
      this.region.setAttribute("aria-busy", "false");
      return;
    }
    if (generation !== this.generation) return;
    this.shown = { q, roomId, lastId: 0, count: 0 };
    this.add(page);
  }

  private async loadMore(): Promise<void> {
    const shown = this.shown;
    if (!shown) return;
    const generation = this.generation;
    this.more.disabled = true;
    this.status.textContent = "";
    this.region.setAttribute("aria-busy", "true");
    try {
      const page = await this.client.search(shown.q, {
        limit: PAGE,
        beforeId: shown.lastId,
        ...(shown.roomId !== undefined ? { roomId: shown.roomId } : {}),
      });
      if (generation !== this.generation) return;
      this.add(page);
    } catch (e) {
      if (generation !== this.generation) return;
      this.status.textContent = `Could not load more: ${errorText(e)}`;
      this.region.setAttribute("aria-busy", "false");
    } finally {
      this.more.disabled = false;
    }
  }

  /** Appends a page of results and updates the count. */
  private add(page: HistoryMessage[]): void {
    const shown = this.shown;
    if (!shown) return;
    const words = queryWords(shown.q);
    append(this.list, page.map((m) => this.result(m, words)));
    shown.count += page.length;
    shown.lastId = page.at(-1)?.id ?? shown.lastId;
    // A full page may have more behind it; a short one is the last.
    this.more.hidden = page.length < PAGE;
    const where = shown.roomId !== undefined ? ` in #${this.roomName(shown.roomId)}` : "";
    this.title.textContent = shown.count
      ? `${shown.count}${this.more.hidden ? "" : "+"} result${shown.count === 1 && this.more.hidden ? "" : "s"} for “${shown.q}”${where}`
      : `No messages found for “${shown.q}”${where}`;
    this.region.setAttribute("aria-busy", "false");
  }

  private result(m: HistoryMessage, words: string[]): HTMLLIElement {
    return h(
      "li",
      {},
      h(
        "button",
        { type: "button", class: "search-hit", "data-id": m.id, onclick: () => this.choose(m.room_id) },
        h(
          "span",
          { class: "meta" },
          h("span", { class: "author" }, m.sender.username),
          ` in #${this.roomName(m.room_id)} · `,
          h("time", { datetime: m.timestamp }, when(m.timestamp)),
        ),
        h("span", { class: "search-text" }, ...highlight(m.content, words)),
      ),
    );
  }

  private choose(roomId: number): void {
    const room = this.roomOf(roomId);
    // Left since the search, or the list is not loaded yet.
    if (!room) {
      this.status.textContent = "That room is not in your list.";
      return;
    }
    this.close(false);
    this.open(room);
  }

  private roomName(roomId: number): string {
    return this.roomOf(roomId)?.name ?? `room ${roomId}`;
  }
}

/** The query's words, lowercased, cut where the server cuts them (roughly: letters and digits). */
function queryWords(q: string): string[] {
  return [...new Set(q.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [])];
}

/** Whether `word` (lowercased) matches a query word as the server does: 1–2 characters whole, longer ones as a prefix. */
function matchLength(word: string, words: string[]): number {
  let best = 0;
  for (const w of words) {
    const hit = w.length <= 2 ? word === w : word.startsWith(w);
    if (hit && w.length > best) best = w.length;
  }
  return best;
}

/**
 * The content (a snippet of it, around the first match, when it is long) as text with each
 * matching word start wrapped in a <mark>; text nodes only, so nothing in it becomes markup.
 */
function highlight(content: string, words: string[]): (string | HTMLElement)[] {
  const hits: { start: number; end: number }[] = [];
  for (const m of content.matchAll(/[\p{L}\p{N}]+/gu)) {
    const lower = m[0].toLowerCase();
    const n = matchLength(lower, words);
    if (!n) continue;
    // Lowercasing can change a word's length (a few Unicode letters): then mark all of it.
    const len = m[0].slice(0, n).toLowerCase() === lower.slice(0, n) ? n : m[0].length;
    hits.push({ start: m.index, end: m.index + len });
  }
  let from = 0;
  let to = content.length;
  if (content.length > SNIPPET) {
    const first = hits[0]?.start ?? 0;
    // Start at a space a little before the first match, so the match is seen with some context.
    from = first > 60 ? content.lastIndexOf(" ", first - 40) + 1 : 0;
    to = Math.min(content.length, from + SNIPPET);
    const space = content.lastIndexOf(" ", to);
    if (to < content.length && space > from + SNIPPET / 2) to = space;
    // Never cut between the two halves of a surrogate pair (an emoji).
    else if (/[\uD800-\uDBFF]/.test(content.charAt(to - 1))) to -= 1;
  }
  const out: (string | HTMLElement)[] = from > 0 ? ["…"] : [];
  let at = from;
  for (const { start, end } of hits) {
    if (start < at || end > to) continue;
    if (start > at) out.push(content.slice(at, start));
    out.push(h("mark", {}, content.slice(start, end)));
    at = end;
  }
  if (at < to) out.push(content.slice(at, to));
  if (to < content.length) out.push("…");
  return out;
}

/** The time of a message, with its date unless it is today's (results can be old). */
function when(iso: string): string {
  const d = new Date(iso);
  if (isNaN(d.getTime())) return "";
  const today = d.toDateString() === new Date().toDateString();
  return d.toLocaleString([], today ? { hour: "2-digit", minute: "2-digit" } : { day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit" });
}
