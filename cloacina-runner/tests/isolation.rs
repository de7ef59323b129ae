//! Tenants on a shared PostgreSQL cannot see, signal, block or starve each
//! other: tenant A's own role (logged in with its password on a server
//! that checks passwords) attacks tenant B. Data and privilege attacks are
//! in `cloacina-postgres/tests/tenancy.rs`
//! (`a_tenant_role_reaches_only_its_own_schema`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cloacina_postgres::{TenantAdmin, TenantCredentials, TenantOptions};
use cloacina_runner::{
    Context, DefaultRunner, RetryPolicy, RunnerError, StorageError, TaskError, TaskSpec, Workflow, WorkflowState,
    task_fn_with_run,
};
use cloacina_testkit::pg::{TestDatabase, unique_name};
use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgListener};

const BOUND: Duration = Duration::from_secs(30);

/// How an attacker computed a tenant's channel and migration lock before
/// they were secret: FNV-1a of the schema name.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

struct Tenants {
    db: TestDatabase,
    admin: TenantAdmin,
    a: TenantCredentials,
    b: TenantCredentials,
}

async fn two_tenants(prefix: &str, a_limit: u32) -> Tenants {
    let db = TestDatabase::create(prefix).await;
    let admin = TenantAdmin::connect(&db.url).await.unwrap();
    let a =
        admin.create_tenant_with(&unique_name("ta"), TenantOptions::default().connection_limit(a_limit)).await.unwrap();
    let b = admin.create_tenant(&unique_name("tb"), None).await.unwrap();
    Tenants { db, admin, a, b }
}

/// A body that waits for its gate, and records whether it was told to stop.
fn gated(id: &'static str, gate: Arc<tokio::sync::Semaphore>, stopped: Arc<AtomicBool>) -> TaskSpec {
    TaskSpec::new(
        id,
        task_fn_with_run(move |ctx: Context, run| {
            let (gate, stopped) = (gate.clone(), stopped.clone());
            async move {
                tokio::select! {
                    p = gate.acquire() => p.map_err(|e| TaskError::fatal(e.to_string()))?.forget(),
                    _ = run.cancellation.cancelled() => {
                        stopped.store(true, Ordering::SeqCst);
                        return Err(TaskError::fatal("stopped"));
                    }
                }
                Ok(ctx)
            }
        }),
    )
    .retry(RetryPolicy::none())
}

async fn b_channel(t: &Tenants) -> String {
    let mut c = PgConnection::connect(&t.db.url).await.unwrap();
    let secret: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT value FROM \"{}\".cloacina_meta WHERE key = 'notify_channel'",
        t.b.tenant
    )))
    .fetch_one(&mut c)
    .await
    .unwrap();
    format!("cloacina_{secret}")
}

