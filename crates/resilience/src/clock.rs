//! Time sources.
//!
//! Every primitive in this crate reads time through [`Clock`]. The default,
//! [`TokioClock`], reads `tokio::time::Instant`, so `tokio::time::pause()` and
//! `advance()` drive every breaker timeout, limiter refill and bulkhead wait in
//! tests. [`ManualClock`] is a clock a test moves by hand.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonic time source.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Nanoseconds since a fixed origin chosen by the clock; never decreases.
    fn now_nanos(&self) -> u64;
}

/// Follows tokio's clock (real time normally; virtual time when paused).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        duration_nanos(tokio::time::Instant::now().saturating_duration_since(self.origin))
    }
}

/// A clock that moves only when told to: for deterministic tests outside tokio.
#[derive(Debug, Default, Clone)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Move the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(duration_nanos(by), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::SeqCst)
    }
}

/// The shared clock handle the primitives keep.
pub(crate) type SharedClock = Arc<dyn Clock>;

pub(crate) fn default_clock() -> SharedClock {
    Arc::new(TokioClock::new())
}

/// A duration in nanoseconds, saturating at `u64::MAX` (584 years).
#[inline]
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
