//! The storage contract suite against SQLite, on real files in a
//! temporary directory (one base file, one file per tenant).

use std::sync::Arc;

use async_trait::async_trait;
use cloacina_core::ports::Storage;
use cloacina_sqlite::SqliteOptions;
use cloacina_testkit::contract::ContractTarget;

struct SqliteTarget {
    dir: tempfile::TempDir,
    storage: Arc<cloacina_sqlite::SqliteStorage>,
}

impl SqliteTarget {
    fn url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("app.db").display())
    }
    async fn open(&self, tenant: &str) -> cloacina_sqlite::SqliteStorage {
        cloacina_sqlite::open(SqliteOptions::new(self.url()).tenant(tenant).unwrap()).await.expect("open SQLite tenant")
    }
}

async fn sqlite_target() -> SqliteTarget {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("app.db").display());
    let storage =
        cloacina_sqlite::open(SqliteOptions::new(url).tenant("contract").unwrap()).await.expect("open SQLite");
    assert!(storage.backend().open_report().created);
    assert_eq!(storage.backend().path().unwrap().file_name().unwrap(), "app.contract.db");
    SqliteTarget { dir, storage: Arc::new(storage) }
}

#[async_trait]
impl ContractTarget for SqliteTarget {
    fn storage(&self) -> Arc<dyn Storage> {
        self.storage.clone()
    }
    async fn reopen(&self) -> Arc<dyn Storage> {
        Arc::new(self.open("contract").await)
    }
    async fn migrations_applied_on_reopen(&self) -> Option<Vec<String>> {
        Some(self.open("contract").await.backend().open_report().migrations_applied.clone())
    }
    async fn other_tenant(&self) -> Arc<dyn Storage> {
        Arc::new(self.open("other").await)
    }
}

cloacina_testkit::storage_contract!(sqlite_target());
