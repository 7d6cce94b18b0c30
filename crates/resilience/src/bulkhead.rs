//! Bulkhead: cap how many operations of one kind run at once.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agent_patterns_core::AgentError;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit, TryAcquireError};

use crate::config_error::ConfigError;
use crate::metrics::BulkheadMetrics;

/// How many operations may run at once and how long a caller waits for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkheadConfig {
    /// Operations allowed to run at the same time (at least 1).
    pub max_concurrent: usize,
    /// How long a caller waits for a free slot before giving up.
    pub acquire_timeout: Duration,
}

impl Default for BulkheadConfig {
    /// 10 at once, 5 s wait.
    fn default() -> Self {
        Self {
            max_concurrent: 10,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

const COMPONENT: &str = "bulkhead";

/// Largest `max_concurrent` (tokio's semaphore limit).
pub const MAX_CONCURRENT: usize = Semaphore::MAX_PERMITS;

impl BulkheadConfig {
    /// Check the values; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_concurrent == 0 || self.max_concurrent > MAX_CONCURRENT {
            return Err(ConfigError::new(
                COMPONENT,
                "max_concurrent",
                format!(
                    "must be between 1 and {MAX_CONCURRENT} (got {})",
                    self.max_concurrent
                ),
            ));
        }
        Ok(())
    }
}

/// Why the bulkhead did not run an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BulkheadError {
    /// Every slot was busy and the wait queue was full: refused at once.
    #[error("bulkhead '{name}' is full: {max_concurrent} running and {max_queue} waiting")]
    QueueFull {
        /// The bulkhead's name.
        name: String,
        /// Its concurrency limit.
        max_concurrent: usize,
        /// Its wait-queue bound.
        max_queue: usize,
    },
    /// No slot freed up within the acquire timeout.
    #[error("bulkhead '{name}' had no free slot within {waited:?}")]
    Timeout {
        /// The bulkhead's name.
        name: String,
        /// How long the caller waited.
        waited: Duration,
    },
}

impl From<BulkheadError> for AgentError {
    fn from(_: BulkheadError) -> Self {
        AgentError::BulkheadFull
    }
}

/// Figures for dashboards and debug endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BulkheadSnapshot {
    /// The bulkhead's name.
    pub name: String,
    /// Concurrency limit.
    pub max_concurrent: usize,
    /// Operations running now.
    pub active: usize,
    /// Callers waiting now.
    pub queued: usize,
    /// Wait-queue bound.
    pub max_queue: usize,
}

/// Caps concurrent operations; extra callers wait in a bounded queue.
///
/// A slot is held by a [`BulkheadPermit`] and given back when the operation
/// completes, is cancelled (its future dropped) or panics.
///
/// ```
/// use std::time::Duration;
/// use agent_patterns_resilience::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), agent_patterns_core::AgentError> {
/// let bulkhead = Bulkhead::new("tool_execution".to_string(), BulkheadConfig {
///     max_concurrent: 10,
///     acquire_timeout: Duration::from_secs(5),
/// });
/// let answer = bulkhead.execute(async { 6 * 7 }).await?;
/// assert_eq!(answer, 42);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Bulkhead {
    name: Arc<str>,
    semaphore: Arc<Semaphore>,
    max_concurrent: AtomicUsize,
    /// Permits to retire as they come back after `max_concurrent` was lowered.
    retire: AtomicUsize,
    waiting: AtomicUsize,
    max_queue: usize,
    acquire_timeout: Duration,
    metrics: BulkheadMetrics,
}

/// A slot in the bulkhead; the slot is free again when this is dropped.
#[derive(Debug)]
#[must_use = "the slot is released when the permit is dropped"]
pub struct BulkheadPermit<'a> {
    bulkhead: &'a Bulkhead,
    permit: Option<SemaphorePermit<'a>>,
    /// Whether the active gauge counts this permit.
    counted: bool,
}

impl Drop for BulkheadPermit<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take()
            && self.bulkhead.released(self.counted)
        {
            permit.forget();
        }
    }
}

