// Resume: a client that was away gets exactly the room events it missed (no gap, no repeat),
// after a network drop (same client) and after a restart of the page (a new client on the
// same position store).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { MemoryPositionStore } from "../dist/index.js";
import { Proxy } from "../testkit/proxy.mjs";
import { TestServer } from "../testkit/server.mjs";
import { next, record, until } from "../testkit/wait.mjs";

let server, proxy, ann, bob, A, room;
const clients = [];

before(async () => {
  server = await TestServer.start();
  proxy = await Proxy.start(server.port);
  ann = await server.user("ann");
  bob = await server.user("bob");
  A = server.client(ann.token);
  clients.push(A);
  await A.connect();
  room = await A.createRoom("resume", [bob.id]);
});

after(async () => {
  for (const c of clients) c.close();
  await proxy?.close();
  await server?.stop();
});

/** Bob's client, connected through the proxy. */
function bobClient(positions) {
  const c = server.client(bob.token, { url: proxy.url, positions });
  clients.push(c);
  return c;
}

/** Room events A writes while bob is away: messages, an edit, a reaction, a delete. */
async function writeWhileAway(tag) {
  const first = await A.send(room.id, `${tag} 1`);
  await A.send(room.id, `${tag} 2`);
  await A.edit(first.id, `${tag} 1 edited`);
  await A.react(first.id, "👀", true);
  const last = await A.send(room.id, `${tag} 3`);
  return { from: first.seq, to: last.seq };
}

test("after a network drop the same client gets exactly the missed events", async () => {
  const B = bobClient(new MemoryPositionStore());
  await B.connect();
  const seen = record(B, "event");
  await A.send(room.id, "before");
  await until(() => seen.length === 1, 5000, "B to see the first message");

  proxy.block();
  await until(() => B.state === "reconnecting", 5000, "B to notice the drop");
  const missed = await writeWhileAway("away");
  assert.equal(seen.length, 1, "nothing reaches B while it is away");

  const reopened = next(B, "state", (s) => s === "open", 15_000);
  proxy.unblock();
  await reopened;
  await until(() => B.lastSeq(room.id) === missed.to, 5000, "B to catch up");
  const seqs = seen.map((e) => e.seq);
  assert.deepEqual(seqs.slice(1), range(missed.from, missed.to), "exactly the missed events, in order");
  assert.equal(new Set(seqs).size, seqs.length, "no repeat");
  const edit = seen.find((e) => e.type === "edit");
  assert.equal(edit.content, "away 1 edited");
});

test("a new client on the same position store resumes after its last seen seq", async () => {
  const positions = new MemoryPositionStore();
  const B1 = bobClient(positions);
  await B1.connect();
  const m = await A.send(room.id, "seen by B1");
  await until(() => B1.lastSeq(room.id) === m.seq, 5000, "B1 to see it");
  B1.close();
  assert.equal(positions.load()[String(room.id)], m.seq, "the position was saved");

  const missed = await writeWhileAway("reload");
  const B2 = bobClient(positions);
  const seen = record(B2, "event");
  const synced = record(B2, "synced");
  await B2.connect();
  await until(() => B2.lastSeq(room.id) === missed.to, 5000, "B2 to catch up");
  assert.deepEqual(seen.filter((e) => e.room_id === room.id).map((e) => e.seq), range(missed.from, missed.to));
  assert.ok(synced.length >= 1 && String(room.id) in synced[0].rooms, "resumed with sync");

  // And live from there on.
  const live = await A.send(room.id, "live");
  await until(() => B2.lastSeq(room.id) === live.seq, 5000, "B2 to get the live message");
  assert.equal(seen.at(-1).id, live.id);
});

test("a client that never saw a room starts from now; a room joined while connected starts at the join", async () => {
  const B = bobClient(new MemoryPositionStore());
  const seen = record(B, "event");
  await B.connect();
  assert.equal(B.lastSeq(room.id), (await A.rooms()).find((r) => r.id === room.id).last_seq);
  assert.equal(seen.filter((e) => e.room_id === room.id).length, 0, "older events come from history, not replay");

  const other = await A.createRoom("later", []);
  const joined = next(B, "member", (e) => e.room_id === other.id && e.user_id === bob.id && e.action === "join");
  await A.addMember(other.id, bob.id);
  const join = await joined;
  const m = await A.send(other.id, "welcome");
  await until(() => B.lastSeq(other.id) === m.seq, 5000, "B to get the message of the new room");
  assert.deepEqual(seen.filter((e) => e.room_id === other.id).map((e) => e.seq), [join.seq, m.seq]);

  const left = next(B, "member", (e) => e.room_id === other.id && e.action === "leave");
  await B.removeMember(other.id, bob.id);
  await left;
  assert.equal(B.lastSeq(other.id), 0, "a room left is not followed any more");
});

test("offline sends queue; sendTimeoutMs gives up; close() rejects what is left with code closed", async () => {
  const B = bobClient(new MemoryPositionStore());
  await B.connect();
  proxy.block();
  await until(() => B.state === "reconnecting", 5000, "B to notice the drop");
  const queued = B.send(room.id, "queued");
  const doomed = B.send(room.id, "doomed", { clientMsgId: "doomed-1" });
  const edit = B.edit(1, "queued edit");
  assert.equal(B.pending(), 2);
  B.close();
  await assert.rejects(queued, { name: "LivechatError", code: "closed" });
  await assert.rejects(doomed, { code: "closed" });
  await assert.rejects(edit, { code: "closed" });
  assert.equal(B.pending(), 0);

  const C = server.client(bob.token, { url: proxy.url, sendTimeoutMs: 200 });
  clients.push(C);
  const connecting = C.connect();
  const late = C.send(room.id, "too late");
  await assert.rejects(late, { code: "timeout" });
  assert.equal(C.pending(), 0);
  proxy.unblock();
  await connecting;
  const history = await A.history(room.id, { limit: 20 });
  assert.ok(!history.some((m) => ["queued", "doomed", "too late"].includes(m.content)), "nothing was stored");
});

test("browsers: `offline` drops the socket at once, `online` reconnects without waiting", async () => {
  // Node has no window: stand one in for the browser's, with its network events.
  globalThis.window = new EventTarget();
  try {
    // A minute of backoff: only the `online` event can bring it back within the test's wait.
    const B = server.client(bob.token, { backoff: { initialMs: 60_000, maxMs: 60_000 } });
    clients.push(B);
    await B.connect();
    const seen = record(B, "event");
    window.dispatchEvent(new Event("offline"));
    assert.equal(B.state, "reconnecting", "at once, not when a ping times out");
    const m = await A.send(room.id, "while offline");
    const reopened = next(B, "state", (st) => st === "open", 5000);
    window.dispatchEvent(new Event("online"));
    await reopened;
    await until(() => B.lastSeq(room.id) === m.seq, 5000, "B to get what it missed");
    assert.deepEqual(seen.map((e) => e.id), [m.id]);
    B.close();
    window.dispatchEvent(new Event("offline"));
    assert.equal(B.state, "closed", "a closed client no longer listens");
  } finally {
    delete globalThis.window;
  }
});

function range(from, to) {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}
