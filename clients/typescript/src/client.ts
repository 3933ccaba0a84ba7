import { Backoff } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { LivechatError } from "./errors.js";
import { newId } from "./ids.js";
import { userIdOf } from "./jwt.js";
import { Ops, type OpFrame } from "./ops.js";
import { RoomOrder } from "./order.js";
import { Outbox, type MessageFrame } from "./outbox.js";
import { MemoryPositionStore, type PositionStore } from "./positions.js";
import { Rest } from "./rest.js";
import { checkReact, MessageLocations } from "./reactcheck.js";
import { Receipts } from "./receipts.js";
import { SyncQueue } from "./sync.js";
import { Transport, type SocketConstructor } from "./transport.js";
import { Typing } from "./typing.js";
import type {
  ConnectionState,
  DeleteEvent,
  EditEvent,
  Events,
  HistoryMessage,
  Member,
  Message,
  ReactionEvent,
  Room,
  RoomEvent,
  ServerError,
  ServerEvent,
  Unread,
} from "./types.js";

export interface ClientOptions {
  /** Server base URL, e.g. "http://127.0.0.1:8000" (the WebSocket URL is derived from it). */
  url: string;
  /** A token, or a function called before every (re)connect and REST call. */
  token: string | (() => string | Promise<string>);
  /** Last seen seq per room; default {@link MemoryPositionStore}. */
  positions?: PositionStore;
  /** A WebSocket constructor; default `globalThis.WebSocket` (Node.js 20: pass the `ws` package's). */
  WebSocket?: any;
  /** Reconnect delays: full jitter in [0, min(maxMs, initialMs·2ⁿ)]; default 500 / 15000. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Give up a send() after this long (default: never, keep retrying). */
  sendTimeoutMs?: number;
  /** typing() sends "start" at most once per this many ms per room; default 3000. */
  typingIntervalMs?: number;
}

/** An attempt that has not reached "syncing" by then (token, socket, room list) is given up:
 * browsers can sit in CONNECTING for minutes, and a request can hang. */
const CONNECT_TIMEOUT_MS = 10_000;
/** A connection that stayed open this long resets the backoff. */
const STABLE_MS = 5_000;
/** With no frame for this long, an empty `sync` asks the server for a sign of life... */
const PROBE_AFTER_MS = 20_000;
/** ...and with none for this long the connection is taken for dead (a silent network drop). */
const DEAD_AFTER_MS = 35_000;
const LIVENESS_TICK_MS = 5_000;

/**
 * A livechat client: one WebSocket for all of the user's rooms, reconnecting forever until
 * {@link close}, resuming from the last seen seq per room, delivering every room event once in
 * seq order, and retrying writes across reconnects. See API.md.
 */
export class LivechatClient {
  private _state: ConnectionState = "idle";
  private _userId = 0;
  private readonly emitter = new Emitter<Events>();
  private readonly api: Rest;
  private readonly store: PositionStore;
  private stored: Record<string, number> | undefined;
  private readonly order: RoomOrder;
  private readonly syncs: SyncQueue;
  private readonly outbox: Outbox;
  private readonly ops: Ops;
  private readonly receipts: Receipts;
  private readonly typists: Typing;
  private readonly backoff: Backoff;
  private readonly locations = new MessageLocations();
  private readonly Socket: SocketConstructor;
  private transport: Transport | undefined;
  /** Bumped by every attempt and every failure: callbacks of an older attempt are ignored. */
  private generation = 0;
  private openedAt = 0;
  private lastFrameAt = 0;
  /** The last `error` on this connection: tells a token expiry from other 1008 closes. */
  private lastError: ServerError | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  private liveness: ReturnType<typeof setInterval> | undefined;
  private connecting: { promise: Promise<void>; resolve(): void; reject(e: LivechatError): void } | undefined;
  private detachWindow: (() => void) | undefined;

