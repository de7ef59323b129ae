//! PostgreSQL for tests: the server `cargo xtask test-all` provisioned,
//! and a fresh schema or database per test, removed afterwards.
//!
//! There is no silent skip: without `CLOACINA_TEST_DATABASE_URL` a
//! PostgreSQL test fails and says how to run it.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The URL of the test server. Panics with instructions when unset.
pub fn test_database_url() -> String {
    match std::env::var("CLOACINA_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "CLOACINA_TEST_DATABASE_URL is not set: PostgreSQL tests need a real server. Run them through \
             `cargo xtask test-all` (which provisions one), or start one with `cargo xtask pg` and export the \
             variables it prints."
        ),
    }
}

/// A unique tenant name with a readable prefix (`prefix_<16 hex>`).
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

fn run_cleanup(url: String, statements: Vec<String>) {
    // Drop cannot be async: clean up on a thread with its own runtime.
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async move {
            if let Ok(mut c) = PgConnection::connect(&url).await {
                for s in statements {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(s)).execute(&mut c).await;
                }
            }
        });
    })
    .join();
}

/// A schema name reserved for one test; the schema (if created) is
/// dropped when the guard goes.
#[derive(Debug)]
pub struct TestSchema {
    /// The server URL.
    pub url: String,
    /// The schema (tenant) name.
    pub name: String,
}

impl TestSchema {
    /// A fresh name on the test server.
    pub fn new(prefix: &str) -> Self {
        Self { url: test_database_url(), name: unique_name(prefix) }
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        run_cleanup(self.url.clone(), vec![format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name)]);
    }
}

/// A database created for one test (for tests of the `public` schema),
/// dropped when the guard goes.
#[derive(Debug)]
pub struct TestDatabase {
    /// The admin URL of the server.
    pub server_url: String,
    /// The database name.
    pub name: String,
    /// A URL of the new database, same credentials.
    pub url: String,
}

/// `url` with its database replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).unwrap_or_else(|e| panic!("the test database URL is not a URL ({e})"));
    u.set_path(&format!("/{db}"));
    u.into()
}

impl TestDatabase {
    /// Creates a fresh database on the test server.
    pub async fn create(prefix: &str) -> Self {
        let server_url = test_database_url();
        let name = unique_name(prefix);
        let mut c = PgConnection::connect(&server_url).await.expect("connect to the test server");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut c)
            .await
            .expect("the test role may create databases");
        let url = with_database(&server_url, &name);
        Self { server_url, name, url }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        run_cleanup(self.server_url.clone(), vec![format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_replacement() {
        assert_eq!(with_database("postgres://u:p@h:5/postgres", "x"), "postgres://u:p@h:5/x");
        assert_eq!(with_database("postgres://h:5/postgres?sslmode=disable", "x"), "postgres://h:5/x?sslmode=disable");
        assert_eq!(with_database("postgres://h:5", "x"), "postgres://h:5/x");
    }
}
