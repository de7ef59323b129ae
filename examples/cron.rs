//! Cron schedules and a trigger.
//!
//! * `heartbeat_report` runs every 2 seconds (a six-field expression, with
//!   seconds), in UTC;
//! * `nightly_cleanup` runs at 02:30 in Berlin — shown with its next tick;
//!   daylight-saving days run it once;
//! * a trigger polls an inbox directory and starts `import` for each file
//!   it finds; while a file's import is unfinished, the same file does not
//!   start a second one.
//!
//! The runner is stopped and started again half way: the schedules are
//! registered again at start-up, as an application does, which neither
//! duplicates them nor loses their progress.
//!
//! Run it with `cargo run --example cron` (uses a temporary SQLite file).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloacina_runner::{
    CatchUp, Context, CronSchedule, DefaultRunner, EventPoll, EventTrigger, EventTriggerSpec, ExecutionFilter,
    TaskError, TaskSpec, Workflow, task_fn,
};

/// Fires with the first file waiting in the inbox.
struct Inbox(PathBuf);

#[cloacina_runner::async_trait]
impl EventTrigger for Inbox {
    async fn poll(&self) -> Result<EventPoll, TaskError> {
        let mut files: Vec<String> = std::fs::read_dir(&self.0)
            .map_err(|e| TaskError::transient(format!("cannot read the inbox: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path().display().to_string()))
            .collect();
        files.sort();
        let Some(first) = files.into_iter().next() else { return Ok(EventPoll::Skip) };
        let mut ctx = Context::new();
        ctx.set("file", first)?;
        Ok(EventPoll::Fire(ctx))
    }
}

/// The file name of a path.
fn file_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_owned()
}

fn workflows() -> Result<Vec<Workflow>, Box<dyn std::error::Error>> {
    let report = task_fn(|mut ctx: Context| async move {
        let n: u64 = ctx.get_as("lines").unwrap_or(0);
        ctx.set("lines", n + 1)?;
        Ok::<_, TaskError>(ctx)
    });
    let cleanup = task_fn(|ctx: Context| async move { Ok::<_, TaskError>(ctx) });
    let import = task_fn(|mut ctx: Context| async move {
        let file: String = ctx.get_as("file")?;
        // Slow enough that the trigger sees the file again meanwhile.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let name = file_name(&file);
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            // A poll that saw the file just before an earlier import
            // removed it: nothing left to do.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("  already imported {name}");
                return Ok(ctx);
            }
            Err(e) => return Err(TaskError::permanent(format!("{file}: {e}"))),
        };
        std::fs::remove_file(&file).map_err(|e| TaskError::transient(format!("{file}: {e}")))?;
        println!("  imported {name} ({} rows)", text.lines().count());
        ctx.set("rows", text.lines().count())?;
        Ok(ctx)
    });
    Ok(vec![
        Workflow::builder("heartbeat_report").task(TaskSpec::new("report", report)).build()?,
        Workflow::builder("nightly_cleanup").task(TaskSpec::new("cleanup", cleanup)).build()?,
        Workflow::builder("import").task(TaskSpec::new("import", import)).build()?,
    ])
}

async fn start(url: &str, inbox: &std::path::Path) -> Result<DefaultRunner, Box<dyn std::error::Error>> {
    let mut builder = DefaultRunner::builder().database_url(url).schedule_poll_interval(Duration::from_millis(200));
    for wf in workflows()? {
        builder = builder.workflow(wf);
    }
    let runner = builder.build().await?;
    runner.register_cron(CronSchedule::new("heartbeat_report", "heartbeat_report", "*/2 * * * * *")?).await?;
    runner
        .register_cron(
            CronSchedule::new("nightly_cleanup", "nightly_cleanup", "30 2 * * *")?
                .timezone("Europe/Berlin")?
                .catch_up(CatchUp::Skip)?,
        )
        .await?;
    runner.register_trigger(
        EventTriggerSpec::new("inbox", "import", Arc::new(Inbox(inbox.to_path_buf())))?
            .poll_interval(Duration::from_millis(50))?,
    )?;
    Ok(runner)
}

