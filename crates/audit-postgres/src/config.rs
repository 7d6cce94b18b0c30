//! Settings of the PostgreSQL store.

use std::time::Duration;

use agent_patterns_audit::{AuditError, EventPolicy};
use serde::{Deserialize, Serialize};

/// Largest accepted [`max_batch_size`](PostgresAuditConfig::max_batch_size).
pub const MAX_BATCH_SIZE: usize = 10_000;

/// Largest accepted
/// [`max_in_flight_batches`](PostgresAuditConfig::max_in_flight_batches).
pub const MAX_IN_FLIGHT_BATCHES: usize = 16;

/// Settings of [`PostgresAuditLogger`](crate::PostgresAuditLogger).
///
/// Durations are (de)serialised as whole milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PostgresAuditConfig {
    /// Most events written in one transaction (`1..=10_000`).
    pub max_batch_size: usize,
    /// How long the writer waits for more events before committing a batch
    /// that is not full. Zero (the default) commits at once: batches still
    /// form on their own while the previous commit is in flight. Tokio's
    /// timers tick in milliseconds, so any nonzero linger waits about a
    /// millisecond at least; with many concurrent callers that only slows
    /// the writer (64 loggers in the bench: about 47,000 events/s with no
    /// linger, 24,000 with 0.1 ms, 19,000 with 1 ms).
    #[serde(with = "millis")]
    pub linger: Duration,
    /// Batches the writer keeps in flight at once (`1..=16`), each on its
    /// own connection. While one batch commits, the next is already being
    /// inserted; a batch still commits only after the one before it. A
    /// batch sent beside others waits until it is as large as the newest of
    /// them (or one of them lands), so a steady load keeps its batches
    /// large. 1 writes one batch at a time.
    pub max_in_flight_batches: usize,
    /// Events that may wait for the writer. When the queue is full, `log`
    /// waits for room (backpressure) until its deadline.
    pub queue_capacity: usize,
    /// Deadline of one `log` call: waiting for queue room plus waiting for the
    /// commit, retries included. On expiry the caller gets an error.
    #[serde(with = "millis")]
    pub log_timeout: Duration,
    /// First pause before retrying a failed batch; doubles per attempt.
    #[serde(with = "millis")]
    pub retry_initial_backoff: Duration,
    /// Longest pause between retries.
    #[serde(with = "millis")]
    pub retry_max_backoff: Duration,
    /// Run the embedded migrations when the store starts.
    pub run_migrations: bool,
    /// Most events returned by `get_events_for_actor`, `get_events_by_type`
    /// and `get_recent_events` (the newest ones).
    pub max_results: usize,
    /// Rows fetched per round trip by `verify`.
    pub verify_page_size: usize,
    /// Pool size when the store opens its own pool ([`connect`]); more than
    /// [`max_in_flight_batches`](Self::max_in_flight_batches), since the
    /// writer keeps one connection per batch in flight.
    ///
    /// [`connect`]: crate::PostgresAuditLogger::connect
    pub max_connections: u32,
    /// Longest wait for a pooled connection (own pool only), and for the
    /// health check's round trip.
    #[serde(with = "millis")]
    pub connect_timeout: Duration,
    /// Monthly partitions kept ready beyond the current month (`0..=120`).
    /// The writer calls `audit_ensure_partitions` on its first batch and then
    /// hourly; a role without EXECUTE on it (or `None`) leaves partitioning
    /// to the schema owner, and rows of a month without a partition go to
    /// the default partition, so no write ever fails for want of one.
    pub partitions_ahead: Option<u32>,
    /// Redaction and size rules.
    pub policy: EventPolicy,
}

impl Default for PostgresAuditConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 1_000,
            linger: Duration::ZERO,
            max_in_flight_batches: 2,
            queue_capacity: 10_000,
            log_timeout: Duration::from_secs(5),
            retry_initial_backoff: Duration::from_millis(10),
            retry_max_backoff: Duration::from_secs(1),
            run_migrations: true,
            max_results: 10_000,
            verify_page_size: 1_000,
            max_connections: 4,
            connect_timeout: Duration::from_secs(2),
            partitions_ahead: Some(2),
            policy: EventPolicy::default(),
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> AuditError {
    AuditError::InvalidConfig {
        field,
        reason: reason.into(),
    }
}

