//! Bounded building blocks for the detectors: a sliding-window event counter and
//! a key map with a hard size limit.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// Timestamps of the most recent events, at most `cap` of them: enough to tell
/// whether `cap` events happened within a window, in O(1) memory per key.
#[derive(Debug, Clone)]
pub(crate) struct SlidingWindow {
    events: VecDeque<Instant>,
    cap: usize,
}

impl SlidingWindow {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            events: VecDeque::with_capacity(cap.min(64)),
            cap: cap.max(1),
        }
    }

    /// Record an event at `now` and return how many (up to `cap`) fall within `window`.
    pub(crate) fn record(&mut self, now: Instant, window: Duration) -> usize {
        self.prune(now, window);
        if self.events.len() == self.cap {
            self.events.pop_front();
        }
        self.events.push_back(now);
        self.events.len()
    }

    pub(crate) fn prune(&mut self, now: Instant, window: Duration) {
        while let Some(&front) = self.events.front() {
            if now.saturating_duration_since(front) > window {
                self.events.pop_front();
            } else {
                break;
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.events.clear();
    }
}

/// A map that never holds more than `cap` keys. Making room drops entries whose
/// last activity is older than `stale_after` first, then the least recently active.
#[derive(Debug)]
pub(crate) struct BoundedMap<K, V> {
    entries: HashMap<K, (Instant, V)>,
    cap: usize,
    evicted: u64,
}

impl<K: Eq + Hash + Clone, V> BoundedMap<K, V> {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            entries: HashMap::new(),
            cap: cap.max(1),
            evicted: 0,
        }
    }

    /// The value for `key`, created with `make` if absent; marks it active at `now`.
    pub(crate) fn touch(
        &mut self,
        key: &K,
        now: Instant,
        stale_after: Duration,
        make: impl FnOnce() -> V,
    ) -> &mut V {
        if !self.entries.contains_key(key) && self.entries.len() >= self.cap {
            self.make_room(now, stale_after);
        }
        let slot = self
            .entries
            .entry(key.clone())
            .or_insert_with(|| (now, make()));
        slot.0 = now;
        &mut slot.1
    }

    fn make_room(&mut self, now: Instant, stale_after: Duration) {
        let before = self.entries.len();
        self.entries
            .retain(|_, (seen, _)| now.saturating_duration_since(*seen) <= stale_after);
        if self.entries.len() >= self.cap {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (seen, _))| *seen)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.entries.remove(&k);
            }
        }
        self.evicted += (before - self.entries.len()) as u64;
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get(key).map(|(_, v)| v)
    }

    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get_mut(key).map(|(_, v)| v)
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.remove(key).map(|(_, v)| v)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sliding_window_forgets_events_older_than_window() {
        let mut w = SlidingWindow::new(5);
        let window = Duration::from_secs(10);
        assert_eq!(w.record(Instant::now(), window), 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(w.record(Instant::now(), window), 2);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(w.record(Instant::now(), window), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn sliding_window_holds_at_most_cap_events() {
        let mut w = SlidingWindow::new(3);
        for _ in 0..10 {
            w.record(Instant::now(), Duration::from_secs(60));
        }
        assert_eq!(w.record(Instant::now(), Duration::from_secs(60)), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_map_drops_least_recently_active_key_when_full() {
        let mut m: BoundedMap<u32, ()> = BoundedMap::new(2);
        let stale = Duration::from_secs(3600);
        m.touch(&1, Instant::now(), stale, || ());
        tokio::time::advance(Duration::from_secs(1)).await;
        m.touch(&2, Instant::now(), stale, || ());
        tokio::time::advance(Duration::from_secs(1)).await;
        m.touch(&1, Instant::now(), stale, || ());
        m.touch(&3, Instant::now(), stale, || ());
        assert_eq!(m.len(), 2);
        assert!(m.get(&1).is_some());
        assert!(m.get(&2).is_none());
        assert_eq!(m.evicted(), 1);
    }
}
