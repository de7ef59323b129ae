//! Workflow versions: which unfinished executions no live runner serves,
//! and migrating executions from one version to another.

use std::collections::{HashMap, HashSet};

use cloacina_core::migrate::{TaskMapping, plan_move};
use cloacina_core::ports::{
    EventKind, ExecutionEvent, MigrationReport, Notification, StorageError, StrandedVersion, TaskRecord,
    stranded_detail,
};
use cloacina_core::step::Writes;
use cloacina_core::{Context, TaskState, Timestamp, Workflow, WorkflowRef, WorkflowState};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::backend::{SqlBackend, TxError};
use crate::entities::{execution_events, runners, task_executions, task_outputs, workflow_executions};
use crate::rows;
use crate::storage::SqlStorage;

/// Ids per statement (both backends bound the parameters of one
/// statement: SQLite to 32,766, PostgreSQL to 65,535).
const ID_CHUNK: usize = 1000;

/// The states of an unfinished execution.
pub(crate) const UNFINISHED: [WorkflowState; 3] =
    [WorkflowState::Pending, WorkflowState::Running, WorkflowState::Paused];

fn unfinished() -> impl Iterator<Item = &'static str> {
    UNFINISHED.iter().map(|s| s.as_str())
}

impl<B: SqlBackend> SqlStorage<B> {
    /// The live runners' ids, incarnations and published `serves` lists.
    async fn live_runners<C: ConnectionTrait>(
        &self,
        conn: &C,
        now: Timestamp,
    ) -> Result<Vec<(String, String, String)>, TxError> {
        runners::Entity::find()
            .select_only()
            .columns([runners::Column::Id, runners::Column::Incarnation, runners::Column::Serves])
            .filter(runners::Column::Status.eq("alive"))
            .filter(runners::Column::ExpiresAt.gt(now.0))
            .into_tuple()
            .all(conn)
            .await
            .map_err(|e| self.backend.classify(e))
    }

    /// The `name@version` keys live runners serve.
    pub(crate) async fn served_keys<C: ConnectionTrait>(
        &self,
        conn: &C,
        now: Timestamp,
    ) -> Result<HashSet<String>, TxError> {
        let mut keys = HashSet::new();
        for (id, _, serves) in self.live_runners(conn, now).await? {
            let list: Vec<String> =
                serde_json::from_str(&serves).map_err(|e| rows::corrupt("runners", id, "serves", e))?;
            keys.extend(list);
        }
        Ok(keys)
    }

    pub(crate) async fn try_stranded(&self, now: Timestamp) -> Result<Vec<StrandedVersion>, TxError> {
        let reader = self.backend.reader();
        let served = self.served_keys(reader, now).await?;
        let groups: Vec<(String, String, Option<String>, i64)> = workflow_executions::Entity::find()
            .select_only()
            .column(workflow_executions::Column::WorkflowName)
            .column(workflow_executions::Column::WorkflowVersion)
            .column(workflow_executions::Column::WorkflowLabel)
            .column_as(workflow_executions::Column::Id.count(), "n")
            .filter(workflow_executions::Column::State.is_in(unfinished()))
            .group_by(workflow_executions::Column::WorkflowName)
            .group_by(workflow_executions::Column::WorkflowVersion)
            .group_by(workflow_executions::Column::WorkflowLabel)
            .into_tuple()
            .all(reader)
            .await
            .map_err(|e| self.backend.classify(e))?;
        let mut out: Vec<StrandedVersion> = groups
            .into_iter()
            .map(|(name, version, label, n)| StrandedVersion {
                workflow: WorkflowRef { name, version },
                label,
                executions: usize::try_from(n).unwrap_or(0),
            })
            .filter(|s| !served.contains(&rows::workflow_key(&s.workflow)))
            .collect();
        out.sort_by(|a, b| (&a.workflow, &a.label).cmp(&(&b.workflow, &b.label)));
        Ok(out)
    }

