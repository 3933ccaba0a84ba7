//! REST API (docs/openapi.json): every route, status codes, field shapes, auth and
//! authorization.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn seqs(list: &[Value]) -> Vec<i64> {
    list.iter().map(|m| m["seq"].as_i64().expect("seq")).collect()
}

#[track_caller]
fn assert_room_object(r: &Value) {
    assert!(r["id"].is_i64(), "room.id: {r}");
    assert!(r["name"].is_string(), "room.name: {r}");
    assert!(r["last_seq"].is_i64(), "room.last_seq: {r}");
    assert_rfc3339_utc(&r["created_at"]);
}

#[track_caller]
fn find_by<'a>(list: &'a Value, key: &str, val: i64) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("expected an array: {list}"))
        .iter()
        .find(|x| x[key] == json!(val))
        .unwrap_or_else(|| panic!("no element with {key}={val} in {list}"))
}

fn contains_by(list: &Value, key: &str, val: i64) -> bool {
    list.as_array().map(|a| a.iter().any(|x| x[key] == json!(val))).unwrap_or(false)
}

// --- users and tokens ----------------------------------------------------------------------

#[tokio::test]
async fn create_user_returns_201_with_id_and_username() {
    let s = TestServer::start(&[]).await;
    let r = s.admin_post("/v1/users", json!({ "username": "ann" })).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert!(r.body["id"].is_i64(), "{r:?}");
    assert_eq!(r.body["username"], json!("ann"));
    let r2 = s.admin_post("/v1/users", json!({ "username": "bob" })).await;
    assert_eq!(r2.status, 201, "{r2:?}");
    assert_ne!(r.body["id"], r2.body["id"], "ids are distinct");
}

#[tokio::test]
async fn duplicate_username_is_409() {
    let s = TestServer::start(&[]).await;
    assert_eq!(s.admin_post("/v1/users", json!({ "username": "dup" })).await.status, 201);
    let r = s.admin_post("/v1/users", json!({ "username": "dup" })).await;
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.body["error"]["code"].is_string() && r.body["error"]["message"].is_string(), "{r:?}");
}

#[tokio::test]
async fn username_length_limits() {
    let s = TestServer::start(&[]).await;
    s.admin_post("/v1/users", json!({ "username": "" })).await.assert_error(400, "bad_request");
    let long51 = "x".repeat(51);
    s.admin_post("/v1/users", json!({ "username": long51 })).await.assert_error(400, "bad_request");
    let r = s.admin_post("/v1/users", json!({ "username": "y".repeat(50) })).await;
    assert_eq!(r.status, 201, "50 chars is allowed: {r:?}");
    let r = s.admin_post("/v1/users", json!({ "username": "z" })).await;
    assert_eq!(r.status, 201, "1 char is allowed: {r:?}");
    // Missing field / malformed JSON.
    s.admin_post("/v1/users", json!({})).await.assert_error(400, "bad_request");
    let tok = s.admin_token.clone();
    s.request_raw(Method::POST, "/v1/users", Some(&tok), "{not json").await.assert_error(400, "bad_request");
}

#[tokio::test]
async fn create_token_returns_working_token() {
    let s = TestServer::start(&[]).await;
    let r = s.admin_post("/v1/users", json!({ "username": "tok" })).await;
    let uid = r.body["id"].as_i64().unwrap();
    let before = now_secs() as i64;
    let r = s.admin_post("/v1/tokens", json!({ "user_id": uid, "ttl_secs": 3600 })).await;
    assert_eq!(r.status, 201, "{r:?}");
    let token = r.body["token"].as_str().expect("token string");
    // expires_at is present and ~ now + ttl (RFC 3339 string or unix seconds).
    let exp = match &r.body["expires_at"] {
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s).expect("expires_at RFC 3339").timestamp(),
        Value::Number(n) => n.as_i64().expect("expires_at integer"),
        other => panic!("expires_at missing or wrong type: {other}"),
    };
    assert!((before + 3600 - 5..=now_secs() as i64 + 3600 + 5).contains(&exp), "expires_at {exp}");
    // It is an HS256 JWT for that user signed with the server's secret.
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.set_required_spec_claims(&["exp", "sub"]);
    let claims =
        jsonwebtoken::decode::<Value>(token, &jsonwebtoken::DecodingKey::from_secret(s.jwt_secret.as_bytes()), &v)
            .expect("verifies with LIVECHAT_JWT_SECRET")
            .claims;
    assert_eq!(claims["sub"], json!(uid.to_string()));
    let rooms = s.get_json("/v1/rooms", token).await;
    assert_eq!(rooms.status, 200, "{rooms:?}");
}

