//! Passwords never appear in logs, errors or `Debug` output.

mod common;

use std::time::Duration;

use cloacina_postgres::TenantAdmin;
use cloacina_runner::{Context, DefaultRunner, TaskError, TaskSpec, Workflow, task_fn};

const SECRET: &str = "S3cretValue-do-not-print";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_stay_out_of_logs_errors_and_debug() {
    let captured = common::Captured::global("trace");

    // A tenant whose role logs in with SECRET (a real password login on a
    // server that checks passwords, and also where it trusts every login).
    let admin = TenantAdmin::connect(&cloacina_testkit::pg::test_database_url()).await.expect("tenant admin");
    let tenant = cloacina_testkit::pg::unique_name("secrets");
    let creds = admin.create_tenant(&tenant, Some(SECRET)).await.expect("tenant created");
    assert!(creds.connection_string.contains(SECRET), "the runner logs in with the secret");
    let wf = Workflow::builder("secret_keeping")
        .task(TaskSpec::new("t", task_fn(|ctx: Context| async move { Ok::<_, TaskError>(ctx) })))
        .build()
        .unwrap();
    let builder = DefaultRunner::builder().database_url(&creds.connection_string).tenant(&tenant).workflow(wf);
    let debug_builder = format!("{builder:?}");
    let runner = builder.build().await.expect("the password is accepted");
    let debug_runner = format!("{runner:?}");
    assert!(runner.execute("secret_keeping", Context::new()).await.unwrap().is_success());
    runner.shutdown().await.unwrap();
    let debug_creds = format!("{creds:?}");
    admin.remove_tenant(&tenant).await.expect("tenant removed");

    // A server that is not there: the error must not carry the password.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = DefaultRunner::builder()
        .database_url(format!("postgres://app:{SECRET}@127.0.0.1:{port}/app"))
        .connect_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap_err();
    let err_text = format!("{err} / {err:?}");
    let bad_url = DefaultRunner::new(&format!("postgres://app:{SECRET}@host:notaport/db")).await.unwrap_err();
    let bad_url_text = format!("{bad_url} / {bad_url:?}");
    // Malformed URLs (typos in the scheme), password parameters, unknown
    // schemes: every error and Debug holding one is redacted, and each is
    // refused at once as an invalid or unsupported URL.
    let mut malformed = String::new();
    for url in [
        format!("postgres:/app:{SECRET}@db/app"),
        format!("postgresql:app:{SECRET}@db/app"),
        format!("Postgres//app:{SECRET}@db/app"),
        format!("postgres://app:{SECRET}@/app"),
        format!("mysql://app:{SECRET}@db/app"),
        format!("app:{SECRET}@db/app"),
    ] {
        let started = std::time::Instant::now();
        let e = DefaultRunner::new(&url).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1), "{url}: refused at once, not after trying to connect");
        assert!(
            matches!(
                e,
                cloacina_runner::RunnerError::UnsupportedUrl { .. }
                    | cloacina_runner::RunnerError::Storage(cloacina_runner::StorageError::InvalidUrl { .. })
            ),
            "{e:?}"
        );
        malformed.push_str(&format!("{e} / {e:?}\n"));
        let config = DefaultRunner::builder().database_url(&url);
        malformed.push_str(&format!("{config:?}\n"));
    }
    // A well-formed URL with the password as a parameter: its connection
    // error is redacted too.
    let param = DefaultRunner::builder()
        .database_url(format!("postgres://127.0.0.1:{port}/app?user=app&password={SECRET}"))
        .connect_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap_err();
    malformed.push_str(&format!("{param} / {param:?}\n"));
    let pg_options = format!("{:?}", cloacina_postgres::PgOptions::new(format!("postgresql:app:{SECRET}@db/app")));
    let tenant_options =
        format!("{:?}", cloacina_postgres::TenantOptions::default().password(SECRET).connection_limit(3));

    let logs = captured.text();
    assert!(logs.contains("runner starting"), "the capture works: {} bytes", logs.len());
    for (what, text) in [
        ("logs", &logs),
        ("builder Debug", &debug_builder),
        ("runner Debug", &debug_runner),
        ("credentials Debug", &debug_creds),
        ("connection error", &err_text),
        ("URL error", &bad_url_text),
        ("errors and Debug of malformed URLs", &malformed),
        ("PgOptions Debug", &pg_options),
        ("TenantOptions Debug", &tenant_options),
    ] {
        assert!(!text.contains(SECRET), "the password appears in the {what}: {text}");
    }
}
