//! Sinks: webhook (signed JSON POST), e-mail (SMTP via lettre) and log.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Serialize;
use thiserror::Error;

use super::{Job, NotifyError, SinkKind};
use crate::config::NotifyConfig;
use crate::store::Store;

/// The header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Livechat-Signature";

/// Why one delivery failed (the job is retried).
#[derive(Debug, Error)]
pub enum SinkError {
    /// The job's sink is not configured on this process.
    #[error("the {0} sink is not configured on this worker")]
    NotConfigured(&'static str),
    /// No response within the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Connection or protocol failure.
    #[error("{0}")]
    Transport(String),
    /// The receiver answered, but not 2xx.
    #[error("receiver answered HTTP {0}")]
    Status(u16),
    /// The recipient's address could not be read.
    #[error("cannot look up the recipient: {0}")]
    Store(#[from] crate::error::StoreError),
}

/// The webhook body (README, "Notifications"): exactly these fields, in this order.
#[derive(Serialize)]
struct WebhookBody<'a> {
    job_id: &'a str,
    user_id: i64,
    room_id: i64,
    message_id: i64,
    sender_id: i64,
    preview: &'a str,
    created_at: &'a str,
    /// Present (true) only when the message mentions the recipient (README "Room events").
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    mention: bool,
}

/// `sha256=<hex HMAC-SHA256 of body under secret>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length; the error arm cannot happen.
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else { return String::new() };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

struct Webhook {
    url: reqwest::Url,
    secret: Option<Vec<u8>>,
    client: reqwest::Client,
    timeout: Duration,
}

struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: lettre::message::Mailbox,
    timeout: Duration,
}

/// The sinks configured for this process.
pub struct Sinks {
    webhook: Option<Webhook>,
    mailer: Option<Mailer>,
    log: bool,
    /// Users' e-mail addresses are read at delivery time, so they never sit in Redis and a
    /// changed address is honoured by retries.
    store: Option<Store>,
}

impl Sinks {
    /// Builds the configured sinks; a bad URL or address is a start-up error.
    pub fn new(n: &NotifyConfig, store: Option<Store>) -> Result<Self, NotifyError> {
        let webhook = match n.webhook_url.as_deref().filter(|u| !u.is_empty()) {
            None => None,
            Some(url) => {
                let url = reqwest::Url::parse(url)
                    .map_err(|e| NotifyError::Setup(format!("notify.webhook_url {url:?} is not a URL: {e}")))?;
                let timeout = Duration::from_millis(n.webhook_timeout_ms);
                let client = reqwest::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    // A redirect is not a 2xx: retried, never followed to an unsigned target.
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("livechat/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| NotifyError::Setup(format!("cannot set up the webhook client: {e}")))?;
                let secret = n.webhook_secret.as_ref().filter(|s| !s.is_empty()).map(|s| s.as_bytes().to_vec());
                Some(Webhook { url, secret, client, timeout })
            }
        };
        let mailer = match n.smtp_url.as_deref().filter(|u| !u.is_empty()) {
            None => None,
            Some(url) => {
                let timeout = Duration::from_millis(n.smtp_timeout_ms);
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| {
                        NotifyError::Setup(format!(
                            "LIVECHAT_SMTP_URL is not a valid smtp:// or smtps:// URL ({}): {e}",
                            crate::config::redact_url(url)
                        ))
                    })?
                    .timeout(Some(timeout))
                    .build();
                let from = n.smtp_from.parse().map_err(|e| {
                    NotifyError::Setup(format!("notify.smtp_from {:?} is not an address: {e}", n.smtp_from))
                })?;
                Some(Mailer { transport, from, timeout })
            }
        };
        Ok(Self { webhook, mailer, log: n.log_sink, store })
    }

    /// Delivers one job through its sink.
    pub async fn deliver(&self, job: &Job) -> Result<(), SinkError> {
        match job.sink {
            SinkKind::Webhook => self.webhook(job).await,
            SinkKind::Email => self.email(job).await,
            SinkKind::Log => {
                if !self.log {
                    return Err(SinkError::NotConfigured("log"));
                }
                // Never the content at info level: logs are shipped and kept longer than chats.
                tracing::info!(job_id = %job.job_id, user_id = job.user_id, room_id = job.room_id, "Notification.");
                tracing::debug!(job_id = %job.job_id, preview = %job.preview, "Notification preview.");
                Ok(())
            }
        }
    }

