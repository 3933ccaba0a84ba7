// Tokens: a refresh callback is asked again before every reconnect (here: the server closes the
// connection when its short-lived token expires); a fixed token the server refuses closes the
// client for good.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { TestServer, forgedToken } from "../testkit/server.mjs";
import { next, record, until, within } from "../testkit/wait.mjs";

let server, ann, bob, B, room;
const clients = [];

before(async () => {
  // Token expiry is checked on the ping timer: once a second here.
  server = await TestServer.start({ LIVECHAT_LIMITS__PING_SECS: "1" });
  ann = await server.user("ann");
  bob = await server.user("bob");
  B = server.client(bob.token);
  clients.push(B);
  await B.connect();
  room = await B.createRoom("tokens", [ann.id]);
});

after(async () => {
  for (const c of clients) c.close();
  await server?.stop();
});

test("the token callback is called before every (re)connect and REST call; nothing is lost across", async () => {
  let calls = 0;
  const A = server.client(async () => {
    calls++;
    return server.token(ann.id, 2); // expires in 2 s: the server closes the socket with 1008
  });
  clients.push(A);
  const states = record(A, "state");
  const seen = record(A, "event");
  const errors = record(A, "error");
  await A.connect();
  assert.equal(calls, 1);
  assert.equal(A.userId, ann.id);
  await A.rooms();
  assert.equal(calls, 2, "REST calls ask for a token too");

  // B keeps writing while A's token expires and A reconnects with a fresh one.
  const sent = [];
  const writing = (async () => {
    while (states.filter((s) => s === "open").length < 2) sent.push(await B.send(room.id, `tick ${sent.length}`));
    sent.push(await B.send(room.id, "after the reconnect"));
  })();
  await within(writing, 15_000, "A to reconnect after its token expired");
  assert.ok(states.includes("reconnecting"), `states: ${states}`);
  assert.ok(calls >= 3, `a fresh token for the reconnect (${calls} calls)`);
  assert.ok(errors.some((e) => e.code === "unauthorized"), "the server said why it closed");
  assert.notEqual(A.state, "closed");

  await until(() => A.lastSeq(room.id) === sent.at(-1).seq, 5000, "A to catch up");
  const messages = seen.filter((e) => e.room_id === room.id && e.type === "message");
  assert.deepEqual(messages.map((m) => m.id), sent.map((m) => m.id), "each once, in order, none lost");
  const own = await A.send(room.id, "A writes again");
  assert.equal(own.sender_id, ann.id);
});

test("a fixed token the server refuses: connect() rejects, state closed, error emitted", async () => {
  const A = server.client(forgedToken(ann.id));
  clients.push(A);
  const errors = record(A, "error");
  const pendingSend = A.send(room.id, "never sent");
  await assert.rejects(within(A.connect(), 10_000, "connect to fail"), { name: "LivechatError", code: "unauthorized" });
  assert.equal(A.state, "closed");
  assert.deepEqual(errors.map((e) => e.code), ["unauthorized"]);
  await assert.rejects(pendingSend, { code: "unauthorized" });
});

test("a fixed token that expires while connected closes the client instead of looping", async () => {
  const A = server.client(await server.token(ann.id, 2));
  clients.push(A);
  await A.connect();
  const closed = next(A, "state", (s) => s === "closed", 10_000);
  const error = next(A, "error", (e) => e.code === "unauthorized", 10_000);
  await closed;
  await error;
});