#[tokio::test]
async fn admin_routes_refuse_missing_and_user_tokens() {
    let s = TestServer::start(&[]).await;
    let (uid, user_token) = s.create_user("plain").await;
    let no_auth = s.request(Method::POST, "/v1/users", None, Some(&json!({ "username": "x1" }))).await;
    no_auth.assert_error(401, "unauthorized");
    let bad = s.post_json("/v1/users", "not-the-admin-token", json!({ "username": "x2" })).await;
    bad.assert_error(401, "unauthorized");
    for (path, body) in
        [("/v1/users", json!({ "username": "x3" })), ("/v1/tokens", json!({ "user_id": uid, "ttl_secs": 60 }))]
    {
        let r = s.post_json(path, &user_token, body).await;
        assert!(r.status == 401 || r.status == 403, "user token on admin {path} must be refused: {r:?}");
        assert!(r.body["error"]["code"].is_string(), "{r:?}");
    }
    // Nothing was created by the refused calls.
    let r = s.admin_post("/v1/users", json!({ "username": "x3" })).await;
    assert_eq!(r.status, 201, "x3 must not exist yet: {r:?}");
}

// --- authentication of user routes ---------------------------------------------------------

#[tokio::test]
async fn user_routes_require_a_valid_token() {
    let s = TestServer::start(&[]).await;
    let (uid, _) = s.create_user("authy").await;
    let expired = s.mint_token(uid, -30);
    let wrong_sig = mint_token("not-the-server-secret", &uid.to_string(), 3600);
    let no_exp = mint_claims(&s.jwt_secret, &json!({ "sub": uid.to_string() }));
    for path in ["/v1/rooms", "/chat/history?room_id=1", "/v1/rooms/1/members"] {
        s.request(Method::GET, path, None, None).await.assert_error(401, "unauthorized");
        s.get_json(path, "garbage").await.assert_error(401, "unauthorized");
        s.get_json(path, &expired).await.assert_error(401, "unauthorized");
        s.get_json(path, &wrong_sig).await.assert_error(401, "unauthorized");
        s.get_json(path, &no_exp).await.assert_error(401, "unauthorized");
    }
    s.request(Method::POST, "/v1/rooms", None, Some(&json!({ "name": "n", "members": [] })))
        .await
        .assert_error(401, "unauthorized");
    // A freshly minted valid token works.
    let ok = s.mint_token(uid, 600);
    assert_eq!(s.get_json("/v1/rooms", &ok).await.status, 200);
}

// --- history -------------------------------------------------------------------------------

#[tokio::test]
async fn history_limit_bounds() {
    let s = TestServer::start(&[]).await;
    let (_, t) = s.create_user("lim").await;
    for bad in ["0", "501", "abc", "-1"] {
        s.get_json(&format!("/chat/history?room_id=1&limit={bad}"), &t).await.assert_error(400, "bad_request");
    }
    for good in ["1", "500"] {
        let r = s.get_json(&format!("/chat/history?room_id=1&limit={good}"), &t).await;
        assert_eq!(r.status, 200, "limit={good}: {r:?}");
        assert!(r.body.is_array(), "bare JSON array: {r:?}");
    }
    s.get_json("/chat/history?room_id=1&before_seq=abc", &t).await.assert_error(400, "bad_request");
}

