//! Running effects: shared by `Store` and `TestStore`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::{AbortHandle, Abortable, BoxFuture, join_all};
use tokio::sync::{mpsc, oneshot};

use crate::effect::{EffectId, Effects, Kind};

/// Dropped when the last effect (transitively) caused by one sent action is
/// done; the paired receiver then resolves.
pub(crate) type Completion = Arc<oneshot::Sender<()>>;

/// An action on its way into the reducer, with the completion token of the
/// `send` that caused it.
pub(crate) struct Envelope<A> {
    pub(crate) action: A,
    pub(crate) completion: Option<Completion>,
}

/// Abort handles of the running cancellable effects, by id.
#[derive(Default)]
pub(crate) struct CancelRegistry {
    inner: Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    next_serial: u64,
    running: HashMap<EffectId, Vec<(u64, AbortHandle)>>,
}

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, id: EffectId, handle: AbortHandle) -> u64 {
        let mut inner = self.lock();
        inner.next_serial += 1;
        let serial = inner.next_serial;
        inner.running.entry(id).or_default().push((serial, handle));
        serial
    }

    fn remove(&self, id: &EffectId, serial: u64) {
        let mut inner = self.lock();
        if let Some(handles) = inner.running.get_mut(id) {
            handles.retain(|(s, _)| *s != serial);
            if handles.is_empty() {
                inner.running.remove(id);
            }
        }
    }

    pub(crate) fn cancel(&self, id: &EffectId) {
        let handles = self.lock().running.remove(id);
        for (_, handle) in handles.into_iter().flatten() {
            handle.abort();
        }
    }

    pub(crate) fn cancel_all(&self) {
        let running = std::mem::take(&mut self.lock().running);
        for (_, handle) in running.into_values().flatten() {
            handle.abort();
        }
    }

    /// Number of ids with at least one running effect.
    #[cfg(test)]
    pub(crate) fn running_ids(&self) -> usize {
        self.lock().running.len()
    }
}

/// What an effect needs to feed actions back and register for cancellation.
pub(crate) struct Context<A> {
    pub(crate) feedback: mpsc::Sender<Envelope<A>>,
    pub(crate) completion: Option<Completion>,
    pub(crate) registry: Arc<CancelRegistry>,
}

impl<A> Clone for Context<A> {
    fn clone(&self) -> Self {
        Self {
            feedback: self.feedback.clone(),
            completion: self.completion.clone(),
            registry: Arc::clone(&self.registry),
        }
    }
}

/// Turn an effect description into one future to spawn.
///
/// Cancellations and cancellable registrations happen *now*, synchronously, so
/// that they take effect in the order the reducer returned them, before the next
/// action is reduced. Effects inside `concat` are prepared only when their turn
/// comes. Returns `None` when there is nothing to run.
pub(crate) fn prepare<A: Send + 'static>(
    effects: Effects<A>,
    ctx: &Context<A>,
) -> Option<BoxFuture<'static, ()>> {
    match effects.kind {
        Kind::None => None,
        Kind::Future(fut) => {
            let ctx = ctx.clone();
            Some(Box::pin(async move {
                if let Some(action) = fut.await {
                    // The receiver is gone only when the store has stopped; the
                    // action then has nowhere to go.
                    let _ = ctx
                        .feedback
                        .send(Envelope {
                            action,
                            completion: ctx.completion.clone(),
                        })
                        .await;
                }
            }))
        }
        Kind::Merge(items) => {
            let futures: Vec<_> = items.into_iter().filter_map(|e| prepare(e, ctx)).collect();
            match futures.len() {
                0 => None,
                1 => futures.into_iter().next(),
                _ => Some(Box::pin(async move {
                    join_all(futures).await;
                })),
            }
        }
        Kind::Concat(items) => {
            let ctx = ctx.clone();
            Some(Box::pin(async move {
                for effect in items {
                    if let Some(fut) = prepare(effect, &ctx) {
                        fut.await;
                    }
                }
            }))
        }
        Kind::Cancellable {
            id,
            cancel_in_flight,
            inner,
        } => {
            if cancel_in_flight {
                ctx.registry.cancel(&id);
            }
            let fut = prepare(*inner, ctx)?;
            let (handle, registration) = AbortHandle::new_pair();
            let serial = ctx.registry.insert(id.clone(), handle);
            let registry = Arc::clone(&ctx.registry);
            Some(Box::pin(async move {
                let _ = Abortable::new(fut, registration).await;
                registry.remove(&id, serial);
            }))
        }
        Kind::Cancel(id) => {
            ctx.registry.cancel(&id);
            None
        }
    }
}
