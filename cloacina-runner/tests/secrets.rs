//! Passwords never appear in logs, errors or `Debug` output.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloacina_runner::{Context, DefaultRunner, TaskError, TaskSpec, Workflow, task_fn};

const SECRET: &str = "S3cretValue-do-not-print";

/// A writer that keeps everything logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The test server's URL with a password added (the test cluster trusts
/// every login, so any password connects).
fn with_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (auth, host) = rest.split_once('@').unwrap_or(("postgres", rest));
    let user = auth.split(':').next().unwrap_or("postgres");
    format!("{scheme}://{user}:{SECRET}@{host}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_stay_out_of_logs_errors_and_debug() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt().with_env_filter("trace").with_writer(move || writer.clone()).with_ansi(false).init();

    let url = with_password(&cloacina_testkit::pg::test_database_url());
    let schema = cloacina_testkit::pg::TestSchema::new("secrets");
    let wf = Workflow::builder("secret_keeping")
        .task(TaskSpec::new("t", task_fn(|ctx: Context| async move { Ok::<_, TaskError>(ctx) })))
        .build()
        .unwrap();
    let builder = DefaultRunner::builder().database_url(&url).schema(&schema.name).workflow(wf);
    let debug_builder = format!("{builder:?}");
    let runner = builder.build().await.expect("the password is accepted");
    let debug_runner = format!("{runner:?}");
    assert!(runner.execute("secret_keeping", Context::new()).await.unwrap().is_success());
    runner.shutdown().await.unwrap();

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

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("runner starting"), "the capture works: {} bytes", logs.len());
    for (what, text) in [
        ("logs", &logs),
        ("builder Debug", &debug_builder),
        ("runner Debug", &debug_runner),
        ("connection error", &err_text),
        ("URL error", &bad_url_text),
    ] {
        assert!(!text.contains(SECRET), "the password appears in the {what}: {text}");
    }
}
