//! Reports inside a commit: each execution's reports applied to only the
//! rows they can change (a [`PartialSnapshot`]), or to the whole execution
//! where its counters are unknown or the reports finish it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use cloacina_core::ports::{ReportRejection, TaskReport};
use cloacina_core::step::{Needed, PartialSnapshot, Step};
use cloacina_core::{ExecutionId, WorkflowSet};
use sea_orm::{ColumnTrait, Condition, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect};

use crate::backend::{SqlBackend, TxError};
use crate::entities::{task_executions, task_outputs, workflow_executions};
use crate::ops::snapshot::{self, Detail};
use crate::rows::{self, ExecutionHead};

static REPORTS: AtomicU64 = AtomicU64::new(0);
static ROWS_READ: AtomicU64 = AtomicU64::new(0);

/// Reports applied by this process's commits, and the task rows their
/// transactions read: the storage-side cost of a report, for benchmarks
/// and diagnostics. Counted from the start of the process, over every
/// storage it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportStats {
    /// Reports applied (accepted or rejected).
    pub reports: u64,
    /// Task rows read to apply them.
    pub rows_read: u64,
}

impl ReportStats {
    /// The counts so far.
    pub fn now() -> Self {
        Self { reports: REPORTS.load(Ordering::Relaxed), rows_read: ROWS_READ.load(Ordering::Relaxed) }
    }

    /// Task rows read per report between `earlier` and `self`.
    pub fn rows_per_report_since(&self, earlier: &ReportStats) -> f64 {
        let reports = self.reports.saturating_sub(earlier.reports);
        if reports == 0 {
            return 0.0;
        }
        self.rows_read.saturating_sub(earlier.rows_read) as f64 / reports as f64
    }
}

/// Executions of at most this many tasks are always read whole.
const WHOLE_UP_TO: usize = 16;

fn count(rows: usize) {
    ROWS_READ.fetch_add(rows as u64, Ordering::Relaxed);
}

/// Applies `reports` in `step`: one result per report, in order.
pub(crate) async fn apply<B: SqlBackend>(
    b: &B,
    txn: &DatabaseTransaction,
    step: &mut Step<'_>,
    workflows: &WorkflowSet,
    reports: Vec<TaskReport>,
) -> Result<Vec<Result<(), ReportRejection>>, TxError> {
    REPORTS.fetch_add(reports.len() as u64, Ordering::Relaxed);
    let mut ids: Vec<uuid::Uuid> = reports.iter().map(|r| r.execution.0).collect();
    ids.sort_unstable();
    ids.dedup();
    let heads = lock_heads(b, txn, &ids).await?;
    let mut groups: BTreeMap<ExecutionId, Vec<(usize, TaskReport)>> = BTreeMap::new();
    let n = reports.len();
    for (i, r) in reports.into_iter().enumerate() {
        groups.entry(r.execution).or_default().push((i, r));
    }
    let mut results: Vec<Option<Result<(), ReportRejection>>> = vec![None; n];
    let mut partial: BTreeMap<ExecutionId, PartialSnapshot> = BTreeMap::new();
    for h in &heads {
        let Some(unfinished) = h.unfinished.and_then(|u| u32::try_from(u).ok()) else { continue };
        let Ok(execution) = rows::execution_record(h, None) else { continue };
        if execution.state.is_terminal() {
            continue;
        }
        let Some(wf) = workflows.get(&execution.workflow) else { continue };
        let reported = groups.get(&execution.id).map_or(0, Vec::len);
        // A small execution is read whole in one statement, cheaper than
        // the partial path's two; so is one these reports may finish.
        if wf.len() <= WHOLE_UP_TO || unfinished as usize <= reported {
            continue;
        }
        partial.insert(
            execution.id,
            PartialSnapshot {
                execution,
                input_loaded: false,
                unfinished,
                tasks: BTreeMap::new(),
                outputs: HashMap::new(),
            },
        );
    }
    load_reported(b, txn, workflows, &mut partial, &groups).await?;
    let mut whole: Vec<ExecutionId> = groups.keys().filter(|id| !partial.contains_key(id)).copied().collect();
    for (id, mut snap) in partial {
        let Some(group) = groups.get(&id) else { continue };
        let batch: Vec<TaskReport> = group.iter().map(|(_, r)| r.clone()).collect();
        // Each round loads at least one lacking row or context, so this
        // ends; a lacking one that is not stored sends it to the whole path.
        loop {
            match step.report_partial(&mut snap, batch.clone()) {
                Ok(res) => {
                    for ((i, _), r) in group.iter().zip(res) {
                        results[*i] = Some(r);
                    }
                    break;
                }
                Err(needed) if needed.everything => {
                    whole.push(id);
                    break;
                }
                Err(needed) => {
                    if !load_needed(b, txn, workflows, &mut snap, &needed).await? {
                        whole.push(id);
                        break;
                    }
                }
            }
        }
    }
    if !whole.is_empty() {
        whole.sort_unstable();
        // Locked above: only their task rows are still to be read.
        let locked: Vec<ExecutionHead> =
            heads.into_iter().filter(|h| whole.binary_search(&ExecutionId(h.id)).is_ok()).collect();
        let mut snaps = snapshot::load_with_heads(b, txn, locked, None, workflows, Detail::Planned).await?;
        count(snaps.values().map(|s| s.as_ref().map_or(0, |s| s.tasks.len())).sum());
        let mut batch = Vec::new();
        let mut slots = Vec::new();
        for id in &whole {
            for (i, r) in groups.remove(id).unwrap_or_default() {
                slots.push(i);
                batch.push(r);
            }
        }
        for (i, r) in slots.into_iter().zip(step.report(&mut snaps, batch)) {
            results[i] = Some(r);
        }
    }
    Ok(results.into_iter().map(|r| r.unwrap_or(Err(ReportRejection::NotFound))).collect())
}

