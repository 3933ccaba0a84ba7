//! One-shot runs of the `livechat` CLI.

use std::process::{ExitStatus, Stdio};

use tokio::process::Command;
use tokio::time::timeout;

use super::{bin_path, scrub_env, CLI_TIMEOUT};

/// Output of a finished CLI run.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Run `livechat <args>` to completion (bounded by [`CLI_TIMEOUT`]) with exactly the given
/// LIVECHAT_* / DATABASE_URL / REDIS_URL variables (inherited ones are removed).
pub async fn run_cli(args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let mut cmd = Command::new(bin_path());
    cmd.args(args);
    scrub_env(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let child = cmd.spawn().expect("spawn livechat");
    let out = match timeout(CLI_TIMEOUT, child.wait_with_output()).await {
        Ok(r) => r.expect("wait livechat"),
        Err(_) => panic!("`livechat {}` did not exit within {CLI_TIMEOUT:?}", args.join(" ")),
    };
    CliOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
