//! Limits and protocol violations: close codes, rate limits, connection caps, slow consumers,
//! idle timeout, token expiry, slowloris. A violation closes only the offending connection.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// A user + a raw (hand-framed) connection.
async fn raw_client(s: &TestServer, name: &str) -> RawWs {
    let (_, token) = s.create_user(name).await;
    RawWs::connect(s.addr, &token).await
}

/// Proves the raw connection is live before the violation: a valid masked text frame gets its
/// echo. (So a later close is a reaction to the violation, not to the handshake.)
async fn raw_roundtrip(raw: &mut RawWs) {
    let cid = format!("raw-{}", random_hex(4));
    assert!(raw.send_text(&json!({ "type": "message", "content": "hi", "client_msg_id": cid }).to_string()).await);
    loop {
        let v = raw.read_json().await;
        if v["type"] == "message" && v["client_msg_id"] == json!(cid) {
            return;
        }
        assert_ne!(v["type"], "error", "{v}");
    }
}

async fn violation_close_code(env: &[(&str, &str)], frames: Vec<Vec<u8>>) -> Option<u16> {
    let s = TestServer::start(env).await;
    let mut raw = raw_client(&s, "violator").await;
    raw_roundtrip(&mut raw).await;
    for f in frames {
        if !raw.send_raw(&f).await {
            break;
        }
    }
    let code = raw.read_close_code().await;
    // The server survives: a fresh client still works.
    let (_, t) = s.create_user("bystander").await;
    let mut c = s.ws(&t).await;
    c.send_and_echo(1, "still alive").await;
    code
}

#[tokio::test]
async fn frame_over_max_bytes_closes_1009() {
    // Default limit 65536.
    let payload = json!({ "type": "message", "content": "a".repeat(70_000) }).to_string();
    let code = violation_close_code(&[], vec![encode_frame(true, OP_TEXT, payload.as_bytes(), true)]).await;
    assert_eq!(code, Some(1009));
}

#[tokio::test]
async fn fragmented_message_over_max_bytes_closes_1009() {
    let env = [("LIVECHAT_LIMITS__FRAME_MAX_BYTES", "4096")];
    // Each fragment is under the limit; their sum is not.
    let chunk = vec![b'a'; 3000];
    let frames = vec![
        encode_frame(false, OP_TEXT, &chunk, true),
        encode_frame(false, OP_CONT, &chunk, true),
        encode_frame(true, OP_CONT, &chunk, true),
    ];
    assert_eq!(violation_close_code(&env, frames).await, Some(1009));
}

#[tokio::test]
async fn fragmented_message_under_limit_is_accepted() {
    let s = TestServer::start(&[("LIVECHAT_LIMITS__FRAME_MAX_BYTES", "4096")]).await;
    let mut raw = raw_client(&s, "frag").await;
    let text = json!({ "type": "message", "content": "in three parts", "client_msg_id": "frag1" }).to_string();
    let b = text.as_bytes();
    let (p1, rest) = b.split_at(10);
    let (p2, p3) = rest.split_at(10);
    raw.send_raw(&encode_frame(false, OP_TEXT, p1, true)).await;
    // A control frame may be interleaved between fragments (RFC 6455 §5.4).
    raw.send_raw(&encode_frame(true, OP_PING, b"x", true)).await;
    raw.send_raw(&encode_frame(false, OP_CONT, p2, true)).await;
    raw.send_raw(&encode_frame(true, OP_CONT, p3, true)).await;
    let v = loop {
        let v = raw.read_json().await;
        if v["type"] == "message" {
            break v;
        }
        assert_ne!(v["type"], "error", "{v}");
    };
    assert_eq!(v["content"], json!("in three parts"));
    assert_eq!(v["client_msg_id"], json!("frag1"));
}

#[tokio::test]
async fn binary_frame_closes_1003() {
    let frames = vec![encode_frame(true, OP_BINARY, b"\x01\x02\x03", true)];
    assert_eq!(violation_close_code(&[], frames).await, Some(1003));
}

#[tokio::test]
async fn unmasked_client_frame_closes_1002() {
    let text = json!({ "type": "message", "content": "unmasked" }).to_string();
    let frames = vec![encode_frame(true, OP_TEXT, text.as_bytes(), false)];
    assert_eq!(violation_close_code(&[], frames).await, Some(1002));
}

