//! Faults: PostgreSQL outage and recovery, SIGKILL in the middle of a burst, graceful SIGTERM.
//! Through each, an acknowledged (echoed) message is stored exactly once, a room's seqs stay
//! gapless, and the server recovers by itself.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::time::Instant;

const FAST: (&str, &str) = ("LIVECHAT_LIMITS__MESSAGES_PER_SEC", "100000");
const FAST_BURST: (&str, &str) = ("LIVECHAT_LIMITS__MESSAGES_BURST", "100000");

/// One acknowledged (echoed) message.
#[derive(Debug, Clone)]
struct Ack {
    id: i64,
    room_id: i64,
    seq: i64,
    cid: String,
}

fn ack_of(v: &Value) -> Ack {
    Ack {
        id: v["id"].as_i64().expect("id"),
        room_id: v["room_id"].as_i64().expect("room_id"),
        seq: v["seq"].as_i64().expect("seq"),
        cid: v["client_msg_id"].as_str().expect("client_msg_id").to_string(),
    }
}

/// All stored rows: client_msg_id → (id, room_id, seq).
async fn stored(client: &tokio_postgres::Client) -> HashMap<String, (i64, i64, i64)> {
    let rows = bounded(
        "select messages",
        client.query(
            "SELECT id::bigint, room_id::bigint, seq::bigint, client_msg_id::text FROM messages \
             WHERE client_msg_id IS NOT NULL",
            &[],
        ),
    )
    .await
    .expect("select messages");
    rows.iter().map(|r| (r.get::<_, String>(3), (r.get(0), r.get(1), r.get(2)))).collect()
}

#[track_caller]
fn assert_acks_stored(acks: &[Ack], rows: &HashMap<String, (i64, i64, i64)>) {
    for a in acks {
        let got = rows.get(&a.cid).unwrap_or_else(|| panic!("acknowledged message {a:?} is not stored"));
        assert_eq!(*got, (a.id, a.room_id, a.seq), "stored row differs from the echo for {}", a.cid);
    }
}

/// Asserts `room`'s stored log (§10: messages and room events) is gapless 1..=n and its
/// messages are its seqs `base + 1..=n`: before `base` only room events (the members' joins),
/// after it only messages, with no gap. Returns n.
async fn assert_log_is_joins_then_messages(client: &tokio_postgres::Client, room: i64, base: i64) -> i64 {
    let log = assert_db_room_log_gapless(client, room).await;
    let n = log.len() as i64;
    assert!(n >= base, "room {room}: the log lost events before seq {base}: {log:?}");
    let joins = log.iter().filter(|e| e.0 <= base).all(|e| e.1 == "member");
    assert!(joins, "room {room}: only member events up to seq {base}: {log:?}");
    assert_eq!(
        db_room_seqs(client, room).await,
        (base + 1..=n).collect::<Vec<_>>(),
        "room {room}: messages after the joins"
    );
    n
}

// --- (a) PostgreSQL outage -----------------------------------------------------------------

