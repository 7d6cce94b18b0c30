//! Effects: descriptions of work a reducer wants done.
//!
//! A reducer never performs I/O itself. It returns an [`Effects`] value that
//! *describes* the work (call the LLM, write an audit event, wait and retry) and
//! the [`Store`](crate::Store) runs it on tokio. Work that finishes with a new
//! action feeds that action back into the reducer. Because effects are plain
//! values, a test can run a reducer without any I/O and inspect what it asked for.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;

use futures::future::BoxFuture;

/// Names a cancellable effect so a later action can cancel it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EffectId(Cow<'static, str>);

impl EffectId {
    /// An id from a static or owned string.
    pub fn new(id: impl Into<Cow<'static, str>>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EffectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&'static str> for EffectId {
    fn from(s: &'static str) -> Self {
        Self(Cow::Borrowed(s))
    }
}

impl From<String> for EffectId {
    fn from(s: String) -> Self {
        Self(Cow::Owned(s))
    }
}

pub(crate) enum Kind<A> {
    None,
    Future(BoxFuture<'static, Option<A>>),
    Merge(Vec<Effects<A>>),
    Concat(Vec<Effects<A>>),
    Cancellable {
        id: EffectId,
        cancel_in_flight: bool,
        inner: Box<Effects<A>>,
    },
    Cancel(EffectId),
}

/// Work for the store to run after a reducer returns.
///
/// `A` is the action type that finished work feeds back; it defaults to `()`,
/// which suits reducers whose effects only do work (audit writes, notifications)
/// and send nothing back.
///
/// | constructor | runs |
/// |---|---|
/// | [`none`](Self::none) | nothing |
/// | [`send`](Self::send) | feeds an action back at once |
/// | [`future`](Self::future) | a future; `Some(action)` is fed back |
/// | [`run`](Self::run) | a future that always yields an action |
/// | [`fire_and_forget`](Self::fire_and_forget) | a future whose output is ignored |
/// | [`merge`](Self::merge) | several effects at the same time |
/// | [`concat`](Self::concat) | several effects one after another |
/// | [`cancellable`](Self::cancellable) | this effect, cancellable by id |
/// | [`cancel`](Self::cancel) | cancels every running effect with that id |
///
/// ```
/// use agent_patterns_core::Effects;
///
/// #[derive(Debug, PartialEq)]
/// enum Action { Tick, Done }
///
/// let effects: Effects<Action> = Effects::merge([
///     Effects::send(Action::Tick),
///     Effects::run(async { Action::Done }).cancellable("work"),
/// ]);
/// assert!(!effects.is_none());
/// ```
#[must_use = "effects do nothing unless returned to a store"]
pub struct Effects<A = ()> {
    pub(crate) kind: Kind<A>,
}

/// The single-effect name for [`Effects`]; the two are the same type.
pub type Effect<A = ()> = Effects<A>;

impl<A: Send + 'static> Default for Effects<A> {
    fn default() -> Self {
        Self::none()
    }
}

impl<A> fmt::Debug for Effects<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::None => f.write_str("Effects::none"),
            Kind::Future(_) => f.write_str("Effects::future"),
            Kind::Merge(v) => f.debug_tuple("Effects::merge").field(v).finish(),
            Kind::Concat(v) => f.debug_tuple("Effects::concat").field(v).finish(),
            Kind::Cancellable {
                id,
                cancel_in_flight,
                inner,
            } => f
                .debug_struct("Effects::cancellable")
                .field("id", id)
                .field("cancel_in_flight", cancel_in_flight)
                .field("inner", inner)
                .finish(),
            Kind::Cancel(id) => f.debug_tuple("Effects::cancel").field(id).finish(),
        }
    }
}