  constructor(private readonly opts: ClientOptions) {
    this.Socket = opts.WebSocket ?? (globalThis as { WebSocket?: SocketConstructor }).WebSocket;
    if (this.Socket === undefined) {
      throw new TypeError("no WebSocket: pass the `WebSocket` option (in Node.js, the `ws` package's)");
    }
    this.store = opts.positions ?? new MemoryPositionStore();
    this.backoff = new Backoff(opts.backoff?.initialMs ?? 500, opts.backoff?.maxMs ?? 15_000);
    this.api = new Rest(baseUrl(opts.url), () => this.token(), (items) => this.locations.observe(items));
    this.order = new RoomOrder(() => this._userId);
    const send = (frame: object) => this.transport?.send(frame) ?? false;
    this.syncs = new SyncQueue({
      send,
      position: (room) => this.order.last(room),
      tracked: (room) => this.order.has(room),
      hasGap: (room) => this.order.hasGap(room),
      notMember: (room) => this.order.forget(room),
      idle: () => this.onSyncIdle(),
    });
    this.outbox = new Outbox(send);
    this.ops = new Ops({
      send,
      floorOf: (id) => {
        const at = this.locations.get(id);
        return at === undefined ? null : this.order.last(at.room);
      },
      check: (op) => checkReact(op, this.api, this.locations),
    });
    this.receipts = new Receipts(send);
    // Typing is ephemeral: sent only while open, never queued for a later connection; held
    // while a `sync` is in flight, whose errors come without `ref`, as a typing error would.
    this.typists = new Typing(
      (room_id, state) => this._state === "open" && send({ type: "typing", room_id, state }),
      () => this.syncs.busy(),
      opts.typingIntervalMs ?? 3000,
    );
    if (typeof opts.token === "string") {
      try {
        this._userId = userIdOf(opts.token);
      } catch {
        // connect() reports it: a fixed token that is not a client token closes the client.
      }
    }
  }

  /** The user of the token (`sub`); known after connect() at the latest. */
  get userId(): number {
    return this._userId;
  }

  get state(): ConnectionState {
    return this._state;
  }

  on<K extends keyof Events>(type: K, fn: (ev: Events[K]) => void): () => void {
    return this.emitter.on(type, fn);
  }

  /** Starts connecting; resolves once the first resume is done ("open"). It keeps trying while
   * the server is unreachable; it rejects if the client is closed, or refused for good (a
   * fixed token the server does not accept). */
  connect(): Promise<void> {
    if (this._state === "closed") return Promise.reject(closedError());
    if (this._state === "open") return Promise.resolve();
    if (this.connecting === undefined) {
      let resolve!: () => void;
      let reject!: (e: LivechatError) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.connecting = { promise, resolve, reject };
    }
    if (this._state === "idle") {
      this.detachWindow = this.watchNetwork();
      void this.attempt();
    }
    return this.connecting.promise;
  }

  /** Closes for good: no reconnect; pending sends and calls reject with code "closed". */
  close(): void {
    this.shutdown(closedError());
  }

  // ---- writes ----

  send(roomId: number, content: string, opts: { replyTo?: number; mentions?: number[]; clientMsgId?: string } = {}): Promise<Message> {
    if (this._state === "closed") return Promise.reject(closedError());
    const frame: MessageFrame = { type: "message", room_id: roomId, content, client_msg_id: opts.clientMsgId ?? newId() };
    if (opts.replyTo !== undefined) frame.reply_to = opts.replyTo;
    if (opts.mentions !== undefined && opts.mentions.length > 0) frame.mentions = opts.mentions;
    return this.outbox.add(frame, this.opts.sendTimeoutMs);
  }

  edit(messageId: number, content: string): Promise<EditEvent> {
    return this.op({ type: "edit", message_id: messageId, content }, (ev) => ev.type === "edit") as Promise<EditEvent>;
  }

  delete(messageId: number): Promise<DeleteEvent> {
    return this.op({ type: "delete", message_id: messageId }, (ev) => ev.type === "delete") as Promise<DeleteEvent>;
  }

