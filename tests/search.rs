//! Search (SPEC §11): `GET /v1/search` finds messages whose every query word occurs as a whole
//! word or a prefix of one, case-insensitively (words of 1..=2 characters whole only), newest
//! first, paged with `before_id`, only in the caller's rooms; deleted messages never match and
//! edited ones match their current text; a bad `q` or `limit` is a 400. The index is filled
//! off the write path (README "Search"), so each test first awaits its newest message in the
//! results; a restarted server indexes what it had not.
//!
//! Real parts only: the `livechat` binary, PostgreSQL and real WebSocket clients.

mod common;

use common::*;
use serde_json::{json, Value};

/// `GET /v1/search?<query>` as `token` → the ids found (asserts 200 and the history shape).
async fn search_ids(s: &TestServer, token: &str, query: &str) -> Vec<i64> {
    let r = s.get_json(&format!("/v1/search?{query}"), token).await;
    assert_eq!(r.status, 200, "search {query}: {r:?}");
    let list = r.body.as_array().unwrap_or_else(|| panic!("search answers an array: {r:?}"));
    for m in list {
        assert_v2_history_message(m);
    }
    list.iter().map(id_of).collect()
}

/// Polls `GET /v1/search?<query>` until message `id` is among the results (the indexer has
/// reached it); bounded.
async fn await_indexed(s: &TestServer, token: &str, query: &str, id: i64) {
    let deadline = std::time::Instant::now() + RECV_TIMEOUT;
    loop {
        if search_ids(s, token, query).await.contains(&id) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "message {id} not found by `{query}` in {RECV_TIMEOUT:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `q` percent-encoded.
fn q(text: &str) -> String {
    format!("q={}", urlencoding(text))
}

fn urlencoding(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whole words, prefixes, case, several words, short words: one room, one sender.
#[tokio::test]
async fn words_prefixes_case_and_short_words() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (_, ta) = s.create_user(&uname("sr_a")).await;
    let mut ca = s.ws_ready(&ta).await;
    let room = s.create_room(&ta, "search", &[]).await;
    let mut ids = Vec::new();
    for text in [
        "The deployment finished at noon", // 0
        "Anna will deploy tomorrow",       // 1
        "let's go to the DEPLOY review",   // 2
        "good morning everyone",           // 3
        "ann@example.com wrote the notes", // 4
        "nothing to see here",             // 5
    ] {
        ids.push(id_of(&ca.send_and_echo(room, text).await));
    }
    let room_q = format!("room_id={room}");
    let find = |text: &str| format!("{}&{room_q}", q(text));
    await_indexed(&s, &ta, &find("nothing"), ids[5]).await;

    // prefix + case: `deploy` finds "deployment", "deploy" and "DEPLOY", newest first
    assert_eq!(search_ids(&s, &ta, &find("deploy")).await, vec![ids[2], ids[1], ids[0]]);
    assert_eq!(search_ids(&s, &ta, &find("DEPLOYMENT")).await, vec![ids[0]]);
    // `ann` finds "Anna" and the address (one word of the stored text)
    assert_eq!(search_ids(&s, &ta, &find("ann")).await, vec![ids[4], ids[1]]);
    // every word must occur
    assert_eq!(search_ids(&s, &ta, &find("deploy review")).await, vec![ids[2]]);
    assert_eq!(search_ids(&s, &ta, &find("anna deployment")).await, Vec::<i64>::new());
    // a prefix must start a word: `ploy` is inside words only
    assert_eq!(search_ids(&s, &ta, &find("ploy")).await, Vec::<i64>::new());
    // 1..=2 characters: whole words only (`go` is not a prefix of "good")
    assert_eq!(search_ids(&s, &ta, &find("go")).await, vec![ids[2]]);
    assert_eq!(search_ids(&s, &ta, &find("goo")).await, vec![ids[3]]);
    // punctuation around words is not part of them
    assert_eq!(search_ids(&s, &ta, &find("  noon!  ")).await, vec![ids[0]]);
    // quotes and tsquery operators in q are text, not syntax
    assert_eq!(search_ids(&s, &ta, &find("let's")).await, vec![ids[2]]);
    assert_eq!(search_ids(&s, &ta, &find("deploy | nothing & !see")).await, Vec::<i64>::new());
    assert_eq!(search_ids(&s, &ta, &find("!!! ???")).await, Vec::<i64>::new());
}

/// Only the caller's rooms: another room's messages never appear, `room_id` narrows, a room
/// the caller is not in is refused like history, and a member who left no longer finds it.
#[tokio::test]
async fn only_the_callers_rooms() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (a, ta) = s.create_user(&uname("sm_a")).await;
    let (b, tb) = s.create_user(&uname("sm_b")).await;
    let mut ca = s.ws_ready(&ta).await;
    let shared = s.create_room(&ta, "shared", &[b]).await;
    let private = s.create_room(&ta, "private", &[]).await;
    let in_shared = id_of(&ca.send_and_echo(shared, "zebra crossing shared").await);
    let in_private = id_of(&ca.send_and_echo(private, "zebra crossing private").await);
    await_indexed(&s, &ta, &q("private"), in_private).await;
    await_indexed(&s, &ta, &q("shared"), in_shared).await;

    assert_eq!(search_ids(&s, &ta, &q("zebra")).await, vec![in_private, in_shared]);
    assert_eq!(search_ids(&s, &tb, &q("zebra")).await, vec![in_shared], "b is not in the private room");
    assert_eq!(search_ids(&s, &ta, &format!("{}&room_id={shared}", q("zebra"))).await, vec![in_shared]);
    let r = s.get_json(&format!("/v1/search?{}&room_id={private}", q("zebra")), &tb).await;
    r.assert_error(403, "forbidden");
    let r = s.get_json(&format!("/v1/search?{}&room_id=999999", q("zebra")), &tb).await;
    r.assert_error(404, "not_found");

    let r = s.delete(&format!("/v1/rooms/{shared}/members/{b}"), &tb).await;
    assert!(matches!(r.status, 200 | 204), "b leaves: {r:?}");
    assert_eq!(search_ids(&s, &tb, &q("zebra")).await, Vec::<i64>::new(), "b left the shared room");
    assert_eq!(search_ids(&s, &ta, &q("crossing")).await.len(), 2, "a still finds both (user {a})");
}

/// Deleted messages never match; edited ones match their current text only.
#[tokio::test]
async fn deleted_never_match_edits_match_current_text() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (_, ta) = s.create_user(&uname("sd_a")).await;
    let mut ca = s.ws_ready(&ta).await;
    let room = s.create_room(&ta, "edits", &[]).await;
    let gone = id_of(&ca.send_and_echo(room, "walrus to delete").await);
    let edited = id_of(&ca.send_and_echo(room, "original platypus").await);
    let kept = id_of(&ca.send_and_echo(room, "walrus that stays").await);
    await_indexed(&s, &ta, &q("walrus"), kept).await;
    await_indexed(&s, &ta, &q("original"), edited).await;

    send_delete(&mut ca, gone).await;
    ack(&mut ca, room, "delete", gone).await;
    send_edit(&mut ca, edited, "revised narwhal").await;
    ack(&mut ca, room, "edit", edited).await;

    // at once, before the indexer has seen the delete and the edit: never the erased or the
    // old text
    assert_eq!(search_ids(&s, &ta, &q("walrus")).await, vec![kept]);
    assert_eq!(search_ids(&s, &ta, &q("platypus")).await, Vec::<i64>::new());
    // the new text once the indexer has reached the edit
    await_indexed(&s, &ta, &q("narwh"), edited).await;
    assert_eq!(search_ids(&s, &ta, &q("narwh")).await, vec![edited]);
    assert_eq!(search_ids(&s, &ta, &q("walrus")).await, vec![kept], "the delete indexed: still not found");
    let r = s.get_json(&format!("/v1/search?{}", q("revised")), &ta).await;
    assert_eq!(r.body[0]["content"], json!("revised narwhal"), "{r:?}");
    assert!(r.body[0]["edited_at"].is_string(), "{r:?}");
}