impl<A: Send + 'static> Effects<A> {
    /// No work.
    pub fn none() -> Self {
        Self { kind: Kind::None }
    }

    /// Feed `action` back into the reducer as soon as the store gets to it.
    pub fn send(action: A) -> Self {
        Self::future(async move { Some(action) })
    }

    /// Run a future; when it yields `Some(action)`, feed the action back.
    pub fn future<F>(future: F) -> Self
    where
        F: Future<Output = Option<A>> + Send + 'static,
    {
        Self {
            kind: Kind::Future(Box::pin(future)),
        }
    }

    /// Run a future and feed its action back.
    pub fn run<F>(future: F) -> Self
    where
        F: Future<Output = A> + Send + 'static,
    {
        Self::future(async move { Some(future.await) })
    }

    /// Run a future for its side effect only.
    pub fn fire_and_forget<F>(future: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Self::future(async move {
            future.await;
            None
        })
    }

    /// Run all of `effects` at the same time.
    pub fn merge(effects: impl IntoIterator<Item = Self>) -> Self {
        let v: Vec<Self> = effects.into_iter().filter(|e| !e.is_none()).collect();
        match v.len() {
            0 => Self::none(),
            _ => Self {
                kind: Kind::Merge(v),
            },
        }
    }

    /// Run `effects` one after another: each starts when the previous one (and
    /// the effects nested inside it) has finished. Actions fed back by an earlier
    /// effect are queued before a later effect starts.
    pub fn concat(effects: impl IntoIterator<Item = Self>) -> Self {
        let v: Vec<Self> = effects.into_iter().filter(|e| !e.is_none()).collect();
        match v.len() {
            0 => Self::none(),
            _ => Self {
                kind: Kind::Concat(v),
            },
        }
    }

    /// Make this effect cancellable with `id`. Running effects with the same id
    /// keep running; see [`cancel_in_flight`](Self::cancel_in_flight).
    pub fn cancellable(self, id: impl Into<EffectId>) -> Self {
        self.cancellable_with(id.into(), false)
    }

    /// Make this effect cancellable with `id`, cancelling any effect with the same
    /// id that is still running when this one starts (debounce, "latest wins").
    pub fn cancel_in_flight(self, id: impl Into<EffectId>) -> Self {
        self.cancellable_with(id.into(), true)
    }

    fn cancellable_with(self, id: EffectId, cancel_in_flight: bool) -> Self {
        if self.is_none() && !cancel_in_flight {
            return self;
        }
        Self {
            kind: Kind::Cancellable {
                id,
                cancel_in_flight,
                inner: Box::new(self),
            },
        }
    }

    /// Cancel every running effect registered under `id`. The cancellation
    /// happens when the store processes this effect, before the next action is
    /// reduced; a cancelled effect feeds nothing back.
    pub fn cancel(id: impl Into<EffectId>) -> Self {
        Self {
            kind: Kind::Cancel(id.into()),
        }
    }

    /// Whether this describes no work at all.
    pub fn is_none(&self) -> bool {
        matches!(self.kind, Kind::None)
    }

    /// Transform the actions this effect feeds back (to embed a child feature's
    /// effects in a parent's action type).
    pub fn map<B, F>(self, f: F) -> Effects<B>
    where
        B: Send + 'static,
        F: Fn(A) -> B + Clone + Send + Sync + 'static,
    {
        let kind = match self.kind {
            Kind::None => Kind::None,
            Kind::Future(fut) => Kind::Future(Box::pin(async move { fut.await.map(f) })),
            Kind::Merge(v) => Kind::Merge(v.into_iter().map(|e| e.map(f.clone())).collect()),
            Kind::Concat(v) => Kind::Concat(v.into_iter().map(|e| e.map(f.clone())).collect()),
            Kind::Cancellable {
                id,
                cancel_in_flight,
                inner,
            } => Kind::Cancellable {
                id,
                cancel_in_flight,
                inner: Box::new(inner.map(f)),
            },
            Kind::Cancel(id) => Kind::Cancel(id),
        };
        Effects { kind }
    }
}

impl<A: Send + 'static> FromIterator<Effects<A>> for Effects<A> {
    /// Collecting effects merges them (they run at the same time).
    fn from_iter<I: IntoIterator<Item = Effects<A>>>(iter: I) -> Self {
        Self::merge(iter)
    }
}
