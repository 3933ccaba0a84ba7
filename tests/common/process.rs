//! Child-process plumbing shared by every way a test runs `livechat`: the binary, a clean
//! environment, signals, and reading a server's output.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{ChildStderr, ChildStdout, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub fn bin_path() -> &'static str {
    env!("CARGO_BIN_EXE_livechat")
}

/// Removes the inherited LIVECHAT_* / DATABASE_URL / REDIS_URL variables and any HTTP proxy
/// from `cmd`, so a child sees only what the test sets; turns on backtraces.
pub fn scrub_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str() {
            if k.starts_with("LIVECHAT_") || k == "DATABASE_URL" || k == "REDIS_URL" {
                cmd.env_remove(k);
            }
        }
    }
    // Never route test traffic through a proxy.
    cmd.env_remove("http_proxy").env_remove("HTTP_PROXY").env_remove("all_proxy");
    cmd.env("RUST_BACKTRACE", "1");
}

/// Sends the signal named `sig` (`"TERM"`, `"KILL"`, `"HUP"`, ...) to `pid` (a negative `pid`:
/// to that process group) with the `kill` command, as the package forbids `unsafe` code (no
/// `libc::kill`). True once the signal is sent.
pub fn send_signal(pid: i32, sig: &str) -> bool {
    std::process::Command::new("kill")
        .args(["-s", sig, "--", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success())
}

/// Drains a child's stderr into `buf` until it closes, one line at a time; past 256 KiB only
/// the last 128 KiB are kept.
pub fn drain_stderr(pipe: ChildStderr, buf: Arc<Mutex<String>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut b = buf.lock().unwrap();
            b.push_str(&line);
            b.push('\n');
            if b.len() > 256 * 1024 {
                let cut = b.len() - 128 * 1024;
                let cut = (cut..b.len()).find(|i| b.is_char_boundary(*i)).unwrap_or(cut);
                b.drain(..cut);
            }
        }
    })
}

/// Reads a server's stdout: the receiver gets the address of its `listening on <addr>` line
/// (an error if stdout closes first); the rest is drained so the server never blocks on a full
/// pipe.
pub fn watch_listening(pipe: ChildStdout) -> oneshot::Receiver<String> {
    let (tx, rx) = oneshot::channel::<String>();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.trim().strip_prefix("listening on ") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(rest.trim().to_string());
                }
            }
        }
    });
    rx
}
