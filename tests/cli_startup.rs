//! CLI subcommands and start-up behaviour: `token`, `migrate`, `serve` failures
//! (non-zero exit, one clear stderr line, never a panic), `/healthz`, `/readyz`.

mod common;

use common::*;
use serde_json::json;

const SECRET: &str = "cli-test-secret-0123456789";

/// Asserts a failed start: non-zero exit, exactly one non-empty stderr line, no panic, never
/// listening. Returns the line (lower-cased) for content checks.
#[track_caller]
fn assert_clean_failure(out: &CliOutput, what: &str) -> String {
    assert!(!out.status.success(), "{what}: expected a non-zero exit, got {:?}; {out:?}", out.status);
    assert!(!out.stderr.contains("panicked"), "{what}: must not panic; stderr:\n{}", out.stderr);
    assert!(!out.stderr.contains("stack backtrace"), "{what}: no backtrace; stderr:\n{}", out.stderr);
    assert!(!out.stdout.contains("listening on"), "{what}: must not listen; stdout:\n{}", out.stdout);
    let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: expected exactly one stderr line, got:\n{}", out.stderr);
    lines[0].to_lowercase()
}

fn decode(token: &str, secret: &str) -> serde_json::Value {
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.leeway = 0;
    v.set_required_spec_claims(&["exp", "sub"]);
    jsonwebtoken::decode::<serde_json::Value>(token, &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()), &v)
        .unwrap_or_else(|e| panic!("token {token:?} does not verify with the secret: {e}"))
        .claims
}

#[tokio::test]
async fn token_subcommand_prints_hs256_jwt_for_user() {
    let before = now_secs() as i64;
    let out = run_cli(&["token", "--user", "7", "--ttl", "60"], &[("LIVECHAT_JWT_SECRET", SECRET)]).await;
    assert!(out.status.success(), "token failed: {out:?}");
    let token = out.stdout.trim();
    assert_eq!(token.lines().count(), 1, "stdout must be just the token: {:?}", out.stdout);
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token:?}");
    let claims = decode(token, SECRET);
    assert_eq!(claims["sub"], json!("7"), "sub must be the decimal user id string: {claims}");
    let exp = claims["exp"].as_i64().expect("exp is an integer");
    let after = now_secs() as i64;
    assert!(exp >= before + 60 && exp <= after + 61, "exp {exp} must be now+60 ({before}..{after})");

    // A different secret must not verify it (proves it is really signed with ours).
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.set_required_spec_claims(&["exp"]);
    assert!(jsonwebtoken::decode::<serde_json::Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(b"some-other-secret"),
        &v
    )
    .is_err());
}

#[tokio::test]
async fn token_subcommand_without_secret_fails_cleanly() {
    let out = run_cli(&["token", "--user", "7"], &[]).await;
    assert!(!out.status.success(), "token without LIVECHAT_JWT_SECRET must fail: {out:?}");
    assert!(!out.stderr.contains("panicked"), "no panic: {}", out.stderr);
}

#[tokio::test]
async fn token_from_cli_is_accepted_by_the_server() {
    let s = TestServer::start(&[]).await;
    let (uid, _) = s.create_user("cli_tok").await;
    let out =
        run_cli(&["token", "--user", &uid.to_string(), "--ttl", "300"], &[("LIVECHAT_JWT_SECRET", &s.jwt_secret)])
            .await;
    assert!(out.status.success(), "{out:?}");
    let token = out.stdout.trim().to_string();
    let r = s.get_json("/v1/rooms", &token).await;
    assert_eq!(r.status, 200, "CLI token must authenticate REST: {r:?}");
    let mut c = s.ws(&token).await;
    let echo = c.send_and_echo(1, "hello from cli token").await;
    assert_eq!(echo["sender_id"], json!(uid));
}

#[tokio::test]
async fn migrate_applies_schema_and_is_idempotent() {
    let db = TestDb::create().await;
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("LIVECHAT_JWT_SECRET", SECRET),
        ("LIVECHAT_ADMIN_TOKEN", "adm"),
        ("LIVECHAT_LOG", "warn"),
    ];
    let out = run_cli(&["migrate"], &env).await;
    assert!(out.status.success(), "migrate failed: {out:?}");
    let client = db.client().await;
    let cols: Vec<String> = client
        .query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = 'messages'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for c in ["id", "room_id", "seq", "sender_id", "content", "client_msg_id", "created_at", "delivered", "read"] {
        assert!(cols.iter().any(|x| x == c), "messages.{c} missing after migrate; columns: {cols:?}");
    }
    let again = run_cli(&["migrate"], &env).await;
    assert!(again.status.success(), "second migrate must be a no-op success: {again:?}");

    // serve on the migrated DB starts fine and room 1 is `general`.
    let s = TestServer::start_with_db(db, &[]).await;
    assert_eq!(s.get_anon("/healthz").await.status, 200);
    let (_, token) = s.create_user("after_migrate").await;
    let rooms = s.get_json("/v1/rooms", &token).await;
    assert_eq!(rooms.status, 200, "{rooms:?}");
    let general = rooms.body.as_array().unwrap().iter().find(|r| r["id"] == json!(1)).cloned();
    assert_eq!(general.expect("member of room 1")["name"], json!("general"));
}

