// Two users, ann and bob, each in their own browser context, chatting in `general` through
// the page served by a real `livechat serve --dev`. The tests run in order and share the
// conversation.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { message, messages, pending, send, startChat } from "../scripts/harness.mjs";

let chat;
let ann;
let bob;

before(async () => {
  chat = await startChat();
  ({ ann, bob } = chat);
});

after(async () => {
  await chat?.stop();
});

/** Every message once, in seq order, and nothing left pending. */
function assertOnceInOrder(list) {
  const ids = list.map((m) => m.id);
  assert.ok(ids.every((id) => id !== null), `pending messages left: ${JSON.stringify(list)}`);
  assert.equal(new Set(ids).size, ids.length, `a message shown twice: ${ids}`);
  const seqs = list.map((m) => m.seq);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), "messages out of seq order");
}

test("ann and bob chat both ways in general", async () => {
  await send(ann.page, "hello bob");
  await message(bob.page, "hello bob").waitFor();
  await send(bob.page, "hi ann");
  await message(ann.page, "hi ann").waitFor();
  await message(ann.page, "hello bob").waitFor();
  assert.equal(await message(bob.page, "hello bob").locator(".author").textContent(), "ann");
  // Screen readers hear the newest message from someone else.
  await ann.page.locator("#announcer[aria-live=polite]", { hasText: "bob: hi ann" }).waitFor({ state: "attached" });
});

test("Shift+Enter starts a new line, Enter sends", async () => {
  const input = ann.page.locator("#composer-input");
  await input.pressSequentially("first line");
  await input.press("Shift+Enter");
  await input.pressSequentially("second line");
  assert.equal(await input.inputValue(), "first line\nsecond line");
  await input.press("Enter");
  assert.equal(await message(bob.page, "second line").locator(".body").textContent(), "first line\nsecond line");
  assert.equal(await input.inputValue(), "");
});

test("bob sees ann typing", async () => {
  const input = ann.page.locator("#composer-input");
  // Typed at a person's pace: the server drops a "start" within a second of the last one
  // (before ann's "stop" as she sent), the SDK repeats "start" every 3 s while she types.
  await Promise.all([
    input.pressSequentially("I am still writing a longer answer", { delay: 120 }),
    bob.page.locator(".typing", { hasText: "ann is typing…" }).waitFor(),
  ]);
  await input.fill("");
});

test("ann sees 'seen by bob' once bob has read her message", async () => {
  await send(ann.page, "did you read this?");
  // Bob's page shows it, focused and scrolled to it: it marks it read.
  await message(bob.page, "did you read this?").waitFor();
  await message(ann.page, "did you read this?").locator(".seen", { hasText: "Seen by bob" }).waitFor();
  // Only under her newest message that bob has read.
  assert.equal(await ann.page.locator(".seen").count(), 1);
});

test("ann edits a message and bob sees the edit", async () => {
  await send(ann.page, "teh first draft");
  await message(bob.page, "teh first draft").waitFor();
  await message(ann.page, "teh first draft").getByRole("button", { name: "Edit" }).click();
  const editor = ann.page.getByLabel("Edit message");
  await editor.fill("the final draft");
  await editor.press("Enter");
  const edited = message(bob.page, "the final draft");
  await edited.locator(".edited").waitFor();
  assert.equal(await message(bob.page, "teh first draft").count(), 0);
});

test("ann deletes a message and bob sees the tombstone", async () => {
  await send(ann.page, "this one goes away");
  await message(bob.page, "this one goes away").waitFor();
  const id = await message(ann.page, "this one goes away").getAttribute("data-id");
  await message(ann.page, "this one goes away").getByRole("button", { name: "Delete" }).click();
  await bob.page.locator(`#m-${id} .tombstone`).waitFor();
  assert.equal(await message(bob.page, "this one goes away").count(), 0);
  await ann.page.locator(`#m-${id} .tombstone`).waitFor();
});

test("bob reacts and ann sees the count; a second click takes it back", async () => {
  await send(ann.page, "react to me");
  const onBob = message(bob.page, "react to me");
  await onBob.getByRole("button", { name: "React 👍" }).click();
  const onAnn = message(ann.page, "react to me");
  await onAnn.locator('.reaction[data-emoji="👍"] .count', { hasText: "1" }).waitFor();
  await onBob.locator('.reaction[data-emoji="👍"][aria-pressed="true"]').click();
  await onAnn.locator(".reaction").waitFor({ state: "detached" });
});

