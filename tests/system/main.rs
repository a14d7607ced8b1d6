//! Whole-system tests of the real binaries: every test starts its own [`smrtshare_tests::Stack`]
//! of child processes (build them first with `cargo build --workspace --bins`).

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

mod analysis;
mod change_id;
mod cookbook;
mod faults;
mod groups;
mod nginx;
mod observability;
mod recovery;
mod restart;
mod resync;
mod secrets;
mod smoke;
mod status_page;

#[test]
fn workspace_root_holds_the_manifest() {
    assert!(
        smrtshare_tests::workspace_root()
            .join("Cargo.toml")
            .is_file()
    );
}
