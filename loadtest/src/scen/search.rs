//! `search`: latency of `GET /v1/search` (README "Search") in a room of `--messages` messages
//! (default 1,000,000) of realistic text: 4 to 16 words each, drawn from a vocabulary of
//! `--vocab` made-up words with a Zipf distribution (rank r has weight 1/r^`--zipf`), so a few
//! words are in most messages and most words in a few. Seeded over WebSocket by `--writers`
//! connections (the real write path); then it waits until the search index (filled off the
//! write path, README "Search") has caught up — a marker message sent last is found — and
//! reports how long that took; then, per query class, `--conns` keep-alive clients search for
//! `--secs` and the report gives p50/p99 per class.

use super::client::{seed_with, Client, Seed};
use super::output::{finish, new_report};
use super::setup::{api, make_tokens, make_users, run_prefix, target, ws_path};
use crate::clock::now_us;
use crate::hist::new_hist;
use crate::http::Conn;
use crate::report::pct;
use crate::Cli;
use anyhow::{bail, Result};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

/// Options of `search`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct SearchArgs {
    /// Messages to seed the room with
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: usize,
    /// Distinct words of the vocabulary
    #[arg(long, default_value_t = 20_000)]
    pub vocab: usize,
    /// Zipf exponent of word frequencies
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// WebSocket connections seeding in parallel
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Concurrent keep-alive HTTP clients per query class
    #[arg(long, default_value_t = 2)]
    pub conns: usize,
    /// How long each query class runs, seconds
    #[arg(long, default_value_t = 5.0)]
    pub secs: f64,
    /// Results per query
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

/// Syllables of the made-up words: pronounceable, lower-case ASCII, JSON- and URL-safe.
const SYLLABLES: [&str; 20] = [
    "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "be", "da", "fe", "gi", "ho", "ju", "pe", "qui", "ra", "se", "to",
    "zu",
];

/// The word of rank `i` (0 = most common): 400 words of two syllables, then three, then four,
/// each spelled by `i`'s digits in base 20, so every rank has its own word.
pub fn word(i: usize) -> String {
    let (mut n, len) = match i {
        0..400 => (i, 2),
        400..8400 => (i - 400, 3),
        _ => (i - 8400, 4),
    };
    let mut w = String::new();
    for _ in 0..len {
        w.push_str(SYLLABLES[n % 20]);
        n /= 20;
    }
    w
}

/// Draws word ranks with a Zipf distribution (inverse CDF over the cumulative weights).
pub struct Zipf {
    cumulative: Vec<f64>,
    x: u64,
}

impl Zipf {
    /// Ranks `0..n` with exponent `s`, reproducible from `seed`.
    pub fn new(n: usize, s: f64, seed: u64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n.max(1))
            .map(|r| {
                total += 1.0 / (r as f64).powf(s);
                total
            })
            .collect();
        Zipf { cumulative, x: seed | 1 }
    }

    /// A uniform draw in [0, 1).
    fn uniform(&mut self) -> f64 {
        // xorshift: cheap and reproducible
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        (self.x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The next rank.
    pub fn rank(&mut self) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let u = self.uniform() * total;
        self.cumulative.partition_point(|&c| c <= u).min(self.cumulative.len() - 1)
    }

    /// A message of 4 to 16 words, capitalised, with a full stop.
    pub fn sentence(&mut self) -> String {
        let n = 4 + (self.uniform() * 13.0) as usize;
        let mut text: String = (0..n).map(|_| word(self.rank())).collect::<Vec<_>>().join(" ");
        if let Some(first) = text.get(..1) {
            text.replace_range(..1, &first.to_ascii_uppercase());
        }
        text.push('.');
        text
    }
}

