//! Cron schedules and trigger firings.

use cloacina_core::ports::{
    DuplicateTick, ScheduleFiring, ScheduleRecord, ScheduleReport, StorageError, TriggerFiring, TriggerOutcome,
    UnreadableSchedule,
};
use cloacina_core::schedule::{CronSchedule, plan_firing};
use cloacina_core::step::Step;
use cloacina_core::{ExecutionId, Timestamp, WorkflowSet, WorkflowState};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};

use crate::backend::{SqlBackend, TxError};
use crate::entities::{schedule_ticks, schedules, trigger_firings, triggers, workflow_executions};
use crate::rows;
use crate::storage::SqlStorage;

fn schedule_not_found(name: &str) -> TxError {
    TxError::Storage(StorageError::NotFound { what: "schedule", id: name.to_owned() })
}

impl<B: SqlBackend> SqlStorage<B> {
    pub(crate) async fn try_upsert_schedule(
        &self,
        schedule: &CronSchedule,
        now: Timestamp,
    ) -> Result<ScheduleRecord, TxError> {
        let err = |e| self.backend.classify(e);
        let txn = self.begin().await?;
        let old = schedules::Entity::find_by_id(schedule.name()).one(&txn).await.map_err(err)?;
        // A stored row that cannot be read is replaced by the new definition
        // (keeping only its progress), which is what registering means.
        let previous = old.map(|m| (m.paused, Timestamp(m.last_tick_at), Timestamp(m.created_at)));
        let rec = ScheduleRecord::registered(schedule, previous, now);
        schedules::Entity::insert(rows::schedule_row(&rec))
            .on_conflict(
                OnConflict::column(schedules::Column::Name)
                    .update_columns([
                        schedules::Column::WorkflowName,
                        schedules::Column::Expression,
                        schedules::Column::Timezone,
                        schedules::Column::CatchUp,
                        schedules::Column::MisfireMs,
                        schedules::Column::Input,
                        schedules::Column::NextTickAt,
                        schedules::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await
            .map_err(err)?;
        txn.commit().await.map_err(err)?;
        Ok(rec)
    }

    pub(crate) async fn try_schedules(&self) -> Result<Vec<ScheduleRecord>, TxError> {
        let models = schedules::Entity::find()
            .order_by_asc(schedules::Column::Name)
            .all(self.backend.reader())
            .await
            .map_err(|e| self.backend.classify(e))?;
        Ok(models.iter().map(rows::schedule_record).collect::<Result<_, _>>()?)
    }

    pub(crate) async fn try_set_paused(
        &self,
        name: &str,
        paused: bool,
        now: Timestamp,
    ) -> Result<ScheduleRecord, TxError> {
        let err = |e| self.backend.classify(e);
        let txn = self.begin().await?;
        let m = schedules::Entity::find_by_id(name)
            .one(&txn)
            .await
            .map_err(err)?
            .ok_or_else(|| schedule_not_found(name))?;
        let mut rec = rows::schedule_record(&m)?;
        if rec.set_paused(paused, now) {
            schedules::Entity::update_many()
                .set(schedules::ActiveModel {
                    paused: Set(rec.paused),
                    last_tick_at: Set(rec.last_tick.0),
                    next_tick_at: Set(rec.next_tick.map(|t| t.0)),
                    updated_at: Set(now.0),
                    ..Default::default()
                })
                .filter(schedules::Column::Name.eq(name))
                .exec(&txn)
                .await
                .map_err(err)?;
        }
        txn.commit().await.map_err(err)?;
        Ok(rec)
    }

    pub(crate) async fn try_delete_schedule(&self, name: &str) -> Result<(), TxError> {
        let err = |e| self.backend.classify(e);
        let txn = self.begin().await?;
        let gone = schedules::Entity::delete_by_id(name).exec(&txn).await.map_err(err)?;
        if gone.rows_affected == 0 {
            return Err(schedule_not_found(name));
        }
        schedule_ticks::Entity::delete_many()
            .filter(schedule_ticks::Column::ScheduleName.eq(name))
            .exec(&txn)
            .await
            .map_err(err)?;
        txn.commit().await.map_err(err)?;
        Ok(())
    }

    pub(crate) async fn try_fire_schedules(
        &self,
        workflows: &WorkflowSet,
        now: Timestamp,
    ) -> Result<ScheduleReport, TxError> {
        let err = |e| self.backend.classify(e);
        let due = || {
            schedules::Entity::find()
                .filter(schedules::Column::Paused.eq(false))
                .filter(schedules::Column::NextTickAt.lte(now.0))
        };
        // Most polls find nothing: ask the reader before taking the writer.
        if due().count(self.backend.reader()).await.map_err(err)? == 0 {
            return Ok(ScheduleReport::default());
        }
        let txn = self.begin().await?;
        let models = due().order_by_asc(schedules::Column::Name).all(&txn).await.map_err(err)?;
        let mut report = ScheduleReport::default();
        let mut step = Step::new(now, workflows, None);
        for m in models {
            let rec = match rows::schedule_record(&m) {
                Ok(r) => r,
                Err(e) => {
                    report.unreadable.push(UnreadableSchedule { name: m.name, problem: e.to_string() });
                    continue;
                }
            };
            let Some(plan) = plan_firing(&rec, workflows, now) else {
                report.unknown_workflow.push(m.name);
                continue;
            };
            // Advance the schedule only from the state read: a runner that
            // advanced it first makes this a conflict, and the retry reads
            // the new state (and finds nothing due).
            let moved = schedules::Entity::update_many()
                .set(schedules::ActiveModel {
                    last_tick_at: Set(plan.last_tick.0),
                    next_tick_at: Set(plan.next_tick.map(|t| t.0)),
                    updated_at: Set(now.0),
                    ..Default::default()
                })
                .filter(schedules::Column::Name.eq(m.name.as_str()))
                .filter(schedules::Column::LastTickAt.eq(m.last_tick_at))
                .filter(schedules::Column::Paused.eq(false))
                .exec(&txn)
                .await
                .map_err(err)?;
            if moved.rows_affected != 1 {
                return Err(TxError::Conflict(format!("schedule `{}` was advanced concurrently", m.name)));
            }
            report.skipped_ticks += plan.skipped;
            for (tick, exec) in plan.runs {
                // The primary key (schedule, tick) refuses a second execution
                // of a tick outright; a tick already recorded is reported and
                // skipped, and the other schedules fire as usual.
                let inserted = schedule_ticks::Entity::insert(schedule_ticks::ActiveModel {
                    schedule_name: Set(m.name.clone()),
                    tick_at: Set(tick.0),
                    execution_id: Set(exec.id.0),
                    created_at: Set(now.0),
                })
                .on_conflict(
                    OnConflict::columns([schedule_ticks::Column::ScheduleName, schedule_ticks::Column::TickAt])
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await
                .map_err(err)?;
                if inserted == 0 {
                    report.duplicate_ticks.push(DuplicateTick { schedule: m.name.clone(), tick });
                    continue;
                }
                report.fired.push(ScheduleFiring { schedule: m.name.clone(), tick, execution: exec.id });
                step.create(exec);
            }
        }
        report.effects = self.commit_step(txn, step.finish(), now).await?;
        Ok(report)
    }

    pub(crate) async fn try_fire_trigger(
        &self,
        firing: TriggerFiring,
        workflows: &WorkflowSet,
        now: Timestamp,
    ) -> Result<TriggerOutcome, TxError> {
        let err = |e| self.backend.classify(e);
        let txn = self.begin().await?;
        // A retry of a firing whose commit succeeded unseen (the answer was
        // lost with the connection) finds its record: it fired once.
        let id = firing.execution.id;
        let recorded = trigger_firings::Entity::find_by_id(id.0).one(&txn).await.map_err(err)?;
        if recorded.is_some() {
            txn.commit().await.map_err(err)?;
            return Ok(TriggerOutcome::Fired { execution: id, effects: Default::default() });
        }
        // Lock the trigger's row: firings of one trigger take turns here.
        triggers::Entity::insert(triggers::ActiveModel {
            name: Set(firing.trigger.clone()),
            last_fired_at: Set(now.0),
        })
        .on_conflict(OnConflict::column(triggers::Column::Name).update_column(triggers::Column::LastFiredAt).to_owned())
        .exec_without_returning(&txn)
        .await
        .map_err(err)?;
        if !firing.allow_concurrent {
            let unfinished: Vec<String> = [WorkflowState::Pending, WorkflowState::Running, WorkflowState::Paused]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let stmt = Query::select()
                .column((trigger_firings::Entity, trigger_firings::Column::ExecutionId))
                .from(trigger_firings::Entity)
                .inner_join(
                    workflow_executions::Entity,
                    Expr::col((workflow_executions::Entity, workflow_executions::Column::Id))
                        .equals((trigger_firings::Entity, trigger_firings::Column::ExecutionId)),
                )
                .and_where(
                    Expr::col((trigger_firings::Entity, trigger_firings::Column::TriggerName))
                        .eq(firing.trigger.as_str()),
                )
                .and_where(
                    Expr::col((trigger_firings::Entity, trigger_firings::Column::DedupKey)).eq(firing.key.as_str()),
                )
                .and_where(
                    Expr::col((workflow_executions::Entity, workflow_executions::Column::State)).is_in(unfinished),
                )
                .limit(1)
                .to_owned();
            if let Some(row) = txn.query_one(&stmt).await.map_err(err)? {
                let id: uuid::Uuid = row.try_get("", "execution_id").map_err(err)?;
                txn.commit().await.map_err(err)?;
                return Ok(TriggerOutcome::Suppressed { running: ExecutionId(id) });
            }
        }
        trigger_firings::Entity::insert(trigger_firings::ActiveModel {
            execution_id: Set(id.0),
            trigger_name: Set(firing.trigger.clone()),
            dedup_key: Set(firing.key.clone()),
            fired_at: Set(now.0),
        })
        .exec_without_returning(&txn)
        .await
        .map_err(err)?;
        let mut step = Step::new(now, workflows, None);
        step.create(firing.execution);
        let effects = self.commit_step(txn, step.finish(), now).await?;
        Ok(TriggerOutcome::Fired { execution: id, effects })
    }
}