#[tokio::test]
async fn serve_with_unreachable_database_fails_cleanly() {
    // Port 1 on loopback: connection refused.
    let out = run_cli(
        &["serve"],
        &[
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nope"),
            ("LIVECHAT_LISTEN", "127.0.0.1:0"),
            ("LIVECHAT_JWT_SECRET", SECRET),
            ("LIVECHAT_ADMIN_TOKEN", "adm"),
            ("LIVECHAT_LOG", "warn"),
        ],
    )
    .await;
    let line = assert_clean_failure(&out, "unreachable DB");
    assert!(
        line.contains("database") || line.contains("postgres"),
        "the line must say the database is the problem: {line}"
    );
}

#[tokio::test]
async fn serve_with_malformed_database_url_fails_cleanly() {
    let out = run_cli(
        &["serve"],
        &[
            ("DATABASE_URL", "this is not a url"),
            ("LIVECHAT_LISTEN", "127.0.0.1:0"),
            ("LIVECHAT_JWT_SECRET", SECRET),
            ("LIVECHAT_ADMIN_TOKEN", "adm"),
            ("LIVECHAT_LOG", "warn"),
        ],
    )
    .await;
    let line = assert_clean_failure(&out, "malformed DATABASE_URL");
    assert!(line.contains("database") || line.contains("postgres"), "{line}");
}

#[tokio::test]
async fn serve_on_taken_port_fails_cleanly() {
    let db = TestDb::create().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_cli(
        &["serve"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("LIVECHAT_LISTEN", addr.as_str()),
            ("LIVECHAT_JWT_SECRET", SECRET),
            ("LIVECHAT_ADMIN_TOKEN", "adm"),
            ("LIVECHAT_LOG", "warn"),
        ],
    )
    .await;
    let line = assert_clean_failure(&out, "port taken");
    let port = taken.local_addr().unwrap().port().to_string();
    assert!(line.contains(&port), "the line must name the address/port: {line}");
    drop(taken);
}

#[tokio::test]
async fn serve_with_bad_config_value_fails_cleanly() {
    let db = TestDb::create().await;
    let out = run_cli(
        &["serve"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("LIVECHAT_LISTEN", "127.0.0.1:0"),
            ("LIVECHAT_JWT_SECRET", SECRET),
            ("LIVECHAT_ADMIN_TOKEN", "adm"),
            ("LIVECHAT_LOG", "warn"),
            ("LIVECHAT_LIMITS__MESSAGES_PER_SEC", "abc"),
        ],
    )
    .await;
    let line = assert_clean_failure(&out, "bad config value");
    assert!(line.contains("messages_per_sec"), "the line must name the bad key: {line}");
}

#[tokio::test]
async fn serve_without_jwt_secret_fails_cleanly() {
    let db = TestDb::create().await;
    let out = run_cli(
        &["serve"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("LIVECHAT_LISTEN", "127.0.0.1:0"),
            ("LIVECHAT_ADMIN_TOKEN", "adm"),
            ("LIVECHAT_LOG", "warn"),
        ],
    )
    .await;
    let line = assert_clean_failure(&out, "missing LIVECHAT_JWT_SECRET");
    assert!(line.contains("jwt_secret"), "the line must name LIVECHAT_JWT_SECRET: {line}");
}

#[tokio::test]
async fn serve_dev_refuses_non_loopback_bind() {
    let db = TestDb::create().await;
    let out = run_cli(
        &["serve", "--dev"],
        &[("DATABASE_URL", db.url.as_str()), ("LIVECHAT_LISTEN", "0.0.0.0:0"), ("LIVECHAT_LOG", "warn")],
    )
    .await;
    assert_clean_failure(&out, "--dev on 0.0.0.0");
}

#[tokio::test]
async fn healthz_and_readyz_ok_with_live_db() {
    let s = TestServer::start(&[]).await;
    let h = s.get_anon("/healthz").await;
    assert_eq!(h.status, 200, "{h:?}");
    let r = s.get_anon("/readyz").await;
    assert_eq!(r.status, 200, "/readyz with a live PostgreSQL: {r:?}");
}

#[tokio::test]
async fn serve_prints_listening_line_and_metrics_exposed() {
    let s = TestServer::start(&[]).await;
    // The harness parsed `listening on ADDR`: the address must be the loopback we asked for
    // with a real (non-zero) port.
    assert!(s.addr.ip().is_loopback());
    assert_ne!(s.addr.port(), 0);
    // Some activity so counters exist.
    let (_, token) = s.create_user("metrics_user").await;
    let mut c = s.ws(&token).await;
    c.send_and_echo(1, "count me").await;
    let m = s.get_anon("/metrics").await;
    assert_eq!(m.status, 200, "{m:?}");
    assert!(m.text.contains("livechat_"), "Prometheus text with livechat_ metrics: {}", m.text);
}

#[tokio::test]
async fn token_subcommand_bounds_the_lifetime() {
    for ttl in ["0", "31536001", "18446744073709551615"] {
        let out = run_cli(&["token", "--user", "7", "--ttl", ttl], &[("LIVECHAT_JWT_SECRET", SECRET)]).await;
        assert!(!out.status.success(), "--ttl {ttl} must be refused");
        assert!(out.stderr.contains("ttl_secs must be from 1 to 31536000"), "one clear line: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
}
