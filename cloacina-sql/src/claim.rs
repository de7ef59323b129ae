//! The claim statement's shared parts: which rows are claimable and what a
//! claim writes. The state names come from the state machines
//! ([`Transition::claim`], [`WorkflowState::CLAIMABLE`]); each backend wraps
//! the parts in its own statement (SQLite: `UPDATE … WHERE id IN (…)`
//! inside its exclusive write transaction; PostgreSQL: `UPDATE … FROM (…
//! FOR UPDATE SKIP LOCKED)`).

use cloacina_core::ports::ClaimRequest;
use cloacina_core::{Timestamp, Transition, WorkflowState};
use sea_orm::{DbBackend, Statement, Value};

/// Bound parameters in the order they appear in a statement's text.
#[derive(Debug)]
pub struct Params {
    backend: DbBackend,
    values: Vec<Value>,
}

impl Params {
    /// No parameters yet.
    pub fn new(backend: DbBackend) -> Self {
        Self { backend, values: Vec::new() }
    }

    /// Binds `v` and returns its placeholder (`$n` on PostgreSQL, `?` on
    /// SQLite), to be written where it stands in the text.
    pub fn bind(&mut self, v: impl Into<Value>) -> String {
        self.values.push(v.into());
        match self.backend {
            DbBackend::Postgres => format!("${}", self.values.len()),
            _ => "?".to_owned(),
        }
    }

    /// The values, in order.
    pub fn into_values(self) -> Vec<Value> {
        self.values
    }
}

/// `SET` list and claimable-rows `SELECT` of a claim of up to `req.limit`
/// tasks of the workflow keys `keys`, in text order (`SET` first).
/// `token` is how the statement names the claimed row's current token
/// (`fencing_token`, or `u.fencing_token` under an alias).
pub fn claim_parts(
    p: &mut Params,
    req: &ClaimRequest,
    keys: &[String],
    now: Timestamp,
    token: &str,
) -> (String, String) {
    let claim = Transition::claim();
    let set = format!(
        "state = '{running}', fencing_token = {token} + 1, lease_owner = {owner}, lease_incarnation = {inc}, \
         lease_expires_at = {expires}, started_at = {started}, updated_at = {updated}",
        running = claim.to.as_str(),
        owner = p.bind(req.owner.runner.as_str()),
        inc = p.bind(req.owner.incarnation.as_str()),
        expires = p.bind(now.plus(req.owner.lease_ttl).0),
        started = p.bind(now.0),
        updated = p.bind(now.0),
    );
    let ready_at = p.bind(now.0);
    let key_list = keys.iter().map(|k| p.bind(k.as_str())).collect::<Vec<_>>().join(", ");
    let claimable = WorkflowState::CLAIMABLE.iter().map(|s| format!("'{}'", s.as_str())).collect::<Vec<_>>().join(", ");
    let limit = p.bind(i64::try_from(req.limit).unwrap_or(i64::MAX));
    // The state is a literal, so the partial index on ready rows is used.
    let select = format!(
        "SELECT t.id FROM task_executions t JOIN workflow_executions e ON e.id = t.execution_id \
         WHERE t.state = '{ready}' AND t.ready_at <= {ready_at} AND t.workflow_key IN ({key_list}) \
           AND e.state IN ({claimable}) \
         ORDER BY t.ready_at, t.id LIMIT {limit}",
        ready = claim.from.as_str(),
    );
    (set, select)
}

/// The statement that starts the pending executions among `ids`
/// ([`Transition::start`]) and returns the ids it moved. On PostgreSQL,
/// rows another transaction has locked are skipped (`FOR UPDATE SKIP
/// LOCKED`): that transaction leaves them running or terminal itself, so
/// concurrent commits never wait on each other here; SQLite's write
/// transaction is exclusive already.
pub fn start_statement(backend: DbBackend, ids: &[uuid::Uuid], now: Timestamp) -> Statement {
    let start = Transition::start();
    let mut p = Params::new(backend);
    let updated = p.bind(now.0);
    let list = ids.iter().map(|id| p.bind(*id)).collect::<Vec<_>>().join(", ");
    let guard = format!("id IN ({list}) AND state = '{}'", start.from.as_str());
    let rows = match backend {
        DbBackend::Postgres => {
            format!("SELECT id FROM workflow_executions WHERE {guard} ORDER BY id FOR UPDATE SKIP LOCKED")
        }
        _ => format!("SELECT id FROM workflow_executions WHERE {guard}"),
    };
    let sql = format!(
        "UPDATE workflow_executions SET state = '{to}', updated_at = {updated} WHERE id IN ({rows}) RETURNING id",
        to = start.to.as_str()
    );
    Statement::from_sql_and_values(backend, sql, p.into_values())
}
