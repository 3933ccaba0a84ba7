//! The job queue: a Redis Stream with one consumer group when `REDIS_URL` is set, else a bounded
//! in-memory queue with the same retry and dead-letter rules (not durable).
//!
//! Redis keys (`<prefix>` = `notify.key_prefix`):
//! - `<prefix>:jobs` — stream, field `job` = JSON [`Job`]; group [`GROUP`]. Workers read with
//!   `XREADGROUP` (first their own pending list from id `0`, then `>`), take over entries idle
//!   longer than `notify.claim_idle_ms` with `XAUTOCLAIM`, and `XACK` when done.
//! - `<prefix>:retry` — sorted set of failed jobs (attempts + 1) scored by due time; a Lua
//!   script moves due ones back to the stream atomically, run by whichever worker polls.
//! - `<prefix>:dead` — stream of jobs past `notify.max_attempts` (`XADD` + `XACK` in one `MULTI`).
//!
//! Never `MAXLEN`: on Redis 7 it deletes entries that were handed out but not acknowledged. The
//! stream is trimmed only with `XTRIM MINID` below the oldest entry any group still needs, and
//! memory is bounded by refusing to enqueue above `notify.queue_max` (the PostgreSQL outbox
//! holds the overflow).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::Rng;
use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamRangeReply, StreamReadReply};
use serde::Serialize;

use super::{now_ms, Job, NotifyError};
use crate::redis_link::RedisLink;

/// The consumer group every worker of every node joins.
pub const GROUP: &str = "livechat-workers";

/// Longest retry delay, whatever the attempt.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// A consumer with nothing pending and idle this long is removed from the group (live ones
/// touch their entry every fetch, i.e. at least twice a second).
const FORGET_CONSUMER_AFTER: Duration = Duration::from_secs(3600);

/// Dead letters moved per page of a re-queue.
const REQUEUE_PAGE: usize = 500;

/// A job handed to a worker, with what is needed to settle it.
#[derive(Debug)]
pub struct Delivery {
    /// The job as stored (its `attempts` counts earlier failures).
    pub job: Job,
    handle: Handle,
}

#[derive(Debug)]
enum Handle {
    /// Stream entry id, acknowledged when settled.
    Stream(String),
    /// In-memory: nothing to acknowledge but the in-flight count.
    Memory,
}

/// How a delivery ended.
#[derive(Debug)]
pub enum Outcome {
    /// Delivered (or nothing to deliver, e.g. the user has no e-mail address any more).
    Done,
    /// Failed; retried with backoff, or dead-lettered after `notify.max_attempts`.
    Failed(String),
}

/// A dead-lettered job as the admin API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Entry id in the dead-letter stream.
    pub id: String,
    /// The job, with `attempts` and `last_error`.
    #[serde(flatten)]
    pub job: Job,
    /// When it was dead-lettered, ms since the epoch.
    pub dead_at_ms: u64,
}

/// Where the worker reads next. Starts on its own pending list (entries handed to a previous
/// process with the same consumer name and never acknowledged).
#[derive(Debug)]
pub struct Cursor(Option<String>);

impl Default for Cursor {
    fn default() -> Self {
        Cursor(Some("0".into()))
    }
}

/// The queue.
pub enum Queue {
    /// Durable: Redis Stream + consumer group.
    Redis(RedisQueue),
    /// Bounded, in this process only.
    Memory(MemoryQueue),
}

/// First retry after `base_ms`, doubling per attempt up to an hour, with "equal jitter"
/// (a uniform half of the delay is random) so failed jobs of one burst do not retry in lockstep.
pub fn backoff(base_ms: u64, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let full = base_ms.saturating_mul(1u64 << exp).min(MAX_BACKOFF.as_millis() as u64).max(1);
    let half = full / 2;
    Duration::from_millis(full - half + rand::rng().random_range(0..=half))
}

impl Queue {
    /// A Redis-backed queue; nothing is contacted until first use.
    pub fn redis(link: Arc<RedisLink>, prefix: &str, cap: usize, max_attempts: u32, base_ms: u64) -> Self {
        Queue::Redis(RedisQueue {
            link,
            jobs: format!("{prefix}:jobs"),
            retry: format!("{prefix}:retry"),
            dead: format!("{prefix}:dead"),
            cap,
            max_attempts,
            base_ms,
            blocking: tokio::sync::Mutex::new(None),
            scripts: Scripts::new(),
        })
    }

