//! Retries with backoff, and trigger rules.
//!
//! * `fetch_rates` fails twice with a transient error, then succeeds; its
//!   retry policy waits 200 ms, then 400 ms (exponential backoff).
//! * `notify_vip` runs only if the context says the customer is a VIP
//!   (a `context_value` trigger rule): here it is skipped.
//! * `alert_on_failure` runs only if `charge` failed (`one_failed`): here
//!   `charge` succeeds, so it is skipped too.
//! * `audit` runs whatever happened (`all_done`).
//!
//! Run it with `cargo run --example retries_and_triggers` (uses a temporary
//! SQLite file).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cloacina_runner::{
    Backoff, Context, DefaultRunner, RetryCondition, RetryPolicy, TaskError, TaskSpec, TriggerRule, ValueCondition,
    Workflow, task_fn,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into())).init();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let fetch_rates = task_fn(move |mut ctx: Context| {
        let counter = counter.clone();
        async move {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            if n < 3 {
                println!("  fetch_rates: attempt {n} fails (rate service unavailable)");
                return Err(TaskError::transient("rate service unavailable"));
            }
            println!("  fetch_rates: attempt {n} succeeds");
            ctx.set("eur_per_usd", 0.92)?;
            Ok(ctx)
        }
    });
    let retry = RetryPolicy::builder()
        .total_attempts(5)
        .backoff(Backoff::Exponential { base: Duration::from_millis(200), multiplier: 2.0 })
        .max_delay(Duration::from_secs(5))
        .jitter(0.0)
        .condition(RetryCondition::TransientOnly)
        .build()?;
    let charge = task_fn(|mut ctx: Context| async move {
        let rate: f64 = ctx.get_as("eur_per_usd")?;
        ctx.set("charged_eur", (100.0 * rate * 100.0).round() / 100.0)?;
        println!("  charge: charged 100 USD");
        Ok::<_, TaskError>(ctx)
    });
    let say = |name: &'static str| {
        task_fn(move |ctx: Context| async move {
            println!("  {name}: ran");
            Ok::<_, TaskError>(ctx)
        })
    };
    let workflow =
        Workflow::builder("billing")
            .task(TaskSpec::new("fetch_rates", fetch_rates).retry(retry))
            .task(TaskSpec::new("charge", charge).depends_on(["fetch_rates"]).retry(RetryPolicy::none()))
            .task(TaskSpec::new("notify_vip", say("notify_vip")).depends_on(["charge"]).trigger(
                TriggerRule::ContextValue { key: "tier".into(), condition: ValueCondition::Equals("vip".into()) },
            ))
            .task(
                TaskSpec::new("alert_on_failure", say("alert_on_failure"))
                    .depends_on(["charge"])
                    .trigger(TriggerRule::OneFailed),
            )
            .task(
                TaskSpec::new("audit", say("audit"))
                    .depends_on(["notify_vip", "alert_on_failure"])
                    .trigger(TriggerRule::AllDone),
            )
            .build()?;

    let dir = std::env::temp_dir().join(format!("cloacina-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}", dir.join("billing.db").display());
    let runner = DefaultRunner::builder().database_url(&url).workflow(workflow).build().await?;
    let mut input = Context::new();
    input.set("tier", "standard")?;
    let result = runner.execute("billing", input).await?;
    println!("\nexecution finished: {:?}", result.status);
    for t in &result.tasks {
        println!("  {:<17} {:?} attempts={} {}", t.task, t.state, t.attempts, t.error.as_deref().unwrap_or(""));
    }
    runner.shutdown().await?;
    std::fs::remove_dir_all(&dir)?;
    if !result.is_success() {
        return Err("the workflow did not complete".into());
    }
    Ok(())
}
