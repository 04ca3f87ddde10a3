//! Client-Server API handlers, one module per area of the spec.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/>

pub mod account;
pub mod account_data;
pub mod capabilities;
pub mod create_room;
pub mod cross_signing;
pub mod dehydrated_device;
pub mod devices;
pub mod directory;
pub mod directory_list;
pub mod ephemeral;
pub mod filter;
pub mod hierarchy;
pub mod keys;
pub mod login;
pub mod logout;
pub mod media;
pub mod membership;
pub mod notifications;
pub mod presence;
pub mod profile;
pub mod push_rules;
pub mod pushers;
pub mod register;
pub mod relations;
pub mod report;
pub mod room;
pub mod room_keys;
pub mod room_read;
pub mod search;
pub mod send;
pub mod session;
pub mod summary;
pub mod sync;
pub mod tags;
pub mod timestamp;
pub mod to_device;
pub mod upgrade;
pub mod user_directory;
pub mod versions;
pub mod well_known;

use axum::Router;
use axum::routing::{get, post, put};

use crate::state::AppState;

const V3: &str = "/_matrix/client/v3";

/// Every Client-Server route of this build.
pub fn routes() -> Router<AppState> {
    let v3 = |path: &str| format!("{V3}{path}");
    Router::new()
        .route("/.well-known/matrix/client", get(well_known::client))
        .route("/.well-known/matrix/server", get(well_known::server))
        .route("/_matrix/client/versions", get(versions::get_versions))
        .route(&v3("/capabilities"), get(capabilities::get_capabilities))
        // Registration
        .route(&v3("/register"), post(register::register))
        .route(&v3("/register/available"), get(register::available))
        .route(
            "/_matrix/client/v1/register/m.login.registration_token/validity",
            get(register::registration_token_validity),
        )
        // Login and sessions
        .route(
            &v3("/login"),
            get(login::get_login_flows).post(login::login),
        )
        .route(&v3("/refresh"), post(login::refresh))
        .route(&v3("/logout"), post(logout::logout))
        .route(&v3("/logout/all"), post(logout::logout_all))
        // Account
        .route(&v3("/account/whoami"), get(account::whoami))
        .route(&v3("/account/password"), post(account::change_password))
        .route(&v3("/account/deactivate"), post(account::deactivate))
        .route(&v3("/account/3pid"), get(account::threepids))
        // Devices
        .route(&v3("/devices"), get(devices::list_devices))
        .route(
            &v3("/devices/{device_id}"),
            get(devices::get_device)
                .put(devices::update_device)
                .delete(devices::delete_device),
        )
        .route(&v3("/delete_devices"), post(devices::delete_devices))
        // End-to-end encryption keys
        .route(&v3("/keys/upload"), post(keys::upload))
        .route(&v3("/keys/query"), post(keys::query))
        .route(&v3("/keys/claim"), post(keys::claim))
        .route(&v3("/keys/changes"), get(keys::changes))
        .route(
            &v3("/keys/device_signing/upload"),
            post(cross_signing::upload_device_signing),
        )
        .route(
            &v3("/keys/signatures/upload"),
            post(cross_signing::upload_signatures),
        )
        // Content repository
        .route("/_matrix/media/v3/upload", post(media::upload))
        .route("/_matrix/media/v1/create", post(media::create))
        .route(
            "/_matrix/media/v3/upload/{server_name}/{media_id}",
            put(media::upload_to),
        )
        .route("/_matrix/client/v1/media/config", get(media::config))
        .route("/_matrix/media/v3/config", get(media::config))
        .route(
            "/_matrix/client/v1/media/download/{server_name}/{media_id}",
            get(media::download),
        )
        .route(
            "/_matrix/client/v1/media/download/{server_name}/{media_id}/{file_name}",
            get(media::download_as),
        )
        .route(
            "/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}",
            get(media::thumbnail),
        )
        .route(
            "/_matrix/media/v3/download/{server_name}/{media_id}",
            get(media::legacy_download),
        )
        .route(
            "/_matrix/media/v3/download/{server_name}/{media_id}/{file_name}",
            get(media::legacy_download_as),
        )
        .route(
            "/_matrix/media/v3/thumbnail/{server_name}/{media_id}",
            get(media::legacy_thumbnail),
        )
        .route(
            "/_matrix/client/v1/media/preview_url",
            get(media::preview_url),
        )
        .route("/_matrix/media/v3/preview_url", get(media::preview_url))
        // Dehydrated devices (MSC3814)
        .route(
            "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device",
            get(dehydrated_device::get_dehydrated_device)
                .put(dehydrated_device::put_dehydrated_device)
                .delete(dehydrated_device::delete_dehydrated_device),
        )
        .route(
            "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/{device_id}/events",
            post(dehydrated_device::dehydrated_device_events),
        )
        // Server-side key backups
        .route(
            &v3("/room_keys/version"),
            get(room_keys::get_current_version).post(room_keys::create_version),
        )
        .route(
            &v3("/room_keys/version/{version}"),
            get(room_keys::get_version)
                .put(room_keys::update_version)
                .delete(room_keys::delete_version),
        )
        .route(
            &v3("/room_keys/keys"),
            get(room_keys::get_keys)
                .put(room_keys::put_keys)
                .delete(room_keys::delete_keys),
        )
        .route(
            &v3("/room_keys/keys/{room_id}"),
            get(room_keys::get_room_keys)
                .put(room_keys::put_room_keys)
                .delete(room_keys::delete_room_keys),
        )
        .route(
            &v3("/room_keys/keys/{room_id}/{session_id}"),
            get(room_keys::get_session_key)
                .put(room_keys::put_session_key)
                .delete(room_keys::delete_session_key),
        )
        // Profiles
        .route(&v3("/profile/{user_id}"), get(profile::get_profile))
        .route(
            &v3("/profile/{user_id}/displayname"),
            get(profile::get_displayname).put(profile::set_displayname),
        )
        .route(
            &v3("/profile/{user_id}/avatar_url"),
            get(profile::get_avatar_url).put(profile::set_avatar_url),
        )
        // Account data
        .route(
            &v3("/user/{user_id}/account_data/{data_type}"),
            get(account_data::get_global).put(account_data::put_global),
        )
        .route(
            &v3("/user/{user_id}/rooms/{room_id}/account_data/{data_type}"),
            get(account_data::get_room).put(account_data::put_room),
        )
        // Filters
        .route(&v3("/user/{user_id}/filter"), post(filter::create_filter))
        .route(
            &v3("/user/{user_id}/filter/{filter_id}"),
            get(filter::get_filter),
        )
        // User directory
        .route(&v3("/user_directory/search"), post(user_directory::search))
        // Rooms
        .route(&v3("/createRoom"), post(create_room::create_room))
        .route(&v3("/joined_rooms"), get(membership::joined_rooms))
        .route(
            &v3("/join/{room_id_or_alias}"),
            post(membership::join_by_id_or_alias),
        )
        .route(&v3("/knock/{room_id_or_alias}"), post(membership::knock))
        .route(&v3("/rooms/{room_id}/join"), post(membership::join_room))
        .route(&v3("/rooms/{room_id}/invite"), post(membership::invite))
        .route(&v3("/rooms/{room_id}/leave"), post(membership::leave))
        .route(&v3("/rooms/{room_id}/forget"), post(membership::forget))
        .route(&v3("/rooms/{room_id}/kick"), post(membership::kick))
        .route(&v3("/rooms/{room_id}/ban"), post(membership::ban))
        .route(&v3("/rooms/{room_id}/unban"), post(membership::unban))
        .route(&v3("/rooms/{room_id}/members"), get(membership::members))
        .route(
            &v3("/rooms/{room_id}/joined_members"),
            get(membership::joined_members),
        )
        .route(
            &v3("/rooms/{room_id}/send/{event_type}/{txn_id}"),
            put(send::send_message),
        )
        .route(
            &v3("/rooms/{room_id}/state/{event_type}"),
            put(send::put_state_empty_key),
        )
        .route(
            &v3("/rooms/{room_id}/state/{event_type}/"),
            put(send::put_state_empty_key),
        )
        .route(
            &v3("/rooms/{room_id}/state/{event_type}/{state_key}"),
            put(send::put_state),
        )
        .route(
            &v3("/rooms/{room_id}/redact/{event_id}/{txn_id}"),
            put(send::redact),
        )
        // Reading rooms
        .route(
            &v3("/rooms/{room_id}/event/{event_id}"),
            get(room_read::get_event),
        )
        .route(&v3("/rooms/{room_id}/state"), get(room_read::get_state))
        .route(
            &v3("/rooms/{room_id}/state/{event_type}"),
            get(room_read::get_state_event_empty_key),
        )
        .route(
            &v3("/rooms/{room_id}/state/{event_type}/"),
            get(room_read::get_state_event_empty_key),
        )
        .route(
            &v3("/rooms/{room_id}/state/{event_type}/{state_key}"),
            get(room_read::get_state_event),
        )
        .route(&v3("/rooms/{room_id}/messages"), get(room_read::messages))
        .route(
            &v3("/rooms/{room_id}/context/{event_id}"),
            get(room_read::context),
        )
        // Room aliases
        .route(
            &v3("/directory/room/{room_alias}"),
            get(directory::get_alias)
                .put(directory::set_alias)
                .delete(directory::delete_alias),
        )
        .route(
            &v3("/rooms/{room_id}/aliases"),
            get(directory::room_aliases),
        )
        // Sync
        .route(&v3("/sync"), get(sync::sync))
        .route(&v3("/search"), post(search::search))
        // Presence
        .route(
            &v3("/presence/{user_id}/status"),
            get(presence::get_status).put(presence::set_status),
        )
        // Typing, receipts, read markers
        .route(
            &v3("/rooms/{room_id}/typing/{user_id}"),
            put(ephemeral::typing),
        )
        .route(
            &v3("/rooms/{room_id}/receipt/{receipt_type}/{event_id}"),
            post(ephemeral::receipt),
        )
        .route(
            &v3("/rooms/{room_id}/read_markers"),
            post(ephemeral::read_markers),
        )
        // Room directory, summaries, spaces, jump to date
        .route(
            &v3("/directory/list/room/{room_id}"),
            get(directory_list::get_visibility).put(directory_list::set_visibility),
        )
        .route(
            &v3("/publicRooms"),
            get(directory_list::get_public_rooms).post(directory_list::post_public_rooms),
        )
        .route(
            "/_matrix/client/v1/room_summary/{room_id_or_alias}",
            get(summary::room_summary),
        )
        .route(
            "/_matrix/client/unstable/im.nheko.summary/summary/{room_id_or_alias}",
            get(summary::room_summary),
        )
        // Relations and threads
        .route(
            "/_matrix/client/v1/rooms/{room_id}/relations/{event_id}",
            get(relations::relations),
        )
        .route(
            "/_matrix/client/v1/rooms/{room_id}/relations/{event_id}/{rel_type}",
            get(relations::relations_by_type),
        )
        .route(
            "/_matrix/client/v1/rooms/{room_id}/relations/{event_id}/{rel_type}/{event_type}",
            get(relations::relations_by_type_and_event_type),
        )
        .route(
            "/_matrix/client/v1/rooms/{room_id}/threads",
            get(relations::threads),
        )
        .route(
            "/_matrix/client/v1/rooms/{room_id}/hierarchy",
            get(hierarchy::hierarchy),
        )
        .route(
            "/_matrix/client/v1/rooms/{room_id}/timestamp_to_event",
            get(timestamp::timestamp_to_event),
        )
        // Tags
        .route(
            &v3("/user/{user_id}/rooms/{room_id}/tags"),
            get(tags::get_tags),
        )
        .route(
            &v3("/user/{user_id}/rooms/{room_id}/tags/{tag}"),
            put(tags::put_tag).delete(tags::delete_tag),
        )
        // Push rules
        .route(&v3("/notifications"), get(notifications::get_notifications))
        .route(
            &v3("/sendToDevice/{event_type}/{txn_id}"),
            put(to_device::send_to_device),
        )
        .route(&v3("/pushrules"), get(push_rules::get_all))
        .route(&v3("/pushrules/"), get(push_rules::get_all))
        .route(&v3("/pushrules/global/"), get(push_rules::get_global))
        .route(
            &v3("/pushrules/{scope}/{kind}/{rule_id}"),
            get(push_rules::get_rule)
                .put(push_rules::put_rule)
                .delete(push_rules::delete_rule),
        )
        .route(
            &v3("/pushrules/{scope}/{kind}/{rule_id}/enabled"),
            get(push_rules::get_enabled).put(push_rules::put_enabled),
        )
        .route(
            &v3("/pushrules/{scope}/{kind}/{rule_id}/actions"),
            get(push_rules::get_actions).put(push_rules::put_actions),
        )
        // Pushers
        .route(&v3("/pushers"), get(pushers::get_pushers))
        .route(&v3("/pushers/set"), post(pushers::set_pusher))
        // Room upgrades
        .route(&v3("/rooms/{room_id}/upgrade"), post(upgrade::upgrade))
        // Reporting
        .route(&v3("/rooms/{room_id}/report"), post(report::report_room))
        .route(
            &v3("/rooms/{room_id}/report/{event_id}"),
            post(report::report_event),
        )
}
