// Where the page's token comes from: the URL fragment (an app embedding the page passes
// `/#token=...`), or in `serve --dev` the "sign in as" form. The session lives in
// sessionStorage so a reload keeps it while a new tab starts signed out.

import { errorText, h } from "./dom";

export interface Session {
  token: string;
  userId: number;
  /** Set for dev sessions: lets the page fetch a fresh token when this one nears expiry. */
  username?: string;
}

const KEY = "livechat.session";
/** Dev tokens are renewed when they have less than this left. */
const RENEW_BEFORE_MS = 5 * 60_000;

export function isDev(): boolean {
  return document.querySelector('meta[name="livechat-dev"]')?.getAttribute("content") === "1";
}

/** The session from `#token=...` (then removed from the address bar) or from an earlier load. */
export function currentSession(): Session | null {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get("token");
  if (token) {
    // The token must not linger in the address bar, history or a copied link.
    history.replaceState(null, "", location.pathname + location.search);
    const userId = claims(token)?.sub;
    if (userId) return save({ token, userId });
  }
  try {
    const stored = JSON.parse(sessionStorage.getItem(KEY) ?? "null") as Session | null;
    return stored && typeof stored.token === "string" && stored.userId > 0 ? stored : null;
  } catch {
    return null;
  }
}

export function signOut(): void {
  sessionStorage.removeItem(KEY);
}

/**
 * The SDK's `token` option for a dev session: the current token, renewed when it nears expiry
 * or when `retrying()` (a restarted `serve --dev` has a new secret and refuses the old token).
 */
export function devTokenSource(session: Session & { username: string }, retrying: () => boolean): () => Promise<string> {
  return async () => {
    const exp = claims(session.token)?.exp ?? 0;
    if (retrying() || exp * 1000 - Date.now() < RENEW_BEFORE_MS) {
      const fresh = await devSession(session.username);
      // A new database made the same name a new user: start over as that user.
      if (fresh.userId !== session.userId) {
        save({ ...fresh, username: session.username });
        location.reload();
      }
      session.token = fresh.token;
      save(session);
    }
    return session.token;
  };
}

/** Shows how to sign in; calls `done` with the new session. */
export function signInView(done: (s: Session) => void): HTMLElement {
  if (!isDev()) {
    return h(
      "main",
      { class: "signin", id: "main" },
      h("h1", {}, "livechat"),
      h("p", {}, "This page needs a client token. Open it as ", h("code", {}, "/#token=<your token>"), "."),
      h("p", {}, "An app embedding livechat passes the token it got from its backend (", h("code", {}, "POST /v1/tokens"), ")."),
    );
  }
  const input = h("input", {
    id: "signin-name",
    name: "username",
    required: true,
    maxlength: 50,
    autocomplete: "username",
    autofocus: true,
  });
  const status = h("p", { class: "error", role: "alert" });
  const form = h(
    "form",
    { class: "signin-form" },
    h("label", { for: "signin-name" }, "Username"),
    input,
    h("button", { type: "submit" }, "Sign in"),
    status,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.textContent = "";
    const username = input.value.trim();
    try {
      const s = await devSession(username);
      done(save({ ...s, username }));
    } catch (e) {
      status.textContent = `Could not sign in: ${errorText(e)}`;
    }
  });
  return h(
    "main",
    { class: "signin", id: "main" },
    h("h1", {}, "livechat"),
    h("p", {}, "Development server: sign in as any username (it is created if needed and joins ", h("em", {}, "general"), ")."),
    form,
  );
}

async function devSession(username: string): Promise<Session> {
  const res = await fetch("/dev/session", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username }),
  });
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new Error(body?.error?.message ?? `HTTP ${res.status}`);
  return { token: body.token, userId: Number(body.user_id) };
}

function save(s: Session): Session {
  sessionStorage.setItem(KEY, JSON.stringify(s));
  return s;
}

/** The token's claims, unverified: the page only reads who it is and when the token expires. */
function claims(token: string): { sub: number; exp?: number } | null {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
    const sub = Number(json.sub);
    return Number.isSafeInteger(sub) && sub > 0 ? { sub, exp: typeof json.exp === "number" ? json.exp : undefined } : null;
  } catch {
    return null;
  }
}
