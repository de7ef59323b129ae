//! Database URLs: parsing, and printing them without their password.

use std::str::FromStr;

use cloacina_core::ports::StorageError;
use sqlx::postgres::PgConnectOptions;

/// Replaces the password of a URL, if any, with `***`. Safe to log.
///
/// ```
/// use cloacina_postgres::redact_url;
/// assert_eq!(redact_url("postgres://app:s3cret@db:5432/prod"), "postgres://app:***@db:5432/prod");
/// assert_eq!(redact_url("postgres://db/prod"), "postgres://db/prod");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_owned() };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].find(':') {
            Some(colon) => format!("{}{}:***{}", &url[..scheme_end + 3], &authority[..colon], &rest[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

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
    fn redaction() {
        assert_eq!(redact_url("postgresql://u:p%40ss@h/d?sslmode=require"), "postgresql://u:***@h/d?sslmode=require");
        assert_eq!(redact_url("postgres://u:p@ss@h/d"), "postgres://u:***@h/d");
        assert_eq!(redact_url("not a url"), "not a url");
    }

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
