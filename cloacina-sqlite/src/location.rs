//! Where a tenant's database lives: URL parsing and the file-per-tenant rule.

use std::path::{Path, PathBuf};

use cloacina_core::TenantName;
use cloacina_core::ports::StorageError;

/// A SQLite database location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A file (created if missing; its directory must exist).
    File(PathBuf),
    /// A private in-memory database (one per opened storage).
    Memory,
}

const URL_HELP: &str = "expected sqlite://path/to/file.db, sqlite:///absolute/path.db or sqlite::memory:";

/// Parses `sqlite://relative/file.db`, `sqlite:///absolute/file.db`,
/// `sqlite:file.db` or `sqlite::memory:`. Query parameters are refused:
/// the adapter sets its own pragmas.
pub fn parse_url(url: &str) -> Result<Location, StorageError> {
    let invalid = |reason: String| StorageError::invalid_url(url, reason);
    // The scheme is case-insensitive (RFC 3986); the path is not.
    let scheme_ok = url.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("sqlite:"));
    if !scheme_ok {
        return Err(invalid(format!("not a SQLite URL; {URL_HELP}")));
    }
    let rest = &url[7..];
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    if rest.contains('?') {
        return Err(invalid(format!(
            "query parameters are not supported (the adapter sets journal mode, busy timeout and foreign keys itself); {URL_HELP}"
        )));
    }
    if rest == ":memory:" {
        return Ok(Location::Memory);
    }
    if rest.is_empty() {
        return Err(invalid(format!("the file path is empty; {URL_HELP}")));
    }
    Ok(Location::File(PathBuf::from(rest)))
}

/// The file of tenant `tenant`, derived from the base file: the tenant name
/// goes before the base file's extension, in the same directory.
///
/// `data/app.db` + `acme` → `data/app.acme.db`; `data/app` + `acme` →
/// `data/app.acme`. Tenant names contain no `/`, `\` or `.` (see
/// [`TenantName`]), so a tenant file never leaves the base directory.
///
/// ```
/// use cloacina_core::TenantName;
/// use cloacina_sqlite::tenant_path;
/// use std::path::Path;
/// let acme = TenantName::parse("acme").unwrap();
/// assert_eq!(tenant_path(Path::new("data/app.db"), &acme), Path::new("data/app.acme.db"));
/// assert_eq!(tenant_path(Path::new("data/app"), &acme), Path::new("data/app.acme"));
/// ```
pub fn tenant_path(base: &Path, tenant: &TenantName) -> PathBuf {
    let stem = base.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match base.extension() {
        Some(ext) => format!("{stem}.{tenant}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{tenant}"),
    };
    base.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(parse_url("sqlite://data/app.db").unwrap(), Location::File("data/app.db".into()));
        assert_eq!(parse_url("sqlite:///tmp/app.db").unwrap(), Location::File("/tmp/app.db".into()));
        assert_eq!(parse_url("sqlite:app.db").unwrap(), Location::File("app.db".into()));
        assert_eq!(parse_url("sqlite::memory:").unwrap(), Location::Memory);
        for bad in ["postgres://x/y", "sqlite://", "sqlite://a.db?mode=ro", "app.db"] {
            assert!(matches!(parse_url(bad), Err(StorageError::InvalidUrl { .. })), "{bad}");
        }
    }

    #[test]
    fn tenant_files_stay_in_the_base_directory() {
        let t = TenantName::parse("tenant_001").unwrap();
        let p = tenant_path(Path::new("/var/lib/app/main.sqlite"), &t);
        assert_eq!(p, Path::new("/var/lib/app/main.tenant_001.sqlite"));
    }
}
