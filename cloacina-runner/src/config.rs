//! The runner's settings and its builder.

use std::sync::Arc;
use std::time::Duration;

use cloacina_core::{Clock, RandomSource, RecoveryPolicy, RunnerId, SystemClock, TenantName, Workflow};

use crate::engine::state::FaultHook;
use crate::error::{Result, RunnerError};
use crate::runner::DefaultRunner;

/// A database URL held so that it cannot be printed with its password:
/// `Debug` and `Display` show it redacted ([`redact_url`](cloacina_core::redact_url)).
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }
    /// The URL itself, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", cloacina_core::redact_url(&self.0))
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&cloacina_core::redact_url(&self.0))
    }
}

/// Validated settings of a runner. Built by [`DefaultRunnerBuilder`].
/// Its `Debug` output shows the database URL without its password.
#[derive(Clone)]
pub struct RunnerConfig {
    pub(crate) database_url: DatabaseUrl,
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

impl std::fmt::Debug for RunnerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerConfig")
            .field("database_url", &self.database_url)
            .field("tenant", &self.tenant)
            .field("enable_recovery", &self.enable_recovery)
            .field("max_concurrent_tasks", &self.max_concurrent_tasks)
            .field("default_task_timeout", &self.default_task_timeout)
            .field("recovery", &self.recovery)
            .field("recovery_interval", &self.recovery_interval)
            .field("pool_size", &self.pool_size)
            .field("runner_id", &self.runner_id)
            .field("runner_name", &self.runner_name)
            .field("context_size_limit", &self.context_size_limit)
            .field("shutdown_grace_period", &self.shutdown_grace_period)
            .field("fallback_poll_interval", &self.fallback_poll_interval)
            .field("schedule_poll_interval", &self.schedule_poll_interval)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// The largest `max_concurrent_tasks`.
pub const MAX_CONCURRENT_TASKS: usize = 65_536;
/// The largest `pool_size`.
pub const MAX_POOL_SIZE: u32 = 1_000;
/// The longest interval, lease, grace period or connect timeout (24 h).
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// The longest `default_task_timeout` (30 days).
pub const MAX_TASK_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);
/// The largest `context_size_limit` (1 GiB).
pub const MAX_CONTEXT_SIZE: usize = 1 << 30;

impl RunnerConfig {
    /// The database URL (printed redacted).
    pub fn database_url(&self) -> &DatabaseUrl {
        &self.database_url
    }
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
///     .tenant("tenant_acme")
///     .enable_recovery(true)
///     .max_concurrent_tasks(10)
///     .default_task_timeout(Duration::from_secs(300))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
pub struct DefaultRunnerBuilder {
    database_url: Option<DatabaseUrl>,
    tenant: Option<String>,
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
    fault_hook: Option<FaultHook>,
}

impl Default for DefaultRunnerBuilder {
    fn default() -> Self {
        Self {
            database_url: None,
            tenant: None,
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
            fault_hook: None,
        }
    }
}

impl std::fmt::Debug for DefaultRunnerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DefaultRunnerBuilder")
            .field("database_url", &self.database_url)
            .field("tenant", &self.tenant)
            .field("max_concurrent_tasks", &self.max_concurrent_tasks)
            .finish_non_exhaustive()
    }
}

