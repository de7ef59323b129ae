//! A crash and a recovery you can watch.
//!
//! The program starts itself a second time as a *worker* process that
//! submits 5 executions of a slow three-step workflow to a SQLite file and
//! starts running them. After a second the program kills the worker with
//! SIGKILL — mid-task, no shutdown — and starts a new runner on the same
//! file. The new runner finds the interrupted tasks, runs them again, and
//! finishes every execution. Nothing is lost; the tasks that were running
//! at the crash show one recovery.
//!
//! Run it with `cargo run --example recovery`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloacina_runner::{
    Context, DefaultRunner, ExecutionFilter, TaskError, TaskSpec, Workflow, WorkflowState, task_fn_with_run,
};

/// The same id in both processes: a runner restarted under its id takes its
/// old leases back at once instead of waiting for them to expire.
const RUNNER_ID: &str = "recovery-demo";

fn workflow() -> Result<Workflow, cloacina_runner::WorkflowError> {
    let step = |name: &'static str| {
        TaskSpec::new(
            name,
            task_fn_with_run(move |mut ctx: Context, run| async move {
                println!("  [pid {}] {name} of {} (attempt {})", std::process::id(), run.execution_id, run.attempt);
                tokio::time::sleep(Duration::from_millis(400)).await;
                ctx.set(name, format!("done by pid {}", std::process::id()))?;
                Ok::<_, TaskError>(ctx)
            }),
        )
    };
    Workflow::builder("slow_job")
        .task(step("fetch"))
        .task(step("process").depends_on(["fetch"]))
        .task(step("store").depends_on(["process"]))
        .build()
}

async fn worker(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let runner = DefaultRunner::builder()
        .database_url(url)
        .runner_id(RUNNER_ID)
        .max_concurrent_tasks(3)
        .workflow(workflow()?)
        .build()
        .await?;
    for i in 0..5 {
        let mut ctx = Context::new();
        ctx.set("job", i)?;
        runner.execute_async("slow_job", ctx).await?;
    }
    println!("submitted");
    // Run until killed.
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into())).init();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--worker") {
        return worker(&args[2]).await;
    }

    let dir = std::env::temp_dir().join(format!("cloacina-recovery-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}", dir.join("jobs.db").display());

    println!("starting a worker process...");
    let mut child = Command::new(std::env::current_exe()?).args(["--worker", &url]).stdout(Stdio::piped()).spawn()?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    for line in lines.by_ref() {
        let line = line?;
        println!("{line}");
        if line == "submitted" {
            break;
        }
    }
    let printer = std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            println!("{line}");
        }
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    child.kill()?; // SIGKILL: no shutdown, no cleanup
    child.wait()?;
    let _ = printer.join();
    println!("\n*** killed the worker (pid {}) in the middle of its tasks ***\n", child.id());

    let started = Instant::now();
    let runner = DefaultRunner::builder()
        .database_url(&url)
        .runner_id(RUNNER_ID)
        .max_concurrent_tasks(3)
        .workflow(workflow()?)
        .build()
        .await?;
    println!("a new runner started on the same file; recovery ran before build() returned\n");
    let executions = runner.list_executions(ExecutionFilter::default()).await?;
    let mut completed = 0;
    for e in &executions {
        let r = runner.handle(e.id).wait_timeout(Duration::from_secs(60)).await?;
        completed += usize::from(r.status == WorkflowState::Completed);
    }
    println!("\nresults after {:.1?}:", started.elapsed());
    for e in &executions {
        let r = runner.result(e.id).await?;
        let recovered: Vec<String> = r.tasks.iter().filter(|t| t.recoveries > 0).map(|t| t.task.clone()).collect();
        println!("  execution {} {:?}; recovered tasks: {recovered:?}", r.id, r.status);
    }
    println!("{completed} of {} executions completed", executions.len());
    runner.shutdown().await?;
    std::fs::remove_dir_all(&dir)?;
    if completed != executions.len() || executions.len() != 5 {
        return Err("not every execution completed".into());
    }
    Ok(())
}
