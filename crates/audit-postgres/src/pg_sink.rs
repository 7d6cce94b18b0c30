//! Writing batches to PostgreSQL.
//!
//! The pipelined path sends a batch the writer has already chained as one
//! statement, so one round trip, while the batches sent before it may still
//! be in flight on other connections. The statement claims the batch's
//! position in `audit_chain_links` (at most one batch continues from any
//! position), inserts the rows only if the claim held, and finally probes
//! for the link of the batch before it: the probe waits until that batch's
//! transaction ends and aborts this one unless it committed. Inserting
//! overlaps with the previous batch's commit, and no batch ever commits
//! after a predecessor that did not.
//!
//! The careful path is one transaction that reads the head, skips events
//! already stored (a previous attempt may have committed without us hearing
//! back), chains the rest, claims the position and loads them with a binary
//! `COPY`. It runs when the writer does not know the head (at start,
//! after any failure), when another writer (another replica) moved the head,
//! and when the pipelined path hits an id that is already stored.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use agent_patterns_audit::{AuditEvent, ChainHash, ChainHead};
use sqlx::pool::PoolConnection;
use sqlx::{Executor, PgConnection, PgPool, Postgres, Row};
use uuid::Uuid;

use crate::group_commit::{BatchSink, Outcome, Pending, Sent, WriteError, Written, abandoned};
use crate::rows::{is_transient, to_db_seq};

/// The [`BatchSink`] of [`PostgresAuditLogger`](crate::PostgresAuditLogger).
pub(crate) struct PgSink {
    pool: PgPool,
    /// The writer's connections between batches, kept so a batch need not
    /// wait for the pool (nor for its health check). A connection that
    /// failed is closed instead of coming back.
    idle: Arc<Mutex<Vec<PoolConnection<Postgres>>>>,
    /// Connections kept idle at most: one per batch in flight.
    max_idle: usize,
    /// Months of partitions to keep ready, if the writer maintains them.
    partitions_ahead: Option<u32>,
    /// When to run the upkeep (partitions, old links) next.
    next_upkeep: tokio::time::Instant,
    /// How long one write may take: the callers' deadline. A write still
    /// running then is abandoned and its connection closed (a half-open
    /// connection must not stall the writer).
    deadline: std::time::Duration,
}

/// How often the writer makes sure the coming months have partitions and
/// prunes old chain links.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Chain links kept by the hourly pruning: far more than batches that can be
/// in flight, so pruning never touches a link a writer still probes for (and
/// if it did, that writer would only take the careful path).
const LINKS_KEPT: i32 = 10_000;

impl PgSink {
    pub(crate) fn new(
        pool: PgPool,
        partitions_ahead: Option<u32>,
        max_in_flight: usize,
        deadline: std::time::Duration,
    ) -> Self {
        Self {
            deadline,
            pool,
            idle: Arc::new(Mutex::new(Vec::with_capacity(max_in_flight))),
            max_idle: max_in_flight,
            partitions_ahead,
            next_upkeep: tokio::time::Instant::now(),
        }
    }

    /// Whether the upkeep is due, and if so, what it covers.
    fn upkeep_due(&mut self) -> Option<Upkeep> {
        let now = tokio::time::Instant::now();
        if now < self.next_upkeep {
            return None;
        }
        self.next_upkeep = now + UPKEEP_INTERVAL;
        Some(Upkeep {
            partitions_ahead: self.partitions_ahead,
        })
    }

    fn lanes(&self) -> Lanes {
        Lanes {
            pool: self.pool.clone(),
            idle: Arc::clone(&self.idle),
            max_idle: self.max_idle,
        }
    }
}

/// Where a batch gets its connection and returns it.
struct Lanes {
    pool: PgPool,
    idle: Arc<Mutex<Vec<PoolConnection<Postgres>>>>,
    max_idle: usize,
}

