//! The outbox relay (runs in `serve`): turns committed `notify_outbox` rows into jobs.
//!
//! One pass, in one PostgreSQL transaction: lock a page of outbox rows (`FOR UPDATE SKIP LOCKED`,
//! so the relays of several nodes share the work), read the rooms' members once per room, make
//! one job per (offline member, sink) — never the sender — enqueue, delete the rows, COMMIT.
//! A crash after the enqueue and before the COMMIT relays the rows again: the same job ids,
//! at-least-once. A full queue aborts the pass and leaves the rows for later (backpressure).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use super::{Context, Job, NotifyError, Queue, SinkKind};
use crate::config::NotifyConfig;
use crate::error::StoreError;
use crate::telemetry::names;

/// Characters of the content a job carries.
pub const PREVIEW_CHARS: usize = 200;
/// Outbox rows locked per pass.
const MESSAGES_PER_PASS: i64 = 200;
/// Jobs made per pass at most (a message is never split): bounds one pass's memory and the
/// queue's overshoot past `notify.queue_max`.
const JOBS_PER_PASS: usize = 5000;
/// Jobs per enqueue round trip.
const CHUNK: usize = 1000;
/// Bound on one pass.
const PASS_TIMEOUT: Duration = Duration::from_secs(15);
/// Look at the outbox this often even without a wake-up (rows left by a full queue, by another
/// node, or by a crash).
const TICK: Duration = Duration::from_secs(1);

/// The relay task.
pub struct Relay {
    ctx: Context,
    queue: Arc<Queue>,
}

/// A message waiting in the outbox.
struct Pending {
    message_id: i64,
    room_id: i64,
    sender_id: i64,
    preview: String,
    created_at: String,
    /// Members the message mentions (their jobs carry `mention`).
    mentions: Vec<i64>,
}

impl Relay {
    /// A relay for this server's outbox.
    pub fn new(ctx: Context, queue: Arc<Queue>) -> Self {
        Self { ctx, queue }
    }

