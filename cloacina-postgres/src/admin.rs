//! Tenant administration: a schema and a login role per tenant.

use std::fmt;
use std::time::Duration;

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

/// How a tenant is created. Every setting has a default.
#[derive(Clone, Default)]
pub struct TenantOptions {
    password: Option<String>,
    connection_limit: Option<u32>,
}

impl fmt::Debug for TenantOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantOptions")
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("connection_limit", &self.connection_limit)
            .finish()
    }
}

impl TenantOptions {
    /// The connections a tenant role may hold at once when none is set:
    /// 24 — two runners with the default pool of 10, each with its
    /// `LISTEN` connection, plus headroom. A runner needs its `pool_size` +
    /// 2 (the listener, and a set-up connection while it opens).
    pub const DEFAULT_CONNECTION_LIMIT: u32 = 24;

    /// The role's password (12–128 printable ASCII characters). Default: a
    /// strong generated one.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }
    /// The most connections the tenant's role may hold at once (its
    /// `CONNECTION LIMIT`), so one tenant cannot take every connection of
    /// the server. Default [`DEFAULT_CONNECTION_LIMIT`](Self::DEFAULT_CONNECTION_LIMIT);
    /// 1 to 10,000.
    pub fn connection_limit(mut self, n: u32) -> Self {
        self.connection_limit = Some(n);
        self
    }
}

/// Creates, lists and removes tenants, connected with an administrative
/// role (one that may create roles and schemas).
///
/// A tenant is a schema owned by a login role of the same name, with a
/// connection limit. The role has privileges on its own schema only:
/// other tenants' schemas are not reachable (no `USAGE`), and it is
/// granted nothing in `public`. Its runners create the tables in their
/// schema on first opening.
///
/// The admin only ever alters what it created: it records each tenant it
/// creates in its registry (`cloacina_admin.tenants`, reachable by the
/// admin role only); it refuses to create a tenant over an existing schema
/// or role it did not create ([`StorageError::ForeignObject`]), and
/// removes only registered tenants — their schema and their role, nothing
/// else (never `DROP OWNED` across the database). Tenants created before
/// the registry existed are brought under it with
/// [`adopt_tenant`](Self::adopt_tenant).
///
/// ```no_run
/// # async fn demo() -> Result<(), cloacina_core::ports::StorageError> {
/// use cloacina_postgres::{TenantAdmin, TenantOptions};
/// let admin = TenantAdmin::connect("postgres://admin:secret@db:5432/app").await?;
/// let acme = admin.create_tenant("acme", None).await?;
/// // hand acme.connection_string to acme's runners, with schema "acme"
/// let big = admin.create_tenant_with("bigco", TenantOptions::default().connection_limit(64)).await?;
/// admin.remove_tenant("acme").await?; // drops the schema, its data and the role: irreversible
/// # Ok(()) }
/// ```
pub struct TenantAdmin {
    options: PgConnectOptions,
    url: String,
    connect_timeout: Duration,
}

impl fmt::Debug for TenantAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantAdmin")
            .field("url", &redact_url(&self.url))
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// The registry of the tenants the admin created.
const REGISTRY: &str = "cloacina_admin.tenants";

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

fn foreign(kind: &'static str, name: &TenantName) -> StorageError {
    StorageError::ForeignObject { kind, name: name.as_str().to_owned() }
}

impl TenantAdmin {
    /// Checks the admin URL and that the server answers, within 30 s.
    pub async fn connect(admin_url: &str) -> StorageResult<Self> {
        Self::connect_with_timeout(admin_url, Duration::from_secs(30)).await
    }

    /// Like [`connect`](Self::connect); every connection this admin opens
    /// gives up after `connect_timeout` (also against a server that accepts
    /// TCP and never answers).
    pub async fn connect_with_timeout(admin_url: &str, connect_timeout: Duration) -> StorageResult<Self> {
        let options = url::parse(admin_url)?;
        let admin = Self { options, url: admin_url.to_owned(), connect_timeout };
        drop(admin.conn().await?);
        Ok(admin)
    }

    async fn conn(&self) -> StorageResult<PgConnection> {
        crate::connect_with_retry(&self.options, self.connect_timeout).await
    }