impl Lanes {
    async fn checkout(&self) -> Result<PoolConnection<Postgres>, WriteError> {
        let kept = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        if let Some(conn) = kept {
            return Ok(conn);
        }
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| classify(Phase::Connect, e))?;
        // The claim and the probe rely on READ COMMITTED (a probe waits for
        // the batch before it and then sees it); a pool or server default of
        // a stricter level would turn every overlap into a serialization
        // failure.
        conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(|e| classify(Phase::Write, e))?;
        Ok(conn)
    }

    /// Keeps a connection that worked for the next batch.
    fn checkin(&self, conn: PoolConnection<Postgres>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }
}

/// Closes a connection that failed: it may be broken or inside an aborted
/// transaction, and closing the socket makes the server roll back whatever
/// it had open.
fn discard(conn: PoolConnection<Postgres>) {
    drop(conn.detach());
}

/// Hourly housekeeping, run on a batch's connection before the batch.
struct Upkeep {
    partitions_ahead: Option<u32>,
}

impl Upkeep {
    async fn run(self, conn: &mut PgConnection) {
        if let Some(months) = self.partitions_ahead {
            ensure_partitions(conn, months).await;
        }
        prune_links(conn).await;
    }
}

/// Deletes all but the newest chain links. A failure (say, a role without
/// EXECUTE on the function) is logged, never fatal.
async fn prune_links(conn: &mut PgConnection) {
    match sqlx::query_scalar::<_, i64>("SELECT audit_prune_chain_links($1)")
        .bind(LINKS_KEPT)
        .fetch_one(conn)
        .await
    {
        Ok(0) => {}
        Ok(pruned) => tracing::debug!(pruned, "audit: pruned old chain links"),
        Err(error) => tracing::warn!(%error, "audit: could not prune old chain links"),
    }
}

/// Create the partitions of the coming months that are missing. A failure is
/// logged, never fatal: rows of a month without a partition go to the default
/// partition.
async fn ensure_partitions(conn: &mut PgConnection, months: u32) {
    let months = i32::try_from(months).unwrap_or(i32::MAX);
    match sqlx::query_scalar::<_, i32>("SELECT audit_ensure_partitions($1)")
        .bind(months)
        .fetch_one(conn)
        .await
    {
        Ok(0) => {}
        Ok(created) => tracing::info!(created, "audit: created monthly partitions"),
        Err(error) => tracing::warn!(
            %error,
            "audit: could not create monthly partitions; new rows use the default partition"
        ),
    }
}

impl BatchSink for PgSink {
    async fn write(&mut self, batch: &mut [Pending]) -> Result<Written, WriteError> {
        let upkeep = self.upkeep_due();
        let lanes = self.lanes();
        let mut conn = lanes.checkout().await?;
        if let Some(upkeep) = upkeep {
            upkeep.run(&mut conn).await;
        }
        let Ok(result) = tokio::time::timeout(self.deadline, write_careful(&mut conn, batch)).await
        else {
            discard(conn);
            return Err(WriteError::Transient(abandoned(self.deadline)));
        };
        match result {
            Ok(written) => {
                lanes.checkin(conn);
                Ok(written)
            }
            Err(err) => {
                discard(conn);
                // A stored id or a claimed position seen only now: another
                // transaction committed them meanwhile (a batch whose answer
                // was lost, another replica). The next attempt sees them.
                if let sqlx::Error::Database(db) = &err
                    && db.code().as_deref() == Some("23505")
                {
                    return Err(WriteError::Transient(err.to_string()));
                }
                Err(classify(Phase::Write, err))
            }
        }
    }

    fn send(
        &mut self,
        batch: Vec<Pending>,
        after: ChainHead,
        end: ChainHead,
    ) -> impl Future<Output = Sent> + Send + 'static {
        let upkeep = self.upkeep_due();
        let lanes = self.lanes();
        let deadline = self.deadline;
        async move {
            let mut conn = match lanes.checkout().await {
                Ok(conn) => conn,
                Err(err) => return (batch, Err(err)),
            };
            if let Some(upkeep) = upkeep {
                upkeep.run(&mut conn).await;
            }
            let written =
                tokio::time::timeout(deadline, write_pipelined(&mut conn, &batch, after, end))
                    .await;
            let Ok(written) = written else {
                discard(conn);
                return (batch, Err(WriteError::Transient(abandoned(deadline))));
            };
            match written {
                Ok(outcome) => {
                    lanes.checkin(conn);
                    (batch, Ok(outcome))
                }
                Err(err) => {
                    discard(conn);
                    (batch, Err(classify(Phase::Write, err)))
                }
            }
        }
    }
}

