//! The runner's settings and its builder.

use std::sync::Arc;
use std::time::Duration;

use cloacina_core::{Clock, RandomSource, RecoveryPolicy, RunnerId, SystemClock, TenantName, Workflow};

use crate::error::{Result, RunnerError};
use crate::runner::DefaultRunner;

/// Validated settings of a runner. Built by [`DefaultRunnerBuilder`].
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub(crate) database_url: String,
    pub(crate) tenant: Option<TenantName>,
    pub(crate) enable_recovery: bool,
    pub(crate) max_concurrent_tasks: usize,
    pub(crate) default_task_timeout: Option<Duration>,
    pub(crate) recovery: RecoveryPolicy,
    pub(crate) recovery_interval: Duration,
    pub(crate) pool_size: u32,
    pub(crate) runner_id: Option<RunnerId>,
    pub(crate) runner_name: String,
    pub(crate) context_size_limit: usize,
    pub(crate) shutdown_grace_period: Duration,
    pub(crate) fallback_poll_interval: Duration,
    pub(crate) schedule_poll_interval: Duration,
    pub(crate) connect_timeout: Duration,
}

impl RunnerConfig {
    /// The tenant (`None`: PostgreSQL `public` / the base SQLite file).
    pub fn tenant(&self) -> Option<&TenantName> {
        self.tenant.as_ref()
    }
    /// Maximum number of task bodies running at once.
    pub fn max_concurrent_tasks(&self) -> usize {
        self.max_concurrent_tasks
    }
    /// Lease TTL, heartbeat interval and maximum recoveries.
    pub fn recovery_policy(&self) -> RecoveryPolicy {
        self.recovery
    }
    /// Whether recovery runs at start-up and on its interval.
    pub fn recovery_enabled(&self) -> bool {
        self.enable_recovery
    }
}

/// Builds a [`DefaultRunner`]. Every setting has a documented default;
/// [`build`](Self::build) rejects values that make no sense (it never
/// clamps them).
///
/// ```no_run
/// # async fn demo() -> Result<(), cloacina_runner::RunnerError> {
/// use cloacina_runner::DefaultRunner;
/// use std::time::Duration;
/// let runner = DefaultRunner::builder()
///     .database_url("sqlite://data/app.db")
///     .schema("tenant_acme")
///     .enable_recovery(true)
///     .max_concurrent_tasks(10)
///     .default_task_timeout(Duration::from_secs(300))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
pub struct DefaultRunnerBuilder {
    database_url: Option<String>,
    schema: Option<String>,
    enable_recovery: bool,
    max_concurrent_tasks: usize,
    default_task_timeout: Option<Duration>,
    lease_ttl: Duration,
    heartbeat_interval: Duration,
    recovery_interval: Duration,
    max_recoveries: u32,
    pool_size: u32,
    runner_id: Option<String>,
    runner_name: Option<String>,
    context_size_limit: usize,
    shutdown_grace_period: Duration,
    fallback_poll_interval: Duration,
    schedule_poll_interval: Duration,
    connect_timeout: Duration,
    workflows: Vec<Workflow>,
    clock: Arc<dyn Clock>,
    random: Option<Arc<dyn RandomSource>>,
}

impl Default for DefaultRunnerBuilder {
    fn default() -> Self {
        Self {
            database_url: None,
            schema: None,
            enable_recovery: true,
            max_concurrent_tasks: 32,
            default_task_timeout: None,
            lease_ttl: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(2),
            recovery_interval: Duration::from_secs(1),
            max_recoveries: 3,
            pool_size: 10,
            runner_id: None,
            runner_name: None,
            context_size_limit: 16 * 1024 * 1024,
            shutdown_grace_period: Duration::from_secs(30),
            fallback_poll_interval: Duration::from_millis(250),
            schedule_poll_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(30),
            workflows: Vec::new(),
            clock: Arc::new(SystemClock),
            random: None,
        }
    }
}

impl std::fmt::Debug for DefaultRunnerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DefaultRunnerBuilder")
            .field("database_url", &self.database_url.as_deref().map(crate::runner::redact))
            .field("schema", &self.schema)
            .field("max_concurrent_tasks", &self.max_concurrent_tasks)
            .finish_non_exhaustive()
    }
}