/// Newest first, `limit` per page, `before_id` pages back to the end without repeats.
#[tokio::test]
async fn pages_newest_first_with_before_id() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (_, ta) = s.create_user(&uname("sp_a")).await;
    let mut ca = s.ws_ready(&ta).await;
    let room = s.create_room(&ta, "pages", &[]).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(id_of(&ca.send_and_echo(room, &format!("pelican number {i}")).await));
        ca.send_and_echo(room, &format!("filler {i}")).await;
    }
    ids.reverse();
    await_indexed(&s, &ta, &q("pelican"), ids[0]).await;
    let mut seen = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let mut query = format!("{}&limit=3", q("pelican"));
        if let Some(b) = before {
            query.push_str(&format!("&before_id={b}"));
        }
        let page = search_ids(&s, &ta, &query).await;
        assert!(page.len() <= 3, "limit 3: {page:?}");
        if page.is_empty() {
            break;
        }
        before = page.last().copied();
        seen.extend(page);
        assert!(seen.len() <= ids.len(), "paging repeats: {seen:?}");
    }
    assert_eq!(seen, ids, "every match once, newest first");
    assert_eq!(search_ids(&s, &ta, &q("pelican")).await.len(), 7, "all seven fit the default limit of 20");
}

/// Bad `q`, `limit`, `room_id`, `before_id` → 400 `bad_request`; no token → 401; 200 chars ok.
#[tokio::test]
async fn bad_requests_are_refused() {
    let s = TestServer::start(&[]).await;
    let (_, ta) = s.create_user(&uname("sb_a")).await;
    let long = "a".repeat(201);
    for query in [
        String::new(),
        "q=".to_string(),
        format!("q={long}"),
        format!("{}&limit=0", q("x")),
        format!("{}&limit=101", q("x")),
        format!("{}&limit=ten", q("x")),
        format!("{}&room_id=0", q("x")),
        format!("{}&room_id=-3", q("x")),
        format!("{}&before_id=abc", q("x")),
    ] {
        let r = s.get_json(&format!("/v1/search?{query}"), &ta).await;
        r.assert_error(400, "bad_request");
    }
    let ok: Value = s.get_json(&format!("/v1/search?{}&limit=100", q(&"é".repeat(200))), &ta).await.body;
    assert_eq!(ok, json!([]), "200 characters (not bytes) is allowed");
    let r = s.request_raw(reqwest::Method::GET, &format!("/v1/search?{}", q("x")), None, "").await;
    r.assert_error(401, "unauthorized");
}

