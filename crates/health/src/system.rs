//! [`SystemHealthCheck`]: runs every registered check concurrently, each with
//! a timeout, a panic guard and a result cache, and aggregates the results.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt;
use futures::future::join_all;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::{
    CheckOptions, ComponentHealth, HealthCheckable, HealthConfig, HealthError, HealthStatus,
};

/// The flag that takes a process out of the load balancer while it shuts
/// down.
///
/// Cloning shares the flag. While it is set, the readiness probe answers 503
/// without running any check, and the liveness probe keeps answering 200 so
/// the orchestrator does not kill a process that is draining on purpose. The
/// shutdown crate sets it first thing on SIGTERM.
#[derive(Debug, Clone, Default)]
pub struct ReadinessGate {
    draining: Arc<AtomicBool>,
}

impl ReadinessGate {
    /// A gate that is open (not draining).
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the process as draining: readiness turns 503 from now on.
    pub fn start_draining(&self) {
        if !self.draining.swap(true, Ordering::AcqRel) {
            tracing::info!("readiness gate closed: the process is draining");
        }
    }

    /// Reopens the gate (e.g. a cancelled maintenance drain).
    pub fn stop_draining(&self) {
        self.draining.store(false, Ordering::Release);
    }

    /// Whether the process is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// One check's latest result and how it counts.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    /// The check's result (status, message, latency, time).
    pub health: ComponentHealth,
    /// Whether the check is critical.
    pub critical: bool,
}

/// Every check's result and the overall status.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    /// The aggregated status (see [`aggregate_status`]).
    pub status: HealthStatus,
    /// Each check's result, keyed by component name.
    pub checks: BTreeMap<String, CheckReport>,
}

/// Aggregates checks, given as `(critical, status)`: any critical check
/// unhealthy makes the system unhealthy; any other failure or any degraded
/// check makes it degraded; no checks at all is healthy.
pub fn aggregate_status(checks: impl IntoIterator<Item = (bool, HealthStatus)>) -> HealthStatus {
    checks
        .into_iter()
        .map(|(critical, status)| match status {
            HealthStatus::Unhealthy if !critical => HealthStatus::Degraded,
            other => other,
        })
        .max()
        .unwrap_or(HealthStatus::Healthy)
}

struct Cached {
    at: Instant,
    health: ComponentHealth,
}

struct Registered {
    name: String,
    check: Arc<dyn HealthCheckable>,
    options: CheckOptions,
    timeout: Duration,
    /// Held while the check runs, so concurrent probes wait for one run
    /// instead of each hitting the dependency.
    cache: Mutex<Option<Cached>>,
    passed_once: AtomicBool,
}

/// The health of the whole system: a set of [`HealthCheckable`] components.
///
/// * [`check_all`](Self::check_all) runs every check concurrently. Each run
///   is bounded by a timeout (default 2 s) and guarded against panics: a
///   check that hangs or panics is reported unhealthy with the reason.
/// * Results are cached for [`HealthConfig::cache_ttl`]; concurrent callers
///   share one run per check.
/// * Critical checks decide readiness; non-critical ones only degrade.
///
/// ```
/// use std::sync::Arc;
/// use agent_patterns_health::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut system_health = SystemHealthCheck::new();
/// system_health.add_check(Arc::new(FnHealthCheck::new("queue", || async {
///     ComponentHealth::healthy("12 jobs waiting")
/// })));
/// system_health.add_check_with(
///     Arc::new(FnHealthCheck::new("recommendations", || async {
///         ComponentHealth::unhealthy("model server down")
///     })),
///     CheckOptions::non_critical(),
/// );
///
/// let results = system_health.check_all().await;
/// assert_eq!(results["queue"].status, HealthStatus::Healthy);
/// assert_eq!(system_health.overall_health().await, HealthStatus::Degraded);
/// # }
/// ```
pub struct SystemHealthCheck {
    config: HealthConfig,
    checks: Vec<Arc<Registered>>,
    gate: ReadinessGate,
    started: AtomicBool,
}

