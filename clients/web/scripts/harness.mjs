// What the browser tests and the screenshot script share: a real `livechat serve --dev` on
// a fresh PostgreSQL database, Debian's Chromium through playwright-core, and helpers that
// wait for page states (polling with a deadline, never fixed sleeps).
//
// Environment:
//   LIVECHAT_BIN          the server binary (default: target/debug/livechat of this repository)
//   LIVECHAT_TEST_PG_URL  a PostgreSQL superuser URL; each server gets its own database
//   LIVECHAT_CHROMIUM     the browser (default /usr/bin/chromium)
//   LIVECHAT_WEB_LOCAL    =1: serve the page from this package's dist/ instead of the bytes
//                         embedded in the binary (to try a page change without rebuilding it)

import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { chromium } from "playwright-core";

const repo = fileURLToPath(new URL("../../../", import.meta.url));
const dist = fileURLToPath(new URL("../dist/", import.meta.url));
const BIN = process.env.LIVECHAT_BIN || `${repo}target/debug/livechat`;
const PG_URL = process.env.LIVECHAT_TEST_PG_URL;
const CHROMIUM = process.env.LIVECHAT_CHROMIUM || "/usr/bin/chromium";
const LOCAL = process.env.LIVECHAT_WEB_LOCAL === "1";
const START_TIMEOUT_MS = 30_000;
const TIMEOUT_MS = 10_000;

const children = new Set();
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});
// A runner that stops this file (timeout, Ctrl-C) must not leave servers behind.
for (const signal of ["SIGINT", "SIGTERM"]) process.once(signal, () => process.exit(1));

/**
 * Starts `livechat serve --dev` on a new database, with `env` added to its environment;
 * `stop()` ends it and drops the database.
 */
export async function startServer(env = {}) {
  if (!PG_URL) throw new Error("set LIVECHAT_TEST_PG_URL to a PostgreSQL superuser URL (postgres://postgres@127.0.0.1:5432/postgres)");
  const dbName = `livechat_web_${process.pid}_${Date.now()}`;
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${dbName}`);
  const dbUrl = new URL(PG_URL);
  dbUrl.pathname = `/${dbName}`;

  const child = spawn(BIN, ["serve", "--dev"], {
    env: { ...process.env, DATABASE_URL: dbUrl.toString(), LIVECHAT_LISTEN: "127.0.0.1:0", LIVECHAT_LOG: "warn", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  let log = "";
  child.stderr.on("data", (d) => {
    log = (log + d).slice(-20_000);
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    }
    children.delete(child);
    await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    await admin.end();
  };

  try {
    const url = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`server did not start in ${START_TIMEOUT_MS} ms:\n${log}`)), START_TIMEOUT_MS);
      child.once("exit", (code) => reject(new Error(`server exited with ${code}:\n${log}`)));
      createInterface({ input: child.stdout }).on("line", (line) => {
        const m = /^listening on (\S+)$/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve(`http://${m[1]}`);
        }
      });
    });
    if (!LOCAL) await checkEmbeddedPage(url);
    return { url, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** Tests of a page other than this package's dist/ would pass or fail for nothing. */
async function checkEmbeddedPage(url) {
  const served = await (await fetch(`${url}/app.js`)).text();
  if (served !== (await readFile(`${dist}app.js`, "utf8"))) {
    throw new Error(
      "the server embeds another build of the page than clients/web/dist: rebuild the server " +
        "(cargo build) after `npm run build -w livechat-web`, or set LIVECHAT_WEB_LOCAL=1",
    );
  }
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      // A page fulfilled by the test (LIVECHAT_WEB_LOCAL) has no loopback address of its own,
      // so Chromium would refuse its socket to 127.0.0.1 as a local-network access.
      ...(LOCAL ? ["--disable-features=LocalNetworkAccessChecks"] : []),
    ],
  });
}

