//! Integration tests of the access service: a real gRPC server on 127.0.0.1:0, the in-process
//! Globus stand-in, and the registry on SQLite and on the PostgreSQL at 127.0.0.1:5432. Tests
//! that touch the registry run once per backend (`sqlite::…` and `postgres::…`).

/// Generates `sqlite::<name>` and `postgres::<name>` tests from `async fn <name>(Backend)`.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(smrtshare_common::db::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(smrtshare_common::db::Backend::Postgres).await;
                }
            )*
        }
    };
}

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
