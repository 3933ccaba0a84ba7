// Pure logic, no server: backoff, the in-order buffer, the outbox's window, the sync queue,
// typing and receipts, token decoding.

import assert from "node:assert/strict";
import { test } from "node:test";
import { Backoff } from "../dist/backoff.js";
import { wsUrl } from "../dist/client.js";
import { userIdOf } from "../dist/jwt.js";
import { RoomOrder } from "../dist/order.js";
import { Outbox } from "../dist/outbox.js";
import { LocalStoragePositionStore } from "../dist/positions.js";
import { Receipts } from "../dist/receipts.js";
import { Typing } from "../dist/typing.js";
import { until } from "../testkit/wait.mjs";
import { SyncQueue, SYNC_MAX_ROOMS } from "../dist/sync.js";

const msg = (room, seq, extra = {}) => ({ type: "message", id: seq, room_id: room, seq, sender_id: 9, content: "", ...extra });

test("backoff: full jitter under a doubling ceiling capped at max, reset starts over", () => {
  const b = new Backoff(500, 15_000, () => 0.999999);
  const ceilings = Array.from({ length: 8 }, () => b.next() + 1);
  assert.deepEqual(ceilings, [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]);
  b.reset();
  assert.equal(b.next(), 499);
  assert.equal(new Backoff(500, 15_000, () => 0).next(), 0);
});

test("order: in seq order once each; a gap buffers until filled", () => {
  const o = new RoomOrder(() => 7);
  o.track(1, 10);
  assert.deepEqual(o.accept(msg(1, 10)).deliver, [], "seq <= last is a repeat");
  let r = o.accept(msg(1, 12));
  assert.deepEqual([r.deliver, r.gap], [[], true]);
  r = o.accept(msg(1, 13));
  assert.deepEqual([r.deliver, r.gap], [[], true]);
  r = o.accept(msg(1, 11));
  assert.deepEqual(r.deliver.map((e) => e.seq), [11, 12, 13]);
  assert.equal(r.gap, false);
  assert.equal(o.last(1), 13);
  assert.deepEqual(o.accept(msg(1, 12)).deliver, []);
});

test("order: an unknown room starts at its first event; the user's leave ends it until a new join", () => {
  const o = new RoomOrder(() => 7);
  const join = { type: "member", room_id: 5, seq: 40, user_id: 7, action: "join", by: 1 };
  assert.deepEqual(o.accept(join).deliver, [join]);
  assert.equal(o.last(5), 40);
  const leave = { ...join, seq: 41, action: "leave" };
  assert.deepEqual(o.accept(leave).deliver, [leave]);
  assert.equal(o.has(5), false);
  assert.deepEqual(o.accept(msg(5, 42)).deliver, [], "events after the leave are not the user's");
  const again = { ...join, seq: 50 };
  assert.deepEqual(o.accept(again).deliver, [again]);
  assert.equal(o.has(5), true);
});

test("outbox: one in flight, in order; retryable errors hold the queue; other errors reject", async () => {
  const sent = [];
  const box = new Outbox((f) => (sent.push(f.client_msg_id), true));
  const frame = (id) => ({ type: "message", room_id: 1, content: id, client_msg_id: id });
  const a = box.add(frame("a"));
  const b = box.add(frame("b"));
  const c = box.add(frame("c"));
  assert.deepEqual(sent, [], "nothing goes out before the connection is open");
  box.setOpen(true);
  assert.deepEqual(sent, ["a"]);
  box.onError("a", { type: "error", code: "rate_limited", message: "", retry_after_ms: 5 });
  assert.deepEqual(sent, ["a"], "b waits behind a");
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(sent, ["a", "a"], "a again, same id");
  box.onMessage(msg(1, 1, { client_msg_id: "a" }));
  assert.equal((await a).seq, 1);
  assert.deepEqual(sent, ["a", "a", "b"]);
  box.setOpen(false);
  box.setOpen(true);
  assert.deepEqual(sent, ["a", "a", "b", "b"], "unanswered head sent again on the next connection");
  box.onError("b", { type: "error", code: "forbidden", message: "no" });
  await assert.rejects(b, { name: "LivechatError", code: "forbidden" });
  assert.deepEqual(sent.at(-1), "c");
  box.close(new Error("closed"));
  await assert.rejects(c, /closed/);
  assert.equal(box.size, 0);
});