#[tokio::test]
async fn ping_over_125_bytes_closes_1002() {
    let frames = vec![encode_frame(true, OP_PING, &[b'p'; 126], true)];
    assert_eq!(violation_close_code(&[], frames).await, Some(1002));
}

#[tokio::test]
async fn close_over_125_bytes_closes_1002() {
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend([b'r'; 130]);
    let frames = vec![encode_frame(true, OP_CLOSE, &payload, true)];
    assert_eq!(violation_close_code(&[], frames).await, Some(1002));
}

#[tokio::test]
async fn reserved_opcode_closes_1002() {
    let frames = vec![encode_frame(true, 0x3, b"{}", true)];
    assert_eq!(violation_close_code(&[], frames).await, Some(1002));
}

#[tokio::test]
async fn fragmented_control_frame_closes_1002() {
    // Control frames must not be fragmented (FIN=0 ping).
    let frames = vec![encode_frame(false, OP_PING, b"abc", true)];
    assert_eq!(violation_close_code(&[], frames).await, Some(1002));
}

#[tokio::test]
async fn invalid_utf8_text_closes_1007() {
    let frames = vec![encode_frame(true, OP_TEXT, b"{\"type\":\"message\",\"content\":\"\xff\xfe\"}", true)];
    assert_eq!(violation_close_code(&[], frames).await, Some(1007));
}

#[tokio::test]
async fn violation_on_one_connection_does_not_disturb_another() {
    let s = TestServer::start(&[]).await;
    let (_, ta) = s.create_user("calm").await;
    let mut calm = s.ws_ready(&ta).await;
    let mut raw = raw_client(&s, "rude").await;
    raw_roundtrip(&mut raw).await;
    raw.send_raw(&encode_frame(true, OP_BINARY, b"boom", true)).await;
    assert_eq!(raw.read_close_code().await, Some(1003));
    let e = calm.send_and_echo(1, "unaffected").await;
    assert_eq!(e["content"], json!("unaffected"));
}

// --- rate limits ---------------------------------------------------------------------------

#[tokio::test]
async fn rate_limit_error_then_close_1008_on_sustained_abuse() {
    let s = TestServer::start(&[("LIVECHAT_LIMITS__MESSAGES_PER_SEC", "2"), ("LIVECHAT_LIMITS__MESSAGES_BURST", "2")])
        .await;
    let (_, t) = s.create_user("spammer").await;
    let mut c = s.ws(&t).await;
    for i in 0..3 {
        c.send_msg(1, &format!("m{i}"), Some(&format!("rl{i}"))).await;
    }
    let mut echoes = 0;
    let mut limited = None;
    for _ in 0..3 {
        let v = c.recv_types(&["message", "error"]).await;
        if v["type"] == "message" {
            echoes += 1;
        } else {
            assert_ws_error(&v, "rate_limited");
            limited = Some(v);
        }
    }
    assert_eq!(echoes, 2, "the burst of 2 passes");
    let e = limited.expect("the 3rd message is rate limited");
    assert_eq!(e["ref"], json!("rl2"));
    let retry = e["retry_after_ms"].as_u64().unwrap_or_else(|| panic!("retry_after_ms integer: {e}"));
    assert!(retry > 0 && retry <= 10_000, "retry_after_ms {retry}");

    // A second connection of the same user has its own budget.
    let mut c2 = s.ws(&t).await;
    c2.send_and_echo(1, "other connection").await;

    // Sustained abuse: keep sending (paced by reading, bounded to 15 s) until the server closes.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut i = 0;
    let code = loop {
        assert!(Instant::now() < deadline, "no close 1008 after 15 s of abuse");
        if !c.try_send_json(json!({ "type": "message", "content": format!("spam{i}") })).await {
            break c.expect_close().await;
        }
        i += 1;
        match c.next_event_within(Duration::from_millis(20)).await {
            WsEvent::Closed(code) => break code,
            WsEvent::Json(_) | WsEvent::Timeout => {}
        }
    };
    assert_eq!(code, Some(1008), "sustained abuse closes with 1008");
    // The other connection is unaffected.
    c2.send_and_echo(1, "still fine").await;
}

// --- connections per user ------------------------------------------------------------------

