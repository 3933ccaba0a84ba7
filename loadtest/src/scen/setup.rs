//! Setup shared by the scenarios: the target, users, tokens, and the skeleton of a plan.

use crate::clock::{now_secs, now_us};
use crate::http::Api;
use crate::worker::{ConnSpec, Mode, Plan};
use crate::Common;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::net::SocketAddr;

/// Lifetime of the user tokens, seconds.
const TOKEN_TTL_SECS: u64 = 86400;

/// `--rates` as numbers (entries that do not parse are skipped).
pub(super) fn parse_rates(s: &str) -> Vec<f64> {
    s.split(',').filter_map(|x| x.trim().parse().ok()).collect()
}

/// The `--url` address; refuses anything but loopback.
pub(super) fn target(c: &Common) -> Result<SocketAddr> {
    let a: SocketAddr = c
        .url
        .trim_start_matches("http://")
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .parse()
        .context("--url host:port")?;
    if !a.ip().is_loopback() {
        bail!("refusing non-loopback target {a}: this harness only targets 127.0.0.0/8");
    }
    Ok(a)
}

/// The admin API of the target.
pub(super) fn api(c: &Common) -> Result<Api> {
    Ok(Api { target: target(c)?, admin_token: c.admin_token.clone() })
}

/// A prefix for user and room names that is unique to this run.
pub(super) fn run_prefix() -> String {
    format!("lt{}_{}_", now_us() % 100_000_000, std::process::id())
}

/// The upgrade path of an authenticated connection.
pub(super) fn ws_path(token: &str) -> String {
    format!("/ws/chat?token={token}")
}

/// The upgrade path of a reconnecting client that wants replay-then-live order: the server holds
/// its live events until its first `sync` is answered.
pub(crate) fn resume_path(token: &str) -> String {
    format!("/ws/chat?token={token}&resume=1")
}

/// Creates `n` users (the legacy app has none: ids 1..=n).
pub(super) async fn make_users(c: &Common, n: usize) -> Result<Vec<u64>> {
    if c.legacy && !c.legacy_auth {
        return Ok((1..=n as u64).collect());
    }
    let api = api(c)?;
    let t = std::time::Instant::now();
    let v = api.create_users(&run_prefix(), n, c.setup_concurrency).await?;
    eprintln!("setup: {n} users in {:.1}s", t.elapsed().as_secs_f64());
    Ok(v)
}

#[derive(Serialize)]
struct Claims {
    sub: String,
    exp: u64,
    iat: u64,
}

/// One token per user: minted locally with `--jwt-secret`, else from `POST /v1/tokens`
/// (empty strings for the token-less legacy format).
pub(super) async fn make_tokens(c: &Common, users: &[u64]) -> Result<Vec<String>> {
    if c.legacy && !c.legacy_auth {
        return Ok(vec![String::new(); users.len()]);
    }
    let now = now_secs();
    if let Some(sec) = &c.jwt_secret {
        let key = jsonwebtoken::EncodingKey::from_secret(sec.as_bytes());
        let h = jsonwebtoken::Header::default();
        return users
            .iter()
            .map(|u| {
                let claims = Claims { sub: u.to_string(), exp: now + TOKEN_TTL_SECS, iat: now };
                Ok(jsonwebtoken::encode(&h, &claims, &key)?)
            })
            .collect();
    }
    api(c)?.tokens(users, TOKEN_TTL_SECS, c.setup_concurrency).await
}

/// A plan without connections or steps, with the common options applied.
pub(super) fn base_plan(c: &Common, mode: Mode) -> Result<Plan> {
    Ok(Plan {
        mode,
        target: target(c)?.to_string(),
        legacy: c.legacy,
        legacy_auth: c.legacy_auth,
        conns: vec![],
        steps: vec![],
        step_secs: 0.0,
        size: 64,
        window: 0,
        drain_secs: 5.0,
        concurrency: c.connect_concurrency,
        n_senders: 0,
    })
}

/// `conns` connections that only listen, spread over `users` users (0 = one user each).
pub(super) async fn listen_only_plan(c: &Common, mode: Mode, conns: usize, users: usize) -> Result<Plan> {
    let nu = if users == 0 { conns } else { users.min(conns) };
    let users = make_users(c, nu).await?;
    let tokens = make_tokens(c, &users).await?;
    let mut plan = base_plan(c, mode)?;
    for i in 0..conns {
        plan.conns.push(ConnSpec { token: tokens[i % nu].clone(), user: users[i % nu], send_room: 0, fanout: 0 });
    }
    plan.steps = vec![0.0];
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rates("100, 300,x,1e3"), [100.0, 300.0, 1000.0]);
        assert!(parse_rates("").is_empty());
    }
}
