//! Multi-tenancy on PostgreSQL: a legacy single-tenant runner on `public`
//! beside two tenant runners (schemas `tenant_acme` and `tenant_globex`),
//! all in one database. Each runs the same workflow name and sees only its
//! own executions.
//!
//! Needs a PostgreSQL URL in `CLOACINA_EXAMPLE_DATABASE_URL`, e.g.
//! `CLOACINA_EXAMPLE_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run --example multi_tenant`
//! (`cargo xtask pg` starts a throwaway server and prints a URL).

use cloacina_runner::{Context, DefaultRunner, ExecutionFilter, TaskError, TaskSpec, Workflow, task_fn};

fn workflow() -> Result<Workflow, cloacina_runner::WorkflowError> {
    Workflow::builder("daily_report")
        .task(TaskSpec::new(
            "build",
            task_fn(|mut ctx: Context| async move {
                let who: String = ctx.get_as("tenant")?;
                ctx.set("report", format!("report for {who}"))?;
                Ok::<_, TaskError>(ctx)
            }),
        ))
        .build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into())).init();
    let Ok(url) = std::env::var("CLOACINA_EXAMPLE_DATABASE_URL") else {
        eprintln!(
            "multi_tenant needs PostgreSQL: set CLOACINA_EXAMPLE_DATABASE_URL=postgres://user:password@host:port/database\n\
             (for a throwaway server: `cargo xtask pg`, then use the URL it prints)"
        );
        std::process::exit(2);
    };
    let legacy = DefaultRunner::new(&url).await?;
    let acme = DefaultRunner::with_tenant(&url, "tenant_acme").await?;
    let globex =
        DefaultRunner::builder().database_url(&url).tenant("tenant_globex").max_concurrent_tasks(4).build().await?;
    for (name, runner) in [("public", &legacy), ("tenant_acme", &acme), ("tenant_globex", &globex)] {
        runner.register_workflow(workflow()?)?;
        let mut input = Context::new();
        input.set("tenant", name)?;
        let r = runner.execute("daily_report", input).await?;
        println!("{name:<14} ran execution {} -> {:?}: {}", r.id, r.status, r.context.get_as::<String>("report")?);
    }
    for (name, runner) in [("public", &legacy), ("tenant_acme", &acme), ("tenant_globex", &globex)] {
        let seen = runner.list_executions(ExecutionFilter { limit: Some(10_000), ..Default::default() }).await?;
        let reports: Vec<String> =
            seen.iter().map(|e| e.input.get_as::<String>("tenant").unwrap_or_default()).collect();
        let foreign = reports.iter().filter(|r| r.as_str() != name).count();
        println!("{name:<14} sees {} execution(s), {foreign} of another tenant", seen.len());
        if foreign > 0 {
            return Err(format!("tenant {name} saw another tenant's executions").into());
        }
    }
    for r in [legacy, acme, globex] {
        r.shutdown().await?;
    }
    Ok(())
}
