//! Cluster (README.md, "Cluster"): several `livechat serve` processes on one PostgreSQL
//! database and one Redis. Cross-node delivery of every room event, ordering under
//! concurrent senders on different nodes, cluster-wide presence and online state,
//! notifications that respect presence on other nodes, degrading to node-local delivery when
//! Redis is lost and healing (with catch-up from PostgreSQL) when it returns, `server.reuse_port`,
//! and isolation between clusters on different databases that share one Redis.
//!
//! Real parts only: the `livechat` binary, the shared test PostgreSQL and Redis
//! (`LIVECHAT_TEST_PG_URL`, `LIVECHAT_TEST_REDIS_URL`), a private `redis-server` for the outage
//! test, real WebSocket clients and a real webhook receiver.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::time::Instant;

/// How long a node may take to notice that Redis is gone or back.
const HEAL_TIMEOUT: Duration = Duration::from_secs(20);

// --- helpers -----------------------------------------------------------------------------------

fn is_presence_of(v: &Value, user: i64) -> bool {
    v["type"] == "presence" && v["user_id"] == json!(user)
}

fn is_typing_of(v: &Value, user: i64) -> bool {
    v["type"] == "typing" && v["user_id"] == json!(user)
}

/// Reads `ws` until an event matching `pred` (an `error` panics); returns the events before it
/// and the match.
async fn read_until(ws: &mut WsClient, what: &str, mut pred: impl FnMut(&Value) -> bool) -> (Vec<Value>, Value) {
    let deadline = Instant::now() + RECV_TIMEOUT;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = ws
            .recv_json_within(left)
            .await
            .unwrap_or_else(|| panic!("timed out waiting for {what}; events meanwhile: {before:?}"));
        assert_ne!(v["type"], "error", "error event while waiting for {what}: {v}");
        if pred(&v) {
            return (before, v);
        }
        before.push(v);
    }
}

/// The events `ws` receives before the message `id` (which must arrive within RECV_TIMEOUT).
async fn events_before_message(ws: &mut WsClient, id: &Value) -> Vec<Value> {
    let id = id.clone();
    read_until(ws, &format!("message {id}"), |v| v["type"] == "message" && v["id"] == id).await.0
}

/// Sends a message with a fresh `client_msg_id`; returns the echo and the events before it.
async fn send_collect(ws: &mut WsClient, room: i64, content: &str) -> (Value, Vec<Value>) {
    let cid = format!("c-{}", random_hex(8));
    ws.send_msg(room, content, Some(&cid)).await;
    let (before, echo) =
        read_until(ws, &format!("echo of {content:?}"), |v| v["type"] == "message" && v["client_msg_id"] == json!(cid))
            .await;
    (echo, before)
}

/// `online` of `user` in `GET /v1/rooms/{room}/members` on `node`, as the holder of `token`.
async fn online_on(node: &TestServer, token: &str, room: i64, user: i64) -> bool {
    let r = node.get_json(&format!("/v1/rooms/{room}/members"), token).await;
    assert_eq!(r.status, 200, "members of room {room}: {r:?}");
    let members = r.body.as_array().unwrap_or_else(|| panic!("members is not an array: {r:?}"));
    let m = members
        .iter()
        .find(|m| m["user_id"] == json!(user))
        .unwrap_or_else(|| panic!("user {user} is not listed in room {room}: {r:?}"));
    m["online"].as_bool().unwrap_or_else(|| panic!("online must be a boolean: {m}"))
}

async fn scrape(node: &TestServer, name: &str) -> Option<f64> {
    let r = node.get_anon("/metrics").await;
    assert_eq!(r.status, 200, "/metrics: {r:?}");
    metric(&r.text, name)
}

