//! A four-task workflow with fan-out and fan-in, run durably on a local
//! SQLite file (`quickstart.db` in the current directory).
//!
//! ```text
//!              ┌─► price_orders ─┐
//! load_orders ─┤                 ├─► summarize
//!              └─► check_stock ──┘
//! ```
//!
//! Run it with `cargo run --example quickstart`; run it again and the
//! file keeps every earlier execution.

use cloacina_runner::{Context, DefaultRunner, ExecutionFilter, Key, TaskError, workflow};

/// One order line: item, quantity, unit price in cents.
type Order = (String, u32, u32);

// Typed keys: a task that writes one type and a task that reads another
// under the same key do not compile.
const CUSTOMER: Key<String> = Key::new("customer");
const ORDERS: Key<Vec<Order>> = Key::new("orders");
const TOTAL_CENTS: Key<u32> = Key::new("total_cents");
const SHORT_ITEMS: Key<Vec<String>> = Key::new("short_items");
const SUMMARY: Key<String> = Key::new("summary");

// The DAG below is checked when this file compiles: a misspelt dependency
// or a cycle is a compile error on the token at fault.
#[workflow(name = "orders")]
mod orders {
    use super::*;

    #[task]
    async fn load_orders(ctx: &mut Context) -> Result<(), TaskError> {
        let customer = ctx.get(CUSTOMER)?;
        let orders = [("widget", 3, 250), ("gadget", 1, 1200), ("gizmo", 5, 75)];
        ctx.set(ORDERS, orders.map(|(item, qty, cents)| (item.to_owned(), qty, cents)).to_vec())?;
        println!("  load_orders: loaded 3 orders for {customer}");
        Ok(())
    }

    #[task(depends_on = [load_orders])]
    async fn price_orders(ctx: &mut Context) -> Result<(), TaskError> {
        let total_cents = ctx.get(ORDERS)?.iter().map(|(_, qty, cents)| qty * cents).sum();
        ctx.set(TOTAL_CENTS, total_cents)?;
        println!("  price_orders: total {:.2}", f64::from(total_cents) / 100.0);
        Ok(())
    }

    #[task(depends_on = [load_orders])]
    async fn check_stock(ctx: &mut Context) -> Result<(), TaskError> {
        let short: Vec<String> = ctx.get(ORDERS)?.into_iter().filter(|(_, qty, _)| *qty > 4).map(|o| o.0).collect();
        println!("  check_stock: short on {short:?}");
        ctx.set(SHORT_ITEMS, short)?;
        Ok(())
    }

    #[task(depends_on = [price_orders, check_stock])]
    async fn summarize(ctx: &mut Context) -> Result<(), TaskError> {
        let (total, short) = (ctx.get(TOTAL_CENTS)?, ctx.get(SHORT_ITEMS)?);
        let summary = format!("{:.2} to invoice, {} item(s) to reorder", f64::from(total) / 100.0, short.len());
        println!("  summarize: {summary}");
        ctx.set(SUMMARY, summary)?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into())).init();
    let workflow = orders::workflow();
    println!(
        "workflow `{}` (version {}), tasks in order: {:?}",
        workflow.name(),
        workflow.version(),
        workflow.topological_order()
    );

    let runner = DefaultRunner::builder().database_url("sqlite://quickstart.db").workflow(workflow).build().await?;

    let mut input = Context::new();
    input.set(CUSTOMER, "ACME Corp".to_owned())?;
    println!("running...");
    let result = runner.execute(orders::WORKFLOW_NAME, input).await?;

    println!("\nexecution {} finished: {:?}", result.id, result.status);
    for t in &result.tasks {
        println!("  {:<13} {:?} (attempt {})", t.task, t.state, t.attempts);
    }
    println!("final context:");
    for (key, value) in result.context.iter() {
        println!("  {key} = {value}");
    }
    let stored = runner.list_executions(ExecutionFilter { limit: Some(1000), ..Default::default() }).await?;
    println!("\n{} execution(s) stored in quickstart.db so far", stored.len());
    runner.shutdown().await?;
    if !result.is_success() {
        return Err(format!("the workflow did not complete: {:?}", result.error).into());
    }
    Ok(())
}
