//! heliosburn: a reverse HTTP proxy that records the traffic passing through it.
//!
//! The binary (`src/main.rs`) is a thin shell over this library; `ARCHITECTURE.md` maps
//! the modules. Benchmarks and tests use the library directly.

pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod feed;
pub mod har;
pub mod modules;
pub mod proxy;
pub mod recording;
pub mod redact;
pub mod redis_link;
pub mod replay;
pub mod resources;
pub mod store;
pub mod traffic;
pub mod window;

#[cfg(test)]
mod tidy;
