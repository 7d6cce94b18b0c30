//! One token bucket per key (user, IP, model), with a hard bound on keys.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use metrics::Gauge;

use crate::clock::{Clock, SharedClock, default_clock};
use crate::config_error::ConfigError;
use crate::gcra::{Decision, ParamsCell, State};
use crate::metrics::{LimiterMetrics, RATE_LIMITER_KEYS};
use crate::rate_limiter::{RateLimiterConfig, RateLimiterError, default_settle_interval};

const SHARDS: usize = 64;

/// A rate limiter that keeps a separate bucket for every key, all with the
/// same capacity and rate.
///
/// Memory is bounded by `max_keys`. A key whose bucket is full again is
/// *idle*: forgetting it loses nothing (a new bucket starts full), so idle keys
/// are evicted whenever room is needed and by [`evict_idle`](Self::evict_idle).
/// When every tracked key is busy and the table is full, a request for a new
/// key is refused — the limiter fails closed rather than forgetting a bucket
/// that still owes tokens (which would let a caller reset its limit by
/// flooding new keys). The key count is exported as `rate_limiter_keys{name}`.
///
/// ```
/// use agent_patterns_resilience::*;
///
/// let per_user = KeyedRateLimiter::new("per_user", RateLimiterConfig { capacity: 2, refill_rate: 1.0 }, 10_000).unwrap();
/// assert!(per_user.check(&"alice", 2).is_ok());
/// assert!(per_user.check(&"alice", 1).is_err());
/// assert!(per_user.check(&"bob", 1).is_ok()); // bob has his own bucket
/// assert_eq!(per_user.len(), 2);
/// ```
#[derive(Debug)]
pub struct KeyedRateLimiter<K> {
    name: Arc<str>,
    params: ParamsCell,
    config: RateLimiterConfig,
    shards: Box<[RwLock<HashMap<K, State>>]>,
    hasher: RandomState,
    max_keys: usize,
    keys: AtomicUsize,
    clock: SharedClock,
    metrics: LimiterMetrics,
    keys_gauge: Gauge,
}

impl<K> KeyedRateLimiter<K> {
    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<K: Hash + Eq + Clone> KeyedRateLimiter<K> {
    /// A keyed limiter tracking at most `max_keys` keys.
    pub fn new(
        name: impl Into<String>,
        config: RateLimiterConfig,
        max_keys: usize,
    ) -> Result<Self, ConfigError> {
        Self::with_clock(name, config, max_keys, default_clock())
    }

    /// [`KeyedRateLimiter::new`] reading time from `clock`.
    pub fn with_clock(
        name: impl Into<String>,
        config: RateLimiterConfig,
        max_keys: usize,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        if max_keys == 0 {
            return Err(ConfigError::new(
                "keyed rate limiter",
                "max_keys",
                "must be at least 1",
            ));
        }
        let params = config.params(default_settle_interval(config.capacity))?;
        let name: String = name.into();
        let keys_gauge = metrics::gauge!(RATE_LIMITER_KEYS, "name" => name.clone());
        keys_gauge.set(0.0);
        Ok(Self {
            metrics: LimiterMetrics::new(&name),
            name: name.into(),
            params: ParamsCell::new(params),
            config,
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            max_keys,
            keys: AtomicUsize::new(0),
            clock,
            keys_gauge,
        })
    }

    /// The per-key capacity and rate.
    pub fn config(&self) -> RateLimiterConfig {
        self.config
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.keys.load(Ordering::Acquire)
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound on tracked keys.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Approximate bytes the key table occupies: slots allocated × (key +
    /// bucket state + table overhead). Heap memory owned by the keys
    /// themselves (a `String`'s text) comes on top.
    pub fn memory_bytes(&self) -> usize {
        let per_slot = std::mem::size_of::<K>() + std::mem::size_of::<State>() + 1;
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .capacity()
                    * per_slot
            })
            .sum()
    }

    fn shard(&self, key: &K) -> &RwLock<HashMap<K, State>> {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        &self.shards[index]
    }

    /// Take `n` tokens from `key`'s bucket if they are available now.
    pub async fn try_acquire(&self, key: &K, n: u64) -> Result<(), RateLimiterError> {
        self.check(key, n)
    }

    /// [`try_acquire`](Self::try_acquire) without `async`.
    pub fn check(&self, key: &K, n: u64) -> Result<(), RateLimiterError> {
        self.check_with_retry_after(key, n)
            .map_err(|_| RateLimiterError::RateLimitExceeded)
    }

    /// Like [`check`](Self::check), but a refusal says how long until the
    /// tokens are available (`None`: never, or the key table is full of busy keys).
    pub fn check_with_retry_after(&self, key: &K, n: u64) -> Result<(), Option<Duration>> {
        if n == 0 {
            return Ok(());
        }
        let shard = self.shard(key);
        let decision = {
            let map = shard.read().unwrap_or_else(PoisonError::into_inner);
            map.get(key)
                .map(|state| state.decide(&self.params, &*self.clock, n))
        };
        match decision.or_else(|| self.insert_and_decide(shard, key, n)) {
            Some(decision) => self.metrics.account(decision),
            None => {
                // The table is full of keys that still owe tokens.
                self.metrics.reject();
                Err(None)
            }
        }
    }

    /// Add `key` (making room by evicting idle keys if needed) and decide.
    /// `None` when the table is full of busy keys.
    fn insert_and_decide(
        &self,
        shard: &RwLock<HashMap<K, State>>,
        key: &K,
        n: u64,
    ) -> Option<Decision> {
        let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = map.get(key) {
            return Some(state.decide(&self.params, &*self.clock, n));
        }
        if !self.reserve_slot() {
            drop(map);
            self.evict_idle();
            map = shard.write().unwrap_or_else(PoisonError::into_inner);
            if let Some(state) = map.get(key) {
                return Some(state.decide(&self.params, &*self.clock, n));
            }
            if !self.reserve_slot() {
                tracing::warn!(limiter = %self.name, max_keys = self.max_keys, "key table full of busy keys; refusing a new key");
                return None;
            }
        }
        let state = State::default();
        let decision = state.decide(&self.params, &*self.clock, n);
        map.insert(key.clone(), state);
        self.keys_gauge.increment(1.0);
        Some(decision)
    }

    fn reserve_slot(&self) -> bool {
        self.keys
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |k| {
                (k < self.max_keys).then_some(k + 1)
            })
            .is_ok()
    }