  /** Resolves with the `reaction` event, or null when it changed nothing (see API.md). */
  react(messageId: number, emoji: string, on: boolean): Promise<ReactionEvent | null> {
    return this.op(
      { type: "react", message_id: messageId, emoji, on },
      (ev) => ev.type === "reaction" && ev.emoji === emoji && ev.on === on,
    ) as Promise<ReactionEvent | null>;
  }

  typing(roomId: number, state: "start" | "stop" = "start"): void {
    this.typists.set(roomId, state);
  }

  markRead(roomId: number, messageId: number): void {
    this.receipts.mark(roomId, messageId, true);
  }

  markDelivered(roomId: number, messageId: number): void {
    this.receipts.mark(roomId, messageId, false);
  }

  /** Highest seq delivered in the room (0 if the room is not followed). */
  lastSeq(roomId: number): number {
    return this.order.last(roomId);
  }

  /** Sends not yet acknowledged. */
  pending(): number {
    return this.outbox.size;
  }

  // ---- REST ----

  rooms(): Promise<Room[]> {
    return this.api.rooms();
  }

  createRoom(name: string, members?: number[]): Promise<Room> {
    return this.api.createRoom(name, members);
  }

  members(roomId: number): Promise<Member[]> {
    return this.api.members(roomId);
  }

  addMember(roomId: number, userId: number): Promise<void> {
    return this.api.addMember(roomId, userId);
  }

  removeMember(roomId: number, userId: number): Promise<void> {
    return this.api.removeMember(roomId, userId);
  }

  history(roomId: number, opts?: { limit?: number; beforeSeq?: number; thread?: number }): Promise<HistoryMessage[]> {
    return this.api.history(roomId, opts);
  }

  events(roomId: number, opts?: { afterSeq?: number; limit?: number }): Promise<RoomEvent[]> {
    return this.api.events(roomId, opts);
  }

  unread(): Promise<Unread> {
    return this.api.unread();
  }

  search(q: string, opts?: { roomId?: number; limit?: number; beforeId?: number }): Promise<HistoryMessage[]> {
    return this.api.search(q, opts);
  }

  // ---- connection ----

  private async token(): Promise<string> {
    const t = this.opts.token;
    const value = typeof t === "string" ? t : await t();
    if (typeof value !== "string" || value === "") {
      throw new LivechatError("unauthorized", "the token callback returned no token");
    }
    return value;
  }

  /** One connection attempt: token, then the socket and `GET /v1/rooms` side by side (the
   * server holds live events until the first `sync`), then the resume. */
  private async attempt(): Promise<void> {
    // A new generation first: the old socket's close below must not count as a failure.
    const gen = ++this.generation;
    clearTimeout(this.retryTimer);
    this.transport?.drop("reconnecting");
    this.transport = undefined;
    // "connecting" the first time; after a failure it stays "reconnecting" until the resume.
    if (this._state === "idle") this.setState("connecting");
    clearTimeout(this.connectTimer);
    this.connectTimer = setTimeout(
      () => this.failed(gen, new LivechatError("network", "connecting timed out")),
      CONNECT_TIMEOUT_MS,
    );
    let token: string;
    try {
      token = await this.token();
      this._userId = userIdOf(token);
      this.stored ??= { ...(await this.store.load()) };
    } catch (err) {
      return this.failed(gen, err);
    }
    if (gen !== this.generation) return;

    let opened = false;
    let rooms: Room[] | undefined;
    let started = false;
    // Frames that arrive before the room list is known wait for it.
    const early: ServerEvent[] = [];
    const start = () => {
      if (!opened || rooms === undefined || gen !== this.generation) return;
      started = true;
      this.resume(rooms);
      for (const ev of early.splice(0)) if (gen === this.generation) this.onFrame(ev);
    };
    this.lastError = undefined;
    try {
      this.transport = new Transport(this.Socket, wsUrl(this.opts.url, token), {
        open: () => {
          opened = true;
          start();
        },
        frame: (ev) => {
          this.lastFrameAt = Date.now();
          if (ev.type === "error") this.lastError = ev;
          if (started) this.onFrame(ev);
          else early.push(ev);
        },
        closed: (code, reason) => this.onClosed(gen, code, reason),
      });
    } catch (err) {
      return this.failed(gen, err);
    }
    this.api.request<Room[]>("GET", "/v1/rooms", undefined, token).then(
      (list) => {
        rooms = list;
        start();
      },
      (err: unknown) => this.failed(gen, err),
    );
  }

