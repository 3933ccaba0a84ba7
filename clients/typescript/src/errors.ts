import type { ErrorCode } from "./types.js";

/** Codes of a {@link LivechatError}: the server's, plus the SDK's own. */
export type LivechatErrorCode = ErrorCode | "network" | "closed" | "timeout";

/** Every rejection of the SDK: a server refusal (REST or WebSocket) or an SDK condition. */
export class LivechatError extends Error {
  readonly code: LivechatErrorCode;
  /** HTTP status, for REST errors. */
  readonly status?: number;
  /** The server's `retry_after_ms`, when it gave one. */
  readonly retryAfterMs?: number;

  constructor(code: LivechatErrorCode, message: string, opts: { status?: number; retryAfterMs?: number } = {}) {
    super(message);
    this.name = "LivechatError";
    this.code = code;
    if (opts.status !== undefined) this.status = opts.status;
    if (opts.retryAfterMs !== undefined) this.retryAfterMs = opts.retryAfterMs;
  }
}
