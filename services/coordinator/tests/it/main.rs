//! Coordinator integration tests: real gRPC servers on 127.0.0.1:0, real databases (SQLite and
//! the PostgreSQL at 127.0.0.1:5432), fake staging/access peers implementing the generated
//! traits, and SMRT Link either in memory or as the real stand-in.

// Test code: a failed step is a failed test, helpers included.
#![allow(clippy::unwrap_used)]

mod analysis;
mod engine;
mod harness;
mod intake;
mod races;
mod resync;
mod smrtlink;
mod stack;
mod status;
mod store;
