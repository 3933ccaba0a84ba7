//! Operations (issue 5): Prometheus exposition checked by `promtool`, systemd units checked by
//! `systemd-analyze verify`, SIGHUP reload, readiness during the drain, the OpenAPI document
//! against the live server (schemathesis), alert rules, TLS to PostgreSQL and Redis, `PORT`.
//!
//! External tools come from Debian packages; when one is missing the test installs it through
//! `scripts/services.sh deps` (the same step `scripts/test.sh` runs), so a fresh machine passes
//! without skipping anything.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::process::Command;
use tokio::time::{timeout, Instant};

/// Upper bound for one external tool run (promtool, systemd-analyze, apt-get, schemathesis with
/// its first-time install; each tool also has a budget of its own).
const TOOL_TIMEOUT: Duration = Duration::from_secs(540);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn have(cmd: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file())).unwrap_or(false)
}

/// Makes sure `cmd` is on PATH, installing the project's tool set (`services.sh deps`) if not.
async fn ensure_tool(cmd: &str) {
    if have(cmd) {
        return;
    }
    // Serialise: several tests may want the install at once; apt holds a lock anyway.
    static INSTALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _g = INSTALL.lock().await;
    if have(cmd) {
        return;
    }
    let out = run_tool("bash", &["scripts/services.sh".as_ref(), "deps".as_ref()], None).await;
    assert!(out.0, "installing tools for `{cmd}` failed:\n{}", out.1);
    assert!(have(cmd), "`{cmd}` is still missing after `scripts/services.sh deps`");
}

/// Runs a tool from the repository root, bounded; returns (success, stdout + stderr).
async fn run_tool(cmd: &str, args: &[&std::ffi::OsStr], stdin: Option<&[u8]>) -> (bool, String) {
    let mut c = Command::new(cmd);
    c.args(args).current_dir(repo()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = c.spawn().unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    if let Some(input) = stdin {
        use tokio::io::AsyncWriteExt;
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input).await.expect("write stdin");
        drop(pipe);
    }
    let out = timeout(TOOL_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{cmd} did not finish within {TOOL_TIMEOUT:?}"))
        .expect("wait tool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

// --- 1. metrics ----------------------------------------------------------------------------

/// The `# TYPE` of each metric family in an exposition.
fn types(exposition: &str) -> std::collections::HashMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.trim().to_string()))
        .collect()
}

