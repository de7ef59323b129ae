//! Schema-per-tenant behaviour on a real PostgreSQL: scoping, the legacy
//! `public` layout beside tenants, concurrent first openings, name
//! validation, tenant roles and their isolation.

use std::time::{Duration, Instant};

use cloacina_core::ports::{ExecutionFilter, ExecutionStore, NewExecution, StorageError};
use cloacina_core::{Context, TenantNameError, WorkflowSet};
use cloacina_postgres::{PgOptions, TenantAdmin};
use cloacina_testkit::QueueExt;
use cloacina_testkit::contract::{T0, single};
use cloacina_testkit::pg::{TestDatabase, TestSchema, unique_name};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

async fn scalar(url: &str, sql: &'static str) -> String {
    let mut c = PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar::<_, String>(sql).fetch_one(&mut c).await.unwrap()
}

async fn create_one(s: &cloacina_postgres::PgStorage) -> cloacina_core::ExecutionId {
    let wf = single();
    let wfs: WorkflowSet = [wf.clone()].into_iter().collect();
    let new = NewExecution::plan(&wf, Context::new(), "test", T0);
    let id = new.id;
    s.create_executions(vec![new], None, &wfs, T0).await.unwrap();
    id
}

#[tokio::test]
async fn pooled_connections_are_scoped_to_the_tenant_schema() {
    let schema = TestSchema::new("scoped");
    let s = cloacina_postgres::open(PgOptions::new(&schema.url).tenant(&schema.name).unwrap()).await.unwrap();
    use sea_orm::ConnectionTrait;
    for _ in 0..3 {
        let row = s
            .backend()
            .connection()
            .query_one_raw(sea_orm::Statement::from_string(sea_orm::DbBackend::Postgres, "SELECT current_schema()"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.try_get_by_index::<String>(0).unwrap(), schema.name);
    }
    // The tables live in the tenant schema, the migration record too.
    let mut c = PgConnection::connect(&schema.url).await.unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1")
            .bind(&schema.name)
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(
        tables,
        [
            "cloacina_meta",
            "execution_events",
            "runners",
            "schedule_ticks",
            "schedules",
            "seaql_migrations",
            "task_executions",
            "task_outputs",
            "trigger_firings",
            "triggers",
            "workflow_executions"
        ]
    );
}

#[tokio::test]
async fn legacy_public_works_beside_tenant_schemas() {
    let db = TestDatabase::create("legacy").await;
    let legacy = cloacina_postgres::open(PgOptions::new(&db.url)).await.unwrap();
    assert_eq!(legacy.backend().schema_name(), "public");
    let t1 = cloacina_postgres::open(PgOptions::new(&db.url).tenant("tenant_001").unwrap()).await.unwrap();
    let t2 = cloacina_postgres::open(PgOptions::new(&db.url).tenant("tenant_002").unwrap()).await.unwrap();
    let ids = [create_one(&legacy).await, create_one(&t1).await, create_one(&t2).await];
    for (s, mine) in [(&legacy, ids[0]), (&t1, ids[1]), (&t2, ids[2])] {
        let seen: Vec<_> =
            s.list_executions(&ExecutionFilter::default()).await.unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(seen, vec![mine]);
    }
    // Re-opening the legacy layout changes nothing in it.
    let again = cloacina_postgres::open(PgOptions::new(&db.url)).await.unwrap();
    assert!(!again.backend().open_report().created);
    assert!(again.backend().open_report().migrations_applied.is_empty());
    assert!(again.execution(ids[0]).await.unwrap().is_some());
}

#[tokio::test]
async fn four_concurrent_first_openings_migrate_once() {
    let schema = TestSchema::new("race");
    let opens = (0..4).map(|_| {
        let (url, name) = (schema.url.clone(), schema.name.clone());
        tokio::spawn(async move { cloacina_postgres::open(PgOptions::new(url).tenant(&name).unwrap()).await })
    });
    let (mut created, mut applied) = (0, 0);
    for h in opens {
        let s = h.await.unwrap().expect("every opening succeeds");
        created += usize::from(s.backend().open_report().created);
        applied += s.backend().open_report().migrations_applied.len();
    }
    let all = cloacina_sql::migration_names().len() as i64;
    assert_eq!((created, applied as i64), (1, all), "one opening created the schema and applied the migrations");
    let mut c = PgConnection::connect(&schema.url).await.unwrap();
    let n: i64 =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM \"{}\".seaql_migrations", schema.name)))
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(n, all);
}

#[tokio::test]
async fn hostile_names_are_rejected_before_any_sql_runs() {
    // A database of its own: the schema list below must not see other
    // tests' schemas come and go.
    let db = TestDatabase::create("hostile").await;
    let url = db.url.clone();
    let before = scalar(&url, "SELECT string_agg(nspname::text, ',' ORDER BY nspname) FROM pg_namespace").await;
    let long = "a".repeat(64);
    type Check = fn(&TenantNameError) -> bool;
    let cases: [(&str, Check); 5] = [
        ("a\"; DROP SCHEMA public; --", |e| matches!(e, TenantNameError::InvalidCharacter { found: '"', .. })),
        ("tenant-1", |e| matches!(e, TenantNameError::InvalidCharacter { found: '-', .. })),
        ("Ünï", |e| matches!(e, TenantNameError::InvalidCharacter { found: 'Ü', .. })),
        (&long, |e| matches!(e, TenantNameError::TooLong { len: 64, .. })),
        ("pg_toast", |e| matches!(e, TenantNameError::Reserved { .. })),
    ];
    let admin = TenantAdmin::connect(&url).await.unwrap();
    for (name, expected) in cases {
        match PgOptions::new(&url).tenant(name) {
            Err(StorageError::InvalidTenant(e)) => assert!(expected(&e), "{name}: {e:?}"),
            other => panic!("{name}: expected InvalidTenant, got {other:?}"),
        }
        match admin.create_tenant(name, None).await {
            Err(StorageError::InvalidTenant(e)) => assert!(expected(&e), "{name}: {e:?}"),
            other => panic!("{name}: expected InvalidTenant, got {other:?}"),
        }
        assert!(matches!(admin.remove_tenant(name).await, Err(StorageError::InvalidTenant(_))));
    }
    let after = scalar(&url, "SELECT string_agg(nspname::text, ',' ORDER BY nspname) FROM pg_namespace").await;
    assert_eq!(before, after, "no schema was created or dropped");
}

