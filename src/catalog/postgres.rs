//! Reaching a PostgreSQL catalog: the login (password from a file or the environment, never from the URL), TLS
//! verified against the system's roots or `ca_file`, and migrations one replica at a time
//! (docs/high-availability.md).

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};

use super::driver::postgres_migrator;
use super::{CatalogError, PostgresCatalog, newest};

/// The key of the transaction-level advisory lock replicas take turns on while migrating ("rpod" in ASCII).
const MIGRATION_TURN: i64 = 0x7270_6f64;

/// How long an operation waits for a connection before it fails (and the caller retries or reports).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// `user@host:port/database` of a catalog URL, for messages: never a password.
#[must_use]
pub fn server_name(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => {
            let user = parsed.username();
            let at = if user.is_empty() {
                String::new()
            } else {
                format!("{user}@")
            };
            format!(
                "postgres://{at}{}:{}{}",
                parsed.host_str().unwrap_or("localhost"),
                parsed.port().unwrap_or(5432),
                parsed.path()
            )
        }
        Err(_) => "the PostgreSQL catalog".to_owned(),
    }
}

/// A pool of connections to the catalog, with one connection made now to prove the login.
pub(super) async fn connect(config: &PostgresCatalog) -> Result<PgPool, CatalogError> {
    let server = server_name(&config.url);
    let unusable = |detail: String| CatalogError::Unreachable {
        server: server.clone(),
        detail,
    };
    let mut options = PgConnectOptions::from_str(&config.url)
        .map_err(|err| unusable(format!("not a PostgreSQL URL ({err})")))?
        .application_name("rpod");
    if let Some(password) = &config.password {
        options = options.password(password);
    }
    let mode_given = url::Url::parse(&config.url)
        .is_ok_and(|url| url.query_pairs().any(|(key, _)| key == "sslmode"));
    if !mode_given {
        // TLS, with the server's name checked, unless the URL asks for something else.
        options = options.ssl_mode(PgSslMode::VerifyFull);
    }
    if let Some(ca_file) = &config.ca_file {
        options = options.ssl_root_cert(ca_file);
    }
    PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|err| unusable(err.to_string()))
}

/// Refuses a catalog whose schema is not the one this rpod knows, for readers that must not migrate it.
pub(super) async fn check_version(pool: &PgPool, url: &str) -> Result<(), CatalogError> {
    let known = newest(&postgres_migrator());
    let has_table: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    let found: Option<i64> = if has_table {
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(pool)
            .await?
    } else {
        None
    };
    let found = found.unwrap_or(0);
    let path = server_name(url);
    if found > known {
        return Err(CatalogError::TooNew { path, found, known });
    }
    if found < known {
        return Err(CatalogError::TooOld { path, found, known });
    }
    Ok(())
}

/// Refuses a catalog a newer rpod wrote, then applies pending migrations. Replicas starting together take turns:
/// each holds a transaction-level advisory lock while it migrates, which (unlike a session lock) works behind a
/// transaction-pooling PgBouncer.
pub(super) async fn migrate(pool: &PgPool, url: &str) -> Result<(), CatalogError> {
    let server = server_name(url);
    let mut turn = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_TURN)
        .execute(&mut *turn)
        .await?;
    let migrator = postgres_migrator();
    let known = newest(&migrator);
    let has_table: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *turn)
        .await?;
    if has_table {
        let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&mut *turn)
            .await?;
        if let Some(found) = found
            && found > known
        {
            return Err(CatalogError::TooNew {
                path: server,
                found,
                known,
            });
        }
    }
    migrator
        .run(pool)
        .await
        .map_err(|err| CatalogError::Unreachable {
            server,
            detail: format!("migrating the catalog failed: {err}"),
        })?;
    turn.commit().await?;
    Ok(())
}
