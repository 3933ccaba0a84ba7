// REST helpers against a real server, and the mapping of its errors to LivechatError.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { LivechatError } from "../dist/index.js";
import { TestServer, forgedToken } from "../testkit/server.mjs";
import { next } from "../testkit/wait.mjs";

let server, ann, bob, cat, A, C;

before(async () => {
  server = await TestServer.start();
  [ann, bob, cat] = [await server.user("ann"), await server.user("bob"), await server.user("cat")];
  A = server.client(ann.token);
  C = server.client(cat.token);
  await A.connect();
});

after(async () => {
  A?.close();
  C?.close();
  await server?.stop();
});

test("rooms, createRoom, members, addMember, removeMember", async () => {
  const room = await A.createRoom("team", [bob.id]);
  assert.equal(room.name, "team");
  assert.equal(typeof room.last_seq, "number");
  const rooms = await A.rooms();
  const listed = rooms.find((r) => r.id === room.id);
  assert.deepEqual(
    Object.keys(listed).sort(),
    ["created_at", "delivered_seq", "id", "last_seq", "mentions", "name", "read_seq", "unread"],
  );
  assert.ok(rooms.some((r) => r.id === 1), "the default room");

  await A.addMember(room.id, cat.id);
  const members = await A.members(room.id);
  assert.deepEqual(members.map((m) => m.username).sort(), ["ann", "bob", "cat"]);
  assert.deepEqual(Object.keys(members[0]).sort(), ["delivered_seq", "online", "read_seq", "user_id", "username"]);
  assert.equal(members.find((m) => m.user_id === ann.id).online, true);

  await C.removeMember(room.id, cat.id); // a member may remove themself
  assert.deepEqual((await A.members(room.id)).map((m) => m.user_id).sort(), [ann.id, bob.id].sort());
});

test("history pages backwards, threads, events after a seq, unread, search", async () => {
  const room = await A.createRoom("hist", [bob.id]);
  const sent = [];
  for (let i = 0; i < 5; i++) sent.push(await A.send(room.id, `deployment step ${i}`));
  const reply = await A.send(room.id, "a reply", { replyTo: sent[0].id });

  const page1 = await A.history(room.id, { limit: 3 });
  assert.deepEqual(page1.map((m) => m.id), [reply.id, sent[4].id, sent[3].id], "newest first");
  const page2 = await A.history(room.id, { limit: 3, beforeSeq: page1.at(-1).seq });
  assert.deepEqual(page2.map((m) => m.id), [sent[2].id, sent[1].id, sent[0].id]);
  assert.equal(page2.at(-1).reply_count, 1);
  assert.deepEqual(page2[0].sender, { id: ann.id, username: "ann" });
  const thread = await A.history(room.id, { thread: sent[0].id });
  assert.deepEqual(thread.map((m) => m.id), [reply.id]);

  const events = await A.events(room.id, { afterSeq: sent[3].seq });
  assert.deepEqual(events.map((e) => e.seq), [sent[4].seq, reply.seq]);
  assert.equal(events[0].type, "message");

  const B = server.client(bob.token);
  try {
    const unread = await B.unread();
    assert.ok(unread.unread >= 6 && unread.rooms >= 1, JSON.stringify(unread));
  } finally {
    B.close();
  }

  // The server indexes off its write path (its README, "Search"): found within moments.
  let found = [];
  const deadline = Date.now() + 10_000;
  while ((found = await A.search("deploy", { roomId: room.id, limit: 10 })).length < 5) {
    assert.ok(Date.now() < deadline, `only ${found.length} of 5 searchable after 10 s`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.equal(found.length, 5);
  assert.ok(found.every((m) => m.room_id === room.id && /deploy/i.test(m.content)), JSON.stringify(found));
  assert.ok(found.every((m, i) => i === 0 || found[i - 1].id > m.id), "newest first");
});

test("errors map to LivechatError with the server's code and the HTTP status", async () => {
  const secret = await A.createRoom("secret", []);
  const err = (code, status) => (e) => e instanceof LivechatError && e.code === code && e.status === status;
  await assert.rejects(C.history(secret.id), err("forbidden", 403));
  await assert.rejects(C.members(secret.id), err("forbidden", 403));
  await assert.rejects(C.addMember(secret.id, cat.id), err("forbidden", 403));
  await assert.rejects(C.removeMember(secret.id, ann.id), err("forbidden", 403));
  await assert.rejects(A.history(secret.id, { limit: 501 }), err("bad_request", 400));
  await assert.rejects(A.events(999999), (e) => e instanceof LivechatError && ["not_found", "forbidden"].includes(e.code));
  const bad = server.client(forgedToken(ann.id));
  await assert.rejects(bad.rooms(), err("unauthorized", 401));
  const down = server.client(ann.token, { url: "http://127.0.0.1:1" });
  await assert.rejects(down.rooms(), (e) => e instanceof LivechatError && e.code === "network");
});

test("a room created by someone else shows up live with its join, the first event of the room", async () => {
  const joined = next(A, "member", (e) => e.user_id === ann.id && e.action === "join" && e.by === bob.id);
  const B = server.client(bob.token);
  try {
    const room = await B.createRoom("invite", [ann.id]);
    const join = await joined;
    assert.equal(join.room_id, room.id);
    assert.equal(A.lastSeq(room.id), join.seq);
  } finally {
    B.close();
  }
});