#[tokio::test]
async fn postgres_outage_gives_unavailable_and_recovers() {
    let mut pg = PrivatePg::start_new().await;
    let db = TestDb::create_on(&pg.admin_url()).await;
    let db_url = db.url.clone();
    let s = TestServer::start_with_db(db, &[("LIVECHAT_STORAGE__WRITE_TIMEOUT_MS", "1000")]).await;
    let (_, t) = s.create_user("outage").await;
    let mut c = s.ws(&t).await;
    let base = s.last_seq(&t, 1).await;
    let before = c.send_and_echo(1, "before the outage").await;

    pg.stop().await;

    // The process stays up; readiness reports the database.
    assert_eq!(s.get_anon("/healthz").await.status, 200, "/healthz while PostgreSQL is down");

    c.send_msg(1, "during the outage", Some("retry-me")).await;
    let e = c.recv_types(&["error", "message"]).await;
    assert_ws_error(&e, "unavailable");
    assert_eq!(e["ref"], json!("retry-me"));
    let retry = e["retry_after_ms"].as_u64().unwrap_or_else(|| panic!("retry_after_ms: {e}"));
    assert!(retry > 0, "{e}");

    let r = s.get_anon("/readyz").await;
    assert_eq!(r.status, 503, "/readyz while PostgreSQL is down: {r:?}");
    assert!(r.text.to_lowercase().contains("postgres"), "/readyz must name postgres: {r:?}");

    pg.start().await;

    // Retry with the same client_msg_id, following retry_after_ms, until it is acknowledged.
    let deadline = Instant::now() + Duration::from_secs(30);
    let echo = loop {
        assert!(Instant::now() < deadline, "livechat did not recover within 30 s of PostgreSQL returning");
        c.send_msg(1, "during the outage", Some("retry-me")).await;
        let v = c.recv_types(&["error", "message"]).await;
        if v["type"] == "message" {
            break v;
        }
        assert_ws_error(&v, "unavailable");
        let wait = v["retry_after_ms"].as_u64().unwrap_or(200).clamp(50, 2000);
        tokio::time::sleep(Duration::from_millis(wait)).await; // the server's own back-off
    };
    assert_eq!(echo["client_msg_id"], json!("retry-me"));
    let after = c.send_and_echo(1, "after recovery").await;
    assert!(after["seq"].as_i64() > echo["seq"].as_i64());

    // Exactly once.
    let h = s.history(&t, 1, 100).await;
    let copies: Vec<&Value> = h.iter().filter(|m| m["client_msg_id"] == json!("retry-me")).collect();
    assert_eq!(copies.len(), 1, "stored exactly once: {h:?}");
    assert_eq!(copies[0]["id"], echo["id"]);
    assert_eq!(copies[0]["seq"], echo["seq"]);
    assert!(h.iter().any(|m| m["id"] == before["id"]));
    let client = pg_connect(&db_url).await;
    let n = assert_log_is_joins_then_messages(&client, 1, base).await;
    assert_eq!(n, base + 3, "exactly the three acknowledged messages, gapless");
    let acked = [&before, &echo, &after].map(|m| m["seq"].as_i64().expect("seq"));
    assert_eq!(acked, [base + 1, base + 2, base + 3], "the stored seqs are the acknowledged ones");

    // Readiness comes back by itself (polled: there is no event to await).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = s.get_anon("/readyz").await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz still {} 15 s after PostgreSQL returned", r.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(s);
    drop(pg);
}

// --- (b) SIGKILL mid-burst -----------------------------------------------------------------

/// Sends `n` messages alternating between `rooms` in windows, recording every echo into `tx`,
/// until done or the connection dies.
async fn burst(mut c: WsClient, name: String, rooms: [i64; 2], n: usize, tx: tokio::sync::mpsc::UnboundedSender<Ack>) {
    const WINDOW: usize = 10;
    let mut i = 0;
    while i < n {
        let w = WINDOW.min(n - i);
        for k in 0..w {
            let j = i + k;
            let v = json!({ "type": "message", "room_id": rooms[j % 2], "content": format!("{name} {j}"),
                            "client_msg_id": format!("{name}-{j}") });
            if !c.try_send_json(v).await {
                return;
            }
        }
        let mut got = 0;
        while got < w {
            match c.next_event_within(RECV_TIMEOUT).await {
                WsEvent::Json(v) if v["type"] == "message" => {
                    if v["client_msg_id"].as_str().map(|s| s.starts_with(&format!("{name}-"))) == Some(true) {
                        let _ = tx.send(ack_of(&v));
                        got += 1;
                    }
                }
                WsEvent::Json(v) if v["type"] == "error" => panic!("{name}: unexpected error {v}"),
                WsEvent::Json(_) => {}
                WsEvent::Closed(_) | WsEvent::Timeout => return,
            }
        }
        i += w;
    }
}

