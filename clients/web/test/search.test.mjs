// Message search from the header: results with the query's words highlighted, "no messages
// found", errors, paging, opening a result's room, Escape, phone width. The server indexes a
// message shortly after its echo, so a search is repeated until it finds what was sent.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { message, newUser, search, send, signIn, startChat } from "../scripts/harness.mjs";

let chat;
let server;
let browser;
let ann;
let bob;

before(async () => {
  // The paging test sends 25 messages as fast as the page can: no rate limit in the way.
  chat = await startChat({ LIVECHAT_LIMITS__MESSAGES_PER_SEC: "1000", LIVECHAT_LIMITS__MESSAGES_BURST: "1000" });
  ({ server, browser, ann, bob } = chat);
});

after(async () => {
  await chat?.stop();
});

const results = (page) => page.getByRole("region", { name: "Search results" });
const hits = (page) => results(page).locator(".search-hit");

const roomLink = (page, name) => page.locator(".room-link", { has: page.locator(".room-name", { hasText: name }) });

test("bob finds ann's message by a word prefix, highlighted, and opens its room", async () => {
  await send(ann.page, "the quarterly zebra report is ready");
  await send(ann.page, "nothing to see");
  await message(bob.page, "nothing to see").waitFor();
  // Bob is elsewhere when he searches: a room of his own.
  await bob.page.getByLabel("Room name").fill("notes");
  await bob.page.getByRole("button", { name: "Create room" }).click();
  await bob.page.locator("#room-title", { hasText: "notes" }).waitFor();

  await search(bob.page, "zebr", 1);
  assert.equal(await hits(bob.page).count(), 1);
  const hit = hits(bob.page).first();
  assert.match(await hit.locator(".search-text").textContent(), /the quarterly zebra report is ready/);
  assert.deepEqual(await hit.locator("mark").allTextContents(), ["zebr"]);
  assert.match(await hit.locator(".meta").textContent(), /^ann in #general · /);
  assert.equal(await results(bob.page).getByRole("heading").textContent(), "1 result for “zebr”");

  await hit.click();
  await bob.page.locator("#room-title", { hasText: "general" }).waitFor();
  await results(bob.page).waitFor({ state: "hidden" });
  await message(bob.page, "quarterly zebra report").waitFor();
  assert.equal(await bob.page.evaluate(() => document.activeElement.id), "room-title");
});

test("a query that matches nothing says so; 'this room only' searches the open room", async () => {
  await search(bob.page, "xylophone");
  await results(bob.page).getByText("No messages found").waitFor();
  assert.equal(await hits(bob.page).count(), 0);
  // Words of one or two characters match whole words only: "se" is not "see".
  await search(bob.page, "se");
  await results(bob.page).getByText("No messages found").waitFor();

  await roomLink(bob.page, "notes").click();
  await bob.page.locator("#room-title", { hasText: "notes" }).waitFor();
  await bob.page.getByLabel("This room only").check();
  await search(bob.page, "zebra");
  await results(bob.page).getByRole("heading", { name: "No messages found for “zebra” in #notes" }).waitFor();
  await bob.page.getByLabel("This room only").uncheck();
  await search(bob.page, "zebra");
  assert.equal(await hits(bob.page).count(), 1);
});

test("Escape and Close hide the results and give focus back to the search field", async () => {
  const input = bob.page.getByRole("searchbox", { name: "Search messages" });
  await search(bob.page, "zebra report");
  await hits(bob.page).first().waitFor();
  await hits(bob.page).first().focus();
  await bob.page.keyboard.press("Escape");
  await results(bob.page).waitFor({ state: "hidden" });
  assert.equal(await bob.page.evaluate(() => document.activeElement.id), "search-input");
  // The query stays, to be changed and searched again.
  assert.equal(await input.inputValue(), "zebra report");

  await input.press("Enter");
  await hits(bob.page).first().waitFor();
  await results(bob.page).getByRole("button", { name: "Close" }).click();
  await results(bob.page).waitFor({ state: "hidden" });
  assert.equal(await bob.page.evaluate(() => document.activeElement.id), "search-input");
});

test("a refused query shows the server's reason", async () => {
  // Past the field's maxlength only by setting the value from a script: the server's 400.
  await bob.page.locator("#search-input").evaluate((el) => (el.value = "x".repeat(201)));
  await bob.page.locator("#search-input").press("Enter");
  await results(bob.page).getByText(/^Could not search: .+/).waitFor();
  await bob.page.keyboard.press("Escape");
  await results(bob.page).waitFor({ state: "hidden" });
});

test("more results page in with 'Load more', newest first", async () => {
  for (let i = 1; i <= 25; i++) await send(ann.page, `standup note ${i}`);
  await message(ann.page, "standup note 25").waitFor();
  // The index catches up in seq order: once the newest is found, all are.
  await search(bob.page, "standup 25", 1);
  await search(bob.page, "standup");
  assert.equal(await hits(bob.page).count(), 20);
  assert.equal(await results(bob.page).getByRole("heading").textContent(), "20+ results for “standup”");
  await results(bob.page).getByRole("button", { name: "Load more" }).click();
  await hits(bob.page).nth(24).waitFor();
  await results(bob.page).getByRole("button", { name: "Load more" }).waitFor({ state: "hidden" });
  const texts = await hits(bob.page).locator(".search-text").allTextContents();
  assert.deepEqual(texts, Array.from({ length: 25 }, (_, i) => `standup note ${25 - i}`));
  assert.equal(await results(bob.page).getByRole("heading").textContent(), "25 results for “standup”");
  await bob.page.keyboard.press("Escape");
});

test("at phone width the search and its results fit the screen", async () => {
  const dan = await newUser(browser, { width: 390, height: 844 });
  await signIn(dan.page, server.url, "dan");
  await search(dan.page, "quarterly", 1);
  const box = await results(dan.page).boundingBox();
  assert.ok(box.x >= 0 && box.x + box.width <= 390, `results at ${JSON.stringify(box)}`);
  assert.ok(await dan.page.evaluate(() => document.documentElement.scrollWidth <= 390), "the page scrolls sideways");
  await hits(dan.page).first().click();
  await results(dan.page).waitFor({ state: "hidden" });
  await message(dan.page, "quarterly zebra report").waitFor();
  await dan.context.close();
});