#[tokio::test]
async fn metrics_under_traffic_pass_promtool() {
    ensure_tool("promtool").await;
    // JSON logs at info, to check below that they hold no secret, token or message content.
    let s =
        TestServer::start(&[("REDIS_URL", &redis_url()), ("LIVECHAT_LOG", "info"), ("LIVECHAT_LOG__FORMAT", "json")])
            .await;
    let (u1, t1) = s.create_user("m1").await;
    let (_u2, t2) = s.create_user("m2").await;
    let room = s.create_room(&t2, "metrics", &[u1]).await;

    // Traffic: messages in two rooms, typing, a receipt, a sync, REST reads, a refused upgrade.
    let mut a = s.ws_ready(&t1).await;
    let mut b = s.ws_ready(&t2).await;
    let mut last = Value::Null;
    for i in 0..20 {
        last = a.send_and_echo(if i % 2 == 0 { 1 } else { room }, &format!("hello {i}")).await;
    }
    a.send_json(json!({"type": "typing", "room_id": room})).await;
    b.send_json(json!({"type": "status_update", "message_id": last["id"], "read": true})).await;
    let mut rooms = serde_json::Map::new();
    rooms.insert("1".into(), json!(0));
    rooms.insert(room.to_string(), json!(0));
    b.send_json(json!({"type": "sync", "rooms": rooms})).await;
    b.recv_type("synced").await;
    assert_eq!(s.history(&t1, 1, 50).await.len(), 10);
    assert_eq!(s.get_json("/v1/rooms", &t1).await.status, 200);
    let refused = WsClient::connect(&s.ws_url("not-a-token")).await;
    assert_eq!(refused.err().and_then(|e| e.status()), Some(401));

    let r = s.get_anon("/metrics").await;
    assert_eq!(r.status, 200, "{r:?}");
    let text = r.text;

    let (ok, out) = run_tool("promtool", &[os("check"), os("metrics")], Some(text.as_bytes())).await;
    assert!(ok, "promtool check metrics failed:\n{out}\n--- scrape ---\n{text}");

    let ty = types(&text);
    for h in ["livechat_ws_delivery_latency_seconds", "livechat_storage_commit_seconds", "livechat_storage_batch_rows"]
    {
        assert_eq!(ty.get(h).map(String::as_str), Some("histogram"), "{h} must be a histogram:\n{text}");
        assert!(text.contains(&format!("{h}_bucket{{le=")), "{h} has no buckets:\n{text}");
    }
    assert!(!ty.values().any(|t| t == "summary"), "no summaries expected:\n{text}");
    for c in [
        "livechat_ws_upgrades_refused_total",
        "livechat_ws_events_in_total",
        "livechat_ws_deliveries_total",
        "livechat_ws_outbound_dropped_frames_total",
        "livechat_ws_slow_consumer_closes_total",
        "livechat_ws_sync_replays_total",
        "livechat_storage_unavailable_total",
        "livechat_bus_fanout_total",
    ] {
        assert_eq!(ty.get(c).map(String::as_str), Some("counter"), "{c} must be a counter:\n{text}");
    }
    for g in [
        "livechat_ws_connections",
        "livechat_storage_queue_depth",
        "livechat_postgres_up",
        "livechat_redis_up",
        "livechat_process_resident_memory_bytes",
        "livechat_process_open_fds",
    ] {
        assert_eq!(ty.get(g).map(String::as_str), Some("gauge"), "{g} must be a gauge:\n{text}");
    }
    let value = |line_prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sample {line_prefix}:\n{text}"))
    };
    assert_eq!(value("livechat_ws_connections "), 2.0);
    assert_eq!(value("livechat_postgres_up "), 1.0);
    assert_eq!(value("livechat_redis_up "), 1.0);
    assert_eq!(value("livechat_ws_events_in_total{type=\"message\"}"), 20.0);
    assert_eq!(value("livechat_ws_upgrades_refused_total{reason=\"unauthorized\"}"), 1.0);
    assert!(value("livechat_ws_delivery_latency_seconds_count ") >= 1.0);
    assert!(value("livechat_process_resident_memory_bytes ") > 1e6);
    assert!(value("livechat_process_open_fds ") > 5.0);
    // Label values are bounded: never a user or room id.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(!l.contains("user=") && !l.contains("room="), "unbounded label in {l}");
    }

    // Logs: one JSON object per line, fields first; nothing secret or private in them.
    let log = s.stderr();
    assert!(log.contains("Listening."), "info lines expected:\n{log}");
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["fields"]["message"].is_string(), "{line}");
        for secret in [s.jwt_secret.as_str(), s.admin_token.as_str(), t1.as_str(), t2.as_str(), "hello 1"] {
            assert!(!line.contains(secret), "the log holds a secret or message content: {line}");
        }
    }
}

// --- a `livechat serve` started by hand (for env the harness always sets) -----------------

