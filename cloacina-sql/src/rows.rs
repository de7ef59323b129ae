//! Conversions between stored rows and domain records. A value the domain
//! cannot accept is a [`StorageError::CorruptRow`] naming the row.

use cloacina_core::ports::{
    EventKind, ExecutionEvent, ExecutionRecord, Lease, ScheduleRecord, StorageError, TaskRecord,
};
use cloacina_core::schedule::{CatchUp, CronSchedule};
use cloacina_core::step::SnapshotError;
use cloacina_core::{
    Context, ExecutionId, FencingToken, RunnerId, TaskExecutionId, TaskState, Timestamp, WorkflowRef, WorkflowState,
};
use sea_orm::ActiveValue::{NotSet, Set};

use crate::entities::{execution_events, task_executions, task_outputs, workflow_executions};

/// A [`StorageError::CorruptRow`] naming the row and column.
pub(crate) fn corrupt(
    table: &'static str,
    id: impl ToString,
    column: &'static str,
    problem: impl ToString,
) -> StorageError {
    StorageError::CorruptRow { table, id: id.to_string(), column, problem: problem.to_string() }
}

fn non_negative(table: &'static str, id: impl ToString, column: &'static str, v: i32) -> Result<u32, StorageError> {
    u32::try_from(v).map_err(|_| corrupt(table, id, column, format!("negative value {v}")))
}

/// Free text (error messages, event details) as it is stored: a NUL
/// character, which a PostgreSQL `text` column cannot hold, is written as
/// the two characters `\0`, on every backend alike; nothing is dropped.
pub fn storable_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\\0"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// [`storable_text`] of an optional text.
pub fn storable(text: Option<&String>) -> Option<String> {
    text.map(|t| storable_text(t).into_owned())
}

/// Rows that do not fit their workflow, named by table, row and column.
pub fn snapshot_error(e: SnapshotError) -> StorageError {
    match &e {
        SnapshotError::UnknownTask { row, .. } => corrupt("task_executions", row, "task_name", &e),
        SnapshotError::MissingTask { execution, .. } => corrupt("workflow_executions", execution, "id", &e),
        _ => corrupt("task_executions", "?", "task_name", &e),
    }
}

/// `name@version`, the key task rows are claimed by.
pub fn workflow_key(r: &WorkflowRef) -> String {
    r.to_string()
}

/// Parses a task row.
pub fn task_record(m: &task_executions::Model) -> Result<TaskRecord, StorageError> {
    const T: &str = "task_executions";
    let state: TaskState = m.state.parse().map_err(|e| corrupt(T, m.id, "state", e))?;
    let lease = match (&m.lease_owner, &m.lease_incarnation, m.lease_expires_at) {
        (Some(owner), Some(inc), Some(exp)) => Some(Lease {
            owner: RunnerId::parse(owner).map_err(|e| corrupt(T, m.id, "lease_owner", e))?,
            incarnation: inc.clone(),
            expires_at: Timestamp(exp),
        }),
        _ if state == TaskState::Running => {
            return Err(corrupt(T, m.id, "lease_owner", "NULL lease on a running task"));
        }
        _ => None,
    };
    Ok(TaskRecord {
        id: TaskExecutionId(m.id),
        execution_id: ExecutionId(m.execution_id),
        name: m.task_name.clone(),
        state,
        attempt: non_negative(T, m.id, "attempt", m.attempt)?,
        ready_at: Timestamp(m.ready_at),
        lease,
        fencing_token: FencingToken(m.fencing_token),
        recovery_count: non_negative(T, m.id, "recovery_count", m.recovery_count)?,
        error: m.error.clone(),
        started_at: m.started_at.map(Timestamp),
        finished_at: m.finished_at.map(Timestamp),
    })
}

/// The columns of an execution row besides its input.
#[derive(Debug, Clone, sea_orm::FromQueryResult)]
pub struct ExecutionHead {
    /// Id.
    pub id: uuid::Uuid,
    /// Workflow name.
    pub workflow_name: String,
    /// Workflow version.
    pub workflow_version: String,
    /// State.
    pub state: String,
    /// Error.
    pub error: Option<String>,
    /// Origin.
    pub origin: String,
    /// Created.
    pub created_at: i64,
    /// Updated.
    pub updated_at: i64,
    /// Finished.
    pub finished_at: Option<i64>,
    /// Version label.
    pub workflow_label: Option<String>,
    /// Tasks not yet terminal, when known.
    pub unfinished: Option<i32>,
}

impl From<workflow_executions::Model> for ExecutionHead {
    fn from(m: workflow_executions::Model) -> Self {
        Self {
            id: m.id,
            workflow_name: m.workflow_name,
            workflow_version: m.workflow_version,
            state: m.state,
            error: m.error,
            origin: m.origin,
            created_at: m.created_at,
            updated_at: m.updated_at,
            finished_at: m.finished_at,
            workflow_label: m.workflow_label,
            unfinished: m.unfinished,
        }
    }
}

/// Parses an execution row; `input` is the stored input text if loaded.
pub fn execution_record(h: &ExecutionHead, input: Option<&str>) -> Result<ExecutionRecord, StorageError> {
    const T: &str = "workflow_executions";
    Ok(ExecutionRecord {
        id: ExecutionId(h.id),
        workflow: WorkflowRef { name: h.workflow_name.clone(), version: h.workflow_version.clone() },
        label: h.workflow_label.clone(),
        state: h.state.parse::<WorkflowState>().map_err(|e| corrupt(T, h.id, "state", e))?,
        input: match input {
            Some(text) => Context::from_json(text).map_err(|e| corrupt(T, h.id, "input", e))?,
            None => Context::new(),
        },
        error: h.error.clone(),
        origin: h.origin.clone(),
        created_at: Timestamp(h.created_at),
        updated_at: Timestamp(h.updated_at),
        finished_at: h.finished_at.map(Timestamp),
    })
}