/// Like [`BulkheadPermit`], but owning its bulkhead: for `'static` futures.
#[derive(Debug)]
#[must_use = "the slot is released when the permit is dropped"]
pub struct OwnedBulkheadPermit {
    bulkhead: Arc<Bulkhead>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for OwnedBulkheadPermit {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take()
            && self.bulkhead.released(true)
        {
            permit.forget();
        }
    }
}

/// Keeps the waiting count right when a waiting caller is cancelled.
struct Waiting<'a>(&'a Bulkhead);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.queued.decrement(1.0);
    }
}

/// Default bound of the wait queue.
pub const DEFAULT_MAX_QUEUE: usize = 1024;

impl Bulkhead {
    /// A bulkhead named `name` (the `name` label of its metrics), with a wait
    /// queue of [`DEFAULT_MAX_QUEUE`].
    ///
    /// An invalid `max_concurrent` (0) does not panic: the bulkhead refuses
    /// every operation and the problem is logged; use [`Bulkhead::try_new`] to
    /// get the error instead.
    pub fn new(name: impl Into<String>, config: BulkheadConfig) -> Self {
        let name = name.into();
        match Self::try_new(name.clone(), config) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(bulkhead = %name, error = %e, "bulkhead refuses every operation");
                Self::assemble(name, 0, config.acquire_timeout, 0)
            }
        }
    }

    /// A bulkhead, or the reason the configuration is invalid.
    pub fn try_new(name: impl Into<String>, config: BulkheadConfig) -> Result<Self, ConfigError> {
        Self::with_queue(name, config, DEFAULT_MAX_QUEUE)
    }

    /// A bulkhead whose wait queue holds at most `max_queue` callers (0: never
    /// wait, refuse at once when full).
    pub fn with_queue(
        name: impl Into<String>,
        config: BulkheadConfig,
        max_queue: usize,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::assemble(
            name.into(),
            config.max_concurrent,
            config.acquire_timeout,
            max_queue,
        ))
    }

    fn assemble(
        name: String,
        max_concurrent: usize,
        acquire_timeout: Duration,
        max_queue: usize,
    ) -> Self {
        let metrics = BulkheadMetrics::new(&name);
        Self {
            name: name.into(),
            semaphore: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent: AtomicUsize::new(max_concurrent),
            retire: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            max_queue,
            acquire_timeout,
            metrics,
        }
    }

    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run `operation` in a slot, waiting up to the acquire timeout for one.
    ///
    /// The `bulkhead_active_requests` gauge counts the operation from its first
    /// suspension to its end: an operation that completes in its first poll
    /// holds its slot (see [`active`](Self::active)) but costs the gauge
    /// nothing, since no scrape could run while it held the thread.
    #[inline]
    pub async fn execute<F: Future>(&self, operation: F) -> Result<F::Output, BulkheadError> {
        let permit = match self.semaphore.try_acquire() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {
                self.wait(|| self.semaphore.acquire()).await?
            }
        };
        let mut permit = BulkheadPermit {
            bulkhead: self,
            permit: Some(permit),
            counted: false,
        };
        let mut operation = std::pin::pin!(operation);
        let output = std::future::poll_fn(|cx| {
            let poll = operation.as_mut().poll(cx);
            if poll.is_pending() && !permit.counted {
                permit.counted = true;
                self.metrics.active.increment(1.0);
            }
            poll
        })
        .await;
        drop(permit);
        Ok(output)
    }

    /// Take a slot, waiting up to the acquire timeout.
    #[inline]
    pub async fn acquire(&self) -> Result<BulkheadPermit<'_>, BulkheadError> {
        let permit = match self.semaphore.try_acquire() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {
                self.wait(|| self.semaphore.acquire()).await?
            }
        };
        Ok(self.granted(permit))
    }

    /// [`acquire`](Self::acquire) for a bulkhead in an `Arc`, returning a
    /// permit that owns a reference to it.
    pub async fn acquire_owned(self: &Arc<Self>) -> Result<OwnedBulkheadPermit, BulkheadError> {
        let permit = match Arc::clone(&self.semaphore).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.wait(|| Arc::clone(&self.semaphore).acquire_owned())
                    .await?
            }
        };
        self.metrics.active.increment(1.0);
        Ok(OwnedBulkheadPermit {
            bulkhead: Arc::clone(self),
            permit: Some(permit),
        })
    }

    /// Take a slot only if one is free now.
    pub fn try_acquire(&self) -> Result<BulkheadPermit<'_>, BulkheadError> {
        match self.semaphore.try_acquire() {
            Ok(permit) => Ok(self.granted(permit)),
            Err(_) => Err(self.queue_full()),
        }
    }

    #[inline]
    fn granted<'a>(&'a self, permit: SemaphorePermit<'a>) -> BulkheadPermit<'a> {
        self.metrics.active.increment(1.0);
        BulkheadPermit {
            bulkhead: self,
            permit: Some(permit),
            counted: true,
        }
    }

    fn queue_full(&self) -> BulkheadError {
        self.metrics.rejected.increment(1);
        BulkheadError::QueueFull {
            name: self.name.to_string(),
            max_concurrent: self.max_concurrent.load(Ordering::Relaxed),
            max_queue: self.max_queue,
        }
    }

    /// Wait in the bounded queue for `acquire` to yield a permit.
    async fn wait<P, F, Fut>(&self, acquire: F) -> Result<P, BulkheadError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<P, tokio::sync::AcquireError>>,
    {
        let admitted = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w < self.max_queue).then_some(w + 1)
            })
            .is_ok();
        if !admitted || self.max_concurrent.load(Ordering::Relaxed) == 0 {
            if admitted {
                self.waiting.fetch_sub(1, Ordering::AcqRel);
            }
            return Err(self.queue_full());
        }
        self.metrics.queued.increment(1.0);
        let waiting = Waiting(self);
        let result = tokio::time::timeout(self.acquire_timeout, acquire()).await;
        drop(waiting);
        match result {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(self.queue_full()),
            Err(_elapsed) => {
                self.metrics.rejected.increment(1);
                Err(BulkheadError::Timeout {
                    name: self.name.to_string(),
                    waited: self.acquire_timeout,
                })
            }
        }
    }

    /// A slot came back: count it (if the gauge `counted` it), and say whether
    /// it must be retired (forgotten) because `max_concurrent` was lowered
    /// meanwhile.
    #[inline]
    fn released(&self, counted: bool) -> bool {
        if counted {
            self.metrics.active.decrement(1.0);
        }
        self.retire.load(Ordering::Relaxed) > 0 && self.take_retirement()
    }

    fn take_retirement(&self) -> bool {
        self.retire
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(1))
            .is_ok()
    }

    /// Change the concurrency limit at run time. Raising it frees slots at
    /// once; lowering it retires slots as running operations finish (nothing
    /// running is interrupted). A value of 0 or above [`MAX_CONCURRENT`] is
    /// refused with an error.
    pub fn set_max_concurrent(&self, max_concurrent: usize) -> Result<(), ConfigError> {
        BulkheadConfig {
            max_concurrent,
            acquire_timeout: self.acquire_timeout,
        }
        .validate()?;
        let old = self.max_concurrent.swap(max_concurrent, Ordering::AcqRel);
        if max_concurrent > old {
            let mut grow = max_concurrent - old;
            // Cancel pending retirements first.
            while grow > 0 && self.take_retirement() {
                grow -= 1;
            }
            self.semaphore.add_permits(grow);
        } else {
            let shrink = old - max_concurrent;
            let forgotten = self.semaphore.forget_permits(shrink);
            self.retire.fetch_add(shrink - forgotten, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Operations running now.
    pub fn active(&self) -> usize {
        let max = self.max_concurrent.load(Ordering::Acquire);
        let retiring = self.retire.load(Ordering::Acquire);
        (max + retiring).saturating_sub(self.semaphore.available_permits())
    }

    /// Callers waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Current figures.
    pub fn snapshot(&self) -> BulkheadSnapshot {
        BulkheadSnapshot {
            name: self.name.to_string(),
            max_concurrent: self.max_concurrent.load(Ordering::Acquire),
            active: self.active(),
            queued: self.queued(),
            max_queue: self.max_queue,
        }
    }
}