/// How long the example waits for anything before it gives up.
const PATIENCE: Duration = Duration::from_secs(60);

/// Waits until the inbox is empty and every import the trigger started has
/// finished.
async fn wait_for_imports(runner: &DefaultRunner, inbox: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if Instant::now() > deadline {
            return Err("the inbox was not imported in time".into());
        }
        if std::fs::read_dir(inbox)?.next().is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let imports = runner.list_executions(ExecutionFilter { limit: Some(1000), ..Default::default() }).await?;
        let unfinished: Vec<_> =
            imports.iter().filter(|e| e.origin == "trigger:inbox" && !e.state.is_terminal()).collect();
        if unfinished.is_empty() {
            return Ok(());
        }
        for e in unfinished {
            runner.handle(e.id).wait_timeout(deadline.saturating_duration_since(Instant::now())).await?;
        }
    }
}

/// Waits until `heartbeat_report` has run for `ticks` ticks in all.
async fn wait_for_reports(runner: &DefaultRunner, ticks: usize) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let all = runner.list_executions(ExecutionFilter { limit: Some(1000), ..Default::default() }).await?;
        if all.iter().filter(|e| e.origin.starts_with("cron:heartbeat_report@")).count() >= ticks {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("heartbeat_report did not run {ticks} times in time").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into())).init();
    let dir = std::env::temp_dir().join(format!("cloacina-cron-{}", std::process::id()));
    let inbox = dir.join("inbox");
    std::fs::create_dir_all(&inbox)?;
    let url = format!("sqlite://{}", dir.join("cron.db").display());

    let runner = start(&url, &inbox).await?;
    std::fs::write(inbox.join("orders-1.csv"), "id,amount\n1,10\n2,20\n")?;
    wait_for_imports(&runner, &inbox).await?;
    wait_for_reports(&runner, 2).await?;
    runner.shutdown().await?;
    println!("runner stopped; starting it again");

    let runner = start(&url, &inbox).await?;
    std::fs::write(inbox.join("orders-2.csv"), "id,amount\n3,30\n")?;
    wait_for_imports(&runner, &inbox).await?;
    // Two more ticks after the restart.
    wait_for_reports(&runner, 4).await?;

    let schedules = runner.list_schedules().await?;
    println!("schedules: {}", schedules.len());
    for s in &schedules {
        let next = s.next_tick.map(cloacina_runner::core::schedule::rfc3339).unwrap_or_else(|| "never".into());
        println!(
            "  {:<17} {:<16} {:<14} next tick {next}",
            s.schedule.name(),
            s.schedule.expression(),
            s.schedule.timezone_name()
        );
    }
    let all = runner.list_executions(ExecutionFilter { limit: Some(1000), ..Default::default() }).await?;
    let mut by_cron: Vec<&str> =
        all.iter().filter(|e| e.origin.starts_with("cron:")).map(|e| e.origin.as_str()).collect();
    by_cron.sort();
    let mut ticks = by_cron.clone();
    ticks.dedup();
    println!("cron executions: {} (distinct ticks: {})", by_cron.len(), ticks.len());
    for o in &by_cron {
        println!("  {o}");
    }
    let imports: Vec<_> = all.iter().filter(|e| e.origin == "trigger:inbox").collect();
    println!("imports started by the trigger: {}", imports.len());
    let mut files: Vec<String> =
        imports.iter().filter_map(|e| e.input.get_as::<String>("file").ok()).map(|f| file_name(&f)).collect();
    files.sort();
    let mut distinct = files.clone();
    distinct.dedup();
    for f in &distinct {
        println!("  {f}: {}", files.iter().filter(|g| *g == f).count());
    }
    runner.shutdown().await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