// --- 1. messages -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_node_messages_ordered_both_ways() {
    let c = cluster_with(2, &redis_url(), FAST_LIMITS).await;
    let (n1, n2) = (&c[0], &c[1]);
    let (_, ta) = n1.create_user("ann").await;
    let (bob, tb) = n1.create_user("bob").await;
    let (cat, tc) = n1.create_user("cat").await;
    let (dan, td) = n2.create_user("dan").await;
    let room = n2.create_room(&ta, "cross", &[bob, cat, dan]).await;
    // The room's log so far (the members' joins, §10): the messages take the seqs after it.
    let base = n1.last_seq(&ta, room).await;
    // ann and cat on n1, bob and dan on n2.
    let mut ann_ws = n1.ws_ready(&ta).await;
    let mut cat_ws = n1.ws_ready(&tc).await;
    let mut bob_ws = n2.ws_ready(&tb).await;
    let mut dan_ws = n2.ws_ready(&td).await;

    // n1 -> n2: the very same event (id, seq, timestamp...) on every node.
    const FIELDS: [&str; 7] = ["id", "room_id", "seq", "sender_id", "content", "timestamp", "client_msg_id"];
    let e1 = ann_ws.send_and_echo(room, "hello from n1").await;
    assert_eq!(e1["seq"], json!(base + 1), "{e1}");
    for (who, ws) in [("bob@n2", &mut bob_ws), ("dan@n2", &mut dan_ws), ("cat@n1", &mut cat_ws)] {
        let got = ws.recv_type("message").await;
        assert_message_event(&got);
        for k in FIELDS {
            assert_eq!(got[k], e1[k], "{who}: field {k} must match the sender's echo");
        }
    }
    // n2 -> n1.
    let e2 = bob_ws.send_and_echo(room, "hello from n2").await;
    assert_eq!(e2["seq"], json!(base + 2), "{e2}");
    for (who, ws) in [("ann@n1", &mut ann_ws), ("cat@n1", &mut cat_ws), ("dan@n2", &mut dan_ws)] {
        let got = ws.recv_type("message").await;
        assert_message_event(&got);
        for k in FIELDS {
            assert_eq!(got[k], e2[k], "{who}: field {k} must match the sender's echo");
        }
    }

    // Both nodes send into the room at once. Every connection, on either node, sees seqs
    // base+3..=base+2N+2 exactly once each, in order, with the same id for each seq.
    const N: usize = 40;
    let total = 2 * N;
    let mut tasks = Vec::new();
    for (who, sender, mut ws) in
        [("ann", true, ann_ws), ("bob", true, bob_ws), ("cat", false, cat_ws), ("dan", false, dan_ws)]
    {
        tasks.push(tokio::spawn(async move {
            if sender {
                for i in 0..N {
                    ws.send_msg(room, &format!("{who} {i}"), Some(&format!("{who}-{i}"))).await;
                }
            }
            let mut got = Vec::with_capacity(total);
            while got.len() < total {
                let m = ws.recv_type("message").await;
                assert_eq!(m["room_id"], json!(room), "{who}: {m}");
                let cid = m["client_msg_id"].as_str().unwrap_or_default().to_string();
                got.push((m["seq"].as_i64().unwrap(), m["id"].as_i64().unwrap(), cid));
            }
            (who, sender, ws, got)
        }));
    }
    let mut reference: Option<Vec<(i64, i64)>> = None;
    let mut conns = Vec::new();
    for t in tasks {
        let (who, sender, ws, got) = bounded("a connection's messages", t).await.expect("connection task");
        let seqs: Vec<i64> = got.iter().map(|g| g.0).collect();
        assert_eq!(
            seqs,
            (base + 3..=base + total as i64 + 2).collect::<Vec<_>>(),
            "{who}: gapless, ordered, unique seqs"
        );
        let seq_ids: Vec<(i64, i64)> = got.iter().map(|g| (g.0, g.1)).collect();
        match &reference {
            None => reference = Some(seq_ids),
            Some(r) => assert_eq!(&seq_ids, r, "{who}: the same id for each seq on every connection"),
        }
        let cids: HashSet<&str> = got.iter().map(|g| g.2.as_str()).collect();
        assert_eq!(cids.len(), total, "{who}: every message once: {got:?}");
        if sender {
            let own: Vec<&str> =
                got.iter().map(|g| g.2.as_str()).filter(|c| c.starts_with(&format!("{who}-"))).collect();
            let want: Vec<String> = (0..N).map(|i| format!("{who}-{i}")).collect();
            assert_eq!(own, want, "{who}: own messages in send order");
        }
        conns.push((who, ws));
    }
    // Nothing more afterwards (no late duplicates from the other node).
    for (who, ws) in &mut conns {
        let extra = ws.sync_barrier().await;
        assert!(extra.iter().all(|v| v["type"] != "message"), "{who}: extra messages: {extra:?}");
    }
    // Stored gapless: the joins, then exactly the delivered messages.
    let db = n1.db_client().await;
    let log = assert_db_room_log_gapless(&db, room).await;
    assert_eq!(log.len() as i64, base + total as i64 + 2, "stored: the joins and the messages: {log:?}");
    assert!(log[..base as usize].iter().all(|e| e.1 == "member"), "the joins first: {log:?}");
    assert_eq!(
        db_room_seqs(&db, room).await,
        (base + 1..=base + total as i64 + 2).collect::<Vec<_>>(),
        "stored messages"
    );
}