/// A full execution row.
pub fn execution_from_model(m: workflow_executions::Model) -> Result<ExecutionRecord, StorageError> {
    let input = m.input.clone();
    execution_record(&ExecutionHead::from(m), Some(&input))
}

/// A new execution row.
/// A new execution row; `unfinished` is its counter (see
/// [`NewCounters`](cloacina_core::step::NewCounters)), `None` when unknown.
pub fn execution_insert(e: &ExecutionRecord, unfinished: Option<i32>) -> workflow_executions::ActiveModel {
    workflow_executions::ActiveModel {
        id: Set(e.id.0),
        workflow_name: Set(e.workflow.name.clone()),
        workflow_version: Set(e.workflow.version.clone()),
        workflow_label: Set(e.label.clone()),
        state: Set(e.state.as_str().to_owned()),
        input: Set(e.input.to_json()),
        error: Set(storable(e.error.as_ref())),
        origin: Set(storable_text(&e.origin).into_owned()),
        created_at: Set(e.created_at.0),
        updated_at: Set(e.updated_at.0),
        finished_at: Set(e.finished_at.map(|t| t.0)),
        unfinished: Set(unfinished),
    }
}

/// Parses a stored output.
pub fn output_context(m: &task_outputs::Model) -> Result<Context, StorageError> {
    Context::from_json(&m.context).map_err(|e| corrupt("task_outputs", m.task_execution_id, "context", e))
}

/// A new event row.
pub fn event_insert(e: &ExecutionEvent) -> execution_events::ActiveModel {
    execution_events::ActiveModel {
        id: NotSet,
        execution_id: Set(e.execution_id.0),
        kind: Set(e.kind.as_str().to_owned()),
        task_name: Set(e.task.clone()),
        task_execution_id: Set(e.task_execution_id.map(|t| t.0)),
        from_state: Set(e.from.clone()),
        to_state: Set(e.to.clone()),
        detail: Set(storable(e.detail.as_ref())),
        at: Set(e.at.0),
    }
}

/// Parses an event row.
pub fn event_record(m: &execution_events::Model) -> Result<ExecutionEvent, StorageError> {
    Ok(ExecutionEvent {
        execution_id: ExecutionId(m.execution_id),
        kind: EventKind::parse(&m.kind)
            .ok_or_else(|| corrupt("execution_events", m.id, "kind", format!("unknown kind `{}`", m.kind)))?,
        task: m.task_name.clone(),
        task_execution_id: m.task_execution_id.map(TaskExecutionId),
        from: m.from_state.clone(),
        to: m.to_state.clone(),
        detail: m.detail.clone(),
        at: Timestamp(m.at),
    })
}

/// Parses a schedule row (its expression, time zone and policy are
/// validated again: a row edited by hand into nonsense is named, not run).
pub fn schedule_record(m: &crate::entities::schedules::Model) -> Result<ScheduleRecord, StorageError> {
    const T: &str = "schedules";
    let catch_up: CatchUp = m.catch_up.parse().map_err(|e| corrupt(T, &m.name, "catch_up", e))?;
    let input = Context::from_json(&m.input).map_err(|e| corrupt(T, &m.name, "input", e))?;
    let schedule = CronSchedule::new(&m.name, &m.workflow_name, &m.expression)
        .map_err(|e| corrupt(T, &m.name, "expression", e))?
        .timezone(&m.timezone)
        .map_err(|e| corrupt(T, &m.name, "timezone", e))?
        .catch_up(catch_up)
        .map_err(|e| corrupt(T, &m.name, "catch_up", e))?
        .misfire_threshold(std::time::Duration::from_millis(
            u64::try_from(m.misfire_ms).map_err(|_| corrupt(T, &m.name, "misfire_ms", "negative"))?,
        ))
        .map_err(|e| corrupt(T, &m.name, "misfire_ms", e))?
        .input(input);
    Ok(ScheduleRecord {
        schedule,
        paused: m.paused,
        last_tick: Timestamp(m.last_tick_at),
        next_tick: m.next_tick_at.map(Timestamp),
        created_at: Timestamp(m.created_at),
        updated_at: Timestamp(m.updated_at),
    })
}

/// A schedule record as a row.
pub fn schedule_row(r: &ScheduleRecord) -> crate::entities::schedules::ActiveModel {
    let s = &r.schedule;
    crate::entities::schedules::ActiveModel {
        name: Set(s.name().to_owned()),
        workflow_name: Set(s.workflow().to_owned()),
        expression: Set(s.expression().to_owned()),
        timezone: Set(s.timezone_name().to_owned()),
        catch_up: Set(s.catch_up_policy().to_string()),
        misfire_ms: Set(i64::try_from(s.misfire().as_millis()).unwrap_or(i64::MAX)),
        input: Set(s.input_context().to_json()),
        paused: Set(r.paused),
        last_tick_at: Set(r.last_tick.0),
        next_tick_at: Set(r.next_tick.map(|t| t.0)),
        created_at: Set(r.created_at.0),
        updated_at: Set(r.updated_at.0),
    }
}