test("sync: chunks of at most 500 rooms, one in flight; more and gaps sync again; ref-less errors", () => {
  const frames = [];
  const pos = new Map();
  let idle = 0;
  const q = new SyncQueue({
    send: (f) => (frames.push(f), true),
    position: (r) => pos.get(r) ?? 0,
    tracked: (r) => pos.has(r),
    hasGap: () => false,
    notMember: (r) => pos.delete(r),
    idle: () => idle++,
  });
  for (let r = 1; r <= 600; r++) pos.set(r, r);
  q.start(pos.keys());
  assert.equal(frames.length, 1);
  assert.equal(Object.keys(frames[0].rooms).length, SYNC_MAX_ROOMS);
  q.onSynced({ type: "synced", rooms: frames[0].rooms, more: false });
  assert.equal(frames.length, 2);
  assert.equal(Object.keys(frames[1].rooms).length, 100);
  assert.equal(idle, 0);
  pos.set(600, 9999); // room 600's replay made progress and was capped
  const answered = { ...frames[1].rooms };
  delete answered["599"]; // forbidden: not a member
  assert.equal(q.onError({ type: "error", code: "forbidden", message: "" }), true);
  q.onSynced({ type: "synced", rooms: answered, more: true });
  assert.equal(pos.has(599), false);
  assert.deepEqual(frames[2].rooms, { 600: 9999 });
  q.onSynced({ type: "synced", rooms: { 600: 9999 }, more: false });
  assert.equal(idle, 1);
  q.probe();
  assert.deepEqual(frames[3].rooms, {}, "a probe is an empty sync");
  assert.equal(q.onError({ type: "error", code: "rate_limited", message: "", retry_after_ms: 10_000 }), true);
  assert.equal(q.busy(), true, "refused: it waits for the bucket");
  q.stop();
  assert.equal(q.onError({ type: "error", code: "rate_limited", message: "" }), false, "nothing in flight: not ours");
});

test("typing: start throttled per room, stop only after a start, frames spaced by the gap", async () => {
  const out = [];
  let held = false;
  const t = new Typing((room, state) => (out.push([room, state]), true), () => held, 3000, 30);
  const sent = () => out.map(([r, s]) => `${r}:${s}`);
  t.set(1, "stop");
  assert.deepEqual(sent(), [], "no start, no stop");
  t.set(1, "start");
  t.set(1, "start");
  t.set(2, "start");
  assert.deepEqual(sent(), ["1:start", "2:start"], "throttled per room");
  t.set(1, "stop");
  assert.deepEqual(sent(), ["1:start", "2:start"], "a stop right after the start waits for the gap");
  await until(() => out.length === 3, 1000, "the stop");
  assert.deepEqual(sent().at(-1), "1:stop");
  t.set(1, "stop");
  assert.equal(out.length, 3, "one stop");
  t.set(4, "start");
  t.set(4, "stop");
  t.set(4, "start");
  await new Promise((r) => setTimeout(r, 60));
  assert.deepEqual(sent().slice(3), ["4:start"], "typing again before the stop went out: the start holds");
  held = true;
  t.set(3, "start");
  assert.equal(out.length, 4, "held while a sync is in flight");
  held = false;
  t.flush();
  assert.deepEqual(sent().at(-1), "3:start");
});

test("receipts: only above the watermark sent; unconfirmed ones again on the next connection", () => {
  const out = [];
  const r = new Receipts((f) => (out.push(f), true));
  r.mark(1, 5, true);
  assert.deepEqual(out, [], "nothing before the connection is open");
  r.setOpen(true);
  assert.deepEqual(out.splice(0), [{ type: "status_update", message_id: 5, read: true }]);
  r.mark(1, 10, true);
  r.mark(1, 9, true);
  r.mark(1, 10, false);
  r.mark(1, 11, false);
  assert.deepEqual(out, [
    { type: "status_update", message_id: 10, read: true },
    { type: "status_update", message_id: 11, delivered: true },
  ]);
  r.onStatus({ type: "status_update", room_id: 1, message_id: 10, user_id: 7, delivered: true, read: false }, 7);
  r.setOpen(false);
  r.setOpen(true);
  assert.deepEqual(out.at(-1), { type: "status_update", message_id: 11, delivered: true }, "unconfirmed: sent again");
  assert.equal(out.length, 3, "the confirmed read is not");
});

test("localStorage positions: survive a new store, merge across tabs, ignore junk", () => {
  const data = new Map();
  globalThis.localStorage = { getItem: (k) => data.get(k) ?? null, setItem: (k, v) => data.set(k, String(v)) };
  try {
    const tab1 = new LocalStoragePositionStore("lc:7");
    const tab2 = new LocalStoragePositionStore("lc:7");
    assert.deepEqual(tab1.load(), {});
    tab1.save(1, 10);
    tab2.save(2, 5);
    tab1.save(1, 11);
    tab2.save(1, 3); // a tab that is behind does not move the position back
    assert.deepEqual(new LocalStoragePositionStore("lc:7").load(), { 1: 11, 2: 5 });
    data.set("lc:8", '{"1": "x", "2": -1, "3": 4}');
    assert.deepEqual(new LocalStoragePositionStore("lc:8").load(), { 3: 4 });
  } finally {
    delete globalThis.localStorage;
  }
});

test("token sub and the WebSocket URL", () => {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  assert.equal(userIdOf(`${part({ alg: "HS256" })}.${part({ sub: "42", exp: 1 })}.sig`), 42);
  assert.throws(() => userIdOf("nope"), { code: "unauthorized" });
  assert.equal(wsUrl("https://chat.example.com/base/", "t k"), "wss://chat.example.com/base/ws/chat?token=t+k&resume=1");
  assert.equal(wsUrl("http://127.0.0.1:8000", "x"), "ws://127.0.0.1:8000/ws/chat?token=x&resume=1");
});
