//! The store: queue in front, group-commit writer behind, SQL reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::PostgresAuditConfig;
use crate::group_commit::{GroupCommit, Settings, Shared};
use crate::pg_sink::PgSink;
use crate::rows::{
    EVENT_COLUMNS, decode_event, decode_head, storable_timestamp, storage_error, to_db_seq,
};
use agent_patterns_audit::{
    AuditError, AuditEvent, AuditEventType, AuditHealth, AuditLogger, AuditPage, AuditQuery,
    ChainHead, ChainVerification, ChainVerifier, VerifyRange, async_trait,
};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder};

/// The embedded schema migrations (`migrations/` of this crate).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A durable, append-only, hash-chained audit store in PostgreSQL.
///
/// `log` puts the event on a bounded queue and returns once the transaction
/// holding it has committed. One writer task drains the queue: it chains
/// every queued event onto the head and sends the batch as one statement,
/// with up to [`max_in_flight_batches`](PostgresAuditConfig::max_in_flight_batches)
/// batches in flight on separate connections. Each batch claims its position
/// in `audit_chain_links` and commits only after the batch before it did.
/// Concurrent callers therefore share commits (throughput grows with
/// concurrency), and every writer on the database — other tasks, processes
/// or replicas — extends the same chain.
///
/// Failures: transient errors (broken connection, server restart) are retried
/// with exponential backoff until the caller's deadline
/// ([`log_timeout`](PostgresAuditConfig::log_timeout)); writes are idempotent
/// by event id, so a retried batch never duplicates a row. When the queue is
/// full, `log` waits for room until the same deadline and then fails with
/// [`AuditError::QueueFull`]. Nothing is dropped without its caller getting an
/// error.
pub struct PostgresAuditLogger {
    pool: PgPool,
    config: Arc<PostgresAuditConfig>,
    queue: GroupCommit,
    shared: Arc<Shared>,
    closed: AtomicBool,
}

impl std::fmt::Debug for PostgresAuditLogger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresAuditLogger")
            .field("config", &self.config)
            .field("queued", &self.queued())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl PostgresAuditLogger {
    /// Connects to `url` with the default configuration (migrations run).
    pub async fn connect(url: &str) -> Result<Self, AuditError> {
        Self::connect_with(url, PostgresAuditConfig::default()).await
    }

    /// Connects to `url` with `config`, opening a pool of
    /// [`max_connections`](PostgresAuditConfig::max_connections).
    pub async fn connect_with(url: &str, config: PostgresAuditConfig) -> Result<Self, AuditError> {
        config.validate()?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.connect_timeout)
            .connect(url)
            .await
            .map_err(|e| {
                AuditError::Unavailable(format!("cannot connect to audit database: {e}"))
            })?;
        Self::from_pool_with(pool, config).await
    }

    /// Uses an existing pool with the default configuration (migrations run).
    pub async fn from_pool(pool: PgPool) -> Result<Self, AuditError> {
        Self::from_pool_with(pool, PostgresAuditConfig::default()).await
    }

    /// Uses an existing pool with `config`. Must be called inside a tokio
    /// runtime: it spawns the writer task, which keeps one of the pool's
    /// connections per batch in flight, so the pool needs more than
    /// [`max_in_flight_batches`](PostgresAuditConfig::max_in_flight_batches)
    /// (3 with the defaults).
    pub async fn from_pool_with(
        pool: PgPool,
        config: PostgresAuditConfig,
    ) -> Result<Self, AuditError> {
        config.validate()?;
        let needed = config.max_in_flight_batches.saturating_add(1);
        if usize::try_from(pool.options().get_max_connections()).unwrap_or(usize::MAX) < needed {
            return Err(AuditError::InvalidConfig {
                field: "pool",
                reason: format!(
                    "needs at least {needed} connections (one per batch in flight, \
                     max_in_flight_batches = {}, and one for reads)",
                    config.max_in_flight_batches
                ),
            });
        }
        if config.run_migrations {
            Self::migrate(&pool).await?;
        }
        let head = Self::read_head(&pool).await?;
        let shared = Arc::new(Shared::new(head));
        let settings = Settings {
            queue_capacity: config.queue_capacity,
            max_batch_size: config.max_batch_size,
            linger: config.linger,
            log_timeout: config.log_timeout,
            initial_backoff: config.retry_initial_backoff,
            max_backoff: config.retry_max_backoff,
            max_in_flight: config.max_in_flight_batches,
        };
        let queue = GroupCommit::start(
            PgSink::new(
                pool.clone(),
                config.partitions_ahead,
                config.max_in_flight_batches,
                config.log_timeout,
            ),
            settings,
            Arc::clone(&shared),
        );
        Ok(Self {
            pool,
            config: Arc::new(config),
            queue,
            shared,
            closed: AtomicBool::new(false),
        })
    }

    /// Applies the embedded migrations to `pool`'s database (idempotent; safe
    /// to call from several replicas at once). Run it as the schema owner
    /// when the writer role may not create tables.
    pub async fn migrate(pool: &PgPool) -> Result<(), AuditError> {
        MIGRATOR
            .run(pool)
            .await
            .map_err(|e| AuditError::Storage(format!("audit migrations failed: {e}")))
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The configuration in use.
    pub fn config(&self) -> &PostgresAuditConfig {
        &self.config
    }

    /// Events accepted but not yet handed to a batch.
    pub fn queued(&self) -> usize {
        self.queue.queued()
    }

    /// The chain head as committed in the database.
    pub async fn head(&self) -> Result<ChainHead, AuditError> {
        Self::read_head(&self.pool).await
    }

    async fn read_head(pool: &PgPool) -> Result<ChainHead, AuditError> {
        let row = sqlx::query(
            "SELECT last_seq AS seq, last_hash AS hash FROM audit_chain_links \
             WHERE after_seq IS NOT NULL ORDER BY after_seq DESC LIMIT 1",
        )
        .fetch_one(pool)
        .await
        .map_err(storage_error)?;
        decode_head(&row)
    }

    /// Waits until every event queued before this call has been committed
    /// (or has failed back to its caller).
    pub async fn flush(&self) -> Result<(), AuditError> {
        self.queue.flush().await
    }

    /// Stops accepting events (later `log` calls fail with
    /// [`AuditError::Closed`]), flushes the queue and stops the writer, which
    /// returns its connection to the pool. Call it on graceful shutdown (before
    /// closing the pool); it returns once everything accepted is committed or
    /// failed. Reads keep working.
    pub async fn close(&self) -> Result<(), AuditError> {
        self.closed.store(true, Ordering::Release);
        self.queue.close().await
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    async fn fetch_events(
        &self,
        mut query: QueryBuilder<'_, Postgres>,
    ) -> Result<Vec<AuditEvent>, AuditError> {
        let rows = query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(storage_error)?;
        rows.iter().map(decode_event).collect()
    }

    fn select() -> QueryBuilder<'static, Postgres> {
        QueryBuilder::new(format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events WHERE TRUE"
        ))
    }

    fn limit_of(&self, n: usize) -> i64 {
        i64::try_from(n.min(self.config.max_results)).unwrap_or(i64::MAX)
    }
}

