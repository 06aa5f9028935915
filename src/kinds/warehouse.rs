//! Versioned migrations of the warehouse tables kinds write (`experiment_results`,
//! `survey_*`, `weft_test_results`, ...). Each kind lists its migrations in its registry
//! entry; [`migrate`] applies the ones a warehouse lacks, once, recording each in
//! `weft_warehouse_migrations`, when weft first connects to the warehouse. Tries never
//! run DDL for these tables.
//!
//! Version 1 of each kind creates its tables with `IF NOT EXISTS` and adds, tolerantly,
//! the columns added since the first release: warehouses written before migrations were
//! versioned are brought up to date by it like new ones. Later versions are plain.
//!
//! Tables named by a DAG (an `ingest` task's `table` and its `_staged`, `_files` and
//! `_rejects` companions) cannot be listed here; the ingest kind creates those on first
//! use of each table.

use sea_orm::{ConnectionTrait, DbBackend, DbErr, TransactionSession, TransactionTrait};

use super::KINDS;

/// One versioned change to the tables a kind writes.
#[derive(Debug)]
pub struct Migration {
    /// From 1, in order, per kind.
    pub version: u32,
    /// The statements, for PostgreSQL (`true`) or SQLite.
    pub statements: fn(pg: bool) -> Vec<String>,
    /// Columns added to tables that existed before (`table`, `column definition`):
    /// skipped where the column is already there.
    pub add_columns: &'static [(&'static str, &'static str)],
}

/// A warehouse's time and JSON column types: (timestamp, json).
pub fn types(pg: bool) -> (&'static str, &'static str) {
    if pg {
        ("TIMESTAMPTZ", "JSONB")
    } else {
        ("TEXT", "TEXT")
    }
}

/// Applies every kind's migrations that `c` has not recorded yet, in one transaction
/// (under an advisory lock on PostgreSQL, so two processes never race). Returns how
/// many it applied.
pub async fn migrate<C>(c: &C) -> Result<usize, DbErr>
where
    C: ConnectionTrait + TransactionTrait,
{
    let pg = c.get_database_backend() == DbBackend::Postgres;
    let txn = c.begin().await?;
    if pg {
        txn.execute_unprepared("SELECT pg_advisory_xact_lock(7426001)")
            .await?;
    }
    txn.execute_unprepared(
        "CREATE TABLE IF NOT EXISTS weft_warehouse_migrations (kind TEXT NOT NULL, version INTEGER NOT NULL, \
         applied_at TEXT NOT NULL, PRIMARY KEY (kind, version))",
    )
    .await?;
    let rows = txn
        .query_all_raw(sea_orm::Statement::from_string(
            txn.get_database_backend(),
            "SELECT kind, CAST(version AS BIGINT) FROM weft_warehouse_migrations",
        ))
        .await?;
    let mut done: Vec<(String, i64)> = Vec::with_capacity(rows.len());
    for r in rows {
        done.push((r.try_get_by_index(0)?, r.try_get_by_index(1)?));
    }
    let now = crate::dag::template::rfc3339(chrono::Utc::now());
    let mut applied = 0;
    for kind in KINDS {
        for m in kind.warehouse {
            if done
                .iter()
                .any(|(k, v)| k == kind.name && *v == i64::from(m.version))
            {
                continue;
            }
            for sql in (m.statements)(pg) {
                txn.execute_unprepared(&sql).await?;
            }
            for (table, column) in m.add_columns {
                add_column(&txn, pg, table, column).await?;
            }
            txn.execute_unprepared(&format!(
                "INSERT INTO weft_warehouse_migrations (kind, version, applied_at) VALUES ({}, {}, {})",
                super::dialect::lit(kind.name),
                m.version,
                super::dialect::lit(&now)
            ))
            .await?;
            applied += 1;
        }
    }
    txn.commit().await?;
    if applied > 0 {
        tracing::info!(applied, "warehouse tables migrated");
    }
    Ok(applied)
}

/// `ALTER TABLE ... ADD COLUMN` that is a no-op when the column exists.
async fn add_column<C: ConnectionTrait>(
    c: &C,
    pg: bool,
    table: &str,
    column: &str,
) -> Result<(), DbErr> {
    if pg {
        c.execute_unprepared(&format!(
            "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column}"
        ))
        .await?;
        return Ok(());
    }
    let name = column.split_whitespace().next().unwrap_or_default();
    let has = c
        .query_one_raw(sea_orm::Statement::from_string(
            DbBackend::Sqlite,
            format!(
                "SELECT 1 FROM pragma_table_info({}) WHERE name = {}",
                super::dialect::lit(table),
                super::dialect::lit(name)
            ),
        ))
        .await?
        .is_some();
    if !has {
        c.execute_unprepared(&format!("ALTER TABLE {table} ADD COLUMN {column}"))
            .await?;
    }
    Ok(())
}
