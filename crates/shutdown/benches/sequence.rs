#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! A whole shutdown next to its anchor: the same number of no-op tasks
//! spawned on a bare tokio-util `TaskTracker`, closed and awaited.

use std::sync::Arc;
use std::time::Duration;

use agent_patterns_shutdown::*;
use criterion::{Criterion, criterion_group, criterion_main};
use tokio_util::task::TaskTracker;

struct Noop(String);

#[async_trait]
impl ShutdownHandler for Noop {
    fn name(&self) -> &str {
        &self.0
    }

    async fn shutdown(&self) -> Result<(), String> {
        Ok(())
    }
}

const HANDLERS: usize = 8;

fn sequence(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let handlers: Vec<Arc<Noop>> = (0..HANDLERS)
        .map(|i| Arc::new(Noop(format!("handler_{i}"))))
        .collect();

    let mut group = c.benchmark_group("shutdown_sequence_8_handlers");
    group.bench_function("anchor_task_tracker", |b| {
        b.iter(|| {
            rt.block_on(async {
                let tracker = TaskTracker::new();
                for handler in &handlers {
                    let handler = Arc::clone(handler);
                    tracker.spawn(async move { handler.shutdown().await });
                }
                tracker.close();
                tracker.wait().await;
            })
        })
    });
    group.bench_function("coordinator", |b| {
        b.iter(|| {
            rt.block_on(async {
                let coordinator = ShutdownCoordinator::new(Duration::from_secs(30));
                for handler in &handlers {
                    coordinator.register(Arc::clone(handler) as Arc<dyn ShutdownHandler>);
                }
                coordinator.shutdown().await.unwrap()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, sequence);
criterion_main!(benches);
