//! The shared store behaviour suite, run against the in-memory store.
#![cfg(feature = "conformance")]

use agent_patterns_audit::{InMemoryAuditLogger, conformance};

#[tokio::test]
async fn in_memory_store_passes_the_conformance_suite() {
    conformance::run_all(|| async { InMemoryAuditLogger::new() }).await;
}