/// A `livechat serve` with exactly `env` (no LIVECHAT_LOG / LIVECHAT_LISTEN unless given).
struct Proc {
    child: tokio::process::Child,
    /// The address from `listening on …`.
    addr: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Proc {
    async fn spawn(env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(bin_path());
        cmd.arg("serve");
        scrub_env(&mut cmd);
        cmd.env_remove("PORT").env_remove("NOTIFY_SOCKET");
        cmd.envs(env.iter().copied());
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn livechat serve");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        drain_stderr(child.stderr.take().expect("stderr"), stderr.clone());
        let listening = watch_listening(child.stdout.take().expect("stdout"));
        let Ok(Ok(addr)) = timeout(START_TIMEOUT, listening).await else {
            let _ = child.start_kill();
            tokio::time::sleep(Duration::from_millis(200)).await;
            panic!("livechat serve did not start; stderr:\n{}", stderr.lock().unwrap());
        };
        Proc { child, addr, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running") as i32;
        assert!(send_signal(pid, sig), "kill(SIG{sig})");
    }

    /// Waits until stderr contains `needle`.
    async fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + RECV_TIMEOUT;
        while !self.stderr().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in the log within {RECV_TIMEOUT:?}:\n{}", self.stderr());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The base env of a hand-started server on `db`.
fn base_env(db: &TestDb) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", db.url.clone()),
        ("LIVECHAT_JWT_SECRET", "ops-test-secret".into()),
        ("LIVECHAT_ADMIN_TOKEN", "ops-admin".into()),
    ]
}

fn env_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

// --- 3. SIGHUP reload ------------------------------------------------------------------------

#[tokio::test]
async fn sighup_reloads_log_filter_and_limits() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("livechat.toml");
    let write_conf = |level: &str, per_user: u32| {
        let text = format!("[log]\nlevel = \"{level}\"\n\n[limits]\nconnections_per_user = {per_user}\n");
        std::fs::write(&conf, text).expect("write config");
    };
    write_conf("warn", 1);
    let mut env = base_env(&db);
    env.push(("LIVECHAT_LISTEN", "127.0.0.1:0".into()));
    env.push(("LIVECHAT_CONFIG", conf.to_string_lossy().into_owned()));
    let p = Proc::spawn(&env_refs(&env)).await;
    assert!(!p.stderr().contains("Listening."), "info lines must be filtered at warn:\n{}", p.stderr());

    let token = mint_token("ops-test-secret", "1", 600);
    // User 1 does not exist yet: create it through the admin API.
    let http = reqwest::Client::builder().no_proxy().timeout(RECV_TIMEOUT).build().unwrap();
    let r = http
        .post(format!("http://{}/v1/users", p.addr))
        .bearer_auth("ops-admin")
        .json(&json!({"username": "hup"}))
        .send()
        .await
        .expect("create user");
    assert_eq!(r.status(), 201);
    let url = format!("ws://{}/ws/chat?token={token}", p.addr);
    let _first = WsClient::connect(&url).await.expect("first connection");
    let second = WsClient::connect(&url).await;
    assert_eq!(second.err().and_then(|e| e.status()), Some(429), "connections_per_user = 1 at start");

    write_conf("info", 3);
    p.signal("HUP");
    // Logged at info: visible only because the new filter is in force.
    p.wait_log("Reloaded configuration.").await;
    let _second = WsClient::connect(&url).await.expect("second connection after the reload (limit 3)");
    let _third = WsClient::connect(&url).await.expect("third connection after the reload (limit 3)");
    let fourth = WsClient::connect(&url).await;
    assert_eq!(fourth.err().and_then(|e| e.status()), Some(429), "connections_per_user = 3 after the reload");

    // A broken file is refused as a whole; the process keeps running with what it had.
    std::fs::write(&conf, "[limits]\nconnections_per_user = \"many\"\n").unwrap();
    p.signal("HUP");
    p.wait_log("Reload refused").await;
    let r = http.get(format!("http://{}/healthz", p.addr)).send().await.expect("healthz");
    assert_eq!(r.status(), 200);
}

// --- 4. readiness during the drain ------------------------------------------------------------