/// The query classes: name and the `q` values its clients cycle through. `room` narrows all
/// but the last class, which searches every room of the caller.
fn classes(vocab: usize) -> Vec<(&'static str, Vec<String>, bool)> {
    let rare_from = vocab - vocab / 10;
    let prefix = |i: usize| word(i)[..3].to_string();
    vec![
        ("common", (0..5).map(word).collect(), true),
        ("mid", (100..110).map(word).collect(), true),
        ("rare", (rare_from..rare_from + 10).map(word).collect(), true),
        ("prefix", (500..510).map(prefix).collect(), true),
        ("two-words", (0..10).map(|i| format!("{} {}", word(i), word(rare_from + i))).collect(), true),
        ("rare-all-rooms", (rare_from + 10..rare_from + 20).map(word).collect(), false),
    ]
}

/// Runs `search`.
pub(super) async fn run(cli: &Cli, a: SearchArgs) -> Result<()> {
    let c = &cli.common;
    if c.legacy {
        bail!("search: the legacy app has no search");
    }
    if a.vocab < 600 {
        bail!("search: --vocab must be at least 600 (the query classes use ranks up to 510)");
    }
    let t = target(c)?;
    // One user per writer: a writer counts the echoes of its own user only.
    let users = make_users(c, a.writers.max(1)).await?;
    let tokens = make_tokens(c, &users).await?;
    let room = api(c)?.create_room(&format!("{}search", run_prefix()), &tokens[0], &users[1..], 1).await?;
    let t0 = std::time::Instant::now();
    seed(t, room, &users, &tokens, &a).await?;
    let seed_secs = t0.elapsed().as_secs_f64();
    eprintln!("seeded {} messages in {seed_secs:.1}s", a.messages);
    let t1 = std::time::Instant::now();
    await_index(t, room, users[0], &tokens[0]).await?;
    let catch_up = t1.elapsed().as_secs_f64();
    eprintln!("index caught up {catch_up:.1}s after the last message");
    let mut rep = new_report(cli, "search", serde_json::to_value(&a)?);
    rep.summary.insert("seed_messages_per_s".into(), json!((a.messages as f64 / seed_secs).round()));
    rep.summary.insert("index_catch_up_s".into(), json!((catch_up * 10.0).round() / 10.0));
    let mut first: Option<Histogram<u64>> = None;
    for (name, queries, narrow) in classes(a.vocab) {
        let (h, ok, bad, hits) = run_class(t, &tokens[0], narrow.then_some(room), Arc::new(queries), &a).await?;
        eprintln!("{name}: {ok} queries, p50 {} µs, p99 {} µs", h.value_at_quantile(0.5), h.value_at_quantile(0.99));
        rep.summary
            .insert(name.into(), json!({ "queries": ok, "failed": bad, "rows_first_page": hits, "latency": pct(&h) }));
        first.get_or_insert(h);
    }
    rep.dist = first;
    rep.dist_name = format!("search latency, common words, {} messages", a.messages);
    finish(c, &rep)
}

/// Seeds the room: `--writers` connections (user `w` on connection `w`), each its share, 256
/// in flight.
async fn seed(t: SocketAddr, room: u64, users: &[u64], tokens: &[String], a: &SearchArgs) -> Result<()> {
    let per = a.messages.div_ceil(users.len());
    let tasks: Vec<_> = (0..users.len())
        .map(|w| {
            let (path, a, user) = (ws_path(&tokens[w]), a.clone(), users[w]);
            let n = per.min(a.messages.saturating_sub(w * per));
            tokio::task::spawn_local(async move {
                let mut cl = Client::open(t, w, &path).await?;
                let mut z = Zipf::new(a.vocab, a.zipf, 0x5EED ^ (w as u64 + 1));
                let tag = format!("s{w}-");
                seed_with(&mut cl, Seed { room, user, n, window: 256, tag: &tag }, |_| z.sentence()).await
            })
        })
        .collect();
    for tk in tasks {
        tk.await??;
    }
    Ok(())
}

