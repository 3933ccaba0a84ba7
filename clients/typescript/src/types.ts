// Wire and REST objects, word for word as the server sends them (docs/openapi.json, docs/asyncapi.yaml).

export type RoomId = number;

export interface Message {
  type: "message";
  id: number;
  room_id: number;
  seq: number;
  sender_id: number;
  content: string;
  timestamp: string;
  client_msg_id: string | null;
  reply_to: number | null;
  mentions: number[];
}

export interface EditEvent {
  type: "edit";
  room_id: number;
  seq: number;
  message_id: number;
  user_id: number;
  content: string;
  edited_at: string;
}

export interface DeleteEvent {
  type: "delete";
  room_id: number;
  seq: number;
  message_id: number;
  /** Typed as the contract says; at run time it is `null` when an admin deleted the message
   * through `DELETE /v1/messages/{id}` (docs/openapi.json). */
  user_id: number;
}

export interface ReactionEvent {
  type: "reaction";
  room_id: number;
  seq: number;
  message_id: number;
  user_id: number;
  emoji: string;
  on: boolean;
}

export interface MemberEvent {
  type: "member";
  room_id: number;
  seq: number;
  user_id: number;
  action: "join" | "leave";
  by: number | null;
}

/** Every event that takes a room's `seq`: delivered once each, in seq order per room. */
export type RoomEvent = Message | EditEvent | DeleteEvent | ReactionEvent | MemberEvent;

export interface TypingEvent {
  type: "typing";
  room_id: number;
  user_id: number;
  state: "start" | "stop";
}

export interface StatusUpdateEvent {
  type: "status_update";
  message_id: number;
  room_id: number;
  user_id: number;
  delivered: boolean;
  read: boolean;
}

export interface PresenceEvent {
  type: "presence";
  room_id: number;
  user_id: number;
  online: boolean;
}

export interface SyncedEvent {
  type: "synced";
  rooms: Record<string, number>;
  more: boolean;
}

export type ErrorCode =
  | "bad_request"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "too_large"
  | "rate_limited"
  | "unavailable"
  | "internal";

export interface ServerError {
  type: "error";
  code: ErrorCode;
  message: string;
  ref?: string | number | null;
  retry_after_ms?: number;
}

/** Anything the server sends on the socket. */
export type ServerEvent =
  | RoomEvent
  | TypingEvent
  | StatusUpdateEvent
  | PresenceEvent
  | SyncedEvent
  | ServerError;

/** A message as `GET /chat/history` and `GET /v1/search` list it: as it stands now. */
export interface HistoryMessage {
  id: number;
  room_id: number;
  seq: number;
  sender_id: number;
  sender: { id: number; username: string };
  content: string;
  timestamp: string;
  delivered: boolean;
  read: boolean;
  client_msg_id: string | null;
  reply_to: number | null;
  mentions: number[];
  edited_at: string | null;
  deleted: boolean;
  reply_count: number;
  reactions: { emoji: string; count: number; me: boolean }[];
}

export interface Room {
  id: number;
  name: string;
  created_at: string;
  last_seq: number;
  /** The caller's watermarks and counts: present in `GET /v1/rooms`. */
  delivered_seq?: number;
  read_seq?: number;
  unread?: number;
  mentions?: number;
}

export interface Member {
  user_id: number;
  username: string;
  online: boolean;
  delivered_seq: number;
  read_seq: number;
}

export interface Unread {
  unread: number;
  mentions: number;
  rooms: number;
}

export type ConnectionState = "idle" | "connecting" | "syncing" | "open" | "reconnecting" | "closed";

/** What `on(type, fn)` can listen to. */
export interface Events {
  message: Message;
  edit: EditEvent;
  delete: DeleteEvent;
  reaction: ReactionEvent;
  member: MemberEvent;
  /** Every room event, once each, in seq order per room (live or replayed). */
  event: RoomEvent;
  typing: TypingEvent;
  status_update: StatusUpdateEvent;
  presence: PresenceEvent;
  synced: SyncedEvent;
  /** Errors not tied to a pending call. */
  error: ServerError;
  state: ConnectionState;
}
