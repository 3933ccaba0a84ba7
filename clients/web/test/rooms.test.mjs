// Rooms: creating one and adding a member shows it in the member's list live; unread
// badges on rooms not open; paging back through history.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { message, messages, newUser, send, signIn, startChat } from "../scripts/harness.mjs";

let chat;
let server;
let browser;
let ann;
let bob;

before(async () => {
  // The history test sends 60 messages as fast as the page can: no rate limit in the way.
  chat = await startChat({ LIVECHAT_LIMITS__MESSAGES_PER_SEC: "1000", LIVECHAT_LIMITS__MESSAGES_BURST: "1000" });
  ({ server, browser, ann, bob } = chat);
});

after(async () => {
  await chat?.stop();
});

test("a token in the URL fragment signs in, leaves the address bar, and survives a reload", async () => {
  const res = await fetch(`${server.url}/dev/session`, { method: "POST", body: JSON.stringify({ username: "carol" }) });
  const { token, user_id } = await res.json();
  const carol = await newUser(browser);
  await carol.page.goto(`${server.url}/#token=${token}`);
  await carol.page.locator("#room-title", { hasText: "general" }).waitFor();
  assert.equal(new URL(carol.page.url()).hash, "");
  await carol.page.locator(".whoami", { hasText: `Signed in as carol (#${user_id})` }).waitFor();
  await carol.page.reload();
  await carol.page.locator("#room-title", { hasText: "general" }).waitFor();
  await carol.page.getByRole("button", { name: "Sign out" }).click();
  await carol.page.getByLabel("Username").waitFor();
  await carol.context.close();
});

test("at phone width the rooms list hides behind a button", async () => {
  const dan = await newUser(browser, { width: 390, height: 844 });
  await signIn(dan.page, server.url, "dan");
  const rooms = dan.page.locator("#rooms");
  assert.equal(await rooms.isVisible(), false);
  const toggle = dan.page.getByRole("button", { name: "Rooms" });
  await toggle.click();
  await rooms.waitFor();
  assert.equal(await toggle.getAttribute("aria-expanded"), "true");
  await dan.page.keyboard.press("Escape");
  await rooms.waitFor({ state: "hidden" });
  assert.equal(await dan.page.evaluate(() => document.activeElement.textContent), "Rooms");
  await toggle.click();
  await roomLink(dan.page, "general").click();
  await rooms.waitFor({ state: "hidden" });
  await dan.page.locator("#composer-input").waitFor();
  await dan.context.close();
});

const roomLink = (page, name) => page.locator(".room-link", { has: page.locator(".room-name", { hasText: name }) });

async function createRoom(page, name, members = "") {
  await page.getByLabel("Room name").fill(name);
  await page.getByLabel("Member ids").fill(members);
  await page.getByRole("button", { name: "Create room" }).click();
  await page.locator("#room-title", { hasText: name }).waitFor();
}

test("a room ann creates and adds bob to appears in bob's list live", async () => {
  await createRoom(ann.page, "project");
  await roomLink(ann.page, "project").and(ann.page.locator('[aria-current="page"]')).waitFor();
  assert.equal(await roomLink(bob.page, "project").count(), 0);
  await ann.page.getByLabel("Add member (user id)").fill(String(bob.id));
  await ann.page.getByRole("button", { name: "Add", exact: true }).click();
  await roomLink(bob.page, "project").waitFor();
  await ann.page.locator(`.members li[data-user-id="${bob.id}"]`).waitFor();
});

test("an unread badge appears on a room not open and clears when it is opened", async () => {
  const badge = roomLink(bob.page, "project").locator(".unread-badge");
  await send(ann.page, "news in project");
  await badge.filter({ hasText: "1" }).waitFor();
  await send(ann.page, "@bob this is for you");
  await badge.filter({ hasText: "2" }).waitFor();
  await roomLink(bob.page, "project").locator(".mention-badge").waitFor();
  assert.equal(await roomLink(bob.page, "general").locator(".badge").count(), 0);
  await roomLink(bob.page, "project").click();
  await message(bob.page, "this is for you").waitFor();
  await badge.waitFor({ state: "detached" });
  // The read watermark is the server's: after a reload the badge stays away.
  await roomLink(bob.page, "general").click();
  await bob.page.reload();
  await roomLink(bob.page, "general").and(bob.page.locator('[aria-current="page"]')).waitFor();
  await roomLink(bob.page, "project").waitFor();
  assert.equal(await badge.count(), 0);
  // And a message that came while he was away is counted by the server.
  await send(ann.page, "while you were in general");
  await badge.filter({ hasText: "1" }).waitFor();
  await bob.page.reload();
  await badge.filter({ hasText: "1" }).waitFor();
});

test("bob pages back through history with 'load older'", async () => {
  await createRoom(ann.page, "history", String(bob.id));
  for (let i = 1; i <= 60; i++) await send(ann.page, `line ${i}.`);
  await message(ann.page, "line 60.").waitFor();
  await roomLink(bob.page, "history").click();
  await message(bob.page, "line 60.").waitFor();
  assert.equal((await messages(bob.page)).length, 50);
  await bob.page.getByRole("button", { name: "Load older messages" }).click();
  await message(bob.page, "line 1.").waitFor();
  await bob.page.getByRole("button", { name: "Load older messages" }).waitFor({ state: "hidden" });
  const list = await messages(bob.page);
  assert.deepEqual(list.map((m) => m.text), Array.from({ length: 60 }, (_, i) => `line ${i + 1}.`));
  const ids = list.map((m) => m.id);
  assert.deepEqual(ids, [...ids].sort((a, b) => a - b));
});
