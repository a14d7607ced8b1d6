//! Leases kept alive while their work runs. A claim (a task, a read, the resync lease) is taken
//! for a few seconds only and renewed every third of that while the work runs, so a replica that
//! dies loses its claims within one lease, and one that is slow keeps them.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

/// How long a claim holds and how often it is renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTimes {
    /// How long a claim holds when not renewed.
    pub lease: Duration,
    /// How often a held claim is renewed (a third of the lease).
    pub renew_every: Duration,
}

impl LeaseTimes {
    /// A lease renewed every third of its length.
    pub fn new(lease: Duration) -> Self {
        Self {
            lease,
            renew_every: lease / 3,
        }
    }

    /// The lease in milliseconds.
    pub fn lease_ms(&self) -> i64 {
        crate::clock::millis(self.lease)
    }
}

/// Renews a claim in the background until stopped or dropped. When a renewal says the claim is
/// gone, or renewals fail for so long that the claim may have lapsed, [`Renewal::lost`] fires:
/// the work must stop, since another replica may take it over.
#[derive(Debug)]
pub struct Renewal {
    lost: CancellationToken,
    stop: CancellationToken,
}

impl Renewal {
    /// Starts renewing with `renew` (true: still held) every `times.renew_every`.
    pub fn start<F>(what: &'static str, times: LeaseTimes, renew: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, Result<bool, crate::store::StoreError>> + Send + 'static,
    {
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        let (lost_out, stop_in) = (lost.clone(), stop.clone());
        tokio::spawn(async move {
            let mut held_at = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    () = stop_in.cancelled() => return,
                    () = tokio::time::sleep(times.renew_every) => {}
                }
                match renew().await {
                    Ok(true) => held_at = tokio::time::Instant::now(),
                    Ok(false) => {
                        tracing::warn!(what, "lease lost to another replica; stopping the work");
                        lost_out.cancel();
                        return;
                    }
                    Err(error) => {
                        // The claim may still hold; once it may have lapsed, the work stops.
                        let unsure = held_at.elapsed() + times.renew_every >= times.lease;
                        tracing::warn!(what, %error, unsure, "renewing a lease failed");
                        if unsure {
                            lost_out.cancel();
                            return;
                        }
                    }
                }
            }
        });
        Self { lost, stop }
    }

    /// Fires when the claim is (or may be) lost.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// Runs `work` while the claim holds: `None` when the claim was lost first (the work is
    /// dropped, so a call in flight is cancelled).
    pub async fn hold<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            value = work => Some(value),
            () = self.lost.cancelled() => None,
        }
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn times() -> LeaseTimes {
        LeaseTimes::new(Duration::from_secs(3))
    }

    #[tokio::test(start_paused = true)]
    async fn renews_until_dropped() {
        let renewals = Arc::new(AtomicUsize::new(0));
        let counted = renewals.clone();
        let renewal = Renewal::start("test", times(), move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(true) })
        });
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        assert_eq!(renewals.load(Ordering::SeqCst), 3);
        assert!(!renewal.lost().is_cancelled());
        drop(renewal);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(renewals.load(Ordering::SeqCst), 3, "no renewal after drop");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_claim_stops_the_work() {
        let renewal = Renewal::start("test", times(), || Box::pin(async { Ok(false) }));
        let work = renewal.hold(std::future::pending::<()>());
        assert_eq!(work.await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn failing_renewals_stop_the_work_before_the_lease_lapses() {
        let renewal = Renewal::start("test", times(), || {
            Box::pin(async { Err(crate::store::StoreError::Unavailable("down".into())) })
        });
        let started = tokio::time::Instant::now();
        assert_eq!(renewal.hold(std::future::pending::<()>()).await, None);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
}