/// Whether a failed attempt may succeed if tried again.
fn classify(phase: Phase, err: sqlx::Error) -> WriteError {
    match phase {
        // Not getting a connection at all means the database is unreachable,
        // starting up or refusing connections for now.
        Phase::Connect if !matches!(err, sqlx::Error::PoolClosed) => {
            WriteError::Transient(err.to_string())
        }
        _ if is_transient(&err) => WriteError::Transient(err.to_string()),
        _ => WriteError::Fatal(err.to_string()),
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Connect,
    Write,
}

/// The pipelined path: writes `batch`, chained from `after` to `end`, with
/// one statement.
async fn write_pipelined(
    conn: &mut PgConnection,
    batch: &[Pending],
    after: ChainHead,
    end: ChainHead,
) -> Result<Outcome, sqlx::Error> {
    let n = batch.len();
    if n == 0 {
        // The claim would cover positions no event fills.
        return Err(sqlx::Error::Protocol("empty audit batch sent".into()));
    }
    let mut seq = Vec::with_capacity(n);
    let mut id = Vec::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    let mut event_type = Vec::with_capacity(n);
    let mut actor = Vec::with_capacity(n);
    let mut action = Vec::with_capacity(n);
    let mut success = Vec::with_capacity(n);
    let mut session_id = Vec::with_capacity(n);
    let mut source_ip = Vec::with_capacity(n);
    let mut resource = Vec::with_capacity(n);
    let mut metadata = Vec::with_capacity(n);
    let mut prev_hash = Vec::with_capacity(n);
    let mut hash = Vec::with_capacity(n);
    for pending in batch {
        let event = &pending.event;
        let link = event.chain.as_ref().ok_or_else(|| {
            sqlx::Error::Protocol("audit event sent without its chain link".into())
        })?;
        seq.push(to_db_seq(link.sequence));
        id.push(event.id);
        ts.push(event.timestamp);
        event_type.push(event.event_type.as_str());
        actor.push(event.actor.as_str());
        action.push(event.action.as_str());
        success.push(event.success);
        session_id.push(event.session_id.as_deref());
        source_ip.push(event.source_ip.as_deref());
        resource.push(event.resource.as_deref());
        metadata.push(
            serde_json::to_string(&event.metadata).map_err(|e| sqlx::Error::Encode(Box::new(e)))?,
        );
        prev_hash.push(link.prev_hash.as_bytes().as_slice());
        hash.push(link.hash.as_bytes().as_slice());
    }
    let result = sqlx::query(PIPELINED_INSERT)
        .bind(seq)
        .bind(id)
        .bind(ts)
        .bind(event_type)
        .bind(actor)
        .bind(action)
        .bind(success)
        .bind(session_id)
        .bind(source_ip)
        .bind(resource)
        .bind(metadata)
        .bind(prev_hash)
        .bind(hash)
        .bind(to_db_seq(after.sequence))
        .bind(to_db_seq(end.sequence))
        .bind(end.hash.as_bytes().as_slice())
        .bind(after.hash.as_bytes().as_slice())
        .execute(&mut *conn)
        .await;
    match result {
        Ok(done) if usize::try_from(done.rows_affected()).is_ok_and(|rows| rows == n) => {
            Ok(Outcome::Committed)
        }
        // The position was taken: nothing was inserted.
        Ok(_) => Ok(Outcome::Refused),
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("AU001") => {
            Ok(Outcome::PredecessorMissing)
        }
        // A stored or repeated id, or a deadlock with another writer: the
        // statement rolled back.
        Err(sqlx::Error::Database(db))
            if matches!(db.code().as_deref(), Some("23505" | "40P01")) =>
        {
            Ok(Outcome::Refused)
        }
        Err(err) => Err(err),
    }
}

/// The pipelined statement. `claim` takes the position after `$14` for the
/// batch ending at `$15, $16`; the rows go in only if it did. `probe` runs
/// last (a data-modifying `WITH` the query does not read runs after it): it
/// waits for the transaction that wrote the link ending at hash `$17`, if
/// that is still open, and conflicts with it once committed; if there is no
/// such link, its row goes in and the table's trigger aborts the statement.
const PIPELINED_INSERT: &str = "WITH claim AS ( \
         INSERT INTO audit_chain_links (after_seq, last_seq, last_hash) VALUES ($14, $15, $16) \
         ON CONFLICT DO NOTHING RETURNING 1), \
     probe AS ( \
         INSERT INTO audit_chain_links (after_seq, last_seq, last_hash) VALUES (NULL, $14, $17) \
         ON CONFLICT DO NOTHING) \
     INSERT INTO audit_events (seq, id, ts, event_type, actor, action, success, \
         session_id, source_ip, resource, metadata, prev_hash, hash) \
     SELECT r.seq, r.id, r.ts, r.event_type, r.actor, r.action, r.success, \
         r.session_id, r.source_ip, r.resource, r.metadata::jsonb, r.prev_hash, r.hash \
     FROM unnest($1::bigint[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[], \
         $6::text[], $7::bool[], $8::text[], $9::text[], $10::text[], $11::text[], \
         $12::bytea[], $13::bytea[]) \
         AS r(seq, id, ts, event_type, actor, action, success, session_id, source_ip, \
         resource, metadata, prev_hash, hash) \
     WHERE EXISTS (SELECT 1 FROM claim)";

/// One transaction: read the head, skip events already stored (a previous
/// attempt may have committed without us hearing back), chain the rest onto
/// the head, load them with one binary `COPY`, claim the position. If another
/// transaction claims it first, the claim fails (after waiting for it) and
/// nothing is written.
async fn write_careful(
    conn: &mut PgConnection,
    batch: &mut [Pending],
) -> Result<Written, sqlx::Error> {
    // Ids are formatted by `Uuid` (hex digits and dashes), so inlining them is
    // safe; literal values also let the planner use the id index.
    let mut ids = String::with_capacity(batch.len() * 40);
    for (i, pending) in batch.iter().enumerate() {
        let separator = if i == 0 { "" } else { "," };
        let _ = write!(ids, "{separator}'{}'", pending.event.id);
    }
    let read = format!(
        "BEGIN; SELECT last_seq AS seq, encode(last_hash, 'hex') AS hash, \
         (SELECT string_agg(id::text, ',') FROM audit_events WHERE id IN ({ids})) AS stored \
         FROM audit_chain_links WHERE after_seq IS NOT NULL ORDER BY after_seq DESC LIMIT 1"
    );
    let rows = conn.fetch_all(read.as_str()).await?;
    let row = rows.first().ok_or(sqlx::Error::RowNotFound)?;
    let after = read_head(row)?;
    let mut head = after;
    let mut stored: HashSet<Uuid> = HashSet::new();
    if let Some(list) = row.try_get::<Option<String>, _>("stored")? {
        for id in list.split(',') {
            stored.insert(Uuid::parse_str(id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?);
        }
    }

    // A duplicate id (stored earlier, or twice in this batch) is acknowledged
    // without a second row.
    let fresh: Vec<bool> = batch
        .iter_mut()
        .map(|pending| {
            let is_new = stored.insert(pending.event.id);
            if is_new {
                head.append(&mut pending.event);
            }
            is_new
        })
        .collect();
    let mut rows = CopyRows::new();
    for (pending, _) in batch.iter().zip(&fresh).filter(|(_, is_new)| **is_new) {
        rows.push(&pending.event)?;
    }
    let inserted = rows.count;
    if inserted > 0 {
        // Claim the position first: a transaction that claimed it already
        // (another writer, or an earlier attempt of ours still running) is
        // waited for here, before any row of ours could make it wait on us.
        let claim = format!(
            "INSERT INTO audit_chain_links (after_seq, last_seq, last_hash) \
             VALUES ({}, {}, '\\x{}'::bytea)",
            to_db_seq(after.sequence),
            to_db_seq(head.sequence),
            head.hash.to_hex()
        );
        conn.execute(claim.as_str()).await?;
        let mut copy = conn.copy_in_raw(COPY_STATEMENT).await?;
        copy.send(rows.finish()).await?;
        copy.finish().await?;
    }
    conn.execute("COMMIT").await?;
    Ok(Written { head, inserted })
}

fn read_head(row: &sqlx::postgres::PgRow) -> Result<ChainHead, sqlx::Error> {
    let seq: i64 = row.try_get("seq")?;
    let hash: String = row.try_get("hash")?;
    let corrupt = |what: &str| sqlx::Error::Protocol(format!("corrupt audit chain head: {what}"));
    Ok(ChainHead {
        sequence: u64::try_from(seq).map_err(|_| corrupt("negative sequence"))?,
        hash: ChainHash::from_hex(&hash).ok_or_else(|| corrupt("hash is not 32 bytes"))?,
    })
}

const COPY_STATEMENT: &str = "COPY audit_events (seq, id, ts, event_type, actor, action, \
     success, session_id, source_ip, resource, metadata, prev_hash, hash) \
     FROM STDIN (FORMAT binary)";

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// Rows in PostgreSQL's binary `COPY` format: the cheapest way to load a
/// batch (no SQL to parse, no text conversion).
struct CopyRows {
    buf: Vec<u8>,
    count: usize,
}

impl CopyRows {
    fn new() -> Self {
        let mut buf = Vec::with_capacity(16 * 1024);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        Self { buf, count: 0 }
    }

    /// Adds a chained event (events without a link are never pushed).
    fn push(&mut self, event: &AuditEvent) -> Result<(), sqlx::Error> {
        let Some(link) = event.chain.as_ref() else {
            return Ok(());
        };
        let metadata =
            serde_json::to_vec(&event.metadata).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        self.buf.extend_from_slice(&13i16.to_be_bytes());
        self.field(&to_db_seq(link.sequence).to_be_bytes())?;
        self.field(event.id.as_bytes())?;
        let micros = event.timestamp.timestamp_micros() - PG_EPOCH_OFFSET_MICROS;
        self.field(&micros.to_be_bytes())?;
        self.field(event.event_type.as_str().as_bytes())?;
        self.field(event.actor.as_bytes())?;
        self.field(event.action.as_bytes())?;
        self.field(&[u8::from(event.success)])?;
        for text in [&event.session_id, &event.source_ip, &event.resource] {
            match text {
                Some(text) => self.field(text.as_bytes())?,
                None => self.buf.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        // jsonb's binary form: a version byte, then the JSON text.
        self.length(metadata.len() + 1)?;
        self.buf.push(1);
        self.buf.extend_from_slice(&metadata);
        self.field(link.prev_hash.as_bytes())?;
        self.field(link.hash.as_bytes())?;
        self.count += 1;
        Ok(())
    }

    fn length(&mut self, len: usize) -> Result<(), sqlx::Error> {
        let len = i32::try_from(len).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        self.buf.extend_from_slice(&len.to_be_bytes());
        Ok(())
    }

    fn field(&mut self, bytes: &[u8]) -> Result<(), sqlx::Error> {
        self.length(bytes.len())?;
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    //! The pipelined statement against a real server: what it does when the
    //! batch before it is still open, then commits or rolls back, and when
    //! another writer took its position.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use agent_patterns_audit::AuditEventType;
    use sqlx::{Connection, PgConnection};
    use tokio::sync::oneshot;

    use super::*;

    fn admin_url() -> String {
        std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
    }

    /// A migrated database of its own; dropped by `drop_db`.
    async fn database() -> (String, String) {
        let name = format!("audit_test_{}", Uuid::now_v7().simple());
        let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let url = format!("{}/{name}", admin_url().rsplit_once('/').unwrap().0);
        let mut conn = PgConnection::connect(&url).await.unwrap();
        crate::store::MIGRATOR.run(&mut conn).await.unwrap();
        (name, url)
    }

    async fn drop_db(name: &str) {
        let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .unwrap();
    }

    /// `count` events chained from `after`, and where they end.
    fn chained(after: ChainHead, count: usize) -> (Vec<Pending>, ChainHead) {
        let mut end = after;
        let batch = (0..count)
            .map(|i| {
                let mut event =
                    AuditEvent::new(AuditEventType::DataAccess, "u", format!("read-{i}"), true);
                end.append(&mut event);
                let (ack, _) = oneshot::channel();
                Pending { event, ack }
            })
            .collect();
        (batch, end)
    }

    async fn stored(conn: &mut PgConnection) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM audit_events")
            .fetch_one(conn)
            .await
            .unwrap()
    }

    /// Opens the link of a predecessor batch in a transaction left open.
    async fn open_predecessor(url: &str, end: ChainHead) -> PgConnection {
        let mut conn = PgConnection::connect(url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
        sqlx::query(
            "INSERT INTO audit_chain_links (after_seq, last_seq, last_hash) VALUES (0, $1, $2)",
        )
        .bind(to_db_seq(end.sequence))
        .bind(end.hash.as_bytes().as_slice())
        .execute(&mut conn)
        .await
        .unwrap();
        conn
    }

    async fn outcome_once_predecessor_ends(finish: &str) -> (Outcome, i64) {
        let (name, db_url) = database().await;
        // The predecessor: 2 events after the genesis, still open.
        let (_, predecessor_end) = chained(ChainHead::EMPTY, 2);
        let mut predecessor = open_predecessor(&db_url, predecessor_end).await;
        let (batch, end) = chained(predecessor_end, 3);
        let url = db_url.clone();
        let sent = tokio::spawn(async move {
            let mut conn = PgConnection::connect(&url).await.unwrap();
            write_pipelined(&mut conn, &batch, predecessor_end, end)
                .await
                .unwrap()
        });
        // The batch's probe waits for the predecessor's transaction to end
        // (watched from outside it: a transaction sees one snapshot of the
        // activity view).
        let mut watcher = PgConnection::connect(&db_url).await.unwrap();
        let mut waiting = 0;
        for _ in 0..1_000 {
            waiting = sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&mut watcher)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(waiting, 1, "the probe waits for the open predecessor");
        assert!(!sent.is_finished());
        sqlx::query(finish).execute(&mut predecessor).await.unwrap();
        let outcome = sent.await.unwrap();
        let rows = stored(&mut predecessor).await;
        drop((predecessor, watcher));
        drop_db(&name).await;
        (outcome, rows)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_commits_once_its_predecessor_has() {
        let (outcome, rows) = outcome_once_predecessor_ends("COMMIT").await;
        assert_eq!((outcome, rows), (Outcome::Committed, 3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_whose_predecessor_rolled_back_writes_nothing() {
        let (outcome, rows) = outcome_once_predecessor_ends("ROLLBACK").await;
        assert_eq!((outcome, rows), (Outcome::PredecessorMissing, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_whose_position_another_writer_took_writes_nothing() {
        let (name, url) = database().await;
        let mut conn = PgConnection::connect(&url).await.unwrap();
        // Another writer continued from the genesis first.
        let (theirs, their_end) = chained(ChainHead::EMPTY, 1);
        assert_eq!(
            write_pipelined(&mut conn, &theirs, ChainHead::EMPTY, their_end)
                .await
                .unwrap(),
            Outcome::Committed
        );
        let (ours, our_end) = chained(ChainHead::EMPTY, 2);
        assert_eq!(
            write_pipelined(&mut conn, &ours, ChainHead::EMPTY, our_end)
                .await
                .unwrap(),
            Outcome::Refused
        );
        // A batch chained on a head that never was finds no predecessor.
        let (_, phantom) = chained(their_end, 1);
        let (orphan, orphan_end) = chained(phantom, 1);
        assert_eq!(
            write_pipelined(&mut conn, &orphan, phantom, orphan_end)
                .await
                .unwrap(),
            Outcome::PredecessorMissing
        );
        assert_eq!(stored(&mut conn).await, 1);
        drop(conn);
        drop_db(&name).await;
    }
}
