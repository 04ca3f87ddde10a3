//! Pushers over HTTP: `GET /pushers` and `POST /pushers/set` with their
//! validation, and delivery to a stub push gateway (payload, formats,
//! retries, rejected pushkeys, refused private addresses, restarts).

mod common;

use axum::extract::State;
use axum::http::StatusCode as AxumStatus;
use axum::routing::post;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const V3: &str = "/_matrix/client/v3";
/// How long a test waits for something to reach the gateway.
const WAIT: Duration = Duration::from_secs(10);

backend_tests!(
    set_get_and_delete_pushers,
    set_pusher_validation,
    append_and_device_deletion_remove_pushers,
    delivers_notifications_with_the_spec_payload,
    event_id_only_format,
    failed_requests_are_retried,
    rejected_pushkey_deletes_the_pusher,
    private_addresses_are_refused_by_default,
    delivery_resumes_after_a_restart_without_repeats,
);

/// A stub push gateway on a loopback port that records every request.
struct Gateway {
    addr: SocketAddr,
    state: Arc<GatewayState>,
}

#[derive(Default)]
struct GatewayState {
    /// Every request: the status answered and the body.
    requests: Mutex<Vec<(u16, Value)>>,
    /// Answer 500 to this many requests next.
    fail_next: AtomicUsize,
    /// Answer 500 to every request while set.
    fail_all: AtomicBool,
    /// Pushkeys answered as `rejected`.
    reject: Mutex<Vec<String>>,
}

