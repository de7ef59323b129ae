//! A rolling deploy, on one SQLite file (`deploy.db` in a temp directory).
//!
//! 1. **New behaviour, same shape.** A "v1" runner takes six orders; while
//!    they run, a "v2" runner starts with a changed `transform` body and
//!    retry policy, and v1 shuts down. v2 finishes every order, v1's
//!    included: the shape (task ids and dependencies) did not change.
//! 2. **New shape.** v3 splits `transform` into `clean` → `enrich`. Orders
//!    left unfinished by v2 are *stranded* once no runner has v2: v3 lists
//!    them, refuses a mapping that would lose a completed output, and
//!    migrates them with `transform` → `clean`.
//!
//! `cargo run --example deploy`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cloacina_runner::{
    Context, DefaultRunner, ExecutionFilter, RetryPolicy, StorageError, TaskError, TaskMapping, TaskSpec, TaskState,
    Workflow, WorkflowState, task_fn,
};

/// A step that appends `tag` to the order's trail; while `hold` is set it
/// does not finish (a long job that a deploy interrupts).
fn step(id: &'static str, tag: &'static str, hold: Arc<AtomicBool>) -> TaskSpec {
    TaskSpec::new(
        id,
        task_fn(move |mut ctx: Context| {
            let hold = hold.clone();
            async move {
                while hold.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let mut trail: Vec<String> = ctx.get_as("trail").unwrap_or_default();
                trail.push(format!("{id}:{tag}"));
                ctx.set("trail", trail)?;
                Ok::<_, TaskError>(ctx)
            }
        }),
    )
}

fn v1_or_v2(tag: &'static str, hold: Arc<AtomicBool>) -> Result<Workflow, cloacina_runner::WorkflowError> {
    let free = Arc::new(AtomicBool::new(false));
    Workflow::builder("orders")
        .version(tag)
        .task(step("extract", tag, free.clone()))
        .task(step("transform", tag, hold).depends_on(["extract"]).retry(RetryPolicy::none()))
        .task(step("load", tag, free).depends_on(["transform"]))
        .build()
}

fn v3() -> Result<Workflow, cloacina_runner::WorkflowError> {
    let free = Arc::new(AtomicBool::new(false));
    Workflow::builder("orders")
        .version("v3")
        .task(step("extract", "v3", free.clone()))
        .task(step("clean", "v3", free.clone()).depends_on(["extract"]))
        .task(step("enrich", "v3", free.clone()).depends_on(["clean"]))
        .task(step("load", "v3", free).depends_on(["enrich"]))
        .build()
}

async fn runner(url: &str, wf: Workflow) -> cloacina_runner::Result<DefaultRunner> {
    DefaultRunner::builder()
        .database_url(url)
        .workflow(wf)
        .shutdown_grace_period(Duration::from_millis(200))
        .build()
        .await
}

/// Waits until every unfinished order has its `transform` running.
async fn until_held(r: &DefaultRunner, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let filter = ExecutionFilter { states: vec![WorkflowState::Running], ..Default::default() };
    for _ in 0..1000 {
        let mut held = 0;
        for e in r.list_executions(filter.clone()).await? {
            let tasks = r.result(e.id).await?.tasks;
            held += usize::from(tasks.iter().any(|t| t.task == "transform" && t.state == TaskState::Running));
        }
        if held == n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("orders never reached transform".into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into())).init();
    let dir = std::env::temp_dir().join(format!("cloacina-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}", dir.join("deploy.db").display());

    // 1. Same shape, new behaviour.
    let hold_v1 = Arc::new(AtomicBool::new(true));
    let v1 = runner(&url, v1_or_v2("v1", hold_v1.clone())?).await?;
    let mut ids = Vec::new();
    for i in 0..6 {
        let mut input = Context::new();
        input.set("order", i)?;
        ids.push(v1.execute_async("orders", input).await?.id());
    }
    until_held(&v1, 6).await?;
    let v2 = runner(&url, v1_or_v2("v2", Arc::new(AtomicBool::new(false)))?).await?;
    println!(
        "v1 and v2 share the shape: {}",
        v1.workflow_versions("orders")[0].version() == v2.workflow_versions("orders")[0].version()
    );
    v1.shutdown().await?; // its held tasks are released at once, and v2 takes them
    let (mut completed, mut by_v2) = (0, 0);
    for id in &ids {
        let done = v2.handle(*id).wait_timeout(Duration::from_secs(30)).await?;
        completed += usize::from(done.is_success());
        let trail: Vec<String> = done.context.get_as("trail")?;
        by_v2 += usize::from(trail.contains(&"transform:v2".to_owned()));
    }
    println!("step 1: {completed} of 6 orders completed, {by_v2} transformed by v2");

    // 2. New shape: v2's unfinished orders are stranded once v2 is gone.
    v2.shutdown().await?;
    let hold_v2 = Arc::new(AtomicBool::new(true));
    let v2 = runner(&url, v1_or_v2("v2", hold_v2)?).await?;
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut input = Context::new();
        input.set("order", 100 + i)?;
        ids.push(v2.execute_async("orders", input).await?.id());
    }
    until_held(&v2, 3).await?;
    v2.shutdown().await?;
    let v3 = runner(&url, v3()?).await?;
    for s in v3.stranded_executions().await? {
        println!("stranded: {} executions of {} {}", s.executions, s.workflow.name, s.label.unwrap_or_default());
    }
    let bad = TaskMapping::new().task("transform", "clean").drop("extract");
    match v3.migrate_executions("orders", "v2", "v3", &bad).await {
        Err(cloacina_runner::RunnerError::Storage(StorageError::MigrationRefused(why))) => println!("refused: {why}"),
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    let report = v3.migrate_executions("orders", "v2", "v3", &TaskMapping::new().task("transform", "clean")).await?;
    println!("migrated {} executions to v3", report.migrated.len());
    for id in &ids {
        let done = v3.handle(*id).wait_timeout(Duration::from_secs(30)).await?;
        let trail: Vec<String> = done.context.get_as("trail")?;
        println!("order {:?}: {} {}", done.context.get("order"), done.status, trail.join(" "));
    }
    println!("stranded now: {}", v3.stranded_executions().await?.len());
    v3.shutdown().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
