// A real `livechat serve` on a fresh PostgreSQL database, for the integration tests.
//
// Environment (set by the repository's test script):
//   LIVECHAT_BIN          the server binary (default ../../target/debug/livechat from clients/typescript)
//   LIVECHAT_TEST_PG_URL  a PostgreSQL superuser URL; each server gets its own database lcjs_<random>

import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import pg from "pg";
import WebSocket from "ws";
import { LivechatClient, MemoryPositionStore } from "../dist/index.js";

const PG_URL = process.env.LIVECHAT_TEST_PG_URL ?? "postgres://postgres@127.0.0.1:55433/postgres";
const BIN = process.env.LIVECHAT_BIN ?? fileURLToPath(new URL("../../../target/debug/livechat", import.meta.url));
const START_TIMEOUT_MS = 30_000;

/** A well-formed client token for `userId` signed with a secret no server knows. */
export function forgedToken(userId) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub: String(userId), exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${body}.${createHmac("sha256", "not-the-secret").update(body).digest("base64url")}`;
}

/** Every server process still running: killed when the test process exits, however it exits. */
const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

const hex = (n) => randomBytes(n).toString("hex");

async function withPg(url, fn) {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

export class TestServer {
  /** A fresh database and a server on it; `env` adds server variables. */
  static async start(env = {}) {
    const db = `lcjs_${hex(6)}`;
    await withPg(PG_URL, (c) => c.query(`CREATE DATABASE ${db}`));
    const dbUrl = new URL(PG_URL);
    dbUrl.pathname = `/${db}`;
    const s = new TestServer(db, dbUrl.toString(), env);
    try {
      await s.spawn(0);
    } catch (err) {
      await s.stop();
      throw err;
    }
    return s;
  }

  constructor(db, dbUrl, env) {
    this.db = db;
    this.dbUrl = dbUrl;
    this.adminToken = `admin-${hex(12)}`;
    this.env = {
      DATABASE_URL: dbUrl,
      LIVECHAT_JWT_SECRET: `secret-${hex(16)}`,
      LIVECHAT_ADMIN_TOKEN: this.adminToken,
      LIVECHAT_LOG: "warn",
      ...env,
    };
    this.child = null;
    this.port = 0;
    this.stderr = "";
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts the process on `port` (0: any) and waits for its `listening on` line. */
  async spawn(port) {
    const env = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !k.startsWith("LIVECHAT_") && k !== "DATABASE_URL" && k !== "REDIS_URL"),
    );
    const child = spawn(BIN, ["serve"], {
      env: { ...env, ...this.env, LIVECHAT_LISTEN: `127.0.0.1:${port}` },
      stdio: ["ignore", "pipe", "pipe"],
    });
    running.add(child);
    child.once("exit", () => running.delete(child));
    child.stderr.on("data", (d) => {
      this.stderr = (this.stderr + d).slice(-8000);
    });
    const lines = createInterface({ input: child.stdout });
    const listening = new Promise((resolve, reject) => {
      lines.on("line", (line) => {
        const m = /^listening on (.+):(\d+)$/.exec(line);
        if (m) resolve(Number(m[2]));
      });
      child.once("exit", (code, sig) => reject(new Error(`livechat serve exited (${code ?? sig}):\n${this.stderr}`)));
      child.once("error", reject);
    });
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`livechat serve not listening after ${START_TIMEOUT_MS} ms:\n${this.stderr}`)), START_TIMEOUT_MS);
    });
    try {
      this.port = await Promise.race([listening, timeout]);
    } catch (err) {
      child.kill("SIGKILL");
      throw err;
    } finally {
      clearTimeout(timer);
    }
    this.child = child;
  }

  /** Kills the process (SIGKILL by default) and waits until it is gone. */
  async kill(signal = "SIGKILL") {
    const child = this.child;
    this.child = null;
    if (child === null || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, "exit");
    child.kill(signal);
    await exited;
  }

  /** Starts the server again on the same database and port. */
  async restart() {
    await this.kill();
    await this.spawn(this.port);
  }

  async stop() {
    await this.kill();
    await withPg(PG_URL, (c) => c.query(`DROP DATABASE IF EXISTS ${this.db} WITH (FORCE)`));
  }

  /** A SQL session on the server's database (for locks that make storage time out). */
  async sql() {
    const c = new pg.Client({ connectionString: this.dbUrl });
    await c.connect();
    return c;
  }

  async http(method, path, body, token = this.adminToken) {
    const res = await fetch(this.url + path, {
      method,
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return text === "" ? undefined : JSON.parse(text);
  }

  /** Creates a user (admin API) with a token: `{ id, username, token }`. */
  async user(name = `u${hex(4)}`, ttlSecs = 3600) {
    const u = await this.http("POST", "/v1/users", { username: name });
    return { ...u, token: await this.token(u.id, ttlSecs) };
  }

  async token(userId, ttlSecs = 3600) {
    return (await this.http("POST", "/v1/tokens", { user_id: userId, ttl_secs: ttlSecs })).token;
  }

  /** The value of a Prometheus counter, summed over the series matching `labels`. */
  async metric(name, labels = "") {
    const text = await (await fetch(`${this.url}/metrics`)).text();
    let sum = 0;
    for (const line of text.split("\n")) {
      if (line.startsWith(name) && line.includes(labels)) sum += Number(line.split(" ").pop());
    }
    return sum;
  }

  /** A client of this server with test-friendly backoff (reconnects within half a second). */
  client(token, opts = {}) {
    return new LivechatClient({
      url: this.url,
      token,
      WebSocket,
      positions: new MemoryPositionStore(),
      backoff: { initialMs: 50, maxMs: 500 },
      ...opts,
    });
  }
}