#[tokio::test]
async fn third_connection_of_user_is_429() {
    let s = TestServer::start(&[("LIVECHAT_LIMITS__CONNECTIONS_PER_USER", "2")]).await;
    let (_, t) = s.create_user("many").await;
    let mut c1 = s.ws_ready(&t).await;
    let _c2 = s.ws_ready(&t).await;
    match WsClient::connect(&s.ws_url(&t)).await {
        Ok(_) => panic!("third connection must be refused"),
        Err(e) => assert_eq!(e.status(), Some(429), "{e:?}"),
    }
    // Other users are not affected; the existing connections still work.
    let (_, t2) = s.create_user("other").await;
    let mut o = s.ws(&t2).await;
    o.send_and_echo(1, "fine").await;
    c1.send_and_echo(1, "fine too").await;
}

// --- slow consumer -------------------------------------------------------------------------

#[tokio::test]
async fn slow_consumer_is_closed_others_get_everything() {
    let s = TestServer::start(&[
        ("LIVECHAT_LIMITS__OUTBOUND_QUEUE_FRAMES", "8"),
        ("LIVECHAT_LIMITS__MESSAGES_PER_SEC", "100000"),
        ("LIVECHAT_LIMITS__MESSAGES_BURST", "100000"),
    ])
    .await;
    let (_, t_slow) = s.create_user("slow").await;
    let (_, t_flood) = s.create_user("flood").await;
    let (_, t_normal) = s.create_user("normal").await;
    // Room 1's log so far (the users' joins, §10): the flood takes the seqs after it.
    let base = s.last_seq(&t_flood, 1).await;

    // The slow client: handshake, then never read, with a tiny receive buffer.
    let mut slow = RawWs::connect_opts(s.addr, &t_slow, Some(4096)).await;
    let mut normal = s.ws_ready(&t_normal).await;
    let mut flood = s.ws_ready(&t_flood).await;

    // ~6 MB of deliveries: more than any socket buffers can hold.
    const N: usize = 1500;
    // Small windows: the flooder itself reads its echoes promptly and is no slow consumer.
    const WINDOW: usize = 4;
    let content = "z".repeat(4000);

    let normal_task = tokio::spawn(async move {
        let mut seqs = Vec::with_capacity(N);
        while seqs.len() < N {
            let m = normal.recv_type("message").await;
            seqs.push(m["seq"].as_i64().unwrap());
        }
        (normal, seqs)
    });

    let mut echoed = Vec::with_capacity(N);
    let mut sent = 0;
    while sent < N {
        let n = WINDOW.min(N - sent);
        for k in 0..n {
            flood.send_msg(1, &content, Some(&format!("f{}", sent + k))).await;
        }
        for _ in 0..n {
            let e = flood.recv_type("message").await;
            echoed.push(e["seq"].as_i64().unwrap());
        }
        sent += n;
    }
    let want: Vec<i64> = (base + 1..=base + N as i64).collect();
    assert_eq!(echoed, want, "flooder got every echo in order");
    let (mut normal, seqs) = bounded("normal client receives all", normal_task).await.expect("normal task");
    assert_eq!(seqs, want, "normal client got everything, in order");

    // The slow client was disconnected: reading now yields some messages, then 1013 or EOF,
    // never all N messages.
    let (seen, end) = slow.read_all_until_close(Duration::from_secs(30)).await;
    let got = seen.iter().filter(|v| v["type"] == "message").count();
    assert!(got < N, "the slow consumer must have been cut off, yet it got all {N} messages");
    match end {
        RawEnd::Close(code) => assert_eq!(code, Some(1013), "slow consumer close code"),
        RawEnd::Eof => {}
    }
    // Still gapless up to where it was cut.
    let slow_seqs: Vec<i64> =
        seen.iter().filter(|v| v["type"] == "message").map(|v| v["seq"].as_i64().unwrap()).collect();
    assert_eq!(slow_seqs, want[..slow_seqs.len()], "no gap before the cut");

    // The others are still connected and working.
    let e = flood.send_and_echo(1, "after").await;
    let m = normal.recv_type("message").await;
    assert_eq!(m["id"], e["id"]);
}

// --- idle timeout --------------------------------------------------------------------------

