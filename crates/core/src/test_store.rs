//! Exhaustive testing of reducers and their effects.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use crate::Reducer;
use crate::runtime::{CancelRegistry, Context, Envelope, prepare};

/// Drives a [`Reducer`] step by step in a test and insists that the test
/// accounts for everything that happens.
///
/// * [`send`](Self::send) reduces an action and asserts the exact new state;
/// * [`receive`](Self::receive) waits for the next action an effect fed back,
///   asserts it, reduces it and asserts the new state;
/// * sending while fed-back actions are still unasserted fails, and so does
///   [`finish`](Self::finish) (or dropping the store) while actions are unasserted
///   or effects are still running.
///
/// Effects really run on tokio, so use a paused clock
/// (`#[tokio::test(start_paused = true)]`) to make timers instant and
/// deterministic: while the test waits in `receive`, tokio advances the clock.
///
/// ```
/// use agent_patterns_core::{Effects, Reducer, TestStore};
///
/// #[derive(Debug, Clone, PartialEq, Default)]
/// struct State { count: i32, loading: bool }
///
/// #[derive(Debug, Clone, PartialEq)]
/// enum Action { Fetch, Fetched(i32) }
///
/// struct R;
/// impl Reducer for R {
///     type State = State;
///     type Action = Action;
///     type Environment = ();
///     fn reduce(&self, s: &mut State, a: Action, _: &()) -> Effects<Action> {
///         match a {
///             Action::Fetch => {
///                 s.loading = true;
///                 Effects::run(async { Action::Fetched(42) })
///             }
///             Action::Fetched(n) => {
///                 s.loading = false;
///                 s.count = n;
///                 Effects::none()
///             }
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut store = TestStore::new(State::default(), R, ());
/// store.send(Action::Fetch, |s| s.loading = true).await;
/// store.receive(Action::Fetched(42), |s| { s.loading = false; s.count = 42; }).await;
/// store.finish().await;
/// # }
/// ```
pub struct TestStore<R: Reducer>
where
    R::State: Clone + PartialEq + Debug,
    R::Action: PartialEq + Debug,
{
    reducer: R,
    environment: R::Environment,
    state: R::State,
    feedback: mpsc::Sender<Envelope<R::Action>>,
    received: mpsc::Receiver<Envelope<R::Action>>,
    registry: Arc<CancelRegistry>,
    in_flight: Arc<InFlight>,
    timeout: Duration,
    finished: bool,
}

#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

struct InFlightGuard(Arc<InFlight>);

