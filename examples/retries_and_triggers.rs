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

use std::sync::atomic::{AtomicU32, Ordering};

use cloacina_runner::{Context, DefaultRunner, Key, TaskError, workflow};

/// What the tasks share: here a call counter; in an application, a
/// database pool or an HTTP client.
pub struct RateService {
    calls: AtomicU32,
}

const EUR_PER_USD: Key<f64> = Key::new("eur_per_usd");
const CHARGED_EUR: Key<f64> = Key::new("charged_eur");

#[workflow]
mod billing {
    use super::*;

    /// 5 attempts in all, transient errors only, 200 ms then 400 ms apart.
    #[task(retry = "total_attempts=5; backoff=exponential(200ms, 2); max_delay=5s; jitter=0; retry_on=transient")]
    async fn fetch_rates(ctx: &mut Context, rates: &RateService) -> Result<(), TaskError> {
        let n = rates.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n < 3 {
            println!("  fetch_rates: attempt {n} fails (rate service unavailable)");
            return Err(TaskError::transient("rate service unavailable"));
        }
        println!("  fetch_rates: attempt {n} succeeds");
        ctx.set(EUR_PER_USD, 0.92)?;
        Ok(())
    }

    #[task(depends_on = [fetch_rates], retry = none)]
    async fn charge(ctx: &mut Context) -> Result<(), TaskError> {
        let rate = ctx.get(EUR_PER_USD)?;
        ctx.set(CHARGED_EUR, (100.0 * rate * 100.0).round() / 100.0)?;
        println!("  charge: charged 100 USD");
        Ok(())
    }

    #[task(depends_on = [charge], trigger = context_value(tier, equals "vip"))]
    async fn notify_vip(_ctx: &mut Context) -> Result<(), TaskError> {
        println!("  notify_vip: ran");
        Ok(())
    }

    #[task(depends_on = [charge], trigger = one_failed)]
    async fn alert_on_failure(_ctx: &mut Context) -> Result<(), TaskError> {
        println!("  alert_on_failure: ran");
        Ok(())
    }

    #[task(depends_on = [notify_vip, alert_on_failure], trigger = all_done)]
    async fn audit(_ctx: &mut Context) -> Result<(), TaskError> {
        println!("  audit: ran");
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into())).init();
    let workflow = billing::workflow(RateService { calls: AtomicU32::new(0) });

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
