// Two clients of a real server: every write and its events, typed and delivered once in order.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { TestServer } from "../testkit/server.mjs";
import { next, record, until } from "../testkit/wait.mjs";

let server, ann, bob, A, B, room;

before(async () => {
  server = await TestServer.start();
  ann = await server.user("ann");
  bob = await server.user("bob");
  A = server.client(ann.token);
  B = server.client(bob.token);
});

after(async () => {
  A?.close();
  B?.close();
  await server?.stop();
});

/** Asserts that a client's room events of `roomId` are contiguous seqs, each once. */
function assertGapless(events, roomId) {
  const seqs = events.filter((e) => e.room_id === roomId).map((e) => e.seq);
  for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1] + 1, `gapless seqs: ${seqs}`);
}

test("connect goes connecting → syncing → open and learns the user id", async () => {
  const states = record(A, "state");
  assert.equal(A.state, "idle");
  await A.connect();
  assert.deepEqual(states, ["connecting", "syncing", "open"]);
  assert.equal(A.userId, ann.id);
  assert.equal(A.state, "open");
});

test("send resolves with the echo; the other member receives it once; replies and mentions", async () => {
  const bobOnline = next(A, "presence", (p) => p.user_id === bob.id && p.online);
  await B.connect();
  // Awaited from before the request: the join can reach B before A has the REST answer.
  const joined = next(B, "member", (e) => e.user_id === bob.id && e.action === "join");
  room = await A.createRoom("ops", [bob.id]);
  assert.equal((await joined).room_id, room.id);
  await bobOnline;

  const bEvents = record(B, "event");
  const aMessages = record(A, "message");
  const received = next(B, "message", (m) => m.content === "hello");
  const m = await A.send(room.id, "hello");
  assert.equal(m.type, "message");
  assert.equal(m.room_id, room.id);
  assert.equal(m.sender_id, ann.id);
  assert.match(m.client_msg_id, /^[0-9a-f-]{36}$/);
  assert.deepEqual(await received, m);

  const reply = await A.send(room.id, "@bob look", { replyTo: m.id, mentions: [bob.id], clientMsgId: "mine-1" });
  assert.equal(reply.client_msg_id, "mine-1");
  assert.equal(reply.reply_to, m.id);
  assert.deepEqual(reply.mentions, [bob.id]);
  await until(() => bEvents.length === 2 && aMessages.length === 2, 5000, "both messages on both clients");
  assert.deepEqual(bEvents.map((e) => e.id), [m.id, reply.id]);
  assert.deepEqual(aMessages.map((e) => e.id), [m.id, reply.id], "the sender's own echo is an event too, once");
  assert.equal(A.lastSeq(room.id), reply.seq);
  assert.equal(A.pending(), 0);
});

test("a send repeated with the same clientMsgId resolves with the original, emitted once", async () => {
  const bMessages = record(B, "message");
  const aMessages = record(A, "message");
  const first = await A.send(room.id, "once", { clientMsgId: "idem-1" });
  const later = await A.send(room.id, "later");
  const again = await A.send(room.id, "once (retyped)", { clientMsgId: "idem-1" });
  assert.deepEqual(again, first, "the server echoes the original, same id and seq");
  await until(() => bMessages.length === 2, 5000, "B to get both messages");
  assert.deepEqual(bMessages.map((m) => m.id), [first.id, later.id]);
  assert.deepEqual(aMessages.map((m) => m.id), [first.id, later.id], "the repeat echo is not a new event");
});