  /** Follows the listed rooms from the stored position (or from now, for a room never seen)
   * and syncs them. */
  private resume(rooms: Room[]): void {
    clearTimeout(this.connectTimer);
    const listed = new Set(rooms.map((r) => r.id));
    for (const room of this.order.rooms()) if (!listed.has(room)) this.order.forget(room);
    for (const r of rooms) {
      if (this.order.has(r.id)) continue;
      // A room left and joined again in this session restarts from now, like a new one.
      const stored = this.order.wasLeft(r.id) ? undefined : this.stored?.[String(r.id)];
      // A stored position past the room's end belongs to another database: start from now.
      this.order.track(r.id, stored !== undefined && stored <= r.last_seq ? stored : r.last_seq);
    }
    this.setState("syncing");
    this.lastFrameAt = Date.now();
    const gen = this.generation;
    this.liveness = setInterval(() => this.checkLiveness(gen), LIVENESS_TICK_MS);
    this.syncs.start(this.order.rooms());
  }

  private onSyncIdle(): void {
    if (this._state !== "syncing") {
      this.typists.flush();
      return;
    }
    this.openedAt = Date.now();
    this.setState("open");
    this.outbox.setOpen(true);
    this.ops.setOpen(true);
    this.receipts.setOpen(true);
    this.connecting?.resolve();
    this.connecting = undefined;
  }

  private checkLiveness(gen: number): void {
    const silent = Date.now() - this.lastFrameAt;
    if (silent >= DEAD_AFTER_MS) this.failed(gen, new LivechatError("network", "no answer from the server"));
    else if (silent >= PROBE_AFTER_MS) this.syncs.probe();
  }

  private onClosed(gen: number, code: number, reason: string): void {
    // 1008 is both "token expired" (after an `unauthorized` error) and "rate limit exceeded".
    const auth = code === 1008 && (this.lastError?.code === "unauthorized" || /token/i.test(reason));
    const err = auth
      ? new LivechatError("unauthorized", reason || "the server refused the token")
      : new LivechatError("network", `connection closed (${code}${reason ? `: ${reason}` : ""})`);
    this.failed(gen, err);
  }

  /** The attempt or connection `gen` ended: retry after a backoff delay, or stop for good when
   * a fixed token was refused. */
  private failed(gen: number, cause: unknown): void {
    if (gen !== this.generation || this._state === "closed") return;
    this.generation++;
    this.disconnect();
    const err = cause instanceof LivechatError ? cause : new LivechatError("network", String(cause));
    if (err.code === "unauthorized" && typeof this.opts.token === "string") {
      this.emitter.emit("error", { type: "error", code: "unauthorized", message: err.message });
      this.shutdown(err);
      return;
    }
    this.setState("reconnecting");
    this.retryTimer = setTimeout(() => void this.attempt(), this.backoff.next());
  }

  /** Drops the socket and everything that lived on it; pending writes wait for the next one. */
  private disconnect(reason = "reconnecting"): void {
    clearTimeout(this.retryTimer);
    clearTimeout(this.connectTimer);
    clearInterval(this.liveness);
    this.transport?.drop(reason);
    this.transport = undefined;
    this.syncs.stop();
    this.outbox.setOpen(false);
    this.ops.setOpen(false);
    this.receipts.setOpen(false);
    this.typists.reset();
    if (this.openedAt > 0 && Date.now() - this.openedAt >= STABLE_MS) this.backoff.reset();
    this.openedAt = 0;
  }

  private shutdown(err: LivechatError): void {
    if (this._state === "closed") return;
    this.generation++;
    this.disconnect("client closed");
    this.detachWindow?.();
    this.outbox.close(err);
    this.ops.close(err);
    this.connecting?.reject(err);
    this.connecting = undefined;
    this.setState("closed");
  }

