//! Mapping between events and rows, and between sqlx errors and audit errors.

use std::collections::BTreeMap;

use agent_patterns_audit::{
    AuditError, AuditEvent, AuditEventType, ChainHash, ChainHead, ChainLink,
};
use chrono::{DateTime, Datelike, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;

/// The columns every read selects, in [`decode_event`]'s order.
pub(crate) const EVENT_COLUMNS: &str = "seq, id, ts, event_type, actor, action, success, \
     session_id, source_ip, resource, metadata, prev_hash, hash";

/// Reads one `audit_events` row.
pub(crate) fn decode_event(row: &PgRow) -> Result<AuditEvent, AuditError> {
    let seq: i64 = row.try_get("seq").map_err(corrupt)?;
    let event_type: String = row.try_get("event_type").map_err(corrupt)?;
    let prev_hash: Vec<u8> = row.try_get("prev_hash").map_err(corrupt)?;
    let hash: Vec<u8> = row.try_get("hash").map_err(corrupt)?;
    let metadata: Json<BTreeMap<String, String>> = row.try_get("metadata").map_err(corrupt)?;
    let sequence =
        u64::try_from(seq).map_err(|_| AuditError::Corrupt(format!("negative sequence {seq}")))?;
    let bad_hash =
        |what: &str| AuditError::Corrupt(format!("{what} of sequence {seq} is not 32 bytes"));
    Ok(AuditEvent {
        id: row.try_get("id").map_err(corrupt)?,
        timestamp: row.try_get("ts").map_err(corrupt)?,
        event_type: event_type
            .parse::<AuditEventType>()
            .map_err(|_| AuditError::Corrupt(format!("unknown event type `{event_type}`")))?,
        actor: row.try_get("actor").map_err(corrupt)?,
        action: row.try_get("action").map_err(corrupt)?,
        success: row.try_get("success").map_err(corrupt)?,
        session_id: row.try_get("session_id").map_err(corrupt)?,
        source_ip: row.try_get("source_ip").map_err(corrupt)?,
        resource: row.try_get("resource").map_err(corrupt)?,
        metadata: metadata.0,
        chain: Some(ChainLink {
            sequence,
            prev_hash: ChainHash::from_slice(&prev_hash).ok_or_else(|| bad_hash("prev_hash"))?,
            hash: ChainHash::from_slice(&hash).ok_or_else(|| bad_hash("hash"))?,
        }),
    })
}

/// Reads a `(seq, hash)` pair as a chain head.
pub(crate) fn decode_head(row: &PgRow) -> Result<ChainHead, AuditError> {
    let seq: i64 = row.try_get("seq").map_err(corrupt)?;
    let hash: Vec<u8> = row.try_get("hash").map_err(corrupt)?;
    Ok(ChainHead {
        sequence: u64::try_from(seq)
            .map_err(|_| AuditError::Corrupt(format!("negative head sequence {seq}")))?,
        hash: ChainHash::from_slice(&hash)
            .ok_or_else(|| AuditError::Corrupt("head hash is not 32 bytes".into()))?,
    })
}

/// Sequences travel as `BIGINT`.
pub(crate) fn to_db_seq(sequence: u64) -> i64 {
    i64::try_from(sequence).unwrap_or(i64::MAX)
}

/// Whether PostgreSQL's `timestamptz` can hold `ts` (4713 BC to 294276 AD).
pub(crate) fn storable_timestamp(ts: &DateTime<Utc>) -> bool {
    (-4712..=294_275).contains(&ts.year())
}

fn corrupt(err: sqlx::Error) -> AuditError {
    AuditError::Corrupt(err.to_string())
}

/// Whether a failed operation may succeed if tried again: the connection
/// broke, the server is shutting down or restarting, or it is overloaded.
pub(crate) fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P: operator intervention (admin
            // shutdown, crash shutdown, cannot connect now); 53: insufficient
            // resources; 40001/40P01: serialization failure, deadlock.
            code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    }
}

/// A read or admin failure as an audit error.
pub(crate) fn storage_error(err: sqlx::Error) -> AuditError {
    if is_transient(&err) {
        AuditError::Unavailable(err.to_string())
    } else {
        AuditError::Storage(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_connections_are_transient_and_bad_queries_are_not() {
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(is_transient(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        ))));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::PoolClosed));
        assert!(matches!(
            storage_error(sqlx::Error::PoolTimedOut),
            AuditError::Unavailable(_)
        ));
        assert!(matches!(
            storage_error(sqlx::Error::RowNotFound),
            AuditError::Storage(_)
        ));
    }

    #[test]
    fn timestamps_outside_postgres_range_are_detected() {
        assert!(storable_timestamp(&Utc::now()));
        // chrono's latest instant (year 262143) is within PostgreSQL's range;
        // its earliest is far before 4713 BC.
        assert!(storable_timestamp(&DateTime::<Utc>::MAX_UTC));
        assert!(!storable_timestamp(&DateTime::<Utc>::MIN_UTC));
    }
}
