//! Client tokens (JWT, HS256) and the admin bearer token.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::util::clock::now_secs;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
}

/// An authenticated client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// User id from `sub`.
    pub user_id: i64,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
}

/// Verifies and issues tokens.
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    admin_token: String,
    leeway: u64,
}

/// Longest token lifetime livechat issues (a year), from the admin API and the CLI alike.
pub const MAX_TTL_SECS: u64 = 365 * 24 * 3600;

/// A token lifetime must be from 1 s to [`MAX_TTL_SECS`].
pub fn check_ttl(ttl_secs: u64) -> Result<(), ApiError> {
    if ttl_secs == 0 || ttl_secs > MAX_TTL_SECS {
        return Err(ApiError::bad_request(format!("ttl_secs must be from 1 to {MAX_TTL_SECS}")));
    }
    Ok(())
}

impl Auth {
    /// Keys from the configured secret and admin token.
    pub fn new(jwt_secret: &str, admin_token: &str, leeway_secs: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway_secs;
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        Self {
            encoding: EncodingKey::from_secret(jwt_secret.as_bytes()),
            decoding: DecodingKey::from_secret(jwt_secret.as_bytes()),
            validation,
            admin_token: admin_token.to_string(),
            leeway: leeway_secs,
        }
    }

    /// Checks a client token.
    pub fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        let data = decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| ApiError::unauthorized(format!("invalid token: {e}")))?;
        let user_id = data
            .claims
            .sub
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| ApiError::unauthorized("token subject is not a user id"))?;
        Ok(Identity { user_id, expires_at: data.claims.exp })
    }

    /// When a token with `exp` stops being accepted (seconds since the epoch).
    pub fn deadline(&self, exp: u64) -> u64 {
        exp.saturating_add(self.leeway)
    }

    /// Signs a token for `user_id` valid for `ttl_secs`; returns it with its `exp`.
    pub fn issue(&self, user_id: i64, ttl_secs: u64) -> Result<(String, u64), ApiError> {
        check_ttl(ttl_secs)?;
        let now = now_secs();
        let exp = now.saturating_add(ttl_secs);
        let claims = Claims { sub: user_id.to_string(), exp, iat: Some(now) };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::new(crate::error::ErrorCode::Internal, format!("cannot sign token: {e}")))?;
        Ok((token, exp))
    }

    /// Constant-time comparison with the admin token.
    pub fn is_admin(&self, token: &str) -> bool {
        let (a, b) = (token.as_bytes(), self.admin_token.as_bytes());
        !self.admin_token.is_empty()
            && a.len() == b.len()
            && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lifetimes_are_bounded() {
        let auth = Auth::new("s", "a", 0);
        assert!(auth.issue(7, 0).is_err());
        assert!(auth.issue(7, MAX_TTL_SECS + 1).is_err());
        assert!(auth.issue(7, u64::MAX).is_err(), "no overflow, a clear error");
        assert!(auth.issue(7, MAX_TTL_SECS).is_ok());
    }

    #[test]
    fn round_trip_and_rejects() {
        let auth = Auth::new("s3cret", "adm", 0);
        let (t, exp) = auth.issue(7, 60).unwrap();
        assert_eq!(auth.verify(&t).unwrap(), Identity { user_id: 7, expires_at: exp });
        assert!(Auth::new("other", "adm", 0).verify(&t).is_err());
        assert!(auth.verify("garbage").is_err());
        let expired = encode(
            &Header::new(Algorithm::HS256),
            &Claims { sub: "7".into(), exp: now_secs() - 10, iat: None },
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert!(auth.verify(&expired).is_err());
        let not_id = encode(
            &Header::new(Algorithm::HS256),
            &Claims { sub: "ann".into(), exp: now_secs() + 10, iat: None },
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert!(auth.verify(&not_id).is_err());
    }

    #[test]
    fn admin_token_compare() {
        let auth = Auth::new("s", "admin-token", 0);
        assert!(auth.is_admin("admin-token"));
        assert!(!auth.is_admin("admin-tokeN"));
        assert!(!auth.is_admin(""));
    }
}
