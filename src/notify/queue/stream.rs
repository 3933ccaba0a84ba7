//! The durable queue: a Redis Stream with one consumer group, a retry sorted set and a
//! dead-letter stream (see [`super`] for the keys and the rules).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamRangeReply, StreamReadReply};

use super::{backoff, failed, revived, to_json, Cursor, DeadLetter, Delivery, Handle, Outcome, GROUP};
use super::{FORGET_CONSUMER_AFTER, REQUEUE_PAGE};
use crate::notify::{Job, NotifyError};
use crate::redis_link::RedisLink;
use crate::telemetry::names;
use crate::util::clock::now_ms;

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
    pub(super) fn new() -> Self {
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
    pub(super) max_attempts: u32,
    base_ms: u64,
    /// The connection blocking reads use (see [`RedisLink::dedicated`]).
    blocking: tokio::sync::Mutex<Option<ConnectionManager>>,
    scripts: Scripts,
}

fn is_nogroup(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP") || e.to_string().contains("NOGROUP")
}

impl RedisQueue {
    /// A queue under the keys `<prefix>:{jobs,retry,dead}`; nothing is contacted until first use.
    pub(super) fn new(link: Arc<RedisLink>, prefix: &str, cap: usize, max_attempts: u32, base_ms: u64) -> Self {
        RedisQueue {
            link,
            jobs: format!("{prefix}:jobs"),
            retry: format!("{prefix}:retry"),
            dead: format!("{prefix}:dead"),
            cap,
            max_attempts,
            base_ms,
            blocking: tokio::sync::Mutex::new(None),
            scripts: Scripts::new(),
        }
    }

    pub(super) async fn conn(&self) -> Result<ConnectionManager, NotifyError> {
        Ok(self.link.conn().await?)
    }

    /// Creates the group (and the stream) if missing. From id `0`, so jobs enqueued before
    /// the first worker ever ran are delivered too.
    pub(super) async fn ensure_group(&self, conn: &mut ConnectionManager) -> Result<(), NotifyError> {
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

    pub(super) async fn enqueue(&self, jobs: &[Job], force: bool) -> Result<(), NotifyError> {
        let mut conn = self.conn().await?;
        let now = now_ms();
        let mut inv = self.scripts.enqueue.prepare_invoke();
        inv.key(&self.jobs).key(&self.retry).arg(if force { 0 } else { self.cap });
        for j in jobs {
            let mut j = j.clone();
            j.enqueued_at_ms = now;
            inv.arg(to_json(&j)?);
        }
        let n: i64 = inv.invoke_async(&mut conn).await?;
        if n < 0 {
            return Err(NotifyError::Full);
        }
        Ok(())
    }

    pub(super) async fn blocking_conn(&self) -> Result<ConnectionManager, NotifyError> {
        let mut slot = self.blocking.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.link.dedicated().await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    pub(super) async fn fetch(
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
    pub(super) async fn parse(&self, entries: Vec<StreamId>) -> Result<Vec<Delivery>, NotifyError> {
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
                p.cmd("XADD")
                    .arg(&self.dead)
                    .arg("MAXLEN")
                    .arg(self.cap.max(1))
                    .arg("*")
                    .arg("raw")
                    .arg(raw)
                    .arg("dead_at_ms")
                    .arg(now_ms())
                    .ignore();
                p.cmd("XACK").arg(&self.jobs).arg(GROUP).arg(id).ignore();
            }
            let mut conn = self.conn().await?;
            p.query_async::<()>(&mut conn).await?;
        }
        Ok(out)
    }

    pub(super) async fn reclaim(
        &self,
        consumer: &str,
        max: usize,
        min_idle: Duration,
    ) -> Result<Vec<Delivery>, NotifyError> {
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
            metrics::counter!(names::NOTIFY_JOBS_RECLAIMED_TOTAL).increment(claimed.len() as u64);
        }
        self.parse(claimed).await
    }

    pub(super) async fn promote_due(&self) -> Result<usize, NotifyError> {
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

    pub(super) async fn settle(&self, done: &[(Delivery, Outcome)]) -> Result<(), NotifyError> {
        let mut p = redis::pipe();
        p.atomic();
        let mut acks: Vec<&str> = Vec::with_capacity(done.len());
        let now = now_ms();
        for (d, outcome) in done {
            let Handle::Stream(id) = &d.handle else { continue };
            if let Outcome::Failed(err) = outcome {
                let job = failed(&d.job, err);
                if job.attempts >= self.max_attempts {
                    // Capped (no consumer group reads the dead letters, so MAXLEN deletes nothing
                    // that was handed out): the oldest go first, like the in-memory queue's.
                    p.cmd("XADD")
                        .arg(&self.dead)
                        .arg("MAXLEN")
                        .arg(self.cap.max(1))
                        .arg("*")
                        .arg("job")
                        .arg(to_json(&job)?)
                        .arg("dead_at_ms")
                        .arg(now)
                        .ignore();
                } else {
                    let due = now + backoff(self.base_ms, job.attempts).as_millis() as u64;
                    p.cmd("ZADD").arg(&self.retry).arg(due).arg(to_json(&job)?).ignore();
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

    pub(super) async fn maintain(&self) -> Result<(u64, u64), NotifyError> {
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

    pub(super) fn dead_letter(&self, e: &StreamId) -> Option<DeadLetter> {
        let job: Job = serde_json::from_str(&e.get::<String>("job")?).ok()?;
        Some(DeadLetter { id: e.id.clone(), job, dead_at_ms: e.get("dead_at_ms").unwrap_or(0) })
    }

    pub(super) async fn dead_letters(&self, limit: usize) -> Result<(Vec<DeadLetter>, u64), NotifyError> {
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

    pub(super) async fn requeue(&self, wanted: Option<&HashSet<&str>>) -> Result<usize, NotifyError> {
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
                p.cmd("XADD").arg(&self.jobs).arg("*").arg("job").arg(to_json(&revived(dl.job))?).ignore();
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
