//! Git sources against real repositories made with git2 in temp dirs: `file://` for refs,
//! paths, limits, caching and eviction; a loopback smart-HTTP server (`git http-backend`
//! behind a small CGI bridge with Basic auth) for credentials. Nothing leaves 127.0.0.1.
// clippy.toml allows unwrap in #[test] functions only; the fixtures here are test code too.
#![allow(
    clippy::unwrap_used,
    reason = "test fixtures: a panic is a failed test"
)]

mod caching;
mod fixtures;
mod http;
mod https;
mod paths;
mod refs;
mod schemes;
