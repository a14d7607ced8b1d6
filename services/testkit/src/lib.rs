//! What smrtshare's tests share, kept out of every service binary: a dev-dependency only.
//!
//! - [`fixtures`]: the workspace root, the shared SMRT Link fixtures (`../shared`, or
//!   `SMRTSHARE_SHARED_DIR`; missing ones fail under `CI=true` and skip elsewhere with a notice),
//!   grpcurl, and copying a fixture tree to modify it.
//! - [`db`]: [`TestDatabase`], a throwaway SQLite file or PostgreSQL database per test, dropped
//!   with the value; [`both_backends!`] runs one async test on each.
//! - [`pki`]: a throwaway CA with server and client certificates for TLS tests.
//! - [`wait`]: polling until a condition holds, with a deadline.

pub mod db;
pub mod fixtures;
pub mod pki;
pub mod wait;

pub use db::TestDatabase;
pub use fixtures::{copy_tree, grpcurl, is_ci, shared_dir, smrtlink_fixtures, workspace_root};
pub use pki::{Pki, PkiFiles};
pub use wait::{eventually, eventually_async, poll_until};

/// Temporary files and directories for tests (re-exported so no other crate depends on it).
pub use tempfile;

/// Generates `<name>::sqlite` and `<name>::postgres` tests from `async fn <name>(Backend)`, each
/// on a multi-threaded runtime of its own (four workers, so that a test holding one task at a
/// hook never starves the others), against a database the test makes with
/// [`TestDatabase::new`].
///
/// ```ignore
/// async fn records_survive_a_restart(backend: Backend) { /* … */ }
/// smrtshare_testkit::both_backends!(records_survive_a_restart);
/// ```
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    super::$name(::smrtshare_common::db::Backend::Sqlite).await;
                }
                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    super::$name(::smrtshare_common::db::Backend::Postgres).await;
                }
            }
        )+
    };
}
