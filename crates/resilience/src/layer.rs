//! tower layers for every primitive.
//!
//! Each layer holds its primitive in an `Arc`, so every clone of a service —
//! axum clones the service for each request — shares one limiter, breaker or
//! bulkhead: a clone never forks a limit. All services fail with one error
//! type, [`ResilienceError`], whose [`kind`](ResilienceError::kind) says which
//! primitive refused and [`retry_after`](ResilienceError::retry_after) how long
//! to wait.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use agent_patterns_core::AgentError;
use futures::future::BoxFuture;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::bulkhead::{Bulkhead, BulkheadError};
use crate::circuit_breaker::{CircuitBreaker, OwnedCallPermit};
use crate::keyed::KeyedRateLimiter;
use crate::rate_limiter::RateLimiter;

/// A boxed error, as tower services commonly use.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which primitive refused a request, or that the inner service failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A rate limiter had no token.
    RateLimited,
    /// A circuit breaker is open.
    CircuitOpen,
    /// A bulkhead had no free slot.
    BulkheadFull,
    /// The request took longer than the time limit.
    Timeout,
    /// The inner service failed.
    Inner,
}

/// The error of every service in this module.
#[derive(Debug)]
pub struct ResilienceError {
    kind: ErrorKind,
    retry_after: Option<Duration>,
    timeout: Option<Duration>,
    message: String,
    source: Option<BoxError>,
}

impl ResilienceError {
    fn refused(kind: ErrorKind, retry_after: Option<Duration>, message: String) -> Self {
        Self {
            kind,
            retry_after,
            timeout: None,
            message,
            source: None,
        }
    }

    /// Wrap the inner service's error; a `ResilienceError` from a layer further
    /// in passes through unchanged, so stacked layers keep the refusal's kind.
    fn inner(error: impl Into<BoxError>) -> Self {
        let source = match error.into().downcast::<ResilienceError>() {
            Ok(nested) => return *nested,
            Err(other) => other,
        };
        Self {
            kind: ErrorKind::Inner,
            retry_after: None,
            timeout: None,
            message: source.to_string(),
            source: Some(source),
        }
    }

    /// Which primitive refused (or `Inner`).
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// How long to wait before trying again, when known (for `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The inner service's error, for `ErrorKind::Inner`.
    pub fn into_inner(self) -> Option<BoxError> {
        self.source
    }
}

impl fmt::Display for ResilienceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ResilienceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<ResilienceError> for AgentError {
    fn from(e: ResilienceError) -> Self {
        match e.kind {
            ErrorKind::RateLimited => AgentError::RateLimited,
            ErrorKind::CircuitOpen => AgentError::CircuitBreakerOpen,
            ErrorKind::BulkheadFull => AgentError::BulkheadFull,
            ErrorKind::Timeout => AgentError::Timeout {
                duration: e.timeout.unwrap_or_default(),
            },
            ErrorKind::Inner => match e.source.map(|s| s.downcast::<AgentError>()) {
                Some(Ok(agent)) => *agent,
                Some(Err(other)) => AgentError::Internal(other.to_string()),
                None => AgentError::Internal(e.message),
            },
        }
    }
}

pin_project! {
    /// The response future of the limiter, breaker-free services: either a
    /// refusal ready at once or the inner service's future.
    #[project = GuardedProj]
    #[allow(missing_docs)]
    pub enum Guarded<F> {
        /// Passed through to the inner service.
        Inner { #[pin] future: F },
        /// Refused before reaching the inner service.
        Refused { error: Option<ResilienceError> },
    }
}

impl<F, T, E> Future for Guarded<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, ResilienceError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GuardedProj::Inner { future } => future.poll(cx).map_err(ResilienceError::inner),
            GuardedProj::Refused { error } => Poll::Ready(Err(error.take().unwrap_or_else(|| {
                ResilienceError::refused(ErrorKind::Inner, None, "polled after completion".into())
            }))),
        }
    }
}

// ── rate limit ──────────────────────────────────────────────────────────────

/// Call the inner service if the limiter admitted the request, else refuse.
fn limited<F>(
    verdict: Result<(), Option<Duration>>,
    limiter: &str,
    call: impl FnOnce() -> F,
) -> Guarded<F> {
    match verdict {
        Ok(()) => Guarded::Inner { future: call() },
        Err(wait) => Guarded::Refused {
            error: Some(ResilienceError::refused(
                ErrorKind::RateLimited,
                wait,
                format!("rate limiter '{limiter}' refused the request"),
            )),
        },
    }
}

/// Applies a shared [`RateLimiter`]: one token per request.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: Arc<RateLimiter>,
}

