//! The reducer: the pure heart of an agent.

use crate::Effects;

/// Turns `(state, action)` into a new state and the effects to run.
///
/// A reducer is synchronous and does no I/O: it changes `state` in place and
/// returns [`Effects`] describing the work to do next (call the LLM, write an
/// audit event). The [`Store`](crate::Store) runs those effects and feeds the
/// actions they produce back into `reduce`. Keeping decisions here and I/O in
/// effects makes every agent decision testable with a
/// [`TestStore`](crate::TestStore) and no network.
///
/// ```
/// use agent_patterns_core::{Effects, Reducer};
///
/// #[derive(Debug, Default, Clone, PartialEq)]
/// struct Counter { value: i64 }
///
/// #[derive(Debug, Clone, PartialEq)]
/// enum Action { Increment, Add(i64) }
///
/// struct CounterReducer;
///
/// impl Reducer for CounterReducer {
///     type State = Counter;
///     type Action = Action;
///     type Environment = ();
///
///     fn reduce(&self, state: &mut Counter, action: Action, _env: &()) -> Effects<Action> {
///         match action {
///             Action::Increment => Effects::send(Action::Add(1)),
///             Action::Add(n) => {
///                 state.value += n;
///                 Effects::none()
///             }
///         }
///     }
/// }
/// ```
pub trait Reducer: Send + Sync + 'static {
    /// The state the reducer owns.
    type State: Send + 'static;
    /// What can happen: user input and the results of effects.
    type Action: Send + 'static;
    /// Dependencies effects may use (LLM clients, loggers); usually an
    /// [`AgentEnvironment`](crate::AgentEnvironment) implementation behind `Arc`s.
    type Environment: Send + Sync + 'static;

    /// Apply `action` to `state` and return the work to do next.
    fn reduce(
        &self,
        state: &mut Self::State,
        action: Self::Action,
        env: &Self::Environment,
    ) -> Effects<Self::Action>;
}

/// A shared reducer is a reducer, so one instance can drive many stores.
impl<R: Reducer> Reducer for std::sync::Arc<R> {
    type State = R::State;
    type Action = R::Action;
    type Environment = R::Environment;

    fn reduce(
        &self,
        state: &mut Self::State,
        action: Self::Action,
        env: &Self::Environment,
    ) -> Effects<Self::Action> {
        (**self).reduce(state, action, env)
    }
}