impl DefaultRunnerBuilder {
    /// **Required.** `sqlite://path/file.db`, `sqlite::memory:`, or
    /// `postgres://user:password@host:port/database`.
    pub fn database_url(mut self, url: &str) -> Self {
        self.database_url = Some(url.to_owned());
        self
    }
    /// The tenant: a PostgreSQL schema, or a SQLite file next to the base
    /// file. Default: none (`public` / the base file). Names: letters,
    /// digits and underscores, see [`TenantName`].
    pub fn schema(mut self, tenant: &str) -> Self {
        self.schema = Some(tenant.to_owned());
        self
    }
    /// Whether the runner recovers interrupted work: at start-up (before
    /// `build` returns) and then every `recovery_interval`. Default `true`.
    ///
    /// With `false`, tasks whose runner died stay `Running` until some
    /// runner with recovery enabled sweeps the tenant; the user must then
    /// run one (or restart this one with recovery on). Leases are still
    /// taken and released, and heartbeats still sent.
    pub fn enable_recovery(mut self, on: bool) -> Self {
        self.enable_recovery = on;
        self
    }
    /// Maximum task bodies running at once in this runner. Default 32.
    /// Must be at least 1.
    pub fn max_concurrent_tasks(mut self, n: usize) -> Self {
        self.max_concurrent_tasks = n;
        self
    }
    /// Timeout of each attempt of tasks that set none themselves. Default:
    /// none. Must be positive when set.
    pub fn default_task_timeout(mut self, d: Duration) -> Self {
        self.default_task_timeout = Some(d);
        self
    }
    /// How long a runner's leases last without a heartbeat. Default 10 s.
    /// A crashed runner's tasks are recovered within about this time plus
    /// `recovery_interval`.
    pub fn lease_ttl(mut self, d: Duration) -> Self {
        self.lease_ttl = d;
        self
    }
    /// How often liveness is renewed (one write per runner, whatever the
    /// number of running tasks). Default 2 s. Must be shorter than the
    /// lease TTL.
    pub fn heartbeat_interval(mut self, d: Duration) -> Self {
        self.heartbeat_interval = d;
        self
    }
    /// How often the recovery sweep runs. Default 1 s. Must be positive.
    pub fn recovery_interval(mut self, d: Duration) -> Self {
        self.recovery_interval = d;
        self
    }
    /// How often a task may lose its runner before it is Abandoned.
    /// Default 3.
    pub fn max_recoveries(mut self, n: u32) -> Self {
        self.max_recoveries = n;
        self
    }
    /// Database connections (PostgreSQL pool; SQLite read pool). Default 10.
    /// Must be at least 1.
    pub fn pool_size(mut self, n: u32) -> Self {
        self.pool_size = n;
        self
    }
    /// A stable runner id (letters, digits, `_`, `-`, `.`). A runner that
    /// restarts with the same id takes back its previous leases at once
    /// instead of waiting for them to expire. Run at most one process per
    /// id. Default: a random id per process.
    pub fn runner_id(mut self, id: &str) -> Self {
        self.runner_id = Some(id.to_owned());
        self
    }
    /// A human-readable name for logs and the liveness table. Default
    /// `cloacina-<pid>`.
    pub fn runner_name(mut self, name: &str) -> Self {
        self.runner_name = Some(name.to_owned());
        self
    }
    /// The largest output context (serialized JSON bytes) a task may
    /// return; a larger one fails the attempt. Default 16 MiB. Must be
    /// positive.
    pub fn context_size_limit(mut self, bytes: usize) -> Self {
        self.context_size_limit = bytes;
        self
    }
    /// How long `shutdown` lets running tasks finish before it cancels them
    /// and releases their leases. Default 30 s.
    pub fn shutdown_grace_period(mut self, d: Duration) -> Self {
        self.shutdown_grace_period = d;
        self
    }
    /// How often the runner looks for work and finished executions without
    /// a wake-up (other processes on SQLite, missed notifications). Default
    /// 250 ms. Must be positive.
    pub fn fallback_poll_interval(mut self, d: Duration) -> Self {
        self.fallback_poll_interval = d;
        self
    }
    /// How often the runner looks for due cron ticks (a cheap read when
    /// none is due). A tick starts within about this time. Default 1 s.
    /// Must be positive.
    pub fn schedule_poll_interval(mut self, d: Duration) -> Self {
        self.schedule_poll_interval = d;
        self
    }
    /// How long `build` keeps retrying an unreachable database before it
    /// fails. Default 30 s.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }
    /// Registers a workflow (same as [`DefaultRunner::register_workflow`]).
    pub fn workflow(mut self, wf: Workflow) -> Self {
        self.workflows.push(wf);
        self
    }
    /// The clock (default: the system clock). For tests.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// The random source of retry jitter (default: seeded from the OS). For
    /// tests.
    pub fn random_source(mut self, r: Arc<dyn RandomSource>) -> Self {
        self.random = Some(r);
        self
    }

