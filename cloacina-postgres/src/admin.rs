//! Tenant administration: a schema and a login role per tenant.

use std::fmt;

use cloacina_core::TenantName;
use cloacina_core::ports::{StorageError, StorageResult};
use rand::RngExt;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::url::{self, redact_url};

/// What [`TenantAdmin::create_tenant`] made.
#[derive(Clone)]
pub struct TenantCredentials {
    /// The tenant (schema) name.
    pub tenant: TenantName,
    /// The login role, named like the tenant.
    pub role: String,
    /// The role's password.
    pub password: String,
    /// A URL for the tenant's runners: the admin URL's host, port and
    /// database, with the tenant's role and password.
    pub connection_string: String,
}

impl fmt::Debug for TenantCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantCredentials")
            .field("tenant", &self.tenant)
            .field("role", &self.role)
            .field("password", &"***")
            .field("connection_string", &redact_url(&self.connection_string))
            .finish()
    }
}

/// Creates, lists and removes tenants, connected with an administrative
/// role (one that may create roles and schemas).
///
/// A tenant is a schema owned by a login role of the same name. The role
/// has privileges on its own schema only: other tenants' schemas are not
/// reachable (no `USAGE`), and it is granted nothing in `public`. Its
/// runners create the tables in their schema on first opening.
///
/// ```no_run
/// # async fn demo() -> Result<(), cloacina_core::ports::StorageError> {
/// use cloacina_postgres::TenantAdmin;
/// let admin = TenantAdmin::connect("postgres://admin:secret@db:5432/app").await?;
/// let acme = admin.create_tenant("acme", None).await?;
/// // hand acme.connection_string to acme's runners, with schema "acme"
/// admin.remove_tenant("acme").await?; // drops the schema, its data and the role: irreversible
/// # Ok(()) }
/// ```
pub struct TenantAdmin {
    options: PgConnectOptions,
    url: String,
}

impl fmt::Debug for TenantAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantAdmin").field("url", &redact_url(&self.url)).finish()
    }
}

fn backend(what: String, e: sqlx::Error) -> StorageError {
    StorageError::Backend { message: what, source: Some(Box::new(e)) }
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Percent-encodes a URL user-info component.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A random password: 32 characters of letters and digits (~190 bits).
/// PostgreSQL's iteration count for SCRAM-SHA-256 (`scram_iterations`'s
/// default).
const SCRAM_ITERATIONS: u32 = 4096;

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802
/// and RFC 7677, in PostgreSQL's `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`
/// form). Sending it instead of the password keeps the password out of the
/// statement text, and so out of client and server statement logs.
/// PostgreSQL normalizes passwords with SASLprep first; tenant passwords
/// are printable ASCII, which SASLprep leaves as they are.
fn scram_sha256_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    use sha2::{Digest, Sha256};
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
    let hmac = |msg: &[u8]| {
        // HMAC accepts keys of any length: this cannot fail.
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&salted).expect("HMAC takes keys of any length");
        mac.update(msg);
        mac.finalize().into_bytes()
    };
    let stored_key = Sha256::digest(hmac(b"Client Key"));
    let server_key = hmac(b"Server Key");
    format!("SCRAM-SHA-256${iterations}:{}${}:{}", b64.encode(salt), b64.encode(stored_key), b64.encode(server_key))
}

fn generate_password() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..32).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect()
}

impl TenantAdmin {
    /// Checks the admin URL and that the server answers.
    pub async fn connect(admin_url: &str) -> StorageResult<Self> {
        let options = url::parse(admin_url)?;
        let admin = Self { options, url: admin_url.to_owned() };
        drop(admin.conn().await?);
        Ok(admin)
    }

    async fn conn(&self) -> StorageResult<PgConnection> {
        PgConnection::connect_with(&self.options).await.map_err(|e| StorageError::Unavailable {
            message: format!("cannot connect to {}", url::describe(&self.options)),
            source: Some(Box::new(e)),
        })
    }

