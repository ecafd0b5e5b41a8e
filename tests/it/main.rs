//! Integration tests: the real `heliosburn` binary on ephemeral ports, in front of a real
//! upstream in this process. One binary (faster to link); one module per concern.

// The harness also serves the recording tests (restarts on one data directory, custom
// upstream routes, the recordings API); not every helper has a user yet.
#[allow(dead_code, unused_imports)]
mod harness;

mod access;
mod bodies;
mod cli;
mod client_errors;
mod config;
mod control;
mod disk_full;
mod durability;
mod forwarding;
mod h2;
mod har;
mod lifecycle;
mod limits;
mod live;
mod metrics;
mod openapi;
mod pages;
mod pipeline;
mod playback;
mod protocols;
mod recording;
mod redaction;
mod redis_link;
mod replay;
mod seed;
mod storage;
mod store;
mod stream;
mod tls;
mod ui;
mod upstream_errors;
