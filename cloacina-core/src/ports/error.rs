//! The storage error.

use super::*;

/// A storage failure. Backend errors are kept as the `source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The database could not be reached or the connection broke. Transient.
    #[error("database unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
        /// The driver error.
        #[source]
        source: Option<BoxError>,
    },
    /// The database stayed locked by other writers past the retry bound.
    /// Transient.
    #[error("database busy: {message}")]
    Busy {
        /// What failed.
        message: String,
        /// The driver error.
        #[source]
        source: Option<BoxError>,
    },
    /// A stored row could not be read back into the domain.
    #[error("corrupted row in `{table}` (id {id}): column `{column}`: {problem}")]
    CorruptRow {
        /// The table.
        table: &'static str,
        /// The row's id.
        id: String,
        /// The column.
        column: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// An entity that does not exist.
    #[error("{what} `{id}` not found")]
    NotFound {
        /// What kind of entity.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A state change the state machine refuses.
    #[error(transparent)]
    IllegalTransition(#[from] TransitionError),
    /// An invalid tenant name.
    #[error(transparent)]
    InvalidTenant(#[from] TenantNameError),
    /// A migration of executions that was refused; nothing was changed.
    #[error("migration refused, nothing was changed: {0}")]
    MigrationRefused(#[from] crate::migrate::MigrationError),
    /// A database URL that cannot be used (any password is redacted).
    #[error("invalid database URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A file-system problem (SQLite), with the path.
    #[error("{message}: {}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What was being done.
        message: String,
        /// The OS error.
        #[source]
        source: Option<std::io::Error>,
    },
    /// The database refused a write because it is read-only or full.
    #[error("database refused the write: {message}")]
    WriteRefused {
        /// What happened.
        message: String,
        /// The driver error.
        #[source]
        source: Option<BoxError>,
    },
    /// Something of this name already exists that this library did not
    /// create (a schema, a role): it is left alone, never taken over.
    #[error("a {kind} named `{name}` already exists and was not created by Cloacina's tenant admin: it is left alone")]
    ForeignObject {
        /// What kind of object (`schema`, `role`).
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// Something that was to be created exists already.
    #[error("{what} `{id}` already exists")]
    AlreadyExists {
        /// What kind of entity.
        what: &'static str,
        /// Its name or id.
        id: String,
    },
    /// A value that storage cannot accept (e.g. a context over a limit).
    #[error("invalid input: {message}")]
    InvalidInput {
        /// What is wrong.
        message: String,
    },
    /// Any other backend error.
    #[error("storage error: {message}")]
    Backend {
        /// What failed.
        message: String,
        /// The driver error.
        #[source]
        source: Option<BoxError>,
    },
}

impl StorageError {
    /// An [`InvalidUrl`](Self::InvalidUrl) error; the URL is kept only with
    /// its passwords redacted ([`redact_url`](crate::redact_url)), whatever
    /// its shape.
    pub fn invalid_url(url: &str, reason: impl Into<String>) -> Self {
        StorageError::InvalidUrl { url: crate::redact_url(url), reason: reason.into() }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Unavailable { .. } | StorageError::Busy { .. })
    }
}

/// Result alias for storage calls.
pub type StorageResult<T> = Result<T, StorageError>;