test("edit, react (incl. one that changes nothing) and delete resolve with their events", async () => {
  const bEvents = record(B, "event");
  const aEvents = record(A, "event");
  const m = await A.send(room.id, "typo");

  const edited = await A.edit(m.id, "fixed");
  assert.deepEqual(
    { type: edited.type, message_id: edited.message_id, user_id: edited.user_id, content: edited.content },
    { type: "edit", message_id: m.id, user_id: ann.id, content: "fixed" },
  );
  assert.equal(edited.seq, m.seq + 1);

  const aSawReaction = next(A, "reaction", (r) => r.message_id === m.id && r.on);
  const r = await B.react(m.id, "👍", true);
  assert.deepEqual([r.type, r.user_id, r.emoji, r.on], ["reaction", bob.id, "👍", true]);
  assert.deepEqual(await aSawReaction, r);
  assert.equal(await B.react(m.id, "👍", true), null, "an add that exists changes nothing");
  assert.equal(await B.react(m.id, "🎉", false), null, "a remove that does not exist changes nothing");
  const off = await B.react(m.id, "👍", false);
  assert.equal(off.on, false);

  const deleted = await A.delete(m.id);
  assert.deepEqual([deleted.type, deleted.message_id, deleted.user_id], ["delete", m.id, ann.id]);
  await until(() => bEvents.at(-1)?.seq === deleted.seq, 5000, "B to see the delete");
  assert.deepEqual(bEvents.map((e) => e.type), ["message", "edit", "reaction", "reaction", "delete"]);
  assert.deepEqual(aEvents.map((e) => e.seq), bEvents.map((e) => e.seq));
  assertGapless(bEvents, room.id);

  const [stored] = await B.history(room.id, { limit: 1 });
  assert.equal(stored.deleted, true);
  assert.equal(stored.content, "");
});

test("refused writes reject with the server's code and the connection carries on", async () => {
  const m = await A.send(room.id, "ann's");
  await assert.rejects(B.edit(m.id, "not yours"), { name: "LivechatError", code: "forbidden" });
  await assert.rejects(B.delete(m.id), { code: "forbidden" });
  await assert.rejects(A.edit(987654321, "x"), { code: "not_found" });
  await assert.rejects(A.react(m.id, "two words", true), { code: "bad_request" });
  await assert.rejects(A.send(room.id, "   "), { code: "bad_request" });
  await assert.rejects(A.send(room.id, "x".repeat(5000)), { code: "too_large" });
  const ok = await A.send(room.id, "still fine");
  assert.equal(ok.content, "still fine");
  assert.equal(A.state, "open");
});

test("typing start/stop reaches the other member (the stop spaced past the server's throttle)", async () => {
  const typing = record(B, "typing");
  A.typing(room.id);
  const start = await next(B, "typing", (t) => t.room_id === room.id && t.state === "start");
  assert.deepEqual(start, { type: "typing", room_id: room.id, user_id: ann.id, state: "start" });
  A.typing(room.id); // within typingIntervalMs: not sent
  A.typing(room.id, "stop");
  await next(B, "typing", (t) => t.state === "stop");
  assert.deepEqual(typing.map((t) => t.state), ["start", "stop"]);
});

test("markRead sends a receipt once above the watermark; the room sees status_update", async () => {
  const m = await A.send(room.id, "read me");
  const seen = next(A, "status_update", (s) => s.message_id === m.id && s.user_id === bob.id);
  B.markRead(room.id, m.id);
  B.markDelivered(room.id, m.id); // below what read already reported: not sent
  const s = await seen;
  assert.deepEqual(s, { type: "status_update", message_id: m.id, room_id: room.id, user_id: bob.id, delivered: true, read: true });
  const members = await A.members(room.id);
  const bobRow = members.find((x) => x.user_id === bob.id);
  assert.equal(bobRow.read_seq, m.seq);
  assert.equal(bobRow.delivered_seq, m.seq);
  assert.equal(bobRow.online, true);
});

test("presence: a member going offline is announced", async () => {
  // In the rooms bob was a member of when he connected (the server's choice): room 1.
  const offline = next(A, "presence", (p) => p.user_id === bob.id && !p.online);
  B.close();
  assert.equal(B.state, "closed");
  await offline;
  await assert.rejects(B.send(room.id, "after close"), { code: "closed" });
});
