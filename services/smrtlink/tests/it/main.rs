//! The SMRT Link client against the stand-in, seeded from the real fixtures; the binary.

#![allow(clippy::unwrap_used)]

mod auth;
mod binary;
mod faults;
mod job_admin;
mod job_faults;
mod jobs;
mod model;
mod projects;
mod support;
mod tls;
mod writes;
