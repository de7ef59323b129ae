//! The storage contract suite: behaviour every storage adapter must have.
//!
//! Written once; each adapter runs it through [`storage_contract!`](crate::storage_contract)
//! (crate root) with a setup expression that yields a [`ContractTarget`] on
//! a fresh tenant. Times are passed explicitly, so nothing here sleeps.
//!
//! * `lifecycle` — creating, claiming, leases, fencing, retries,
//!   transitions, events, contexts, tenants and migrations;
//! * `control` — abandonment, cancel, pause, release, commits that mix
//!   writes, notifications, what storage cannot hold, and recovery racing
//!   a live claimer;
//! * `schedules` — cron schedules and event-trigger firings;
//! * `versions` — stranded executions and migrations.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::QueueExt;
use async_trait::async_trait;
use cloacina_core::ports::*;
use cloacina_core::{
    Context, ExecutionId, FencingToken, RecoveryPolicy, RunnerId, TaskExecutionId, TaskSpec, TaskState, Timestamp,
    TriggerRule, Workflow, WorkflowSet, WorkflowState, task_fn,
};
use futures::StreamExt;

/// What the suite needs from an adapter's test setup.
#[async_trait]
pub trait ContractTarget: Send + Sync {
    /// The storage under test, on a fresh tenant.
    fn storage(&self) -> Arc<dyn Storage>;
    /// The same tenant opened again, independently (another pool).
    async fn reopen(&self) -> Arc<dyn Storage>;
    /// Migrations applied by opening the tenant once more (`None` for a
    /// backend without migrations).
    async fn migrations_applied_on_reopen(&self) -> Option<Vec<String>>;
    /// Another tenant in the same database or directory.
    async fn other_tenant(&self) -> Arc<dyn Storage>;
}

/// The base time of every test.
pub const T0: Timestamp = Timestamp(1_700_000_000_000);

fn at(ms: i64) -> Timestamp {
    Timestamp(T0.0 + ms)
}

fn noop(id: &str) -> TaskSpec {
    TaskSpec::new(id, task_fn(|c: Context| async move { Ok::<_, cloacina_core::TaskError>(c) }))
}

/// A single-task workflow.
pub fn single() -> Workflow {
    Workflow::builder("single").task(noop("only")).build().expect("valid workflow")
}

/// `a -> {b, c} -> d`.
pub fn diamond() -> Workflow {
    Workflow::builder("diamond")
        .task(noop("a"))
        .task(noop("b").depends_on(["a"]))
        .task(noop("c").depends_on(["a"]))
        .task(noop("d").depends_on(["b", "c"]))
        .build()
        .expect("valid workflow")
}

/// `first -> second`, where `cleanup` runs after `first` whatever happens.
pub fn chain() -> Workflow {
    Workflow::builder("chain")
        .task(noop("first"))
        .task(noop("second").depends_on(["first"]))
        .task(noop("cleanup").depends_on(["first"]).trigger(TriggerRule::AllDone))
        .build()
        .expect("valid workflow")
}

fn set(wfs: &[&Workflow]) -> WorkflowSet {
    wfs.iter().map(|w| (*w).clone()).collect()
}

fn owner(name: &str) -> ClaimOwner {
    ClaimOwner {
        runner: RunnerId::parse(name).expect("valid runner id"),
        incarnation: format!("{name}-inc"),
        lease_ttl: Duration::from_secs(10),
    }
}

fn claim_owner(r: &RunnerRegistration) -> ClaimOwner {
    ClaimOwner { runner: r.id.clone(), incarnation: r.incarnation.clone(), lease_ttl: r.lease_ttl }
}

fn req(name: &str, limit: usize) -> ClaimRequest {
    ClaimRequest { owner: owner(name), limit }
}

fn registration(name: &str, incarnation: &str) -> RunnerRegistration {
    RunnerRegistration {
        id: RunnerId::parse(name).expect("valid runner id"),
        name: name.to_owned(),
        incarnation: incarnation.to_owned(),
        lease_ttl: Duration::from_secs(10),
        serves: Vec::new(),
    }
}

fn input(n: i64) -> Context {
    let mut c = Context::new();
    c.set("n", n).expect("json");
    c
}

async fn create(s: &dyn Storage, wf: &Workflow, ctx: Context, now: Timestamp) -> ExecutionId {
    let new = NewExecution::plan(wf, ctx, "test", now);
    let id = new.id;
    s.create_executions(vec![new], None, &set(&[wf]), now).await.expect("create");
    id
}

fn success(t: &ClaimedTask, output: Context) -> TaskReport {
    TaskReport {
        task: t.id,
        execution: t.execution_id,
        fencing_token: t.fencing_token,
        outcome: ReportOutcome::Succeeded { output },
    }
}

async fn task_state(s: &dyn Storage, exec: ExecutionId, name: &str) -> TaskRecord {
    s.tasks(exec).await.expect("tasks").into_iter().find(|t| t.name == name).expect("task exists")
}

mod control;
mod lifecycle;
mod schedules;
mod versions;

pub use control::*;
pub use lifecycle::*;
pub use schedules::*;
pub use versions::*;

/// Generates one `#[tokio::test]` per contract case. `$setup` is an
/// expression of type `impl Future<Output = impl ContractTarget>`,
/// evaluated afresh for each test.
#[macro_export]
macro_rules! storage_contract {
    ($setup:expr) => {
        $crate::storage_contract!(@cases $setup;
            create_and_read,
            create_batch_with_claim,
            claim_is_exclusive_under_concurrency,
            lease_expiry_and_orphan_detection,
            fencing_rejects_stale_owner,
            retries_honour_retry_at,
            illegal_transitions_are_rejected,
            events_follow_every_state_change,
            tenants_are_isolated,
            context_round_trip,
            migrations_are_idempotent,
            abandoned_after_max_recoveries,
            cancel_stops_everything,
            pause_holds_claims,
            report_claims_follow_up_work,
            release_returns_tasks_at_once,
            restart_with_stable_id_reclaims_at_once,
            claims_only_known_workflows,
            notifications_are_delivered,
            outputs_are_per_task,
            commit_mixes_creations_reports_and_claims,
            schedules_register_update_pause_delete,
            each_tick_fires_once_across_callers,
            catch_up_after_downtime,
            trigger_firings_are_deduplicated,
            nul_characters_in_errors_are_stored_escaped,
            unreadable_is_empty_for_healthy_rows,
            a_duplicate_tick_skips_only_its_schedule,
            a_retried_trigger_firing_is_recorded_once,
            recovery_never_takes_a_live_runners_claim,
            stranded_is_what_no_live_runner_serves,
            a_migration_moves_rows_and_fences_late_reports,
            stranding_and_migration_cover_every_execution_of_a_large_backlog
        );
    };
    (@cases $setup:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let target = $setup.await;
                $crate::contract::$case(&target).await;
            }
        )+
    };
}