#[tokio::test]
async fn readyz_turns_503_on_sigterm_before_sockets_close() {
    let mut s = TestServer::start(&[
        ("LIVECHAT_SERVER__DRAIN_SECS", "10"),
        ("LIVECHAT_SERVER__ACCEPT_GRACE_SECS", "3"),
        ("LIVECHAT_LOG", "info"),
    ])
    .await;
    let (_, t) = s.create_user("drain").await;
    let mut c = s.ws_ready(&t).await;
    assert_eq!(s.get_anon("/readyz").await.status, 200);

    let t0 = Instant::now();
    s.sigterm();
    // The first /readyz after the signal: 503 naming the drain, while the socket is still open.
    let deadline = t0 + Duration::from_secs(2);
    let r = loop {
        let r = s.get_anon("/readyz").await;
        if r.status == 503 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.text.contains("draining"), "{r:?}");
    assert_eq!(c.next_event_within(Duration::from_millis(200)).await, WsEvent::Timeout, "socket still open");
    // New clients go elsewhere meanwhile.
    let refused = WsClient::connect(&s.ws_url(&t)).await;
    assert_eq!(refused.err().and_then(|e| e.status()), Some(503));

    // Then, after the grace, the socket closes 1001 and the process exits 0.
    assert_eq!(c.expect_close_within(Duration::from_secs(10)).await, Some(1001));
    let closed_after = t0.elapsed();
    assert!(closed_after >= Duration::from_millis(2500), "sockets closed {closed_after:?} after SIGTERM");
    let st = s.wait_exit(Duration::from_secs(10)).await;
    assert!(st.success(), "{st:?}");
    // The exit can overtake the task that drains the server's stderr: wait for its last line.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.stderr().contains("Stopped.") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = s.stderr();
    let (drain, stopped) = (log.find("Draining."), log.find("Stopped."));
    assert!(drain.is_some() && drain < stopped, "log order:\n{log}");
}

// --- 2. systemd ------------------------------------------------------------------------------

#[tokio::test]
async fn systemd_units_verify() {
    ensure_tool("systemd-analyze").await;
    // verify insists that ExecStart's binary exists: point copies of the units at the built one.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut units = Vec::new();
    for name in ["livechat.service", "livechat-worker.service"] {
        let text = std::fs::read_to_string(repo().join("systemd").join(name)).expect("read unit");
        assert!(text.contains("ExecStart=/usr/local/bin/livechat "), "{name}: ExecStart");
        for must in [
            "Type=notify",
            "WatchdogSec=",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "ProtectHome=yes",
            "CapabilityBoundingSet=\n",
            "Restart=on-failure",
            "EnvironmentFile=/etc/livechat/livechat.env",
            "User=livechat",
        ] {
            assert!(text.contains(must), "{name} lacks {must:?}");
        }
        let path = dir.path().join(name);
        std::fs::write(&path, text.replace("/usr/local/bin/livechat", bin_path())).expect("write unit");
        units.push(path);
    }
    let main = std::fs::read_to_string(repo().join("systemd/livechat.service")).unwrap();
    let nofile: u64 = main
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .and_then(|v| v.trim().parse().ok())
        .expect("LimitNOFILE in livechat.service");
    assert!(nofile >= 100_000 + 1024, "LimitNOFILE={nofile} is too low for 100k sockets");
    let stop: u64 = main
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim().trim_end_matches('s').parse().ok())
        .expect("TimeoutStopSec");
    assert!(stop > livechat::config::Config::default().server.drain_secs, "TimeoutStopSec must exceed drain_secs");

    let mut args = vec![os("verify")];
    args.extend(units.iter().map(|p| p.as_os_str()));
    let (ok, out) = run_tool("systemd-analyze", &args, None).await;
    assert!(ok, "systemd-analyze verify failed:\n{out}");
    // Clean: nothing said about our units (it may print unrelated notes about the host).
    let dir_s = dir.path().to_string_lossy().into_owned();
    let ours: Vec<&str> = out.lines().filter(|l| l.contains(&dir_s) || l.contains("livechat")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify warnings:\n{}", ours.join("\n"));
}