#[tokio::test]
async fn silent_client_is_closed_1001_after_idle_timeout() {
    let s =
        TestServer::start(&[("LIVECHAT_LIMITS__PING_SECS", "1"), ("LIVECHAT_LIMITS__IDLE_TIMEOUT_SECS", "2")]).await;
    let mut raw = raw_client(&s, "silent").await;
    // Never answers pings; reads (and ignores) everything until the close.
    let started = Instant::now();
    let mut saw_ping = false;
    let end = loop {
        match raw.read_frame_by(Instant::now() + Duration::from_secs(10)).await {
            Err(end) => break end,
            Ok(f) if f.opcode == OP_PING => saw_ping = true,
            Ok(f) if f.opcode == OP_CLOSE => break RawEnd::Close(close_code(&f.payload)),
            Ok(_) => {}
        }
    };
    assert_eq!(end, RawEnd::Close(Some(1001)), "idle close code");
    assert!(saw_ping, "the server pings every ping_secs");
    assert!(started.elapsed() >= Duration::from_millis(1500), "closed too early: {:?}", started.elapsed());
}

#[tokio::test]
async fn pong_answering_client_survives_idle_timeout() {
    let s =
        TestServer::start(&[("LIVECHAT_LIMITS__PING_SECS", "1"), ("LIVECHAT_LIMITS__IDLE_TIMEOUT_SECS", "2")]).await;
    let (_, t) = s.create_user("polite").await;
    let mut c = s.ws(&t).await;
    // Keep reading (tungstenite answers pings) for twice the idle timeout: no close.
    match c.next_event_within(Duration::from_secs(4)).await {
        WsEvent::Timeout => {}
        other => panic!("a client answering pings must stay connected: {other:?}"),
    }
    c.send_and_echo(1, "still here").await;
}

// --- token expiry --------------------------------------------------------------------------

#[tokio::test]
async fn token_expiring_while_open_gets_unauthorized_then_1008() {
    let s = TestServer::start(&[("LIVECHAT_LIMITS__PING_SECS", "1")]).await;
    let (uid, _) = s.create_user("expiring").await;
    let token = s.mint_token(uid, 3);
    let mut c = s.ws(&token).await;
    c.send_and_echo(1, "before expiry").await;
    let (seen, code) = c.events_until_close().await;
    let err = seen
        .iter()
        .find(|v| v["type"] == "error")
        .unwrap_or_else(|| panic!("an error event before the close: {seen:?}"));
    assert_ws_error(err, "unauthorized");
    assert_eq!(code, Some(1008));
}

// --- slowloris -----------------------------------------------------------------------------

#[tokio::test]
async fn slowloris_half_request_head_is_dropped() {
    let s = TestServer::start(&[("LIVECHAT_LIMITS__HEADER_TIMEOUT_SECS", "1")]).await;
    for partial in [
        "GET /healthz HTTP/1.1\r\nHost: x\r\n".to_string(),
        "GET /ws/chat?token=abc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n".to_string(),
    ] {
        let mut sock = tokio::net::TcpStream::connect(s.addr).await.expect("connect");
        sock.write_all(partial.as_bytes()).await.unwrap();
        let started = Instant::now();
        let mut buf = vec![0u8; 4096];
        // Stall. The server must drop us (EOF/reset, possibly after a 408) within a few seconds.
        let dropped = tokio::time::timeout(Duration::from_secs(6), async {
            loop {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(dropped.is_ok(), "slowloris connection still open after 6 s ({partial:?})");
        assert!(started.elapsed() >= Duration::from_millis(500), "dropped before the timeout?");
    }
    // Normal requests still served.
    assert_eq!(s.get_anon("/healthz").await.status, 200);
}

#[tokio::test]
async fn rate_limited_messages_are_not_stored() {
    let s = TestServer::start(&[("LIVECHAT_LIMITS__MESSAGES_PER_SEC", "1"), ("LIVECHAT_LIMITS__MESSAGES_BURST", "1")])
        .await;
    let (_, t) = s.create_user("limited").await;
    let mut c = s.ws(&t).await;
    c.send_msg(1, "ok", Some("a")).await;
    c.send_msg(1, "limited", Some("b")).await;
    let mut got: HashSet<String> = HashSet::new();
    for _ in 0..2 {
        let v: Value = c.recv_types(&["message", "error"]).await;
        got.insert(format!(
            "{}:{}",
            v["type"].as_str().unwrap(),
            v.get("ref").and_then(|r| r.as_str()).or(v["client_msg_id"].as_str()).unwrap_or("")
        ));
    }
    assert!(got.contains("message:a") && got.contains("error:b"), "{got:?}");
    let h = s.history(&t, 1, 10).await;
    assert_eq!(h.len(), 1, "rate-limited message must not be stored: {h:?}");
}
