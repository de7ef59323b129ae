//! The crash harness's shared parts: the workflow its runner programs run
//! (task bodies record each run in a journal file, outside the runner's
//! tables), and reading that journal back.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cloacina_runner::{Context, RetryPolicy, TaskError, TaskSpec, Workflow, task_fn_with_run};
use rand::RngExt;

/// Which workflow shape to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `a -> {b, c} -> d`.
    Diamond,
    /// One task.
    Single,
}

impl std::str::FromStr for Shape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "diamond" => Ok(Shape::Diamond),
            "single" => Ok(Shape::Single),
            o => Err(format!("unknown shape {o}; expected diamond or single")),
        }
    }
}

/// Appends one line per task-body run: `<execution> <task> <attempt> <pid>`.
fn record(journal: &Path, execution: &str, task: &str, attempt: u32) -> std::io::Result<()> {
    let line = format!("{execution} {task} {attempt} {}\n", std::process::id());
    // One write of a short line with O_APPEND: lines never interleave.
    std::fs::OpenOptions::new().create(true).append(true).open(journal)?.write_all(line.as_bytes())
}

fn body(name: &'static str, journal: PathBuf, work: (u64, u64)) -> TaskSpec {
    TaskSpec::new(
        name,
        task_fn_with_run(move |mut ctx: Context, run| {
            let journal = journal.clone();
            async move {
                record(&journal, &run.execution_id.to_string(), name, run.attempt)
                    .map_err(|e| TaskError::fatal(format!("journal: {e}")))?;
                let ms = if work.1 > work.0 { rand::rng().random_range(work.0..=work.1) } else { work.0 };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ctx.set(name, ms)?;
                Ok(ctx)
            }
        }),
    )
    .retry(RetryPolicy::none())
}

/// The harness workflow, named after its shape. Bodies journal each run,
/// then work for a random time in `work_ms`.
pub fn workflow(shape: Shape, journal: &Path, work_ms: (u64, u64)) -> Workflow {
    let j = journal.to_path_buf();
    let b = match shape {
        Shape::Diamond => Workflow::builder("harness_diamond")
            .task(body("a", j.clone(), work_ms))
            .task(body("b", j.clone(), work_ms).depends_on(["a"]))
            .task(body("c", j.clone(), work_ms).depends_on(["a"]))
            .task(body("d", j, work_ms).depends_on(["b", "c"])),
        Shape::Single => Workflow::builder("harness_single").task(body("only", j, work_ms)),
    };
    b.build().expect("the harness workflows are valid")
}

/// Runs per (execution id, task), and per process id.
#[derive(Debug, Default)]
pub struct Journal {
    /// Runs of each task of each execution.
    pub runs: HashMap<(String, String), usize>,
    /// Runs per process.
    pub by_pid: HashMap<u32, usize>,
}

/// Reads a journal (an absent file is an empty journal).
pub fn read_journal(path: &Path) -> Journal {
    let mut j = Journal::default();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        if let [exec, task, _attempt, pid] = parts[..] {
            *j.runs.entry((exec.to_owned(), task.to_owned())).or_default() += 1;
            *j.by_pid.entry(pid.parse().unwrap_or(0)).or_default() += 1;
        }
    }
    j
}