    /// A bounded in-memory queue.
    pub fn memory(cap: usize, max_attempts: u32, base_ms: u64) -> Self {
        Queue::Memory(MemoryQueue {
            state: Mutex::new(MemState::default()),
            wake: tokio::sync::Notify::new(),
            cap,
            max_attempts,
            base_ms,
        })
    }

    /// Whether jobs live only in this process.
    pub fn is_memory(&self) -> bool {
        matches!(self, Queue::Memory(_))
    }

    /// Enqueues `jobs` as one unit, or refuses all of them with [`NotifyError::Full`] when the
    /// queue already holds `notify.queue_max` jobs. `force` skips that check: the relay uses it
    /// for the later chunks of one batch, so a batch is never half-enqueued by the cap (the
    /// overshoot is bounded by one relay batch).
    pub async fn enqueue(&self, jobs: &[Job], force: bool) -> Result<(), NotifyError> {
        if jobs.is_empty() {
            return Ok(());
        }
        match self {
            Queue::Redis(q) => q.enqueue(jobs, force).await?,
            Queue::Memory(q) => q.enqueue(jobs, force)?,
        }
        metrics::counter!("livechat_notify_jobs_enqueued_total").increment(jobs.len() as u64);
        Ok(())
    }

    /// Up to `max` jobs for `consumer`, waiting at most `block` when there are none.
    pub async fn fetch(
        &self,
        consumer: &str,
        max: usize,
        block: Duration,
        cursor: &mut Cursor,
    ) -> Result<Vec<Delivery>, NotifyError> {
        match self {
            Queue::Redis(q) => q.fetch(consumer, max, block, cursor).await,
            Queue::Memory(q) => Ok(q.fetch(max, block).await),
        }
    }

    /// Takes over up to `max` jobs handed to other consumers and idle for `min_idle`.
    pub async fn reclaim(&self, consumer: &str, max: usize, min_idle: Duration) -> Result<Vec<Delivery>, NotifyError> {
        match self {
            Queue::Redis(q) => q.reclaim(consumer, max, min_idle).await,
            // One process: nothing can be abandoned by another consumer.
            Queue::Memory(_) => Ok(Vec::new()),
        }
    }

    /// Moves retries that are due back to the queue.
    pub async fn promote_due(&self) -> Result<usize, NotifyError> {
        match self {
            Queue::Redis(q) => q.promote_due().await,
            Queue::Memory(q) => Ok(q.promote_due()),
        }
    }

    /// Applies the outcomes of finished deliveries: acknowledge, schedule a retry, or
    /// dead-letter. Each job's move and acknowledgement happen atomically.
    pub async fn settle(&self, done: &[(Delivery, Outcome)]) -> Result<(), NotifyError> {
        if done.is_empty() {
            return Ok(());
        }
        match self {
            Queue::Redis(q) => q.settle(done).await?,
            Queue::Memory(q) => q.settle(done),
        }
        let now = now_ms();
        for (d, outcome) in done {
            match outcome {
                Outcome::Done => {
                    metrics::counter!("livechat_notify_jobs_delivered_total", "sink" => d.job.sink.as_str())
                        .increment(1);
                    if d.job.enqueued_at_ms > 0 {
                        let secs = now.saturating_sub(d.job.enqueued_at_ms) as f64 / 1000.0;
                        metrics::histogram!("livechat_notify_delivery_seconds").record(secs);
                    }
                }
                Outcome::Failed(_) if d.job.attempts + 1 >= self.max_attempts() => {
                    metrics::counter!("livechat_notify_jobs_dead_lettered_total").increment(1);
                }
                Outcome::Failed(_) => metrics::counter!("livechat_notify_jobs_retried_total").increment(1),
            }
        }
        Ok(())
    }

    /// Deliveries tried before a job is dead-lettered.
    pub fn max_attempts(&self) -> u32 {
        match self {
            Queue::Redis(q) => q.max_attempts,
            Queue::Memory(q) => q.max_attempts,
        }
    }

    /// Housekeeping: trims acknowledged entries (`XTRIM MINID`) and updates the depth gauges.
    /// Returns the jobs waiting (queued, in flight, or due for retry later).
    pub async fn maintain(&self) -> Result<u64, NotifyError> {
        let (depth, dead) = match self {
            Queue::Redis(q) => q.maintain().await?,
            Queue::Memory(q) => q.depth(),
        };
        metrics::gauge!("livechat_notify_queue_depth").set(depth as f64);
        metrics::gauge!("livechat_notify_dead_letters").set(dead as f64);
        Ok(depth)
    }

