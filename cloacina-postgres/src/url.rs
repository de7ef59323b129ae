//! Database URLs: parsing, and printing them without their password.

use std::str::FromStr;

use cloacina_core::ports::StorageError;
use sqlx::postgres::PgConnectOptions;

pub use cloacina_core::redact_url;

const HELP: &str = "expected postgres://user:password@host:port/database (or postgresql://)";

/// Whether `url`'s scheme is PostgreSQL's (`postgres:` / `postgresql:`, in
/// any case), whatever follows it.
pub fn is_postgres_scheme(url: &str) -> bool {
    url.split_once(':')
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql"))
}

/// Parses a `postgres://` or `postgresql://` URL (the scheme in any case).
/// Refused at once, as [`StorageError::InvalidUrl`] and without trying to
/// connect: another scheme, a malformed one (`postgres:/…`,
/// `postgresql:user@…`), and a URL that names no host (unless a `host=`
/// parameter names a socket directory).
pub(crate) fn parse(url: &str) -> Result<PgConnectOptions, StorageError> {
    let invalid = |reason: String| StorageError::invalid_url(url, reason);
    let Some((scheme, rest)) = url.split_once(':').filter(|_| is_postgres_scheme(url)) else {
        return Err(invalid(HELP.into()));
    };
    let Some(after) = rest.strip_prefix("//") else {
        return Err(invalid(format!("`{scheme}:` must be followed by `//`; {HELP}")));
    };
    let authority = &after[..after.find(['/', '?']).unwrap_or(after.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        host_port.split(']').next().unwrap_or("").trim_start_matches('[')
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    let socket_param = after.split_once('?').is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("host=")));
    if host.is_empty() && !socket_param {
        return Err(invalid(format!("the URL names no host; {HELP}")));
    }
    let normalized = format!("postgres:{rest}");
    // sqlx's own message may quote the URL; keep only what cannot leak it.
    PgConnectOptions::from_str(&normalized).map_err(|e| {
        let msg = e.to_string();
        let safe = if msg.contains(rest) || msg.contains(authority) {
            "the URL could not be parsed".to_owned()
        } else {
            crate::redact_url(&msg)
        };
        invalid(format!("{safe}; {HELP}"))
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
    fn schemes_are_case_insensitive_and_malformed_urls_are_invalid_at_once() {
        assert!(parse("Postgres://u:pw@h:5432/d").is_ok());
        assert!(parse("POSTGRESQL://u@h/d").is_ok());
        assert!(parse("postgres:///d?host=/var/run/postgresql").is_ok(), "a socket directory is a host");
        for bad in [
            "postgres:/u:hunter2@h/d",
            "postgresql:u:hunter2@h/d",
            "postgres://",
            "postgres://u:hunter2@/d",
            "postgres://u:hunter2@:5432/d",
            "postgres:",
        ] {
            match parse(bad) {
                Err(StorageError::InvalidUrl { url, reason }) => {
                    assert!(!url.contains("hunter2") && !reason.contains("hunter2"), "{url} {reason}");
                    assert!(reason.contains("postgres://user:password@host:port/database"), "{reason}");
                }
                other => panic!("{bad}: expected InvalidUrl, got {other:?}"),
            }
        }
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