// --- 2. typing and receipts --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_receipts_cross_nodes() {
    let c = cluster(2, &redis_url()).await;
    let (n1, n2) = (&c[0], &c[1]);
    let (ann, ta) = n1.create_user("ann").await;
    let (bob, tb) = n1.create_user("bob").await;
    let (cat, tc) = n1.create_user("cat").await;
    let room = n1.create_room(&ta, "typing", &[bob, cat]).await;
    // The room's log so far (the members' joins, §10): m1 and m2 take the next two seqs.
    let base = n2.last_seq(&tb, room).await;
    // ann and cat on n1, bob on n2.
    let mut ann_ws = n1.ws_ready(&ta).await;
    let mut cat_ws = n1.ws_ready(&tc).await;
    let mut bob_ws = n2.ws_ready(&tb).await;

    // A message each way first: the room is live on both nodes.
    let m1 = ann_ws.send_and_echo(room, "m1").await;
    assert_eq!(bob_ws.recv_type("message").await["id"], m1["id"]);
    assert_eq!(cat_ws.recv_type("message").await["id"], m1["id"]);
    let m2 = bob_ws.send_and_echo(room, "m2").await;
    assert_eq!(ann_ws.recv_type("message").await["id"], m2["id"]);
    assert_eq!(cat_ws.recv_type("message").await["id"], m2["id"]);
    assert_eq!((m1["seq"].clone(), m2["seq"].clone()), (json!(base + 1), json!(base + 2)), "{m1} {m2}");

    // typing n1 -> n2 (and to the local member), once each, never back to the sender.
    ann_ws.send_json(json!({ "type": "typing", "room_id": room, "state": "start" })).await;
    let (_, t) = read_until(&mut bob_ws, "ann's typing on n2", |v| is_typing_of(v, ann)).await;
    assert_fields(&t, &json!({ "type": "typing", "room_id": room, "user_id": ann, "state": "start" }));
    let (s1, before) = send_collect(&mut ann_ws, room, "after ann's typing").await;
    assert!(!before.iter().any(|v| v["type"] == "typing"), "the sender must not get its own typing: {before:?}");
    let before = events_before_message(&mut bob_ws, &s1["id"]).await;
    assert!(!before.iter().any(|v| is_typing_of(v, ann)), "bob@n2 got ann's typing twice: {before:?}");
    let before = events_before_message(&mut cat_ws, &s1["id"]).await;
    let typing: Vec<&Value> = before.iter().filter(|v| is_typing_of(v, ann)).collect();
    assert_eq!(typing.len(), 1, "cat@n1 gets ann's typing exactly once: {before:?}");
    assert_fields(typing[0], &json!({ "room_id": room, "state": "start" }));

    // typing n2 -> n1.
    bob_ws.send_json(json!({ "type": "typing", "room_id": room, "state": "stop" })).await;
    let (s2, before) = send_collect(&mut bob_ws, room, "after bob's typing").await;
    assert!(!before.iter().any(|v| v["type"] == "typing"), "the sender must not get its own typing: {before:?}");
    for (who, ws) in [("ann@n1", &mut ann_ws), ("cat@n1", &mut cat_ws)] {
        let before = events_before_message(ws, &s2["id"]).await;
        let typing: Vec<&Value> = before.iter().filter(|v| is_typing_of(v, bob)).collect();
        assert_eq!(typing.len(), 1, "{who} gets bob's typing exactly once, before his next message: {before:?}");
        assert_fields(typing[0], &json!({ "type": "typing", "room_id": room, "user_id": bob, "state": "stop" }));
    }

    // status_update n2 -> n1: bob read ann's m1.
    let m1_id = m1["id"].as_i64().unwrap();
    bob_ws.send_json(json!({ "type": "status_update", "message_id": m1_id, "read": true })).await;
    let want = json!({ "type": "status_update", "message_id": m1_id, "room_id": room, "user_id": bob,
                       "delivered": true, "read": true });
    let bobs_receipt = |v: &Value| v["type"] == "status_update" && v["user_id"] == json!(bob);
    for (who, ws) in [("ann@n1", &mut ann_ws), ("cat@n1", &mut cat_ws)] {
        let (_, su) = read_until(ws, &format!("bob's receipt for {who}"), bobs_receipt).await;
        assert_fields(&su, &want);
    }
    // (A receipt is not ordered with later messages; a sentinel sent after it arrived is.)
    let (s3, _) = send_collect(&mut bob_ws, room, "after bob's receipt").await;
    for (who, ws) in [("ann@n1", &mut ann_ws), ("cat@n1", &mut cat_ws)] {
        let before = events_before_message(ws, &s3["id"]).await;
        assert!(!before.iter().any(bobs_receipt), "{who} got bob's receipt twice: {before:?}");
    }

    // status_update n1 -> n2: ann got bob's m2.
    let m2_id = m2["id"].as_i64().unwrap();
    ann_ws.send_json(json!({ "type": "status_update", "message_id": m2_id, "delivered": true })).await;
    let (_, su) =
        read_until(&mut bob_ws, "ann's receipt on n2", |v| v["type"] == "status_update" && v["user_id"] == json!(ann))
            .await;
    assert_fields(
        &su,
        &json!({ "type": "status_update", "message_id": m2_id, "room_id": room, "user_id": ann,
                 "delivered": true, "read": false }),
    );
    let (s4, _) = send_collect(&mut ann_ws, room, "after ann's receipt").await;
    let before = events_before_message(&mut bob_ws, &s4["id"]).await;
    let twice = before.iter().any(|v| v["type"] == "status_update" && v["user_id"] == json!(ann));
    assert!(!twice, "bob@n2 got ann's receipt twice: {before:?}");

    // The watermarks are the same seen from either node.
    let mut views = Vec::new();
    for node in [n1, n2] {
        let r = node.get_json(&format!("/v1/rooms/{room}/members"), &tc).await;
        assert_eq!(r.status, 200, "{r:?}");
        let mut marks: Vec<(i64, Value, Value)> = r
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["user_id"].as_i64().unwrap(), m["delivered_seq"].clone(), m["read_seq"].clone()))
            .collect();
        marks.sort_by_key(|m| m.0);
        let of = |u: i64| marks.iter().find(|m| m.0 == u).cloned().unwrap();
        assert_eq!(of(bob).2, json!(base + 1), "bob read m1: {marks:?}");
        assert_eq!(of(ann).1, json!(base + 2), "ann got m2: {marks:?}");
        views.push(marks);
    }
    assert_eq!(views[0], views[1], "n1 and n2 report the same watermarks");
}

