//! A bounded, indexed, hash-chained audit store in process memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use foldhash::fast::RandomState;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::chain::{ChainHead, ChainVerification, ChainVerifier, VerifyRange};
use crate::error::AuditError;
use crate::event::{AuditEvent, AuditEventType};
use crate::logger::AuditLogger;
use crate::policy::EventPolicy;
use crate::query::{AuditPage, AuditQuery};

/// Metric: events stored, by `store`.
pub const EVENTS_LOGGED_TOTAL: &str = "audit_events_logged_total";
/// Metric: events evicted from a bounded store, by `store`.
pub const EVENTS_EVICTED_TOTAL: &str = "audit_events_evicted_total";

/// Settings of [`InMemoryAuditLogger`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InMemoryAuditConfig {
    /// Most events kept; when full, the oldest is evicted (and counted).
    pub capacity: usize,
    /// Most events returned by `get_events_for_actor` and `get_events_by_type`
    /// (the newest ones).
    pub max_results: usize,
    /// Redaction and size rules.
    pub policy: EventPolicy,
}

impl Default for InMemoryAuditConfig {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            max_results: 10_000,
            policy: EventPolicy::default(),
        }
    }
}

impl InMemoryAuditConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), AuditError> {
        if self.capacity == 0 {
            return Err(AuditError::InvalidConfig {
                field: "capacity",
                reason: "must be at least 1".into(),
            });
        }
        if self.max_results == 0 {
            return Err(AuditError::InvalidConfig {
                field: "max_results",
                reason: "must be at least 1".into(),
            });
        }
        self.policy.validate()
    }
}

/// Counters of an [`InMemoryAuditLogger`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InMemoryAuditStats {
    /// Events held now.
    pub stored: usize,
    /// Events ever stored (the chain head's sequence).
    pub logged: u64,
    /// Events evicted to stay within capacity.
    pub evicted: u64,
    /// The configured capacity.
    pub capacity: usize,
}

/// An audit store in memory: bounded, indexed by actor, type and id, and
/// hash-chained like the durable stores.
///
/// Suits development servers and tests. Holds at most
/// [`capacity`](InMemoryAuditConfig::capacity) events (100,000 by default);
/// the oldest are evicted first and counted in [`stats`](Self::stats) and the
/// `audit_events_evicted_total` metric. After evictions, [`verify`] anchors on
/// the oldest event still held.
///
/// [`verify`]: AuditLogger::verify
#[derive(Debug)]
pub struct InMemoryAuditLogger {
    config: InMemoryAuditConfig,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Events in sequence order; `events[i]` has sequence `first_sequence + i`.
    events: VecDeque<Arc<AuditEvent>>,
    first_sequence: u64,
    head: ChainHead,
    evicted: u64,
    by_actor: HashMap<String, VecDeque<u64>, RandomState>,
    by_type: [VecDeque<u64>; 6],
    /// Ids are random in their low bits; a fast seeded hash suffices.
    by_id: HashMap<Uuid, u64, RandomState>,
}

impl Default for InMemoryAuditLogger {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryAuditLogger {
    /// A store with the default configuration (capacity 100,000).
    pub fn new() -> Self {
        Self::from_valid_config(InMemoryAuditConfig::default())
    }

    /// A store that keeps at most `capacity` events; `capacity` must be at least 1.
    pub fn with_capacity(capacity: usize) -> Result<Self, AuditError> {
        Self::with_config(InMemoryAuditConfig {
            capacity,
            ..InMemoryAuditConfig::default()
        })
    }

    /// A store with `config`, validated.
    pub fn with_config(config: InMemoryAuditConfig) -> Result<Self, AuditError> {
        config.validate()?;
        Ok(Self::from_valid_config(config))
    }

    fn from_valid_config(config: InMemoryAuditConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                first_sequence: 1,
                ..Inner::default()
            }),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &InMemoryAuditConfig {
        &self.config
    }

    /// Stored, logged and evicted counts.
    pub fn stats(&self) -> InMemoryAuditStats {
        let inner = self.lock();
        InMemoryAuditStats {
            stored: inner.events.len(),
            logged: inner.head.sequence,
            evicted: inner.evicted,
            capacity: self.config.capacity,
        }
    }

    /// Events evicted to stay within capacity.
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }

    /// The chain head: sequence and hash of the last stored event.
    pub fn head(&self) -> ChainHead {
        self.lock().head
    }

    /// A snapshot of every stored event, oldest first (for tests and exports).
    pub fn snapshot(&self) -> Vec<AuditEvent> {
        let inner = self.lock();
        inner.events.iter().map(|e| AuditEvent::clone(e)).collect()
    }

    // The lock only guards plain data updates that cannot panic half-way, so a
    // poisoned lock still holds consistent data.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Newest-first events from `sequences` (ascending), up to `limit`.
    fn newest_from(inner: &Inner, sequences: &VecDeque<u64>, limit: usize) -> Vec<AuditEvent> {
        sequences
            .iter()
            .rev()
            .filter_map(|seq| inner.get(*seq))
            .take(limit)
            .map(|e| AuditEvent::clone(e))
            .collect()
    }
}