    /// Creates the registry if needed and locks it for this transaction
    /// (tenant changes take turns).
    async fn lock_registry(&self, tx: &mut PgConnection) -> StorageResult<()> {
        let owner: Option<String> = sqlx::query_scalar(
            "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'cloacina_admin'",
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| backend("cannot look up the tenant registry".into(), e))?;
        let me: String = sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| backend("cannot look up the admin role".into(), e))?;
        match owner {
            Some(o) if o != me => {
                return Err(StorageError::ForeignObject { kind: "schema", name: "cloacina_admin".into() });
            }
            Some(_) => {}
            None => {
                for sql in [
                    "CREATE SCHEMA IF NOT EXISTS cloacina_admin",
                    "REVOKE ALL ON SCHEMA cloacina_admin FROM PUBLIC",
                    "CREATE TABLE IF NOT EXISTS cloacina_admin.tenants (name text PRIMARY KEY, \
                     created_at timestamptz NOT NULL DEFAULT now())",
                ] {
                    sqlx::raw_sql(sql)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| backend("cannot create the tenant registry".into(), e))?;
                }
            }
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("LOCK TABLE {REGISTRY} IN SHARE ROW EXCLUSIVE MODE")))
            .execute(&mut *tx)
            .await
            .map_err(|e| backend("cannot lock the tenant registry".into(), e))?;
        Ok(())
    }

    async fn registered(&self, tx: &mut PgConnection, tenant: &TenantName) -> StorageResult<bool> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT EXISTS (SELECT 1 FROM {REGISTRY} WHERE name = $1)")))
            .bind(tenant.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| backend("cannot read the tenant registry".into(), e))
    }

    /// Who owns schema `name` (`None`: no such schema), and whether role
    /// `name` exists.
    async fn existing(&self, tx: &mut PgConnection, tenant: &TenantName) -> StorageResult<(Option<String>, bool)> {
        let schema_owner: Option<String> =
            sqlx::query_scalar("SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = $1")
                .bind(tenant.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| backend("cannot look up schemas".into(), e))?;
        let role: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(tenant.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| backend("cannot look up roles".into(), e))?;
        Ok((schema_owner, role))
    }

    /// Creates tenant `name` with `password` (a strong generated one if
    /// `None`) and the default connection limit; see
    /// [`create_tenant_with`](Self::create_tenant_with).
    pub async fn create_tenant(&self, name: &str, password: Option<&str>) -> StorageResult<TenantCredentials> {
        let mut o = TenantOptions::default();
        if let Some(p) = password {
            o = o.password(p);
        }
        self.create_tenant_with(name, o).await
    }

    /// Creates tenant `name`: a login role `name` (with the options'
    /// password and connection limit) and a schema `name` owned by it, and
    /// records it in the registry. Refused, changing nothing: a tenant of
    /// that name exists ([`StorageError::AlreadyExists`]); a schema or a
    /// role of that name exists that the admin did not create
    /// ([`StorageError::ForeignObject`]); a password that is not 12–128
    /// printable ASCII characters or a connection limit outside 1–10,000
    /// ([`StorageError::InvalidInput`]).
    pub async fn create_tenant_with(&self, name: &str, options: TenantOptions) -> StorageResult<TenantCredentials> {
        let tenant = TenantName::parse(name)?;
        let password = match options.password {
            Some(p) => {
                if !(12..=128).contains(&p.len()) || !p.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                    return Err(StorageError::InvalidInput {
                        message: "tenant passwords must be 12-128 printable ASCII characters".into(),
                    });
                }
                p
            }
            None => generate_password(),
        };
        let limit = options.connection_limit.unwrap_or(TenantOptions::DEFAULT_CONNECTION_LIMIT);
        if !(1..=10_000).contains(&limit) {
            return Err(StorageError::InvalidInput {
                message: format!("a tenant's connection limit must be from 1 to 10000, got {limit}"),
            });
        }
        let q = tenant.quoted();
        let mut conn = self.conn().await?;
        let mut tx = conn.begin().await.map_err(|e| backend("cannot begin".into(), e))?;
        self.lock_registry(&mut tx).await?;
        if self.registered(&mut tx, &tenant).await? {
            return Err(StorageError::AlreadyExists { what: "tenant", id: tenant.as_str().to_owned() });
        }
        let (schema_owner, role) = self.existing(&mut tx, &tenant).await?;
        if schema_owner.is_some() {
            return Err(foreign("schema", &tenant));
        }
        if role {
            return Err(foreign("role", &tenant));
        }
        let salt: [u8; 16] = rand::rng().random();
        let statements = [
            format!(
                "CREATE ROLE {q} LOGIN CONNECTION LIMIT {limit} PASSWORD {}",
                quote_literal(&scram_sha256_verifier(&password, &salt, SCRAM_ITERATIONS))
            ),
            format!("CREATE SCHEMA {q} AUTHORIZATION {q}"),
            format!("REVOKE ALL ON SCHEMA {q} FROM PUBLIC"),
            format!("REVOKE CREATE ON SCHEMA public FROM {q}"),
        ];
        for sql in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await.map_err(|e| {
                // The statement may carry the password: say only which step failed.
                backend(format!("cannot create tenant `{tenant}`"), e)
            })?;
        }
        sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {REGISTRY} (name) VALUES ($1)")))
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| backend(format!("cannot record tenant `{tenant}`"), e))?;
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

    /// The tenants this admin created (or adopted), sorted.
    pub async fn list_tenants(&self) -> StorageResult<Vec<TenantName>> {
        let mut conn = self.conn().await?;
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('cloacina_admin.tenants') IS NOT NULL")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| backend("cannot look up the tenant registry".into(), e))?;
        if !exists {
            return Ok(Vec::new());
        }
        let names: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT name FROM {REGISTRY} ORDER BY name")))
                .fetch_all(&mut conn)
                .await
                .map_err(|e| backend("cannot list tenants".into(), e))?;
        Ok(names.iter().filter_map(|n| TenantName::parse(n).ok()).collect())
    }

    /// Brings a tenant created before the registry existed under it: a
    /// schema `name` owned by a role `name`, holding Cloacina's migration
    /// record. Anything else is [`StorageError::ForeignObject`] (or
    /// [`StorageError::NotFound`]) and is left alone.
    pub async fn adopt_tenant(&self, name: &str) -> StorageResult<()> {
        let tenant = TenantName::parse(name)?;
        let mut conn = self.conn().await?;
        let mut tx = conn.begin().await.map_err(|e| backend("cannot begin".into(), e))?;
        self.lock_registry(&mut tx).await?;
        if self.registered(&mut tx, &tenant).await? {
            return Ok(());
        }
        let (schema_owner, role) = self.existing(&mut tx, &tenant).await?;
        match schema_owner {
            None => return Err(StorageError::NotFound { what: "tenant schema", id: tenant.as_str().to_owned() }),
            Some(owner) if owner != tenant.as_str() || !role => return Err(foreign("schema", &tenant)),
            Some(_) => {}
        }
        let ours: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = 'seaql_migrations')",
        )
        .bind(tenant.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| backend("cannot look up the schema's tables".into(), e))?;
        if !ours {
            return Err(foreign("schema", &tenant));
        }
        sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {REGISTRY} (name) VALUES ($1)")))
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| backend(format!("cannot record tenant `{tenant}`"), e))?;
        tx.commit().await.map_err(|e| backend("cannot commit".into(), e))?;
        Ok(())
    }

    /// Removes tenant `name`: drops its schema with every table and row in
    /// it, and its role, and forgets it. **Irreversible.** Only a tenant
    /// this admin created (or adopted) is removed; any other name is
    /// [`StorageError::NotFound`] and nothing is touched — not a schema, a
    /// role or a table of that name. If the tenant's role holds objects or
    /// privileges outside its schema, nothing is dropped and the error
    /// says so.
    pub async fn remove_tenant(&self, name: &str) -> StorageResult<()> {
        let tenant = TenantName::parse(name)?;
        let q = tenant.quoted();
        let mut conn = self.conn().await?;
        let mut tx = conn.begin().await.map_err(|e| backend("cannot begin".into(), e))?;
        self.lock_registry(&mut tx).await?;
        if !self.registered(&mut tx, &tenant).await? {
            return Err(StorageError::NotFound { what: "tenant", id: tenant.as_str().to_owned() });
        }
        let (schema_owner, role) = self.existing(&mut tx, &tenant).await?;
        match schema_owner {
            Some(owner) if owner != tenant.as_str() => return Err(foreign("schema", &tenant)),
            Some(_) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {q} CASCADE")))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| backend(format!("cannot drop schema {q}"), e))?;
            }
            None => {}
        }
        if role {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP ROLE {q}"))).execute(&mut *tx).await.map_err(|e| {
                let detail = e.as_database_error().map(|d| d.message().to_owned()).unwrap_or_default();
                backend(
                    format!(
                        "cannot drop role {q}: it still holds objects or privileges outside its schema ({detail}); \
                         nothing was dropped"
                    ),
                    e,
                )
            })?;
        }
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {REGISTRY} WHERE name = $1")))
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| backend(format!("cannot forget tenant `{tenant}`"), e))?;
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
        let text = format!("{c:?}");
        assert!(!text.contains("Sup3rSecretValue"), "{text}");
        assert!(text.contains(r#"password: "***""#), "the password field is shown, redacted: {text}");
        assert!(
            text.contains(r#"connection_string: "postgres://acme:***@h:5432/d""#),
            "the connection string is shown, redacted: {text}"
        );
        assert!(text.contains(r#"role: "acme""#), "{text}");
    }
}
