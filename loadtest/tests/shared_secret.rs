//! Shared-secret registration (Synapse's admin API) against a stand-in
//! that checks the nonce and the HMAC as Synapse does.

use axum::Json;
use axum::routing::get;
use loadtest::client::{Registration, Server};
use serde_json::{Value, json};

const SECRET: &str = "s3cret";
const NONCE: &str = "n0nce";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn register(Json(body): Json<Value>) -> (axum::http::StatusCode, Json<Value>) {
    let field = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
    let message = format!(
        "{}\0{}\0{}\0notadmin",
        field("nonce"),
        field("username"),
        field("password")
    );
    let mac = hex(&loadtest::hmac::hmac_sha1(
        SECRET.as_bytes(),
        message.as_bytes(),
    ));
    if field("nonce") != NONCE || field("mac") != mac || body["admin"] != json!(false) {
        let error = json!({ "errcode": "M_UNKNOWN", "error": "HMAC incorrect" });
        return (axum::http::StatusCode::FORBIDDEN, Json(error));
    }
    let user_id = format!("@{}:example.org", field("username"));
    let ok = json!({ "user_id": user_id, "access_token": "token", "device_id": "D" });
    (axum::http::StatusCode::OK, Json(ok))
}

#[tokio::test]
async fn registers_with_the_shared_secret() {
    let app = axum::Router::new().route(
        "/_synapse/admin/v1/register",
        get(|| async { Json(json!({ "nonce": NONCE })) }).post(register),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let server = Server::new(&base, Registration::SharedSecret(SECRET.to_owned()));
    let user = server.register("alice").await.expect("registered");
    assert_eq!(user.user_id, "@alice:example.org");
    assert_eq!(user.token, "token");

    let wrong = Server::new(&base, Registration::SharedSecret("wrong".to_owned()));
    let error = wrong
        .register("bob")
        .await
        .expect_err("a wrong secret fails");
    assert_eq!(error.code(), "M_UNKNOWN");
}
