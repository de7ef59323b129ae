//! Tenant administration only ever alters what it created: foreign
//! schemas, roles and tables of the same names are refused with typed
//! errors and left exactly as they were.

use std::time::{Duration, Instant};

use cloacina_core::ports::StorageError;
use cloacina_postgres::{PgOptions, TenantAdmin, TenantOptions};
use cloacina_testkit::pg::{TestDatabase, unique_name};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

async fn exec(url: &str, sql: &str) {
    let mut c = PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut c).await.unwrap();
}

async fn count(url: &str, sql: &str) -> i64 {
    let mut c = PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&mut c).await.unwrap()
}

async fn owner_of_table(url: &str, schema: &str, table: &str) -> String {
    let mut c = PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar(
        "SELECT pg_get_userbyid(c.relowner)::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2",
    )
    .bind(schema)
    .bind(table)
    .fetch_one(&mut c)
    .await
    .unwrap()
}

/// An application's schema `billing` (its table owned by its own role):
/// creating a tenant of that name is refused and changes nothing.
#[tokio::test]
async fn a_foreign_schema_is_never_taken_over() {
    let db = TestDatabase::create("foreign_schema").await;
    let (app, billing) = (unique_name("app_owner"), unique_name("billing"));
    exec(&db.url, &format!("CREATE ROLE \"{app}\"; CREATE SCHEMA \"{billing}\" AUTHORIZATION \"{app}\"")).await;
    exec(
        &db.url,
        &format!("CREATE TABLE \"{billing}\".invoices (id int); INSERT INTO \"{billing}\".invoices VALUES (1)"),
    )
    .await;
    exec(&db.url, &format!("ALTER TABLE \"{billing}\".invoices OWNER TO \"{app}\"")).await;
    let admin = TenantAdmin::connect(&db.url).await.unwrap();
    match admin.create_tenant(&billing, None).await {
        Err(StorageError::ForeignObject { kind: "schema", name }) => assert_eq!(name, billing),
        other => panic!("expected ForeignObject, got {other:?}"),
    }
    assert_eq!(owner_of_table(&db.url, &billing, "invoices").await, app, "ownership unchanged");
    assert_eq!(count(&db.url, &format!("SELECT count(*) FROM \"{billing}\".invoices")).await, 1);
    assert_eq!(count(&db.url, &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{billing}'")).await, 0);
    // Not a tenant: removing it is refused and drops nothing.
    assert!(matches!(admin.remove_tenant(&billing).await, Err(StorageError::NotFound { what: "tenant", .. })));
    assert_eq!(count(&db.url, &format!("SELECT count(*) FROM \"{billing}\".invoices")).await, 1);
    assert!(matches!(admin.adopt_tenant(&billing).await, Err(StorageError::ForeignObject { kind: "schema", .. })));
    assert!(admin.list_tenants().await.unwrap().is_empty());
}

/// A role `ledger` owning a table in `public`: `remove_tenant("ledger")`
/// is refused (it is no tenant) and drops neither the table nor the role;
/// `create_tenant("ledger")` is refused too.
#[tokio::test]
async fn a_foreign_role_and_its_objects_are_never_dropped() {
    let db = TestDatabase::create("foreign_role").await;
    let ledger = unique_name("ledger");
    exec(&db.url, &format!("CREATE ROLE \"{ledger}\" LOGIN; CREATE TABLE public.\"{ledger}_book\" (id int)")).await;
    exec(&db.url, &format!("ALTER TABLE public.\"{ledger}_book\" OWNER TO \"{ledger}\"")).await;
    let admin = TenantAdmin::connect(&db.url).await.unwrap();
    assert!(matches!(admin.remove_tenant(&ledger).await, Err(StorageError::NotFound { what: "tenant", .. })));
    assert_eq!(owner_of_table(&db.url, "public", &format!("{ledger}_book")).await, ledger, "the table is still there");
    match admin.create_tenant(&ledger, None).await {
        Err(StorageError::ForeignObject { kind: "role", name }) => assert_eq!(name, ledger),
        other => panic!("expected ForeignObject, got {other:?}"),
    }
    assert_eq!(count(&db.url, &format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{ledger}'")).await, 0);
    assert_eq!(count(&db.url, &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{ledger}'")).await, 1);
}

/// A tenant's role granted something outside its schema: removing the
/// tenant drops nothing and says why; once the grant is gone, it removes
/// the schema and the role only. Creating a tenant twice is
/// `AlreadyExists`.
#[tokio::test]
async fn removal_drops_only_the_tenants_schema_and_role() {
    let db = TestDatabase::create("removal").await;
    let admin = TenantAdmin::connect(&db.url).await.unwrap();
    let name = unique_name("tenant");
    let creds = admin.create_tenant(&name, None).await.unwrap();
    assert!(matches!(admin.create_tenant(&name, None).await, Err(StorageError::AlreadyExists { what: "tenant", .. })));
    let s = cloacina_postgres::open(PgOptions::new(&creds.connection_string).tenant(&name).unwrap()).await.unwrap();
    drop(s);
    exec(&db.url, &format!("CREATE TABLE public.shared (id int); GRANT SELECT ON public.shared TO \"{name}\"")).await;
    match admin.remove_tenant(&name).await {
        Err(e @ StorageError::Backend { .. }) => assert!(e.to_string().contains("nothing was dropped"), "{e}"),
        other => panic!("expected the role's outside privileges to stop the removal, got {other:?}"),
    }
    assert_eq!(count(&db.url, &format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{name}'")).await, 1);
    exec(&db.url, &format!("REVOKE SELECT ON public.shared FROM \"{name}\"")).await;
    admin.remove_tenant(&name).await.unwrap();
    assert_eq!(count(&db.url, &format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{name}'")).await, 0);
    assert_eq!(count(&db.url, &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{name}'")).await, 0);
    assert_eq!(count(&db.url, "SELECT count(*) FROM public.shared").await, 0, "the shared table is still there");
}

/// A tenant made before the registry existed (schema owned by its role,
/// holding Cloacina's tables) is adopted, listed and removable.
#[tokio::test]
async fn a_tenant_from_before_the_registry_is_adopted() {
    let db = TestDatabase::create("adopt").await;
    let name = unique_name("old");
    exec(&db.url, &format!("CREATE ROLE \"{name}\" LOGIN PASSWORD 'old-Strong-pass-1'; CREATE SCHEMA \"{name}\" AUTHORIZATION \"{name}\""))
        .await;
    let rest = db.url.split_once("://").unwrap().1;
    let host_and_db = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let role_url = format!("postgres://{name}:old-Strong-pass-1@{host_and_db}");
    let s = cloacina_postgres::open(PgOptions::new(&role_url).tenant(&name).unwrap()).await.unwrap();
    drop(s);
    let admin = TenantAdmin::connect(&db.url).await.unwrap();
    assert!(admin.list_tenants().await.unwrap().is_empty(), "not registered yet");
    assert!(matches!(admin.remove_tenant(&name).await, Err(StorageError::NotFound { .. })));
    admin.adopt_tenant(&name).await.unwrap();
    assert_eq!(
        admin.list_tenants().await.unwrap().iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        std::slice::from_ref(&name)
    );
    admin.remove_tenant(&name).await.unwrap();
    assert_eq!(count(&db.url, &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{name}'")).await, 0);
}

/// Bad tenant options are typed errors; the connection limit is set on the
/// role.
#[tokio::test]
async fn tenant_options_are_checked_and_applied() {
    let db = TestDatabase::create("options").await;
    let admin = TenantAdmin::connect(&db.url).await.unwrap();
    for bad in [TenantOptions::default().connection_limit(0), TenantOptions::default().password("short")] {
        assert!(matches!(
            admin.create_tenant_with(&unique_name("t"), bad).await,
            Err(StorageError::InvalidInput { .. })
        ));
    }
    let name = unique_name("limited");
    admin.create_tenant_with(&name, TenantOptions::default().connection_limit(7)).await.unwrap();
    assert_eq!(count(&db.url, &format!("SELECT rolconnlimit::bigint FROM pg_roles WHERE rolname = '{name}'")).await, 7);
    let default = unique_name("default");
    admin.create_tenant(&default, None).await.unwrap();
    assert_eq!(
        count(&db.url, &format!("SELECT rolconnlimit::bigint FROM pg_roles WHERE rolname = '{default}'")).await,
        i64::from(TenantOptions::DEFAULT_CONNECTION_LIMIT)
    );
}

/// `TenantAdmin::connect` to a server that accepts TCP and never answers
/// gives up after its connect timeout.
#[tokio::test]
async fn connecting_to_a_silent_server_gives_up_in_time() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts connections (the kernel backlog) and never says a word.
    let began = Instant::now();
    let err = TenantAdmin::connect_with_timeout(
        &format!("postgres://admin:pw-not-shown@127.0.0.1:{port}/app"),
        Duration::from_millis(800),
    )
    .await
    .unwrap_err();
    assert!(began.elapsed() < Duration::from_secs(5), "gave up after {:?}", began.elapsed());
    assert!(matches!(err, StorageError::Unavailable { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("pw-not-shown"));
    drop(listener);
}