/// A's role forges every kind of notification, on the channel name it
/// could once compute and on B's real channel (as if it had leaked): B's
/// running task is not stopped and its waiter not fooled. A positive
/// control — a real cancel of another execution, sent through the same
/// channel after the forgeries — is acted on, which also shows B handled
/// the forgeries before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_notifications_change_nothing() {
    let t = two_tenants("forged", 24).await;
    let (gate, stopped, control_stopped) =
        (Arc::new(tokio::sync::Semaphore::new(0)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let wf = Workflow::builder("victim").task(gated("t", gate.clone(), stopped.clone())).build().unwrap();
    let control = Workflow::builder("control").task(gated("t", gate.clone(), control_stopped.clone())).build().unwrap();
    // Long leases: only a notification can make B stop a body soon.
    let b = DefaultRunner::builder()
        .database_url(&t.b.connection_string)
        .tenant(t.b.tenant.as_str())
        .lease_ttl(Duration::from_secs(60))
        .heartbeat_interval(Duration::from_secs(20))
        .workflow(wf)
        .workflow(control)
        .build()
        .await
        .unwrap();
    let victim = b.execute_async("victim", Context::new()).await.unwrap();
    let target = b.execute_async("control", Context::new()).await.unwrap();
    let wait = tokio::spawn({
        let v = victim.clone();
        async move { v.wait().await }
    });
    let deadline = Instant::now() + BOUND;
    while b.result(target.id()).await.unwrap().tasks[0].state != cloacina_runner::TaskState::Running
        || b.result(victim.id()).await.unwrap().tasks[0].state != cloacina_runner::TaskState::Running
    {
        assert!(Instant::now() < deadline, "the bodies never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut attacker = PgConnection::connect(&t.a.connection_string).await.unwrap();
    let channels = [format!("cloacina_{:016x}", fnv1a(t.b.tenant.as_str())), b_channel(&t).await];
    let id = victim.id();
    for channel in &channels {
        for payload in [
            "ready".to_owned(),
            "finished".to_owned(),
            "cancelled".to_owned(),
            format!("cancelled:{id}"),
            format!("finished:{id}"),
            "garbage \u{1F4A3}".to_owned(),
            String::new(),
        ] {
            sqlx::query("SELECT pg_notify($1, $2)").bind(channel).bind(&payload).execute(&mut attacker).await.unwrap();
        }
    }
    // The positive control: a real cancel, from another runner of B.
    let b2 = DefaultRunner::builder().database_url(&t.b.connection_string).tenant(t.b.tenant.as_str());
    let b2 = b2.build().await.unwrap();
    b2.cancel(target.id()).await.unwrap();
    let deadline = Instant::now() + BOUND;
    while !control_stopped.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the real cancel notification was not acted on");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!stopped.load(Ordering::SeqCst), "a forged notification stopped the victim's task");
    assert!(!wait.is_finished(), "a forged notification ended the victim's wait");
    assert_eq!(b.status(id).await.unwrap(), WorkflowState::Running);
    gate.add_permits(1);
    let done = tokio::time::timeout(BOUND, wait).await.unwrap().unwrap().unwrap();
    assert!(done.is_success(), "{done:?}");
    b2.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    t.admin.remove_tenant(t.a.tenant.as_str()).await.unwrap();
    t.admin.remove_tenant(t.b.tenant.as_str()).await.unwrap();
}

/// A's role listens on the channel name it could compute (B does not use
/// it) and on B's real channel (as if it had leaked): nothing it hears
/// names an execution of B.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listening_on_another_tenants_channel_learns_nothing_usable() {
    let t = two_tenants("listen", 24).await;
    let wf = Workflow::builder("work")
        .task(TaskSpec::new("t", cloacina_runner::task_fn(|c: Context| async move { Ok::<_, TaskError>(c) })))
        .build()
        .unwrap();
    let b = DefaultRunner::builder().database_url(&t.b.connection_string).tenant(t.b.tenant.as_str()).workflow(wf);
    let b = b.build().await.unwrap();
    let computed = format!("cloacina_{:016x}", fnv1a(t.b.tenant.as_str()));
    let real = b_channel(&t).await;
    let mut ear = PgListener::connect(&t.a.connection_string).await.unwrap();
    ear.listen_all([computed.as_str(), real.as_str()]).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let h = b.execute_async("work", Context::new()).await.unwrap();
        ids.push(h.id().to_string());
        assert!(h.wait().await.unwrap().is_success());
    }
    let mut heard = Vec::new();
    while let Ok(Ok(Some(n))) = tokio::time::timeout(Duration::from_millis(500), ear.try_recv()).await {
        heard.push((n.channel().to_owned(), n.payload().to_owned()));
    }
    assert!(!heard.is_empty(), "the leaked channel carries B's wake-ups (the control)");
    for (channel, payload) in &heard {
        assert_eq!(channel, &real, "nothing on the computable name");
        assert!(["ready", "finished", "cancelled"].contains(&payload.as_str()), "payload {payload:?}");
        assert!(!ids.iter().any(|id| payload.contains(id)), "an execution id of B in {payload:?}");
    }
    b.shutdown().await.unwrap();
    t.admin.remove_tenant(t.a.tenant.as_str()).await.unwrap();
    t.admin.remove_tenant(t.b.tenant.as_str()).await.unwrap();
}

/// A's role holds the advisory lock B's migrations once took (its key was
/// computable), and tries to lock B's migration lock table (denied): B's
/// first start and its restart both finish well within the connect
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_tenants_locks_cannot_delay_a_start() {
    let t = two_tenants("locks", 24).await;
    let mut attacker = PgConnection::connect(&t.a.connection_string).await.unwrap();
    let old_key = fnv1a(&format!("cloacina:migrate:{}", t.b.tenant)) as i64;
    sqlx::query("SELECT pg_advisory_lock($1)").bind(old_key).execute(&mut attacker).await.unwrap();
    let mut tx = attacker.begin().await.unwrap();
    let denied = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("LOCK TABLE \"{}\".cloacina_meta", t.b.tenant)))
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(denied.as_database_error().and_then(|d| d.code()).as_deref(), Some("42501"), "{denied}");
    drop(tx);
    for start in ["first start (migrations)", "restart"] {
        let began = Instant::now();
        let b = DefaultRunner::builder()
            .database_url(&t.b.connection_string)
            .tenant(t.b.tenant.as_str())
            .connect_timeout(Duration::from_secs(3))
            .build()
            .await
            .unwrap_or_else(|e| panic!("{start}: {e}"));
        assert!(began.elapsed() < Duration::from_secs(3), "{start} took {:?}", began.elapsed());
        b.shutdown().await.unwrap();
    }
    drop(attacker);
    t.admin.remove_tenant(t.a.tenant.as_str()).await.unwrap();
    t.admin.remove_tenant(t.b.tenant.as_str()).await.unwrap();
}

