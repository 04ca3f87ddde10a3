//! Profiles, account data, filters and the user directory over real HTTP.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse";
const SEARCH: &str = "/_matrix/client/v3/user_directory/search";

fn profile(user_id: &str) -> String {
    format!("/_matrix/client/v3/profile/{user_id}")
}

fn global_data(user_id: &str, data_type: &str) -> String {
    format!("/_matrix/client/v3/user/{user_id}/account_data/{data_type}")
}

fn room_data(user_id: &str, room_id: &str, data_type: &str) -> String {
    format!("/_matrix/client/v3/user/{user_id}/rooms/{room_id}/account_data/{data_type}")
}

fn filters(user_id: &str) -> String {
    format!("/_matrix/client/v3/user/{user_id}/filter")
}

async fn search(server: &TestServer, token: &str, body: Value) -> Value {
    let (status, body) = server.post(SEARCH, Some(token), body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["limited"].is_boolean(), "{body}");
    body
}

fn result_ids(body: &Value) -> Vec<&str> {
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["user_id"].as_str().expect("user_id"))
        .collect()
}

async fn profile_defaults(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("alice", PASSWORD).await;
    let (status, body) = server.get(&profile("@alice:localhost"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "displayname": "alice" }));
    let (status, body) = server
        .get(
            &format!("{}/displayname", profile("@alice:localhost")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "displayname": "alice" }));
    let (status, body) = server
        .get(&format!("{}/avatar_url", profile("@alice:localhost")), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("avatar_url").is_none_or(Value::is_null), "{body}");
    // A percent-encoded user id is the same user.
    let (status, body) = server.get(&profile("%40alice%3Alocalhost"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["displayname"], json!("alice"));
    server.stop().await;
}

