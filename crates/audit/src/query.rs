//! The general query: filters plus newest-first cursor pagination.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::AuditError;
use crate::event::{AuditEvent, AuditEventType};

/// Largest page a query may ask for.
pub const MAX_PAGE_SIZE: usize = 10_000;

/// Where the next page starts: events with a smaller chain sequence than this.
///
/// Cursors are stable: events logged after the first page was read do not
/// shift later pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AuditCursor(pub u64);

impl AuditCursor {
    /// The cursor as an opaque string, for APIs.
    pub fn encode(&self) -> String {
        self.0.to_string()
    }

    /// Parses [`encode`](Self::encode)'s output.
    pub fn decode(text: &str) -> Result<Self, AuditError> {
        text.parse()
            .map(Self)
            .map_err(|_| AuditError::InvalidEvent(format!("invalid audit cursor `{text}`")))
    }
}

/// A filtered, paginated read of the trail. Every filter is optional; results
/// come newest first (by chain sequence, which is log order).
///
/// ```
/// use agent_patterns_audit::{AuditEventType, AuditQuery};
///
/// let query = AuditQuery::new()
///     .actor("user-1")
///     .event_type(AuditEventType::Authentication)
///     .success(false)
///     .limit(50);
/// assert_eq!(query.limit, 50);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditQuery {
    /// Only events at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Only events strictly before this time.
    pub to: Option<DateTime<Utc>>,
    /// Only this actor's events.
    pub actor: Option<String>,
    /// Only events of this type.
    pub event_type: Option<AuditEventType>,
    /// Only successes (`true`) or failures (`false`).
    pub success: Option<bool>,
    /// Only events on this resource.
    pub resource: Option<String>,
    /// Page size, `1..=MAX_PAGE_SIZE`.
    pub limit: usize,
    /// Continue after a previous page.
    pub cursor: Option<AuditCursor>,
}

impl Default for AuditQuery {
    fn default() -> Self {
        Self {
            from: None,
            to: None,
            actor: None,
            event_type: None,
            success: None,
            resource: None,
            limit: 100,
            cursor: None,
        }
    }
}

impl AuditQuery {
    /// Everything, 100 per page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only events in `[from, to)`.
    #[must_use]
    pub fn between(mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        self.from = Some(from);
        self.to = Some(to);
        self
    }

    /// Only events at or after `from`.
    #[must_use]
    pub fn since(mut self, from: DateTime<Utc>) -> Self {
        self.from = Some(from);
        self
    }

    /// Only events before `to`.
    #[must_use]
    pub fn until(mut self, to: DateTime<Utc>) -> Self {
        self.to = Some(to);
        self
    }

    /// Only this actor's events.
    #[must_use]
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Only events of this type.
    #[must_use]
    pub fn event_type(mut self, event_type: AuditEventType) -> Self {
        self.event_type = Some(event_type);
        self
    }

    /// Only successes or only failures.
    #[must_use]
    pub fn success(mut self, success: bool) -> Self {
        self.success = Some(success);
        self
    }

    /// Only events on this resource.
    #[must_use]
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// Page size.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Continue after a previous page.
    #[must_use]
    pub fn after(mut self, cursor: AuditCursor) -> Self {
        self.cursor = Some(cursor);
        self
    }

    /// Rejects a zero or oversized page.
    pub fn validate(&self) -> Result<(), AuditError> {
        if self.limit == 0 || self.limit > MAX_PAGE_SIZE {
            return Err(AuditError::InvalidEvent(format!(
                "query limit {} is outside 1..={MAX_PAGE_SIZE}",
                self.limit
            )));
        }
        Ok(())
    }

    /// Whether a stored event passes every filter (the cursor excluded).
    pub fn matches(&self, event: &AuditEvent) -> bool {
        self.from.is_none_or(|from| event.timestamp >= from)
            && self.to.is_none_or(|to| event.timestamp < to)
            && self
                .actor
                .as_deref()
                .is_none_or(|actor| event.actor == actor)
            && self.event_type.is_none_or(|t| event.event_type == t)
            && self.success.is_none_or(|s| event.success == s)
            && self
                .resource
                .as_deref()
                .is_none_or(|r| event.resource.as_deref() == Some(r))
    }
}

/// One page of query results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    /// Matching events, newest first.
    pub events: Vec<AuditEvent>,
    /// Pass to [`AuditQuery::after`] for the next page; `None` on the last page.
    pub next_cursor: Option<AuditCursor>,
}

impl AuditPage {
    /// Builds a page from up to `limit + 1` newest-first events: the extra one
    /// only tells that another page exists.
    pub fn from_overfetch(mut events: Vec<AuditEvent>, limit: usize) -> Self {
        let more = events.len() > limit;
        events.truncate(limit);
        let next_cursor = if more {
            events
                .last()
                .and_then(AuditEvent::sequence)
                .map(AuditCursor)
        } else {
            None
        };
        Self {
            events,
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::ChainHead;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let cursor = AuditCursor(42);
        assert_eq!(AuditCursor::decode(&cursor.encode()).unwrap(), cursor);
        assert!(AuditCursor::decode("forty-two").is_err());
        assert!(AuditCursor::decode("-1").is_err());
    }

    #[test]
    fn overfetched_page_points_its_cursor_at_the_last_event_kept() {
        let mut head = ChainHead::EMPTY;
        let mut events: Vec<AuditEvent> = (0..4)
            .map(|_| {
                let mut e = AuditEvent::new(AuditEventType::Security, "u", "a", true);
                head.append(&mut e);
                e
            })
            .collect();
        events.reverse(); // newest first: sequences 4, 3, 2, 1
        let page = AuditPage::from_overfetch(events.clone(), 3);
        assert_eq!(page.events.len(), 3);
        assert_eq!(page.next_cursor, Some(AuditCursor(2)));
        let last = AuditPage::from_overfetch(events, 4);
        assert_eq!(last.next_cursor, None);
    }
}
