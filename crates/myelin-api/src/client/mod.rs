//! Client-Server API handlers, one module per area of the spec.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/>

pub mod account;
pub mod account_data;
pub mod capabilities;
pub mod devices;
pub mod filter;
pub mod login;
pub mod logout;
pub mod profile;
pub mod register;
pub mod session;
pub mod user_directory;
pub mod versions;
pub mod well_known;

use axum::Router;
use axum::routing::{get, post};

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
}