    /// Forget every key whose bucket is full (nothing is lost by it); returns
    /// how many were removed. Call it periodically to return memory after a
    /// burst of distinct keys; it also runs when a new key finds the table full.
    pub fn evict_idle(&self) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
            let before = map.len();
            map.retain(|_, state| !state.is_idle(&*self.clock));
            removed += before - map.len();
        }
        if removed > 0 {
            self.keys.fetch_sub(removed, Ordering::AcqRel);
            self.keys_gauge.decrement(removed as f64);
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn limiter(max_keys: usize) -> (KeyedRateLimiter<u32>, ManualClock) {
        let clock = ManualClock::new();
        let l = KeyedRateLimiter::with_clock(
            "t",
            RateLimiterConfig {
                capacity: 2,
                refill_rate: 1.0,
            },
            max_keys,
            Arc::new(clock.clone()),
        )
        .unwrap();
        (l, clock)
    }

    #[test]
    fn never_tracks_more_than_max_keys() {
        let (l, _clock) = limiter(100);
        for key in 0..1000 {
            let _ = l.check(&key, 1);
            assert!(l.len() <= 100);
        }
        assert_eq!(l.len(), 100);
    }

    #[test]
    fn a_full_table_of_busy_keys_refuses_new_keys() {
        let (l, _clock) = limiter(3);
        for key in 0..3 {
            assert!(l.check(&key, 1).is_ok());
        }
        assert_eq!(l.check_with_retry_after(&99, 1), Err(None));
    }

    #[test]
    fn idle_keys_are_evicted_to_make_room_without_losing_limits() {
        let (l, clock) = limiter(2);
        assert!(l.check(&1, 2).is_ok());
        assert!(l.check(&2, 2).is_ok());
        clock.advance(Duration::from_secs(2)); // both buckets full again
        assert!(l.check(&3, 1).is_ok());
        assert!(l.len() <= 2);
        // Key 3 kept its bucket: one token left, then refused.
        assert!(l.check(&3, 1).is_ok());
        assert!(l.check(&3, 1).is_err());
    }

    #[test]
    fn zero_max_keys_is_rejected() {
        let err = KeyedRateLimiter::<u32>::new("t", RateLimiterConfig::default(), 0).unwrap_err();
        assert_eq!(err.field, "max_keys");
    }
}
