//! Wall-clock times derived from tokio's clock, so paused-time tests drive them too.

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// Anchors tokio's monotonic clock to the wall clock once, at creation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base_instant: Instant,
    base_wall: DateTime<Utc>,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            base_instant: Instant::now(),
            base_wall: Utc::now(),
        }
    }

    pub(crate) fn now(&self) -> (Instant, DateTime<Utc>) {
        let now = Instant::now();
        (now, self.wall_at(now))
    }

    pub(crate) fn wall_at(&self, at: Instant) -> DateTime<Utc> {
        let elapsed = at.saturating_duration_since(self.base_instant);
        chrono::Duration::from_std(elapsed)
            .ok()
            .and_then(|d| self.base_wall.checked_add_signed(d))
            .unwrap_or(self.base_wall)
    }
}
