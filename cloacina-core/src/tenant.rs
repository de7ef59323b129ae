//! The one rule for tenant names, shared by both backends.
//!
//! A tenant is a PostgreSQL schema or a SQLite file, so its name must be a
//! safe identifier and a safe file-name part at once.

use std::fmt;

/// Maximum length of a tenant name (PostgreSQL's identifier limit).
pub const MAX_TENANT_NAME_LEN: usize = 63;

const RULE: &str = "tenant names are 1-63 characters of ASCII letters, digits and underscores, \
starting with a letter or underscore; `pg_*`, `information_schema`, `public` and `cloacina_admin` are reserved";

/// Why a tenant name was refused. Every variant's message states the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TenantNameError {
    /// The name is empty.
    #[error("tenant name is empty; {RULE}")]
    Empty,
    /// Longer than [`MAX_TENANT_NAME_LEN`] bytes.
    #[error("tenant name `{name}` is {len} characters long; {RULE}")]
    TooLong {
        /// The name.
        name: String,
        /// Its length.
        len: usize,
    },
    /// A character outside the allowed set.
    #[error("tenant name `{name}` contains {found:?} at position {position}; {RULE}")]
    InvalidCharacter {
        /// The name.
        name: String,
        /// The offending character.
        found: char,
        /// Its character position (0-based).
        position: usize,
    },
    /// Starts with a digit.
    #[error("tenant name `{name}` starts with a digit; {RULE}")]
    StartsWithDigit {
        /// The name.
        name: String,
    },
    /// A name the database reserves.
    #[error("tenant name `{name}` is reserved; {RULE}")]
    Reserved {
        /// The name.
        name: String,
    },
}

/// A validated tenant name: 1–63 characters of ASCII letters, digits and
/// underscores, starting with a letter or underscore; `pg_*` (any case),
/// `information_schema`, `public` (the legacy layout, reached by not
/// naming a tenant) and `cloacina_admin` (the tenant admin's registry) are
/// reserved.
///
/// ```
/// use cloacina_core::{TenantName, TenantNameError};
/// assert_eq!(TenantName::parse("acme_corp")?.as_str(), "acme_corp");
/// assert!(matches!(TenantName::parse("tenant-1"), Err(TenantNameError::InvalidCharacter { found: '-', .. })));
/// assert!(matches!(TenantName::parse("pg_toast"), Err(TenantNameError::Reserved { .. })));
/// # Ok::<(), TenantNameError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantName(String);

impl TenantName {
    /// Validates `name` against the rule.
    pub fn parse(name: &str) -> Result<Self, TenantNameError> {
        if name.is_empty() {
            return Err(TenantNameError::Empty);
        }
        if let Some((position, found)) =
            name.chars().enumerate().find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        {
            return Err(TenantNameError::InvalidCharacter { name: name.to_owned(), found, position });
        }
        if name.len() > MAX_TENANT_NAME_LEN {
            return Err(TenantNameError::TooLong { name: name.to_owned(), len: name.len() });
        }
        if name.as_bytes()[0].is_ascii_digit() {
            return Err(TenantNameError::StartsWithDigit { name: name.to_owned() });
        }
        let lower = name.to_ascii_lowercase();
        // `cloacina_admin` holds the tenant admin's registry (PostgreSQL).
        if lower.starts_with("pg_") || lower == "information_schema" || lower == "public" || lower == "cloacina_admin" {
            return Err(TenantNameError::Reserved { name: name.to_owned() });
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a double-quoted SQL identifier. Safe because the rule
    /// admits no quote characters; quoting also keeps the case as given.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantName({})", self.0)
    }
}

impl std::str::FromStr for TenantName {
    type Err = TenantNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_documented_examples() {
        for n in ["tenant_001", "acme_corp", "customer_xyz", "_x", "A", &"a".repeat(63)] {
            assert!(TenantName::parse(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn rejects_with_exact_variant() {
        assert_eq!(TenantName::parse(""), Err(TenantNameError::Empty));
        assert!(matches!(
            TenantName::parse("a\"; DROP SCHEMA public; --"),
            Err(TenantNameError::InvalidCharacter { found: '"', position: 1, .. })
        ));
        assert!(matches!(TenantName::parse("tenant-1"), Err(TenantNameError::InvalidCharacter { found: '-', .. })));
        assert!(matches!(
            TenantName::parse("Ünï"),
            Err(TenantNameError::InvalidCharacter { found: 'Ü', position: 0, .. })
        ));
        assert!(matches!(TenantName::parse("a b"), Err(TenantNameError::InvalidCharacter { found: ' ', .. })));
        assert!(matches!(TenantName::parse("../etc"), Err(TenantNameError::InvalidCharacter { found: '.', .. })));
        assert!(matches!(TenantName::parse(&"a".repeat(64)), Err(TenantNameError::TooLong { len: 64, .. })));
        assert!(matches!(TenantName::parse("1abc"), Err(TenantNameError::StartsWithDigit { .. })));
        for r in ["pg_toast", "PG_catalog", "information_schema", "public", "cloacina_admin", "Cloacina_Admin"] {
            assert!(matches!(TenantName::parse(r), Err(TenantNameError::Reserved { .. })), "{r}");
        }
    }

    #[test]
    fn errors_state_the_rule() {
        let msg = TenantName::parse("tenant-1").unwrap_err().to_string();
        assert!(msg.contains("ASCII letters, digits and underscores"), "{msg}");
    }
}
