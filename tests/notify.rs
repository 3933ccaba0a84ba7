//! Notifications (README.md, "Notifications") against real parts: the `livechat` binary,
//! PostgreSQL, Redis, a real HTTP receiver (hyper) and a real SMTP receiver (a minimal one
//! written here).
//!
//! Each test gets its own Redis key prefix (`LIVECHAT_NOTIFY__KEY_PREFIX`) so tests sharing one
//! Redis never see each other's jobs.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hmac::{KeyInit, Mac};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const SECRET: &str = "hook-secret-for-tests";

#[track_caller]
fn assert_signed(call: &WebhookCall) {
    let sig = call.signature.as_deref().unwrap_or_else(|| panic!("no X-Livechat-Signature on {call:?}"));
    let hex_mac = sig.strip_prefix("sha256=").unwrap_or_else(|| panic!("signature {sig:?} lacks sha256="));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&call.body);
    let want = hex::encode(mac.finalize().into_bytes());
    assert_eq!(hex_mac, want, "HMAC over the exact body bytes");
}

#[track_caller]
fn assert_webhook_body(v: &Value) {
    let obj = v.as_object().unwrap_or_else(|| panic!("webhook body is not an object: {v}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["created_at", "job_id", "message_id", "preview", "room_id", "sender_id", "user_id"], "{v}");
    for k in ["user_id", "room_id", "message_id", "sender_id"] {
        assert!(v[k].is_i64(), "{k} must be an integer: {v}");
    }
    assert!(v["job_id"].is_string() && v["preview"].is_string(), "{v}");
    assert_rfc3339_utc(&v["created_at"]);
}

/// [`webhook_env`] on the shared Redis `redis`, with signed deliveries.
fn hook_env<'a>(hook_url: &'a str, prefix: &'a str, redis: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![("REDIS_URL", redis), ("LIVECHAT_NOTIFY_WEBHOOK_SECRET", SECRET)];
    env.extend(webhook_env(hook_url, prefix));
    env
}

/// alice (sender), bob, carol in one room; returns ids, alice's token, bob's token, room.
async fn three_users(s: &TestServer) -> ((i64, i64, i64), String, String, i64) {
    let (alice, at) = s.create_user(&format!("alice{}", random_hex(3))).await;
    let (bob, bt) = s.create_user(&format!("bob{}", random_hex(3))).await;
    let (carol, _) = s.create_user(&format!("carol{}", random_hex(3))).await;
    let room = s.create_room(&at, "notify", &[bob, carol]).await;
    ((alice, bob, carol), at, bt, room)
}

// --- tests ------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_member_gets_exactly_one_signed_webhook_per_message() {
    let mut hook = WebhookReceiver::start().await;
    let (p, r, url) = (notify_key_prefix(), redis_url(), hook.url());
    let s = TestServer::start(&hook_env(&url, &p, &r)).await;
    let ((alice, bob, carol), at, bt, room) = three_users(&s).await;
    let mut wa = s.ws_ready(&at).await;
    let _wb = s.ws_ready(&bt).await; // bob is online

    let mut seen = Vec::new();
    for text in ["hello carol", "second message"] {
        let m = wa.send_and_echo(room, text).await;
        let call = hook.next().await;
        assert_eq!(call.status, 200);
        assert_signed(&call);
        assert_webhook_body(&call.json);
        let v = &call.json;
        assert_eq!(v["user_id"], json!(carol), "only the offline member: {v}");
        assert_eq!(v["message_id"], m["id"]);
        assert_eq!(v["room_id"], json!(room));
        assert_eq!(v["sender_id"], json!(alice));
        assert_eq!(v["preview"], json!(text));
        assert_eq!(v["job_id"], json!(format!("{}-{carol}-webhook", m["id"])));
        seen.push(v["job_id"].as_str().unwrap().to_string());
    }
    // Nothing else: no second copy, nothing for bob (online) or alice (sender).
    if let Some(extra) = hook.next_within(Duration::from_millis(800)).await {
        panic!("unexpected extra webhook (bob={bob}, alice={alice}): {}", extra.json);
    }
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 2);

    let metrics = s.get_anon("/metrics").await.text;
    assert!(metrics.contains("livechat_notify_jobs_enqueued_total"), "{metrics}");
    assert!(metrics.contains("livechat_notify_jobs_delivered_total"), "{metrics}");
    redis_cleanup(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_receiver_gets_retries_with_the_same_job_id() {
    let mut hook = WebhookReceiver::start().await;
    hook.fail_first(2);
    let (p, r, url) = (notify_key_prefix(), redis_url(), hook.url());
    let s = TestServer::start(&hook_env(&url, &p, &r)).await;
    let (_, at, bt, room) = three_users(&s).await;
    let mut wa = s.ws_ready(&at).await;
    let _wb = s.ws_ready(&bt).await; // only carol is offline
    wa.send_and_echo(room, "retry me").await;

    let calls = [hook.next().await, hook.next().await, hook.next().await];
    let statuses: Vec<u16> = calls.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [500, 500, 200]);
    let ids: HashSet<&str> = calls.iter().map(|c| c.json["job_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "every attempt carries the same job_id: {ids:?}");
    for c in &calls {
        assert_signed(c);
        assert_eq!(c.json["preview"], "retry me");
    }
    if let Some(extra) = hook.next_within(Duration::from_millis(800)).await {
        panic!("delivered job sent again: {}", extra.json);
    }
    let metrics = s.get_anon("/metrics").await.text;
    assert_eq!(metric(&metrics, "livechat_notify_jobs_retried_total"), Some(2.0), "{metrics}");
    redis_cleanup(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_past_max_attempts_is_dead_lettered_listed_and_requeued() {
    let mut hook = WebhookReceiver::start().await;
    hook.fail_all(true);
    let (p, r, url) = (notify_key_prefix(), redis_url(), hook.url());
    let mut env = hook_env(&url, &p, &r);
    env.push(("LIVECHAT_NOTIFY__MAX_ATTEMPTS", "2"));
    let s = TestServer::start(&env).await;
    let ((_, _, carol), at, bt, room) = three_users(&s).await;
    let mut wa = s.ws_ready(&at).await;
    let _wb = s.ws_ready(&bt).await; // only carol is offline
    let m = wa.send_and_echo(room, "doomed").await;
    let job_id = format!("{}-{carol}-webhook", m["id"]);

    for _ in 0..2 {
        let c = hook.next().await;
        assert_eq!(c.status, 500);
        assert_eq!(c.json["job_id"], json!(job_id));
    }
    let admin = s.admin_token.clone();
    let deadline = Instant::now() + RECV_TIMEOUT;
    let listed = loop {
        let r = s.get_json("/v1/admin/dead-letters?limit=10", &admin).await;
        assert_eq!(r.status, 200, "{r:?}");
        if r.body["total"] == json!(1) {
            break r.body;
        }
        assert!(Instant::now() < deadline, "the job never reached the dead letters: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let dead = &listed["dead_letters"][0];
    assert_eq!(dead["job_id"], json!(job_id), "{listed}");
    assert_eq!(dead["attempts"], json!(2), "{listed}");
    assert!(dead["last_error"].as_str().unwrap_or("").contains("500"), "{listed}");
    assert!(hook.next_within(Duration::from_millis(300)).await.is_none(), "no attempt after max_attempts");

    // Admin only, JSON errors.
    s.get_json("/v1/admin/dead-letters", &bt).await.assert_error(403, "forbidden");
    s.get_json("/v1/admin/dead-letters?limit=0", &admin).await.assert_error(400, "bad_request");
    s.post_json("/v1/admin/dead-letters/requeue", &bt, json!({})).await.assert_error(403, "forbidden");

    hook.fail_all(false);
    let r = s.admin_post("/v1/admin/dead-letters/requeue", json!({"job_ids": ["no-such-job"]})).await;
    assert_eq!((r.status, &r.body), (200, &json!({"requeued": 0})));
    let r = s.admin_post("/v1/admin/dead-letters/requeue", json!({"job_ids": [job_id]})).await;
    assert_eq!((r.status, &r.body), (200, &json!({"requeued": 1})));
    let c = hook.next().await;
    assert_eq!((c.status, &c.json["job_id"]), (200, &json!(job_id)));
    assert_signed(&c);
    let r = s.get_json("/v1/admin/dead-letters", &admin).await;
    assert_eq!(r.body["total"], json!(0), "{r:?}");
    let metrics = s.get_anon("/metrics").await.text;
    assert_eq!(metric(&metrics, "livechat_notify_jobs_dead_lettered_total"), Some(1.0), "{metrics}");
    redis_cleanup(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_pending_jobs_loses_none() {
    // Phase 1 receiver: accepts and never answers, so jobs sit handed-out and unacknowledged
    // when the process dies (only XAUTOCLAIM can recover those), and timed-out ones wait in
    // the retry set.
    let hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hole.local_addr().unwrap();
    let hole_task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = hole.accept().await {
            held.push(c);
        }
    });
    let url = format!("http://{addr}/hook");
    let (p, r) = (notify_key_prefix(), redis_url());
    let mut env = hook_env(&url, &p, &r);
    env.push(("LIVECHAT_NOTIFY__MAX_ATTEMPTS", "1000"));
    env.push(("LIVECHAT_NOTIFY__BACKOFF_BASE_MS", "100"));
    let mut s = TestServer::start(&env).await;
    let ((_, bob, carol), at, _, room) = three_users(&s).await;
    let mut wa = s.ws_ready(&at).await;
    let mut want = HashSet::new();
    for i in 0..5 {
        let m = wa.send_and_echo(room, &format!("pending {i}")).await;
        for u in [bob, carol] {
            want.insert(format!("{}-{u}-webhook", m["id"]));
        }
    }
    // Every job enqueued (outbox empty) and handed to the worker, unacknowledged.
    let db = s.db_client().await;
    let db = &db;
    eventually("outbox relayed", RECV_TIMEOUT, || async move {
        db.query_one("SELECT count(*) FROM notify_outbox", &[]).await.unwrap().get::<_, i64>(0) == 0
    })
    .await;
    let rc = redis_conn().await;
    let (jobs_key, retry_key) = (format!("{p}:jobs"), format!("{p}:retry"));
    eventually("jobs in flight", RECV_TIMEOUT, || {
        let (mut rc, k) = (rc.clone(), jobs_key.clone());
        async move {
            let pending: Vec<redis::Value> =
                redis::cmd("XPENDING").arg(&k).arg("livechat-workers").query_async(&mut rc).await.unwrap();
            matches!(pending.first(), Some(redis::Value::Int(n)) if *n > 0)
        }
    })
    .await;

    s.sigkill();
    let status = s.wait_exit(RECV_TIMEOUT).await;
    assert!(!status.success());
    drop(wa);
    s.restart().await;
    hole_task.abort();
    let _ = hole_task.await;
    let mut hook = WebhookReceiver::start_on(addr).await;

    let mut got = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < want.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(c) = hook.next_within(left).await else {
            panic!(
                "only {} of {} jobs delivered after restart: missing {:?}",
                got.len(),
                want.len(),
                want.difference(&got)
            );
        };
        assert_signed(&c);
        got.insert(c.json["job_id"].as_str().unwrap().to_string());
    }
    assert_eq!(got, want);
    // Nothing left behind in Redis once the deliveries are acknowledged.
    eventually("every job acknowledged, no retry left", RECV_TIMEOUT, || {
        let (mut rc, jobs_key, retry_key) = (rc.clone(), jobs_key.clone(), retry_key.clone());
        async move {
            let pending: Vec<redis::Value> =
                redis::cmd("XPENDING").arg(&jobs_key).arg("livechat-workers").query_async(&mut rc).await.unwrap();
            let retries: i64 = redis::cmd("ZCARD").arg(&retry_key).query_async(&mut rc).await.unwrap();
            pending.first() == Some(&redis::Value::Int(0)) && retries == 0
        }
    })
    .await;
    let metrics = s.get_anon("/metrics").await.text;
    let reclaimed = metric(&metrics, "livechat_notify_jobs_reclaimed_total");
    assert!(reclaimed.is_some_and(|n| n > 0.0), "jobs of the killed process taken over: {metrics}");
    redis_cleanup(&p).await;
}

// --- e-mail -------------------------------------------------------------------------------------

/// One message the SMTP receiver accepted.
#[derive(Debug)]
struct Mail {
    rcpt: Vec<String>,
    data: String,
}

/// A minimal SMTP server: enough of RFC 5321 for a client to hand over a message.
async fn smtp_receiver() -> (SocketAddr, mpsc::UnboundedReceiver<Mail>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                if w.write_all(b"220 localhost ESMTP test\r\n").await.is_err() {
                    return;
                }
                let mut rcpt = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250-localhost\r\n250 8BITMIME\r\n"
                    } else if upper.starts_with("MAIL FROM") {
                        rcpt.clear();
                        b"250 OK\r\n"
                    } else if upper.starts_with("RCPT TO") {
                        rcpt.push(line[8..].trim().trim_matches(|c| c == '<' || c == '>').to_string());
                        b"250 OK\r\n"
                    } else if upper == "DATA" {
                        if w.write_all(b"354 end with .\r\n").await.is_err() {
                            return;
                        }
                        let mut data = String::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            data.push_str(&l);
                            data.push('\n');
                        }
                        let _ = tx.send(Mail { rcpt: std::mem::take(&mut rcpt), data });
                        b"250 OK queued\r\n"
                    } else if upper == "QUIT" {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"250 OK\r\n"
                    };
                    if w.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_arrives_at_the_smtp_receiver_with_the_preview() {
    let (smtp, mut mails, task) = smtp_receiver().await;
    let smtp_url = format!("smtp://{smtp}");
    // No REDIS_URL: the in-memory queue, which must say it is not durable.
    let s = TestServer::start(&[("LIVECHAT_SMTP_URL", &smtp_url), ("LIVECHAT_NOTIFY__SMTP_FROM", "chat@example.test")])
        .await;
    let mut users = Vec::new();
    for (name, email) in [("ann", None), ("cleo", Some("cleo@example.test")), ("dan", None)] {
        let mut body = json!({"username": format!("{name}{}", random_hex(3))});
        if let Some(e) = email {
            body["email"] = json!(e);
        }
        let r = s.admin_post("/v1/users", body).await;
        assert_eq!(r.status, 201, "{r:?}");
        users.push(r.body["id"].as_i64().unwrap());
    }
    let at = s.mint_token(users[0], 3600);
    let room = s.create_room(&at, "mail", &users[1..]).await;
    let mut wa = s.ws_ready(&at).await;
    wa.send_and_echo(room, "lunch at noon?").await;

    let mail = bounded("an e-mail", mails.recv()).await.unwrap();
    assert_eq!(mail.rcpt, ["cleo@example.test"]);
    assert!(mail.data.contains("lunch at noon?"), "{}", mail.data);
    assert!(mail.data.contains("chat@example.test"), "From: {}", mail.data);
    // dan has no address: no mail for him.
    assert!(tokio::time::timeout(Duration::from_millis(800), mails.recv()).await.is_err(), "only one mail");
    assert!(s.stderr().contains("NOT durable"), "in-memory warning: {}", s.stderr());
    task.abort();
}

// --- livechat worker ----------------------------------------------------------------------------

/// `livechat worker` as a child process; killed on drop.
async fn spawn_worker(env: &[(&str, &str)]) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(bin_path());
    cmd.arg("worker");
    scrub_env(&mut cmd);
    cmd.envs(env.iter().copied()).env("LIVECHAT_LOG", "warn");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn livechat worker");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = bounded("worker start line", lines.next_line()).await.unwrap().unwrap_or_default();
    assert!(line.starts_with("worker ") && line.ends_with(" running"), "worker said {line:?}");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_worker_process_delivers_when_serve_has_none() {
    let mut hook = WebhookReceiver::start().await;
    let (p, r, url) = (notify_key_prefix(), redis_url(), hook.url());
    let mut env = hook_env(&url, &p, &r);
    env.push(("LIVECHAT_NOTIFY__IN_PROCESS", "false"));
    let s = TestServer::start(&env).await;
    let ((_, _, carol), at, bt, room) = three_users(&s).await;
    let mut wa = s.ws_ready(&at).await;
    let _wb = s.ws_ready(&bt).await; // only carol is offline
    let m = wa.send_and_echo(room, "for the worker").await;
    assert!(hook.next_within(Duration::from_millis(800)).await.is_none(), "serve must not deliver");

    let db_url = s.db_url.clone();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut wenv = hook_env(&url, &p, &r);
    wenv.push(("DATABASE_URL", &db_url));
    wenv.push(("LIVECHAT_SERVER__METRICS_LISTEN", &metrics_addr));
    let mut worker = spawn_worker(&wenv).await;
    let c = hook.next().await;
    assert_eq!(c.json["job_id"], json!(format!("{}-{carol}-webhook", m["id"])));
    assert_signed(&c);
    // The worker's own /metrics (it has no HTTP API) counts the delivery once it is settled.
    let scrape = format!("http://{metrics_addr}/metrics");
    eventually("worker metrics count the delivery", RECV_TIMEOUT, || {
        let (http, scrape) = (s.http.clone(), scrape.clone());
        async move {
            let Ok(r) = http.get(&scrape).send().await else { return false };
            let text = r.text().await.unwrap_or_default();
            text.contains("livechat_notify_jobs_delivered_total{sink=\"webhook\"} 1")
        }
    })
    .await;
    // And it stops cleanly on SIGTERM.
    let pid = worker.id().unwrap() as i32;
    assert!(send_signal(pid, "TERM"), "kill(SIGTERM) failed");
    let st = bounded("worker exit", worker.wait()).await.unwrap();
    assert!(st.success(), "{st:?}");
    redis_cleanup(&p).await;
}

#[tokio::test]
async fn worker_without_redis_refuses_to_start() {
    let out = run_cli(&["worker"], &[("DATABASE_URL", "postgres://u@127.0.0.1:1/x")]).await;
    assert!(!out.status.success());
    let err = out.stderr.trim();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("REDIS_URL"), "{err}");
}

/// Jobs/s of one `livechat worker` against a local receiver. A measurement, not an assertion:
/// `cargo test --test notify -- --ignored --nocapture worker_throughput`
/// (`NOTIFY_BENCH_JOBS`, default 10000; the worker's `LIVECHAT_NOTIFY__WORKER_CONCURRENCY` is
/// passed through).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn worker_throughput() {
    let jobs: usize = std::env::var("NOTIFY_BENCH_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let members = 200usize;
    let messages = jobs.div_ceil(members);
    let mut hook = WebhookReceiver::start().await;
    let (p, r, url) = (notify_key_prefix(), redis_url(), hook.url());
    let mut env = hook_env(&url, &p, &r);
    env.push(("LIVECHAT_NOTIFY__IN_PROCESS", "false"));
    env.push(("LIVECHAT_LIMITS__MESSAGES_PER_SEC", "100000"));
    env.push(("LIVECHAT_LIMITS__MESSAGES_BURST", "100000"));
    let s = TestServer::start(&env).await;
    let (alice, at) = s.create_user("bench-sender").await;
    let _ = alice;
    let mut ids = Vec::new();
    for i in 0..members {
        let r = s.admin_post("/v1/users", json!({"username": format!("m{i}")})).await;
        ids.push(r.body["id"].as_i64().unwrap());
    }
    let room = s.create_room(&at, "bench", &ids).await;
    let mut wa = s.ws_ready(&at).await;
    for i in 0..messages {
        wa.send_and_echo(room, &format!("bench {i}")).await;
    }
    let db = s.db_client().await;
    let db = &db;
    eventually("outbox relayed", Duration::from_secs(60), || async move {
        db.query_one("SELECT count(*) FROM notify_outbox", &[]).await.unwrap().get::<_, i64>(0) == 0
    })
    .await;
    let total = messages * members;

    let db_url = s.db_url.clone();
    let conc = std::env::var("LIVECHAT_NOTIFY__WORKER_CONCURRENCY").unwrap_or_else(|_| "16".into());
    let mut wenv = hook_env(&url, &p, &r);
    wenv.push(("DATABASE_URL", &db_url));
    wenv.push(("LIVECHAT_NOTIFY__WORKER_CONCURRENCY", &conc));
    let started = Instant::now();
    let _worker = spawn_worker(&wenv).await;
    let mut n = 0;
    while n < total {
        match hook.next_within(Duration::from_secs(30)).await {
            Some(_) => n += 1,
            None => panic!("stalled after {n} of {total} deliveries"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "worker_throughput: {total} jobs in {secs:.2} s = {:.0} jobs/s (one `livechat worker`, concurrency {conc}, webhook on loopback)",
        total as f64 / secs
    );
    redis_cleanup(&p).await;
}

// --- the Redis queue itself --------------------------------------------------------------------

fn job(n: i64) -> livechat::notify::Job {
    use livechat::notify::{Job, SinkKind};
    Job {
        job_id: Job::id_for(n, 9, SinkKind::Log),
        sink: SinkKind::Log,
        user_id: 9,
        room_id: 1,
        message_id: n,
        sender_id: 1,
        preview: format!("p{n}"),
        created_at: "2024-01-01T00:00:00Z".into(),
        mention: false,
        attempts: 0,
        enqueued_at_ms: 0,
        last_error: None,
    }
}

/// Trimming keeps every unacknowledged entry; the cap refuses, never drops; retries come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_queue_trims_only_acknowledged_entries_and_refuses_above_cap() {
    use livechat::notify::queue::{Cursor, Outcome};
    use livechat::notify::{NotifyError, Queue};
    let p = notify_key_prefix();
    let link = Arc::new(livechat::redis_link::RedisLink::new(&redis_url()).unwrap());
    let q = Queue::redis(link, &p, 5, 2, 10);
    let mut rc = redis_conn().await;
    let jobs_key = format!("{p}:jobs");
    let xlen = |mut rc: redis::aio::MultiplexedConnection, k: String| async move {
        redis::cmd("XLEN").arg(&k).query_async::<i64>(&mut rc).await.unwrap()
    };

    q.enqueue(&(1..=5).map(job).collect::<Vec<_>>(), false).await.unwrap();
    assert!(matches!(q.enqueue(&[job(6)], false).await, Err(NotifyError::Full)), "cap reached: refused");

    let mut cursor = Cursor::default();
    let mut got = Vec::new();
    for _ in 0..10 {
        got.extend(q.fetch("c1", 3 - got.len(), Duration::from_millis(100), &mut cursor).await.unwrap());
        if got.len() == 3 {
            break;
        }
    }
    assert_eq!(got.iter().map(|d| d.job.message_id).collect::<Vec<_>>(), [1, 2, 3]);
    let third = got.pop().unwrap();
    let done: Vec<_> = got.into_iter().map(|d| (d, Outcome::Done)).collect();
    q.settle(&done).await.unwrap();

    // 1 and 2 acknowledged → trimmed; 3 (pending) and 4, 5 (never delivered) stay.
    assert_eq!(q.maintain().await.unwrap(), 3);
    assert_eq!(xlen(rc.clone(), jobs_key.clone()).await, 3);
    q.enqueue(&[job(6)], false).await.unwrap();

    // A failed attempt goes to the retry set atomically with its ack, then comes back.
    q.settle(&[(third, Outcome::Failed("boom".into()))]).await.unwrap();
    let retries: i64 = redis::cmd("ZCARD").arg(format!("{p}:retry")).query_async(&mut rc).await.unwrap();
    assert_eq!(retries, 1);
    let mut seen = Vec::new();
    let deadline = Instant::now() + RECV_TIMEOUT;
    while !seen.iter().any(|d: &livechat::notify::queue::Delivery| d.job.message_id == 3) {
        assert!(Instant::now() < deadline, "retry never came back");
        q.promote_due().await.unwrap();
        seen.extend(q.fetch("c1", 10, Duration::from_millis(50), &mut cursor).await.unwrap());
    }
    let retried = seen.iter().find(|d| d.job.message_id == 3).unwrap();
    assert_eq!((retried.job.attempts, retried.job.last_error.as_deref()), (1, Some("boom")));
    // Second failure = max_attempts (2): dead letter.
    let outcomes: Vec<_> = seen
        .into_iter()
        .map(|d| {
            let o = if d.job.message_id == 3 { Outcome::Failed("again".into()) } else { Outcome::Done };
            (d, o)
        })
        .collect();
    q.settle(&outcomes).await.unwrap();
    let (dead, total) = q.dead_letters(10).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!((dead[0].job.message_id, dead[0].job.attempts), (3, 2));
    // Everything acknowledged: the stream trims to empty, the dead letter stays.
    assert_eq!(q.maintain().await.unwrap(), 0);
    assert_eq!(xlen(rc.clone(), jobs_key.clone()).await, 0);
    assert_eq!(q.requeue(None).await.unwrap(), 1);
    assert_eq!(q.maintain().await.unwrap(), 1);
    redis_cleanup(&p).await;
}

/// The dead letters are capped at the queue's bound (MAXLEN is safe there: no group reads
/// them), the oldest dropped first; the gauge reports what is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dead_letters_are_capped_oldest_first() {
    use livechat::notify::queue::{Cursor, Outcome};
    use livechat::notify::Queue;
    let p = notify_key_prefix();
    let link = Arc::new(livechat::redis_link::RedisLink::new(&redis_url()).unwrap());
    // cap 3, one attempt: every failure is a dead letter.
    let q = Queue::redis(link, &p, 3, 1, 10);
    let mut cursor = Cursor::default();
    for round in 0..3 {
        let ids: Vec<i64> = (1..=3).map(|k| round * 3 + k).collect();
        q.enqueue(&ids.iter().copied().map(job).collect::<Vec<_>>(), false).await.unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + RECV_TIMEOUT;
        while got.len() < 3 {
            assert!(Instant::now() < deadline, "jobs never delivered");
            got.extend(q.fetch("c1", 3 - got.len(), Duration::from_millis(100), &mut cursor).await.unwrap());
        }
        let failed: Vec<_> = got.into_iter().map(|d| (d, Outcome::Failed("sink down".into()))).collect();
        q.settle(&failed).await.unwrap();
        q.maintain().await.unwrap();
    }
    let (dead, total) = q.dead_letters(100).await.unwrap();
    assert_eq!(total, 3, "nine failures, three kept");
    let mut kept: Vec<i64> = dead.iter().map(|d| d.job.message_id).collect();
    kept.sort_unstable();
    assert_eq!(kept, vec![7, 8, 9], "the newest are kept");
    redis_cleanup(&p).await;
}