test("bob replies with a mention (from the suggestions); ann sees the quote, highlighted", async () => {
  await send(ann.page, "who takes the release?");
  await message(bob.page, "who takes the release?").getByRole("button", { name: "Reply" }).click();
  await bob.page.locator(".reply-bar", { hasText: "who takes the release?" }).waitFor();
  // "@an" offers ann (a member of the room); choosing her completes the name.
  const input = bob.page.locator("#composer-input");
  await input.pressSequentially("@an");
  await bob.page.getByRole("group", { name: "Mention suggestions" }).getByRole("button", { name: "@ann" }).click();
  await input.pressSequentially("I do");
  assert.equal(await input.inputValue(), "@ann I do");
  await input.press("Enter");
  const reply = ann.page.locator("li.msg.mentions-me", { hasText: "I do" });
  await reply.locator(".quote", { hasText: "ann: who takes the release?" }).waitFor();
  await reply.locator(".mention.me", { hasText: "@ann" }).waitFor();
});

test("keyboard: the list is one tab stop, arrows move between messages, Tab reaches one's actions", async () => {
  const page = bob.page;
  const list = await messages(page);
  const stop = page.locator("ol.messages > li.msg[tabindex='0']");
  assert.equal(await stop.count(), 1);
  assert.equal(await stop.getAttribute("data-id"), String(list.at(-1).id));
  await stop.focus();
  await page.keyboard.press("ArrowUp");
  assert.equal(await page.evaluate(() => document.activeElement.dataset.id), String(list.at(-2).id));
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Reply");
  await page.keyboard.press("Enter");
  await page.locator(".reply-bar", { hasText: list.at(-2).text }).waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.id), "composer-input");
  await page.keyboard.press("Escape");
  await page.locator(".reply-bar").waitFor({ state: "hidden" });
});

test("bob's reload resumes with no gap and no repeat", async () => {
  for (const i of [1, 2, 3]) await send(ann.page, `before the reload ${i}`);
  const reloading = bob.page.reload();
  for (const i of [1, 2, 3]) await send(ann.page, `during the reload ${i}`);
  await reloading;
  await send(ann.page, "after the reload");
  await message(bob.page, "after the reload").waitFor();
  await message(ann.page, "after the reload").waitFor();
  const onBob = await messages(bob.page);
  assertOnceInOrder(onBob);
  assert.deepEqual(onBob.map((m) => m.id), (await messages(ann.page)).map((m) => m.id));
});

test("a message ann writes offline shows pending and reaches bob once when she is back", async () => {
  await ann.context.setOffline(true);
  await ann.page.locator('.banner[data-state="offline"]').waitFor();
  await send(ann.page, "written offline");
  await pending(ann.page, "written offline").waitFor();
  await ann.page.locator(".banner", { hasText: "1 message waiting" }).waitFor();
  await ann.context.setOffline(false);
  // The SDK reconnects at once on the browser's `online` event.
  await message(bob.page, "written offline").waitFor();
  await pending(ann.page, "written offline").waitFor({ state: "detached" });
  await ann.page.locator(".banner").waitFor({ state: "hidden" });
  await send(ann.page, "back online");
  await message(bob.page, "back online").waitFor();
  assert.equal(await message(bob.page, "written offline").count(), 1);
  assert.equal(await message(ann.page, "written offline").count(), 1);
  assertOnceInOrder(await messages(bob.page));
  assertOnceInOrder(await messages(ann.page));
});

test("bob's network drops while ann writes; back online he has every message once, in order", async () => {
  await bob.context.setOffline(true);
  await bob.page.locator('.banner[data-state="offline"]').waitFor();
  for (const i of [1, 2, 3]) await send(ann.page, `while bob is away ${i}`);
  await message(ann.page, "while bob is away 3").waitFor();
  await bob.context.setOffline(false);
  await message(bob.page, "while bob is away 3").waitFor();
  await bob.page.locator(".banner").waitFor({ state: "hidden" });
  const onBob = await messages(bob.page);
  assertOnceInOrder(onBob);
  assert.deepEqual(onBob.map((m) => m.id), (await messages(ann.page)).map((m) => m.id));
});

test("presence: ann sees bob online, then offline once he leaves", async () => {
  const bobOnAnn = ann.page.locator(`.members li[data-user-id="${bob.id}"]`);
  await bobOnAnn.and(ann.page.locator(".online")).waitFor();
  await bob.context.close();
  await bobOnAnn.and(ann.page.locator(".offline")).waitFor();
});