    /// The unfinished executions of `version`, sorted and locked as a
    /// report locks them. Their rows must be read again by a later
    /// statement (which sees every commit the lock waited for).
    async fn lock_unfinished(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        version: &WorkflowRef,
    ) -> Result<Vec<uuid::Uuid>, TxError> {
        let err = |e| self.backend.classify(e);
        let mut ids: Vec<uuid::Uuid> = workflow_executions::Entity::find()
            .select_only()
            .column(workflow_executions::Column::Id)
            .filter(workflow_executions::Column::WorkflowName.eq(version.name.as_str()))
            .filter(workflow_executions::Column::WorkflowVersion.eq(version.version.as_str()))
            .filter(workflow_executions::Column::State.is_in(unfinished()))
            .into_tuple()
            .all(txn)
            .await
            .map_err(err)?;
        ids.sort_unstable();
        // In id order, chunk after chunk: concurrent lockers never
        // deadlock, and no statement exceeds the bind-parameter limit.
        for chunk in ids.chunks(ID_CHUNK) {
            self.backend.lock_executions(txn, chunk, false).await.map_err(err)?;
        }
        Ok(ids)
    }

    pub(crate) async fn try_record_stranded(
        &self,
        version: &WorkflowRef,
        now: Timestamp,
    ) -> Result<Vec<ExecutionEvent>, TxError> {
        let err = |e| self.backend.classify(e);
        let detail = stranded_detail(version);
        let txn = self.begin().await?;
        // Two runners recording at once are serialised by the lock, and
        // the second sees the first one's events.
        let ids = self.lock_unfinished(&txn, version).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut heads: Vec<(uuid::Uuid, String)> = Vec::with_capacity(ids.len());
        let mut recorded: HashSet<uuid::Uuid> = HashSet::new();
        for chunk in ids.chunks(ID_CHUNK) {
            heads.extend(
                workflow_executions::Entity::find()
                    .select_only()
                    .column(workflow_executions::Column::Id)
                    .column(workflow_executions::Column::State)
                    .filter(workflow_executions::Column::Id.is_in(chunk.iter().copied()))
                    .filter(workflow_executions::Column::WorkflowVersion.eq(version.version.as_str()))
                    .filter(workflow_executions::Column::State.is_in(unfinished()))
                    .into_tuple::<(uuid::Uuid, String)>()
                    .all(&txn)
                    .await
                    .map_err(err)?,
            );
            recorded.extend(
                execution_events::Entity::find()
                    .select_only()
                    .column(execution_events::Column::ExecutionId)
                    .filter(execution_events::Column::ExecutionId.is_in(chunk.iter().copied()))
                    .filter(execution_events::Column::Kind.eq(EventKind::Execution.as_str()))
                    .filter(execution_events::Column::Detail.eq(detail.as_str()))
                    .into_tuple::<uuid::Uuid>()
                    .all(&txn)
                    .await
                    .map_err(err)?,
            );
        }
        let mut events = Vec::new();
        for (id, state) in heads.into_iter().filter(|(id, _)| !recorded.contains(id)) {
            let state: WorkflowState =
                state.parse().map_err(|e| rows::corrupt("workflow_executions", id, "state", e))?;
            events.push(ExecutionEvent::execution(
                cloacina_core::ExecutionId(id),
                Some(state),
                state,
                Some(detail.clone()),
                now,
            ));
        }
        if !events.is_empty() {
            let writes = Writes { events: events.clone(), ..Writes::default() };
            self.backend.apply_writes(&txn, &writes, &[], now).await?;
        }
        txn.commit().await.map_err(err)?;
        Ok(events)
    }

