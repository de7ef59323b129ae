//! Test databases for runner tests: a SQLite file in a temp directory, or
//! a fresh schema on the provisioned PostgreSQL.
#![allow(dead_code)]

use cloacina_runner::{DefaultRunner, DefaultRunnerBuilder};
use cloacina_testkit::pg::TestSchema;

/// Where a test's runners keep their state.
pub(crate) struct TestDb {
    pub(crate) url: String,
    pub(crate) tenant: Option<String>,
    _dir: Option<tempfile::TempDir>,
    _schema: Option<TestSchema>,
}

impl TestDb {
    pub(crate) fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("app.db").display());
        Self { url, tenant: Some("tenant_a".into()), _dir: Some(dir), _schema: None }
    }

    pub(crate) fn postgres() -> Self {
        let schema = TestSchema::new("runner");
        Self { url: schema.url.clone(), tenant: Some(schema.name.clone()), _dir: None, _schema: Some(schema) }
    }

    /// A builder on this database and tenant, with short intervals for tests.
    pub(crate) fn builder(&self) -> DefaultRunnerBuilder {
        let b = DefaultRunner::builder()
            .database_url(&self.url)
            .fallback_poll_interval(std::time::Duration::from_millis(50))
            .shutdown_grace_period(std::time::Duration::from_secs(2));
        match &self.tenant {
            Some(t) => b.tenant(t),
            None => b,
        }
    }

    /// Another tenant name on the same database (dropped with the test).
    pub(crate) fn other_tenant(&self) -> (String, Option<TestSchema>) {
        match &self._schema {
            Some(_) => {
                let s = TestSchema::new("runner_other");
                (s.name.clone(), Some(s))
            }
            None => ("tenant_b".into(), None),
        }
    }
}

/// Log output kept in memory, for tests that assert what is (not) logged.
#[derive(Clone, Default)]
pub(crate) struct Captured(pub(crate) std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Installs a global subscriber at `filter` writing here (once per test
    /// binary; later calls return the same capture).
    pub(crate) fn global(filter: &str) -> Self {
        static GLOBAL: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let c = Captured::default();
                let writer = c.clone();
                tracing_subscriber::fmt()
                    .with_env_filter(filter)
                    .with_writer(move || writer.clone())
                    .with_ansi(false)
                    .init();
                c
            })
            .clone()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Generates `mod sqlite` and `mod postgres`, each running every listed
/// behaviour against that backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::common::TestDb::sqlite()).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::common::TestDb::postgres()).await;
                }
            )+
        }
    };
}