    /// The newest `limit` dead letters, and how many there are in all.
    pub async fn dead_letters(&self, limit: usize) -> Result<(Vec<DeadLetter>, u64), NotifyError> {
        match self {
            Queue::Redis(q) => q.dead_letters(limit).await,
            Queue::Memory(q) => Ok(q.dead_letters(limit)),
        }
    }

    /// Moves dead letters back to the queue with their attempts reset: those whose `job_id` is
    /// listed, or all of them with `None`. Returns how many were moved.
    pub async fn requeue(&self, job_ids: Option<&[String]>) -> Result<usize, NotifyError> {
        let wanted: Option<HashSet<&str>> = job_ids.map(|ids| ids.iter().map(String::as_str).collect());
        match self {
            Queue::Redis(q) => q.requeue(wanted.as_ref()).await,
            Queue::Memory(q) => Ok(q.requeue(wanted.as_ref())),
        }
    }
}

/// A dead-lettered job back to a fresh start.
fn revived(mut job: Job) -> Job {
    job.attempts = 0;
    job.last_error = None;
    job.enqueued_at_ms = now_ms();
    job
}

/// The job after one more failed attempt.
fn failed(job: &Job, error: &str) -> Job {
    let mut j = job.clone();
    j.attempts += 1;
    j.last_error = Some(error.chars().take(500).collect());
    j
}

fn to_json(job: &Job) -> String {
    // A struct of strings and integers always serialises.
    serde_json::to_string(job).unwrap_or_default()
}

// =====================================================================================
// Redis
// =====================================================================================

/// Lua shared by the scripts: the lowest entry id any group of the stream may still need (its
/// oldest pending entry, else the one after its last delivered entry), and the trim below it.
/// Everything under that id was delivered and acknowledged by every group.
const TRIM_LUA: &str = r#"
local function parse_id(id)
  local ms, seq = string.match(id, '(%d+)-(%d+)')
  return tonumber(ms), tonumber(seq)
end
local function trim(stream)
  if redis.call('EXISTS', stream) == 0 then return 0 end
  local groups = redis.call('XINFO', 'GROUPS', stream)
  if #groups == 0 then return 0 end
  local best_ms, best_seq = nil, nil
  for _, g in ipairs(groups) do
    local name, last = nil, nil
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    local ms, seq
    local p = redis.call('XPENDING', stream, name)
    if p[1] > 0 then
      ms, seq = parse_id(p[2])
    else
      ms, seq = parse_id(last)
      seq = seq + 1
    end
    if best_ms == nil or ms < best_ms or (ms == best_ms and seq < best_seq) then
      best_ms, best_seq = ms, seq
    end
  end
  return redis.call('XTRIM', stream, 'MINID', string.format('%d-%d', best_ms, best_seq))
end
"#;

/// KEYS: jobs, retry. ARGV: cap (0 = no check), job JSON... Returns -1 when full.
const ENQUEUE_LUA: &str = r#"
local cap = tonumber(ARGV[1])
if cap > 0 then
  local depth = redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
  if depth >= cap then
    trim(KEYS[1])
    depth = redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
    if depth >= cap then return -1 end
  end
end
for i = 2, #ARGV do redis.call('XADD', KEYS[1], '*', 'job', ARGV[i]) end
return #ARGV - 1
"#;

/// KEYS: retry, jobs. ARGV: now ms, limit. Moves due retries to the stream.
const PROMOTE_LUA: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, job in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'job', job)
  redis.call('ZREM', KEYS[1], job)
end
return #due
"#;

/// KEYS: jobs, retry, dead. ARGV: group, idle ms. Trims; forgets consumers (one per process
/// that ever ran) with nothing pending and idle that long; returns {stream length, retries,
/// dead letters}.
const MAINTAIN_LUA: &str = r#"
trim(KEYS[1])
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if ok then
  for _, c in ipairs(consumers) do
    local name, pending, idle = nil, 0, 0
    for i = 1, #c, 2 do
      if c[i] == 'name' then name = c[i + 1]
      elseif c[i] == 'pending' then pending = c[i + 1]
      elseif c[i] == 'idle' then idle = c[i + 1] end
    end
    if name and pending == 0 and idle > tonumber(ARGV[2]) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    end
  end
