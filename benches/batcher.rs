//! Group-commit writer throughput against a real PostgreSQL: committed rows/s per batch size.
//!
//! Run: `LIVECHAT_BENCH_PG_URL=postgres://postgres@127.0.0.1:55433/postgres cargo bench --bench batcher`
//! (scripts/services.sh starts such a PostgreSQL; LIVECHAT_TEST_PG_URL works too). A fresh
//! database `livechat_bench_<pid>` is created, migrated, used and dropped. Without a URL the
//! bench says so and measures nothing.

// criterion's macros generate undocumented public items.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use livechat::bus::{Bus, Subscriber};
use livechat::chat::{Ack, Publisher};
use livechat::conn::ConnState;
use livechat::store::group_commit::{self, Settings, Write};
use livechat::store::{migrate, Store};
use tokio_util::sync::CancellationToken;

fn admin_url() -> Option<String> {
    std::env::var("LIVECHAT_BENCH_PG_URL").or_else(|_| std::env::var("LIVECHAT_TEST_PG_URL")).ok()
}

/// The same server with another database (the URL's last path segment replaced).
fn with_db(url: &str, db: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    let base = base.rsplit_once('/').filter(|(b, _)| b.contains("://") && !b.ends_with('/')).map_or(base, |(b, _)| b);
    format!("{base}/{db}")
}

async fn admin(url: &str, sql: &str) {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect to bench PostgreSQL");
    tokio::spawn(conn);
    c.batch_execute(sql).await.expect("admin statement");
}

fn bench(c: &mut Criterion) {
    let Some(url) = admin_url() else {
        eprintln!("batcher bench: set LIVECHAT_BENCH_PG_URL (a PostgreSQL superuser URL) to run it");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let db = format!("livechat_bench_{}", std::process::id());
    let db_url = with_db(&url, &db);
    let (store, room) = rt.block_on(async {
        admin(&url, &format!("DROP DATABASE IF EXISTS {db}")).await;
        admin(&url, &format!("CREATE DATABASE {db}")).await;
        migrate::run(&db_url).await.expect("migrate");
        let store = Store::new(&db_url, 4, Duration::from_secs(2)).expect("store");
        store.create_user("bench", None).await.expect("user");
        (store, 1i64)
    });

    let mut g = c.benchmark_group("batcher");
    g.sample_size(10);
    for batch_max in [1usize, 100, 1000] {
        let per_iter = if batch_max == 1 { 200u64 } else { 5000 };
        g.throughput(Throughput::Elements(per_iter));
        g.bench_with_input(BenchmarkId::new("commit_messages", batch_max), &batch_max, |b, &batch_max| {
            b.to_async(&rt).iter_custom(|iters| {
                let store = store.clone();
                async move {
                    let bus = Bus::new(Arc::new(store.clone()), None);
                    let conn = Arc::new(ConnState::new(usize::MAX));
                    bus.subscribe(room, Subscriber { conn_id: 1, user_id: 0, conn: conn.clone() }, None);
                    let notify = Arc::new(tokio::sync::Notify::new());
                    let settings = Settings {
                        writers: 1,
                        queue_max: 100_000,
                        batch_max,
                        timeout: Duration::from_secs(30),
                        outbox: false,
                        reactions_max: 50,
                    };
                    let (writer, tasks) = group_commit::new(store, Publisher::new(bus, None), &settings, notify);
                    let drain = CancellationToken::new();
                    let handles: Vec<_> = tasks.into_iter().map(|t| tokio::spawn(t.run(drain.clone()))).collect();
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        for i in 0..per_iter {
                            let write = || Write::Message {
                                room_id: room,
                                sender_id: 1,
                                content: format!("bench message {i}"),
                                client_msg_id: None,
                                reply_to: None,
                                mentions: Vec::new(),
                            };
                            // A full queue answers at once; wait for room like a client would.
                            while writer.submit(write(), Ack::Conn { conn: conn.clone(), reference: None }).is_err() {
                                tokio::task::yield_now().await;
                            }
                        }
                        // Committed = published to the room's subscriber.
                        let mut seen = 0u64;
                        let mut sink = Vec::new();
                        while seen < per_iter {
                            conn.outbox.wait().await;
                            conn.outbox.drain(&mut sink, usize::MAX);
                            seen += sink.len() as u64;
                            sink.clear();
                        }
                        total += start.elapsed();
                    }
                    drain.cancel();
                    for h in handles {
                        let _ = h.await;
                    }
                    total
                }
            })
        });
    }
    g.finish();
    rt.block_on(async {
        drop(store);
        admin(&url, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
