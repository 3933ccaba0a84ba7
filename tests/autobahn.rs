//! RFC 6455 conformance: the Autobahn TestSuite fuzzing client against the real server.
//!
//! Starts `livechat serve` (real binary, fresh database on `LIVECHAT_TEST_PG_URL`) with the
//! conformance echo endpoint `/ws/echo` enabled — the same connection layer as `/ws/chat`,
//! echoing every text/binary message — then runs `scripts/autobahn.sh <port>`, which installs
//! the fuzzing client under `.data/autobahn/` if missing (kosoku on python3, else the classic
//! autobahntestsuite on python 2.7), runs every case except 12.* / 13.* (permessage-deflate,
//! not negotiated) and fails listing each case whose behavior or behaviorClose is not OK,
//! NON-STRICT or INFORMATIONAL.
//!
//! The whole suite (301 cases, 9.* included: 16 MiB messages, 1M small frames) runs in debug
//! builds too, in about 15 s (dependencies are built with opt-level 2, Cargo.toml); the first
//! run adds the client's install (a few seconds with PyPI reachable).
//! Reports land in `.data/autobahn/reports/<time>-<pid>/` (index.json, per-case JSON and HTML).
//!
//! `LIVECHAT_SKIP_AUTOBAHN=1` skips this test (says so on stderr) for offline runs.

mod common;

use std::os::unix::process::CommandExt as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::TestServer;

/// Bound for the whole fuzzing run, install included.
const RUN_TIMEOUT: Duration = Duration::from_secs(15 * 60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_fuzzingclient_all_cases_pass() {
    if std::env::var_os("LIVECHAT_SKIP_AUTOBAHN").is_some_and(|v| !v.is_empty() && v != "0") {
        eprintln!("autobahn: SKIPPED (LIVECHAT_SKIP_AUTOBAHN is set)");
        return;
    }

    let server = TestServer::start(&[
        ("LIVECHAT_SERVER__CONFORMANCE_ECHO", "true"),
        // 9.* send messages up to 16 MiB and up to 1M frames in a row.
        ("LIVECHAT_LIMITS__FRAME_MAX_BYTES", "20000000"),
        ("LIVECHAT_LIMITS__OUTBOUND_QUEUE_FRAMES", "100000"),
    ])
    .await;
    let port = server.addr.port();

    let root = env!("CARGO_MANIFEST_DIR");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(format!("{root}/scripts/autobahn.sh"))
        .arg(port.to_string())
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group: on timeout the runner (a grandchild) is killed with the script.
        .process_group(0);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let child = cmd.spawn().expect("spawn bash scripts/autobahn.sh");
    let pid = child.id().expect("autobahn.sh pid") as i32;

    let started = Instant::now();
    let out = match tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => out.expect("wait for scripts/autobahn.sh"),
        Err(_) => {
            // The whole process group this test created.
            common::send_signal(-pid, "KILL");
            panic!("scripts/autobahn.sh did not finish within {RUN_TIMEOUT:?} (killed)");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // (On a panic, TestServer's Drop prints the server's stderr tail.)
    assert!(
        out.status.success(),
        "Autobahn conformance failed ({}) after {:?}:\n--- autobahn.sh stderr ---\n{stderr}\n--- autobahn.sh stdout ---\n{stdout}",
        out.status,
        started.elapsed(),
    );
    assert!(stdout.contains("cases OK / NON-STRICT / INFORMATIONAL"), "unexpected output:\n{stdout}");
    println!("scripts/autobahn.sh ({:?}):\n{stderr}{stdout}", started.elapsed());
}