/// One datagram from livechat on the `NOTIFY_SOCKET`.
async fn recv_notification(sock: &tokio::net::UnixDatagram, what: &str) -> String {
    let mut buf = vec![0u8; 4096];
    let n = timeout(RECV_TIMEOUT, sock.recv(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no {what} notification"))
        .expect("recv notification");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn sd_notify_ready_watchdog_reload_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).expect("bind notify socket");
    let mut s = TestServer::start(&[
        ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
        // 400 ms: livechat pings every 200 ms.
        ("WATCHDOG_USEC", "400000"),
    ])
    .await;
    let recv = |what: &'static str| recv_notification(&sock, what);
    let first = recv("READY").await;
    assert!(first.contains("READY=1"), "first notification: {first:?}");
    let ping = recv("WATCHDOG").await;
    assert!(ping.contains("WATCHDOG=1"), "{ping:?}");

    s.signal("HUP");
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m.contains("READY=1")) {
        seen.push(recv("RELOADING/READY").await);
    }
    assert!(seen.iter().any(|m| m.contains("RELOADING=1")), "{seen:?}");

    s.sigterm();
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m.contains("STOPPING=1")) {
        seen.push(recv("STOPPING").await);
    }
    assert!(s.wait_exit(Duration::from_secs(15)).await.success());
}

// --- 7. PORT (Heroku) ------------------------------------------------------------------------

#[tokio::test]
async fn port_env_listens_on_every_interface() {
    let db = TestDb::create().await;
    let port = free_port();
    let mut env = base_env(&db);
    env.push(("PORT", port.to_string()));
    let p = Proc::spawn(&env_refs(&env)).await;
    assert_eq!(p.addr, format!("0.0.0.0:{port}"));
    let r = reqwest::Client::builder()
        .no_proxy()
        .timeout(RECV_TIMEOUT)
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .expect("healthz over PORT");
    assert_eq!(r.status(), 200);
    drop(p);

    // LIVECHAT_LISTEN wins over PORT.
    let listen = format!("127.0.0.1:{}", free_port());
    env.push(("LIVECHAT_LISTEN", listen.clone()));
    let p = Proc::spawn(&env_refs(&env)).await;
    assert_eq!(p.addr, listen);
}

#[test]
fn procfile_runs_serve_and_worker() {
    let text = std::fs::read_to_string(repo().join("Procfile")).expect("Procfile");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).collect();
    assert!(lines.contains(&"web: livechat serve"), "{text}");
    assert!(lines.contains(&"worker: livechat worker"), "{text}");
}

// --- 7. TLS to PostgreSQL and Redis -----------------------------------------------------------