impl RateLimitLayer {
    /// A layer taking tokens from `limiter`.
    pub fn new(limiter: Arc<RateLimiter>) -> Self {
        Self { limiter }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limiter: Arc::clone(&self.limiter),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct RateLimitService<S> {
    inner: S,
    limiter: Arc<RateLimiter>,
}

impl<S, Req> Service<Req> for RateLimitService<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = ResilienceError;
    type Future = Guarded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(ResilienceError::inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let verdict = self.limiter.check_with_retry_after(1);
        limited(verdict, self.limiter.name(), || self.inner.call(req))
    }
}

// ── keyed rate limit ────────────────────────────────────────────────────────

/// Applies a shared [`KeyedRateLimiter`], with the key taken from each request
/// by an extractor (user id from a header, client IP, model name …).
pub struct KeyedRateLimitLayer<K, X> {
    limiter: Arc<KeyedRateLimiter<K>>,
    extract: Arc<X>,
}

impl<K, X> Clone for KeyedRateLimitLayer<K, X> {
    fn clone(&self) -> Self {
        Self {
            limiter: Arc::clone(&self.limiter),
            extract: Arc::clone(&self.extract),
        }
    }
}

impl<K, X> fmt::Debug for KeyedRateLimitLayer<K, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimitLayer")
            .field("limiter", &self.limiter.name())
            .finish()
    }
}

impl<K, X> KeyedRateLimitLayer<K, X> {
    /// A layer limiting per key; `extract` returns the request's key, or
    /// `None` to let the request through unlimited.
    pub fn new(limiter: Arc<KeyedRateLimiter<K>>, extract: X) -> Self {
        Self {
            limiter,
            extract: Arc::new(extract),
        }
    }
}

impl<S, K, X> Layer<S> for KeyedRateLimitLayer<K, X> {
    type Service = KeyedRateLimitService<S, K, X>;
    fn layer(&self, inner: S) -> Self::Service {
        KeyedRateLimitService {
            inner,
            limiter: Arc::clone(&self.limiter),
            extract: Arc::clone(&self.extract),
        }
    }
}

/// The service of [`KeyedRateLimitLayer`].
pub struct KeyedRateLimitService<S, K, X> {
    inner: S,
    limiter: Arc<KeyedRateLimiter<K>>,
    extract: Arc<X>,
}

impl<S: Clone, K, X> Clone for KeyedRateLimitService<S, K, X> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: Arc::clone(&self.limiter),
            extract: Arc::clone(&self.extract),
        }
    }
}

impl<S, K, X, Req> Service<Req> for KeyedRateLimitService<S, K, X>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone,
    X: Fn(&Req) -> Option<K>,
{
    type Response = S::Response;
    type Error = ResilienceError;
    type Future = Guarded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(ResilienceError::inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let verdict = match (self.extract)(&req) {
            Some(key) => self.limiter.check_with_retry_after(&key, 1),
            None => Ok(()),
        };
        limited(verdict, self.limiter.name(), || self.inner.call(req))
    }
}

// ── circuit breaker ─────────────────────────────────────────────────────────

/// Decides whether a successful response still counts as a failure of the
/// dependency (an HTTP 5xx, say).
pub type ResponseClassifier<R> = Arc<dyn Fn(&R) -> bool + Send + Sync>;

/// Applies a shared [`CircuitBreaker`]: open → refused at once; otherwise the
/// outcome is recorded (`Err` is a failure; `Ok` is a success unless the
/// classifier says otherwise).
pub struct CircuitBreakerLayer<R> {
    breaker: Arc<CircuitBreaker>,
    is_success: ResponseClassifier<R>,
}

impl<R> Clone for CircuitBreakerLayer<R> {
    fn clone(&self) -> Self {
        Self {
            breaker: Arc::clone(&self.breaker),
            is_success: Arc::clone(&self.is_success),
        }
    }
}

impl<R> fmt::Debug for CircuitBreakerLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breaker", &self.breaker.name())
            .finish()
    }
}

impl<R> CircuitBreakerLayer<R> {
    /// A layer counting every `Ok` response as a success.
    pub fn new(breaker: Arc<CircuitBreaker>) -> Self {
        Self {
            breaker,
            is_success: Arc::new(|_| true),
        }
    }

    /// A layer with `is_success` deciding which responses are successes,
    /// e.g. `|r: &http::Response<_>| !r.status().is_server_error()`.
    pub fn with_classifier(
        breaker: Arc<CircuitBreaker>,
        is_success: impl Fn(&R) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            breaker,
            is_success: Arc::new(is_success),
        }
    }
}

impl<S, R> Layer<S> for CircuitBreakerLayer<R> {
    type Service = CircuitBreakerService<S, R>;
    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: Arc::clone(&self.breaker),
            is_success: Arc::clone(&self.is_success),
        }
    }
}

