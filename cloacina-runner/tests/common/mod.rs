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
            Some(t) => b.schema(t),
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