#[tokio::test]
async fn sigkill_mid_burst_loses_no_acknowledged_message() {
    let mut s = TestServer::start(&[FAST, FAST_BURST]).await;
    let (u1, t1) = s.create_user("k1").await;
    let (u2, t2) = s.create_user("k2").await;
    let (_u3, t3) = s.create_user("k3").await;
    let room = s.create_room(&t3, "burst", &[u1, u2]).await;
    // Each room's log so far (the members' joins, §10): the burst takes the seqs after it.
    let base_1 = s.last_seq(&t3, 1).await;
    let base_room = s.last_seq(&t3, room).await;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Ack>();
    let mut tasks = Vec::new();
    for (name, t) in [("k1", &t1), ("k2", &t2), ("k3", &t3)] {
        let c = s.ws_ready(t).await;
        tasks.push(tokio::spawn(burst(c, name.to_string(), [1, room], 400, tx.clone())));
    }
    drop(tx);

    // Kill -9 once a good part of the burst is acknowledged.
    let mut acks = Vec::new();
    while acks.len() < 150 {
        match bounded("echoes before the kill", rx.recv()).await {
            Some(a) => acks.push(a),
            None => panic!("burst ended before the kill with only {} acks", acks.len()),
        }
    }
    s.sigkill();
    let st = s.wait_exit(Duration::from_secs(10)).await;
    assert!(!st.success());
    for t in tasks {
        bounded("burst task ends after the kill", t).await.expect("burst task");
    }
    while let Ok(a) = rx.try_recv() {
        acks.push(a);
    }
    assert!(acks.len() < 1200, "the kill happened mid-burst");

    s.restart().await;

    let client = s.db_client().await;
    let rows = stored(&client).await;
    assert_acks_stored(&acks, &rows);
    for (r, base) in [(1, base_1), (room, base_room)] {
        let n = assert_log_is_joins_then_messages(&client, r, base).await;
        let max_acked = acks.iter().filter(|a| a.room_id == r).map(|a| a.seq).max().unwrap_or(0);
        assert!(n >= max_acked, "room {r}");
    }
    // History agrees, and a new message continues the sequence in each room (after k4's join
    // in room 1).
    let (_, t4) = s.create_user("k4").await;
    let mut c = s.ws(&t1).await;
    for r in [1, room] {
        let n = assert_db_room_log_gapless(&client, r).await.len() as i64;
        let e = c.send_and_echo(r, "after restart").await;
        assert_eq!(e["seq"], json!(n + 1), "room {r} continues at n+1");
    }
    let h = s.history(&t4, 1, 500).await;
    for a in acks.iter().filter(|a| a.room_id == 1) {
        let m = h.iter().find(|m| m["id"] == json!(a.id));
        if let Some(m) = m {
            assert_eq!(m["seq"], json!(a.seq));
            assert_eq!(m["client_msg_id"], json!(a.cid));
        }
    }
}

// --- (c) graceful SIGTERM ------------------------------------------------------------------

#[tokio::test]
async fn sigterm_closes_1001_commits_and_exits_zero() {
    let mut s = TestServer::start(&[FAST, FAST_BURST, ("LIVECHAT_SERVER__DRAIN_SECS", "5")]).await;
    let mut clients = Vec::new();
    let mut token = String::new();
    for i in 0..3 {
        let (_, t) = s.create_user(&format!("term{i}")).await;
        clients.push(s.ws_ready(&t).await);
        token = t;
    }
    // Room 1's log so far (the users' joins, §10): the messages take the seqs after it.
    let base = s.last_seq(&token, 1).await;
    // Messages in flight: sent, not yet awaited.
    for (i, c) in clients.iter_mut().enumerate() {
        for j in 0..30 {
            c.send_msg(1, &format!("t{i}-{j}"), Some(&format!("term{i}-{j}"))).await;
        }
    }
    s.sigterm();

    let mut acks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        let (seen, code) = c.events_until_close().await;
        assert_eq!(code, Some(1001), "client {i}: close code on SIGTERM");
        for v in seen {
            if v["type"] == "message"
                && v["client_msg_id"].as_str().map(|x| x.starts_with(&format!("term{i}-"))) == Some(true)
            {
                acks.push(ack_of(&v));
            }
        }
    }
    let st = s.wait_exit(Duration::from_secs(5 + 5)).await;
    assert!(st.success(), "exit status after SIGTERM: {st:?}; stderr:\n{}", s.stderr());
    assert!(!s.stderr().contains("panicked"), "{}", s.stderr());

    // Every acknowledged message is durable.
    let client = s.db_client().await;
    let rows = stored(&client).await;
    assert_acks_stored(&acks, &rows);
    // Gapless after shutdown.
    assert_log_is_joins_then_messages(&client, 1, base).await;

    // It no longer accepts connections.
    assert!(tokio::net::TcpStream::connect(s.addr).await.is_err(), "listener closed after exit");
}