impl PostgresAuditConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), AuditError> {
        if !(1..=MAX_BATCH_SIZE).contains(&self.max_batch_size) {
            return Err(invalid(
                "max_batch_size",
                format!("must be in 1..={MAX_BATCH_SIZE}"),
            ));
        }
        if !(1..=MAX_IN_FLIGHT_BATCHES).contains(&self.max_in_flight_batches) {
            return Err(invalid(
                "max_in_flight_batches",
                format!("must be in 1..={MAX_IN_FLIGHT_BATCHES}"),
            ));
        }
        if self.queue_capacity == 0 {
            return Err(invalid("queue_capacity", "must be at least 1"));
        }
        if self.partitions_ahead.is_some_and(|months| months > 120) {
            return Err(invalid("partitions_ahead", "must be at most 120 months"));
        }
        if self.log_timeout.is_zero() {
            return Err(invalid("log_timeout", "must be positive"));
        }
        if self.retry_initial_backoff.is_zero() {
            return Err(invalid("retry_initial_backoff", "must be positive"));
        }
        if self.retry_max_backoff < self.retry_initial_backoff {
            return Err(invalid(
                "retry_max_backoff",
                "must be at least retry_initial_backoff",
            ));
        }
        if self.max_results == 0 {
            return Err(invalid("max_results", "must be at least 1"));
        }
        if self.verify_page_size == 0 {
            return Err(invalid("verify_page_size", "must be at least 1"));
        }
        if usize::try_from(self.max_connections).unwrap_or(usize::MAX)
            < self.max_in_flight_batches.saturating_add(1)
        {
            return Err(invalid(
                "max_connections",
                "must exceed max_in_flight_batches (the writer keeps one connection \
                 per batch in flight; reads need one more)",
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(invalid("connect_timeout", "must be positive"));
        }
        self.policy.validate()
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_round_trips_through_json() {
        let config = PostgresAuditConfig::default();
        config.validate().unwrap();
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["log_timeout"], 5_000);
        let back: PostgresAuditConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, config);
        let partial: PostgresAuditConfig =
            serde_json::from_str(r#"{"max_batch_size": 64, "linger": 2}"#).unwrap();
        assert_eq!(partial.max_batch_size, 64);
        assert_eq!(partial.linger, Duration::from_millis(2));
    }

    #[test]
    fn each_bad_field_is_named() {
        type Breaks = fn(&mut PostgresAuditConfig);
        let cases: [(&str, Breaks); 11] = [
            ("max_batch_size", |c| c.max_batch_size = 0),
            ("queue_capacity", |c| c.queue_capacity = 0),
            ("log_timeout", |c| c.log_timeout = Duration::ZERO),
            ("retry_initial_backoff", |c| {
                c.retry_initial_backoff = Duration::ZERO
            }),
            ("retry_max_backoff", |c| {
                c.retry_max_backoff = Duration::from_millis(1)
            }),
            ("max_results", |c| c.max_results = 0),
            ("verify_page_size", |c| c.verify_page_size = 0),
            ("max_connections", |c| c.max_connections = 2),
            ("max_in_flight_batches", |c| c.max_in_flight_batches = 0),
            ("max_in_flight_batches", |c| c.max_in_flight_batches = 17),
            ("connect_timeout", |c| c.connect_timeout = Duration::ZERO),
        ];
        for (field, breaks) in cases {
            let mut config = PostgresAuditConfig::default();
            breaks(&mut config);
            match config.validate() {
                Err(AuditError::InvalidConfig { field: named, .. }) => assert_eq!(named, field),
                other => panic!("{field}: expected a config error, got {other:?}"),
            }
        }
    }
}
