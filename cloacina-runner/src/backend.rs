//! Picks the storage backend from the database URL's scheme.

use std::sync::Arc;

use cloacina_core::ports::Storage;

use crate::config::RunnerConfig;
use crate::error::{Result, RunnerError};
use cloacina_core::redact_url as redact;

pub(crate) async fn open_storage(config: &RunnerConfig) -> Result<Arc<dyn Storage>> {
    let url = config.database_url.as_str();
    let tenant = config.tenant.clone();
    if url.starts_with("sqlite:") {
        #[cfg(feature = "sqlite")]
        {
            let opts = cloacina_sqlite::SqliteOptions::new(url).tenant_name(tenant).read_pool_size(config.pool_size);
            return Ok(Arc::new(cloacina_sqlite::open(opts).await?));
        }
        #[cfg(not(feature = "sqlite"))]
        return Err(RunnerError::UnsupportedUrl {
            url: redact(url),
            reason: "SQLite support is not compiled in; enable the `sqlite` feature of cloacina-runner".into(),
        });
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        {
            let opts = cloacina_postgres::PgOptions::new(url)
                .tenant_name(tenant)
                .pool_size(config.pool_size)
                .connect_timeout(config.connect_timeout);
            return Ok(Arc::new(cloacina_postgres::open(opts).await?));
        }
        #[cfg(not(feature = "postgres"))]
        return Err(RunnerError::UnsupportedUrl {
            url: redact(url),
            reason: "PostgreSQL support is not compiled in; enable the `postgres` feature of cloacina-runner".into(),
        });
    }
    let _ = tenant;
    Err(RunnerError::UnsupportedUrl {
        url: redact(url),
        reason: "expected a sqlite:// (or sqlite::memory:) or postgres:// / postgresql:// URL".into(),
    })
}