/// Locks the executions (see [`SqlBackend::lock_executions`]) and returns
/// their heads, without their task rows.
async fn lock_heads<B: SqlBackend>(
    b: &B,
    txn: &DatabaseTransaction,
    ids: &[uuid::Uuid],
) -> Result<Vec<ExecutionHead>, TxError> {
    match b.lock_executions(txn, ids, false).await.map_err(|e| b.classify(e))? {
        Some(locked) => Ok(locked.heads),
        None => snapshot::load_heads(b, txn, ids).await,
    }
}

/// Loads the reported rows and their dependents into the partial
/// snapshots. An execution whose rows do not fit its workflow (a row at
/// the wrong position, a corrupted one) is dropped from `partial`: it is
/// read whole, where such problems are reported.
async fn load_reported<B: SqlBackend>(
    b: &B,
    txn: &DatabaseTransaction,
    workflows: &WorkflowSet,
    partial: &mut BTreeMap<ExecutionId, PartialSnapshot>,
    groups: &BTreeMap<ExecutionId, Vec<(usize, TaskReport)>>,
) -> Result<(), TxError> {
    let ids: Vec<uuid::Uuid> = partial.keys().filter_map(|e| groups.get(e)).flatten().map(|(_, r)| r.task.0).collect();
    if ids.is_empty() {
        return Ok(());
    }
    let reported = task_executions::Entity::find()
        .filter(task_executions::Column::Id.is_in(ids))
        .all(txn)
        .await
        .map_err(|e| b.classify(e))?;
    count(reported.len());
    let mut broken = BTreeSet::new();
    let mut wanted: BTreeMap<ExecutionId, BTreeSet<usize>> = BTreeMap::new();
    for m in reported {
        let exec = ExecutionId(m.execution_id);
        let Some(snap) = partial.get_mut(&exec) else { continue };
        if !insert_row(workflows, snap, &m) {
            broken.insert(exec);
            continue;
        }
        if let Some(wf) = workflows.get(&snap.execution.workflow) {
            let deps = wf.dependent_indices(m.position as usize);
            wanted.entry(exec).or_default().extend(deps.iter().copied());
        }
    }
    for (exec, at) in &mut wanted {
        if let Some(snap) = partial.get(exec) {
            at.retain(|i| !snap.tasks.contains_key(i));
        }
    }
    broken.extend(load_rows(b, txn, workflows, partial, &wanted).await?);
    for e in &broken {
        partial.remove(e);
    }
    Ok(())
}

