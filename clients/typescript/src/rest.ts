import { LivechatError } from "./errors.js";
import type { ErrorCode, HistoryMessage, Member, Room, RoomEvent, Unread } from "./types.js";

/** What the listings give the SDK to learn where a message lives (its room and seq). */
export interface Listed {
  type?: string;
  id?: number;
  room_id: number;
  seq: number;
}

/** The REST API (docs/openapi.json) with `Authorization: Bearer`; every failure is a {@link LivechatError}. */
export class Rest {
  constructor(
    private readonly baseUrl: string,
    private readonly token: () => Promise<string>,
    /** Sees every room event and listed message, to learn where message ids live. */
    private readonly observe: (items: readonly Listed[]) => void,
  ) {}

  /** One call; `token` skips the token source (the connect path already has a fresh one). */
  async request<T>(method: string, path: string, body?: unknown, token?: string): Promise<T> {
    token ??= await this.token();
    const headers: Record<string, string> = { Authorization: `Bearer ${token}` };
    const init: RequestInit = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res: Response;
    try {
      res = await fetch(this.baseUrl + path, init);
    } catch (err) {
      throw new LivechatError("network", `${method} ${path}: ${(err as Error).message}`);
    }
    const text = await res.text().catch(() => "");
    if (!res.ok) throw httpError(method, path, res.status, text);
    if (text === "") return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new LivechatError("internal", `${method} ${path}: the answer is not JSON`, { status: res.status });
    }
  }

  rooms(): Promise<Room[]> {
    return this.request("GET", "/v1/rooms");
  }

  createRoom(name: string, members: number[] = []): Promise<Room> {
    return this.request("POST", "/v1/rooms", { name, members });
  }

  /** Every member: the endpoint pages by `after_user_id` (at most 1000 a page). */
  async members(roomId: number): Promise<Member[]> {
    const all: Member[] = [];
    for (;;) {
      const after = all.length > 0 ? `&after_user_id=${all[all.length - 1]!.user_id}` : "";
      const page = await this.request<Member[]>("GET", `/v1/rooms/${roomId}/members?limit=1000${after}`);
      all.push(...page);
      if (page.length < 1000) return all;
    }
  }

  async addMember(roomId: number, userId: number): Promise<void> {
    await this.request("POST", `/v1/rooms/${roomId}/members`, { user_id: userId });
  }

  async removeMember(roomId: number, userId: number): Promise<void> {
    await this.request("DELETE", `/v1/rooms/${roomId}/members/${userId}`);
  }

  async history(roomId: number, opts: { limit?: number; beforeSeq?: number; thread?: number } = {}): Promise<HistoryMessage[]> {
    const q = query({ room_id: roomId, limit: opts.limit, before_seq: opts.beforeSeq, thread: opts.thread });
    const list = await this.request<HistoryMessage[]>("GET", `/chat/history?${q}`);
    this.observe(list);
    return list;
  }

  async events(roomId: number, opts: { afterSeq?: number; limit?: number } = {}): Promise<RoomEvent[]> {
    const q = query({ after_seq: opts.afterSeq, limit: opts.limit });
    const list = await this.request<RoomEvent[]>("GET", `/v1/rooms/${roomId}/events?${q}`);
    this.observe(list);
    return list;
  }

  unread(): Promise<Unread> {
    return this.request("GET", "/v1/unread");
  }

  async search(q: string, opts: { roomId?: number; limit?: number; beforeId?: number } = {}): Promise<HistoryMessage[]> {
    const qs = query({ q, room_id: opts.roomId, limit: opts.limit, before_id: opts.beforeId });
    const list = await this.request<HistoryMessage[]>("GET", `/v1/search?${qs}`);
    this.observe(list);
    return list;
  }
}

function query(params: Record<string, string | number | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, String(v));
  return q.toString();
}

const STATUS_CODES: Record<number, ErrorCode> = {
  400: "bad_request",
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  413: "too_large",
  429: "rate_limited",
  503: "unavailable",
};

/** `{"error": {"code", "message"}}` → LivechatError; a body without it maps by status. */
function httpError(method: string, path: string, status: number, text: string): LivechatError {
  let code: ErrorCode = STATUS_CODES[status] ?? (status >= 500 ? "internal" : "bad_request");
  let message = `${method} ${path}: HTTP ${status}`;
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    if (typeof body.error?.code === "string") code = body.error.code as ErrorCode;
    if (typeof body.error?.message === "string") message = body.error.message;
  } catch {
    // Not JSON (a proxy's page): the status decides.
  }
  return new LivechatError(code, message, { status });
}
