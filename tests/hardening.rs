//! Hardening: a listen-only client is never held, `resume=1` gives replay-then-live order, a
//! client that stops reading is cut off by the write deadline, an expiring token closes the
//! connection under steady traffic, `sync` cannot be used to amplify work, and a PostgreSQL
//! that vanishes without a trace (SIGSTOP: packets unanswered, no RST) turns writes into
//! `unavailable` and heals by itself with nothing lost or stored twice.
//!
//! Real parts only: the `livechat` binary, PostgreSQL, real WebSocket clients.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A hold long enough that any event seen within [`RECV_TIMEOUT`] was not held.
const LONG_HOLD: (&str, &str) = ("LIVECHAT_SYNC__INITIAL_HOLD_MS", "60000");

// --- listen-only clients and resume=1 --------------------------------------------------------

#[tokio::test]
async fn a_listen_only_client_gets_events_without_any_hold() {
    let s = TestServer::start(&[LONG_HOLD]).await;
    let (_, listener_token) = s.create_user("listener").await;
    let (_, sender_token) = s.create_user("sender").await;
    let mut listener = s.ws(&listener_token).await;
    let mut sender = s.ws_ready(&sender_token).await;
    // The listener's registration is only known from outside once it sees something: the
    // sender's presence-free room 1 message is the first event it can get.
    let echo = sender.send_and_echo(1, "hello listener").await;
    let got = listener.recv_type("message").await;
    assert_eq!(got["id"], echo["id"], "delivered long before the 60 s hold would have ended");
    listener.close().await;
}

#[tokio::test]
async fn a_resume_client_gets_the_replay_before_newer_live_events() {
    let s = TestServer::start(&[LONG_HOLD]).await;
    let (_, reader_token) = s.create_user("reader").await;
    let (_, writer_token) = s.create_user("writer").await;
    let mut writer = s.ws_ready(&writer_token).await;
    let first = writer.send_and_echo(1, "before the reconnect").await;
    let seen = first["seq"].as_i64().expect("seq") - 1;

    let mut reader = WsClient::connect(&format!("{}&resume=1", s.ws_url(&reader_token))).await.expect("connect");
    // Committed after the upgrade, before the sync: held until the replay is out.
    let live = writer.send_and_echo(1, "live while reconnecting").await;
    assert!(reader.recv_json_within(Duration::from_millis(500)).await.is_none(), "held until the sync");
    reader.send_json(json!({"type": "sync", "rooms": {"1": seen}})).await;
    let a = reader.recv_type("message").await;
    let b = reader.recv_types(&["message", "synced"]).await;
    let c = reader.recv_types(&["message", "synced"]).await;
    let order: Vec<&Value> = [&a, &b, &c].into_iter().filter(|v| v["type"] == "message").collect();
    let ids: Vec<&Value> = order.iter().map(|v| &v["id"]).collect();
    assert_eq!(ids, vec![&first["id"], &live["id"]], "replay first, then the held live event, each once");
    let synced = if b["type"] == "synced" { &b } else { &c };
    assert_eq!(synced["rooms"]["1"], live["seq"], "synced names what was sent, the live event included");
    reader.close().await;
}

// --- a client that stops reading -------------------------------------------------------------

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_by_the_write_deadline() {
    let s = TestServer::start(&[
        ("LIVECHAT_LIMITS__WRITE_TIMEOUT_SECS", "2"),
        // Large enough that the slow-consumer bound never closes it: only the deadline can.
        ("LIVECHAT_LIMITS__OUTBOUND_QUEUE_FRAMES", "1000000"),
        ("LIVECHAT_LIMITS__MESSAGES_PER_SEC", "100000"),
        ("LIVECHAT_LIMITS__MESSAGES_BURST", "100000"),
    ])
    .await;
    let (stuck_id, stuck_token) = s.create_user("stuck").await;
    let (_, flood_token) = s.create_user("flood").await;
    let _stuck = RawWs::connect_opts(s.addr, &stuck_token, Some(4096)).await;
    let mut flood = s.ws_ready(&flood_token).await;
    let online = |body: &Value| {
        body.as_array().is_some_and(|m| m.iter().any(|x| x["user_id"] == stuck_id && x["online"] == true))
    };
    assert!(online(&s.get_json("/v1/rooms/1/members", &flood_token).await.body), "registered");

    // ~8 MB to the client that never reads: far more than the socket buffers hold.
    let content = "w".repeat(4000);
    // Small windows: the flooder reads its own echoes promptly and stays healthy.
    for round in 0..500 {
        for k in 0..4 {
            flood.send_msg(1, &content, Some(&format!("w{round}-{k}"))).await;
        }
        for _ in 0..4 {
            flood.recv_type("message").await;
        }
    }
    // The stalled socket write gives up after 2 s: connection dropped, registration freed
    // (the user is offline for presence and notifications), although the client never closed.
    eventually("the stalled connection is dropped", Duration::from_secs(30), || async {
        !online(&s.get_json("/v1/rooms/1/members", &flood_token).await.body)
    })
    .await;
    flood.send_and_echo(1, "still serving").await;
}

