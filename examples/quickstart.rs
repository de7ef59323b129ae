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

use cloacina_runner::{Context, DefaultRunner, ExecutionFilter, TaskError, TaskSpec, Workflow, task_fn};

fn order_workflow() -> Result<Workflow, cloacina_runner::WorkflowError> {
    let load_orders = task_fn(|mut ctx: Context| async move {
        let customer: String = ctx.get_as("customer")?;
        ctx.insert("orders", vec![("widget", 3, 250), ("gadget", 1, 1200), ("gizmo", 5, 75)])?;
        println!("  load_orders: loaded 3 orders for {customer}");
        Ok::<_, TaskError>(ctx)
    });
    let price_orders = task_fn(|mut ctx: Context| async move {
        let orders: Vec<(String, u32, u32)> = ctx.get_as("orders")?;
        let total_cents: u32 = orders.iter().map(|(_, qty, cents)| qty * cents).sum();
        ctx.insert("total_cents", total_cents)?;
        println!("  price_orders: total {:.2}", f64::from(total_cents) / 100.0);
        Ok::<_, TaskError>(ctx)
    });
    let check_stock = task_fn(|mut ctx: Context| async move {
        let orders: Vec<(String, u32, u32)> = ctx.get_as("orders")?;
        let short: Vec<String> =
            orders.iter().filter(|(_, qty, _)| *qty > 4).map(|(item, _, _)| item.clone()).collect();
        println!("  check_stock: short on {short:?}");
        ctx.insert("short_items", short)?;
        Ok::<_, TaskError>(ctx)
    });
    let summarize = task_fn(|mut ctx: Context| async move {
        let total: u32 = ctx.get_as("total_cents")?;
        let short: Vec<String> = ctx.get_as("short_items")?;
        let summary = format!("{:.2} to invoice, {} item(s) to reorder", f64::from(total) / 100.0, short.len());
        println!("  summarize: {summary}");
        ctx.insert("summary", summary)?;
        Ok::<_, TaskError>(ctx)
    });
    Workflow::builder("orders")
        .task(TaskSpec::new("load_orders", load_orders))
        .task(TaskSpec::new("price_orders", price_orders).depends_on(["load_orders"]))
        .task(TaskSpec::new("check_stock", check_stock).depends_on(["load_orders"]))
        .task(TaskSpec::new("summarize", summarize).depends_on(["price_orders", "check_stock"]))
        .build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into())).init();
    let workflow = order_workflow()?;
    println!(
        "workflow `{}` (version {}), tasks in order: {:?}",
        workflow.name(),
        workflow.version(),
        workflow.topological_order()
    );

    let runner = DefaultRunner::builder().database_url("sqlite://quickstart.db").workflow(workflow).build().await?;

    let mut input = Context::new();
    input.insert("customer", "ACME Corp")?;
    println!("running...");
    let result = runner.execute("orders", input).await?;

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
