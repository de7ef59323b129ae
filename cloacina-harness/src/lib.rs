//! The crash harness's shared parts: the workflows its runner programs run
//! (task bodies record each run in a journal file, outside the runner's
//! tables), and reading that journal back.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cloacina_runner::{Backoff, Context, RetryPolicy, TaskError, TaskSpec, Workflow, task_fn_with_run};
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

/// How a release's bodies and policies behave (see [`Release`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Behaviour {
    /// Attempts up to this one fail (transiently) on flaky tasks.
    flaky_failures: u32,
    /// The retry policy: total attempts and fixed delay (ms); `None`: no
    /// retries.
    retry: Option<(u32, u64)>,
    /// The per-attempt timeout.
    timeout: Option<Duration>,
}

impl Behaviour {
    const STEADY: Behaviour = Behaviour { flaky_failures: 0, retry: None, timeout: None };
}

/// Whether task `task` of execution `execution` is flaky in the deploy
/// releases: about one task in four, the same in every process.
pub fn flaky(execution: &str, task: &str) -> bool {
    // FNV-1a: stable across processes and builds.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in execution.bytes().chain([b' ']).chain(task.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h.is_multiple_of(4)
}

/// A body that journals its run, then fails if the behaviour says this
/// attempt of a flaky task does, else works for a random time in `work`
/// (milliseconds) multiplied by `weight`.
fn body(name: String, journal: PathBuf, work: (u64, u64), weight: u64, how: Behaviour) -> TaskSpec {
    let key = name.clone();
    let spec = TaskSpec::new(
        name,
        task_fn_with_run(move |mut ctx: Context, run| {
            let journal = journal.clone();
            let key = key.clone();
            async move {
                let execution = run.execution_id.to_string();
                record(&journal, &execution, &key, run.attempt)
                    .map_err(|e| TaskError::fatal(format!("journal: {e}")))?;
                if run.attempt <= how.flaky_failures && flaky(&execution, &key) {
                    return Err(TaskError::transient(format!("flaky {key}, attempt {}", run.attempt)));
                }
                let ms = if work.1 > work.0 { rand::rng().random_range(work.0..=work.1) } else { work.0 };
                tokio::time::sleep(Duration::from_millis(ms * weight)).await;
                ctx.set(key, ms)?;
                Ok(ctx)
            }
        }),
    );
    let spec = match how.retry {
        None => spec.retry(RetryPolicy::none()),
        Some((attempts, delay_ms)) => spec.retry(
            RetryPolicy::builder()
                .total_attempts(attempts)
                .backoff(Backoff::Fixed(Duration::from_millis(delay_ms)))
                .jitter(0.0)
                .build()
                .expect("the harness retry policies are valid"),
        ),
    };
    match how.timeout {
        Some(t) => spec.timeout(t),
        None => spec,
    }
}

/// The harness workflow of one shape (not [`Shape::Mixed`], which is
/// several), named after it. Bodies journal each run, then work for a
/// random time in `work_ms`.
pub fn workflow(shape: Shape, journal: &Path, work_ms: (u64, u64)) -> Workflow {
    build(shape, journal, work_ms, Behaviour::STEADY, None, false)
}

/// `shape`'s workflow with bodies and policies of `how`, labelled `label`;
/// `tail` appends a task `z` after the last one (a changed shape).
fn build(
    shape: Shape,
    journal: &Path,
    work_ms: (u64, u64),
    how: Behaviour,
    label: Option<&str>,
    tail: bool,
) -> Workflow {
    let j = journal.to_path_buf();
    let t = |name: &str, weight: u64| body(name.to_owned(), j.clone(), work_ms, weight, how);
    let (mut b, last) = match shape {
        Shape::Diamond => (
            Workflow::builder("harness_diamond")
                .task(t("a", 1))
                .task(t("b", 1).depends_on(["a"]))
                .task(t("c", 1).depends_on(["a"]))
                .task(t("d", 1).depends_on(["b", "c"])),
            "d",
        ),
        Shape::Single => (Workflow::builder("harness_single").task(t("only", 1)), "only"),
        Shape::FanIn => {
            let branches: Vec<String> = (0..FAN_WIDTH).map(|i| format!("b{i}")).collect();
            let mut b = Workflow::builder("harness_fanin").task(t("a", 1));
            for (i, name) in branches.iter().enumerate() {
                b = b.task(t(name, i as u64 + 1).depends_on(["a"]));
            }
            (b.task(t("d", 1).depends_on(branches)), "d")
        }
        Shape::Pipeline => (
            Workflow::builder("harness_pipeline")
                .task(t("a", 1))
                .task(t("b", 1).depends_on(["a"]))
                .task(t("c", 1).depends_on(["b"])),
            "c",
        ),
        Shape::Mixed => panic!("Shape::Mixed is several workflows: use `workflows`"),
    };
    if tail {
        b = b.task(t("z", 1).depends_on([last]));
    }
    if let Some(l) = label {
        b = b.version(l);
    }
    b.build().expect("the harness workflows are valid")
}

/// A release of the harness workflows, for the deploy proofs: what a
/// runner program built from one commit of an application registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The workflows the other proofs run: no failures, no retries, no
    /// label.
    Base,
    /// Label `1`: flaky tasks ([`flaky`]) fail their first attempt; 2
    /// attempts, 1.5 s apart; a 30 s timeout.
    V1,
    /// Label `1.1`, the same shape as [`Release::V1`] with new behaviour:
    /// flaky tasks fail their first two attempts; 4 attempts, 20 ms apart;
    /// a 10 s timeout. Under v1's policy a flaky task's second failure
    /// would fail its execution.
    V1Tuned,
    /// Label `2`, a changed shape: each workflow gets a task `z` after its
    /// last one; v1.1's behaviour.
    V2,
    /// [`Release::V1`] and then [`Release::V2`] side by side (a rolling
    /// deploy's new runners, still serving the old version): v2 is
    /// current.
    V1AndV2,
}

impl Release {
    /// The DAG workflows of this release, in registration order (the last
    /// of a name is current).
    pub fn workflows(self, journal: &Path, work_ms: (u64, u64)) -> Vec<Workflow> {
        let v1 = Behaviour { flaky_failures: 1, retry: Some((2, 1500)), timeout: Some(Duration::from_secs(30)) };
        let tuned = Behaviour { flaky_failures: 2, retry: Some((4, 20)), timeout: Some(Duration::from_secs(10)) };
        let of = |how, label, tail| -> Vec<Workflow> {
            Shape::DAGS.iter().map(|&s| build(s, journal, work_ms, how, label, tail)).collect()
        };
        match self {
            Release::Base => workflows(journal, work_ms),
            Release::V1 => of(v1, Some("1"), false),
            Release::V1Tuned => of(tuned, Some("1.1"), false),
            Release::V2 => of(tuned, Some("2"), true),
            Release::V1AndV2 => [of(v1, Some("1"), false), of(tuned, Some("2"), true)].concat(),
        }
    }
}

impl std::str::FromStr for Release {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "base" => Ok(Release::Base),
            "v1" => Ok(Release::V1),
            "v1-tuned" => Ok(Release::V1Tuned),
            "v2" => Ok(Release::V2),
            "v1+v2" => Ok(Release::V1AndV2),
            o => Err(format!("unknown release {o}; expected base, v1, v1-tuned, v2 or v1+v2")),
        }
    }
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
