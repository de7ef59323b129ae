//! The storage contract suite against PostgreSQL: a fresh schema per test
//! on the server `cargo xtask test-all` provisioned.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cloacina_core::ports::Storage;
use cloacina_postgres::PgOptions;
use cloacina_testkit::contract::ContractTarget;
use cloacina_testkit::pg::TestSchema;

struct PgTarget {
    schema: TestSchema,
    others: Mutex<Vec<TestSchema>>,
    storage: Arc<cloacina_postgres::PgStorage>,
}

async fn open(s: &TestSchema) -> cloacina_postgres::PgStorage {
    cloacina_postgres::open(PgOptions::new(&s.url).tenant(&s.name).unwrap()).await.expect("open PostgreSQL schema")
}

async fn pg_target() -> PgTarget {
    let schema = TestSchema::new("contract");
    let storage = open(&schema).await;
    assert!(storage.backend().open_report().created);
    assert_eq!(storage.backend().open_report().migrations_applied, cloacina_sql::migration_names());
    PgTarget { schema, others: Mutex::new(Vec::new()), storage: Arc::new(storage) }
}

#[async_trait]
impl ContractTarget for PgTarget {
    fn storage(&self) -> Arc<dyn Storage> {
        self.storage.clone()
    }
    async fn reopen(&self) -> Arc<dyn Storage> {
        Arc::new(open(&self.schema).await)
    }
    async fn migrations_applied_on_reopen(&self) -> Option<Vec<String>> {
        let s = open(&self.schema).await;
        assert!(!s.backend().open_report().created, "the schema is not recreated");
        Some(s.backend().open_report().migrations_applied.clone())
    }
    async fn other_tenant(&self) -> Arc<dyn Storage> {
        let other = TestSchema::new("other");
        let s = open(&other).await;
        self.others.lock().unwrap().push(other);
        Arc::new(s)
    }
}

cloacina_testkit::storage_contract!(pg_target());
