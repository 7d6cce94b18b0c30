//! The store: owns the state, runs the reducer, runs effects.

use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::Reducer;
use crate::runtime::{CancelRegistry, Context, Envelope, prepare};

/// Store settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// How many actions may wait to be reduced. When the queue is full,
    /// [`Store::send`] waits and [`Store::try_send`] fails; effects feeding
    /// actions back wait too, so a flood of work slows down instead of growing
    /// memory. Must be at least 1. Default: 1024.
    pub action_queue_capacity: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            action_queue_capacity: 1024,
        }
    }
}

impl StoreConfig {
    /// Check the settings; the error names the field at fault.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.action_queue_capacity == 0 {
            return Err(StoreError::InvalidConfig(
                "action_queue_capacity must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Why a store refused an action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `try_send` found the action queue full.
    #[error("store action queue is full ({capacity} actions waiting)")]
    QueueFull {
        /// The configured queue capacity.
        capacity: usize,
    },
    /// The store has stopped (its reducer panicked or its runtime shut down).
    #[error("store has stopped")]
    Closed,
    /// The configuration was rejected.
    #[error("invalid store configuration: {0}")]
    InvalidConfig(String),
    /// The store was created outside a tokio runtime.
    #[error("a store must be created inside a tokio runtime")]
    NoRuntime,
}

impl From<StoreError> for crate::AgentError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::QueueFull { .. } | StoreError::Closed => Self::Unavailable(e.to_string()),
            StoreError::InvalidConfig(_) => Self::Config(e.to_string()),
            StoreError::NoRuntime => Self::Internal(e.to_string()),
        }
    }
}

struct Shared<R: Reducer> {
    state: Mutex<R::State>,
    reducer: R,
    environment: R::Environment,
    registry: Arc<CancelRegistry>,
}

/// Runs a [`Reducer`]: actions go in through a bounded queue, one task reduces
/// them strictly in order, and the effects each reduction returns run on tokio,
/// feeding their actions back into the same queue.
///
/// `Store` is a cheap handle (`Clone`); all clones drive the same state. When the
/// last handle is dropped the store stops after its queued actions; effects still
/// running may finish, but actions they produce after that are dropped.
///
/// ```
/// use agent_patterns_core::{Effects, Reducer, Store};
///
/// #[derive(Default)]
/// struct Chat { log: Vec<String> }
///
/// enum Action { Ask(String), Answered(String) }
///
/// struct ChatReducer;
///
/// impl Reducer for ChatReducer {
///     type State = Chat;
///     type Action = Action;
///     type Environment = ();
///
///     fn reduce(&self, state: &mut Chat, action: Action, _: &()) -> Effects<Action> {
///         match action {
///             Action::Ask(q) => {
///                 state.log.push(format!("user: {q}"));
///                 Effects::run(async move { Action::Answered(q.to_uppercase()) })
///             }
///             Action::Answered(a) => {
///                 state.log.push(format!("agent: {a}"));
///                 Effects::none()
///             }
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), agent_patterns_core::StoreError> {
/// let store = Store::new(Chat::default(), ChatReducer, ());
/// // `finished` resolves once the action and every effect it caused are done.
/// store.send(Action::Ask("hi".into())).await?.finished().await;
/// assert_eq!(store.state(|s| s.log.clone()), ["user: hi", "agent: HI"]);
/// # Ok(())
/// # }
/// ```
pub struct Store<R: Reducer> {
    shared: Arc<Shared<R>>,
    sender: mpsc::Sender<Envelope<R::Action>>,
    capacity: usize,
}

impl<R: Reducer> Clone for Store<R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            sender: self.sender.clone(),
            capacity: self.capacity,
        }
    }
}

/// Resolves when the action it belongs to, and every effect and follow-up
/// action it caused, has finished.
#[derive(Debug)]
#[must_use = "a StoreTask does nothing unless awaited with `finished`; dropping it is fine"]
pub struct StoreTask {
    done: oneshot::Receiver<()>,
}

impl StoreTask {
    /// Wait until the action and all the work it caused have finished (or were
    /// cancelled).
    pub async fn finished(self) {
        // The sender is never used: it is dropped when the last effect holding
        // it completes, which is exactly the signal.
        let _ = self.done.await;
    }
}

impl<R: Reducer> Store<R> {
    /// A store with the default [`StoreConfig`].
    ///
    /// # Panics
    /// Outside a tokio runtime, like `tokio::spawn`. Use [`Store::with_config`]
    /// for an error instead.
    #[allow(clippy::expect_used)]
    pub fn new(state: R::State, reducer: R, environment: R::Environment) -> Self {
        Self::with_config(state, reducer, environment, StoreConfig::default())
            .expect("Store::new must be called inside a tokio runtime")
    }

