//! Integration tests of the access service: a real gRPC server on 127.0.0.1:0, the in-process
//! Globus stand-in, and the registry on SQLite and on the PostgreSQL at 127.0.0.1:5432. Tests
//! that touch the registry run once per backend (`<test>::sqlite` and `<test>::postgres`, from
//! `smrtshare_testkit::both_backends!`).

mod apply;
mod binaries;
mod caps;
mod crash;
mod expiry;
mod faults;
mod groups;
mod holes;
mod invitations;
mod limits;
mod lost_answers;
mod migrate;
mod reset;
mod support;
mod verify;
