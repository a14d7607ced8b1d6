//! The SMRT Link client against the stand-in, seeded from the real fixtures; the stand-in's binary is tested in its own crate.

#![allow(clippy::unwrap_used)]

mod auth;
mod faults;
mod job_admin;
mod job_faults;
mod jobs;
mod model;
mod projects;
mod support;
mod tls;
mod writes;