    /// A store with explicit settings, validated.
    pub fn with_config(
        state: R::State,
        reducer: R,
        environment: R::Environment,
        config: StoreConfig,
    ) -> Result<Self, StoreError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StoreError::NoRuntime)?;
        let (sender, receiver) = mpsc::channel(config.action_queue_capacity);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            reducer,
            environment,
            registry: Arc::new(CancelRegistry::default()),
        });
        runtime.spawn(run(Arc::clone(&shared), receiver, sender.downgrade()));
        Ok(Self {
            shared,
            sender,
            capacity: config.action_queue_capacity,
        })
    }

    /// Queue `action`, waiting while the queue is full.
    pub async fn send(&self, action: R::Action) -> Result<StoreTask, StoreError> {
        let (envelope, task) = envelope(action);
        self.sender
            .send(envelope)
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(task)
    }

    /// Queue `action` if there is room now.
    pub fn try_send(&self, action: R::Action) -> Result<StoreTask, StoreError> {
        let (envelope, task) = envelope(action);
        self.sender.try_send(envelope).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::QueueFull {
                capacity: self.capacity,
            },
            mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
        })?;
        Ok(task)
    }

    /// Read the current state. The closure runs under the state lock, between
    /// two reductions, so keep it short.
    pub fn state<T>(&self, read: impl FnOnce(&R::State) -> T) -> T {
        read(
            &self
                .shared
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The environment effects use.
    pub fn environment(&self) -> &R::Environment {
        &self.shared.environment
    }

    /// Actions waiting in the queue right now.
    pub fn queued(&self) -> usize {
        self.capacity - self.sender.capacity()
    }

    /// The queue's capacity.
    pub fn queue_capacity(&self) -> usize {
        self.capacity
    }

    /// Cancel every running cancellable effect (for example at shutdown).
    pub fn cancel_all_effects(&self) {
        self.shared.registry.cancel_all();
    }

    /// Whether the store still accepts actions.
    pub fn is_running(&self) -> bool {
        !self.sender.is_closed()
    }
}

fn envelope<A>(action: A) -> (Envelope<A>, StoreTask) {
    let (tx, rx) = oneshot::channel();
    (
        Envelope {
            action,
            completion: Some(Arc::new(tx)),
        },
        StoreTask { done: rx },
    )
}

async fn run<R: Reducer>(
    shared: Arc<Shared<R>>,
    mut receiver: mpsc::Receiver<Envelope<R::Action>>,
    feedback: mpsc::WeakSender<Envelope<R::Action>>,
) {
    while let Some(Envelope { action, completion }) = receiver.recv().await {
        let effects = {
            let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            shared
                .reducer
                .reduce(&mut state, action, &shared.environment)
        };
        if effects.is_none() {
            continue;
        }
        // Every Store handle is gone and nothing can feed actions back; the
        // remaining queued actions are still reduced, their effects not run.
        let Some(feedback) = feedback.upgrade() else {
            continue;
        };
        let ctx = Context {
            feedback,
            completion,
            registry: Arc::clone(&shared.registry),
        };
        if let Some(work) = prepare(effects, &ctx) {
            tokio::spawn(work);
        }
    }
    tracing::debug!("store stopped: every handle was dropped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Effects;
    use std::time::Duration;

    #[derive(Debug, Clone, PartialEq)]
    enum Action {
        Push(u32),
        /// Push `n`, then feed back `Push(n + 1000)` after `delay_ms`.
        Echo {
            n: u32,
            delay_ms: u64,
        },
        StartTimer,
        Tick,
        StopTimer,
    }

    struct Recorder;

    impl Reducer for Recorder {
        type State = Vec<u32>;
        type Action = Action;
        type Environment = ();

        fn reduce(&self, state: &mut Vec<u32>, action: Action, _: &()) -> Effects<Action> {
            match action {
                Action::Push(n) => {
                    state.push(n);
                    Effects::none()
                }
                Action::Echo { n, delay_ms } => {
                    state.push(n);
                    Effects::run(async move {
                        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                        Action::Push(n + 1000)
                    })
                }
                Action::StartTimer => Effects::future(async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Some(Action::Tick)
                })
                .cancel_in_flight("timer"),
                Action::Tick => {
                    state.push(1);
                    Effects::send(Action::StartTimer)
                }
                Action::StopTimer => Effects::cancel("timer"),
            }
        }
    }

    #[test]
    fn zero_capacity_is_rejected_with_the_field_name() {
        let err = StoreConfig {
            action_queue_capacity: 0,
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("action_queue_capacity"));
    }

    #[test]
    fn creating_a_store_outside_a_runtime_is_an_error() {
        let err = Store::with_config(Vec::new(), Recorder, (), StoreConfig::default()).err();
        assert_eq!(err, Some(StoreError::NoRuntime));
    }

    #[tokio::test(start_paused = true)]
    async fn finished_waits_for_follow_up_actions() {
        let store = Store::new(Vec::new(), Recorder, ());
        store
            .send(Action::Echo {
                n: 7,
                delay_ms: 500,
            })
            .await
            .unwrap()
            .finished()
            .await;
        assert_eq!(store.state(Clone::clone), vec![7, 1007]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn try_send_fails_fast_when_the_queue_is_full() {
        let store = Store::with_config(
            Vec::new(),
            Recorder,
            (),
            StoreConfig {
                action_queue_capacity: 3,
            },
        )
        .unwrap();
        // On a current-thread runtime the store task cannot run until we yield.
        let tasks: Vec<_> = (0..3)
            .map(|n| store.try_send(Action::Push(n)).unwrap())
            .collect();
        assert_eq!(store.queued(), 3);
        assert_eq!(
            store.try_send(Action::Push(99)).unwrap_err(),
            StoreError::QueueFull { capacity: 3 }
        );
        for t in tasks {
            t.finished().await;
        }
        assert_eq!(store.state(Clone::clone), vec![0, 1, 2]);
        assert_eq!(store.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_stops_a_running_effect() {
        let store = Store::new(Vec::new(), Recorder, ());
        let timer = store.send(Action::StartTimer).await.unwrap();
        tokio::time::sleep(Duration::from_millis(3500)).await;
        store
            .send(Action::StopTimer)
            .await
            .unwrap()
            .finished()
            .await;
        timer.finished().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(store.state(Clone::clone), vec![1, 1, 1]);
        assert_eq!(store.shared.registry.running_ids(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_in_flight_keeps_only_the_latest() {
        let store = Store::new(Vec::new(), Recorder, ());
        let first = store.send(Action::StartTimer).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        let second = store.send(Action::StartTimer).await.unwrap();
        first.finished().await; // cancelled: resolves without a tick
        assert_eq!(store.state(Clone::clone), Vec::<u32>::new());
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(store.state(Clone::clone), Vec::<u32>::new());
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(store.state(Clone::clone), vec![1]);
        store.cancel_all_effects();
        second.finished().await;
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn action() -> impl Strategy<Value = Action> {
            prop_oneof![
                (0u32..1000).prop_map(Action::Push),
                ((0u32..1000), (0u64..50)).prop_map(|(n, delay_ms)| Action::Echo { n, delay_ms }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// Sent actions are reduced in send order; every effect's action
            /// arrives exactly once; the queue never holds more than its bound.
            #[test]
            fn no_action_is_lost_duplicated_or_reordered(
                actions in proptest::collection::vec(action(), 0..40),
                capacity in 1usize..8,
            ) {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .start_paused(true)
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let store = Store::with_config(
                        Vec::new(),
                        Recorder,
                        (),
                        StoreConfig { action_queue_capacity: capacity },
                    )
                    .unwrap();
                    let mut tasks = Vec::new();
                    for a in &actions {
                        tasks.push(store.send(a.clone()).await.unwrap());
                        prop_assert!(store.queued() <= capacity);
                    }
                    for t in tasks {
                        t.finished().await;
                    }
                    let state = store.state(Clone::clone);

                    let direct: Vec<u32> = actions
                        .iter()
                        .map(|a| match a {
                            Action::Push(n) | Action::Echo { n, .. } => *n,
                            _ => unreachable!(),
                        })
                        .collect();
                    let sent_order: Vec<u32> =
                        state.iter().copied().filter(|n| *n < 1000).collect();
                    prop_assert_eq!(sent_order, direct);

                    let mut echoed: Vec<u32> =
                        state.iter().copied().filter(|n| *n >= 1000).collect();
                    let mut expected: Vec<u32> = actions
                        .iter()
                        .filter_map(|a| match a {
                            Action::Echo { n, .. } => Some(n + 1000),
                            _ => None,
                        })
                        .collect();
                    echoed.sort_unstable();
                    expected.sort_unstable();
                    prop_assert_eq!(echoed, expected);
                    Ok(())
                })?;
            }
        }
    }
}
