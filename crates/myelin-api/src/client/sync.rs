//! `/sync`: the request's parameters; the work is `myelin_sync`'s.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3sync>

use axum::Json;
use axum::extract::State;
use myelin_sync::{SyncRequest, SyncSources};
use serde::Deserialize;
use serde_json::Value;

use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::MatrixQuery;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct SyncQuery {
    since: Option<String>,
    filter: Option<String>,
    #[serde(default)]
    full_state: bool,
    set_presence: Option<String>,
    timeout: Option<u64>,
}

/// `GET /_matrix/client/v3/sync`
pub async fn sync(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixQuery(query): MatrixQuery<SyncQuery>,
) -> ApiResult<Json<Value>> {
    let since = myelin_sync::parse_since(query.since.as_deref())?;
    let set_presence = myelin_sync::check_set_presence(query.set_presence.as_deref())?;
    let filter =
        myelin_sync::load_filter(state.storage.as_ref(), &me.user_id, query.filter.as_deref())
            .await?;
    // Polling marks the user active (or `unavailable`); room-mates hear of
    // a change.
    if state.presence.syncing(&me.user_id, set_presence) {
        let audience =
            myelin_rooms::presence::shared_users(state.storage.as_ref(), &me.user_id).await?;
        state
            .presence
            .wake(&me.user_id, audience.into_iter().collect());
    }
    let request = SyncRequest {
        user_id: me.user_id,
        device_id: me.device_id,
        since,
        filter,
        full_state: query.full_state,
        timeout: myelin_sync::timeout(query.timeout),
    };
    let sources = SyncSources {
        storage: state.storage.as_ref(),
        events: state.rooms.events(),
        receipts: state.rooms.receipts(),
        account_data: state.rooms.account_data(),
        to_device: state.rooms.to_device(),
        device_lists: state.rooms.device_lists(),
        notifier: state.rooms.notifier(),
        typing: &state.typing,
        presence: &state.presence,
    };
    Ok(Json(myelin_sync::sync(&sources, &request).await?))
}
