//! The crash harness's shared parts: the workflows its runner programs run
//! (task bodies record each run in a journal file, outside the runner's
//! tables), and reading that journal back.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cloacina_runner::{Context, RetryPolicy, TaskError, TaskSpec, Workflow, task_fn_with_run};
use rand::RngExt;

/// Width of the fan-out / fan-in shape.
pub const FAN_WIDTH: usize = 8;

/// Which workflow shape to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `a -> {b, c} -> d`.
    Diamond,
    /// One task.
    Single,
    /// `a -> {b0 .. b7} -> d`: a fan-out of [`FAN_WIDTH`] branches of uneven
    /// durations (branch `i` works about `i + 1` times as long as branch 0)
    /// joined by one task.
    FanIn,
    /// `a -> b -> c`: a three-level pipeline.
    Pipeline,
    /// Executions of [`Shape::DAGS`] in turn (every runner serves all three).
    Mixed,
}

impl Shape {
    /// The DAG shapes a [`Shape::Mixed`] run submits, in turn.
    pub const DAGS: [Shape; 3] = [Shape::Diamond, Shape::FanIn, Shape::Pipeline];

    /// The shapes whose executions a run of `self` submits.
    pub fn submitted(self) -> Vec<Shape> {
        match self {
            Shape::Mixed => Self::DAGS.to_vec(),
            s => vec![s],
        }
    }

    /// Task ids that join several dependencies (their bodies must run
    /// exactly once per execution when nothing crashes).
    pub fn joins(self) -> &'static [&'static str] {
        match self {
            Shape::Diamond | Shape::FanIn => &["d"],
            _ => &[],
        }
    }
}

impl std::str::FromStr for Shape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "diamond" => Ok(Shape::Diamond),
            "single" => Ok(Shape::Single),
            "fanin" => Ok(Shape::FanIn),
            "pipeline" => Ok(Shape::Pipeline),
            "mixed" => Ok(Shape::Mixed),
            o => Err(format!("unknown shape {o}; expected diamond, single, fanin, pipeline or mixed")),
        }
    }
}

/// Appends one line per task-body run: `<execution> <task> <attempt> <pid>`.
fn record(journal: &Path, execution: &str, task: &str, attempt: u32) -> std::io::Result<()> {
    let line = format!("{execution} {task} {attempt} {}\n", std::process::id());
    // One write of a short line with O_APPEND: lines never interleave.
    std::fs::OpenOptions::new().create(true).append(true).open(journal)?.write_all(line.as_bytes())
}

/// A body that journals its run, then works for a random time in `work`
/// (milliseconds) multiplied by `weight`.
fn body(name: String, journal: PathBuf, work: (u64, u64), weight: u64) -> TaskSpec {
    let key = name.clone();
    TaskSpec::new(
        name,
        task_fn_with_run(move |mut ctx: Context, run| {
            let journal = journal.clone();
            let key = key.clone();
            async move {
                record(&journal, &run.execution_id.to_string(), &key, run.attempt)
                    .map_err(|e| TaskError::fatal(format!("journal: {e}")))?;
                let ms = if work.1 > work.0 { rand::rng().random_range(work.0..=work.1) } else { work.0 };
                tokio::time::sleep(Duration::from_millis(ms * weight)).await;
                ctx.set(key, ms)?;
                Ok(ctx)
            }
        }),
    )
    .retry(RetryPolicy::none())
}

/// The harness workflow of one shape (not [`Shape::Mixed`], which is
/// several), named after it. Bodies journal each run, then work for a
/// random time in `work_ms`.
pub fn workflow(shape: Shape, journal: &Path, work_ms: (u64, u64)) -> Workflow {
    let j = journal.to_path_buf();
    let t = |name: &str, weight: u64| body(name.to_owned(), j.clone(), work_ms, weight);
    let b = match shape {
        Shape::Diamond => Workflow::builder("harness_diamond")
            .task(t("a", 1))
            .task(t("b", 1).depends_on(["a"]))
            .task(t("c", 1).depends_on(["a"]))
            .task(t("d", 1).depends_on(["b", "c"])),
        Shape::Single => Workflow::builder("harness_single").task(t("only", 1)),
        Shape::FanIn => {
            let branches: Vec<String> = (0..FAN_WIDTH).map(|i| format!("b{i}")).collect();
            let mut b = Workflow::builder("harness_fanin").task(t("a", 1));
            for (i, name) in branches.iter().enumerate() {
                b = b.task(t(name, i as u64 + 1).depends_on(["a"]));
            }
            b.task(t("d", 1).depends_on(branches))
        }
        Shape::Pipeline => Workflow::builder("harness_pipeline")
            .task(t("a", 1))
            .task(t("b", 1).depends_on(["a"]))
            .task(t("c", 1).depends_on(["b"])),
        Shape::Mixed => panic!("Shape::Mixed is several workflows: use `workflows`"),
    };
    b.build().expect("the harness workflows are valid")
}

/// Every harness workflow (all shapes), for runners that serve any of them.
pub fn workflows(journal: &Path, work_ms: (u64, u64)) -> Vec<Workflow> {
    [Shape::Single, Shape::Diamond, Shape::FanIn, Shape::Pipeline]
        .into_iter()
        .map(|s| workflow(s, journal, work_ms))
        .collect()
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