    async fn webhook(&self, job: &Job) -> Result<(), SinkError> {
        let hook = self.webhook.as_ref().ok_or(SinkError::NotConfigured("webhook"))?;
        let body = serde_json::to_vec(&WebhookBody {
            job_id: &job.job_id,
            user_id: job.user_id,
            room_id: job.room_id,
            message_id: job.message_id,
            sender_id: job.sender_id,
            preview: &job.preview,
            created_at: &job.created_at,
            mention: job.mention,
        })
        .map_err(|e| SinkError::Transport(e.to_string()))?;
        let mut req = hook.client.post(hook.url.clone()).header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(secret) = &hook.secret {
            // Signed over the exact bytes sent, so the receiver verifies before parsing.
            req = req.header(SIGNATURE_HEADER, signature(secret, &body));
        }
        let resp = req.body(body).send().await.map_err(|e| {
            if e.is_timeout() {
                SinkError::Timeout(hook.timeout)
            } else {
                // Without the URL: it may carry a token in its query.
                SinkError::Transport(e.without_url().to_string())
            }
        })?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(SinkError::Status(status.as_u16()))
        }
    }

    async fn email(&self, job: &Job) -> Result<(), SinkError> {
        let mailer = self.mailer.as_ref().ok_or(SinkError::NotConfigured("email"))?;
        let Some(address) = self.address(job.user_id).await? else {
            // The address was removed since the job was made: nothing to deliver.
            tracing::debug!(job_id = %job.job_id, "No e-mail address any more; job done.");
            return Ok(());
        };
        let to = match address.parse() {
            Ok(to) => to,
            Err(e) => {
                // Retrying cannot fix a malformed address; drop the job with a warning.
                tracing::warn!(job_id = %job.job_id, user_id = job.user_id, error = %e, "Unusable e-mail address; job dropped.");
                return Ok(());
            }
        };
        let text = format!(
            "You have a new message in room {} (from user {}):\n\n{}\n\n-- \nlivechat\n",
            job.room_id, job.sender_id, job.preview
        );
        let msg = Message::builder()
            .from(mailer.from.clone())
            .to(to)
            .subject(format!("New message in room {}", job.room_id))
            .header(ContentType::TEXT_PLAIN)
            .body(text)
            .map_err(|e| SinkError::Transport(e.to_string()))?;
        // lettre's timeout covers each read and write; this bounds the whole conversation.
        match tokio::time::timeout(mailer.timeout, mailer.transport.send(msg)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(SinkError::Transport(format!("smtp: {e}"))),
            Err(_) => Err(SinkError::Timeout(mailer.timeout)),
        }
    }

    async fn address(&self, user_id: i64) -> Result<Option<String>, SinkError> {
        let Some(store) = &self.store else { return Ok(None) };
        let conn = store.conn().await?;
        let row = conn
            .query_opt("SELECT email FROM users WHERE id = $1", &[&user_id])
            .await
            .map_err(crate::error::StoreError::from)?;
        Ok(row.and_then(|r| r.get::<_, Option<String>>(0)).filter(|e| !e.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn webhook_body_has_exactly_the_spec_fields() {
        let b = WebhookBody {
            job_id: "1-2-webhook",
            user_id: 2,
            room_id: 3,
            message_id: 1,
            sender_id: 4,
            preview: "hi",
            created_at: "2024-01-01T00:00:00Z",
            mention: false,
        };
        let v = serde_json::to_value(&b).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec!["job_id", "user_id", "room_id", "message_id", "sender_id", "preview", "created_at"];
        want.sort_unstable();
        let mut got = keys.clone();
        got.sort_unstable();
        assert_eq!(got, want);
        let v = serde_json::to_value(&WebhookBody { mention: true, ..b }).unwrap();
        assert_eq!(v["mention"], true, "a mention of the recipient adds the flag");
    }
}