    pub(crate) async fn try_migrate(
        &self,
        from: &WorkflowRef,
        to: &Workflow,
        mapping: &TaskMapping,
        now: Timestamp,
    ) -> Result<MigrationReport, TxError> {
        let err = |e| self.backend.classify(e);
        let txn = self.begin().await?;
        // A report of one of these tasks commits before the migration
        // reads, or waits for it.
        let ids = self.lock_unfinished(&txn, from).await?;
        if ids.is_empty() {
            return Ok(MigrationReport::default());
        }
        // Read again under the lock (a later statement sees every commit
        // the lock waited for).
        let mut heads: Vec<cloacina_core::ports::ExecutionRecord> = Vec::with_capacity(ids.len());
        let mut tasks: HashMap<uuid::Uuid, Vec<TaskRecord>> = HashMap::new();
        let mut outs: HashMap<uuid::Uuid, HashMap<String, Context>> = HashMap::new();
        for chunk in ids.chunks(ID_CHUNK) {
            for m in workflow_executions::Entity::find()
                .filter(workflow_executions::Column::Id.is_in(chunk.iter().copied()))
                .filter(workflow_executions::Column::WorkflowVersion.eq(from.version.as_str()))
                .filter(workflow_executions::Column::State.is_in(unfinished()))
                .all(&txn)
                .await
                .map_err(err)?
            {
                heads.push(rows::execution_from_model(m)?);
            }
            for m in task_executions::Entity::find()
                .filter(task_executions::Column::ExecutionId.is_in(chunk.iter().copied()))
                .all(&txn)
                .await
                .map_err(err)?
            {
                tasks.entry(m.execution_id).or_default().push(rows::task_record(&m)?);
            }
            for o in task_outputs::Entity::find()
                .filter(task_outputs::Column::ExecutionId.is_in(chunk.iter().copied()))
                .all(&txn)
                .await
                .map_err(err)?
            {
                let ctx = rows::output_context(&o)?;
                outs.entry(o.execution_id).or_default().insert(o.task_name, ctx);
            }
        }
        let live: HashSet<(String, String)> =
            self.live_runners(&txn, now).await?.into_iter().map(|(id, inc, _)| (id, inc)).collect();
        let is_live = |t: &TaskRecord| {
            t.lease.as_ref().is_some_and(|l| live.contains(&(l.owner.to_string(), l.incarnation.clone())))
        };
        // Plan every execution before writing anything.
        let no_outputs = HashMap::new();
        let mut plans = Vec::with_capacity(heads.len());
        for e in &heads {
            let id = &e.id.0;
            let old = tasks.remove(id).unwrap_or_default();
            let mv =
                plan_move(&id.to_string(), &old, to, mapping, is_live, &e.input, outs.get(id).unwrap_or(&no_outputs))
                    .map_err(StorageError::from)?;
            plans.push((e.id, e.state, old, mv));
        }
        let key = rows::workflow_key(&to.reference());
        let mut report = MigrationReport::default();
        let mut events = Vec::new();
        for (id, state, old, mv) in plans {
            let before: HashMap<_, &TaskRecord> = old.iter().map(|t| (t.id, t)).collect();
            if !mv.dropped.is_empty() {
                task_outputs::Entity::delete_many()
                    .filter(task_outputs::Column::TaskExecutionId.is_in(mv.dropped.iter().map(|t| t.0)))
                    .exec(&txn)
                    .await
                    .map_err(err)?;
                task_executions::Entity::delete_many()
                    .filter(task_executions::Column::Id.is_in(mv.dropped.iter().map(|t| t.0)))
                    .exec(&txn)
                    .await
                    .map_err(err)?;
            }
            for t in &mv.tasks {
                let finished = (t.state.is_terminal() && t.before.is_none_or(|b| !b.is_terminal())).then_some(now.0);
                let error = t.reason.as_ref().map(|r| rows::storable_text(r).into_owned());
                let position = i32::try_from(t.position).unwrap_or(i32::MAX);
                match before.get(&t.id) {
                    Some(old) => {
                        let restarted = !old.state.is_terminal();
                        let mut q = task_executions::Entity::update_many()
                            .col_expr(task_executions::Column::TaskName, Expr::value(t.name.clone()))
                            .col_expr(task_executions::Column::Position, Expr::value(position))
                            .col_expr(task_executions::Column::WorkflowKey, Expr::value(key.clone()))
                            .col_expr(task_executions::Column::UpdatedAt, Expr::value(now.0));
                        if restarted {
                            q = q
                                .col_expr(task_executions::Column::State, Expr::value(t.state.as_str()))
                                .col_expr(task_executions::Column::ReadyAt, Expr::value(now.0))
                                .col_expr(task_executions::Column::LeaseOwner, Expr::value(Option::<String>::None))
                                .col_expr(
                                    task_executions::Column::LeaseIncarnation,
                                    Expr::value(Option::<String>::None),
                                )
                                .col_expr(task_executions::Column::LeaseExpiresAt, Expr::value(Option::<i64>::None))
                                .col_expr(
                                    task_executions::Column::FencingToken,
                                    Expr::col(task_executions::Column::FencingToken).add(1),
                                )
                                // A task running under a dead runner lost
                                // its runner: a recovery, as a sweep counts it.
                                .col_expr(
                                    task_executions::Column::RecoveryCount,
                                    Expr::col(task_executions::Column::RecoveryCount)
                                        .add(i32::from(old.state == TaskState::Running)),
                                )
                                .col_expr(task_executions::Column::Error, Expr::value(error.clone()))
                                .col_expr(task_executions::Column::FinishedAt, Expr::value(finished));
                        }
                        let res = q
                            .filter(task_executions::Column::Id.eq(t.id.0))
                            .filter(task_executions::Column::State.eq(old.state.as_str()))
                            .filter(task_executions::Column::FencingToken.eq(old.fencing_token.0))
                            .exec(&txn)
                            .await
                            .map_err(err)?;
                        if res.rows_affected != 1 {
                            return Err(TxError::Conflict(format!("task {} changed during the migration", t.id)));
                        }
                        if old.state == TaskState::Completed && old.name != t.name {
                            task_outputs::Entity::update_many()
                                .col_expr(task_outputs::Column::TaskName, Expr::value(t.name.clone()))
                                .filter(task_outputs::Column::TaskExecutionId.eq(t.id.0))
                                .exec(&txn)
                                .await
                                .map_err(err)?;
                        }
                        if restarted || old.name != t.name {
                            let detail = format!("migrated from `{}` of {from}", old.name);
                            events.push(ExecutionEvent::task(
                                id,
                                &t.name,
                                t.id,
                                Some(old.state),
                                t.state,
                                Some(detail),
                                now,
                            ));
                        }
                    }
                    None => {
                        task_executions::Entity::insert(task_executions::ActiveModel {
                            id: Set(t.id.0),
                            execution_id: Set(id.0),
                            workflow_key: Set(key.clone()),
                            task_name: Set(t.name.clone()),
                            position: Set(position),
                            state: Set(t.state.as_str().to_owned()),
                            attempt: Set(1),
                            ready_at: Set(now.0),
                            lease_owner: Set(None),
                            lease_incarnation: Set(None),
                            lease_expires_at: Set(None),
                            fencing_token: Set(0),
                            recovery_count: Set(0),
                            error: Set(error),
                            started_at: Set(None),
                            finished_at: Set(finished),
                            updated_at: Set(now.0),
                            waiting_on: Set(None),
                        })
                        .exec_without_returning(&txn)
                        .await
                        .map_err(err)?;
                        events.push(ExecutionEvent::task(
                            id,
                            &t.name,
                            t.id,
                            None,
                            t.state,
                            Some("added by a migration".into()),
                            now,
                        ));
                    }
                }
                if t.state == TaskState::Ready && t.before != Some(TaskState::Ready) {
                    report.effects.newly_ready += 1;
                }
            }
            let to_state = mv.finished.unwrap_or(state);
            let mut q = workflow_executions::Entity::update_many()
                .col_expr(workflow_executions::Column::WorkflowVersion, Expr::value(to.version()))
                .col_expr(workflow_executions::Column::WorkflowLabel, Expr::value(to.label().map(str::to_owned)))
                .col_expr(workflow_executions::Column::UpdatedAt, Expr::value(now.0))
                // Rows were added, dropped or renamed: the counters are not
                // kept through a migration, the execution is read whole.
                .col_expr(workflow_executions::Column::Unfinished, Expr::value(Option::<i32>::None));
            if let Some(done) = mv.finished {
                q = q
                    .col_expr(workflow_executions::Column::State, Expr::value(done.as_str()))
                    .col_expr(workflow_executions::Column::FinishedAt, Expr::value(Some(now.0)));
            }
            let res = q
                .filter(workflow_executions::Column::Id.eq(id.0))
                .filter(workflow_executions::Column::WorkflowVersion.eq(from.version.as_str()))
                .exec(&txn)
                .await
                .map_err(err)?;
            if res.rows_affected != 1 {
                return Err(TxError::Conflict(format!("execution {id} changed during the migration")));
            }
            let label = to.label().map(|l| format!(" ({l})")).unwrap_or_default();
            let detail = format!("migrated from {from} to {}{label}", to.reference());
            events.push(ExecutionEvent::execution(id, Some(state), to_state, Some(detail), now));
            report.migrated.push(id);
        }
        let mut notes = Vec::new();
        if report.effects.newly_ready > 0 {
            notes.push(Notification::TasksReady);
        }
        // A hint to every waiter of a migrated execution to look again (it
        // may have finished, or its tasks changed).
        notes.extend(report.migrated.iter().map(|id| Notification::ExecutionFinished(Some(*id))));
        let writes = Writes { events: events.clone(), ..Writes::default() };
        self.backend.apply_writes(&txn, &writes, &notes, now).await?;
        txn.commit().await.map_err(err)?;
        self.backend.notify_after_commit(&notes);
        report.effects.events = events;
        Ok(report)
    }
}