#[async_trait]
impl AuditLogger for PostgresAuditLogger {
    async fn log(&self, event: AuditEvent) -> Result<(), AuditError> {
        if self.is_closed() {
            return Err(AuditError::Closed);
        }
        let event = self.config.policy.apply(event)?;
        if !storable_timestamp(&event.timestamp) {
            return Err(AuditError::InvalidEvent(format!(
                "timestamp {} is outside PostgreSQL's range",
                event.timestamp
            )));
        }
        self.queue.submit(event).await
    }

    async fn get_events_for_actor(&self, actor: &str) -> Result<Vec<AuditEvent>, AuditError> {
        let mut q = Self::select();
        q.push(" AND actor = ").push_bind(actor.to_owned());
        q.push(" ORDER BY seq DESC LIMIT ")
            .push_bind(self.limit_of(usize::MAX));
        self.fetch_events(q).await
    }

    async fn get_recent_events(&self, limit: usize) -> Result<Vec<AuditEvent>, AuditError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut q = Self::select();
        q.push(" ORDER BY seq DESC LIMIT ")
            .push_bind(self.limit_of(limit));
        self.fetch_events(q).await
    }

    async fn get_events_by_type(
        &self,
        event_type: AuditEventType,
    ) -> Result<Vec<AuditEvent>, AuditError> {
        let mut q = Self::select();
        q.push(" AND event_type = ").push_bind(event_type.as_str());
        q.push(" ORDER BY seq DESC LIMIT ")
            .push_bind(self.limit_of(usize::MAX));
        self.fetch_events(q).await
    }

    /// Events stored: from the oldest retained one to the head (the table is
    /// append-only and gapless, so that is the row count; retention that
    /// dropped old months lowers it). If the database cannot be asked, the
    /// last committed head this store knows of, with a warning.
    async fn count(&self) -> usize {
        let counted = sqlx::query_scalar::<_, i64>(
            "SELECT h.last_seq - COALESCE((SELECT min(seq) FROM audit_events), h.last_seq + 1) + 1 \
             FROM audit_chain_links h WHERE after_seq IS NOT NULL \
             ORDER BY after_seq DESC LIMIT 1",
        )
        .fetch_one(&self.pool)
        .await;
        let sequence = match counted {
            Ok(rows) => u64::try_from(rows).unwrap_or(0),
            Err(err) => {
                tracing::warn!(error = %err, "audit count: database unavailable; using last known head");
                self.shared.committed_sequence()
            }
        };
        usize::try_from(sequence).unwrap_or(usize::MAX)
    }

    async fn query(&self, query: AuditQuery) -> Result<AuditPage, AuditError> {
        query.validate()?;
        let mut q = Self::select();
        if let Some(from) = query.from {
            q.push(" AND ts >= ").push_bind(from);
        }
        if let Some(to) = query.to {
            q.push(" AND ts < ").push_bind(to);
        }
        if let Some(actor) = &query.actor {
            q.push(" AND actor = ").push_bind(actor.clone());
        }
        if let Some(event_type) = query.event_type {
            q.push(" AND event_type = ").push_bind(event_type.as_str());
        }
        if let Some(success) = query.success {
            q.push(" AND success = ").push_bind(success);
        }
        if let Some(resource) = &query.resource {
            q.push(" AND resource = ").push_bind(resource.clone());
        }
        if let Some(cursor) = query.cursor {
            q.push(" AND seq < ").push_bind(to_db_seq(cursor.0));
        }
        let overfetch = i64::try_from(query.limit + 1).unwrap_or(i64::MAX);
        q.push(" ORDER BY seq DESC LIMIT ").push_bind(overfetch);
        let events = self.fetch_events(q).await?;
        Ok(AuditPage::from_overfetch(events, query.limit))
    }

    /// Walks the chain in pages of
    /// [`verify_page_size`](PostgresAuditConfig::verify_page_size) rows.
    ///
    /// Without `range.from` the walk starts at sequence 1 (so a removed first
    /// event is caught); pass `from` to start after events dropped by
    /// retention, trusting that event's `prev_hash`. Without `range.to` the
    /// walk ends at the head row, so events cut off the end are reported too.
    async fn verify(&self, range: VerifyRange) -> Result<ChainVerification, AuditError> {
        let head = self.head().await?;
        let start = range.from.unwrap_or(1).max(1);
        let end = range.to.map_or(head.sequence, |to| to.min(head.sequence));
        let anchor = if start == 1 {
            Some(ChainHead::EMPTY)
        } else {
            let row = sqlx::query("SELECT seq, hash FROM audit_events WHERE seq = $1")
                .bind(to_db_seq(start - 1))
                .fetch_optional(&self.pool)
                .await
                .map_err(storage_error)?;
            row.as_ref().map(decode_head).transpose()?
        };
        let mut verifier = ChainVerifier::new(anchor);
        let page_size = i64::try_from(self.config.verify_page_size).unwrap_or(i64::MAX);
        let mut next = start;
        'pages: while next <= end {
            let mut q = Self::select();
            q.push(" AND seq >= ").push_bind(to_db_seq(next));
            q.push(" AND seq <= ").push_bind(to_db_seq(end));
            q.push(" ORDER BY seq LIMIT ").push_bind(page_size);
            let page = self.fetch_events(q).await?;
            let Some(last) = page.last().and_then(AuditEvent::sequence) else {
                break;
            };
            for event in &page {
                if !verifier.push(event) {
                    break 'pages;
                }
            }
            next = last + 1;
        }
        Ok(if range.to.is_none() {
            verifier.finish_at_head(head)
        } else {
            verifier.finish()
        })
    }

    /// Unhealthy while the writer's last attempt failed, or when the database
    /// does not answer within
    /// [`connect_timeout`](PostgresAuditConfig::connect_timeout).
    async fn health(&self) -> AuditHealth {
        let queued = self.queued();
        if self.is_closed() {
            return AuditHealth {
                queued,
                ..AuditHealth::unhealthy("audit logger is closed")
            };
        }
        if let Some(last) = self.shared.failing() {
            return AuditHealth {
                queued,
                ..AuditHealth::unhealthy(format!("audit writes failing: {last}"))
            };
        }
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        match tokio::time::timeout(self.config.connect_timeout, ping).await {
            Ok(Ok(_)) => AuditHealth {
                queued,
                ..AuditHealth::healthy()
            },
            Ok(Err(err)) => AuditHealth {
                queued,
                ..AuditHealth::unhealthy(format!("audit database unreachable: {err}"))
            },
            Err(_) => AuditHealth {
                queued,
                ..AuditHealth::unhealthy("audit database did not answer in time")
            },
        }
    }
}

/// Registers the store with the shutdown coordinator: on shutdown it stops
/// accepting events and waits until every accepted event is committed (phase
/// `FlushBuffers`).
#[cfg(feature = "shutdown")]
#[agent_patterns_shutdown::async_trait]
impl agent_patterns_shutdown::ShutdownHandler for PostgresAuditLogger {
    fn name(&self) -> &str {
        "audit_postgres"
    }

    async fn shutdown(&self) -> Result<(), String> {
        self.close().await.map_err(|e| e.to_string())
    }
}