  /** Browsers: `offline` drops the socket at once (an open WebSocket may outlive the network);
   * `online` reconnects without waiting for the backoff. */
  private watchNetwork(): (() => void) | undefined {
    const w = (globalThis as { window?: Window }).window;
    if (w === undefined || typeof w.addEventListener !== "function") return undefined;
    const offline = () => {
      if (this.transport !== undefined) this.failed(this.generation, new LivechatError("network", "offline"));
    };
    const online = () => {
      if (this._state !== "reconnecting") return;
      this.backoff.reset();
      void this.attempt();
    };
    w.addEventListener("offline", offline);
    w.addEventListener("online", online);
    return () => {
      w.removeEventListener("offline", offline);
      w.removeEventListener("online", online);
    };
  }

  private setState(state: ConnectionState): void {
    if (this._state === state) return;
    this._state = state;
    this.emitter.emit("state", state);
  }

  // ---- incoming ----

  private onFrame(ev: ServerEvent): void {
    switch (ev.type) {
      case "message":
        this.locations.add(ev.id, ev.room_id, ev.seq);
        // Also a repeat echo, which comes outside the room's order: it acknowledges all the same.
        if (ev.sender_id === this._userId && ev.client_msg_id !== null) this.outbox.onMessage(ev);
        this.onRoomEvent(ev);
        break;
      case "edit":
      case "delete":
      case "reaction":
      case "member":
        this.onRoomEvent(ev);
        break;
      case "typing":
        this.emitter.emit("typing", ev);
        break;
      case "presence":
        this.emitter.emit("presence", ev);
        break;
      case "status_update":
        this.receipts.onStatus(ev, this._userId);
        this.emitter.emit("status_update", ev);
        break;
      case "synced":
        this.syncs.onSynced(ev);
        this.emitter.emit("synced", ev);
        break;
      case "error":
        this.onServerError(ev);
        break;
    }
  }

  private onRoomEvent(ev: RoomEvent): void {
    const { deliver, gap } = this.order.accept(ev);
    for (const e of deliver) {
      this.emitter.emit(e.type, e as never);
      this.emitter.emit("event", e);
      this.savePosition(e.room_id, e.seq);
      if (e.type === "edit" || e.type === "delete" || e.type === "reaction") this.ops.onEvent(e);
    }
    if (gap) this.syncs.request(ev.room_id);
  }

  /** A store that fails costs a replay after the next reload, never the live stream. */
  private savePosition(room: number, seq: number): void {
    try {
      Promise.resolve(this.store.save(room, seq)).catch(() => {});
    } catch {
      // As above.
    }
  }

  private onServerError(ev: ServerError): void {
    const ref = ev.ref;
    if (typeof ref === "string" && this.outbox.onError(ref, ev)) return;
    if (typeof ref === "number" && this.ops.onError(ref, ev)) return;
    if ((ref === null || ref === undefined) && this.syncs.onError(ev)) return;
    this.emitter.emit("error", ev);
  }

  // ---- edits, deletes, reacts ----

  private op(frame: OpFrame, kind: (ev: RoomEvent) => boolean): Promise<RoomEvent | null> {
    if (this._state === "closed") return Promise.reject(closedError());
    const matches = (ev: RoomEvent) =>
      kind(ev) && "message_id" in ev && ev.message_id === frame.message_id && ev.user_id === this._userId;
    return this.ops.add(frame, matches);
  }
}

function closedError(): LivechatError {
  return new LivechatError("closed", "the client is closed");
}

function baseUrl(url: string): string {
  return url.replace(/\/+$/, "");
}

/** http(s)://host[/prefix] → ws(s)://host[/prefix]/ws/chat?token=…&resume=1 */
export function wsUrl(url: string, token: string): string {
  const u = new URL(baseUrl(url) + "/ws/chat");
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  u.searchParams.set("token", token);
  u.searchParams.set("resume", "1");
  return u.toString();
}
