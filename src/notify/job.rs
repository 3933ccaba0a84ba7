//! A notification job: one message for one user through one sink, stored as JSON in the queue.

use serde::{Deserialize, Serialize};

/// Where a job is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// HTTP POST to `notify.webhook_url`.
    Webhook,
    /// Mail to the user's address over `notify.smtp_url`.
    Email,
    /// An info line (development).
    Log,
}

impl SinkKind {
    /// The name used in job ids and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Webhook => "webhook",
            SinkKind::Email => "email",
            SinkKind::Log => "log",
        }
    }
}

/// One notification: a message for one user through one sink. Stored as JSON in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Stable across retries, re-queues and relay repeats: `<message_id>-<user_id>-<sink>`,
    /// so a receiver can drop duplicates of at-least-once delivery.
    pub job_id: String,
    /// Sink.
    pub sink: SinkKind,
    /// Recipient.
    pub user_id: i64,
    /// Room of the message.
    pub room_id: i64,
    /// The message.
    pub message_id: i64,
    /// Its author.
    pub sender_id: i64,
    /// The start of the content ([`super::relay::PREVIEW_CHARS`] characters at most).
    pub preview: String,
    /// The message's commit time, RFC 3339 UTC.
    pub created_at: String,
    /// The message mentions the recipient.
    #[serde(default)]
    pub mention: bool,
    /// Failed deliveries so far.
    #[serde(default)]
    pub attempts: u32,
    /// When the job was first enqueued (ms since the epoch), for the latency histogram.
    #[serde(default)]
    pub enqueued_at_ms: u64,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Job {
    /// The stable id of the job for `user_id` about `message_id` through `sink`.
    pub fn id_for(message_id: i64, user_id: i64, sink: SinkKind) -> String {
        format!("{message_id}-{user_id}-{}", sink.as_str())
    }
}