/// The index is persisted per room: a server that stopped before indexing (here: one whose
/// indexer waits ten minutes after a commit) indexes what it missed when it starts again, and
/// nothing it had indexed is lost.
#[tokio::test]
async fn a_restarted_server_indexes_what_it_had_not() {
    let mut s = TestServer::start(&[
        ("LIVECHAT_SEARCH__INDEX_DELAY_MS", "600000"),
        ("LIVECHAT_LOG", "warn,livechat::store::search_index=debug"),
    ])
    .await;
    // The start-up sweep first (else it could still be running when the messages commit).
    let deadline = std::time::Instant::now() + RECV_TIMEOUT;
    while !s.stderr().contains("Search index caught up.") {
        assert!(std::time::Instant::now() < deadline, "no start-up sweep: {}", s.stderr());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (_, ta) = s.create_user(&uname("sr_r")).await;
    let room = s.create_room(&ta, "restart", &[]).await;
    let mut ca = s.ws_ready(&ta).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(id_of(&ca.send_and_echo(room, &format!("armadillo {i}")).await));
    }
    assert_eq!(search_ids(&s, &ta, &q("armadillo")).await, Vec::<i64>::new(), "not indexed yet");
    drop(ca);
    s.sigkill();
    s.restart().await;
    ids.reverse();
    await_indexed(&s, &ta, &q("armadillo"), ids[0]).await;
    assert_eq!(search_ids(&s, &ta, &q("armadillo")).await, ids, "all five, once each");
}

/// Commits that land while a round is reading their room are indexed by the next round, not
/// left for the sweep (which this server runs once an hour): many rooms written in bursts
/// with no delay before a round, so rounds and commits overlap, and each room's last message
/// must turn up within the usual bound.
#[tokio::test]
async fn commits_during_a_round_are_indexed_without_the_sweep() {
    let race = [("LIVECHAT_SEARCH__INDEX_DELAY_MS", "0"), ("LIVECHAT_SEARCH__SWEEP_SECS", "3600")];
    let s = TestServer::start(&[FAST_LIMITS, &race[..]].concat()).await;
    let (_, ta) = s.create_user(&uname("sc_a")).await;
    let mut ca = s.ws_ready(&ta).await;
    let mut rooms = Vec::new();
    for i in 0..8 {
        rooms.push(s.create_room(&ta, &format!("race {i}"), &[]).await);
    }
    let mut last = vec![0; rooms.len()];
    for burst in 0..40 {
        let k = burst % rooms.len();
        for j in 0..10 {
            let cid = format!("r{burst}-{j}");
            ca.send_msg(rooms[k], &format!("ocelot{k}x{burst} filler"), Some(&cid)).await;
        }
        let cid = format!("r{burst}-9");
        let echo = ca.recv_until("the burst's last echo", |v| v["client_msg_id"] == json!(cid)).await;
        last[k] = id_of(&echo);
    }
    for (k, id) in last.iter().enumerate() {
        let burst = 32 + k;
        await_indexed(&s, &ta, &q(&format!("ocelot{k}x{burst}")), *id).await;
    }
}
