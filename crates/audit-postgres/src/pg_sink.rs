//! Writing one batch to PostgreSQL.
//!
//! The fast path is one statement, so one round trip: the batch is chained
//! onto the head this writer committed last, and a single `INSERT … SELECT
//! FROM unnest(…)` moves the head with a compare-and-set `UPDATE` in a
//! data-modifying `WITH` and inserts the rows only if the head was still
//! where the writer expected. The head row lock is held only while the server
//! runs that statement, never across a client round trip, so batches follow
//! each other as fast as the server can commit them.
//!
//! The careful path is one transaction that locks the chain head, skips
//! events already stored (a previous attempt may have committed without us
//! hearing back), chains the rest and loads them with a binary `COPY`. It runs
//! when the writer does not know the head (at start, after any failure), when
//! another writer (another replica) moved the head, and when the fast path
//! hits an id that is already stored.

use std::collections::HashSet;
use std::fmt::Write as _;

use agent_patterns_audit::{AuditEvent, ChainHash, ChainHead};
use sqlx::pool::PoolConnection;
use sqlx::{Executor, PgConnection, PgPool, Postgres, Row};
use uuid::Uuid;

use crate::group_commit::{BatchSink, Pending, WriteError, Written};
use crate::rows::{is_transient, to_db_seq};

/// The [`BatchSink`] of [`PostgresAuditLogger`](crate::PostgresAuditLogger).
pub(crate) struct PgSink {
    pool: PgPool,
    /// The writer's connection, kept between batches; dropped after any
    /// failure (it may be broken, or inside an aborted transaction).
    conn: Option<PoolConnection<Postgres>>,
    /// The head this writer committed last: the fast path chains onto it.
    /// Unknown at start and after any failure.
    head: Option<ChainHead>,
    /// Months of partitions to keep ready, if the writer maintains them.
    partitions_ahead: Option<u32>,
    /// When to check the partitions next.
    next_partition_check: tokio::time::Instant,
}

/// How often the writer makes sure the coming months have partitions.
const PARTITION_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

impl PgSink {
    pub(crate) fn new(pool: PgPool, partitions_ahead: Option<u32>) -> Self {
        Self {
            pool,
            conn: None,
            head: None,
            partitions_ahead,
            next_partition_check: tokio::time::Instant::now(),
        }
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
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let conn = self
                    .pool
                    .acquire()
                    .await
                    .map_err(|e| classify(Phase::Connect, e))?;
                self.conn.insert(conn)
            }
        };
        if let Some(months) = self.partitions_ahead
            && tokio::time::Instant::now() >= self.next_partition_check
        {
            self.next_partition_check = tokio::time::Instant::now() + PARTITION_CHECK_INTERVAL;
            ensure_partitions(conn, months).await;
        }
        if let Some(head) = self.head.take() {
            match write_fast(conn, batch, head).await {
                Ok(Some(written)) => {
                    self.head = Some(written.head);
                    return Ok(written);
                }
                // The head moved or an id is stored already: the careful path.
                Ok(None) => {}
                Err(err) => {
                    if let Some(conn) = self.conn.take() {
                        drop(conn.detach());
                    }
                    return Err(classify(Phase::Write, err));
                }
            }
        }
        match write_batch(conn, batch).await {
            Ok(written) => {
                self.head = Some(written.head);
                Ok(written)
            }
            Err(err) => {
                if let Some(conn) = self.conn.take() {
                    // Closing the socket makes the server roll back whatever
                    // this connection had open.
                    drop(conn.detach());
                }
                Err(classify(Phase::Write, err))
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

/// The fast path: chain `batch` onto `head` and write it with one statement
/// that inserts only if the head row still holds `head`. `None` when it did
/// not (another writer moved it) or an id in the batch is stored already;
/// nothing was written then.
async fn write_fast(
    conn: &mut PgConnection,
    batch: &mut [Pending],
    mut head: ChainHead,
) -> Result<Option<Written>, sqlx::Error> {
    let expected = head;
    let n = batch.len();
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
    for pending in batch.iter_mut() {
        let link = head.append(&mut pending.event);
        let event = &pending.event;
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
        prev_hash.push(link.prev_hash.as_bytes().to_vec());
        hash.push(link.hash.as_bytes().to_vec());
    }
    let result = sqlx::query(FAST_INSERT)
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
        .bind(to_db_seq(head.sequence))
        .bind(head.hash.as_bytes().to_vec())
        .bind(to_db_seq(expected.sequence))
        .bind(expected.hash.as_bytes().to_vec())
        .execute(&mut *conn)
        .await;
    match result {
        Ok(done) if usize::try_from(done.rows_affected()).is_ok_and(|rows| rows == n) => {
            Ok(Some(Written { head, inserted: n }))
        }
        // The head was not where we left it: nothing was inserted.
        Ok(_) => Ok(None),
        // A stored (or repeated) id: the statement, and so the head move,
        // rolled back; the careful path skips the duplicates.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => Ok(None),
        Err(err) => Err(err),
    }
}

/// The fast path's statement: move the head from `$16, $17` to `$14, $15`
/// (row-locked, compare-and-set) and insert the rows only if it moved.
const FAST_INSERT: &str = "WITH moved AS ( \
         UPDATE audit_chain_head SET seq = $14, hash = $15 \
         WHERE singleton AND seq = $16 AND hash = $17 RETURNING 1) \
     INSERT INTO audit_events (seq, id, ts, event_type, actor, action, success, \
         session_id, source_ip, resource, metadata, prev_hash, hash) \
     SELECT r.seq, r.id, r.ts, r.event_type, r.actor, r.action, r.success, \
         r.session_id, r.source_ip, r.resource, r.metadata::jsonb, r.prev_hash, r.hash \
     FROM unnest($1::bigint[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[], \
         $6::text[], $7::bool[], $8::text[], $9::text[], $10::text[], $11::text[], \
         $12::bytea[], $13::bytea[]) \
         AS r(seq, id, ts, event_type, actor, action, success, session_id, source_ip, \
         resource, metadata, prev_hash, hash) \
     WHERE EXISTS (SELECT 1 FROM moved)";

/// One transaction: lock the chain head, skip events already stored (a
/// previous attempt may have committed without us hearing back), chain the
/// rest onto the head, load them with one binary `COPY`, move the head.
async fn write_batch(
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
    let lock = format!(
        "BEGIN; SELECT seq, encode(hash, 'hex') AS hash, \
         (SELECT string_agg(id::text, ',') FROM audit_events WHERE id IN ({ids})) AS stored \
         FROM audit_chain_head WHERE singleton FOR UPDATE"
    );
    let rows = conn.fetch_all(lock.as_str()).await?;
    let row = rows.first().ok_or(sqlx::Error::RowNotFound)?;
    let mut head = read_head(row)?;
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
    let finish = if inserted > 0 {
        let mut copy = conn.copy_in_raw(COPY_STATEMENT).await?;
        copy.send(rows.finish()).await?;
        copy.finish().await?;
        format!(
            "UPDATE audit_chain_head SET seq = {}, hash = '\\x{}'::bytea WHERE singleton; COMMIT",
            to_db_seq(head.sequence),
            head.hash.to_hex()
        )
    } else {
        "COMMIT".to_owned()
    };
    conn.execute(finish.as_str()).await?;
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