// --- 3. presence -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_cluster_wide() {
    let c = cluster(2, &redis_url()).await;
    let (n1, n2) = (&c[0], &c[1]);
    // Fresh database: room 1 holds exactly these three users (well under max_room_members).
    let (ann, ta) = n1.create_user("ann").await;
    let (_, tb) = n1.create_user("bob").await;
    let (cat, tc) = n1.create_user("cat").await;
    // Watchers: bob on n2, then cat on n1. cat's online event is the first thing n1 ever
    // publishes (a node's first events must not be lost either): bob gets it on n2.
    let mut bob_ws = n2.ws_ready(&tb).await;
    let mut cat_ws = n1.ws_ready(&tc).await;
    let (_, p) = read_until(&mut bob_ws, "cat online (n1's first event) for bob@n2", |v| is_presence_of(v, cat)).await;
    assert_fields(&p, &json!({ "type": "presence", "room_id": 1, "user_id": cat, "online": true }));
    // A message each way: room 1 is live on both nodes.
    let m = cat_ws.send_and_echo(1, "link n1 -> n2").await;
    events_before_message(&mut bob_ws, &m["id"]).await;
    let m = bob_ws.send_and_echo(1, "link n2 -> n1").await;
    events_before_message(&mut cat_ws, &m["id"]).await;

    // ann's first connection anywhere (on n1): online, for the watchers on both nodes.
    let ann1 = n1.ws_ready(&ta).await;
    for (who, ws) in [("bob@n2", &mut bob_ws), ("cat@n1", &mut cat_ws)] {
        let (_, p) = read_until(ws, &format!("ann online for {who}"), |v| is_presence_of(v, ann)).await;
        assert_fields(&p, &json!({ "type": "presence", "room_id": 1, "user_id": ann, "online": true }));
    }

    // A second connection on the other node (n2) is not her first anywhere: no presence event.
    let mut ann2 = n2.ws_ready(&ta).await;
    let (s1, _) = send_collect(&mut ann2, 1, "sentinel 1").await;
    for (who, ws) in [("bob@n2", &mut bob_ws), ("cat@n1", &mut cat_ws)] {
        let before = events_before_message(ws, &s1["id"]).await;
        assert!(!before.iter().any(|v| is_presence_of(v, ann)), "{who}: presence for a second connection: {before:?}");
    }

    // Closing the n1 connection leaves the n2 one: still online, no presence event.
    ann1.close().await;
    eventually("n1 has closed ann's first connection", RECV_TIMEOUT, move || async move {
        scrape(n1, "livechat_ws_connections").await == Some(1.0)
    })
    .await;
    let (s2, _) = send_collect(&mut ann2, 1, "sentinel 2").await;
    for (who, ws) in [("bob@n2", &mut bob_ws), ("cat@n1", &mut cat_ws)] {
        let before = events_before_message(ws, &s2["id"]).await;
        assert!(
            !before.iter().any(|v| is_presence_of(v, ann)),
            "{who}: offline while a connection is open: {before:?}"
        );
    }

    // Closing the last one (on n2): offline, once, on both nodes.
    ann2.close().await;
    for (who, ws) in [("bob@n2", &mut bob_ws), ("cat@n1", &mut cat_ws)] {
        let (_, p) = read_until(ws, &format!("ann offline for {who}"), |v| is_presence_of(v, ann)).await;
        assert_fields(&p, &json!({ "type": "presence", "room_id": 1, "user_id": ann, "online": false }));
    }
    let (s3, before) = send_collect(&mut bob_ws, 1, "sentinel 3").await;
    assert!(!before.iter().any(|v| is_presence_of(v, ann)), "bob@n2: a second presence event: {before:?}");
    let before = events_before_message(&mut cat_ws, &s3["id"]).await;
    assert!(!before.iter().any(|v| is_presence_of(v, ann)), "cat@n1: a second presence event: {before:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_online_is_cluster_wide() {
    let c = cluster(2, &redis_url()).await;
    let (n1, n2) = (&c[0], &c[1]);
    let (ann, ta) = n1.create_user("ann").await;
    let (bob, tb) = n1.create_user("bob").await;
    let (cat, _) = n1.create_user("cat").await;
    let room = n1.create_room(&tb, "members", &[ann, cat]).await;
    let tb = tb.as_str();

    // ann is connected to n1 only: n2 shows her online; nobody else is.
    let ann1 = n1.ws_ready(&ta).await;
    assert!(online_on(n1, tb, room, ann).await, "n1 shows its own connection's user online");
    eventually("n2 shows ann (connected to n1 only) online", RECV_TIMEOUT, move || async move {
        online_on(n2, tb, room, ann).await
    })
    .await;
    for node in [n1, n2] {
        assert!(!online_on(node, tb, room, bob).await, "bob has no connection anywhere");
        assert!(!online_on(node, tb, room, cat).await, "cat has no connection anywhere");
    }

    // A second connection on n2, then the n1 one closes: online on both nodes throughout.
    let ann2 = n2.ws_ready(&ta).await;
    ann1.close().await;
    eventually("n1 has closed ann's connection", RECV_TIMEOUT, move || async move {
        scrape(n1, "livechat_ws_connections").await == Some(0.0)
    })
    .await;
    stays("ann stays online while her n2 connection is open", Duration::from_millis(1000), move || async move {
        online_on(n1, tb, room, ann).await && online_on(n2, tb, room, ann).await
    })
    .await;

    // Her last connection anywhere closes: offline on both nodes.
    ann2.close().await;
    for (name, node) in [("n2", n2), ("n1", n1)] {
        eventually(
            &format!("{name} shows ann offline after her last connection closed"),
            RECV_TIMEOUT,
            move || async move { !online_on(node, tb, room, ann).await },
        )
        .await;
    }
}