// --- token expiry under traffic --------------------------------------------------------------

#[tokio::test]
async fn an_expired_token_closes_the_connection_under_steady_traffic() {
    let s = TestServer::start(&[
        ("LIVECHAT_LIMITS__PING_SECS", "1"),
        ("LIVECHAT_LIMITS__MESSAGES_PER_SEC", "1000"),
        ("LIVECHAT_LIMITS__MESSAGES_BURST", "1000"),
    ])
    .await;
    let (id, _) = s.create_user("expiring").await;
    let (_, busy_token) = s.create_user("busy").await;
    let mut expiring = s.ws_ready(&s.mint_token(id, 2)).await;
    let mut busy = s.ws_ready(&busy_token).await;
    // Traffic the whole time, so the expiring connection's writer is never idle.
    let traffic = tokio::spawn(async move {
        for i in 0..200 {
            busy.send_msg(1, &format!("tick {i}"), None).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let (events, code) = expiring.events_until_close().await;
    traffic.abort();
    assert_eq!(code, Some(1008), "closed for the expired token");
    let last_error = events.iter().rev().find(|v| v["type"] == "error").expect("an error before the close");
    assert_eq!(last_error["code"], "unauthorized");
    assert!(events.iter().any(|v| v["type"] == "message"), "it did receive traffic before");
}

// --- sync amplification ----------------------------------------------------------------------

#[tokio::test]
async fn sync_room_keys_must_be_canonical_and_bounded() {
    let s = TestServer::start(&[("LIVECHAT_SYNC__MAX_ROOMS", "3")]).await;
    let (_, token) = s.create_user("syncer").await;
    let mut c = s.ws_ready(&token).await;
    for rooms in
        [json!({"01": 0}), json!({"+1": 0}), json!({" 1": 0}), json!({"1": -1}), json!({"1": 9007199254740993i64})]
    {
        c.send_json(json!({"type": "sync", "rooms": rooms})).await;
        assert_ws_error(&c.recv_type("error").await, "bad_request");
    }
    c.send_json(json!({"type": "sync", "rooms": {"1": 0, "2": 0, "3": 0, "4": 0}})).await;
    assert_ws_error(&c.recv_type("error").await, "bad_request");
    c.send_json(json!({"type": "sync", "rooms": {"1": 9007199254740992i64}})).await;
    let synced = c.recv_type("synced").await;
    assert_eq!(synced["rooms"]["1"], 9007199254740992i64, "2^53 is allowed");
}

#[tokio::test]
async fn a_sync_costs_one_rate_limit_token_per_room() {
    // The event bucket is ten times the message one: 10/s, burst 20.
    let s = TestServer::start(&[("LIVECHAT_LIMITS__MESSAGES_PER_SEC", "1"), ("LIVECHAT_LIMITS__MESSAGES_BURST", "2")])
        .await;
    let (_, token) = s.create_user("greedy").await;
    let mut c = s.ws(&token).await;
    let rooms: serde_json::Map<String, Value> = (1..=18).map(|r| (r.to_string(), json!(0))).collect();
    c.send_json(json!({"type": "sync", "rooms": rooms})).await;
    // Rooms 2..=18 are not the user's (each answered `forbidden`): they cost tokens all the same.
    c.recv_until("synced", |v| v["type"] == "synced").await;
    c.send_json(json!({"type": "sync", "rooms": {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0}})).await;
    let err = c.recv_type("error").await;
    assert_ws_error(&err, "rate_limited");
    assert!(err["retry_after_ms"].as_u64().unwrap_or(0) > 0);
}

// --- PostgreSQL vanishes without a trace -----------------------------------------------------

/// Sends to room 1 with `client_msg_id` until the echo comes back (`unavailable` meanwhile, as
/// a client would retry while storage recovers), for at most ~30 s.
async fn send_until_echo(c: &mut WsClient, content: &str, client_msg_id: &str) -> Value {
    for _ in 0..60 {
        c.send_msg(1, content, Some(client_msg_id)).await;
        let v = c.recv_types(&["message", "error"]).await;
        if v["type"] == "message" {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("no echo for {client_msg_id}: writes never succeeded again");
}

#[tokio::test]
async fn a_silently_stopped_postgres_means_unavailable_then_heals_with_nothing_lost() {
    let pg = PrivatePg::start_new().await;
    let mut s = TestServer::start_with_url(
        &pg.admin_url(),
        &[("LIVECHAT_STORAGE__WRITE_TIMEOUT_MS", "2000"), ("LIVECHAT_DATABASE__CONNECT_TIMEOUT_MS", "1000")],
    )
    .await;
    let (_, token) = s.create_user("steady").await;
    let (_, listener_token) = s.create_user("listener").await;
    let mut c = s.ws_ready(&token).await;
    let mut listener = s.ws_ready(&listener_token).await;
    let before = c.send_and_echo(1, "before").await;
    listener.recv_type("message").await;

    let frozen = pg.freeze();
    c.send_msg(1, "while frozen", Some("frozen-1")).await;
    let err = c.recv_type("error").await;
    assert_ws_error(&err, "unavailable");
    assert_eq!(err["ref"], "frozen-1");
    let ready = s.get_anon("/readyz").await;
    assert_eq!(ready.status, 503, "readiness reports the database down: {}", ready.text);
    drop(frozen);

    // Retries with the same client_msg_id until the echo: stored once, whatever happened to the
    // first attempt.
    let echo = send_until_echo(&mut c, "while frozen", "frozen-1").await;
    // The other member gets it exactly once, whether the first attempt committed after all (the
    // room is caught up from PostgreSQL) or the retry stored it.
    let got = listener.recv_type("message").await;
    assert_eq!(got["id"], echo["id"]);
    assert!(listener.recv_json_within(Duration::from_millis(500)).await.is_none_or(|v| v["type"] != "message"));
    let db = s.db_client().await;
    let n: i64 = db
        .query_one("SELECT count(*) FROM messages WHERE client_msg_id = 'frozen-1'", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 1, "stored exactly once");
    // Room 1's log (the users' joins, §10, and the messages) is gapless and ends with the echo;
    // its messages are exactly the two acknowledged ones.
    let log = assert_db_room_log_gapless(&db, 1).await;
    assert_eq!(log.last().map(|e| e.0), echo["seq"].as_i64(), "the echo is the latest event: {log:?}");
    assert_eq!(db_room_seqs(&db, 1).await, [&before, &echo].map(|m| m["seq"].as_i64().expect("seq")), "{log:?}");
    assert!(log.iter().all(|e| e.1 == "message" || e.1 == "member"), "only joins besides the messages: {log:?}");
    eventually("/readyz is 200 again", Duration::from_secs(30), || async { s.get_anon("/readyz").await.status == 200 })
        .await;
    s.sigterm();
    s.wait_exit(Duration::from_secs(20)).await;
}

// --- a replay that fails --------------------------------------------------------------------

#[tokio::test]
async fn a_failed_replay_answers_unavailable_and_live_delivery_goes_on() {
    let mut pg = PrivatePg::start_new().await;
    let s = TestServer::start_with_url(&pg.admin_url(), &[("LIVECHAT_DATABASE__CONNECT_TIMEOUT_MS", "1000")]).await;
    let (_, ta) = s.create_user("watcher").await;
    let (_, tb) = s.create_user("talker").await;
    let mut a = s.ws_ready(&ta).await;
    let mut b = s.ws_ready(&tb).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(b.send_and_echo(1, &format!("m{i}")).await["seq"].as_i64().expect("seq"));
        a.recv_type("message").await;
    }
    // The watcher reconnects having seen only the first message; then the history cannot be
    // read, so its replay of the other two fails.
    a.close().await;
    let mut a = s.ws_ready(&ta).await;
    pg.stop().await;
    a.send_json(json!({"type": "sync", "rooms": {"1": sent[0]}})).await;
    let err = a.recv_type("error").await;
    assert_ws_error(&err, "unavailable");
    pg.start().await;
    // Live delivery of the room goes on (from the seq after the third message): the failed
    // replay did not move the connection's position to "has seen up to the first message",
    // which would drop every later live event.
    let echo = send_until_echo(&mut b, "after the outage", "after-1").await;
    let got = a.recv_type("message").await;
    assert_eq!((got["id"].clone(), got["seq"].clone()), (echo["id"].clone(), json!(sent[2] + 1)));
}

// --- replays cannot be used to amplify memory -----------------------------------------------

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_client_that_keeps_syncing_and_never_reads_cannot_grow_server_memory() {
    let s = TestServer::start(&[
        ("LIVECHAT_LIMITS__MESSAGES_PER_SEC", "100000"),
        ("LIVECHAT_LIMITS__MESSAGES_BURST", "100000"),
        // Long enough that the deadline does not end the connection during the test.
        ("LIVECHAT_LIMITS__WRITE_TIMEOUT_SECS", "120"),
    ])
    .await;
    let (_, t_seed) = s.create_user("seeder").await;
    let (_, t_greedy) = s.create_user("greedy").await;
    let mut seed = s.ws_ready(&t_seed).await;
    let content = "r".repeat(4000);
    for round in 0..125 {
        for k in 0..8 {
            seed.send_msg(1, &content, Some(&format!("r{round}-{k}"))).await;
        }
        for _ in 0..8 {
            seed.recv_type("message").await;
        }
    }
    let before = rss_kib(s.pid());
    // 100 syncs of 1,000 replayed 4 KB messages (~400 MB of frames if they were all buffered),
    // and never a read: once the socket is full, each replay chunk may only be queued when the
    // connection's queue has room.
    let mut greedy = RawWs::connect_opts(s.addr, &t_greedy, Some(4096)).await;
    for _ in 0..100 {
        greedy.send_text(r#"{"type":"sync","rooms":{"1":0}}"#).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let grown = rss_kib(s.pid()).saturating_sub(before);
    assert!(grown < 50 * 1024, "server memory grew by {grown} KiB for a client that never reads");
    seed.send_and_echo(1, "still serving").await;
}