/// Sends a marker message and waits (at most 10 minutes) until search finds it: a room is
/// indexed in seq order, so every message before it is searchable too.
async fn await_index(t: SocketAddr, room: u64, user: u64, token: &str) -> Result<()> {
    const MARKER: &str = "zzcaughtupmarker";
    let mut cl = Client::open(t, 99, &ws_path(token)).await?;
    seed_with(&mut cl, Seed { room, user, n: 1, window: 1, tag: "marker" }, |_| MARKER.to_string()).await?;
    let mut conn = Conn::new(t, 999);
    let deadline = now_us() + 600_000_000;
    while now_us() < deadline {
        let path = format!("/v1/search?q={MARKER}&room_id={room}&limit=1");
        let r = conn.request("GET", &path, Some(token), None).await?;
        if r.status == 200 && memchr::memmem::find(&r.body, MARKER.as_bytes()).is_some() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    bail!("search: the index did not catch up within 10 minutes")
}

/// One class: `--conns` clients cycle through `queries` for `--secs`. Returns the latency,
/// successes, failures and the rows of the first answer.
async fn run_class(
    t: SocketAddr,
    token: &str,
    room: Option<u64>,
    queries: Arc<Vec<String>>,
    a: &SearchArgs,
) -> Result<(Histogram<u64>, u64, u64, usize)> {
    let end = now_us() + (a.secs * 1e6) as u64;
    let tasks: Vec<_> = (0..a.conns.max(1))
        .map(|w| {
            let (tok, queries, limit) = (token.to_string(), queries.clone(), a.limit);
            tokio::task::spawn_local(async move {
                let mut conn = Conn::new(t, 1000 + w);
                let (mut h, mut ok, mut bad, mut rows) = (new_hist(), 0u64, 0u64, None);
                let mut i = w;
                while now_us() < end {
                    let q = &queries[i % queries.len()];
                    i += 1;
                    let mut path = format!("/v1/search?q={}&limit={limit}", q.replace(' ', "%20"));
                    if let Some(r) = room {
                        path.push_str(&format!("&room_id={r}"));
                    }
                    let s = now_us();
                    match conn.request("GET", &path, Some(&tok), None).await {
                        Ok(r) if r.status == 200 => {
                            let _ = h.record((now_us() - s).max(1));
                            ok += 1;
                            rows.get_or_insert_with(|| memchr::memmem::find_iter(&r.body, b"\"seq\":").count());
                        }
                        _ => bad += 1,
                    }
                }
                (h, ok, bad, rows.unwrap_or(0))
            })
        })
        .collect();
    let (mut h, mut ok, mut bad, mut rows) = (new_hist(), 0, 0, 0);
    for tk in tasks {
        let (h1, ok1, bad1, rows1) = tk.await?;
        let _ = h.add(&h1);
        (ok, bad, rows) = (ok + ok1, bad + bad1, rows.max(rows1));
    }
    Ok((h, ok, bad, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rank_has_its_own_word() {
        let words: std::collections::HashSet<String> = (0..20_000).map(word).collect();
        assert_eq!(words.len(), 20_000);
        assert_eq!(word(0), "kaka");
        assert!(word(19_999).len() >= 8);
    }

    #[test]
    fn zipf_favours_low_ranks() {
        let mut z = Zipf::new(1000, 1.0, 7);
        let draws: Vec<usize> = (0..20_000).map(|_| z.rank()).collect();
        let top = draws.iter().filter(|&&r| r == 0).count();
        let tail = draws.iter().filter(|&&r| r >= 500).count();
        assert!(draws.iter().all(|&r| r < 1000));
        // rank 1 has weight 1/H(1000) ≈ 13 %; ranks 500.. together ≈ 9 %
        assert!((2000..3400).contains(&top), "rank 0 drawn {top} times");
        assert!((1200..2400).contains(&tail), "ranks >= 500 drawn {tail} times");
        assert!(z.sentence().ends_with('.'));
    }
}
