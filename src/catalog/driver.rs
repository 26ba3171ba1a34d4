//! The two databases the catalog runs on (docs/high-availability.md, "The catalog's databases"): `SQLite`, one
//! file in the state directory for a single node, and PostgreSQL, shared by several replicas.
//!
//! Every query is written once, in the SQL both understand: numbered parameters (`$1`), `RETURNING` for new ids,
//! times as Unix milliseconds in 64-bit integers. The one difference a query may carry is `SQLite`'s index hint
//! (`INDEXED BY name`), which [`Dialect::sql`] removes for PostgreSQL, whose planner needs none. Each driver owns
//! its migrations (`migrations/sqlite`, `migrations/postgres`). [`each!`] runs a block once per driver type, so
//! the code that binds and decodes is shared too.

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{PgPool, Row, SqlitePool};

/// The `SQLite` catalog's migrations.
pub(super) static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
/// The PostgreSQL catalog's migrations, without sqlx's session-level lock (replicas take turns with a
/// transaction-level one instead, see `postgres::migrate`).
pub(super) fn postgres_migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations/postgres");
    migrator.set_locking(false);
    migrator
}

/// A pool of connections to one of the two databases.
#[derive(Debug, Clone)]
pub(super) enum Pool {
    /// The embedded single-node catalog.
    Sqlite(SqlitePool),
    /// The catalog several replicas share.
    Postgres(PgPool),
}

/// Which SQL a query is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    /// As written.
    Sqlite,
    /// Without `SQLite`'s index hints.
    Postgres,
}

impl Dialect {
    /// `sql` as this database takes it.
    pub(super) fn sql(self, sql: &'static str) -> &'static str {
        match self {
            Self::Sqlite => sql,
            Self::Postgres => without_index_hints(sql),
        }
    }
}

/// Runs `$body` with `$pool` bound to the concrete pool and `$dialect` to its [`Dialect`]: the block is compiled
/// once per driver, so its binds and row decoding are each driver's own.
macro_rules! each {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            $crate::catalog::driver::Pool::Sqlite($p) => $body,
            $crate::catalog::driver::Pool::Postgres($p) => $body,
        }
    };
    ($pool:expr, |$p:ident, $dialect:ident| $body:expr) => {
        match $pool {
            $crate::catalog::driver::Pool::Sqlite($p) => {
                let $dialect = $crate::catalog::driver::Dialect::Sqlite;
                $body
            }
            $crate::catalog::driver::Pool::Postgres($p) => {
                let $dialect = $crate::catalog::driver::Dialect::Postgres;
                $body
            }
        }
    };
}
pub(super) use each;

/// `sql` with every `INDEXED BY name` removed, computed once per query text.
fn without_index_hints(sql: &'static str) -> &'static str {
    static SEEN: LazyLock<RwLock<HashMap<usize, &'static str>>> = LazyLock::new(Default::default);
    if !sql.contains("INDEXED BY") {
        return sql;
    }
    let key = sql.as_ptr() as usize;
    if let Some(found) = SEEN.read().ok().and_then(|seen| seen.get(&key).copied()) {
        return found;
    }
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find(" INDEXED BY ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " INDEXED BY ".len()..];
        let name_end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        rest = &after[name_end..];
    }
    out.push_str(rest);
    // A query text is a constant of the program: each is leaked once, at its first use.
    let leaked: &'static str = Box::leak(out.into_boxed_str());
    if let Ok(mut seen) = SEEN.write() {
        seen.insert(key, leaked);
    }
    leaked
}

/// What the catalog reads from a row, the same on both databases.
pub(super) trait CatalogRow {
    /// A 64-bit integer column.
    fn int(&self, index: usize) -> i64;
    /// A nullable 64-bit integer column.
    fn opt_int(&self, index: usize) -> Option<i64>;
    /// A text column.
    fn text(&self, index: usize) -> String;
    /// A nullable text column.
    fn opt_text(&self, index: usize) -> Option<String>;
}

macro_rules! catalog_row {
    ($row:ty) => {
        impl CatalogRow for $row {
            fn int(&self, index: usize) -> i64 {
                self.get(index)
            }
            fn opt_int(&self, index: usize) -> Option<i64> {
                self.get(index)
            }
            fn text(&self, index: usize) -> String {
                self.get(index)
            }
            fn opt_text(&self, index: usize) -> Option<String> {
                self.get(index)
            }
        }
    };
}
catalog_row!(SqliteRow);
catalog_row!(PgRow);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_gets_the_query_without_sqlite_index_hints() {
        let sql = "SELECT id FROM backups INDEXED BY backups_by_target WHERE target = $1 \
                   AND x IN (SELECT 1 FROM backups INDEXED BY backups_expiring)";
        assert_eq!(
            Dialect::Postgres.sql(sql),
            "SELECT id FROM backups WHERE target = $1 AND x IN (SELECT 1 FROM backups)"
        );
        assert_eq!(Dialect::Sqlite.sql(sql), sql);
        assert_eq!(Dialect::Postgres.sql("SELECT 1"), "SELECT 1");
    }
}
