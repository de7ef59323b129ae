//! Runner registration, heartbeats, release at shutdown, lease checks.

use std::collections::HashMap;

use cloacina_core::ports::{Effects, Heartbeat, RunnerRegistration};
use cloacina_core::step::Step;
use cloacina_core::{FencingToken, TaskExecutionId, TaskState, Timestamp, WorkflowSet};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::backend::{SqlBackend, TxError};
use crate::entities::{runners, task_executions};
use crate::ops::snapshot::{self, Detail};
use crate::storage::SqlStorage;

/// The `serves` column: the runner's workflow keys as a JSON array.
fn serves(reg: &RunnerRegistration) -> String {
    let keys: Vec<String> = reg.serves.iter().map(crate::rows::workflow_key).collect();
    serde_json::Value::from(keys).to_string()
}

impl<B: SqlBackend> SqlStorage<B> {
    pub(crate) async fn try_register(&self, reg: &RunnerRegistration, now: Timestamp) -> Result<(), TxError> {
        let err = |e| self.backend.classify(e);
        let txn = self.begin().await?;
        runners::Entity::insert(runners::ActiveModel {
            id: Set(reg.id.to_string()),
            name: Set(reg.name.clone()),
            incarnation: Set(reg.incarnation.clone()),
            status: Set("alive".into()),
            started_at: Set(now.0),
            heartbeat_at: Set(now.0),
            expires_at: Set(now.plus(reg.lease_ttl).0),
            serves: Set(serves(reg)),
        })
        .on_conflict(
            OnConflict::column(runners::Column::Id)
                .update_columns([
                    runners::Column::Name,
                    runners::Column::Incarnation,
                    runners::Column::Status,
                    runners::Column::StartedAt,
                    runners::Column::HeartbeatAt,
                    runners::Column::ExpiresAt,
                    runners::Column::Serves,
                ])
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await
        .map_err(err)?;
        txn.commit().await.map_err(err)?;
        Ok(())
    }

    pub(crate) async fn try_heartbeat(&self, reg: &RunnerRegistration, now: Timestamp) -> Result<Heartbeat, TxError> {
        let err = |e| self.backend.classify(e);
        let txn = self.begin().await?;
        let res = runners::Entity::update_many()
            .set(runners::ActiveModel {
                heartbeat_at: Set(now.0),
                expires_at: Set(now.plus(reg.lease_ttl).0),
                serves: Set(serves(reg)),
                ..Default::default()
            })
            .filter(runners::Column::Id.eq(reg.id.as_str()))
            .filter(runners::Column::Incarnation.eq(reg.incarnation.as_str()))
            .filter(runners::Column::Status.eq("alive"))
            .exec(&txn)
            .await
            .map_err(err)?;
        txn.commit().await.map_err(err)?;
        Ok(if res.rows_affected == 1 { Heartbeat::Alive } else { Heartbeat::Lost })
    }

    pub(crate) async fn try_release(&self, reg: &RunnerRegistration, now: Timestamp) -> Result<Effects, TxError> {
        let txn = self.begin().await?;
        runners::Entity::update_many()
            .set(runners::ActiveModel { status: Set("stopped".into()), ..Default::default() })
            .filter(runners::Column::Id.eq(reg.id.as_str()))
            .filter(runners::Column::Incarnation.eq(reg.incarnation.as_str()))
            .exec(&txn)
            .await
            .map_err(|e| self.backend.classify(e))?;
        self.release_mine(txn, reg, &[], "shut down", now).await
    }

    pub(crate) async fn try_release_strays(
        &self,
        reg: &RunnerRegistration,
        held: &[TaskExecutionId],
        now: Timestamp,
    ) -> Result<Effects, TxError> {
        let txn = self.begin().await?;
        self.release_mine(txn, reg, held, "its claim was lost to a failed commit", now).await
    }

    /// Puts the runner's running tasks other than `held` back to Ready. The
    /// tasks are found first, then their executions locked, and each is
    /// released only if, read again under that lock, it still runs under
    /// this runner's incarnation.
    async fn release_mine(
        &self,
        txn: sea_orm::DatabaseTransaction,
        reg: &RunnerRegistration,
        held: &[TaskExecutionId],
        why: &str,
        now: Timestamp,
    ) -> Result<Effects, TxError> {
        let err = |e| self.backend.classify(e);
        let mine: Vec<(uuid::Uuid, uuid::Uuid)> = task_executions::Entity::find()
            .select_only()
            .columns([task_executions::Column::Id, task_executions::Column::ExecutionId])
            .filter(task_executions::Column::State.eq(TaskState::Running.as_str()))
            .filter(task_executions::Column::LeaseOwner.eq(reg.id.as_str()))
            .filter(task_executions::Column::LeaseIncarnation.eq(reg.incarnation.as_str()))
            .into_tuple()
            .all(&txn)
            .await
            .map_err(err)?;
        let mut ids: Vec<uuid::Uuid> =
            mine.iter().filter(|(t, _)| !held.contains(&TaskExecutionId(*t))).map(|(_, e)| *e).collect();
        ids.sort_unstable();
        ids.dedup();
        let empty = WorkflowSet::new();
        let mut snaps = snapshot::load(&self.backend, &txn, &ids, &empty, Detail::Raw).await?;
        let mut step = Step::new(now, &empty, None);
        for snap in snaps.values_mut().filter_map(|s| s.as_mut().ok()) {
            let still_mine: Vec<TaskExecutionId> = snap
                .tasks
                .iter()
                .filter(|t| t.state == TaskState::Running && !held.contains(&t.id))
                .filter(|t| t.lease.as_ref().is_some_and(|l| l.owner == reg.id && l.incarnation == reg.incarnation))
                .map(|t| t.id)
                .collect();
            for id in still_mine {
                step.release(snap, id, why);
            }
        }
        self.commit_step(txn, step.finish(), now).await
    }

    pub(crate) async fn try_lost_leases(
        &self,
        held: &[(TaskExecutionId, FencingToken)],
    ) -> Result<Vec<TaskExecutionId>, TxError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(uuid::Uuid, String, i64)> = task_executions::Entity::find()
            .select_only()
            .columns([
                task_executions::Column::Id,
                task_executions::Column::State,
                task_executions::Column::FencingToken,
            ])
            .filter(task_executions::Column::Id.is_in(held.iter().map(|(id, _)| id.0)))
            .into_tuple()
            .all(self.backend.reader())
            .await
            .map_err(|e| self.backend.classify(e))?;
        let current: HashMap<uuid::Uuid, (String, i64)> = rows.into_iter().map(|(id, s, t)| (id, (s, t))).collect();
        Ok(held
            .iter()
            .filter(|(id, tok)| !matches!(current.get(&id.0), Some((s, t)) if s == TaskState::Running.as_str() && *t == tok.0))
            .map(|(id, _)| *id)
            .collect())
    }
}
