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
    let builder = DefaultRunner::builder().database_url(&creds.connection_string).schema(&tenant).workflow(wf);
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
        .database_url(&format!("postgres://app:{SECRET}@127.0.0.1:{port}/app"))
        .connect_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap_err();
    let err_text = format!("{err} / {err:?}");
    let bad_url = DefaultRunner::new(&format!("postgres://app:{SECRET}@host:notaport/db")).await.unwrap_err();
    let bad_url_text = format!("{bad_url} / {bad_url:?}");

    let logs = captured.text();
    assert!(logs.contains("runner starting"), "the capture works: {} bytes", logs.len());
    for (what, text) in [
        ("logs", &logs),
        ("builder Debug", &debug_builder),
        ("runner Debug", &debug_runner),
        ("credentials Debug", &debug_creds),
        ("connection error", &err_text),
        ("URL error", &bad_url_text),
    ] {
        assert!(!text.contains(SECRET), "the password appears in the {what}: {text}");
    }
}
