//! What the process proofs share: a tenant per scenario (a SQLite file
//! or a PostgreSQL schema), runner child processes with their output, and
//! checking the stored state against the bodies' journal.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cloacina_harness::read_journal;
use cloacina_runner::core::ports::{ExecutionFilter, Storage};
use cloacina_runner::{TaskState, WorkflowState};
use cloacina_testkit::pg::TestSchema;

pub(crate) const RUNNER: &str = env!("CARGO_BIN_EXE_cloacina-harness-runner");

/// A tenant for one scenario.
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) tenant: Option<String>,
    pub(crate) dir: tempfile::TempDir,
    _schema: Option<TestSchema>,
}

impl Target {
    pub(crate) fn sqlite(tenant: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("app.db").display());
        Self { url, tenant: tenant.map(str::to_owned), dir, _schema: None }
    }
    pub(crate) fn postgres() -> Self {
        let s = TestSchema::new("proof");
        Self { url: s.url.clone(), tenant: Some(s.name.clone()), dir: tempfile::tempdir().unwrap(), _schema: Some(s) }
    }
    pub(crate) fn journal(&self) -> PathBuf {
        self.dir.path().join("journal.txt")
    }
    pub(crate) async fn storage(&self) -> Arc<dyn Storage> {
        open_storage(&self.url, self.tenant.as_deref()).await
    }
}

pub(crate) async fn open_storage(url: &str, tenant: Option<&str>) -> Arc<dyn Storage> {
    if url.starts_with("sqlite:") {
        let mut o = cloacina_sqlite::SqliteOptions::new(url);
        if let Some(t) = tenant {
            o = o.tenant(t).unwrap();
        }
        Arc::new(cloacina_sqlite::open(o).await.unwrap())
    } else {
        let mut o = cloacina_postgres::PgOptions::new(url);
        if let Some(t) = tenant {
            o = o.tenant(t).unwrap();
        }
        Arc::new(cloacina_postgres::open(o).await.unwrap())
    }
}

/// A runner child process and its stdout lines.
pub(crate) struct Runner {
    pub(crate) child: Child,
    lines: mpsc::Receiver<String>,
    pub(crate) seen: Vec<String>,
}

impl Runner {
    pub(crate) fn spawn(url: &str, tenant: Option<&str>, journal: &Path, extra: &[&str]) -> Self {
        Self::spawn_with_log(url, tenant, journal, extra, None)
    }

    /// As [`Runner::spawn`], with the child's `RUST_LOG` set to `log`.
    pub(crate) fn spawn_with_log(
        url: &str,
        tenant: Option<&str>,
        journal: &Path,
        extra: &[&str],
        log: Option<&str>,
    ) -> Self {
        let mut cmd = Command::new(RUNNER);
        if let Some(l) = log {
            cmd.env("RUST_LOG", l);
        }
        cmd.args(["--url", url, "--journal"]).arg(journal).args(extra);
        if let Some(t) = tenant {
            cmd.args(["--tenant", t]);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn the runner program");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log_tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Its log (stderr) is passed through and kept, prefixed `LOG `, so a
        // test can wait for what the runner says about itself.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                if log_tx.send(format!("LOG {line}")).is_err() {
                    break;
                }
            }
        });
        Self { child, lines: rx, seen: Vec::new() }
    }

    /// Waits for a log line containing `text`; panics after `timeout`.
    pub(crate) fn expect_log(&mut self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.seen.iter().any(|l| l.starts_with("LOG ") && l.contains(text)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("runner did not log `{text}` within {timeout:?}; printed {:?}", self.seen),
            }
        }
    }

    pub(crate) fn signal(&mut self, sig: &str) {
        let status = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -{sig}");
    }

    /// Waits for a line starting with `prefix`; panics after `timeout`.
    pub(crate) fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.starts_with(prefix)) {
            return l.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.starts_with(prefix) {
                        return l;
                    }
                }
                Err(_) => panic!("runner did not print `{prefix}` within {timeout:?}; printed {:?}", self.seen),
            }
        }
    }

    /// Whether it printed `prefix` already (without waiting).
    pub(crate) fn printed(&mut self, prefix: &str) -> bool {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.iter().any(|l| l.starts_with(prefix))
    }

    pub(crate) fn sigkill(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    pub(crate) fn sigterm(&mut self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    pub(crate) fn wait_exit(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                assert!(s.success(), "runner exited with {s}");
                return;
            }
            assert!(Instant::now() < deadline, "runner did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the stored state and the journal say after a scenario.
#[derive(Debug, Default)]
pub(crate) struct Verified {
    pub(crate) executions: usize,
    pub(crate) tasks: usize,
    pub(crate) runs: usize,
    pub(crate) recovered_tasks: usize,
}

/// Every execution completed; every task completed exactly once (one
/// `completed` event); each body ran at least once and at most (its
/// attempts + its recoveries + its releases at shutdown) times, and its
/// recovery count is at most `crashes`.
pub(crate) async fn verify(storage: &dyn Storage, journal: &Path, expected: usize, crashes: u32) -> Verified {
    let execs =
        storage.list_executions(&ExecutionFilter { limit: Some(1_000_000), ..Default::default() }).await.unwrap();
    assert_eq!(execs.len(), expected, "executions stored");
    let j = read_journal(journal);
    let mut v = Verified { executions: execs.len(), ..Default::default() };
    for e in &execs {
        assert_eq!(e.state, WorkflowState::Completed, "execution {} is {:?}: {:?}", e.id, e.state, e.error);
        let events = storage.events(e.id).await.unwrap();
        for t in storage.tasks(e.id).await.unwrap() {
            v.tasks += 1;
            assert_eq!(t.state, TaskState::Completed);
            let completions =
                events.iter().filter(|ev| ev.task_execution_id == Some(t.id) && ev.to == "completed").count();
            assert_eq!(completions, 1, "task {} of {} completed {completions} times", t.name, e.id);
            let runs = j.runs.get(&(e.id.to_string(), t.name.clone())).copied().unwrap_or(0);
            assert!(runs >= 1, "task {} of {} completed without running", t.name, e.id);
            // A body runs again only after its runner lost the lease
            // (recovery) or gave it back at shutdown (release).
            let releases = events
                .iter()
                .filter(|ev| ev.task_execution_id == Some(t.id))
                .filter(|ev| ev.detail.as_deref().is_some_and(|d| d.starts_with("released by runner")))
                .count() as u32;
            // Retries are attempts: `attempt` counts them (and only them).
            assert!(
                runs as u32 <= t.attempt + t.recovery_count + releases,
                "task {} of {} ran {runs} times in {} attempts but lost its runner only {} times (and was released \
                 {releases} times)",
                t.name,
                e.id,
                t.attempt,
                t.recovery_count
            );
            assert!(t.recovery_count <= crashes, "recovered {} times with {crashes} crashes", t.recovery_count);
            v.runs += runs;
            v.recovered_tasks += usize::from(t.recovery_count > 0);
        }
    }
    v
}

pub(crate) const FAST_LEASES: [&str; 6] = ["--lease-ttl-ms", "1000", "--heartbeat-ms", "200", "--recovery-ms", "200"];