    /// Creates tenant `name`: a login role `name` with `password` (a strong
    /// generated one if `None`) and a schema `name` owned by it. Fails if
    /// the role already exists. Passwords must be 12–128 printable ASCII
    /// characters.
    pub async fn create_tenant(&self, name: &str, password: Option<&str>) -> StorageResult<TenantCredentials> {
        let tenant = TenantName::parse(name)?;
        let password = match password {
            Some(p) => {
                if !(12..=128).contains(&p.len()) || !p.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                    return Err(StorageError::InvalidInput {
                        message: "tenant passwords must be 12-128 printable ASCII characters".into(),
                    });
                }
                p.to_owned()
            }
            None => generate_password(),
        };
        let q = tenant.quoted();
        let mut conn = self.conn().await?;
        let mut tx = conn.begin().await.map_err(|e| backend("cannot begin".into(), e))?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(tenant.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| backend("cannot look up roles".into(), e))?;
        if exists {
            return Err(StorageError::InvalidInput { message: format!("a role named `{tenant}` already exists") });
        }
        let salt: [u8; 16] = rand::rng().random();
        let statements = [
            format!(
                "CREATE ROLE {q} LOGIN PASSWORD {}",
                quote_literal(&scram_sha256_verifier(&password, &salt, SCRAM_ITERATIONS))
            ),
            format!("CREATE SCHEMA IF NOT EXISTS {q} AUTHORIZATION {q}"),
            format!("ALTER SCHEMA {q} OWNER TO {q}"),
            format!("REVOKE ALL ON SCHEMA {q} FROM PUBLIC"),
            format!("REVOKE CREATE ON SCHEMA public FROM {q}"),
        ];
        for sql in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await.map_err(|e| {
                // The statement may carry the password: say only which step failed.
                backend(format!("cannot create tenant `{tenant}`"), e)
            })?;
        }
        tx.commit().await.map_err(|e| backend("cannot commit".into(), e))?;
        let o = &self.options;
        let connection_string = format!(
            "postgres://{}:{}@{}:{}/{}",
            encode(tenant.as_str()),
            encode(&password),
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("postgres")
        );
        Ok(TenantCredentials { role: tenant.as_str().to_owned(), tenant, password, connection_string })
    }

    /// Tenant schemas: schemas owned by a role of the same name, or holding
    /// Cloacina's tables (`public` excluded), sorted.
    pub async fn list_tenants(&self) -> StorageResult<Vec<TenantName>> {
        let mut conn = self.conn().await?;
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT n.nspname::text FROM pg_namespace n \
             WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname NOT IN ('public', 'information_schema') \
               AND (pg_get_userbyid(n.nspowner) = n.nspname \
                    OR EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid AND c.relname = 'workflow_executions')) \
             ORDER BY 1",
        )
        .fetch_all(&mut conn)
        .await
        .map_err(|e| backend("cannot list tenants".into(), e))?;
        Ok(names.iter().filter_map(|n| TenantName::parse(n).ok()).collect())
    }

    /// Removes tenant `name`: drops its schema with every table and row in
    /// it, and its role. **Irreversible.** Removing a tenant that does not
    /// exist is not an error.
    pub async fn remove_tenant(&self, name: &str) -> StorageResult<()> {
        let tenant = TenantName::parse(name)?;
        let q = tenant.quoted();
        let mut conn = self.conn().await?;
        let mut tx = conn.begin().await.map_err(|e| backend("cannot begin".into(), e))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {q} CASCADE")))
            .execute(&mut *tx)
            .await
            .map_err(|e| backend(format!("cannot drop schema {q}"), e))?;
        let role: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(tenant.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| backend("cannot look up roles".into(), e))?;
        if role {
            for sql in [format!("DROP OWNED BY {q}"), format!("DROP ROLE {q}")] {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| backend(format!("cannot drop role {q}"), e))?;
            }
        }
        tx.commit().await.map_err(|e| backend("cannot commit".into(), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_strong_and_distinct() {
        let (a, b) = (generate_password(), generate_password());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    /// The expected verifier was computed independently, with Python's
    /// `hashlib.pbkdf2_hmac` and `hmac` (RFC 5802's StoredKey/ServerKey).
    #[test]
    fn scram_verifier_matches_an_independent_computation() {
        let salt: Vec<u8> = (0u8..16).collect();
        assert_eq!(
            scram_sha256_verifier("pencil-Strong-42", &salt, 4096),
            "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$naMNG6G3C745xkEj9nclTL6h20DlVF8XeUdA+c0+JUY=:\
             drhNkg5HiuCo/VSRCvLbI11LAqI8podF7oaucD5Y0UI="
        );
        assert!(!scram_sha256_verifier("pencil-Strong-42", &salt, 4096).contains("pencil"));
    }

    #[test]
    fn literals_and_urls_are_escaped() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(encode("a b@c:d/e"), "a%20b%40c%3Ad%2Fe");
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = TenantCredentials {
            tenant: TenantName::parse("acme").unwrap(),
            role: "acme".into(),
            password: "Sup3rSecretValue".into(),
            connection_string: "postgres://acme:Sup3rSecretValue@h:5432/d".into(),
        };
        assert!(!format!("{c:?}").contains("Sup3rSecretValue"));
    }
}