#[tokio::test]
async fn history_default_limit_order_paging_and_shape() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (uid, t) = s.create_user("hist").await;
    let mut c = s.ws(&t).await;
    // Room 1's log so far (the user's join, §10): message i takes seq base + i.
    let base = s.last_seq(&t, 1).await;
    for i in 1..=55 {
        let e = c.send_and_echo(1, &format!("m{i}")).await;
        assert_eq!(e["seq"], json!(base + i), "seq of message {i}: {e}");
    }
    // Default: 50, newest first, room 1 when room_id omitted.
    let r = s.get_json("/chat/history", &t).await;
    assert_eq!(r.status, 200, "{r:?}");
    let list = r.body.as_array().expect("array").clone();
    assert_eq!(list.len(), 50, "default limit is 50");
    assert_eq!(seqs(&list), (base + 6..=base + 55).rev().collect::<Vec<_>>(), "newest first");
    let newest = &list[0];
    assert_history_message(newest);
    assert_eq!(newest["room_id"], json!(1));
    assert_eq!(newest["content"], json!("m55"));
    assert_eq!(newest["sender_id"], json!(uid));
    assert_eq!(newest["sender"]["username"], json!("hist"));
    assert!(newest["client_msg_id"].is_string(), "client_msg_id kept: {newest}");
    assert_eq!(newest["delivered"], json!(false), "nobody reported yet: {newest}");
    assert_eq!(newest["read"], json!(false), "nobody reported yet: {newest}");
    // ids increase with seq.
    let ids: Vec<i64> = list.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "ids increase with seq: {ids:?}");

    // Paging backwards (history lists messages only: the join at seq base is not one).
    let r = s.get_json(&format!("/chat/history?room_id=1&before_seq={}", base + 6), &t).await;
    assert_eq!(seqs(r.body.as_array().unwrap()), (base + 1..=base + 5).rev().collect::<Vec<_>>());
    let r = s.get_json(&format!("/chat/history?room_id=1&limit=3&before_seq={}", base + 10), &t).await;
    assert_eq!(seqs(r.body.as_array().unwrap()), vec![base + 9, base + 8, base + 7]);
    let r = s.get_json("/chat/history?room_id=1&limit=500", &t).await;
    assert_eq!(seqs(r.body.as_array().unwrap()), (base + 1..=base + 55).rev().collect::<Vec<_>>());
    let r = s.get_json(&format!("/chat/history?room_id=1&before_seq={}", base + 1), &t).await;
    assert_eq!(r.body, json!([]), "no message before the first one: {r:?}");
}

#[tokio::test]
async fn non_member_gets_403_on_history_and_members() {
    let s = TestServer::start(&[]).await;
    let (_, ta) = s.create_user("owner").await;
    let (_, tx) = s.create_user("outsider").await;
    let room = s.create_room(&ta, "private", &[]).await;
    s.get_json(&format!("/chat/history?room_id={room}"), &tx).await.assert_error(403, "forbidden");
    s.get_json(&format!("/v1/rooms/{room}/members"), &tx).await.assert_error(403, "forbidden");
    assert_eq!(s.get_json(&format!("/chat/history?room_id={room}"), &ta).await.status, 200);
    assert_eq!(s.get_json(&format!("/v1/rooms/{room}/members"), &ta).await.status, 200);
}

// --- rooms ---------------------------------------------------------------------------------

#[tokio::test]
async fn create_room_and_list_with_watermarks() {
    let s = TestServer::start(&[]).await;
    let (a, ta) = s.create_user("alice").await;
    let (b, tb) = s.create_user("bob").await;
    let (_, tc) = s.create_user("carol").await;

    let r = s.post_json("/v1/rooms", &ta, json!({ "name": "ops", "members": [b] })).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_room_object(&r.body);
    assert_eq!(r.body["name"], json!("ops"));
    // Its log starts with one join per member, the creator first (§10).
    assert_eq!(r.body["last_seq"], json!(2), "the joins of alice and bob: {r:?}");
    let room = r.body["id"].as_i64().unwrap();
    assert_ne!(room, 1);

    // Alice's list: general + ops, each with last_seq and her watermarks.
    let la = s.get_json("/v1/rooms", &ta).await;
    assert_eq!(la.status, 200, "{la:?}");
    for id in [1, room] {
        let r = find_by(&la.body, "id", id);
        assert_room_object(r);
        assert!(r["delivered_seq"].is_i64(), "delivered_seq: {r}");
        assert!(r["read_seq"].is_i64(), "read_seq: {r}");
    }
    assert_eq!(find_by(&la.body, "id", 1)["name"], json!("general"));
    // Bob is a member; Carol is not.
    assert!(contains_by(&s.get_json("/v1/rooms", &tb).await.body, "id", room));
    let lc = s.get_json("/v1/rooms", &tc).await;
    assert!(!contains_by(&lc.body, "id", room), "carol must not see ops: {lc:?}");
    assert!(contains_by(&lc.body, "id", 1), "carol is in general: {lc:?}");

    // last_seq follows messages (after the two joins).
    let mut c = s.ws(&ta).await;
    c.send_and_echo(room, "one").await;
    c.send_and_echo(room, "two").await;
    let la = s.get_json("/v1/rooms", &ta).await;
    let r = find_by(&la.body, "id", room);
    assert_eq!(r["last_seq"], json!(4), "{r}");
    assert_eq!(r["delivered_seq"], json!(0), "{r}");
    assert_eq!(r["read_seq"], json!(0), "{r}");
    let _ = a;
}

