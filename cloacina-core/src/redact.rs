//! Database URLs without their passwords: the one function every `Debug`,
//! `Display`, log line and error that holds a URL goes through.

/// Schemes whose `scheme:` prefix is never mistaken for a user name.
const SCHEMES: [&str; 5] = ["postgres", "postgresql", "sqlite", "mysql", "mariadb"];

/// Query or keyword parameters whose value is a secret.
const SECRET_KEYS: [&str; 4] = ["password", "pass", "pwd", "sslpassword"];

/// Replaces every password in `url` with `***`: the one of the user-info
/// part (`user:password@`), also in malformed URLs (`postgres:/u:pw@h`,
/// `postgresql:u:pw@h`, `u:pw@h`), and the value of `password=` (and
/// `pass=`, `pwd=`, `sslpassword=`) parameters. Safe to log; a URL
/// without a password comes back unchanged.
///
/// ```
/// use cloacina_core::redact_url;
/// assert_eq!(redact_url("postgres://app:s3cret@db:5432/prod"), "postgres://app:***@db:5432/prod");
/// assert_eq!(redact_url("postgres:/app:s3cret@db/prod"), "postgres:/app:***@db/prod");
/// assert_eq!(redact_url("postgres://db/prod?user=app&password=s3cret"), "postgres://db/prod?user=app&password=***");
/// assert_eq!(redact_url("postgres://db/prod"), "postgres://db/prod");
/// ```
pub fn redact_url(url: &str) -> String {
    redact_params(&redact_userinfo(url))
}

/// The user-info password: the text between the separator after the user
/// name and the last `@` before the path, query or whitespace.
fn redact_userinfo(url: &str) -> String {
    let end = url.find(['?', ' ', '\t', '\n']).unwrap_or(url.len());
    let Some(at) = url[..end].rfind('@') else { return url.to_owned() };
    let before = &url[..at];
    // Skip a scheme: `name:` where `name` is a known scheme or the colon is
    // followed by `/`.
    let mut start = 0;
    if let Some(colon) = before.find(':') {
        let name = &before[..colon];
        let scheme_like = !name.is_empty()
            && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c));
        let is_scheme = scheme_like
            && (SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(name)) || before[colon + 1..].starts_with('/'));
        if is_scheme {
            start = colon + 1;
            start += before[start..].chars().take_while(|&c| c == '/').count();
        }
    }
    let userinfo = &before[start..];
    match userinfo.find(':') {
        Some(sep) => format!("{}:***{}", &url[..start + sep], &url[at..]),
        None => url.to_owned(),
    }
}

/// `key=value` parameters whose key names a secret (in a query string or a
/// keyword list).
fn redact_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let key_start = rest[..eq].rfind(['?', '&', ' ', ';', '\t', '\n']).map_or(0, |i| i + 1);
        let key = &rest[key_start..eq];
        let value_end = rest[eq + 1..].find(['&', ' ', ';', '\t', '\n']).map_or(rest.len(), |i| eq + 1 + i);
        out.push_str(&rest[..=eq]);
        if SECRET_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key)) && value_end > eq + 1 {
            out.push_str("***");
        } else {
            out.push_str(&rest[eq + 1..value_end]);
        }
        rest = &rest[value_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_urls() {
        assert_eq!(redact_url("postgresql://u:p%40ss@h/d?sslmode=require"), "postgresql://u:***@h/d?sslmode=require");
        assert_eq!(redact_url("postgres://u:p@ss@h/d"), "postgres://u:***@h/d");
        assert_eq!(redact_url("postgres://u@h:5432/d"), "postgres://u@h:5432/d");
        assert_eq!(redact_url("Postgres://u:pw@h/d"), "Postgres://u:***@h/d");
        assert_eq!(redact_url("sqlite://data/app.db"), "sqlite://data/app.db");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn malformed_urls_still_lose_their_password() {
        for (url, want) in [
            ("postgres:/user:hunter2@db/app", "postgres:/user:***@db/app"),
            ("postgresql:user:hunter2@db/app", "postgresql:user:***@db/app"),
            ("postgres:user:hunter2@db/app", "postgres:user:***@db/app"),
            ("user:hunter2@db/app", "user:***@db/app"),
            ("postgres//user:hunter2@db/app", "postgres//user:***@db/app"),
            ("mysql://user:hunter2@db/app", "mysql://user:***@db/app"),
            ("postgres://user:hunter2@", "postgres://user:***@"),
        ] {
            let got = redact_url(url);
            assert_eq!(got, want, "{url}");
            assert!(!got.contains("hunter2"));
        }
    }

    #[test]
    fn password_parameters() {
        assert_eq!(
            redact_url("postgres://db/app?user=u&password=hunter2&sslmode=require"),
            "postgres://db/app?user=u&password=***&sslmode=require"
        );
        assert_eq!(redact_url("postgres://db/app?PASSWORD=hunter2"), "postgres://db/app?PASSWORD=***");
        assert_eq!(redact_url("host=db user=u password=hunter2 dbname=app"), "host=db user=u password=*** dbname=app");
        assert_eq!(redact_url("postgres://u:pw@db/app?sslpassword=k3y"), "postgres://u:***@db/app?sslpassword=***");
        // Other parameters are kept as they are.
        assert_eq!(redact_url("postgres://db/app?application_name=x=y"), "postgres://db/app?application_name=x=y");
    }
}
