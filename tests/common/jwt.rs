//! HS256 tokens minted the way the server checks them.

use serde_json::{json, Value};

use super::now_secs;

/// A token for subject `sub` signed with `secret`, `exp` = now + `ttl_secs` (may be negative).
pub fn mint_token(secret: &str, sub: &str, ttl_secs: i64) -> String {
    let exp = now_secs() as i64 + ttl_secs;
    mint_claims(secret, &json!({ "sub": sub, "exp": exp }))
}

/// A token carrying exactly `claims`, signed with `secret`.
pub fn mint_claims(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode jwt")
}
