//! The state every handler shares: the world, the fault plan, counts, the seeded generator and
//! the stand-in's own rate limit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng as _;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::faults::{Counts, Fault, FaultPlan, Kind};
use crate::model::World;

/// The stand-in's own request limit, over every counted request (the shared rate limiter). Requests beyond
/// it are answered 429 with `Retry-After`, as Globus does.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

/// The stand-in's limiter: the rate limit and the shared limiter that enforces it.
#[derive(Debug)]
struct Limiter {
    limit: RateLimit,
    limiter: smrtshare_common::rate::RateLimiter,
}

impl Limiter {
    fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            limiter: smrtshare_common::rate::RateLimiter::new(limit.per_second, limit.burst),
        }
    }
}

/// Shared by every handler.
#[derive(Debug)]
pub(crate) struct Shared {
    world: Mutex<World>,
    faults: Mutex<FaultPlan>,
    counts: Mutex<BTreeMap<(Kind, u16, String), u64>>,
    rng: Mutex<StdRng>,
    limiter: Mutex<Option<Limiter>>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    pub clock: Clock,
}

/// Lowers the in-flight count when a request ends, however it ends.
#[derive(Debug)]
pub(crate) struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind; keep serving.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub fn new(world: World, rng: StdRng, clock: Clock, rate_limit: Option<RateLimit>) -> Self {
        Self {
            world: Mutex::new(world),
            faults: Mutex::new(FaultPlan::none()),
            counts: Mutex::new(BTreeMap::new()),
            rng: Mutex::new(rng),
            limiter: Mutex::new(rate_limit.map(Limiter::new)),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            clock,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Runs `f` on the world and the generator together.
    pub fn with_world<T>(&self, f: impl FnOnce(&mut World, &mut StdRng) -> T) -> T {
        let mut world = lock(&self.world);
        let mut rng = lock(&self.rng);
        f(&mut world, &mut rng)
    }

    /// A Globus-style request id.
    pub fn request_id(&self) -> String {
        let mut rng = lock(&self.rng);
        (0..9)
            .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
            .collect()
    }

    pub fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        InFlight(&self.in_flight)
    }

    pub fn rate_check(&self) -> Result<(), Duration> {
        match lock(&self.limiter).as_ref() {
            Some(limiter) => limiter.limiter.try_acquire(),
            None => Ok(()),
        }
    }

    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        *lock(&self.limiter) = limit.map(Limiter::new);
    }

    pub fn rate_limit(&self) -> Option<RateLimit> {
        lock(&self.limiter).as_ref().map(|b| b.limit)
    }

    pub fn decide_fault(&self, kind: Kind) -> Option<Fault> {
        let mut plan = lock(&self.faults);
        let mut rng = lock(&self.rng);
        plan.decide(kind, &mut rng)
    }

    pub fn set_faults(&self, plan: FaultPlan) {
        *lock(&self.faults) = plan;
    }

    pub fn faults(&self) -> FaultPlan {
        lock(&self.faults).clone()
    }

    pub fn count(&self, kind: Kind, status: u16, code: &str) {
        *lock(&self.counts)
            .entry((kind, status, code.to_owned()))
            .or_default() += 1;
    }

    pub fn counts(&self) -> Counts {
        Counts::from_map(&lock(&self.counts), self.peak.load(Ordering::SeqCst))
    }

    pub fn reset_counts(&self) {
        lock(&self.counts).clear();
        self.peak
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}