/// A node killed with SIGKILL never says goodbye: its entry in the cluster's node list expires
/// after `cluster.node_ttl_ms`, and a live node announces its users offline (those connected
/// nowhere else) and stops counting them online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_users_go_offline_cluster_wide() {
    let fast = [("LIVECHAT_CLUSTER__HEARTBEAT_MS", "200"), ("LIVECHAT_CLUSTER__NODE_TTL_MS", "1000")];
    let mut c = cluster_with(2, &redis_url(), &fast).await;
    let (ann, ta) = c[0].create_user("ann").await;
    let (bob, tb) = c[0].create_user("bob").await;
    let (cat, tc) = c[0].create_user("cat").await;
    let mut bob_ws = c[0].ws_ready(&tb).await;
    // ann only on n2; cat on both nodes.
    let _ann_ws = c[1].ws_ready(&ta).await;
    let (_, p) = read_until(&mut bob_ws, "ann online", |v| is_presence_of(v, ann)).await;
    assert_eq!(p["online"], json!(true));
    let _cat_n1 = c[0].ws_ready(&tc).await;
    let _cat_n2 = c[1].ws_ready(&tc).await;
    assert!(online_on(&c[0], &tb, 1, ann).await, "ann@n2 is online as seen from n1");

    c[1].sigkill();
    c[1].wait_exit(Duration::from_secs(10)).await;

    // Within the TTL plus a heartbeat: offline for ann, nothing for cat (still on n1).
    let (before, p) = read_until(&mut bob_ws, "ann offline after n2 was killed", |v| is_presence_of(v, ann)).await;
    assert_eq!(p["online"], json!(false), "{p}");
    let cat_offline = |v: &Value| is_presence_of(v, cat) && v["online"] == json!(false);
    assert!(!before.iter().any(cat_offline), "cat is still connected to n1: {before:?}");
    assert!(!online_on(&c[0], &tb, 1, ann).await, "ann is connected nowhere");
    assert!(online_on(&c[0], &tb, 1, cat).await, "cat is still connected to n1");
    assert!(online_on(&c[0], &tb, 1, bob).await);
    let (_, before) = send_collect(&mut bob_ws, 1, "sentinel").await;
    assert!(!before.iter().any(|v| is_presence_of(v, ann) || cat_offline(v)), "{before:?}");
}

// --- 4. notifications --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_skip_users_online_on_another_node() {
    let mut hook = WebhookReceiver::start().await;
    let (url, prefix) = (hook.url(), notify_key_prefix());
    let c = cluster_with(2, &redis_url(), &webhook_env(&url, &prefix)).await;
    let (n1, n2) = (&c[0], &c[1]);
    let (ann, ta) = n1.create_user("ann").await;
    let (bob, tb) = n1.create_user("bob").await;
    let (carol, _) = n1.create_user("carol").await;
    let room = n1.create_room(&ta, "notify", &[bob, carol]).await;
    let ta_ref = ta.as_str();

    // ann sends on n1; bob's only connection is on n2; carol is offline everywhere.
    let mut ann_ws = n1.ws_ready(&ta).await;
    let bob_ws = n2.ws_ready(&tb).await;
    eventually("n1 sees bob (connected to n2) online", RECV_TIMEOUT, move || async move {
        online_on(n1, ta_ref, room, bob).await
    })
    .await;
    let m = ann_ws.send_and_echo(room, "hello carol").await;
    let call = hook.next().await.json;
    assert_fields(
        &call,
        &json!({ "user_id": carol, "room_id": room, "message_id": m["id"], "sender_id": ann,
                 "preview": "hello carol", "job_id": format!("{}-{carol}-webhook", m["id"]) }),
    );
    // No job for bob (online on n2), none for ann (the sender), no second copy of carol's from
    // the other node's workers.
    if let Some(extra) = hook.next_within(Duration::from_millis(1000)).await {
        panic!("unexpected webhook (bob={bob} is online on n2, ann={ann} sent it): {}", extra.json);
    }

    // Once bob's last connection is gone, he is offline everywhere: the next message is for him too.
    bob_ws.close().await;
    eventually("n1 sees bob offline", RECV_TIMEOUT, move || async move { !online_on(n1, ta_ref, room, bob).await })
        .await;
    let m2 = ann_ws.send_and_echo(room, "now for both").await;
    let calls = [hook.next().await.json, hook.next().await.json];
    let mut users: Vec<i64> = calls.iter().map(|v| v["user_id"].as_i64().unwrap()).collect();
    users.sort_unstable();
    let mut want = vec![bob, carol];
    want.sort_unstable();
    assert_eq!(users, want, "one job per member offline everywhere: {calls:?}");
    for v in &calls {
        assert_eq!(v["message_id"], m2["id"], "{v}");
        assert_eq!(v["job_id"], json!(format!("{}-{}-webhook", m2["id"], v["user_id"])), "{v}");
    }
    if let Some(extra) = hook.next_within(Duration::from_millis(800)).await {
        panic!("unexpected extra webhook: {}", extra.json);
    }
    redis_cleanup(&prefix).await;
}

