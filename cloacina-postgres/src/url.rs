//! Database URLs: parsing, and printing them without their password.

use std::str::FromStr;

use cloacina_core::ports::StorageError;
use sqlx::postgres::PgConnectOptions;

pub use cloacina_core::redact_url;

/// Parses a `postgres://` or `postgresql://` URL.
pub(crate) fn parse(url: &str) -> Result<PgConnectOptions, StorageError> {
    let invalid = |reason: String| StorageError::InvalidUrl { url: redact_url(url), reason };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(invalid("expected postgres://user:password@host:port/database".into()));
    }
    // sqlx's own message may quote the URL; keep only what cannot leak it.
    PgConnectOptions::from_str(url).map_err(|e| {
        let msg = e.to_string();
        let safe = if msg.contains(url) { "the URL could not be parsed".to_owned() } else { msg };
        invalid(format!("{safe}; expected postgres://user:password@host:port/database"))
    })
}

/// `postgres://user@host:port/db` without any password, for messages.
pub(crate) fn describe(o: &PgConnectOptions) -> String {
    format!("postgres://{}@{}:{}/{}", o.get_username(), o.get_host(), o.get_port(), o.get_database().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_urls_never_echo_the_password() {
        for bad in ["mysql://u:hunter2@h/d", "postgres://u:hunter2@h:notaport/d"] {
            let e = parse(bad).unwrap_err();
            let text = format!("{e} {e:?}");
            assert!(!text.contains("hunter2"), "{text}");
            assert!(matches!(e, StorageError::InvalidUrl { .. }));
        }
    }
}