/// A throwaway CA and a server certificate it signs for `localhost` / `127.0.0.1`.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    async fn new() -> Certs {
        ensure_tool("openssl").await;
        let dir = tempfile::Builder::new().prefix("lc-tls-").tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let steps: Vec<Vec<&str>> = vec![
            [&["req", "-x509"][..], &ec[..], &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2"]].concat(),
            [&["req"][..], &ec[..], &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]]
                .concat(),
            vec![
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
            // A second CA that signed nothing: trusting it must fail verification.
            [&["req", "-x509"][..], &ec[..], &["-keyout", "other.key", "-out", "other.crt", "-days", "2"]].concat(),
        ];
        for (i, mut args) in steps.into_iter().enumerate() {
            if args[0] == "req" && args[1] == "-x509" {
                let subj = if i == 0 { "/CN=livechat test CA" } else { "/CN=unrelated CA" };
                args.extend(["-subj", subj, "-addext", "basicConstraints=critical,CA:TRUE"]);
            }
            let out = std::process::Command::new("openssl").args(&args).current_dir(d).output().expect("openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Certs { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// Lets the `postgres` OS user (PostgreSQL refuses to run as root) read the server key.
    fn give_to_postgres(&self) {
        if !is_root() {
            return;
        }
        for p in [self.dir.path().to_path_buf(), self.dir.path().join("server.key"), self.dir.path().join("server.crt")]
        {
            chown_to_postgres(&p);
        }
    }
}

/// `redis-server` with only a TLS port, killed on drop.
struct TlsRedis {
    _child: tokio::process::Child,
    port: u16,
}

impl TlsRedis {
    async fn start(certs: &Certs) -> TlsRedis {
        let port = free_port();
        let (port_s, crt, key, ca) =
            (port.to_string(), certs.path("server.crt"), certs.path("server.key"), certs.path("ca.crt"));
        let args = [
            "--port",
            "0",
            "--tls-port",
            &port_s,
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            &crt,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ];
        TlsRedis { _child: spawn_redis_server(&args, port).await, port }
    }
}

#[tokio::test]
async fn tls_to_postgres_and_redis_with_a_private_ca() {
    let certs = Certs::new().await;
    certs.give_to_postgres();
    let pg = PrivatePg::start_new().await;
    let admin = pg_connect(&pg.admin_url()).await;
    // ssl is reloadable (PostgreSQL >= 10): no restart needed.
    // One statement each: ALTER SYSTEM refuses to run inside a (multi-statement) transaction.
    for sql in [
        format!("ALTER SYSTEM SET ssl_cert_file = '{}'", certs.path("server.crt")),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", certs.path("server.key")),
        "ALTER SYSTEM SET ssl = on".to_string(),
    ] {
        bounded("enable ssl", admin.batch_execute(&sql)).await.expect("ALTER SYSTEM");
    }
    bounded("reload", admin.batch_execute("SELECT pg_reload_conf()")).await.expect("reload");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = bounded("show ssl", admin.query_one("SHOW ssl", &[])).await.expect("SHOW ssl");
        if row.get::<_, String>(0) == "on" {
            break;
        }
        assert!(Instant::now() < deadline, "PostgreSQL did not turn ssl on");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let db = TestDb::create_on(&pg.admin_url()).await;
    let redis = TlsRedis::start(&certs).await;

    // Wrong trust anchor: refused, in one line, before anything listens.
    let out = run_cli(
        &["migrate"],
        &[
            ("DATABASE_URL", &format!("{}?sslmode=verify-full", db.url)),
            ("LIVECHAT_DATABASE__CA_FILE", &certs.path("other.crt")),
        ],
    )
    .await;
    assert!(!out.status.success(), "verify-full with an unrelated CA must fail: {out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");
    // sslmode=require encrypts without checking the certificate (libpq's meaning).
    let out = run_cli(&["migrate"], &[("DATABASE_URL", &format!("{}?sslmode=require", db.url))]).await;
    assert!(out.status.success(), "sslmode=require: {out:?}");

    // verify-full against the CA, for PostgreSQL and Redis.
    let url = format!("{}?sslmode=verify-full", db.url);
    let s = TestServer::start_with_url(
        &url,
        &[
            ("LIVECHAT_DATABASE__CA_FILE", &certs.path("ca.crt")),
            ("REDIS_URL", &format!("rediss://127.0.0.1:{}", redis.port)),
            ("LIVECHAT_REDIS__CA_FILE", &certs.path("ca.crt")),
        ],
    )
    .await;
    let r = s.get_anon("/readyz").await;
    assert_eq!(r.status, 200, "{r:?}\n{}", s.stderr());
    assert_eq!(r.body["postgres"], "up");
    assert_eq!(r.body["redis"], "up", "{r:?}");
    let (_, t) = s.create_user("tls").await;
    let mut c = s.ws_ready(&t).await;
    c.send_and_echo(1, "over TLS").await;

    // Every livechat connection to PostgreSQL is encrypted.
    let rows = bounded(
        "pg_stat_ssl",
        admin.query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'livechat'",
            &[],
        ),
    )
    .await
    .expect("pg_stat_ssl");
    assert!(!rows.is_empty(), "no livechat connection seen");
    assert!(rows.iter().all(|r| r.get::<_, bool>(0)), "a livechat connection without TLS");

    // Redis refuses a plain-text client on the TLS port: livechat must have spoken TLS.
    let plain = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port)).unwrap();
    let plain_ok = timeout(Duration::from_secs(3), async {
        let mut c = plain.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING").query_async::<String>(&mut c).await.ok()
    })
    .await
    .ok()
    .flatten();
    assert!(plain_ok.is_none(), "the Redis TLS port answered plain text");
    drop(s);
    drop(db);
}

