//! Workflow versions on a runner: what is stranded, and moving it.

use cloacina_core::migrate::TaskMapping;
use cloacina_core::ports::{ExecutionFilter, MigrationReport, StrandedVersion};
use cloacina_core::{Workflow, WorkflowState};

use crate::engine;
use crate::error::{Result, RunnerError};
use crate::runner::DefaultRunner;

fn describe(w: &Workflow) -> String {
    match w.label() {
        Some(l) => format!("{} ({l})", w.version()),
        None => w.version().to_owned(),
    }
}

impl DefaultRunner {
    /// The versions `name` is served with on this runner, the current one
    /// (used by new executions) first.
    pub fn workflow_versions(&self, name: impl AsRef<str>) -> Vec<Workflow> {
        self.inner.workflows().versions(name.as_ref()).into_iter().cloned().collect()
    }

    /// Unfinished executions of the tenant whose workflow version no live
    /// runner serves (this one included), grouped by version. Every
    /// runner's recovery sweep reports a version once it is stranded at two
    /// sweeps in a row (a recovery interval apart): a warning naming the
    /// workflow, version and count (again when the count changes), and an
    /// event on each of its executions. `ExecutionFilter { stranded: true,
    /// .. }` lists them.
    pub async fn stranded_executions(&self) -> Result<Vec<StrandedVersion>> {
        self.storage_call(|inner| async move { Ok(engine::liveness::stranded(&inner).await?) }).await
    }

    /// Moves every unfinished execution of workflow `name` at version
    /// `from` (a shape fingerprint or a label) to the version `to` this
    /// runner registers (fingerprint or label), with `mapping` saying
    /// which new task each old task becomes (see
    /// [`cloacina_core::migrate`] for the rules). All or nothing: a mapping
    /// that would lose a completed task's output, put a completed task
    /// after an unfinished one, or move a task a live runner is running
    /// is refused with [`StorageError::MigrationRefused`](crate::StorageError::MigrationRefused)
    /// and nothing changes. Completed tasks are not run again.
    ///
    /// ```no_run
    /// # async fn f(runner: cloacina_runner::DefaultRunner) -> cloacina_runner::Result<()> {
    /// use cloacina_runner::TaskMapping;
    /// let stranded = runner.stranded_executions().await?;
    /// for s in stranded.iter().filter(|s| s.workflow.name == "etl") {
    ///     // v2 renamed `clean` to `scrub`.
    ///     let report = runner
    ///         .migrate_executions("etl", &s.workflow.version, "v2", &TaskMapping::new().task("clean", "scrub"))
    ///         .await?;
    ///     println!("moved {} executions", report.migrated.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn migrate_executions(
        &self,
        name: impl AsRef<str>,
        from: impl AsRef<str>,
        to: impl AsRef<str>,
        mapping: &TaskMapping,
    ) -> Result<MigrationReport> {
        let (name, from, to) = (name.as_ref(), from.as_ref(), to.as_ref());
        let versions = self.workflow_versions(name);
        let Some(target) = versions.iter().find(|w| w.version() == to || w.label() == Some(to)).cloned() else {
            return Err(RunnerError::UnknownVersion {
                name: name.to_owned(),
                version: to.to_owned(),
                where_: "registered on this runner",
                known: versions.iter().map(describe).collect(),
            });
        };
        let (name, from, mapping) = (name.to_owned(), from.to_owned(), mapping.clone());
        self.storage_call(move |inner| async move {
            let unfinished = vec![WorkflowState::Pending, WorkflowState::Running, WorkflowState::Paused];
            let filter = ExecutionFilter {
                workflow: Some(name.clone()),
                states: unfinished.clone(),
                version: Some(from.clone()),
                limit: Some(1),
                ..Default::default()
            };
            let Some(found) = inner.storage.list_executions(&filter).await?.into_iter().next() else {
                let all = ExecutionFilter {
                    workflow: Some(name.clone()),
                    states: unfinished,
                    limit: Some(1000),
                    ..Default::default()
                };
                let mut known: Vec<String> = inner
                    .storage
                    .list_executions(&all)
                    .await?
                    .into_iter()
                    .map(|e| match e.label {
                        Some(l) => format!("{} ({l})", e.workflow.version),
                        None => e.workflow.version,
                    })
                    .collect();
                known.sort();
                known.dedup();
                return Err(RunnerError::UnknownVersion {
                    name,
                    version: from,
                    where_: "among unfinished executions",
                    known,
                });
            };
            let report = inner.storage.migrate_executions(&found.workflow, &target, &mapping, inner.now()).await?;
            tracing::info!(
                workflow = %name,
                from = %found.workflow.version,
                to = %target.version(),
                executions = report.migrated.len(),
                "migrated executions"
            );
            engine::apply_effects(&inner, report.effects.clone(), None);
            Ok(report)
        })
        .await
    }
}
