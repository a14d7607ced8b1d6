#![allow(clippy::unwrap_used)]

//! Integration tests of the staging service: one test binary, real servers on 127.0.0.1:0, real
//! temporary trees (root and sources on one filesystem), and the real binary under grpcurl.

mod analysis;
mod answers;
mod concurrency;
mod e2e;
mod faults;
mod fixtures;
mod foreign;
mod grpc;
mod harness;
mod hostile;
mod mounts;
mod naming;
mod process;
mod sourcecache;
mod tree;