async fn set_own_profile(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let token = Some(alice.access_token.as_str());
    let base = profile("@alice:localhost");

    let (status, body) = server
        .put(
            &format!("{base}/displayname"),
            token,
            json!({ "displayname": "Alice L." }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
    let avatar = "mxc://localhost/AbC_123-x";
    let (status, body) = server
        .put(
            &format!("{base}/avatar_url"),
            token,
            json!({ "avatar_url": avatar }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = server.get(&base, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({ "displayname": "Alice L.", "avatar_url": avatar })
    );
    let (_, body) = server.get(&format!("{base}/displayname"), None).await;
    assert_eq!(body, json!({ "displayname": "Alice L." }));
    let (_, body) = server.get(&format!("{base}/avatar_url"), None).await;
    assert_eq!(body, json!({ "avatar_url": avatar }));

    // Unicode names are kept as they are.
    let (status, _) = server
        .put(
            &format!("{base}/displayname"),
            token,
            json!({ "displayname": "Алиса 🐇" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = server.get(&format!("{base}/displayname"), None).await;
    assert_eq!(body, json!({ "displayname": "Алиса 🐇" }));
    server.stop().await;
}

async fn profile_of_others_forbidden(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("alice", PASSWORD).await;
    let bob = server.register("bob", PASSWORD).await;
    let token = Some(bob.access_token.as_str());
    let base = profile("@alice:localhost");
    let result = server
        .put(
            &format!("{base}/displayname"),
            token,
            json!({ "displayname": "pwned" }),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let result = server
        .put(
            &format!("{base}/avatar_url"),
            token,
            json!({ "avatar_url": "mxc://localhost/x" }),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let result = server
        .put(
            &format!("{base}/displayname"),
            None,
            json!({ "displayname": "pwned" }),
        )
        .await;
    assert_error(&result, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    let (_, body) = server.get(&base, None).await;
    assert_eq!(body, json!({ "displayname": "alice" }));
    server.stop().await;
}

async fn profile_bad_input(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let token = Some(alice.access_token.as_str());
    let base = profile("@alice:localhost");
    for url in [
        "https://example.org/a.png",
        "mxc://localhost/",
        "mxc://localhost/a/b",
        "mxc:///abc",
        "avatar",
    ] {
        let result = server
            .put(
                &format!("{base}/avatar_url"),
                token,
                json!({ "avatar_url": url }),
            )
            .await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    let result = server
        .put(
            &format!("{base}/avatar_url"),
            token,
            json!({ "avatar_url": 5 }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let result = server
        .put(
            &format!("{base}/displayname"),
            token,
            json!({ "displayname": ["a"] }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let result = server
        .put(&format!("{base}/displayname"), token, json!("alice"))
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let result = server
        .request_raw(
            Method::PUT,
            &format!("{base}/displayname"),
            token,
            b"{not json".to_vec(),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_NOT_JSON");
    let (status, body) = server
        .put(
            &format!("{base}/displayname"),
            token,
            json!({ "displayname": "x".repeat(1000) }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an over-long display name is refused: {body}"
    );
    // Nothing changed.
    let (_, body) = server.get(&base, None).await;
    assert_eq!(body, json!({ "displayname": "alice" }));
    server.stop().await;
}

async fn profile_not_found(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("alice", PASSWORD).await;
    for suffix in ["", "/displayname", "/avatar_url"] {
        let result = server
            .get(&format!("{}{suffix}", profile("@nobody:localhost")), None)
            .await;
        assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let result = server
            .get(
                &format!("{}{suffix}", profile("@alice:remote.example")),
                None,
            )
            .await;
        assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        for invalid in [
            "alice",
            "@alice",
            "%40",
            "!room:localhost",
            "%40%FF%3Alocalhost",
        ] {
            let (status, body) = server
                .get(&format!("{}{suffix}", profile(invalid)), None)
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{invalid}{suffix}: {body}");
            assert!(body["errcode"].is_string(), "{body}");
        }
    }
    server.stop().await;
}

async fn global_account_data(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let token = Some(alice.access_token.as_str());
    let path = global_data("@alice:localhost", "org.example.settings");

    assert_error(
        &server.get(&path, token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let content = json!({ "theme": "dark", "nested": { "list": [1, 2, 3] }, "unicode": "é🐇" });
    let (status, body) = server.put(&path, token, content.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
    let (status, body) = server.get(&path, token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, content);

    // A second PUT replaces the content; it does not merge.
    let (status, _) = server.put(&path, token, json!({ "theme": "light" })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        server.get(&path, token).await.1,
        json!({ "theme": "light" })
    );
    // An empty object is content too.
    assert_eq!(server.put(&path, token, json!({})).await.0, StatusCode::OK);
    assert_eq!(server.get(&path, token).await, (StatusCode::OK, json!({})));
    // Types are distinct.
    let other = global_data("@alice:localhost", "org.example.other");
    assert_error(
        &server.get(&other, token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    server.stop().await;
}

async fn room_account_data(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let token = Some(alice.access_token.as_str());
    let path = room_data("@alice:localhost", "!room:localhost", "org.example.tag");

    assert_error(
        &server.get(&path, token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let (status, body) = server.put(&path, token, json!({ "colour": "blue" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        server.get(&path, token).await,
        (StatusCode::OK, json!({ "colour": "blue" }))
    );
    assert_eq!(
        server.put(&path, token, json!({ "size": 3 })).await.0,
        StatusCode::OK
    );
    assert_eq!(
        server.get(&path, token).await,
        (StatusCode::OK, json!({ "size": 3 }))
    );

    // Per room, and apart from global data of the same type.
    let other_room = room_data("@alice:localhost", "!other:localhost", "org.example.tag");
    assert_error(
        &server.get(&other_room, token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let global = global_data("@alice:localhost", "org.example.tag");
    assert_error(
        &server.get(&global, token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    // Room ids without a server part (room version 12) are room ids too.
    let v12 = room_data(
        "@alice:localhost",
        "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM",
        "org.example.tag",
    );
    assert_eq!(
        server.put(&v12, token, json!({ "v": 12 })).await.0,
        StatusCode::OK
    );
    assert_eq!(
        server.get(&v12, token).await,
        (StatusCode::OK, json!({ "v": 12 }))
    );
    server.stop().await;
}

async fn account_data_of_others(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let bob = server.register("bob", PASSWORD).await;
    let global = global_data("@alice:localhost", "org.example.secret");
    let room = room_data("@alice:localhost", "!room:localhost", "org.example.secret");
    for path in [&global, &room] {
        assert_eq!(
            server
                .put(path, Some(&alice.access_token), json!({ "s": 1 }))
                .await
                .0,
            StatusCode::OK
        );
        let token = Some(bob.access_token.as_str());
        assert_error(
            &server.get(path, token).await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
        assert_error(
            &server.put(path, token, json!({ "s": 2 })).await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
        assert_error(
            &server.get(path, None).await,
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
        );
        assert_error(
            &server.put(path, None, json!({})).await,
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
        );
        assert_eq!(
            server.get(path, Some(&alice.access_token)).await.1,
            json!({ "s": 1 })
        );
    }
    // Bob's own data of the same type is his, and empty.
    let bobs = global_data("@bob:localhost", "org.example.secret");
    assert_error(
        &server.get(&bobs, Some(&bob.access_token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    server.stop().await;
}

async fn account_data_bad_input(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let token = Some(alice.access_token.as_str());
    let me = "@alice:localhost";

    // Server-controlled types.
    let result = server
        .put(&global_data(me, "m.push_rules"), token, json!({}))
        .await;
    assert_error(&result, StatusCode::METHOD_NOT_ALLOWED, "M_BAD_JSON");
    let result = server
        .put(
            &room_data(me, "!room:localhost", "m.fully_read"),
            token,
            json!({ "event_id": "$e" }),
        )
        .await;
    assert_error(&result, StatusCode::METHOD_NOT_ALLOWED, "M_BAD_JSON");

    // Bodies that are not objects.
    for body in [json!([1, 2]), json!("text"), json!(5), json!(null)] {
        let result = server
            .put(&global_data(me, "org.example.x"), token, body.clone())
            .await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        let result = server
            .put(
                &room_data(me, "!room:localhost", "org.example.x"),
                token,
                body,
            )
            .await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    }
    let result = server
        .request_raw(
            Method::PUT,
            &global_data(me, "org.example.x"),
            token,
            b"{not json".to_vec(),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_NOT_JSON");

    // Bad room ids.
    for room in ["room", "%23alias%3Alocalhost", "!", "@alice:localhost"] {
        let result = server
            .put(&room_data(me, room, "org.example.x"), token, json!({}))
            .await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let result = server
            .get(&room_data(me, room, "org.example.x"), token)
            .await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    // An over-long type.
    let long = "t".repeat(300);
    let (status, body) = server.put(&global_data(me, &long), token, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // None of it was stored.
    assert_error(
        &server.get(&global_data(me, "org.example.x"), token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    server.stop().await;
}

async fn filter_round_trip(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let token = Some(alice.access_token.as_str());
    let definition = json!({
        "room": {
            "timeline": { "limit": 10, "types": ["m.room.message"], "lazy_load_members": true },
            "state": { "lazy_load_members": true },
        },
        "presence": { "not_types": ["*"] },
        "event_format": "client",
        "event_fields": ["type", "content.body"],
    });
    let (status, body) = server
        .post(&filters("@alice:localhost"), token, definition.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let filter_id = body["filter_id"].as_str().expect("filter_id").to_owned();
    assert!(
        !filter_id.is_empty() && !filter_id.starts_with('{'),
        "{filter_id}"
    );

    let (status, body) = server
        .get(
            &format!("{}/{filter_id}", filters("@alice:localhost")),
            token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, definition);

    // The empty filter is valid; each filter gets its own id.
    let (status, body) = server
        .post(&filters("@alice:localhost"), token, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let empty_id = body["filter_id"].as_str().expect("filter_id").to_owned();
    assert_ne!(empty_id, filter_id);
    let (status, body) = server
        .get(
            &format!("{}/{empty_id}", filters("@alice:localhost")),
            token,
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    server.stop().await;
}

async fn filters_of_others(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let bob = server.register("bob", PASSWORD).await;
    let (status, body) = server
        .post(
            &filters("@alice:localhost"),
            Some(&alice.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let filter_id = body["filter_id"].as_str().expect("filter_id").to_owned();
    let token = Some(bob.access_token.as_str());

    let result = server
        .post(&filters("@alice:localhost"), token, json!({}))
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let result = server
        .get(
            &format!("{}/{filter_id}", filters("@alice:localhost")),
            token,
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Under Bob's own path, Alice's filter id names nothing.
    let result = server
        .get(&format!("{}/{filter_id}", filters("@bob:localhost")), token)
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let result = server
        .get(
            &format!("{}/nosuchfilter", filters("@alice:localhost")),
            Some(&alice.access_token),
        )
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let result = server
        .post(&filters("@alice:localhost"), None, json!({}))
        .await;
    assert_error(&result, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    let result = server
        .get(
            &format!("{}/{filter_id}", filters("@alice:localhost")),
            None,
        )
        .await;
    assert_error(&result, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    server.stop().await;
}

async fn invalid_filters(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let token = Some(alice.access_token.as_str());
    let path = filters("@alice:localhost");
    let cases = [
        json!({ "room": { "timeline": { "limit": "ten" } } }),
        json!({ "room": { "timeline": { "limit": -1 } } }),
        json!({ "room": { "rooms": "!room:localhost" } }),
        json!({ "event_format": "xml" }),
        json!([]),
        json!("filter"),
    ];
    for definition in cases {
        let result = server.post(&path, token, definition.clone()).await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    }
    let result = server
        .request_raw(Method::POST, &path, token, b"{not json".to_vec())
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_NOT_JSON");
    server.stop().await;
}

async fn user_directory(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let bob = server.register("bob", PASSWORD).await;
    let carol = server.register("carol", PASSWORD).await;
    let path = format!("{}/displayname", profile("@carol:localhost"));
    let (status, _) = server
        .put(
            &path,
            Some(&carol.access_token),
            json!({ "displayname": "Wonderland Queen" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let token = &bob.access_token;

    // By localpart, by display name, whatever the case.
    for term in ["alic", "ALICE", "@alice:localhost"] {
        let body = search(&server, token, json!({ "search_term": term })).await;
        assert_eq!(
            result_ids(&body),
            vec![alice.user_id.as_str()],
            "{term}: {body}"
        );
    }
    for term in ["wonderland", "QUEEN", "land qu"] {
        let body = search(&server, token, json!({ "search_term": term })).await;
        assert_eq!(
            result_ids(&body),
            vec!["@carol:localhost"],
            "{term}: {body}"
        );
        assert_eq!(
            body["results"][0]["display_name"],
            json!("Wonderland Queen"),
            "{body}"
        );
        assert_eq!(body["limited"], json!(false));
    }
    let body = search(
        &server,
        token,
        json!({ "search_term": "nobody-matches-this" }),
    )
    .await;
    assert_eq!(body, json!({ "results": [], "limited": false }));
    // LIKE wildcards are literal characters.
    for term in ["%", "_", "\\"] {
        let body = search(&server, token, json!({ "search_term": term })).await;
        assert_eq!(body["results"], json!([]), "{term}: {body}");
    }
    server.stop().await;
}

async fn user_directory_limit(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut me = None;
    for i in 1..=5 {
        let session = server.register(&format!("member{i}"), PASSWORD).await;
        me.get_or_insert(session);
    }
    let token = me.expect("a session").access_token;
    let body = search(
        &server,
        &token,
        json!({ "search_term": "member", "limit": 2 }),
    )
    .await;
    assert_eq!(result_ids(&body).len(), 2, "{body}");
    assert_eq!(body["limited"], json!(true));
    let body = search(
        &server,
        &token,
        json!({ "search_term": "member", "limit": 5 }),
    )
    .await;
    assert_eq!(result_ids(&body).len(), 5, "{body}");
    assert_eq!(body["limited"], json!(false));
    let body = search(&server, &token, json!({ "search_term": "member" })).await;
    assert_eq!(result_ids(&body).len(), 5, "{body}");
    assert_eq!(body["limited"], json!(false));
    let mut ids = result_ids(&body);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5, "{body}");
    server.stop().await;
}

async fn user_directory_bad_input(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let token = Some(alice.access_token.as_str());
    assert_error(
        &server
            .post(SEARCH, None, json!({ "search_term": "a" }))
            .await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &server
            .post(SEARCH, Some("nope"), json!({ "search_term": "a" }))
            .await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &server.post(SEARCH, token, json!({})).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_error(
        &server
            .post(SEARCH, token, json!({ "search_term": 5 }))
            .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    let result = server
        .post(SEARCH, token, json!({ "search_term": "a", "limit": "ten" }))
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let result = server
        .post(SEARCH, token, json!({ "search_term": "a", "limit": -1 }))
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let (status, body) = server
        .post(SEARCH, token, json!({ "search_term": "a".repeat(1000) }))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an over-long term is refused: {body}"
    );
    server.stop().await;
}

backend_tests!(
    profile_defaults,
    set_own_profile,
    profile_of_others_forbidden,
    profile_bad_input,
    profile_not_found,
    global_account_data,
    room_account_data,
    account_data_of_others,
    account_data_bad_input,
    filter_round_trip,
    filters_of_others,
    invalid_filters,
    user_directory,
    user_directory_limit,
    user_directory_bad_input,
);
