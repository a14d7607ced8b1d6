//! SMRT Link for smrtshare: a typed REST client.
//!
//! - [`SmrtLinkClient`] ([`client`]): password-grant login, bearer token and `X-User-ID` on every
//!   call, one refresh then a fresh login after a 401, a CA file or an explicit insecure switch,
//!   time limits, and retries with capped exponential backoff and jitter on 5xx answers,
//!   connection failures and timeouts (never on 4xx). Projects (list, detail), dataset look-ups
//!   and analysis jobs, typed in [`model`]. Every failure is one [`Error`] variant the caller can
//!   classify ([`Error::is_retryable`]).
//! - [`config`]: [`ClientConfig`] and [`SmrtLinkArgs`], the clap group (flags and
//!   `SMRTSHARE_SMRTLINK_*` variables) a service flattens into its command line.
//!
//! The stand-in SMRT Link the tests and the local stack run against is its own crate,
//! `smrtshare-smrtlink-standin`, so that no service binary carries it.
//!
//! ```no_run
//! # async fn example(args: smrtshare_smrtlink::SmrtLinkArgs) -> anyhow::Result<()> {
//! use smrtshare_smrtlink::{Error, SmrtLinkClient};
//!
//! let client = SmrtLinkClient::new(args.config()?)?; // clone it freely: one pool, one token
//! match client.list_projects().await {
//!     Ok(projects) => {
//!         for summary in projects.iter().filter(|p| !p.is_general()) {
//!             // `None`: gone since the listing (404).
//!             if let Some(project) = client.get_project(summary.id).await? {
//!                 let logins: Vec<&str> = project.shared_members().map(|m| m.login.as_str()).collect();
//!                 let _ = (project.is_active, &project.datasets, logins);
//!             }
//!         }
//!     }
//!     // Down, 5xx, timed out, or the listing broke half-way: try again later, and never
//!     // read a failed listing as deletions.
//!     Err(e) if e.is_retryable() => tracing::warn!(error = %e, "smrt link unavailable"),
//!     // Credentials, certificates, odd answers: a person has to look.
//!     Err(e @ (Error::Auth { .. } | Error::Tls { .. } | Error::Protocol { .. })) => return Err(e.into()),
//!     Err(e) => return Err(e.into()),
//! }
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod config;
pub mod error;
pub mod model;

pub use client::{AuthStats, SmrtLinkClient};
pub use config::{ClientConfig, RetryPolicy, SmrtLinkArgs};
pub use error::{Error, Result};
