// The acceptance test: the server is killed (SIGKILL) while messages are being sent and started
// again on the same database and port. Every send() resolves once, the room holds each message
// once in send order, and the other member receives each once with no gap.

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { TestServer } from "../testkit/server.mjs";
import { next, record, until, within } from "../testkit/wait.mjs";

const N = 200;
let server, A, B;

after(async () => {
  A?.close();
  B?.close();
  await server?.stop();
});

test("200 sends across a SIGKILL and restart: each resolves once, stored once, in order, received once", async () => {
  server = await TestServer.start();
  const ann = await server.user("ann");
  const bob = await server.user("bob");
  A = server.client(ann.token);
  B = server.client(bob.token);
  await Promise.all([A.connect(), B.connect()]);
  const room = await A.createRoom("outage", [bob.id]);
  await next(B, "member", (e) => e.room_id === room.id && e.user_id === bob.id);

  const bMessages = record(B, "message");
  const bEvents = record(B, "event");
  const aStates = record(A, "state");
  const resolutions = new Map(); // client_msg_id → times resolved
  let resolved = 0;
  const sends = [];
  const send = (i) => {
    const id = `outage-${i}`;
    sends.push(
      A.send(room.id, `message ${i}`, { clientMsgId: id }).then((m) => {
        resolutions.set(id, (resolutions.get(id) ?? 0) + 1);
        resolved++;
        return m;
      }),
    );
  };

  // The first half goes out; the server dies with sends in flight and queued.
  for (let i = 0; i < N / 2; i++) send(i);
  await until(() => resolved >= 40, 15_000, "40 sends acknowledged");
  await server.kill("SIGKILL");
  assert.ok(resolved < N / 2, `sends were still pending at the kill (${resolved} resolved)`);
  await until(() => A.state === "reconnecting", 5000, "A to notice the outage");

  // The second half is sent while the server is down: it queues.
  for (let i = N / 2; i < N; i++) send(i);
  assert.ok(A.pending() > N / 2, "offline sends wait in the outbox");
  await server.spawn(server.port);

  const messages = await within(Promise.all(sends), 60_000, "every send to resolve");
  assert.ok(aStates.includes("reconnecting") && aStates.at(-1) === "open", `states: ${aStates}`);
  assert.equal(A.pending(), 0);

  // Each resolved exactly once, with its own message, in send order.
  assert.equal(resolutions.size, N);
  assert.ok([...resolutions.values()].every((n) => n === 1));
  messages.forEach((m, i) => assert.equal(m.client_msg_id, `outage-${i}`));
  for (let i = 1; i < N; i++) assert.ok(messages[i].seq > messages[i - 1].seq, `seq order at ${i}`);
  assert.equal(new Set(messages.map((m) => m.id)).size, N);

  // The room's history holds each exactly once, in send order.
  const history = (await A.history(room.id, { limit: 500 })).reverse();
  const stored = history.filter((m) => m.client_msg_id?.startsWith("outage-"));
  assert.deepEqual(
    stored.map((m) => m.client_msg_id),
    messages.map((m) => m.client_msg_id),
    "stored once each, in send order",
  );
  assert.deepEqual(stored.map((m) => m.seq), messages.map((m) => m.seq));

  // The other member got each exactly once, in order, with no gap in the room's events.
  await until(() => bMessages.length >= N, 30_000, `B to receive ${N} messages (has ${bMessages.length})`);
  assert.deepEqual(bMessages.map((m) => m.client_msg_id), messages.map((m) => m.client_msg_id));
  const seqs = bEvents.filter((e) => e.room_id === room.id).map((e) => e.seq);
  for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1] + 1, "gapless");
  assert.equal(B.lastSeq(room.id), messages.at(-1).seq);
});