// --- 5. OpenAPI ------------------------------------------------------------------------------

#[tokio::test]
async fn openapi_document_is_served_and_valid_json() {
    let s = TestServer::start(&[]).await;
    let r = s.get_anon("/openapi.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    let on_disk: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("docs/openapi.json")).unwrap()).unwrap();
    assert_eq!(r.body, on_disk, "the served document is docs/openapi.json");
    assert_eq!(r.body["openapi"], "3.1.0");
    // Every REST route the server serves.
    for path in [
        "/chat/history",
        "/v1/users",
        "/v1/tokens",
        "/v1/rooms",
        "/v1/rooms/{id}/members",
        "/v1/rooms/{id}/members/{user_id}",
        "/v1/rooms/{id}/events",
        "/v1/messages/{id}",
        "/v1/unread",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(r.body["paths"][path].is_object(), "{path} is not in the document");
    }
}

/// schemathesis against the live server, once with a user token and once with the admin token:
/// no 5xx, and every status code, content type, header and body as the document says.
#[tokio::test]
async fn schemathesis_finds_no_5xx_and_no_contract_violation() {
    let s = TestServer::start(&[]).await;
    // Data for the generated requests to hit: users, a room with members, messages.
    let (u1, t1) = s.create_user("st-owner").await;
    let (u2, _t2) = s.create_user("st-member").await;
    let room = s.create_room(&t1, "st-room", &[u2]).await;
    let mut c = s.ws_ready(&t1).await;
    for i in 0..5 {
        c.send_and_echo(if i % 2 == 0 { 1 } else { room }, &format!("st {i}")).await;
    }
    let base = s.url("");
    for (who, token) in [("user", t1.as_str()), ("admin", s.admin_token.as_str())] {
        let (ok, out) = timeout(
            Duration::from_secs(600),
            run_tool("bash", &[os("scripts/schemathesis.sh"), os(&base), os(token)], None),
        )
        .await
        .unwrap_or_else(|_| panic!("schemathesis ({who}) did not finish in 600 s"));
        assert!(
            ok,
            "schemathesis with the {who} token (user {u1}) failed:\n{out}\n--- server stderr ---\n{}",
            s.stderr()
        );
    }
}

// --- 6. Prometheus configuration from the deployment guide ------------------------------------

#[tokio::test]
async fn prometheus_config_and_alert_rules_pass_promtool() {
    ensure_tool("promtool").await;
    let dir = repo().join("docs/prometheus");
    let (ok, out) =
        run_tool("promtool", &[os("check"), os("rules"), dir.join("livechat-alerts.yml").as_os_str()], None).await;
    assert!(ok, "promtool check rules:\n{out}");
    // `check config` also checks the rule files it names (relative to the config).
    let (ok, out) =
        run_tool("promtool", &[os("check"), os("config"), dir.join("prometheus.yml").as_os_str()], None).await;
    assert!(ok, "promtool check config:\n{out}");
    // Every metric the rules use is one livechat exports (or Prometheus' own `up`).
    let rules = std::fs::read_to_string(dir.join("livechat-alerts.yml")).unwrap();
    let telemetry = std::fs::read_to_string(repo().join("src/telemetry/names.rs")).unwrap();
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if let Some(base) = word.strip_prefix("livechat_") {
            let family = ["_bucket", "_count", "_sum"].iter().fold(word, |w, s| w.strip_suffix(s).unwrap_or(w));
            assert!(telemetry.contains(&format!("\"{family}\"")), "alert rule uses unknown metric {word} ({base})");
        }
    }
}