impl Inner {
    fn get(&self, sequence: u64) -> Option<&Arc<AuditEvent>> {
        let index = sequence.checked_sub(self.first_sequence)?;
        self.events.get(usize::try_from(index).ok()?)
    }

    fn append(&mut self, mut event: AuditEvent, capacity: usize) -> bool {
        if self.by_id.contains_key(&event.id) {
            return false;
        }
        let link = self.head.append(&mut event);
        let evicted = if self.events.len() >= capacity {
            self.evict_oldest()
        } else {
            false
        };
        self.by_id.insert(event.id, link.sequence);
        self.by_actor
            .entry(event.actor.clone())
            .or_default()
            .push_back(link.sequence);
        self.by_type[event.event_type.index()].push_back(link.sequence);
        self.events.push_back(Arc::new(event));
        if evicted {
            metrics::counter!(EVENTS_EVICTED_TOTAL, "store" => "memory").increment(1);
        }
        true
    }

    /// Removes the oldest event from the log and every index. Each index holds
    /// sequences in ascending order, so the oldest event is at its front.
    fn evict_oldest(&mut self) -> bool {
        let Some(oldest) = self.events.pop_front() else {
            return false;
        };
        let sequence = self.first_sequence;
        self.first_sequence += 1;
        self.evicted += 1;
        self.by_id.remove(&oldest.id);
        if let Some(seqs) = self.by_actor.get_mut(&oldest.actor) {
            if seqs.front() == Some(&sequence) {
                seqs.pop_front();
            }
            if seqs.is_empty() {
                self.by_actor.remove(&oldest.actor);
            }
        }
        let by_type = &mut self.by_type[oldest.event_type.index()];
        if by_type.front() == Some(&sequence) {
            by_type.pop_front();
        }
        true
    }
}

#[async_trait]
impl AuditLogger for InMemoryAuditLogger {
    async fn log(&self, event: AuditEvent) -> Result<(), AuditError> {
        let event = self.config.policy.apply(event)?;
        let stored = self.lock().append(event, self.config.capacity);
        if stored {
            metrics::counter!(EVENTS_LOGGED_TOTAL, "store" => "memory").increment(1);
        }
        Ok(())
    }

    async fn get_events_for_actor(&self, actor: &str) -> Result<Vec<AuditEvent>, AuditError> {
        let inner = self.lock();
        Ok(inner
            .by_actor
            .get(actor)
            .map(|seqs| Self::newest_from(&inner, seqs, self.config.max_results))
            .unwrap_or_default())
    }

    async fn get_recent_events(&self, limit: usize) -> Result<Vec<AuditEvent>, AuditError> {
        let inner = self.lock();
        Ok(inner
            .events
            .iter()
            .rev()
            .take(limit)
            .map(|e| AuditEvent::clone(e))
            .collect())
    }

    async fn get_events_by_type(
        &self,
        event_type: AuditEventType,
    ) -> Result<Vec<AuditEvent>, AuditError> {
        let inner = self.lock();
        Ok(Self::newest_from(
            &inner,
            &inner.by_type[event_type.index()],
            self.config.max_results,
        ))
    }

    async fn count(&self) -> usize {
        self.lock().events.len()
    }

    async fn query(&self, query: AuditQuery) -> Result<AuditPage, AuditError> {
        query.validate()?;
        let inner = self.lock();
        let below = query.cursor.map_or(u64::MAX, |c| c.0);
        let wanted = query.limit + 1;
        let pick = |event: &Arc<AuditEvent>| query.matches(event);
        // Walk the narrowest index that applies.
        let events: Vec<AuditEvent> = match (&query.actor, query.event_type) {
            (Some(actor), _) => inner
                .by_actor
                .get(actor.as_str())
                .map(|seqs| {
                    seqs.iter()
                        .rev()
                        .skip_while(|s| **s >= below)
                        .filter_map(|s| inner.get(*s))
                        .filter(|e| pick(e))
                        .take(wanted)
                        .map(|e| AuditEvent::clone(e))
                        .collect()
                })
                .unwrap_or_default(),
            (None, Some(event_type)) => inner.by_type[event_type.index()]
                .iter()
                .rev()
                .skip_while(|s| **s >= below)
                .filter_map(|s| inner.get(*s))
                .filter(|e| pick(e))
                .take(wanted)
                .map(|e| AuditEvent::clone(e))
                .collect(),
            (None, None) => inner
                .events
                .iter()
                .rev()
                .skip_while(|e| e.sequence().is_some_and(|s| s >= below))
                .filter(|e| pick(e))
                .take(wanted)
                .map(|e| AuditEvent::clone(e))
                .collect(),
        };
        Ok(AuditPage::from_overfetch(events, query.limit))
    }

