//! What every smrtshare service repeats.
//!
//! - [`config`]: clap argument groups (listen address, logs, auth token, TLS, server limits,
//!   database), each flag with its environment variable.
//! - [`telemetry`]: one tracing initialiser, JSON or human.
//! - [`server`]: the gRPC runner: bound listener in, shutdown future in; health, reflection,
//!   bearer-token check, message-size limits, bounded drain.
//! - [`auth`]: the bearer token (a secret that never prints) and the server layer and client
//!   interceptor that check and send it.
//! - [`client`]: lazily connected channels to peer services.
//! - [`metrics`]: the `/metrics` endpoint (Prometheus text) every service serves.
//! - [`db`]: sqlx pools for SQLite (embedded default) and PostgreSQL behind one code path, and
//!   throwaway databases for tests.
//! - [`names`]: what a safe directory name is, and how any text becomes one.

pub mod auth;
pub mod client;
pub mod clock;
pub mod config;
pub mod db;
pub mod metrics;
pub mod names;
pub mod rate;
pub mod retry;
pub mod server;
pub mod telemetry;

pub use auth::Secret;
