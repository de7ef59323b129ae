//! Picks the storage backend from the database URL's scheme.

use std::sync::Arc;

use cloacina_core::ports::Storage;
use cloacina_core::redact_url;

use crate::config::RunnerConfig;
use crate::error::{Result, RunnerError};

/// The backends a URL's scheme (case-insensitive, RFC 3986) can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Sqlite,
    Postgres,
}

/// The backend `url` names, or why none. A known scheme with a malformed
/// rest (`postgres:/…`) is the backend's to refuse as an invalid URL; only
/// an unknown scheme is unsupported.
pub(crate) fn scheme(url: &str) -> Result<Scheme> {
    let name = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
    match name.as_str() {
        "sqlite" => Ok(Scheme::Sqlite),
        "postgres" | "postgresql" => Ok(Scheme::Postgres),
        _ => Err(RunnerError::UnsupportedUrl {
            url: redact_url(url),
            reason: "expected a sqlite:// (or sqlite::memory:) or postgres:// / postgresql:// URL".into(),
        }),
    }
}

pub(crate) async fn open_storage(config: &RunnerConfig) -> Result<Arc<dyn Storage>> {
    let url = config.database_url.expose();
    let tenant = config.tenant.clone();
    match scheme(url)? {
        Scheme::Sqlite => {
            #[cfg(feature = "sqlite")]
            {
                let opts =
                    cloacina_sqlite::SqliteOptions::new(url).tenant_name(tenant).read_pool_size(config.pool_size);
                Ok(Arc::new(cloacina_sqlite::open(opts).await?))
            }
            #[cfg(not(feature = "sqlite"))]
            {
                let _ = tenant;
                Err(RunnerError::UnsupportedUrl {
                    url: redact_url(url),
                    reason: "SQLite support is not compiled in; enable the `sqlite` feature of cloacina-runner".into(),
                })
            }
        }
        Scheme::Postgres => {
            #[cfg(feature = "postgres")]
            {
                let opts = cloacina_postgres::PgOptions::new(url)
                    .tenant_name(tenant)
                    .pool_size(config.pool_size)
                    .connect_timeout(config.connect_timeout)
                    .acquire_timeout(config.connect_timeout);
                Ok(Arc::new(cloacina_postgres::open(opts).await?))
            }
            #[cfg(not(feature = "postgres"))]
            {
                let _ = tenant;
                Err(RunnerError::UnsupportedUrl {
                    url: redact_url(url),
                    reason: "PostgreSQL support is not compiled in; enable the `postgres` feature of cloacina-runner"
                        .into(),
                })
            }
        }
    }
}