/** A browser context (one user) whose pages time out after TIMEOUT_MS. */
export async function newUser(browser, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport });
  context.setDefaultTimeout(TIMEOUT_MS);
  if (LOCAL) await serveLocalDist(context);
  const page = await context.newPage();
  // Deleting asks for confirmation; the tests confirm.
  page.on("dialog", (d) => void d.accept());
  return { context, page };
}

async function serveLocalDist(context) {
  const files = {
    "/": ["text/html", (await readFile(`${dist}index.html`, "utf8")).replace('content="0"', 'content="1"')],
    "/app.js": ["text/javascript", await readFile(`${dist}app.js`, "utf8")],
    "/app.css": ["text/css", await readFile(`${dist}app.css`, "utf8")],
  };
  await context.route(
    (url) => url.pathname in files,
    (route) => {
      const [contentType, body] = files[new URL(route.request().url()).pathname];
      return route.fulfill({ contentType, body });
    },
  );
}

/** Opens the page and signs in through the dev form; resolves once the room is shown. */
export async function signIn(page, url, username) {
  await page.goto(url);
  await page.getByLabel("Username").fill(username);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#room-title", { hasText: "general" }).waitFor();
  return userId(page);
}

/** The signed-in user's id, from the header ("Signed in as ann (#2)"). */
async function userId(page) {
  const text = await page.locator(".whoami").textContent();
  return Number(/#(\d+)\)/.exec(text)[1]);
}

/** The committed message (it has an id) whose text contains `text`. */
export function message(page, text) {
  return page.locator("li.msg[data-id]", { has: page.locator(".body", { hasText: text }) });
}

/** A message of this page not yet acknowledged by the server, whose text contains `text`. */
export function pending(page, text) {
  return page.locator("li.msg.pending", { has: page.locator(".body", { hasText: text }) });
}

/** Sends a message through the composer. */
export async function send(page, text) {
  await page.locator("#composer-input").fill(text);
  await page.locator("#composer-input").press("Enter");
}

/** The messages on the page, in DOM order: `{id, seq, text}` (ids of pending ones are null). */
export async function messages(page) {
  return page.locator("ol.messages > li").evaluateAll((els) =>
    els.map((el) => ({
      id: el.dataset.id ? Number(el.dataset.id) : null,
      seq: el.dataset.seq ? Number(el.dataset.seq) : null,
      text: el.querySelector(".body")?.textContent ?? "",
    })),
  );
}

/**
 * Searches for `q` from the header and waits for the answer; the number of results shown.
 * The server indexes a message shortly after its echo, so with `atLeast` the search is
 * repeated until that many results show, up to TIMEOUT_MS.
 */
export async function search(page, q, atLeast = 0) {
  const input = page.getByRole("searchbox", { name: "Search messages" });
  const results = page.getByRole("region", { name: "Search results" });
  const deadline = Date.now() + TIMEOUT_MS;
  for (;;) {
    await input.fill(q);
    await input.press("Enter");
    await results.and(page.locator('[aria-busy="false"]')).waitFor();
    const n = await results.locator(".search-hit").count();
    if (n >= atLeast) return n;
    if (Date.now() > deadline) throw new Error(`search "${q}" showed ${n} results, not ${atLeast}, in ${TIMEOUT_MS} ms`);
    await page.waitForTimeout(100);
  }
}

/**
 * A server (with `env`), a browser and two signed-in users, ann and bob, each in their own
 * context: what every test file starts from. `stop()` closes the browser and the server.
 */
export async function startChat(env = {}) {
  const server = await startServer(env);
  const browser = await launchBrowser();
  const ann = await newUser(browser);
  const bob = await newUser(browser);
  ann.id = await signIn(ann.page, server.url, "ann");
  bob.id = await signIn(bob.page, server.url, "bob");
  const stop = async () => {
    await browser.close();
    await server.stop();
  };
  return { server, browser, ann, bob, stop };
}
