//! A runner program for crash tests. It opens a tenant, optionally
//! submits executions, serves until none is left unfinished, and reports
//! progress on stdout, one line each:
//!
//! `OPENED created=<bool> migrations=<n>`, `READY <runner id>`,
//! `SUBMITTED <n>`, `DONE` (every execution finished), `STOPPED` (after a
//! SIGTERM and a graceful shutdown).
//!
//! Every runner serves every harness workflow of its release (`--release`,
//! default `base`: every shape; the deploy releases `v1`, `v1-tuned`, `v2`
//! and `v1+v2` serve the DAG shapes, see [`Release`]); `--shape` says which
//! ones it submits (`mixed`: diamond, fan-in and pipeline in turn), at the
//! release's current version.
//!
//! Arguments: `--url U [--tenant T] --journal PATH [--release R] [--shape diamond|single|fanin|pipeline|mixed]
//! [--submit N] [--runner-id ID] [--lease-ttl-ms MS] [--heartbeat-ms MS]
//! [--recovery-ms MS] [--concurrency N] [--work-ms MIN,MAX] [--grace-ms MS]
//! [--no-exit]`

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use cloacina_harness::{Release, Shape};
use cloacina_runner::{Context, DefaultRunner, ExecutionFilter, WorkflowState};

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn arg<T: std::str::FromStr>(args: &HashMap<String, String>, key: &str, default: T) -> T {
    args.get(key).and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut args = HashMap::new();
    let mut flags = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        let key = raw[i].trim_start_matches("--").to_owned();
        match raw.get(i + 1) {
            Some(v) if !v.starts_with("--") => {
                args.insert(key, v.clone());
                i += 2;
            }
            _ => {
                flags.push(key);
                i += 1;
            }
        }
    }
    let url = args.get("url").ok_or("--url is required")?.clone();
    let journal = PathBuf::from(args.get("journal").ok_or("--journal is required")?);
    let shape: Shape = args.get("shape").map(String::as_str).unwrap_or("diamond").parse()?;
    let release: Release = args.get("release").map(String::as_str).unwrap_or("base").parse()?;
    let (lo, hi) = args
        .get("work-ms")
        .and_then(|v| v.split_once(','))
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .unwrap_or((10, 60));
    let mut b = DefaultRunner::builder()
        .database_url(&url)
        .lease_ttl(Duration::from_millis(arg(&args, "lease-ttl-ms", 10_000)))
        .heartbeat_interval(Duration::from_millis(arg(&args, "heartbeat-ms", 2_000)))
        .recovery_interval(Duration::from_millis(arg(&args, "recovery-ms", 1_000)))
        .max_concurrent_tasks(arg(&args, "concurrency", 8))
        .shutdown_grace_period(Duration::from_millis(arg(&args, "grace-ms", 30_000)))
        .fallback_poll_interval(Duration::from_millis(50));
    for wf in release.workflows(&journal, (lo, hi)) {
        b = b.workflow(wf);
    }
    if let Some(t) = args.get("tenant") {
        b = b.tenant(t);
    }
    if let Some(id) = args.get("runner-id") {
        b = b.runner_id(id);
    }
    let runner = b.build().await?;
    let report = runner.storage_report();
    say(&format!("OPENED created={} migrations={}", report.created, report.migrations_applied.len()));
    say(&format!("READY {}", runner.runner_id()));

    let names: Vec<String> = shape
        .submitted()
        .into_iter()
        .map(|s| cloacina_harness::workflow(s, &journal, (lo, hi)).name().to_owned())
        .collect();
    let to_submit: usize = arg(&args, "submit", 0);
    for i in 0..to_submit {
        let mut ctx = Context::new();
        ctx.set("i", i)?;
        runner.execute_async(&names[i % names.len()], ctx).await?;
    }
    if to_submit > 0 {
        say(&format!("SUBMITTED {to_submit}"));
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let unfinished = ExecutionFilter {
        states: vec![WorkflowState::Pending, WorkflowState::Running, WorkflowState::Paused],
        limit: Some(1),
        ..Default::default()
    };
    let exit_when_done = !flags.iter().any(|f| f == "no-exit");
    loop {
        tokio::select! {
            _ = term.recv() => {
                runner.shutdown().await?;
                say("STOPPED");
                return Ok(());
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        if exit_when_done && runner.list_executions(unfinished.clone()).await?.is_empty() {
            say("DONE");
            runner.shutdown().await?;
            return Ok(());
        }
    }
}