/// Where another role *can* reach the migration lock — the legacy
/// `public` schema, which every role may use — holding it delays a start
/// that has migrations to apply by at most the connect timeout, and then
/// the error names the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_migration_lock_is_waited_for_at_most_the_connect_timeout() {
    let db = TestDatabase::create("lockwait").await;
    let first = DefaultRunner::new(&db.url).await.unwrap();
    first.shutdown().await.unwrap();
    // Pretend a migration is pending, then hold the lock from elsewhere.
    let mut c = PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql(
        "DELETE FROM public.seaql_migrations WHERE version = (SELECT max(version) FROM public.seaql_migrations)",
    )
    .execute(&mut c)
    .await
    .unwrap();
    let mut holder = PgConnection::connect(&db.url).await.unwrap();
    let mut tx = holder.begin().await.unwrap();
    sqlx::raw_sql("LOCK TABLE public.cloacina_meta IN ROW EXCLUSIVE MODE").execute(&mut *tx).await.unwrap();
    let began = Instant::now();
    let err = DefaultRunner::builder()
        .database_url(&db.url)
        .connect_timeout(Duration::from_millis(1500))
        .build()
        .await
        .unwrap_err();
    let took = began.elapsed();
    assert!(took < Duration::from_secs(10), "waited {took:?}");
    match err {
        RunnerError::Storage(StorageError::Busy { message, .. }) => {
            assert!(message.contains("migration lock") && message.contains("connect_timeout"), "{message}")
        }
        other => panic!("expected Busy naming the wait, got {other:?}"),
    }
    tx.rollback().await.unwrap();
}

/// A's role cannot hold more connections than its limit, so it cannot lock
/// B out of the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_cannot_take_more_connections_than_its_limit() {
    let t = two_tenants("conns", 5).await;
    let mut held = Vec::new();
    let refused = loop {
        match PgConnection::connect(&t.a.connection_string).await {
            Ok(c) => held.push(c),
            Err(e) => break e,
        }
        assert!(held.len() <= 5, "the limit of 5 was not enforced");
    };
    assert_eq!(held.len(), 5);
    assert_eq!(refused.as_database_error().and_then(|d| d.code()).as_deref(), Some("53300"), "{refused}");
    let b = DefaultRunner::builder().database_url(&t.b.connection_string).tenant(t.b.tenant.as_str());
    let b = b.build().await.unwrap();
    b.shutdown().await.unwrap();
    drop(held);
    t.admin.remove_tenant(t.a.tenant.as_str()).await.unwrap();
    t.admin.remove_tenant(t.b.tenant.as_str()).await.unwrap();
}

/// What another tenant can see of B, and what it cannot: it can read the
/// catalogs (schema and table names, planner statistics — PostgreSQL-wide,
/// documented), but not B's rows, B's channel secret, or the text of B's
/// sessions' queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_another_tenant_can_and_cannot_see() {
    let t = two_tenants("see", 24).await;
    let b = DefaultRunner::builder().database_url(&t.b.connection_string).tenant(t.b.tenant.as_str());
    let b = b.build().await.unwrap();
    let mut a = PgConnection::connect(&t.a.connection_string).await.unwrap();
    let schemas: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace").fetch_all(&mut a).await.unwrap();
    assert!(schemas.contains(&t.b.tenant.to_string()), "catalog visibility is PostgreSQL-wide (documented)");
    let secret = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SELECT value FROM \"{}\".cloacina_meta", t.b.tenant)))
        .execute(&mut a)
        .await
        .unwrap_err();
    assert_eq!(secret.as_database_error().and_then(|d| d.code()).as_deref(), Some("42501"));
    let queries: Vec<Option<String>> = sqlx::query_scalar("SELECT query FROM pg_stat_activity WHERE usename = $1")
        .bind(t.b.role.as_str())
        .fetch_all(&mut a)
        .await
        .unwrap();
    assert!(!queries.is_empty(), "B's sessions are there");
    assert!(
        queries.iter().all(|q| q.as_deref().is_none_or(|q| q == "<insufficient privilege>")),
        "another tenant read B's queries: {queries:?}"
    );
    b.shutdown().await.unwrap();
    t.admin.remove_tenant(t.a.tenant.as_str()).await.unwrap();
    t.admin.remove_tenant(t.b.tenant.as_str()).await.unwrap();
}