#[tokio::test]
async fn create_room_validation() {
    let s = TestServer::start(&[]).await;
    let (_, ta) = s.create_user("val").await;
    s.post_json("/v1/rooms", &ta, json!({ "members": [] })).await.assert_error(400, "bad_request");
    s.post_json("/v1/rooms", &ta, json!({ "name": "x", "members": "nope" })).await.assert_error(400, "bad_request");
    s.request_raw(Method::POST, "/v1/rooms", Some(&ta), "{").await.assert_error(400, "bad_request");
}

#[tokio::test]
async fn members_list_shape_and_online() {
    let s = TestServer::start(&[]).await;
    let (a, ta) = s.create_user("m_a").await;
    let (b, tb) = s.create_user("m_b").await;
    let room = s.create_room(&ta, "room", &[b]).await;

    let r = s.get_json(&format!("/v1/rooms/{room}/members"), &ta).await;
    assert_eq!(r.status, 200, "{r:?}");
    let arr = r.body.as_array().expect("bare array");
    assert_eq!(arr.len(), 2, "alice and bob: {r:?}");
    for m in arr {
        assert!(m["user_id"].is_i64(), "{m}");
        assert!(m["username"].is_string(), "{m}");
        assert!(m["online"].is_boolean(), "{m}");
        assert!(m["delivered_seq"].is_i64(), "{m}");
        assert!(m["read_seq"].is_i64(), "{m}");
    }
    assert_eq!(find_by(&r.body, "user_id", a)["username"], json!("m_a"));
    assert_eq!(find_by(&r.body, "user_id", b)["online"], json!(false));

    // Bob connects → online.
    let cb = s.ws_ready(&tb).await;
    let mut ca = s.ws_ready(&ta).await;
    let r = s.get_json(&format!("/v1/rooms/{room}/members"), &ta).await;
    assert_eq!(find_by(&r.body, "user_id", b)["online"], json!(true), "{r:?}");
    assert_eq!(find_by(&r.body, "user_id", a)["online"], json!(true), "{r:?}");

    // Bob leaves: alice sees presence offline, then the endpoint agrees.
    cb.close().await;
    ca.recv_until("bob offline presence", |v| {
        v["type"] == "presence" && v["user_id"] == json!(b) && v["online"] == json!(false)
    })
    .await;
    let r = s.get_json(&format!("/v1/rooms/{room}/members"), &ta).await;
    assert_eq!(find_by(&r.body, "user_id", b)["online"], json!(false), "{r:?}");
}

#[tokio::test]
async fn add_member_by_member_and_refused_for_non_member() {
    let s = TestServer::start(&[]).await;
    let (_, ta) = s.create_user("add_a").await;
    let (c, tc) = s.create_user("add_c").await;
    let (d, td) = s.create_user("add_d").await;
    let room = s.create_room(&ta, "club", &[]).await;

    // A non-member cannot add (even themselves).
    let r = s.post_json(&format!("/v1/rooms/{room}/members"), &td, json!({ "user_id": d })).await;
    r.assert_error(403, "forbidden");
    assert!(!contains_by(&s.get_json("/v1/rooms", &td).await.body, "id", room));

    let r = s.post_json(&format!("/v1/rooms/{room}/members"), &ta, json!({ "user_id": c })).await;
    assert!(matches!(r.status, 200 | 201 | 204), "add member: {r:?}");
    assert!(contains_by(&s.get_json("/v1/rooms", &tc).await.body, "id", room));
    assert_eq!(s.get_json(&format!("/chat/history?room_id={room}"), &tc).await.status, 200);
    let m = s.get_json(&format!("/v1/rooms/{room}/members"), &tc).await;
    assert!(contains_by(&m.body, "user_id", c), "{m:?}");

    // Malformed body.
    s.post_json(&format!("/v1/rooms/{room}/members"), &ta, json!({ "user_id": "x" }))
        .await
        .assert_error(400, "bad_request");
}