    pub(crate) fn validate(&self) -> Result<RunnerConfig> {
        let url = self.database_url.clone().ok_or_else(|| RunnerError::config("database_url", "is required"))?;
        let tenant = self.schema.as_deref().map(TenantName::parse).transpose()?;
        if self.max_concurrent_tasks == 0 {
            return Err(RunnerError::config("max_concurrent_tasks", "must be at least 1, got 0"));
        }
        if self.default_task_timeout == Some(Duration::ZERO) {
            return Err(RunnerError::config("default_task_timeout", "must be positive"));
        }
        let recovery =
            RecoveryPolicy::new(self.lease_ttl, self.heartbeat_interval, self.max_recoveries).map_err(|e| match e {
                cloacina_core::RecoveryPolicyError::HeartbeatNotShorterThanLease { .. } => {
                    RunnerError::config("heartbeat_interval", format!("{e}"))
                }
                cloacina_core::RecoveryPolicyError::Zero { what } if what.contains("heartbeat") => {
                    RunnerError::config("heartbeat_interval", format!("{e}"))
                }
                other => RunnerError::config("lease_ttl", format!("{other}")),
            })?;
        for (name, d) in [
            ("recovery_interval", self.recovery_interval),
            ("fallback_poll_interval", self.fallback_poll_interval),
            ("schedule_poll_interval", self.schedule_poll_interval),
            ("connect_timeout", self.connect_timeout),
        ] {
            if d.is_zero() {
                return Err(RunnerError::config(name, "must be positive"));
            }
        }
        if self.pool_size == 0 {
            return Err(RunnerError::config("pool_size", "must be at least 1, got 0"));
        }
        if self.context_size_limit == 0 {
            return Err(RunnerError::config("context_size_limit", "must be at least 1 byte"));
        }
        let runner_id = self
            .runner_id
            .as_deref()
            .map(RunnerId::parse)
            .transpose()
            .map_err(|e| RunnerError::config("runner_id", e.to_string()))?;
        Ok(RunnerConfig {
            database_url: url,
            tenant,
            enable_recovery: self.enable_recovery,
            max_concurrent_tasks: self.max_concurrent_tasks,
            default_task_timeout: self.default_task_timeout,
            recovery,
            recovery_interval: self.recovery_interval,
            pool_size: self.pool_size,
            runner_id,
            runner_name: self.runner_name.clone().unwrap_or_else(|| format!("cloacina-{}", std::process::id())),
            context_size_limit: self.context_size_limit,
            shutdown_grace_period: self.shutdown_grace_period,
            fallback_poll_interval: self.fallback_poll_interval,
            schedule_poll_interval: self.schedule_poll_interval,
            connect_timeout: self.connect_timeout,
        })
    }

    /// Validates the settings, opens the database (creating the tenant's
    /// schema or file and applying migrations if needed), registers the
    /// runner, recovers interrupted work (unless disabled) and starts
    /// running. Returns once recovery at start-up is done.
    pub async fn build(self) -> Result<DefaultRunner> {
        let config = self.validate()?;
        let random = self.random.unwrap_or_else(|| Arc::new(crate::runner::OsSeeded::new()));
        DefaultRunner::start(config, self.workflows, self.clock, random).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b() -> DefaultRunnerBuilder {
        DefaultRunnerBuilder::default().database_url("sqlite::memory:")
    }

    fn option_of(r: Result<RunnerConfig>) -> &'static str {
        match r {
            Err(RunnerError::InvalidConfig { option, .. }) => option,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn nonsense_is_an_error_not_a_clamp() {
        assert_eq!(option_of(DefaultRunnerBuilder::default().validate()), "database_url");
        assert_eq!(option_of(b().max_concurrent_tasks(0).validate()), "max_concurrent_tasks");
        assert_eq!(option_of(b().heartbeat_interval(Duration::from_secs(10)).validate()), "heartbeat_interval");
        assert_eq!(
            option_of(b().lease_ttl(Duration::from_secs(1)).heartbeat_interval(Duration::from_secs(2)).validate()),
            "heartbeat_interval"
        );
        assert_eq!(option_of(b().lease_ttl(Duration::ZERO).validate()), "lease_ttl");
        assert_eq!(option_of(b().heartbeat_interval(Duration::ZERO).validate()), "heartbeat_interval");
        assert_eq!(option_of(b().schedule_poll_interval(Duration::ZERO).validate()), "schedule_poll_interval");
        assert_eq!(option_of(b().recovery_interval(Duration::ZERO).validate()), "recovery_interval");
        assert_eq!(option_of(b().fallback_poll_interval(Duration::ZERO).validate()), "fallback_poll_interval");
        assert_eq!(option_of(b().pool_size(0).validate()), "pool_size");
        assert_eq!(option_of(b().context_size_limit(0).validate()), "context_size_limit");
        assert_eq!(option_of(b().default_task_timeout(Duration::ZERO).validate()), "default_task_timeout");
        assert_eq!(option_of(b().runner_id("has space").validate()), "runner_id");
        assert!(matches!(b().schema("bad-name").validate(), Err(RunnerError::InvalidTenant(_))));
    }

    #[test]
    fn defaults_are_valid() {
        let c = b().validate().unwrap();
        assert_eq!(c.max_concurrent_tasks, 32);
        assert!(c.enable_recovery);
        assert_eq!(c.recovery.lease_ttl(), Duration::from_secs(10));
        assert_eq!(c.recovery.max_recoveries(), 3);
    }
}