    /// Relays until `cancel`; woken by commits that wrote outbox rows, and every [`TICK`].
    pub async fn run(self, cancel: tokio_util::sync::CancellationToken) {
        let mut failing = false;
        loop {
            loop {
                let more = match tokio::time::timeout(PASS_TIMEOUT, self.pass()).await {
                    Ok(Ok(more)) => {
                        if failing {
                            tracing::info!("Notification relay working again.");
                            failing = false;
                        }
                        more
                    }
                    Ok(Err(NotifyError::Full)) => {
                        metrics::counter!(names::NOTIFY_ENQUEUE_REFUSED_TOTAL).increment(1);
                        tracing::debug!("Notification queue full; outbox rows wait.");
                        false
                    }
                    Ok(Err(e)) => {
                        if !failing {
                            tracing::warn!(error = %e, "Notification relay failed; outbox rows wait.");
                            failing = true;
                        }
                        false
                    }
                    Err(_) => {
                        tracing::warn!("Notification relay pass timed out; outbox rows wait.");
                        false
                    }
                };
                if !more || cancel.is_cancelled() {
                    break;
                }
            }
            tokio::select! {
                _ = self.ctx.committed.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// One pass; `Ok(true)` when more rows may be waiting.
    async fn pass(&self) -> Result<bool, NotifyError> {
        let mut conn = self.ctx.store.conn().await?;
        let tx = conn.transaction().await.map_err(StoreError::from)?;
        let pending = locked_rows(&tx).await?;
        if pending.is_empty() {
            return Ok(false);
        }
        let members = room_members(&tx, &pending).await?;
        // Cluster-wide: a member connected to any live node gets no job.
        let users: HashSet<i64> = members.values().flatten().map(|(u, _)| *u).collect();
        let online = self.ctx.online.online_among(users.into_iter().collect()).await;
        let (jobs, taken) = make_jobs(&self.ctx.config, &pending, &members, &online);

        // Only the first chunk may be refused: a pass is enqueued whole or not at all.
        for (i, chunk) in jobs.chunks(CHUNK).enumerate() {
            self.queue.enqueue(chunk, i > 0).await?;
        }
        tx.execute("DELETE FROM notify_outbox WHERE message_id = ANY($1)", &[&taken])
            .await
            .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
        tracing::debug!(messages = taken.len(), jobs = jobs.len(), "Relayed notification outbox rows.");
        Ok(taken.len() < pending.len() || pending.len() as i64 == MESSAGES_PER_PASS)
    }
}

/// Locks a page of outbox rows (`FOR UPDATE SKIP LOCKED`: the relays of several nodes share the
/// work) with their messages.
async fn locked_rows(tx: &tokio_postgres::Transaction<'_>) -> Result<Vec<Pending>, NotifyError> {
    let rows = tx
        .query(
            "SELECT o.message_id, m.room_id, m.sender_id, left(m.content, $2), m.created_at, m.mentions \
             FROM notify_outbox o JOIN messages m ON m.id = o.message_id \
             ORDER BY o.message_id LIMIT $1 FOR UPDATE OF o SKIP LOCKED",
            &[&MESSAGES_PER_PASS, &(PREVIEW_CHARS as i32 + 1)],
        )
        .await
        .map_err(StoreError::from)?;
    Ok(rows
        .iter()
        .map(|r| {
            let created: DateTime<Utc> = r.get(4);
            Pending {
                message_id: r.get(0),
                room_id: r.get(1),
                sender_id: r.get(2),
                preview: preview(r.get(3)),
                created_at: created.to_rfc3339_opts(SecondsFormat::Micros, true),
                mentions: r.get::<_, Option<Vec<i64>>>(5).unwrap_or_default(),
            }
        })
        .collect())
}

/// Members once per room for the whole page, not once per message: room → (user, has e-mail).
async fn room_members(
    tx: &tokio_postgres::Transaction<'_>,
    pending: &[Pending],
) -> Result<HashMap<i64, Vec<(i64, bool)>>, NotifyError> {
    let mut room_ids: Vec<i64> = pending.iter().map(|p| p.room_id).collect();
    room_ids.sort_unstable();
    room_ids.dedup();
    let rows = tx
        .query(
            "SELECT rm.room_id, rm.user_id, coalesce(u.email, '') <> '' \
             FROM room_members rm JOIN users u ON u.id = rm.user_id WHERE rm.room_id = ANY($1)",
            &[&room_ids],
        )
        .await
        .map_err(StoreError::from)?;
    let mut members: HashMap<i64, Vec<(i64, bool)>> = HashMap::new();
    for r in &rows {
        members.entry(r.get(0)).or_default().push((r.get(1), r.get(2)));
    }
    Ok(members)
}

/// One job per (offline member, sink) of each message, never for its sender, until
/// [`JOBS_PER_PASS`] (a message is never split). Returns the jobs and the messages they cover.
fn make_jobs(
    n: &NotifyConfig,
    pending: &[Pending],
    members: &HashMap<i64, Vec<(i64, bool)>>,
    online: &HashSet<i64>,
) -> (Vec<Job>, Vec<i64>) {
    let webhook = n.webhook_url.as_deref().is_some_and(|u| !u.is_empty());
    let email = n.smtp_url.as_deref().is_some_and(|u| !u.is_empty());
    let mut jobs: Vec<Job> = Vec::new();
    let mut taken: Vec<i64> = Vec::new();
    for p in pending {
        if !taken.is_empty() && jobs.len() >= JOBS_PER_PASS {
            break;
        }
        taken.push(p.message_id);
        for &(user_id, has_email) in members.get(&p.room_id).map(Vec::as_slice).unwrap_or_default() {
            if user_id == p.sender_id || online.contains(&user_id) {
                continue;
            }
            let sinks =
                [(webhook, SinkKind::Webhook), (email && has_email, SinkKind::Email), (n.log_sink, SinkKind::Log)];
            for (_, sink) in sinks.into_iter().filter(|(on, _)| *on) {
                jobs.push(Job {
                    job_id: Job::id_for(p.message_id, user_id, sink),
                    sink,
                    user_id,
                    room_id: p.room_id,
                    message_id: p.message_id,
                    sender_id: p.sender_id,
                    preview: p.preview.clone(),
                    created_at: p.created_at.clone(),
                    mention: p.mentions.contains(&user_id),
                    attempts: 0,
                    enqueued_at_ms: 0,
                    last_error: None,
                });
            }
        }
    }
    (jobs, taken)
}

/// At most [`PREVIEW_CHARS`] characters, with an ellipsis when cut.
fn preview(content: &str) -> String {
    let mut chars = content.chars();
    let head: String = chars.by_ref().take(PREVIEW_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(message_id: i64, room_id: i64, sender_id: i64) -> Pending {
        Pending { message_id, room_id, sender_id, preview: "hi".into(), created_at: "t".into(), mentions: vec![] }
    }

    #[test]
    fn jobs_go_to_offline_members_other_than_the_sender_through_each_sink() {
        let n = NotifyConfig {
            webhook_url: Some("http://127.0.0.1:9/hook".into()),
            smtp_url: Some("smtp://127.0.0.1:25".into()),
            log_sink: false,
            ..NotifyConfig::default()
        };
        // Room 1: users 1 (sender), 2 (online), 3 (offline, e-mail), 4 (offline, no e-mail).
        let members: HashMap<i64, Vec<(i64, bool)>> = [(1, vec![(1, true), (2, true), (3, true), (4, false)])].into();
        let online: HashSet<i64> = [2].into();
        let (jobs, taken) = make_jobs(&n, &[pending(10, 1, 1)], &members, &online);
        assert_eq!(taken, vec![10]);
        let ids: Vec<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
        assert_eq!(ids, vec!["10-3-webhook", "10-3-email", "10-4-webhook"]);
        assert!(jobs.iter().all(|j| j.room_id == 1 && j.sender_id == 1 && j.attempts == 0));
    }

    #[test]
    fn a_pass_stops_between_messages_past_its_job_budget() {
        let n = NotifyConfig { log_sink: true, ..NotifyConfig::default() };
        let many: Vec<(i64, bool)> = (2..=3001).map(|u| (u, false)).collect();
        let members: HashMap<i64, Vec<(i64, bool)>> = [(1, many)].into();
        let page: Vec<Pending> = (1..=3).map(|id| pending(id, 1, 1)).collect();
        let (jobs, taken) = make_jobs(&n, &page, &members, &HashSet::new());
        assert_eq!(taken, vec![1, 2], "the second message crossed the budget; the third waits");
        assert_eq!(jobs.len(), 6000);
    }

    #[test]
    fn preview_cuts_on_characters() {
        assert_eq!(preview("hello"), "hello");
        let long: String = "é".repeat(PREVIEW_CHARS + 5);
        let p = preview(&long);
        assert_eq!(p.chars().count(), PREVIEW_CHARS + 1);
        assert!(p.ends_with('…'));
        assert_eq!(preview(&"a".repeat(PREVIEW_CHARS)), "a".repeat(PREVIEW_CHARS));
    }
}
