//! `loadtest`: drives any Matrix homeserver (Myelin, Synapse, …) through
//! the Client-Server API and reports what operators care about: throughput,
//! latency per request kind (exact percentiles, and samples for plots),
//! errors by `errcode`, sync delivery latency, and the server's memory and
//! CPU next to the generator's own CPU.
//!
//! The scenarios live in [`scenarios`]; a run yields a [`report::Report`]
//! whose JSON feeds [`html::render_run`] and [`compare`]. The binary
//! (`src/main.rs`) is a thin command line over this library, which the
//! smoke test drives directly.

pub mod charts;
pub mod client;
pub mod compare;
pub mod hmac;
pub mod html;
pub mod report;
pub mod resources;
pub mod scenarios;