end
return {redis.call('XLEN', KEYS[1]), redis.call('ZCARD', KEYS[2]), redis.call('XLEN', KEYS[3])}
"#;

struct Scripts {
    enqueue: redis::Script,
    promote: redis::Script,
    maintain: redis::Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            enqueue: redis::Script::new(&format!("{TRIM_LUA}\n{ENQUEUE_LUA}")),
            promote: redis::Script::new(PROMOTE_LUA),
            maintain: redis::Script::new(&format!("{TRIM_LUA}\n{MAINTAIN_LUA}")),
        }
    }
}

/// The Redis Stream queue.
pub struct RedisQueue {
    link: Arc<RedisLink>,
    jobs: String,
    retry: String,
    dead: String,
    cap: usize,
    max_attempts: u32,
    base_ms: u64,
    /// The connection blocking reads use (see [`RedisLink::dedicated`]).
    blocking: tokio::sync::Mutex<Option<ConnectionManager>>,
    scripts: Scripts,
}

fn is_nogroup(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP") || e.to_string().contains("NOGROUP")
}

impl RedisQueue {
    async fn conn(&self) -> Result<ConnectionManager, NotifyError> {
        Ok(self.link.conn().await?)
    }

    /// Creates the group (and the stream) if missing. From id `0`, so jobs enqueued before
    /// the first worker ever ran are delivered too.
    async fn ensure_group(&self, conn: &mut ConnectionManager) -> Result<(), NotifyError> {
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.jobs)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") || e.to_string().contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn enqueue(&self, jobs: &[Job], force: bool) -> Result<(), NotifyError> {
        let mut conn = self.conn().await?;
        let now = now_ms();
        let mut inv = self.scripts.enqueue.prepare_invoke();
        inv.key(&self.jobs).key(&self.retry).arg(if force { 0 } else { self.cap });
        for j in jobs {
            let mut j = j.clone();
            j.enqueued_at_ms = now;
            inv.arg(to_json(&j));
        }
        let n: i64 = inv.invoke_async(&mut conn).await?;
        if n < 0 {
            return Err(NotifyError::Full);
        }
        Ok(())
    }

    async fn blocking_conn(&self) -> Result<ConnectionManager, NotifyError> {
        let mut slot = self.blocking.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.link.dedicated().await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn fetch(
        &self,
        consumer: &str,
        max: usize,
        block: Duration,
        cursor: &mut Cursor,
    ) -> Result<Vec<Delivery>, NotifyError> {
        let mut conn = self.blocking_conn().await?;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(GROUP).arg(consumer).arg("COUNT").arg(max.max(1));
        let start = match &cursor.0 {
            // Own pending list: paged by the last id seen, never blocking.
            Some(after) => after.clone(),
            None => {
                cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
                ">".to_string()
            }
        };
        cmd.arg("STREAMS").arg(&self.jobs).arg(&start);
        let reply: Option<StreamReadReply> = match cmd.query_async(&mut conn).await {
            Ok(r) => r,
            Err(e) if is_nogroup(&e) => {
                // First run, or Redis lost the group (restart without persistence): recreate.
                self.ensure_group(&mut conn).await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        let entries: Vec<StreamId> =
            reply.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect()).unwrap_or_default();
        if cursor.0.is_some() {
            cursor.0 = entries.last().map(|e| e.id.clone());
            if cursor.0.is_none() {
                tracing::debug!(consumer, "Own pending list re-read; reading new jobs now.");
            }
        }
        self.parse(entries).await
    }

    /// Stream entries to deliveries; an entry that is not a job is dead-lettered as is.
    async fn parse(&self, entries: Vec<StreamId>) -> Result<Vec<Delivery>, NotifyError> {
        let mut out = Vec::with_capacity(entries.len());
        let mut corrupt: Vec<(String, String)> = Vec::new();
        for e in entries {
            let raw: Option<String> = e.get("job");
            match raw.as_deref().map(serde_json::from_str::<Job>) {
                Some(Ok(job)) => out.push(Delivery { job, handle: Handle::Stream(e.id) }),
                _ => corrupt.push((e.id, raw.unwrap_or_default())),
            }
        }
        if !corrupt.is_empty() {
            tracing::error!(entries = corrupt.len(), "Unreadable notification jobs; moving them to the dead letters.");
            let mut p = redis::pipe();
            p.atomic();
            for (id, raw) in &corrupt {
                p.cmd("XADD").arg(&self.dead).arg("*").arg("raw").arg(raw).arg("dead_at_ms").arg(now_ms()).ignore();
                p.cmd("XACK").arg(&self.jobs).arg(GROUP).arg(id).ignore();
            }
            let mut conn = self.conn().await?;
            p.query_async::<()>(&mut conn).await?;
        }
        Ok(out)
    }

    async fn reclaim(&self, consumer: &str, max: usize, min_idle: Duration) -> Result<Vec<Delivery>, NotifyError> {
        let mut conn = self.conn().await?;
        let mut start = "0-0".to_string();
        let mut claimed = Vec::new();
        // Each call examines a bounded slice of the pending list; a few pages per round is plenty.
        for _ in 0..8 {
            let want = max.saturating_sub(claimed.len());
            if want == 0 {
                break;
            }
            let r: redis::RedisResult<StreamAutoClaimReply> = redis::cmd("XAUTOCLAIM")
                .arg(&self.jobs)
                .arg(GROUP)
                .arg(consumer)
                .arg(min_idle.as_millis() as u64)
                .arg(&start)
                .arg("COUNT")
                .arg(want)
                .query_async(&mut conn)
                .await;
            let reply = match r {
                Ok(r) => r,
                Err(e) if is_nogroup(&e) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            claimed.extend(reply.claimed);
            if reply.next_stream_id == "0-0" {
                break;
            }
            start = reply.next_stream_id;
        }
        if !claimed.is_empty() {
            tracing::info!(consumer, jobs = claimed.len(), "Took over notification jobs of a dead worker.");
            metrics::counter!("livechat_notify_jobs_reclaimed_total").increment(claimed.len() as u64);
        }
        self.parse(claimed).await
    }

    async fn promote_due(&self) -> Result<usize, NotifyError> {
        let mut conn = self.conn().await?;
        let n: i64 = self
            .scripts
            .promote
            .key(&self.retry)
            .key(&self.jobs)
            .arg(now_ms())
            .arg(500)
            .invoke_async(&mut conn)
            .await?;
        Ok(n.max(0) as usize)
    }

    async fn settle(&self, done: &[(Delivery, Outcome)]) -> Result<(), NotifyError> {
        let mut p = redis::pipe();
        p.atomic();
        let mut acks: Vec<&str> = Vec::with_capacity(done.len());
        let now = now_ms();
        for (d, outcome) in done {
            let Handle::Stream(id) = &d.handle else { continue };
            if let Outcome::Failed(err) = outcome {
                let job = failed(&d.job, err);
                if job.attempts >= self.max_attempts {
                    p.cmd("XADD")
                        .arg(&self.dead)
                        .arg("*")
                        .arg("job")
                        .arg(to_json(&job))
                        .arg("dead_at_ms")
                        .arg(now)
                        .ignore();
                } else {
                    let due = now + backoff(self.base_ms, job.attempts).as_millis() as u64;
                    p.cmd("ZADD").arg(&self.retry).arg(due).arg(to_json(&job)).ignore();
                }
            }
            acks.push(id);
        }
        if acks.is_empty() {
            return Ok(());
        }
        p.cmd("XACK").arg(&self.jobs).arg(GROUP).arg(&acks).ignore();
        let mut conn = self.conn().await?;
        p.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    async fn maintain(&self) -> Result<(u64, u64), NotifyError> {
        let mut conn = self.conn().await?;
        let (stream, retry, dead): (u64, u64, u64) = self
            .scripts
            .maintain
            .key(&self.jobs)
            .key(&self.retry)
            .key(&self.dead)
            .arg(GROUP)
            .arg(FORGET_CONSUMER_AFTER.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok((stream + retry, dead))
    }

    fn dead_letter(&self, e: &StreamId) -> Option<DeadLetter> {
        let job: Job = serde_json::from_str(&e.get::<String>("job")?).ok()?;
        Some(DeadLetter { id: e.id.clone(), job, dead_at_ms: e.get("dead_at_ms").unwrap_or(0) })
    }

    async fn dead_letters(&self, limit: usize) -> Result<(Vec<DeadLetter>, u64), NotifyError> {
        let mut conn = self.conn().await?;
        let (range, total): (StreamRangeReply, u64) = redis::pipe()
            .cmd("XREVRANGE")
            .arg(&self.dead)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(limit.max(1))
            .cmd("XLEN")
            .arg(&self.dead)
            .query_async(&mut conn)
            .await?;
        Ok((range.ids.iter().filter_map(|e| self.dead_letter(e)).collect(), total))
    }

    async fn requeue(&self, wanted: Option<&HashSet<&str>>) -> Result<usize, NotifyError> {
        let mut conn = self.conn().await?;
        let mut start = "-".to_string();
        let mut moved = 0;
        loop {
            let page: StreamRangeReply = redis::cmd("XRANGE")
                .arg(&self.dead)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(REQUEUE_PAGE)
                .query_async(&mut conn)
                .await?;
            let Some(last) = page.ids.last() else { break };
            start = format!("({}", last.id);
            let mut p = redis::pipe();
            p.atomic();
            let mut n = 0;
            for e in &page.ids {
                let Some(dl) = self.dead_letter(e) else { continue };
                if wanted.is_some_and(|w| !w.contains(dl.job.job_id.as_str())) {
                    continue;
                }
                p.cmd("XADD").arg(&self.jobs).arg("*").arg("job").arg(to_json(&revived(dl.job))).ignore();
                p.cmd("XDEL").arg(&self.dead).arg(&e.id).ignore();
                n += 1;
            }
            if n > 0 {
                p.query_async::<()>(&mut conn).await?;
                moved += n;
            }
            if page.ids.len() < REQUEUE_PAGE {
                break;
            }
        }
        Ok(moved)
    }
}

// =====================================================================================
// Memory
// =====================================================================================

/// The in-memory queue: same retry and dead-letter rules, bounded, lost with the process.
pub struct MemoryQueue {
    state: Mutex<MemState>,
    wake: tokio::sync::Notify,
    cap: usize,
    max_attempts: u32,
    base_ms: u64,
}

#[derive(Default)]
struct MemState {
    ready: VecDeque<Job>,
    /// (due ms, tie-breaker) → job.
    retry: BTreeMap<(u64, u64), Job>,
    inflight: usize,
    dead: VecDeque<DeadLetter>,
    seq: u64,
}

// Every critical section is a plain collection update; a panic cannot leave it half-done.
fn lock(m: &Mutex<MemState>) -> MutexGuard<'_, MemState> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemState {
    fn depth(&self) -> usize {
        self.ready.len() + self.retry.len() + self.inflight
    }

    fn promote(&mut self, now: u64) -> usize {
        let later = self.retry.split_off(&(now + 1, 0));
        let due = std::mem::replace(&mut self.retry, later);
        let n = due.len();
        self.ready.extend(due.into_values());
        n
    }
}

impl MemoryQueue {
    fn enqueue(&self, jobs: &[Job], force: bool) -> Result<(), NotifyError> {
        let mut s = lock(&self.state);
        if !force && s.depth() >= self.cap {
            return Err(NotifyError::Full);
        }
        let now = now_ms();
        s.ready.extend(jobs.iter().cloned().map(|mut j| {
            j.enqueued_at_ms = now;
            j
        }));
        drop(s);
        self.wake.notify_one();
        Ok(())
    }

    fn take(&self, max: usize) -> (Vec<Delivery>, Option<u64>) {
        let mut s = lock(&self.state);
        s.promote(now_ms());
        let n = max.min(s.ready.len());
        let out: Vec<Delivery> = s.ready.drain(..n).map(|job| Delivery { job, handle: Handle::Memory }).collect();
        s.inflight += out.len();
        (out, s.retry.keys().next().map(|k| k.0))
    }

    async fn fetch(&self, max: usize, block: Duration) -> Vec<Delivery> {
        let (got, next_due) = self.take(max);
        if !got.is_empty() {
            return got;
        }
        // Wake on an enqueue, on the next retry falling due, or after `block`.
        let until_due = next_due.map(|d| Duration::from_millis(d.saturating_sub(now_ms()))).unwrap_or(block);
        let _ = tokio::time::timeout(block.min(until_due), self.wake.notified()).await;
        self.take(max).0
    }

    fn promote_due(&self) -> usize {
        lock(&self.state).promote(now_ms())
    }

    fn settle(&self, done: &[(Delivery, Outcome)]) {
        let mut s = lock(&self.state);
        let now = now_ms();
        for (d, outcome) in done {
            s.inflight = s.inflight.saturating_sub(1);
            let Outcome::Failed(err) = outcome else { continue };
            let job = failed(&d.job, err);
            s.seq += 1;
            let seq = s.seq;
            if job.attempts >= self.max_attempts {
                if s.dead.len() >= self.cap {
                    // Bounded like everything else here; the oldest goes first.
                    tracing::warn!("In-memory dead letters are full; dropping the oldest.");
                    s.dead.pop_front();
                }
                s.dead.push_back(DeadLetter { id: format!("mem-{seq}"), job, dead_at_ms: now });
            } else {
                let due = now + backoff(self.base_ms, job.attempts).as_millis() as u64;
                s.retry.insert((due, seq), job);
            }
        }
    }

    fn depth(&self) -> (u64, u64) {
        let s = lock(&self.state);
        (s.depth() as u64, s.dead.len() as u64)
    }

    fn dead_letters(&self, limit: usize) -> (Vec<DeadLetter>, u64) {
        let s = lock(&self.state);
        (s.dead.iter().rev().take(limit).cloned().collect(), s.dead.len() as u64)
    }

    fn requeue(&self, wanted: Option<&HashSet<&str>>) -> usize {
        let mut s = lock(&self.state);
        let (back, keep): (Vec<DeadLetter>, Vec<DeadLetter>) =
            s.dead.drain(..).partition(|d| wanted.is_none_or(|w| w.contains(d.job.job_id.as_str())));
        s.dead = keep.into();
        let n = back.len();
        s.ready.extend(back.into_iter().map(|d| revived(d.job)));
        drop(s);
        if n > 0 {
            self.wake.notify_one();
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::SinkKind;

    fn job(n: i64) -> Job {
        Job {
            job_id: Job::id_for(n, 2, SinkKind::Log),
            sink: SinkKind::Log,
            user_id: 2,
            room_id: 1,
            message_id: n,
            sender_id: 1,
            preview: "hi".into(),
            created_at: "2024-01-01T00:00:00Z".into(),
            attempts: 0,
            enqueued_at_ms: 0,
            last_error: None,
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for attempt in 1..6u32 {
            let full = 100u64 << (attempt - 1);
            for _ in 0..50 {
                let d = backoff(100, attempt).as_millis() as u64;
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d} not in [{}, {full}]", full / 2);
            }
        }
        assert!(backoff(500, 40) <= MAX_BACKOFF);
    }

    #[tokio::test]
    async fn memory_queue_cap_retry_and_dead_letter() {
        let q = Queue::memory(2, 2, 1);
        q.enqueue(&[job(1), job(2)], false).await.unwrap();
        assert!(matches!(q.enqueue(&[job(3)], false).await, Err(NotifyError::Full)));
        // forced chunks of a batch already admitted go in
        q.enqueue(&[job(3)], true).await.unwrap();
        let mut cur = Cursor::default();
        let got = q.fetch("c", 10, Duration::from_millis(10), &mut cur).await.unwrap();
        assert_eq!(got.len(), 3);
        let outcomes: Vec<_> = got
            .into_iter()
            .map(|d| {
                let o = if d.job.message_id == 1 { Outcome::Done } else { Outcome::Failed("boom".into()) };
                (d, o)
            })
            .collect();
        q.settle(&outcomes).await.unwrap();
        // two retries, due within a few ms
        let mut again = Vec::new();
        for _ in 0..100 {
            again.extend(q.fetch("c", 10, Duration::from_millis(20), &mut cur).await.unwrap());
            if again.len() == 2 {
                break;
            }
        }
        assert_eq!(again.len(), 2);
        assert!(again.iter().all(|d| d.job.attempts == 1 && d.job.last_error.as_deref() == Some("boom")));
        let outcomes: Vec<_> = again.into_iter().map(|d| (d, Outcome::Failed("still".into()))).collect();
        q.settle(&outcomes).await.unwrap();
        let (dead, total) = q.dead_letters(10).await.unwrap();
        assert_eq!(total, 2);
        assert!(dead.iter().all(|d| d.job.attempts == 2));
        let ids = vec![dead[0].job.job_id.clone()];
        assert_eq!(q.requeue(Some(&ids)).await.unwrap(), 1);
        let back = q.fetch("c", 10, Duration::from_millis(10), &mut cur).await.unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].job.attempts, 0);
        assert_eq!(q.requeue(None).await.unwrap(), 1);
    }
}
