// Screenshots of the real page for the docs: docs/screenshots/web-desktop.png (1280×800) and
// web-phone.png (390×844), after a short conversation between ann (desktop) and bob (phone),
// then web-search.png: ann's search over that conversation.
// Needs what the tests need (LIVECHAT_TEST_PG_URL, a built server); `npm run screenshots`.

import { mkdir } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { launchBrowser, message, newUser, search, send, signIn, startServer } from "./harness.mjs";

const out = fileURLToPath(new URL("../../../docs/screenshots/", import.meta.url));

const server = await startServer();
const browser = await launchBrowser();
try {
  const ann = await newUser(browser, { width: 1280, height: 800 });
  const bob = await newUser(browser, { width: 390, height: 844 });
  const annId = await signIn(ann.page, server.url, "ann");
  const bobId = await signIn(bob.page, server.url, "bob");

  // A room with an unread message for ann, created by bob.
  await bob.page.getByRole("button", { name: "Rooms" }).click();
  await bob.page.getByLabel("Room name").fill("release-2.4");
  await bob.page.getByLabel("Member ids").fill(String(annId));
  await bob.page.getByRole("button", { name: "Create room" }).click();
  await send(bob.page, "Changelog draft is up, have a look when you can");
  await bob.page.getByRole("button", { name: "Rooms" }).click();
  await bob.page.locator(".room-link", { hasText: "general" }).click();

  await send(ann.page, "Morning! The staging deploy finished, all green ✅");
  await send(bob.page, "Nice. Did the migration run on the replica too?");
  await send(ann.page, "It did — took 40 s, no locks held");
  await message(bob.page, "no locks held").getByRole("button", { name: "React 🎉" }).click();
  await message(ann.page, "all green").getByRole("button", { name: "Reply" }).click();
  await send(ann.page, `@bob can you do the production one at 14:00?`);
  await message(bob.page, "production one").getByRole("button", { name: "Reply" }).click();
  await send(bob.page, "@ann yes, I'll post here when it starts");
  await message(ann.page, "post here when").getByRole("button", { name: "React 👍" }).click();
  await send(ann.page, "Thanks! I'll watch the dashboards");
  await message(bob.page, "watch the dashboards").waitFor();
  await message(ann.page, "watch the dashboards").locator(".seen").waitFor();
  await Promise.all([
    bob.page.locator("#composer-input").pressSequentially("Sounds good, ping me if", { delay: 150 }),
    ann.page.locator(".typing", { hasText: "bob is typing" }).waitFor(),
  ]);
  await ann.page.locator(`.members li[data-user-id="${bobId}"].online`).waitFor();

  await mkdir(out, { recursive: true });
  // No hover toolbar in the pictures.
  await ann.page.mouse.move(0, 0);
  await bob.page.mouse.move(0, 0);
  await ann.page.screenshot({ path: `${out}web-desktop.png` });
  await bob.page.screenshot({ path: `${out}web-phone.png` });

  // Four of the messages have a word starting with "the" (the index lags the echo a moment).
  await search(ann.page, "the", 4);
  await ann.page.mouse.move(0, 0);
  await ann.page.screenshot({ path: `${out}web-search.png` });
  console.log(`wrote ${out}web-desktop.png, web-phone.png and web-search.png`);
} finally {
  await browser.close();
  await server.stop();
}
