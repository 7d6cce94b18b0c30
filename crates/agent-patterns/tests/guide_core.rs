#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]
//! The guide's core examples, compiled against the facade as a user would.

use composable_rust_agent_patterns::*;

/// The guide's `AgentEnvironment` example (Environment Abstraction).
pub struct ProductionEnvironment {
    llm_circuit_breaker: Arc<CircuitBreaker>,
    rate_limiter: Arc<RateLimiter>,
    bulkhead: Arc<Bulkhead>,
}

impl ProductionEnvironment {
    async fn actual_llm_call(&self, messages: &[Message]) -> Result<String, AgentError> {
        Ok(format!("{} message(s)", messages.len()))
    }
}

impl AgentEnvironment for ProductionEnvironment {
    async fn call_llm(&self, messages: &[Message]) -> Result<String, AgentError> {
        self.rate_limiter.try_acquire(1).await?;
        self.llm_circuit_breaker.allow_request().await?;
        let result =
            tokio::time::timeout(Duration::from_secs(30), self.actual_llm_call(messages)).await?;
        match &result {
            Ok(_) => self.llm_circuit_breaker.record_success().await,
            Err(_) => self.llm_circuit_breaker.record_failure().await,
        }
        result
    }

    async fn execute_tool(&self, tool_name: &str, input: &str) -> Result<String, AgentError> {
        let tool = tool_name.to_owned();
        let input = input.to_owned();
        self.bulkhead
            .execute(async move { Ok::<_, AgentError>(format!("{tool}({input})")) })
            .await?
    }

    async fn log_audit(
        &self,
        _event_type: &str,
        _actor: &str,
        _action: &str,
        _success: bool,
    ) -> Result<(), AgentError> {
        Ok(())
    }
}

fn environment(failure_threshold: u32) -> ProductionEnvironment {
    ProductionEnvironment {
        llm_circuit_breaker: Arc::new(CircuitBreaker::new(
            "llm".to_string(),
            CircuitBreakerConfig {
                failure_threshold,
                success_threshold: 2,
                timeout: Duration::from_secs(60),
            },
        )),
        rate_limiter: Arc::new(RateLimiter::new(
            "api".to_string(),
            RateLimiterConfig {
                capacity: 100,
                refill_rate: 10.0,
            },
        )),
        bulkhead: Arc::new(Bulkhead::new(
            "tool_execution".to_string(),
            BulkheadConfig {
                max_concurrent: 10,
                acquire_timeout: Duration::from_secs(5),
            },
        )),
    }
}

#[tokio::test(start_paused = true)]
async fn the_guides_environment_compiles_and_runs() {
    let env = environment(5);
    assert_eq!(
        env.call_llm(&[Message::user("hi")]).await.unwrap(),
        "1 message(s)"
    );
    assert_eq!(
        env.execute_tool("calculator", "2+2").await.unwrap(),
        "calculator(2+2)"
    );
    assert_eq!(env.llm_circuit_breaker.metrics().total_requests, 1);
}

#[test]
fn status_codes_and_metrics_as_the_guide_writes_them() {
    let err = AgentError::RateLimited;
    assert_eq!(err.status_code(), 429);
    assert_eq!(
        AgentError::Timeout {
            duration: Duration::from_secs(30)
        }
        .status_code(),
        504
    );

    let metrics = AgentMetrics::new();
    metrics.record_tool_call("search", true, Duration::from_millis(250));
    metrics.record_tool_call("calculator", true, Duration::from_millis(50));
    metrics.record_error("Rate limit exceeded".to_string());
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.success_rate() * 100.0, 100.0);
}

#[test]
fn result_alias_accepts_one_or_two_parameters() {
    fn one() -> Result<u8> {
        Ok(1)
    }
    fn two() -> Result<u8, String> {
        Err("x".into())
    }
    assert_eq!(one().unwrap(), 1);
    assert!(two().is_err());
}