async fn notify(
    State(gw): State<Arc<GatewayState>>,
    axum::Json(body): axum::Json<Value>,
) -> (AxumStatus, axum::Json<Value>) {
    let failing = gw.fail_all.load(Ordering::SeqCst)
        || gw
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    let status = if failing { 500 } else { 200 };
    gw.requests.lock().unwrap().push((status, body.clone()));
    if failing {
        return (
            AxumStatus::INTERNAL_SERVER_ERROR,
            axum::Json(json!({ "error": "down" })),
        );
    }
    let rejects = gw.reject.lock().unwrap().clone();
    let rejected: Vec<&Value> = body["notification"]["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| &d["pushkey"])
        .filter(|k| rejects.iter().any(|r| k.as_str() == Some(r)))
        .collect();
    (AxumStatus::OK, axum::Json(json!({ "rejected": rejected })))
}

impl Gateway {
    async fn start() -> Self {
        let state = Arc::new(GatewayState::default());
        let app = axum::Router::new()
            .route("/_matrix/push/v1/notify", post(notify))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}/_matrix/push/v1/notify", self.addr)
    }

    /// Every request's body, with the status answered.
    fn requests(&self) -> Vec<(u16, Value)> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The notifications answered with 200, in order.
    fn delivered(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|(status, _)| *status == 200)
            .map(|(_, body)| body["notification"].clone())
            .collect()
    }

    /// Polls until a delivered notification for `event_id` arrives; returns it.
    async fn wait_delivered(&self, event_id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(n) = self
                .delivered()
                .into_iter()
                .find(|n| n["event_id"] == json!(event_id))
            {
                return n;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{event_id} was not delivered; the gateway saw {:?}",
                self.requests()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Delivered event ids, in order.
    fn delivered_ids(&self) -> Vec<String> {
        self.delivered()
            .iter()
            .map(|n| n["event_id"].as_str().expect("event_id").to_owned())
            .collect()
    }
}

/// The test config plus fast retries and a gateway on loopback.
async fn start(backend: Backend) -> TestServer {
    TestServer::start_with(backend, |c| {
        c.push.allow_private_addresses = true;
        c.push.retry_initial_ms = 50;
        c.push.retry_max_ms = 200;
        c.push.request_timeout_secs = 5;
    })
    .await
}

fn http_pusher(url: &str, pushkey: &str) -> Value {
    json!({
        "kind": "http",
        "app_id": "org.example.app",
        "pushkey": pushkey,
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "profile_tag": "tag1",
        "lang": "en",
        "data": { "url": url, "custom": "x" },
    })
}

async fn set(server: &TestServer, s: &Session, body: Value) {
    let (status, resp) = server
        .post(&format!("{V3}/pushers/set"), Some(&s.access_token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp, json!({}));
}

async fn pushers(server: &TestServer, s: &Session) -> Vec<Value> {
    let (status, body) = server
        .get(&format!("{V3}/pushers"), Some(&s.access_token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["pushers"].as_array().expect("pushers").clone()
}

/// A room of exactly `owner` and `other` (a one-to-one room for the
/// default push rules), named `name`.
async fn room_of_two(server: &TestServer, owner: &Session, other: &Session, name: &str) -> String {
    let body = json!({ "preset": "public_chat", "name": name });
    server.room_with(owner, body, &[other]).await
}

async fn send(server: &TestServer, s: &Session, room: &str, content: Value) -> String {
    server.send_event(s, room, "m.room.message", content).await
}

async fn text(server: &TestServer, s: &Session, room: &str, body: &str) -> String {
    server.say(s, room, body).await
}

async fn set_get_and_delete_pushers(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    assert!(pushers(&server, &alice).await.is_empty());

    let url = "https://push.example.org/_matrix/push/v1/notify";
    set(&server, &alice, http_pusher(url, "key-1")).await;
    assert_eq!(
        pushers(&server, &alice).await,
        [json!({
            "pushkey": "key-1",
            "kind": "http",
            "app_id": "org.example.app",
            "app_display_name": "Example",
            "device_display_name": "Phone",
            "profile_tag": "tag1",
            "lang": "en",
            "data": { "url": url, "custom": "x" },
        })]
    );
    assert!(pushers(&server, &bob).await.is_empty(), "per user");

    // The same app_id and pushkey replace the pusher.
    let mut changed = http_pusher(url, "key-1");
    changed["device_display_name"] = json!("Tablet");
    changed["data"] = json!({ "url": url, "format": "event_id_only" });
    changed.as_object_mut().unwrap().remove("profile_tag");
    set(&server, &alice, changed).await;
    let list = pushers(&server, &alice).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["device_display_name"], json!("Tablet"));
    assert_eq!(list[0]["data"]["format"], json!("event_id_only"));
    assert!(list[0].get("profile_tag").is_none(), "{list:?}");

    // An email pusher is stored too.
    set(
        &server,
        &alice,
        json!({
            "kind": "email",
            "app_id": "m.email",
            "pushkey": "alice@example.org",
            "app_display_name": "Email",
            "device_display_name": "alice@example.org",
            "lang": "en",
            "data": {},
        }),
    )
    .await;
    assert_eq!(pushers(&server, &alice).await.len(), 2);

    // kind: null deletes; deleting what does not exist is no error.
    let delete = json!({ "kind": null, "app_id": "org.example.app", "pushkey": "key-1" });
    set(&server, &alice, delete.clone()).await;
    let list = pushers(&server, &alice).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["kind"], json!("email"));
    set(&server, &alice, delete).await;

    assert_error(
        &server.get(&format!("{V3}/pushers"), None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &server
            .post(&format!("{V3}/pushers/set"), None, http_pusher(url, "k"))
            .await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    server.stop().await;
}

async fn set_pusher_validation(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let tok = Some(alice.access_token.as_str());
    let path = format!("{V3}/pushers/set");
    let url = "https://push.example.org/_matrix/push/v1/notify";
    let without = |key: &str| {
        let mut body = http_pusher(url, "key-1");
        body.as_object_mut().unwrap().remove(key);
        body
    };
    let with = |key: &str, value: Value| {
        let mut body = http_pusher(url, "key-1");
        body[key] = value;
        body
    };

    for key in [
        "kind",
        "app_id",
        "pushkey",
        "app_display_name",
        "device_display_name",
        "lang",
        "data",
    ] {
        let result = server.post(&path, tok, without(key)).await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
        assert!(
            result.1["error"].as_str().unwrap().contains(key),
            "{key}: {}",
            result.1
        );
    }
    // Deleting needs only kind, app_id and pushkey.
    assert_error(
        &server
            .post(&path, tok, json!({ "kind": null, "app_id": "a" }))
            .await,
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
    );
    assert_error(
        &server
            .post(
                &path,
                tok,
                with("data", json!({ "format": "event_id_only" })),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
    );
    for bad in [
        with("kind", json!("carrier-pigeon")),
        with("kind", json!("")),
        with("app_id", json!("a".repeat(65))),
        with("pushkey", json!("k".repeat(513))),
        with("data", json!({ "url": 5 })),
        with("data", json!({ "url": "not a url" })),
        with(
            "data",
            json!({ "url": "ftp://push.example.org/_matrix/push/v1/notify" }),
        ),
        with("data", json!({ "url": "https://push.example.org/notify" })),
        with("data", json!({ "url": "https://push.example.org/" })),
    ] {
        assert_error(
            &server.post(&path, tok, bad.clone()).await,
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        );
    }
    // At the limits exactly is fine; 64 characters may be more bytes.
    set(&server, &alice, with("app_id", json!("é".repeat(64)))).await;
    set(&server, &alice, with("pushkey", json!("k".repeat(512)))).await;
    // Wrong types are M_BAD_JSON.
    for bad in [
        with("kind", json!(5)),
        with("data", json!("url")),
        with("append", json!("yes")),
    ] {
        assert_error(
            &server.post(&path, tok, bad).await,
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        );
    }
    assert_eq!(pushers(&server, &alice).await.len(), 2);
    server.stop().await;
}

async fn append_and_device_deletion_remove_pushers(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let url = "https://push.example.org/_matrix/push/v1/notify";

    // The same app_id and pushkey for another user: append keeps both,
    // the default (append: false) takes the pushkey over.
    set(&server, &alice, http_pusher(url, "shared")).await;
    let mut appended = http_pusher(url, "shared");
    appended["append"] = json!(true);
    set(&server, &bob, appended).await;
    assert_eq!(pushers(&server, &alice).await.len(), 1);
    assert_eq!(pushers(&server, &bob).await.len(), 1);
    set(&server, &bob, http_pusher(url, "shared")).await;
    assert!(pushers(&server, &alice).await.is_empty());
    assert_eq!(pushers(&server, &bob).await.len(), 1);

    // A pusher goes with the device that set it: logout …
    let (status, body) = server.login("alice", "password-alice").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let phone = Session {
        user_id: alice.user_id.clone(),
        access_token: body["access_token"].as_str().unwrap().to_owned(),
        device_id: body["device_id"].as_str().unwrap().to_owned(),
        password: alice.password.clone(),
    };
    set(&server, &phone, http_pusher(url, "phone")).await;
    set(&server, &alice, http_pusher(url, "first-device")).await;
    assert_eq!(pushers(&server, &alice).await.len(), 2);
    let (status, body) = server
        .post(
            &format!("{V3}/logout"),
            Some(&phone.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list = pushers(&server, &alice).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["pushkey"], json!("first-device"));

    // … or deletion through the devices API.
    let (status, body) = server
        .delete(
            &format!("{V3}/devices/{}", alice.device_id),
            Some(&alice.access_token),
            Some(json!({ "auth": {
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": "alice" },
                "password": "password-alice",
            }})),
        )
        .await;
    // (UIA accepts the password stage without a session.)
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = server.login("alice", "password-alice").await;
    let again = Session {
        user_id: alice.user_id.clone(),
        access_token: body["access_token"].as_str().unwrap().to_owned(),
        device_id: body["device_id"].as_str().unwrap().to_owned(),
        password: alice.password.clone(),
    };
    assert!(pushers(&server, &again).await.is_empty());

    // Deactivation takes every pusher of the account.
    set(&server, &again, http_pusher(url, "last")).await;
    let (status, body) = server
        .post(
            &format!("{V3}/account/deactivate"),
            Some(&again.access_token),
            json!({ "auth": {
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": "alice" },
                "password": "password-alice",
            }}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let left = server
        .storage()
        .pushers(&alice.user_id)
        .await
        .expect("pushers");
    assert!(left.is_empty(), "{left:?}");
    server.stop().await;
}

async fn delivers_notifications_with_the_spec_payload(backend: Backend) {
    let gateway = Gateway::start().await;
    let server = start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = room_of_two(&server, &alice, &bob, "Pushy").await;
    // Before the pusher: never delivered.
    let early = text(&server, &bob, &room, "before the pusher").await;

    set(&server, &alice, http_pusher(&gateway.url(), "key-1")).await;
    let before_s = myelin_core::time::now_ms() / 1000;
    let hello = text(&server, &bob, &room, "hello").await;
    let n = gateway.wait_delivered(&hello).await;
    assert_eq!(n["event_id"], json!(hello));
    assert_eq!(n["room_id"], json!(room));
    assert_eq!(n["type"], json!("m.room.message"));
    assert_eq!(n["sender"], json!(bob.user_id));
    assert_eq!(n["sender_display_name"], json!("bob"));
    assert_eq!(n["room_name"], json!("Pushy"));
    assert_eq!(
        n["content"],
        json!({ "msgtype": "m.text", "body": "hello" })
    );
    assert_eq!(n["prio"], json!("high"));
    assert!(n["counts"]["unread"].as_u64().unwrap() >= 1, "{n}");
    let devices = n["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 1);
    let d = &devices[0];
    assert_eq!(d["app_id"], json!("org.example.app"));
    assert_eq!(d["pushkey"], json!("key-1"));
    assert_eq!(d["data"], json!({ "custom": "x" }), "data without url");
    assert_eq!(d["tweaks"], json!({ "sound": "default" }));
    let ts = d["pushkey_ts"].as_i64().expect("pushkey_ts");
    assert!(
        (before_s - 60..=before_s + 60).contains(&ts),
        "seconds: {ts}"
    );
    assert!(n.get("user_is_target").is_none());

    // A mention highlights; the badge counts both.
    let mention = send(
        &server,
        &bob,
        &room,
        json!({
            "msgtype": "m.text",
            "body": "alice: look",
            "m.mentions": { "user_ids": [alice.user_id] },
        }),
    )
    .await;
    let n = gateway.wait_delivered(&mention).await;
    assert_eq!(n["devices"][0]["tweaks"]["highlight"], json!(true), "{n}");
    assert_eq!(n["devices"][0]["tweaks"]["sound"], json!("default"), "{n}");
    assert_eq!(n["prio"], json!("high"));
    let unread = n["counts"]["unread"].as_u64().unwrap();
    assert!(unread >= 2, "{n}");

    // Alice's own message does not notify her; everything came once, in order.
    text(&server, &alice, &room, "mine").await;
    let last = text(&server, &bob, &room, "last").await;
    gateway.wait_delivered(&last).await;
    assert_eq!(gateway.delivered_ids(), [hello, mention, last]);
    assert!(!gateway.delivered_ids().contains(&early));
    server.stop().await;
}

async fn event_id_only_format(backend: Backend) {
    let gateway = Gateway::start().await;
    let server = start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = room_of_two(&server, &alice, &bob, "Quiet").await;
    let mut body = http_pusher(&gateway.url(), "key-1");
    body["data"] = json!({ "url": gateway.url(), "format": "event_id_only" });
    set(&server, &alice, body).await;

    let event = text(&server, &bob, &room, "secret").await;
    let n = gateway.wait_delivered(&event).await;
    let mut keys: Vec<&str> = n.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["counts", "devices", "event_id", "prio", "room_id"],
        "{n}"
    );
    assert_eq!(n["room_id"], json!(room));
    assert_eq!(n["devices"][0]["pushkey"], json!("key-1"));
    assert_eq!(
        n["devices"][0]["data"],
        json!({ "format": "event_id_only" })
    );
    assert!(n["counts"]["unread"].as_u64().unwrap() >= 1, "{n}");
    server.stop().await;
}

async fn failed_requests_are_retried(backend: Backend) {
    let gateway = Gateway::start().await;
    let server = start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = room_of_two(&server, &alice, &bob, "Flaky").await;
    set(&server, &alice, http_pusher(&gateway.url(), "key-1")).await;

    gateway.state.fail_next.store(2, Ordering::SeqCst);
    let first = text(&server, &bob, &room, "one").await;
    gateway.wait_delivered(&first).await;
    let attempts: Vec<u16> = gateway
        .requests()
        .iter()
        .filter(|(_, b)| b["notification"]["event_id"] == json!(first))
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(attempts, [500, 500, 200]);
    // The failure was recorded and then cleared by the success.
    let second = text(&server, &bob, &room, "two").await;
    gateway.wait_delivered(&second).await;
    assert_eq!(gateway.delivered_ids(), [first, second]);
    let stored = server.storage().pushers(&alice.user_id).await.unwrap();
    assert_eq!(stored[0].failing_since_ms, None);
    server.stop().await;
}

async fn rejected_pushkey_deletes_the_pusher(backend: Backend) {
    let gateway = Gateway::start().await;
    let server = start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = room_of_two(&server, &alice, &bob, "Gone").await;
    gateway.state.reject.lock().unwrap().push("dead".to_owned());
    set(&server, &alice, http_pusher(&gateway.url(), "dead")).await;
    set(&server, &alice, http_pusher(&gateway.url(), "alive")).await;

    let first = text(&server, &bob, &room, "one").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = pushers(&server, &alice).await;
        if list.len() == 1 {
            assert_eq!(list[0]["pushkey"], json!("alive"));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{list:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The live pusher goes on; the rejected one sends nothing more.
    let second = text(&server, &bob, &room, "two").await;
    gateway.wait_delivered(&second).await;
    let to = |key: &str| {
        gateway
            .requests()
            .iter()
            .filter(|(_, b)| b["notification"]["devices"][0]["pushkey"] == json!(key))
            .map(|(_, b)| b["notification"]["event_id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(to("dead"), [first.as_str()]);
    assert_eq!(to("alive"), [first, second]);
    server.stop().await;
}

async fn private_addresses_are_refused_by_default(backend: Backend) {
    let gateway = Gateway::start().await;
    let server = TestServer::start_with(backend, |c| {
        c.push.retry_initial_ms = 50;
        c.push.retry_max_ms = 200;
    })
    .await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = room_of_two(&server, &alice, &bob, "Inside").await;
    // The pusher is accepted (names resolve differently by delivery time)…
    set(&server, &alice, http_pusher(&gateway.url(), "literal")).await;
    let by_name = format!(
        "http://localhost:{}/_matrix/push/v1/notify",
        gateway.addr.port()
    );
    set(&server, &alice, http_pusher(&by_name, "by-name")).await;

    // … but delivery fails, and is recorded as failing.
    text(&server, &bob, &room, "hello").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stored = server.storage().pushers(&alice.user_id).await.unwrap();
        assert_eq!(stored.len(), 2);
        if stored.iter().all(|p| p.failing_since_ms.is_some()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stored:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gateway.requests().is_empty(), "{:?}", gateway.requests());
    // The server is fine.
    assert_eq!(pushers(&server, &alice).await.len(), 2);
    server.stop().await;
}

async fn delivery_resumes_after_a_restart_without_repeats(backend: Backend) {
    let gateway = Gateway::start().await;
    let mut server = start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = room_of_two(&server, &alice, &bob, "Durable").await;
    set(&server, &alice, http_pusher(&gateway.url(), "key-1")).await;

    let first = text(&server, &bob, &room, "one").await;
    gateway.wait_delivered(&first).await;
    // The second is pending (the gateway is down) when the server stops.
    gateway.state.fail_all.store(true, Ordering::SeqCst);
    let second = text(&server, &bob, &room, "two").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !gateway
        .requests()
        .iter()
        .any(|(_, b)| b["notification"]["event_id"] == json!(second))
    {
        assert!(tokio::time::Instant::now() < deadline, "no attempt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.restart().await;
    gateway.state.fail_all.store(false, Ordering::SeqCst);
    assert_eq!(pushers(&server, &alice).await.len(), 1);
    gateway.wait_delivered(&second).await;
    let third = text(&server, &bob, &room, "three").await;
    gateway.wait_delivered(&third).await;
    assert_eq!(gateway.delivered_ids(), [first, second, third]);
    server.stop().await;
}