impl InFlightGuard {
    fn new(in_flight: &Arc<InFlight>) -> Self {
        in_flight.count.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(in_flight))
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Bound of fed-back actions a test store holds before effects wait.
const FEEDBACK_CAPACITY: usize = 1024;

impl<R: Reducer> TestStore<R>
where
    R::State: Clone + PartialEq + Debug,
    R::Action: PartialEq + Debug,
{
    /// A test store starting from `state`.
    pub fn new(state: R::State, reducer: R, environment: R::Environment) -> Self {
        let (feedback, received) = mpsc::channel(FEEDBACK_CAPACITY);
        Self {
            reducer,
            environment,
            state,
            feedback,
            received,
            registry: Arc::new(CancelRegistry::default()),
            in_flight: Arc::new(InFlight::default()),
            timeout: Duration::from_secs(1),
            finished: false,
        }
    }

    /// How long [`receive`](Self::receive) and [`finish`](Self::finish) wait
    /// (on tokio's clock; instant under a paused clock). Default: 1 s.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The current state.
    pub fn state(&self) -> &R::State {
        &self.state
    }

    /// The environment given to the reducer.
    pub fn environment(&self) -> &R::Environment {
        &self.environment
    }

    /// Reduce `action`; `expected` turns a copy of the previous state into the
    /// state the test expects, which must equal the real new state.
    ///
    /// # Panics
    /// When the states differ, or when fed-back actions have not been asserted
    /// with [`receive`](Self::receive) yet.
    pub async fn send(&mut self, action: R::Action, expected: impl FnOnce(&mut R::State)) {
        tokio::task::yield_now().await;
        let pending = self.drain_received();
        assert!(
            pending.is_empty(),
            "TestStore: {} action(s) fed back by effects must be received before sending {action:?}:\n{pending:#?}",
            pending.len()
        );
        self.reduce_and_check(action, expected);
    }

    /// Wait for the next action fed back by an effect, check it equals
    /// `expected_action`, reduce it and check the new state.
    ///
    /// # Panics
    /// When no action arrives within the timeout, a different one arrives, or
    /// the states differ.
    pub async fn receive(
        &mut self,
        expected_action: R::Action,
        expected: impl FnOnce(&mut R::State),
    ) {
        let timeout = self.timeout;
        let next = tokio::time::timeout(timeout, self.received.recv()).await;
        let action = match next {
            Ok(Some(envelope)) => envelope.action,
            Ok(None) => unreachable!("the test store holds its own feedback sender"),
            Err(_) => panic!(
                "TestStore: expected to receive {expected_action:?}, but no action arrived within {timeout:?}"
            ),
        };
        assert!(
            action == expected_action,
            "TestStore: received an unexpected action\n  expected: {expected_action:#?}\n  received: {action:#?}"
        );
        self.reduce_and_check(action, expected);
    }

    /// Wait for running effects to finish, then check that every fed-back
    /// action was received.
    ///
    /// # Panics
    /// When effects still run after the timeout or actions are unasserted.
    pub async fn finish(mut self) {
        self.finished = true;
        let timeout = self.timeout;
        let in_flight = Arc::clone(&self.in_flight);
        let wait = async {
            loop {
                let idle = in_flight.idle.notified();
                if in_flight.count.load(Ordering::SeqCst) == 0 {
                    break;
                }
                idle.await;
            }
        };
        let running = tokio::time::timeout(timeout, wait).await.is_err();
        assert!(
            !running,
            "TestStore: {} effect(s) still running after {timeout:?}; cancel them in the reducer or call skip_in_flight_effects()",
            self.in_flight.count.load(Ordering::SeqCst)
        );
        let pending = self.drain_received();
        assert!(
            pending.is_empty(),
            "TestStore: {} action(s) fed back by effects were never received:\n{pending:#?}",
            pending.len()
        );
    }

    /// Discard fed-back actions that have arrived but were not asserted.
    pub fn skip_received_actions(&mut self) -> Vec<R::Action> {
        self.drain_received()
    }

    /// Cancel every running cancellable effect and stop tracking the others.
    pub fn skip_in_flight_effects(&mut self) {
        self.registry.cancel_all();
        self.in_flight = Arc::new(InFlight::default());
    }

    fn drain_received(&mut self) -> Vec<R::Action> {
        let mut pending = Vec::new();
        while let Ok(envelope) = self.received.try_recv() {
            pending.push(envelope.action);
        }
        pending
    }

    #[track_caller]
    fn reduce_and_check(&mut self, action: R::Action, expected: impl FnOnce(&mut R::State)) {
        let mut want = self.state.clone();
        expected(&mut want);
        let effects = self
            .reducer
            .reduce(&mut self.state, action, &self.environment);
        if self.state != want {
            panic!(
                "TestStore: state differs from the expected state\n{}",
                diff(&want, &self.state)
            );
        }
        let ctx = Context {
            feedback: self.feedback.clone(),
            completion: None,
            registry: Arc::clone(&self.registry),
        };
        if let Some(work) = prepare(effects, &ctx) {
            let guard = InFlightGuard::new(&self.in_flight);
            tokio::spawn(async move {
                work.await;
                drop(guard);
            });
        }
    }
}

impl<R: Reducer> Drop for TestStore<R>
where
    R::State: Clone + PartialEq + Debug,
    R::Action: PartialEq + Debug,
{
    fn drop(&mut self) {
        if self.finished || std::thread::panicking() {
            return;
        }
        let pending = self.drain_received();
        let running = self.in_flight.count.load(Ordering::SeqCst);
        if !pending.is_empty() || running > 0 {
            panic!(
                "TestStore dropped with {} unreceived action(s) {pending:?} and {running} running effect(s); \
                 receive them, or end the test with `finish().await`",
                pending.len()
            );
        }
    }
}

/// A line diff of the pretty `Debug` forms: `-` expected, `+` actual.
fn diff<T: Debug>(expected: &T, actual: &T) -> String {
    let want = format!("{expected:#?}");
    let got = format!("{actual:#?}");
    let want: Vec<&str> = want.lines().collect();
    let got: Vec<&str> = got.lines().collect();
    let mut out = String::new();
    for i in 0..want.len().max(got.len()) {
        match (want.get(i), got.get(i)) {
            (Some(w), Some(g)) if w == g => {
                out.push_str("  ");
                out.push_str(w);
            }
            (w, g) => {
                if let Some(w) = w {
                    out.push_str("- ");
                    out.push_str(w);
                    out.push('\n');
                }
                if let Some(g) = g {
                    out.push_str("+ ");
                    out.push_str(g);
                } else {
                    out.pop();
                }
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Effects;

    #[derive(Debug, Clone, PartialEq, Default)]
    struct S {
        n: i32,
    }

    #[derive(Debug, Clone, PartialEq)]
    enum A {
        Set(i32),
        Later(i32),
    }

    struct Red;
    impl Reducer for Red {
        type State = S;
        type Action = A;
        type Environment = ();
        fn reduce(&self, s: &mut S, a: A, _: &()) -> Effects<A> {
            match a {
                A::Set(n) => {
                    s.n = n;
                    Effects::none()
                }
                A::Later(n) => Effects::run(async move {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    A::Set(n)
                }),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn receives_delayed_actions_on_virtual_time() {
        let mut store = TestStore::new(S::default(), Red, ()).with_timeout(Duration::from_secs(10));
        store.send(A::Later(3), |_| {}).await;
        store.receive(A::Set(3), |s| s.n = 3).await;
        store.finish().await;
    }

    #[tokio::test]
    #[should_panic(expected = "state differs")]
    async fn wrong_expected_state_fails() {
        let mut store = TestStore::new(S::default(), Red, ());
        store.send(A::Set(1), |s| s.n = 2).await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "must be received before sending")]
    async fn unasserted_actions_fail_the_next_send() {
        let mut store = TestStore::new(S::default(), Red, ());
        store.send(A::Later(1), |_| {}).await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        store.send(A::Set(2), |s| s.n = 2).await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "unexpected action")]
    async fn a_different_action_fails_receive() {
        let mut store = TestStore::new(S::default(), Red, ()).with_timeout(Duration::from_secs(10));
        store.send(A::Later(1), |_| {}).await;
        store.receive(A::Set(9), |s| s.n = 9).await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "still running")]
    async fn finish_fails_while_effects_run() {
        let mut store = TestStore::new(S::default(), Red, ()).with_timeout(Duration::from_secs(1));
        store.send(A::Later(1), |_| {}).await;
        store.finish().await;
    }

    #[test]
    fn diff_marks_changed_lines() {
        let d = diff(&S { n: 1 }, &S { n: 2 });
        assert!(d.contains("-     n: 1,"), "{d}");
        assert!(d.contains("+     n: 2,"), "{d}");
    }
}
