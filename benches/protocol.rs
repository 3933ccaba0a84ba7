//! Hot-path micro-benchmarks: event decode/encode and bus fan-out.
//! Run: `cargo bench --bench protocol` (HTML reports in target/criterion).

// criterion's macros generate undocumented public items.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use livechat::bus::{Bus, Subscriber};
use livechat::conn::ConnState;
use livechat::model::Message;
use livechat::store::Store;
use livechat::wire::server::message_frame;
use livechat::wire::{decode, DecodeLimits};

fn sample() -> Message {
    Message {
        id: 123_456,
        room_id: 42,
        seq: 9_876,
        sender_id: 77,
        content: "hello there, this is a fairly typical chat message of modest length".into(),
        timestamp: Utc::now(),
        client_msg_id: Some("0b8f5c1e-6a2d-4c1a-9f7e-2d3c4b5a6978".into()),
        reply_to: None,
        mentions: Vec::new(),
    }
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("protocol");
    g.throughput(Throughput::Elements(1));
    let text = br#"{"type":"message","room_id":42,"content":"hello there, this is a fairly typical chat message","client_msg_id":"0b8f5c1e-6a2d-4c1a-9f7e-2d3c4b5a6978"}"#;
    let limits = DecodeLimits { content_max_chars: 4096, sync_max_rooms: 500 };
    g.bench_function("decode_message", |b| b.iter(|| decode(std::hint::black_box(text), 77, limits)));
    let m = sample();
    g.bench_function("encode_message_frame", |b| b.iter(|| message_frame(std::hint::black_box(&m))));
    g.finish();
}

fn fanout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let _guard = rt.enter();
    // Never connects: a gap fill would need PostgreSQL, and this bench publishes gaplessly.
    let store = Store::new("postgres://bench@127.0.0.1:1/bench", 2, Duration::from_millis(100)).expect("store");
    let mut g = c.benchmark_group("bus_fanout");
    for subs in [1usize, 100, 10_000] {
        let bus = Bus::new(Arc::new(store.clone()), None);
        let conns: Vec<Arc<ConnState>> = (0..subs).map(|_| Arc::new(ConnState::new(1 << 20))).collect();
        for (i, conn) in conns.iter().enumerate() {
            bus.subscribe(1, Subscriber { conn_id: i as u64, user_id: i as i64, conn: conn.clone() }, None);
        }
        let frame = message_frame(&sample());
        let mut seq = 0i64;
        g.throughput(Throughput::Elements(subs as u64));
        g.bench_with_input(BenchmarkId::new("publish_message", subs), &subs, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    // Publish in chunks, then empty the outboxes outside the timed region.
                    let n = left.min(64);
                    let t = Instant::now();
                    for _ in 0..n {
                        seq += 1;
                        bus.publish_message(1, seq, frame.clone());
                    }
                    total += t.elapsed();
                    let mut sink = Vec::new();
                    for c in &conns {
                        c.outbox.drain(&mut sink, usize::MAX);
                        sink.clear();
                    }
                    left -= n;
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, codec, fanout);
criterion_main!(benches);