impl Default for SystemHealthCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for SystemHealthCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemHealthCheck")
            .field("config", &self.config)
            .field(
                "checks",
                &self
                    .checks
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("draining", &self.gate.is_draining())
            .field("started", &self.started.load(Ordering::Acquire))
            .finish()
    }
}

impl SystemHealthCheck {
    /// A system with no checks and the default [`HealthConfig`].
    pub fn new() -> Self {
        Self {
            config: HealthConfig::default(),
            checks: Vec::new(),
            gate: ReadinessGate::new(),
            started: AtomicBool::new(false),
        }
    }

    /// A system with no checks and the given configuration, validated.
    pub fn with_config(config: HealthConfig) -> Result<Self, HealthError> {
        config.validate()?;
        Ok(Self {
            config,
            ..Self::new()
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// Registers a critical check that startup waits for.
    ///
    /// A check with the same component name as an earlier one replaces it.
    /// If the limit of `max_checks` is reached the check is not registered
    /// and an error is logged; use [`try_add_check`](Self::try_add_check) to
    /// get the error.
    pub fn add_check(&mut self, check: Arc<dyn HealthCheckable>) -> &mut Self {
        self.add_check_with(check, CheckOptions::default())
    }

    /// Registers a check with explicit [`CheckOptions`]; see
    /// [`add_check`](Self::add_check).
    pub fn add_check_with(
        &mut self,
        check: Arc<dyn HealthCheckable>,
        options: CheckOptions,
    ) -> &mut Self {
        if let Err(err) = self.try_add_check(check, options) {
            tracing::error!(error = %err, "health check not registered");
        }
        self
    }

    /// Registers a check, returning an error when the options are invalid or
    /// the limit of `max_checks` is reached.
    pub fn try_add_check(
        &mut self,
        check: Arc<dyn HealthCheckable>,
        options: CheckOptions,
    ) -> Result<&mut Self, HealthError> {
        options.validate()?;
        let name = check.component_name().to_owned();
        let registered = Arc::new(Registered {
            timeout: options.timeout.unwrap_or(self.config.check_timeout),
            name,
            check,
            options,
            cache: Mutex::new(None),
            passed_once: AtomicBool::new(false),
        });
        if let Some(slot) = self.checks.iter_mut().find(|c| c.name == registered.name) {
            *slot = registered;
        } else if self.checks.len() >= self.config.max_checks {
            return Err(HealthError::TooManyChecks {
                component: registered.name.clone(),
                max_checks: self.config.max_checks,
            });
        } else {
            self.checks.push(registered);
        }
        Ok(self)
    }

    /// Names of the registered checks, in registration order.
    pub fn component_names(&self) -> impl Iterator<Item = &str> {
        self.checks.iter().map(|c| c.name.as_str())
    }

    /// Runs every check concurrently (or reuses a fresh cached result) and
    /// returns each result by component name.
    pub async fn check_all(&self) -> HashMap<String, ComponentHealth> {
        self.observe_all()
            .await
            .into_iter()
            .map(|(reg, health)| (reg.name.clone(), health))
            .collect()
    }

    /// Every check's result plus the aggregated status.
    pub async fn report(&self) -> HealthReport {
        let observed = self.observe_all().await;
        let status = aggregate_status(
            observed
                .iter()
                .map(|(reg, health)| (reg.options.critical, health.status)),
        );
        let checks = observed
            .into_iter()
            .map(|(reg, health)| {
                (
                    reg.name.clone(),
                    CheckReport {
                        health,
                        critical: reg.options.critical,
                    },
                )
            })
            .collect();
        HealthReport { status, checks }
    }

    /// The aggregated status of all checks (see [`aggregate_status`]).
    pub async fn overall_health(&self) -> HealthStatus {
        self.report().await.status
    }

    /// The gate the readiness probe consults; clone it into a shutdown
    /// handler so SIGTERM turns readiness to 503 at once.
    pub fn readiness_gate(&self) -> ReadinessGate {
        self.gate.clone()
    }

    /// Marks the process as draining (see [`ReadinessGate::start_draining`]).
    pub fn start_draining(&self) {
        self.gate.start_draining();
    }

    /// Whether the process is draining.
    pub fn is_draining(&self) -> bool {
        self.gate.is_draining()
    }

    /// Whether every startup check has passed (healthy or degraded) at
    /// least once. Once `true`, it stays `true`.
    pub fn is_started(&self) -> bool {
        if self.started.load(Ordering::Acquire) {
            return true;
        }
        let done = self
            .checks
            .iter()
            .filter(|c| c.options.startup)
            .all(|c| c.passed_once.load(Ordering::Acquire));
        if done {
            self.started.store(true, Ordering::Release);
        }
        done
    }

    async fn observe_all(&self) -> Vec<(&Registered, ComponentHealth)> {
        join_all(self.checks.iter().map(|reg| async move {
            let health = self.observe(reg).await;
            (reg.as_ref(), health)
        }))
        .await
    }

    async fn observe(&self, reg: &Registered) -> ComponentHealth {
        let ttl = self.config.cache_ttl;
        let mut cached = reg.cache.lock().await;
        if let Some(c) = cached.as_ref()
            && !ttl.is_zero()
            && c.at.elapsed() < ttl
        {
            return c.health.clone();
        }
        let health = run_check(reg).await;
        if health.status.is_available() {
            reg.passed_once.store(true, Ordering::Release);
        }
        *cached = Some(Cached {
            at: Instant::now(),
            health: health.clone(),
        });
        health
    }
}

async fn run_check(reg: &Registered) -> ComponentHealth {
    let start = Instant::now();
    let guarded = AssertUnwindSafe(reg.check.check_health()).catch_unwind();
    let mut health = match tokio::time::timeout(reg.timeout, guarded).await {
        Ok(Ok(health)) => health,
        Ok(Err(panic)) => ComponentHealth::unhealthy(format!(
            "health check panicked: {}",
            panic_message(panic.as_ref())
        )),
        Err(_) => {
            ComponentHealth::unhealthy(format!("health check timed out after {:?}", reg.timeout))
        }
    };
    health.latency = start.elapsed();
    health.observed_at = Utc::now();

    let component = reg.name.clone();
    metrics::histogram!("health_check_duration_seconds", "component" => component.clone())
        .record(health.latency.as_secs_f64());
    if health.status == HealthStatus::Unhealthy {
        metrics::counter!("health_check_failures_total", "component" => component).increment(1);
        tracing::warn!(component = %reg.name, message = %health.message, "health check failed");
    }
    health
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use proptest::prelude::*;

    use super::*;
    use crate::FnHealthCheck;

    fn counting(
        name: &'static str,
        calls: Arc<AtomicUsize>,
        status: HealthStatus,
    ) -> Arc<dyn HealthCheckable> {
        Arc::new(FnHealthCheck::new(name, move || {
            let calls = Arc::clone(&calls);
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                match status {
                    HealthStatus::Healthy => ComponentHealth::healthy("ok"),
                    HealthStatus::Degraded => ComponentHealth::degraded("slow"),
                    HealthStatus::Unhealthy => ComponentHealth::unhealthy("down"),
                }
            }
        }))
    }

    fn uncached() -> SystemHealthCheck {
        SystemHealthCheck::with_config(HealthConfig {
            cache_ttl: Duration::ZERO,
            ..HealthConfig::default()
        })
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn hanging_check_is_reported_unhealthy_after_its_timeout() {
        let mut system = SystemHealthCheck::new();
        system.add_check(Arc::new(FnHealthCheck::new("stuck", || {
            futures::future::pending::<ComponentHealth>()
        })));
        let start = Instant::now();
        let results = system.check_all().await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        let stuck = &results["stuck"];
        assert_eq!(stuck.status, HealthStatus::Unhealthy);
        assert!(
            stuck.message.contains("timed out after 2s"),
            "{}",
            stuck.message
        );
        assert_eq!(stuck.latency, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn per_check_timeout_overrides_the_default() {
        let mut system = SystemHealthCheck::new();
        system.add_check_with(
            Arc::new(FnHealthCheck::new("slow", || async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                ComponentHealth::healthy("late")
            })),
            CheckOptions::critical().with_timeout(Duration::from_millis(500)),
        );
        let results = system.check_all().await;
        assert_eq!(results["slow"].status, HealthStatus::Unhealthy);
        assert!(results["slow"].message.contains("500ms"));
    }

    #[tokio::test]
    async fn panicking_check_is_reported_unhealthy_with_the_panic_message() {
        let mut system = SystemHealthCheck::new();
        system.add_check(Arc::new(FnHealthCheck::new("boom", || async {
            panic!("driver exploded")
        })));
        let results = system.check_all().await;
        assert_eq!(results["boom"].status, HealthStatus::Unhealthy);
        assert!(results["boom"].message.contains("driver exploded"));
    }

    #[tokio::test(start_paused = true)]
    async fn checks_run_concurrently() {
        let mut system = SystemHealthCheck::new();
        for name in ["a", "b", "c"] {
            system.add_check(Arc::new(FnHealthCheck::new(name, || async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                ComponentHealth::healthy("ok")
            })));
        }
        let start = Instant::now();
        let results = system.check_all().await;
        assert_eq!(results.len(), 3);
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        assert!(results.values().all(|h| h.status == HealthStatus::Healthy));
        assert!(
            results
                .values()
                .all(|h| h.latency == Duration::from_millis(300))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn results_are_reused_within_the_cache_ttl() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut system = SystemHealthCheck::new();
        system.add_check(counting("db", Arc::clone(&calls), HealthStatus::Healthy));

        system.check_all().await;
        system.check_all().await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        tokio::time::advance(Duration::from_millis(999)).await;
        system.check_all().await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        tokio::time::advance(Duration::from_millis(1)).await;
        system.check_all().await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_check_run() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut system = SystemHealthCheck::new();
        let inner = Arc::clone(&calls);
        system.add_check(Arc::new(FnHealthCheck::new("db", move || {
            let calls = Arc::clone(&inner);
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                ComponentHealth::healthy("ok")
            }
        })));
        let results = join_all((0..10).map(|_| system.check_all())).await;
        assert_eq!(results.len(), 10);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn zero_ttl_runs_the_check_every_time() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut system = uncached();
        system.add_check(counting("db", Arc::clone(&calls), HealthStatus::Healthy));
        system.check_all().await;
        system.check_all().await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn failed_non_critical_check_degrades_and_failed_critical_check_fails() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut system = uncached();
        system.add_check(counting("db", Arc::clone(&calls), HealthStatus::Healthy));
        system.add_check_with(
            counting("cache", Arc::clone(&calls), HealthStatus::Unhealthy),
            CheckOptions::non_critical(),
        );
        assert_eq!(system.overall_health().await, HealthStatus::Degraded);

        system.add_check(counting("llm", Arc::clone(&calls), HealthStatus::Unhealthy));
        let report = system.report().await;
        assert_eq!(report.status, HealthStatus::Unhealthy);
        assert!(report.checks["llm"].critical);
        assert!(!report.checks["cache"].critical);
    }

    #[tokio::test]
    async fn same_component_name_replaces_the_earlier_check() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut system = uncached();
        system.add_check(counting("db", Arc::clone(&calls), HealthStatus::Unhealthy));
        system.add_check(counting("db", Arc::clone(&calls), HealthStatus::Healthy));
        assert_eq!(system.component_names().collect::<Vec<_>>(), ["db"]);
        assert_eq!(system.overall_health().await, HealthStatus::Healthy);
    }

    #[tokio::test]
    async fn registering_beyond_max_checks_is_refused() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut system = SystemHealthCheck::with_config(HealthConfig {
            max_checks: 1,
            ..HealthConfig::default()
        })
        .unwrap();
        system.add_check(counting("a", Arc::clone(&calls), HealthStatus::Healthy));
        let err = system
            .try_add_check(
                counting("b", Arc::clone(&calls), HealthStatus::Healthy),
                CheckOptions::default(),
            )
            .unwrap_err();
        assert_eq!(
            err,
            HealthError::TooManyChecks {
                component: "b".into(),
                max_checks: 1
            }
        );
        system.add_check(counting("c", calls, HealthStatus::Healthy));
        assert_eq!(system.component_names().count(), 1);
    }

    #[tokio::test]
    async fn startup_completes_once_every_startup_check_passed_once() {
        let flaky_ok = Arc::new(AtomicBool::new(false));
        let mut system = uncached();
        let flag = Arc::clone(&flaky_ok);
        system.add_check(Arc::new(FnHealthCheck::new("migrations", move || {
            let ok = flag.load(Ordering::SeqCst);
            async move {
                if ok {
                    ComponentHealth::healthy("applied")
                } else {
                    ComponentHealth::unhealthy("pending")
                }
            }
        })));
        system.add_check_with(
            Arc::new(FnHealthCheck::new("optional", || async {
                ComponentHealth::unhealthy("never up")
            })),
            CheckOptions::non_critical(),
        );

        system.check_all().await;
        assert!(!system.is_started());
        flaky_ok.store(true, Ordering::SeqCst);
        system.check_all().await;
        assert!(system.is_started());
        flaky_ok.store(false, Ordering::SeqCst);
        system.check_all().await;
        assert!(system.is_started(), "startup stays complete");
    }

    #[test]
    fn readiness_gate_clones_share_the_flag() {
        let system = SystemHealthCheck::new();
        let gate = system.readiness_gate();
        assert!(!system.is_draining());
        gate.start_draining();
        assert!(system.is_draining());
        gate.stop_draining();
        assert!(!system.is_draining());
    }

    #[test]
    fn health_check_metrics_follow_prometheus_names() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut system = SystemHealthCheck::new();
                system.add_check(Arc::new(FnHealthCheck::new("db", || async {
                    ComponentHealth::unhealthy("down")
                })));
                system.check_all().await;
            });
        });
        let snapshot = snapshotter.snapshot().into_vec();
        let failures = snapshot
            .iter()
            .find(|(key, ..)| key.key().name() == "health_check_failures_total")
            .unwrap();
        assert_eq!(failures.3, DebugValue::Counter(1));
        assert!(
            snapshot
                .iter()
                .any(|(key, ..)| key.key().name() == "health_check_duration_seconds")
        );
    }

    fn status() -> impl Strategy<Value = HealthStatus> {
        prop_oneof![
            Just(HealthStatus::Healthy),
            Just(HealthStatus::Degraded),
            Just(HealthStatus::Unhealthy)
        ]
    }

    proptest! {
        #[test]
        fn aggregate_is_unhealthy_exactly_when_a_critical_check_is_unhealthy(
            checks in proptest::collection::vec((any::<bool>(), status()), 0..16)
        ) {
            let overall = aggregate_status(checks.iter().copied());
            let critical_down = checks.iter().any(|&(c, s)| c && s == HealthStatus::Unhealthy);
            let all_healthy = checks.iter().all(|&(_, s)| s == HealthStatus::Healthy);
            prop_assert_eq!(overall == HealthStatus::Unhealthy, critical_down);
            prop_assert_eq!(overall == HealthStatus::Healthy, all_healthy);
        }
    }
}