/// Loads task rows by (execution, position); returns the executions whose
/// rows did not fit (see [`insert_row`]) or were not all there.
async fn load_rows<B: SqlBackend>(
    b: &B,
    txn: &DatabaseTransaction,
    workflows: &WorkflowSet,
    partial: &mut BTreeMap<ExecutionId, PartialSnapshot>,
    wanted: &BTreeMap<ExecutionId, BTreeSet<usize>>,
) -> Result<BTreeSet<ExecutionId>, TxError> {
    use task_executions::Column as T;
    let mut cond = Condition::any();
    let mut any = false;
    for (exec, at) in wanted {
        if at.is_empty() {
            continue;
        }
        any = true;
        let positions = at.iter().map(|&i| i32::try_from(i).unwrap_or(i32::MAX));
        cond = cond.add(Condition::all().add(T::ExecutionId.eq(exec.0)).add(T::Position.is_in(positions)));
    }
    if !any {
        return Ok(BTreeSet::new());
    }
    let found = task_executions::Entity::find().filter(cond).all(txn).await.map_err(|e| b.classify(e))?;
    count(found.len());
    let mut broken = BTreeSet::new();
    for m in found {
        let exec = ExecutionId(m.execution_id);
        let Some(snap) = partial.get_mut(&exec) else { continue };
        if !insert_row(workflows, snap, &m) {
            broken.insert(exec);
        }
    }
    for (exec, at) in wanted {
        // A row the workflow has but the execution lacks: read it whole.
        if partial.get(exec).is_some_and(|s| at.iter().any(|i| !s.tasks.contains_key(i))) {
            broken.insert(*exec);
        }
    }
    Ok(broken)
}

/// Adds a row to a partial snapshot; false when it does not fit (corrupt,
/// no counter, or not at its task's position).
fn insert_row(workflows: &WorkflowSet, snap: &mut PartialSnapshot, m: &task_executions::Model) -> bool {
    let Some(wf) = workflows.get(&snap.execution.workflow) else { return false };
    let (Ok(row), Some(waiting)) = (rows::task_record(m), m.waiting_on.and_then(|w| u32::try_from(w).ok())) else {
        return false;
    };
    let Ok(position) = usize::try_from(m.position) else { return false };
    if wf.index_of(&row.name) != Some(position) {
        return false;
    }
    snap.tasks.insert(position, (row, waiting));
    true
}

/// Loads what a partial report lacked; false when some of it is not
/// stored or does not fit (the execution is then read whole, where such
/// problems are named).
async fn load_needed<B: SqlBackend>(
    b: &B,
    txn: &DatabaseTransaction,
    workflows: &WorkflowSet,
    snap: &mut PartialSnapshot,
    needed: &Needed,
) -> Result<bool, TxError> {
    let exec = snap.execution.id;
    let err = |e| b.classify(e);
    if !needed.rows.is_empty() {
        let mut one = BTreeMap::from([(exec, std::mem::replace(snap, placeholder(snap)))]);
        let wanted = BTreeMap::from([(exec, needed.rows.clone())]);
        let broken = load_rows(b, txn, workflows, &mut one, &wanted).await?;
        if let Some(s) = one.remove(&exec) {
            *snap = s;
        }
        if !broken.is_empty() {
            return Ok(false);
        }
    }
    if !needed.outputs.is_empty()
        && let Some(wf) = workflows.get(&snap.execution.workflow)
    {
        let names: Vec<String> = needed.outputs.iter().map(|&i| wf.tasks()[i].id().to_owned()).collect();
        let found = task_outputs::Entity::find()
            .filter(task_outputs::Column::ExecutionId.eq(exec.0))
            .filter(task_outputs::Column::TaskName.is_in(names))
            .all(txn)
            .await
            .map_err(err)?;
        for o in found {
            match (wf.index_of(&o.task_name), rows::output_context(&o)) {
                (Some(i), Ok(c)) => {
                    snap.outputs.insert(i, c);
                }
                _ => return Ok(false),
            }
        }
        if needed.outputs.iter().any(|i| !snap.outputs.contains_key(i)) {
            return Ok(false);
        }
    }
    if needed.input {
        let text: Option<String> = workflow_executions::Entity::find_by_id(exec.0)
            .select_only()
            .column(workflow_executions::Column::Input)
            .into_tuple()
            .one(txn)
            .await
            .map_err(err)?;
        let input = text.as_deref().map(cloacina_core::Context::from_json).transpose();
        match input {
            Ok(Some(input)) => {
                snap.execution.input = input;
                snap.input_loaded = true;
            }
            _ => return Ok(false),
        }
    }
    Ok(true)
}

fn placeholder(snap: &PartialSnapshot) -> PartialSnapshot {
    PartialSnapshot {
        execution: snap.execution.clone(),
        input_loaded: false,
        unfinished: 0,
        tasks: BTreeMap::new(),
        outputs: HashMap::new(),
    }
}
