//! The Myelin binary's library half: configuration resolution, the data
//! directory of the embedded default, and starting and stopping a server.
//! `main.rs` is only the command line over these; tests start servers
//! in-process through [`server::start`].

pub mod commands;
pub mod logging;
pub mod server;