#[tokio::test]
async fn delete_member_self_other_and_admin() {
    let s = TestServer::start(&[]).await;
    let (_, ta) = s.create_user("del_a").await;
    let (b, tb) = s.create_user("del_b").await;
    let (c, tc) = s.create_user("del_c").await;
    let room = s.create_room(&ta, "leaving", &[b, c]).await;

    // A non-admin member cannot remove someone else.
    s.delete(&format!("/v1/rooms/{room}/members/{c}"), &tb).await.assert_error(403, "forbidden");
    assert!(contains_by(&s.get_json("/v1/rooms", &tc).await.body, "id", room), "c still a member");

    // Self-removal works.
    let r = s.delete(&format!("/v1/rooms/{room}/members/{b}"), &tb).await;
    assert!(matches!(r.status, 200 | 204), "self removal: {r:?}");
    assert!(!contains_by(&s.get_json("/v1/rooms", &tb).await.body, "id", room));
    s.get_json(&format!("/chat/history?room_id={room}"), &tb).await.assert_error(403, "forbidden");

    // The admin can remove anyone.
    let admin = s.admin_token.clone();
    let r = s.delete(&format!("/v1/rooms/{room}/members/{c}"), &admin).await;
    assert!(matches!(r.status, 200 | 204), "admin removal: {r:?}");
    s.get_json(&format!("/v1/rooms/{room}/members"), &tc).await.assert_error(403, "forbidden");
    let m = s.get_json(&format!("/v1/rooms/{room}/members"), &ta).await;
    assert_eq!(m.body.as_array().map(|a| a.len()), Some(1), "only alice left: {m:?}");
}

#[tokio::test]
async fn new_users_are_members_of_general() {
    let s = TestServer::start(&[]).await;
    let (a, ta) = s.create_user("g_a").await;
    let (b, _) = s.create_user("g_b").await;
    let m = s.get_json("/v1/rooms/1/members", &ta).await;
    assert_eq!(m.status, 200, "{m:?}");
    assert!(contains_by(&m.body, "user_id", a) && contains_by(&m.body, "user_id", b), "{m:?}");
}

#[tokio::test]
async fn healthz_is_public() {
    let s = TestServer::start(&[]).await;
    let r = s.get_anon("/healthz").await;
    assert_eq!(r.status, 200);
    let r = s.get_anon("/readyz").await;
    assert_eq!(r.status, 200, "{r:?}");
}

// --- bounds on memberships -------------------------------------------------------------------

#[tokio::test]
async fn rooms_per_user_and_members_at_creation_are_bounded() {
    let s =
        TestServer::start(&[("LIVECHAT_LIMITS__ROOMS_PER_USER", "3"), ("LIVECHAT_LIMITS__ROOM_CREATE_MEMBERS", "2")])
            .await;
    let (ann, t_ann) = s.create_user("ann").await;
    let (bob, _) = s.create_user("bob").await;
    let (cat, _) = s.create_user("cat").await;
    let (dan, t_dan) = s.create_user("dan").await;
    // Three members listed: past room_create_members.
    s.post_json("/v1/rooms", &t_ann, json!({"name": "big", "members": [bob, cat, dan]}))
        .await
        .assert_error(400, "too_large");
    // ann is in room 1; two more rooms make three.
    s.create_room(&t_ann, "r2", &[]).await;
    let r3 = s.create_room(&t_ann, "r3", &[]).await;
    s.post_json("/v1/rooms", &t_ann, json!({"name": "r4", "members": []})).await.assert_error(400, "too_large");
    // dan cannot add ann to a fourth room either; a member already in it changes nothing.
    let r_dan = s.create_room(&t_dan, "dans", &[]).await;
    s.post_json(&format!("/v1/rooms/{r_dan}/members"), &t_dan, json!({"user_id": ann}))
        .await
        .assert_error(400, "too_large");
    let again = s.post_json(&format!("/v1/rooms/{r3}/members"), &t_ann, json!({"user_id": ann})).await;
    assert_eq!(again.status, 200, "already a member: {}", again.text);
}

#[tokio::test]
async fn members_are_paged_by_user_id() {
    let s = TestServer::start(&[]).await;
    let (_, t_owner) = s.create_user("owner").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(s.create_user(&format!("m{i}")).await.0);
    }
    let room = s.create_room(&t_owner, "paged", &ids).await;
    let page = |after: i64| {
        let path = format!("/v1/rooms/{room}/members?limit=2&after_user_id={after}");
        let s = &s;
        let t = t_owner.clone();
        async move { s.get_json(&path, &t).await.body }
    };
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let body = page(after).await;
        let got: Vec<i64> =
            body.as_array().expect("array").iter().map(|m| m["user_id"].as_i64().expect("id")).collect();
        assert!(got.len() <= 2);
        if got.is_empty() {
            break;
        }
        after = *got.last().expect("last");
        seen.extend(got);
    }
    assert_eq!(seen.len(), 6, "owner and five members, each once: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ordered by user id");
    s.get_json(&format!("/v1/rooms/{room}/members?limit=0"), &t_owner).await.assert_error(400, "bad_request");
    s.get_json(&format!("/v1/rooms/{room}/members?after_user_id=-1"), &t_owner).await.assert_error(400, "bad_request");
}