// --- 5. losing Redis ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_degrades_and_heals() {
    let mut redis = PrivateRedis::start().await;
    let c = cluster(2, &redis.url()).await;
    let (n1, n2) = (&c[0], &c[1]);
    let (_, ta) = n1.create_user("ann").await;
    let (bob, tb) = n1.create_user("bob").await;
    let (cat, tc) = n1.create_user("cat").await;
    let room = n1.create_room(&ta, "outage", &[bob, cat]).await;
    // ann and cat on n1, bob on n2.
    let mut ann_ws = n1.ws_ready(&ta).await;
    let mut cat_ws = n1.ws_ready(&tc).await;
    let mut bob_ws = n2.ws_ready(&tb).await;

    let m0 = ann_ws.send_and_echo(room, "before the outage").await;
    assert_eq!(bob_ws.recv_type("message").await["id"], m0["id"], "crosses while Redis is up");
    assert_eq!(cat_ws.recv_type("message").await["id"], m0["id"]);
    assert_eq!(n1.get_anon("/readyz").await.status, 200);
    for node in [n1, n2] {
        eventually("livechat_bus_bridge_connected is 1 while Redis is up", RECV_TIMEOUT, move || async move {
            scrape(node, "livechat_bus_bridge_connected").await == Some(1.0)
        })
        .await;
    }

    redis.kill().await;

    eventually("/readyz on n1 turns 503 once Redis is gone", HEAL_TIMEOUT, move || async move {
        n1.get_anon("/readyz").await.status == 503
    })
    .await;
    let r = n1.get_anon("/readyz").await;
    assert!(r.status == 503 && r.text.to_lowercase().contains("redis"), "/readyz must name redis: {r:?}");
    eventually("livechat_bus_bridge_connected on n1 drops to 0", HEAL_TIMEOUT, move || async move {
        scrape(n1, "livechat_bus_bridge_connected").await == Some(0.0)
    })
    .await;

    // Node-local delivery and PostgreSQL writes keep working.
    let mut missed = Vec::new();
    for i in 0..5 {
        let e = ann_ws.send_and_echo(room, &format!("during the outage {i}")).await;
        missed.push(e);
    }
    let seqs: Vec<i64> = missed.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    let s0 = m0["seq"].as_i64().unwrap();
    assert_eq!(seqs, ((s0 + 1)..=(s0 + 5)).collect::<Vec<_>>(), "committed with gapless seqs");
    for m in &missed {
        assert_eq!(cat_ws.recv_type("message").await["id"], m["id"], "cat@n1 gets the node-local messages live");
    }

    redis.spawn().await;

    // bob@n2 gets exactly the missed messages, in order, once n2's Redis link heals.
    let deadline = Instant::now() + HEAL_TIMEOUT;
    let mut got = Vec::new();
    while got.len() < missed.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = bob_ws.recv_json_within(left).await.unwrap_or_else(|| {
            panic!("bob@n2 got {} of the {} missed messages within {HEAL_TIMEOUT:?}: {got:?}", got.len(), missed.len())
        });
        assert_ne!(v["type"], "error", "{v}");
        if v["type"] == "message" {
            got.push(v);
        }
    }
    let ids = |v: &[Value]| v.iter().map(|m| (m["seq"].clone(), m["id"].clone())).collect::<Vec<_>>();
    assert_eq!(ids(&got), ids(&missed), "bob@n2: the missed messages, in seq order, once each");

    // Healed: both nodes report it, and delivery across nodes is live again.
    for (name, node) in [("n1", n1), ("n2", n2)] {
        eventually(&format!("{name}: livechat_bus_bridge_connected back to 1"), HEAL_TIMEOUT, move || async move {
            scrape(node, "livechat_bus_bridge_connected").await == Some(1.0)
        })
        .await;
        eventually(&format!("{name}: /readyz 200 again"), HEAL_TIMEOUT, move || async move {
            node.get_anon("/readyz").await.status == 200
        })
        .await;
    }
    let live = ann_ws.send_and_echo(room, "after the outage").await;
    let next = bob_ws.recv_type("message").await;
    assert_eq!((&next["seq"], &next["id"]), (&live["seq"], &live["id"]), "live again, no duplicate before it");
    assert_eq!(live["seq"], json!(s0 + 6));
    let extra = bob_ws.sync_barrier().await;
    assert!(extra.iter().all(|v| v["type"] != "message"), "bob@n2: duplicates: {extra:?}");
}