/// The service of [`CircuitBreakerLayer`].
pub struct CircuitBreakerService<S, R> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
    is_success: ResponseClassifier<R>,
}

impl<S: Clone, R> Clone for CircuitBreakerService<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: Arc::clone(&self.breaker),
            is_success: Arc::clone(&self.is_success),
        }
    }
}

pin_project! {
    /// The response future of [`CircuitBreakerService`].
    pub struct BreakerFuture<F, R> {
        #[pin]
        inner: Guarded<F>,
        permit: Option<OwnedCallPermit>,
        is_success: ResponseClassifier<R>,
    }
}

impl<F, R, E> Future for BreakerFuture<F, R>
where
    F: Future<Output = Result<R, E>>,
    E: Into<BoxError>,
{
    type Output = Result<R, ResilienceError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Some(permit) = this.permit.take() {
            let success = match &result {
                Ok(response) => (this.is_success)(response),
                Err(_) => false,
            };
            permit.record(success);
        }
        Poll::Ready(result)
    }
}

impl<S, R, Req> Service<Req> for CircuitBreakerService<S, R>
where
    S: Service<Req, Response = R>,
    S::Error: Into<BoxError>,
{
    type Response = R;
    type Error = ResilienceError;
    type Future = BreakerFuture<S::Future, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(ResilienceError::inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let is_success = Arc::clone(&self.is_success);
        match self.breaker.acquire_owned() {
            Ok(permit) => BreakerFuture {
                inner: Guarded::Inner {
                    future: self.inner.call(req),
                },
                permit: Some(permit),
                is_success,
            },
            Err(open) => BreakerFuture {
                inner: Guarded::Refused {
                    error: Some(ResilienceError::refused(
                        ErrorKind::CircuitOpen,
                        Some(open.retry_after).filter(|d| *d != Duration::MAX),
                        open.to_string(),
                    )),
                },
                permit: None,
                is_success,
            },
        }
    }
}

// ── bulkhead ────────────────────────────────────────────────────────────────

/// Runs each request inside a shared [`Bulkhead`] slot. The inner service must
/// be `Clone` (the request waits for its slot before reaching it).
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    bulkhead: Arc<Bulkhead>,
}

impl BulkheadLayer {
    /// A layer using `bulkhead`.
    pub fn new(bulkhead: Arc<Bulkhead>) -> Self {
        Self { bulkhead }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService {
            inner,
            bulkhead: Arc::clone(&self.bulkhead),
        }
    }
}

/// The service of [`BulkheadLayer`].
#[derive(Debug, Clone)]
pub struct BulkheadService<S> {
    inner: S,
    bulkhead: Arc<Bulkhead>,
}

impl<S, Req> Service<Req> for BulkheadService<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = ResilienceError;
    type Future = BoxFuture<'static, Result<S::Response, ResilienceError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(ResilienceError::inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // Take the service that was polled ready; leave a fresh clone behind.
        let fresh = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, fresh);
        let bulkhead = Arc::clone(&self.bulkhead);
        Box::pin(async move {
            let _slot = bulkhead.acquire_owned().await.map_err(|e| {
                let retry_after = match &e {
                    BulkheadError::QueueFull { .. } => None,
                    BulkheadError::Timeout { .. } => None,
                };
                ResilienceError::refused(ErrorKind::BulkheadFull, retry_after, e.to_string())
            })?;
            ready.call(req).await.map_err(ResilienceError::inner)
        })
    }
}

// ── timeout ─────────────────────────────────────────────────────────────────

/// Fails requests that take longer than a limit with `ErrorKind::Timeout`
/// (which converts into `AgentError::Timeout { duration }`).
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    limit: Duration,
}

impl TimeoutLayer {
    /// A layer with time limit `limit`.
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = TimeoutService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TimeoutService {
            inner,
            limit: self.limit,
        }
    }
}

/// The service of [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct TimeoutService<S> {
    inner: S,
    limit: Duration,
}

pin_project! {
    /// The response future of [`TimeoutService`].
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: tokio::time::Sleep,
        limit: Duration,
    }
}

impl<F, T, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, ResilienceError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(ResilienceError::inner));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => {
                let mut error = ResilienceError::refused(
                    ErrorKind::Timeout,
                    None,
                    format!("request timed out after {:?}", this.limit),
                );
                error.timeout = Some(*this.limit);
                Poll::Ready(Err(error))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S, Req> Service<Req> for TimeoutService<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = ResilienceError;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(ResilienceError::inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        TimeoutFuture {
            inner: self.inner.call(req),
            sleep: tokio::time::sleep(self.limit),
            limit: self.limit,
        }
    }
}