    async fn verify(&self, range: VerifyRange) -> Result<ChainVerification, AuditError> {
        // Take cheap `Arc` copies under the lock and hash outside it, so
        // verification never stalls logging.
        let (anchor, events, head) = {
            let inner = self.lock();
            let start = range
                .from
                .unwrap_or(inner.first_sequence)
                .max(inner.first_sequence);
            let anchor = match start {
                0 | 1 => Some(ChainHead::EMPTY),
                s => inner
                    .get(s - 1)
                    .and_then(|e| e.chain)
                    .map(|link| ChainHead {
                        sequence: link.sequence,
                        hash: link.hash,
                    }),
            };
            let events: Vec<Arc<AuditEvent>> = inner
                .events
                .iter()
                .filter(|e| e.sequence().is_none_or(|s| range.contains(s)))
                .cloned()
                .collect();
            (anchor, events, inner.head)
        };
        let mut verifier = ChainVerifier::new(anchor);
        for event in &events {
            if !verifier.push(event) {
                break;
            }
        }
        Ok(if range.to.is_none() {
            verifier.finish_at_head(head)
        } else {
            verifier.finish()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(actor: &str, event_type: AuditEventType) -> AuditEvent {
        AuditEvent::new(event_type, actor, "act", true)
    }

    #[tokio::test]
    async fn evicts_oldest_beyond_capacity_and_counts_evictions() {
        let store = InMemoryAuditLogger::with_capacity(3).unwrap();
        for i in 0..5 {
            store
                .log(event(&format!("u{i}"), AuditEventType::DataAccess))
                .await
                .unwrap();
        }
        assert_eq!(store.count().await, 3);
        let stats = store.stats();
        assert_eq!((stats.stored, stats.logged, stats.evicted), (3, 5, 2));
        assert!(store.get_events_for_actor("u0").await.unwrap().is_empty());
        assert_eq!(store.get_events_for_actor("u4").await.unwrap().len(), 1);
        let by_type = store
            .get_events_by_type(AuditEventType::DataAccess)
            .await
            .unwrap();
        assert_eq!(
            by_type.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>(),
            ["u4", "u3", "u2"]
        );
        // Emptied actor entries are dropped, so the index stays bounded too.
        assert_eq!(store.lock().by_actor.len(), 3);
        let report = store.verify(VerifyRange::all()).await.unwrap();
        assert!(report.is_valid(), "{report:?}");
        assert_eq!(report.checked, 3);
    }

    #[tokio::test]
    async fn eviction_is_visible_as_a_metric() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let store = InMemoryAuditLogger::with_capacity(1).unwrap();
            let mut inner = store.lock();
            for i in 0..3 {
                inner.append(event(&format!("u{i}"), AuditEventType::Security), 1);
            }
        });
        let evicted = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find(|(key, ..)| key.key().name() == EVENTS_EVICTED_TOTAL)
            .map(|(.., value)| value);
        assert_eq!(
            evicted,
            Some(metrics_util::debugging::DebugValue::Counter(2))
        );
    }

    #[tokio::test]
    async fn zero_capacity_is_rejected_by_field_name() {
        let err = InMemoryAuditLogger::with_capacity(0).unwrap_err();
        assert!(matches!(
            err,
            AuditError::InvalidConfig {
                field: "capacity",
                ..
            }
        ));
        let err = InMemoryAuditLogger::with_config(InMemoryAuditConfig {
            max_results: 0,
            ..InMemoryAuditConfig::default()
        })
        .unwrap_err();
        assert!(matches!(
            err,
            AuditError::InvalidConfig {
                field: "max_results",
                ..
            }
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_logging_keeps_one_gapless_chain() {
        let store = Arc::new(InMemoryAuditLogger::new());
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    for i in 0..500 {
                        let e = AuditEvent::new(
                            AuditEventType::DataAccess,
                            format!("t{t}"),
                            format!("{i}"),
                            true,
                        );
                        store.log(e).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(store.count().await, 8_000);
        let report = store.verify(VerifyRange::all()).await.unwrap();
        assert!(report.is_valid());
        assert_eq!(report.checked, 8_000);
        assert_eq!(store.get_events_for_actor("t3").await.unwrap().len(), 500);
    }

    #[tokio::test]
    async fn max_results_caps_index_reads_to_the_newest() {
        let store = InMemoryAuditLogger::with_config(InMemoryAuditConfig {
            max_results: 2,
            ..InMemoryAuditConfig::default()
        })
        .unwrap();
        for i in 0..4 {
            store
                .log(AuditEvent::new(
                    AuditEventType::Security,
                    "u",
                    format!("a{i}"),
                    true,
                ))
                .await
                .unwrap();
        }
        let actions: Vec<_> = store
            .get_events_for_actor("u")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(actions, ["a3", "a2"]);
    }
}