/// The subscriber connection is pinged every 5 s (a half-open socket never ends its stream):
/// the answer must keep it up, not tear it down and reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_stays_connected_across_pings() {
    let c = cluster(2, &redis_url()).await;
    let n1 = &c[0];
    eventually("the bridge connects", HEAL_TIMEOUT, move || async move {
        scrape(n1, "livechat_bus_bridge_connected").await == Some(1.0)
    })
    .await;
    // Past the first two pings.
    stays("the bridge stays connected, without reconnecting", Duration::from_secs(11), move || async move {
        scrape(n1, "livechat_bus_bridge_connects_total").await == Some(1.0)
    })
    .await;
    let (_, ta) = n1.create_user("ann").await;
    let (_, tb) = n1.create_user("bob").await;
    let mut ann_ws = n1.ws_ready(&ta).await;
    let mut bob_ws = c[1].ws_ready(&tb).await;
    let m = ann_ws.send_and_echo(1, "still bridged").await;
    assert_eq!(bob_ws.recv_type("message").await["id"], m["id"]);
}

// --- 6. server.reuse_port ----------------------------------------------------------------------

async fn healthz_on(addr: SocketAddr) -> u16 {
    // A fresh TCP connection each time, so the kernel picks a listener anew.
    raw_http(addr, &format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_port_shares_the_listener() {
    let listen = format!("127.0.0.1:{}", free_port());
    let addr: SocketAddr = listen.parse().unwrap();
    let mut c =
        cluster_with(2, &redis_url(), &[("LIVECHAT_SERVER__REUSE_PORT", "true"), ("LIVECHAT_LISTEN", &listen)]).await;
    assert_eq!((c[0].addr, c[1].addr), (addr, addr), "both nodes listen on the same address");
    assert_eq!(healthz_on(addr).await, 200);

    // Each node serves the shared port on its own: n1 gone, n2 answers...
    c[0].sigkill();
    c[0].wait_exit(RECV_TIMEOUT).await;
    for _ in 0..5 {
        assert_eq!(healthz_on(addr).await, 200, "n2 serves /healthz on the shared port");
    }
    // ...n1 binds the port again next to the running n2, then n2 gone, n1 answers.
    c[0].restart().await;
    assert_eq!(c[0].addr, addr);
    c[1].sigkill();
    c[1].wait_exit(RECV_TIMEOUT).await;
    for _ in 0..5 {
        assert_eq!(healthz_on(addr).await, 200, "n1 serves /healthz on the shared port");
    }

    // Without reuse_port, a second server on the taken port fails with one clear line.
    let (db_url, secret, admin) = (c[0].db_url.clone(), c[0].jwt_secret.clone(), c[0].admin_token.clone());
    let out = run_cli(
        &["serve"],
        &[
            ("DATABASE_URL", &db_url),
            ("LIVECHAT_LISTEN", &listen),
            ("LIVECHAT_JWT_SECRET", &secret),
            ("LIVECHAT_ADMIN_TOKEN", &admin),
            ("LIVECHAT_LOG", "warn"),
        ],
    )
    .await;
    assert!(!out.status.success(), "serve on a taken port without reuse_port must fail: {out:?}");
    assert!(!out.stdout.contains("listening on"), "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{out:?}");
    assert!(out.stderr.to_lowercase().contains("cannot listen"), "a `cannot listen` line: {out:?}");
    assert_eq!(healthz_on(addr).await, 200, "the running node is unaffected");
}

// --- 7. isolation ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_on_different_databases_are_isolated() {
    // Two clusters on one Redis with the same node ids, no key prefixes of their own, and the
    // same room and user ids: only the automatic per-database namespace keeps them apart.
    let r = redis_url();
    let a = cluster(2, &r).await;
    let b = cluster(2, &r).await;
    let mut ids = Vec::new();
    let mut tokens = Vec::new();
    for cl in [&a, &b] {
        let mut these = Vec::new();
        let mut toks = Vec::new();
        for name in ["ann", "bob", "cat"] {
            let (id, t) = cl[0].create_user(name).await;
            these.push(id);
            toks.push(t);
        }
        ids.push(these);
        tokens.push(toks);
    }
    assert_eq!(ids[0], ids[1], "precondition: the same user ids in both databases");
    let (ann, cat) = (ids[0][0], ids[0][2]);
    let (ta, tb) = (&tokens[0], &tokens[1]);
    // Room 1's log in each database so far (the users' joins, §10), before either cluster talks.
    let base_a = a[0].last_seq(&ta[0], 1).await;
    let base_b = b[0].last_seq(&tb[0], 1).await;

    // A: ann on n1, bob on n2. B: ann on n1, bob and cat on n2.
    let mut a_ann = a[0].ws_ready(&ta[0]).await;
    let mut a_bob = a[1].ws_ready(&ta[1]).await;
    let mut b_ann = b[0].ws_ready(&tb[0]).await;
    let mut b_bob = b[1].ws_ready(&tb[1]).await;
    let _b_cat = b[1].ws_ready(&tb[2]).await;

    // B talks first: room 1 seqs base_b+1..=base_b+3 and a typing event, across B's nodes.
    let mut b_sent = Vec::new();
    for i in 0..3 {
        b_sent.push(b_ann.send_and_echo(1, &format!("B-{i}")).await);
    }
    for m in &b_sent {
        assert_eq!(b_bob.recv_type("message").await["id"], m["id"], "B's bridge works");
    }
    b_ann.send_json(json!({ "type": "typing", "room_id": 1 })).await;
    read_until(&mut b_bob, "B's typing within B", |v| is_typing_of(v, ann)).await;

    // A's room 1 is untouched: bob@A.n2 sees A's first message at the seq after A's own log
    // (B's three messages took none of A's), and nothing of B's.
    let (a1, _) = send_collect(&mut a_ann, 1, "A-0").await;
    assert_eq!(a1["seq"], json!(base_a + 1), "A's first message follows A's own log only: {a1}");
    let (before, got) = read_until(&mut a_bob, "A's first message", |v| v["type"] == "message").await;
    assert_eq!((&got["id"], &got["content"]), (&a1["id"], &json!("A-0")), "bob@A.n2 got B's message: {got}");
    assert!(!before.iter().any(|v| v["type"] == "typing"), "bob@A.n2 got B's typing: {before:?}");

    // And the other way: A's typing and message stay in A.
    a_ann.send_json(json!({ "type": "typing", "room_id": 1 })).await;
    read_until(&mut a_bob, "A's typing within A", |v| is_typing_of(v, ann)).await;
    a_ann.send_and_echo(1, "A-1").await;
    let (b3, _) = send_collect(&mut b_ann, 1, "B-3").await;
    assert_eq!(b3["seq"], json!(base_b + 4), "{b3}");
    let (before, got) = read_until(&mut b_bob, "B's next message", |v| v["type"] == "message").await;
    assert_eq!((&got["id"], &got["content"]), (&b3["id"], &json!("B-3")), "bob@B.n2 got A's message: {got}");
    assert!(!before.iter().any(|v| v["type"] == "typing"), "bob@B.n2 got A's typing: {before:?}");

    // Online state is per cluster too: cat (same id in both) is connected in B only.
    let b_n1 = &b[0];
    let b_tok = tb[0].as_str();
    eventually("B's n1 shows cat (connected to B's n2) online", RECV_TIMEOUT, move || async move {
        online_on(b_n1, b_tok, 1, cat).await
    })
    .await;
    for node in [&a[0], &a[1]] {
        assert!(!online_on(node, &ta[0], 1, cat).await, "A shows cat online: she is connected to B only");
    }
}

/// A dead node whose user set cannot be read (here: the key holds the wrong type, so SMEMBERS
/// fails) is never read as "no users": it is put back as expired and reaped again once its
/// set can be read — never deleted with its users counted online for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_dead_node_is_reaped_again_not_forgotten() {
    let prefix = format!("lc-test-reap-{}", random_hex(6));
    let env = [
        ("REDIS_URL", redis_url()),
        ("LIVECHAT_CLUSTER__KEY_PREFIX", prefix.clone()),
        ("LIVECHAT_CLUSTER__HEARTBEAT_MS", "200".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = TestServer::start(&env).await;
    let mut rc = redis_conn().await;
    let nodes = format!("{prefix}:presence:nodes");
    let dead_key = format!("{prefix}:presence:node:ghost");
    let _: () = redis::cmd("SET").arg(&dead_key).arg("not a set").query_async(&mut rc).await.unwrap();
    let _: () = redis::cmd("ZADD").arg(&nodes).arg(0).arg("ghost").query_async(&mut rc).await.unwrap();
    // Several heartbeats: each reaps, fails to read the users, and puts the node back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let score: Option<f64> = redis::cmd("ZSCORE").arg(&nodes).arg("ghost").query_async(&mut rc).await.unwrap();
    assert!(score.is_some(), "the unreadable dead node must stay listed for another reap");
    let exists: i64 = redis::cmd("EXISTS").arg(&dead_key).query_async(&mut rc).await.unwrap();
    assert_eq!(exists, 1, "its user set must not be deleted unread");
    // Readable again: the next heartbeat reaps it for good.
    let _: () = redis::cmd("DEL").arg(&dead_key).query_async(&mut rc).await.unwrap();
    let _: () = redis::cmd("SADD").arg(&dead_key).arg(424242).query_async(&mut rc).await.unwrap();
    let rc2 = rc.clone();
    eventually("the dead node is reaped", Duration::from_secs(10), move || {
        let (mut c, nodes) = (rc2.clone(), nodes.clone());
        async move {
            redis::cmd("ZSCORE")
                .arg(&nodes)
                .arg("ghost")
                .query_async::<Option<f64>>(&mut c)
                .await
                .ok()
                .flatten()
                .is_none()
        }
    })
    .await;
    let _: () = redis::cmd("DEL").arg(&dead_key).query_async(&mut rc).await.unwrap();
    drop(s);
}