impl DefaultRunnerBuilder {
    /// **Required.** `sqlite://path/file.db`, `sqlite::memory:`, or
    /// `postgres://user:password@host:port/database`.
    pub fn database_url(mut self, url: impl AsRef<str>) -> Self {
        self.database_url = Some(DatabaseUrl::new(url.as_ref()));
        self
    }
    /// The tenant: a PostgreSQL schema, or a SQLite file next to the base
    /// file. Default: none (`public` / the base file). Names: letters,
    /// digits and underscores, see [`TenantName`].
    pub fn tenant(mut self, tenant: impl AsRef<str>) -> Self {
        self.tenant = Some(tenant.as_ref().to_owned());
        self
    }
    /// The same as [`tenant`](Self::tenant): the name this setting had in
    /// the first release, kept for code written against it.
    pub fn schema(self, tenant: impl AsRef<str>) -> Self {
        self.tenant(tenant)
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
    /// From 1 to [`MAX_CONCURRENT_TASKS`] (65,536).
    pub fn max_concurrent_tasks(mut self, n: usize) -> Self {
        self.max_concurrent_tasks = n;
        self
    }
    /// Timeout of each attempt of tasks that set none themselves. Default:
    /// none. Positive and at most [`MAX_TASK_TIMEOUT`] (30 days) when set.
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
    /// From 1 to [`MAX_POOL_SIZE`] (1,000).
    pub fn pool_size(mut self, n: u32) -> Self {
        self.pool_size = n;
        self
    }
    /// A stable runner id (letters, digits, `_`, `-`, `.`). A runner that
    /// restarts with the same id takes back its previous leases at once
    /// instead of waiting for them to expire. Run at most one process per
    /// id. Default: a random id per process.
    pub fn runner_id(mut self, id: impl AsRef<str>) -> Self {
        self.runner_id = Some(id.as_ref().to_owned());
        self
    }
    /// A human-readable name for logs and the liveness table. Default
    /// `cloacina-<pid>`.
    pub fn runner_name(mut self, name: impl AsRef<str>) -> Self {
        self.runner_name = Some(name.as_ref().to_owned());
        self
    }
    /// The largest context (serialized JSON bytes) an execution may be
    /// started with (a larger input is refused by `execute`) and a task may
    /// return (a larger output fails the attempt). Default 16 MiB. From 1
    /// byte to [`MAX_CONTEXT_SIZE`] (1 GiB).
    pub fn context_size_limit(mut self, bytes: usize) -> Self {
        self.context_size_limit = bytes;
        self
    }
    /// How long `shutdown` lets running tasks finish before it cancels them
    /// and releases their leases. Default 30 s. At most [`MAX_INTERVAL`]
    /// (24 h); zero cancels them at once.
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
    /// For Cloacina's own tests: a hook every background loop calls with
    /// its name on each round (a test makes one panic). Not part of the
    /// API.
    #[doc(hidden)]
    pub fn fault_hook(mut self, hook: Arc<dyn Fn(&'static str) + Send + Sync>) -> Self {
        self.fault_hook = Some(hook);
        self
    }

    pub(crate) fn validate(&self) -> Result<RunnerConfig> {
        let url = self.database_url.clone().ok_or_else(|| RunnerError::config("database_url", "is required"))?;
        let tenant = self.tenant.as_deref().map(TenantName::parse).transpose()?;
        if !(1..=MAX_CONCURRENT_TASKS).contains(&self.max_concurrent_tasks) {
            return Err(RunnerError::config(
                "max_concurrent_tasks",
                format!("must be from 1 to {MAX_CONCURRENT_TASKS}, got {}", self.max_concurrent_tasks),
            ));
        }
        if let Some(t) = self.default_task_timeout {
            if t.is_zero() {
                return Err(RunnerError::config("default_task_timeout", "must be positive"));
            }
            if t > MAX_TASK_TIMEOUT {
                return Err(RunnerError::config(
                    "default_task_timeout",
                    format!("must be at most 30 days ({MAX_TASK_TIMEOUT:?}), got {t:?}"),
                ));
            }
        }
        for (name, d) in [
            ("lease_ttl", self.lease_ttl),
            ("heartbeat_interval", self.heartbeat_interval),
            ("recovery_interval", self.recovery_interval),
            ("fallback_poll_interval", self.fallback_poll_interval),
            ("schedule_poll_interval", self.schedule_poll_interval),
            ("connect_timeout", self.connect_timeout),
            ("shutdown_grace_period", self.shutdown_grace_period),
        ] {
            if d > MAX_INTERVAL {
                return Err(RunnerError::config(name, format!("must be at most 24 h ({MAX_INTERVAL:?}), got {d:?}")));
            }
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
        if !(1..=MAX_POOL_SIZE).contains(&self.pool_size) {
            return Err(RunnerError::config(
                "pool_size",
                format!("must be from 1 to {MAX_POOL_SIZE}, got {}", self.pool_size),
            ));
        }
        if !(1..=MAX_CONTEXT_SIZE).contains(&self.context_size_limit) {
            return Err(RunnerError::config(
                "context_size_limit",
                format!("must be from 1 byte to {MAX_CONTEXT_SIZE} bytes (1 GiB), got {}", self.context_size_limit),
            ));
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
        let random = self.random.unwrap_or_else(|| Arc::new(crate::engine::state::OsSeeded::new()));
        DefaultRunner::start(config, self.workflows, self.clock, random, self.fault_hook).await
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
        assert!(matches!(b().tenant("bad-name").validate(), Err(RunnerError::InvalidTenant(_))));
        assert!(matches!(b().schema("bad-name").validate(), Err(RunnerError::InvalidTenant(_))));
    }

    #[test]
    fn values_past_their_range_are_errors_that_state_it() {
        let reason = |r: Result<RunnerConfig>| match r {
            Err(RunnerError::InvalidConfig { option, reason }) => format!("{option}: {reason}"),
            other => panic!("expected InvalidConfig, got {other:?}"),
        };
        assert_eq!(
            reason(b().max_concurrent_tasks(usize::MAX).validate()),
            format!("max_concurrent_tasks: must be from 1 to 65536, got {}", usize::MAX)
        );
        assert_eq!(
            reason(b().pool_size(u32::MAX).validate()),
            format!("pool_size: must be from 1 to 1000, got {}", u32::MAX)
        );
        assert!(
            reason(b().shutdown_grace_period(Duration::MAX).validate())
                .starts_with("shutdown_grace_period: must be at most 24 h")
        );
        assert!(reason(b().lease_ttl(Duration::MAX).validate()).starts_with("lease_ttl: must be at most 24 h"));
        assert!(
            reason(b().connect_timeout(Duration::MAX).validate()).starts_with("connect_timeout: must be at most 24 h")
        );
        assert!(
            reason(b().default_task_timeout(Duration::MAX).validate())
                .starts_with("default_task_timeout: must be at most 30 days")
        );
        assert!(
            reason(b().context_size_limit(usize::MAX).validate())
                .starts_with("context_size_limit: must be from 1 byte")
        );
        // The largest allowed values are accepted.
        let ok = b()
            .max_concurrent_tasks(MAX_CONCURRENT_TASKS)
            .pool_size(MAX_POOL_SIZE)
            .shutdown_grace_period(MAX_INTERVAL)
            .default_task_timeout(MAX_TASK_TIMEOUT)
            .context_size_limit(MAX_CONTEXT_SIZE)
            .validate()
            .unwrap();
        assert_eq!(ok.max_concurrent_tasks(), MAX_CONCURRENT_TASKS);
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let c = DefaultRunnerBuilder::default().database_url("postgres://app:hunter2@db:5432/app").validate().unwrap();
        let text = format!("{c:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("postgres://app:***@db:5432/app"), "{text}");
        let b = format!("{:?}", DefaultRunnerBuilder::default().database_url("postgres:/app:hunter2@db/app"));
        assert!(!b.contains("hunter2") && b.contains("app:***@db"), "{b}");
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
