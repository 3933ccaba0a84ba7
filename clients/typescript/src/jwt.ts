import { LivechatError } from "./errors.js";

/** The user id in a client token's `sub` claim. The token is not verified: the server does. */
export function userIdOf(token: string): number {
  const payload = token.split(".")[1];
  if (payload === undefined) throw new LivechatError("unauthorized", "the token is not a JWT");
  let sub: unknown;
  try {
    sub = (JSON.parse(base64UrlDecode(payload)) as { sub?: unknown }).sub;
  } catch {
    throw new LivechatError("unauthorized", "the token's payload is not base64url JSON");
  }
  const id = typeof sub === "string" ? Number(sub) : sub;
  if (typeof id !== "number" || !Number.isSafeInteger(id) || id <= 0) {
    throw new LivechatError("unauthorized", "the token has no numeric `sub` claim");
  }
  return id;
}

function base64UrlDecode(s: string): string {
  const b64 = s.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (s.length % 4)) % 4);
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}
