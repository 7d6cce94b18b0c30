//! A durable, append-only, hash-chained audit store in PostgreSQL.
//!
//! [`PostgresAuditLogger`] implements
//! [`AuditLogger`](agent_patterns_audit::AuditLogger) from
//! `agent-patterns-audit`, so it drops in wherever the in-memory store was
//! used (`Arc<dyn AuditLogger>`).
//!
//! # Guarantees
//!
//! * **Durable acknowledgement.** `log(event).await` returns `Ok` only after
//!   the transaction holding the event has committed.
//! * **Group commit.** Concurrent callers share transactions (one statement
//!   and one round trip per batch while this writer alone extends the chain;
//!   a transaction with a binary `COPY` when it must re-read the head), so
//!   throughput rises with concurrency. Up to
//!   [`max_in_flight_batches`](PostgresAuditConfig::max_in_flight_batches)
//!   batches are in flight at once, each on its own connection: the next
//!   batch is inserted while the one before commits. A batch sent beside
//!   others waits until it is as large as the newest of them (or one lands),
//!   so a steady load keeps its commits large instead of splitting them.
//!   [`max_batch_size`](PostgresAuditConfig::max_batch_size) and
//!   [`linger`](PostgresAuditConfig::linger) tune it.
//! * **Bounded memory, explicit backpressure.** The queue holds at most
//!   [`queue_capacity`](PostgresAuditConfig::queue_capacity) events; when full,
//!   callers wait until their deadline and then get
//!   [`AuditError::QueueFull`](agent_patterns_audit::AuditError::QueueFull).
//!   No event is ever dropped without its caller getting an error.
//! * **One chain across all writers.** Every batch claims its position in
//!   `audit_chain_links` (a unique index admits one batch per position, so
//!   two writers never extend the same event), and a batch sent before the
//!   one ahead of it committed waits for that commit inside its own
//!   statement and aborts if it did not happen, so tasks, processes and
//!   replicas writing to one database extend a single gapless chain.
//!   `verify()` checks it in pages. Every writer of a database must run a
//!   version with chain links (the migration replaces the older head row).
//! * **Outages.** Transient failures (lost connection, server restart) are
//!   retried with exponential backoff until the callers' deadline. Writes are
//!   idempotent by event id: a batch whose commit outcome was unknown is
//!   retried without duplicating rows, and the chain continues intact. The
//!   health check reports unhealthy while writes fail.
//! * **Append-only in the database.** Triggers reject `UPDATE`, `DELETE`
//!   and `TRUNCATE` on `audit_events` and on each of its partitions, for
//!   every role.
//! * **Monthly partitions.** `audit_events` is partitioned by event time
//!   (UTC months, `audit_events_YYYY_MM`, plus `audit_events_default` for
//!   months without a partition). The writer keeps
//!   [`partitions_ahead`](PostgresAuditConfig::partitions_ahead) months ready
//!   through `audit_ensure_partitions(months)` (checked on its first batch,
//!   then hourly); a maintenance job can call it as well.
//! * **Graceful shutdown.** [`PostgresAuditLogger::close`] stops intake,
//!   flushes the queue and releases the writer's connection;
//!   [`PostgresAuditLogger::flush`] only waits. With the `shutdown` feature
//!   the store is an `agent_patterns_shutdown::ShutdownHandler` that does
//!   exactly that in the `FlushBuffers` phase.
//!
//! # Role layout
//!
//! Give each duty its own role, so the process that writes events cannot
//! rewrite them:
//!
//! ```sql
//! -- Owns the schema and runs the migrations (PostgresAuditLogger::migrate).
//! -- Table owners can disable triggers: never let the service log in as it.
//! CREATE ROLE audit_owner NOLOGIN;
//! -- The service: appends and reads, nothing else.
//! CREATE ROLE audit_writer LOGIN;
//! GRANT SELECT, INSERT ON audit_events TO audit_writer;
//! GRANT SELECT, INSERT ON audit_chain_links TO audit_writer;
//! -- Lets the writer create next months' partitions and prune old chain
//! -- links (the functions run as their owner); leave them out to run them
//! -- from a maintenance job instead.
//! GRANT EXECUTE ON FUNCTION audit_ensure_partitions(integer) TO audit_writer;
//! GRANT EXECUTE ON FUNCTION audit_prune_chain_links(integer) TO audit_writer;
//! -- Auditors: read only.
//! CREATE ROLE audit_reader LOGIN;
//! GRANT SELECT ON audit_events, audit_chain_links TO audit_reader;
//! ```
//!
//! Start the service with `run_migrations: false` when it logs in as
//! `audit_writer`.
//!
//! Upgrading a trail written by a version with the `audit_chain_head` row:
//! the migration locks that row, checks it against the newest event and
//! replaces it with `audit_chain_links`; writers still running the old
//! version then fail instead of writing. Grant the writer role `SELECT,
//! INSERT` on `audit_chain_links` (and `EXECUTE` on
//! `audit_prune_chain_links(integer)` if it prunes) before it starts again.
//! The writer's connections use READ COMMITTED whatever the server default.
//!
//! # Retention
//!
//! Rows cannot be deleted (the triggers forbid it); a month is retired whole,
//! by the owner (or a maintenance role it grants ownership duties to):
//!
//! ```sql
//! DROP TABLE audit_events_2025_01;   -- after archiving it, if required
//! ```
//!
//! Afterwards verify from the first retained sequence,
//! `VerifyRange { from: Some(first), .. }`, which trusts that event's
//! `prev_hash` as the anchor (keep the dropped month's last hash with the
//! archive to prove the link). `count()` then counts the retained events.
//! Retention assumes events arrive close to their timestamps: an event logged
//! long after its time lands in an older month and leaves with it.
//!
//! # Example
//!
//! ```
//! use agent_patterns_audit::*;
//! use agent_patterns_audit_postgres::PostgresAuditLogger;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use sqlx::Connection;
//! # let admin_url = std::env::var("DATABASE_URL")
//! #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
//! # let name = format!("audit_doc_{}", uuid::Uuid::now_v7().simple());
//! # let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
//! # sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await?;
//! # let database_url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
//! let audit_logger = PostgresAuditLogger::connect(&database_url).await?;
//!
//! let event = AuditEvent::new(AuditEventType::Authentication, "user-1", "login", true)
//!     .with_source_ip("203.0.113.7")
//!     .with_metadata("method", "password");
//! audit_logger.log(event).await?; // returns once committed
//!
//! assert_eq!(audit_logger.get_events_for_actor("user-1").await?.len(), 1);
//! assert!(audit_logger.verify(VerifyRange::all()).await?.is_valid());
//! audit_logger.close().await?;
//! # audit_logger.pool().close().await;
//! # sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut admin).await?;
//! # Ok(())
//! # }
//! ```

mod config;
mod group_commit;
mod pg_sink;
mod rows;
mod store;

pub use config::{MAX_BATCH_SIZE, MAX_IN_FLIGHT_BATCHES, PostgresAuditConfig};
pub use group_commit::{BATCH_SIZE, COMMIT_DURATION_SECONDS, QUEUE_DEPTH, WRITE_RETRIES_TOTAL};
pub use store::{MIGRATOR, PostgresAuditLogger};
