// Refusals the server says to retry (`rate_limited`, `unavailable`) are retried with the same
// client_msg_id after `retry_after_ms`, keeping the send order.

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { TestServer } from "../testkit/server.mjs";
import { within } from "../testkit/wait.mjs";

const servers = [];
const clients = [];

after(async () => {
  for (const c of clients) c.close();
  await Promise.all(servers.map((s) => s.stop()));
});

async function setup(env) {
  const server = await TestServer.start(env);
  servers.push(server);
  const ann = await server.user("ann");
  const A = server.client(ann.token);
  clients.push(A);
  await A.connect();
  const room = await A.createRoom("retry", []);
  return { server, A, room };
}

/** Sends `n` messages at once; checks they resolve in order and are stored once each, in order. */
async function sendAll(A, room, n, tag, ms) {
  const ids = Array.from({ length: n }, (_, i) => `${tag}-${i}`);
  const messages = await within(
    Promise.all(ids.map((id, i) => A.send(room.id, `${tag} ${i}`, { clientMsgId: id }))),
    ms,
    `${n} sends to resolve`,
  );
  assert.deepEqual(messages.map((m) => m.client_msg_id), ids);
  for (let i = 1; i < n; i++) assert.ok(messages[i].seq > messages[i - 1].seq, `seq order at ${i}`);
  const stored = (await A.history(room.id, { limit: 500 })).reverse().filter((m) => m.client_msg_id?.startsWith(tag));
  assert.deepEqual(stored.map((m) => m.client_msg_id), ids, "stored once each, in send order");
  return messages;
}

test("rate_limited: 20 sends at once all resolve, in order, each stored once", async () => {
  const { server, A, room } = await setup({
    LIVECHAT_LIMITS__MESSAGES_PER_SEC: "4",
    LIVECHAT_LIMITS__MESSAGES_BURST: "2",
  });
  const messages = await sendAll(A, room, 20, "burst", 30_000);
  assert.ok((await server.metric("livechat_ws_errors_total", 'code="rate_limited"')) > 0, "the server did refuse some");
  assert.equal(A.state, "open", "retrying after retry_after_ms never earns the abuse close");

  // Edits share the bucket and are retried the same way.
  const edits = await within(
    Promise.all(messages.slice(0, 6).map((m) => A.edit(m.id, `${m.content} edited`))),
    30_000,
    "edits to resolve",
  );
  assert.deepEqual(edits.map((e) => e.message_id), messages.slice(0, 6).map((m) => m.id));
});

test("unavailable (storage timing out): sends are retried with the same id until stored once, in order", async () => {
  const { server, A, room } = await setup({ LIVECHAT_STORAGE__WRITE_TIMEOUT_MS: "300" });
  await A.send(room.id, "warm-up");
  // Hold the room's row lock: every commit to the room waits past the write timeout.
  const sql = await server.sql();
  try {
    await sql.query("BEGIN");
    await sql.query("SELECT last_seq FROM rooms WHERE id = $1 FOR UPDATE", [room.id]);
    const sending = sendAll(A, room, 10, "stalled", 30_000);
    const unavailable = () => server.metric("livechat_storage_unavailable_total");
    const deadline = Date.now() + 10_000;
    while ((await unavailable()) < 2) {
      assert.ok(Date.now() < deadline, "the server answers unavailable while the room is locked");
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(A.pending() === 10, "nothing acknowledged while storage is stuck");
    await sql.query("ROLLBACK");
    await sending;
  } finally {
    await sql.end();
  }
  assert.equal(A.pending(), 0);
});