fn sqlstate(e: &sqlx::Error) -> String {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
        .unwrap_or_else(|| format!("not a database error: {e}"))
}

#[tokio::test]
async fn a_tenant_role_reaches_only_its_own_schema() {
    let db = TestDatabase::create("roles").await;
    // A legacy deployment in public, with data.
    let legacy = cloacina_postgres::open(PgOptions::new(&db.url)).await.unwrap();
    create_one(&legacy).await;
    let admin = TenantAdmin::connect(&db.url).await.unwrap();
    let (na, nb) = (unique_name("ta"), unique_name("tb"));
    let a = admin.create_tenant(&na, None).await.unwrap();
    let b = admin.create_tenant(&nb, Some("another-Strong-pass-1")).await.unwrap();
    assert_eq!(b.password, "another-Strong-pass-1");
    assert_eq!(a.password.len(), 32);
    // The connection string keeps the admin URL's host, port and database.
    let host_port_db = db.url.rsplit('@').next().unwrap().to_owned();
    assert!(a.connection_string.ends_with(&host_port_db), "{} vs {host_port_db}", a.connection_string);
    assert!(a.connection_string.starts_with(&format!("postgres://{na}:")));

    // Each tenant's runners open their schema with their own role.
    let sa = cloacina_postgres::open(PgOptions::new(&a.connection_string).tenant(&na).unwrap()).await.unwrap();
    let sb = cloacina_postgres::open(PgOptions::new(&b.connection_string).tenant(&nb).unwrap()).await.unwrap();
    create_one(&sa).await;
    create_one(&sb).await;

    let mut conn = PgConnection::connect(&a.connection_string).await.unwrap();
    let denied = |sql: String| async {
        let mut c = PgConnection::connect(&a.connection_string).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut c)
            .await
            .map(|_| ())
            .map_err(|e| (sql, sqlstate(&e)))
    };
    for sql in [
        format!("SELECT * FROM \"{nb}\".workflow_executions"),
        format!("INSERT INTO \"{nb}\".runners VALUES ('x', 'x', 'x', 'alive', 0, 0, 0)"),
        format!("CREATE TABLE \"{nb}\".intruder (id int)"),
        "SELECT * FROM public.workflow_executions".to_owned(),
        "INSERT INTO public.runners VALUES ('x', 'x', 'x', 'alive', 0, 0, 0)".to_owned(),
        "CREATE TABLE public.intruder (id int)".to_owned(),
    ] {
        match denied(sql).await {
            Err((_, state)) => assert_eq!(state, "42501", "insufficient_privilege expected"),
            Ok(()) => panic!("tenant {na} was allowed a statement outside its schema"),
        }
    }
    // The server stores a SCRAM verifier, never the password (the admin
    // sends only the verifier), and checks it: a wrong password is refused.
    let stored: String = sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(&nb)
        .fetch_one(&mut PgConnection::connect(&db.url).await.unwrap())
        .await
        .unwrap();
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
    assert!(!stored.contains("another-Strong-pass-1"));
    let wrong = b.connection_string.replace("another-Strong-pass-1", "another-Strong-pass-2");
    match PgConnection::connect(&wrong).await {
        Err(e) => assert_eq!(sqlstate(&e), "28P01", "invalid_password expected: {e}"),
        Ok(_) => panic!("a wrong password was accepted"),
    }
    // Its own schema is fully usable.
    let own: i64 =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM \"{na}\".workflow_executions")))
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(own, 1);
    drop(conn);

    let listed: Vec<String> = admin.list_tenants().await.unwrap().iter().map(|t| t.to_string()).collect();
    assert!(listed.contains(&na) && listed.contains(&nb), "{listed:?}");
    assert!(!listed.contains(&"public".to_owned()));

    sa.backend().connection().clone().close().await.ok();
    sb.backend().connection().clone().close().await.ok();
    admin.remove_tenant(&na).await.unwrap();
    admin.remove_tenant(&nb).await.unwrap();
    // Removing again: no such tenant (any more), and nothing is touched.
    assert!(matches!(admin.remove_tenant(&nb).await, Err(StorageError::NotFound { what: "tenant", .. })));
    let listed: Vec<String> = admin.list_tenants().await.unwrap().iter().map(|t| t.to_string()).collect();
    assert!(!listed.contains(&na) && !listed.contains(&nb));
    let roles = scalar(&db.url, "SELECT COALESCE(string_agg(rolname::text, ','), '') FROM pg_roles").await;
    assert!(!roles.split(',').any(|r| r == na || r == nb), "roles dropped");
}

#[tokio::test]
async fn an_unreachable_server_fails_within_the_connect_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://nobody:pw-do-not-print@127.0.0.1:{port}/none");
    let start = Instant::now();
    let err =
        cloacina_postgres::open(PgOptions::new(&url).connect_timeout(Duration::from_millis(800))).await.unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(10), "gave up after {took:?}");
    match &err {
        StorageError::Unavailable { message, .. } => assert!(message.contains("within"), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let text = format!("{err} {err:?}");
    assert!(!text.contains("pw-do-not-print"), "password leaked: {text}");
}
