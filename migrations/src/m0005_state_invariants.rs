//! Invariants that tie a row's state to its other columns (as River's job table does):
//! a finished task instance or run has `ended_at`, a queued or running task instance has
//! the `worker_id` that holds it, a running run has `started_at`. The state machine
//! (`weft::db::machine`) keeps them; the database refuses any write that breaks one.
//!
//! Rows an older weft left untied are mended first. PostgreSQL: CHECK constraints
//! (`NOT VALID`: the mended table is not scanned again). SQLite cannot add a CHECK to a
//! table without rebuilding it: triggers raise the same refusal on insert and update.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// (table, name, condition that must hold, message).
const CHECKS: &[(&str, &str, &str, &str)] = &[
    (
        "task_instance",
        "ck_ti_finished_has_ended_at",
        "state NOT IN ('success', 'failed', 'upstream_failed', 'skipped', 'removed') OR ended_at IS NOT NULL",
        "a finished task instance needs ended_at",
    ),
    (
        "task_instance",
        "ck_ti_held_has_worker",
        "state NOT IN ('queued', 'running') OR worker_id IS NOT NULL",
        "a queued or running task instance needs the worker_id that holds it",
    ),
    (
        "dag_run",
        "ck_run_finished_has_ended_at",
        "state NOT IN ('success', 'failed') OR ended_at IS NOT NULL",
        "a finished run needs ended_at",
    ),
    (
        "dag_run",
        "ck_run_running_has_started_at",
        "state <> 'running' OR started_at IS NOT NULL",
        "a running run needs started_at",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let c = m.get_connection();
        // Rows an older weft left untied are mended first, so that no later write to
        // them is refused: a finished row gets an end, a held one without a worker is
        // given back (queued) or failed (running).
        for fix in [
            "UPDATE task_instance SET ended_at = updated_at WHERE ended_at IS NULL \
             AND state IN ('success', 'failed', 'upstream_failed', 'skipped', 'removed')",
            "UPDATE task_instance SET state = 'scheduled' WHERE state = 'queued' AND worker_id IS NULL",
            "UPDATE task_instance SET state = 'failed', ended_at = updated_at, \
             error = 'its worker was unknown when weft was upgraded' \
             WHERE state = 'running' AND worker_id IS NULL",
            "UPDATE dag_run SET ended_at = created_at WHERE ended_at IS NULL AND state IN ('success', 'failed')",
            "UPDATE dag_run SET started_at = created_at WHERE started_at IS NULL AND state = 'running'",
        ] {
            c.execute_unprepared(fix).await?;
        }
        for (table, name, cond, message) in CHECKS {
            if c.get_database_backend() == DbBackend::Postgres {
                c.execute_unprepared(&format!(
                    "ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({cond}) NOT VALID"
                ))
                .await?;
            } else {
                let new_cond = cond
                    .replace("state", "NEW.state")
                    .replace("ended_at", "NEW.ended_at")
                    .replace("started_at", "NEW.started_at")
                    .replace("worker_id", "NEW.worker_id");
                for (when, suffix) in [("INSERT", "ins"), ("UPDATE", "upd")] {
                    c.execute_unprepared(&format!(
                        "CREATE TRIGGER {name}_{suffix} BEFORE {when} ON {table} \
                         WHEN NOT ({new_cond}) \
                         BEGIN SELECT RAISE(ABORT, '{table}: {message} ({name})'); END"
                    ))
                    .await?;
                }
            }
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let c = m.get_connection();
        for (table, name, _, _) in CHECKS {
            if c.get_database_backend() == DbBackend::Postgres {
                c.execute_unprepared(&format!("ALTER TABLE {table} DROP CONSTRAINT {name}"))
                    .await?;
            } else {
                for suffix in ["ins", "upd"] {
                    c.execute_unprepared(&format!("DROP TRIGGER {name}_{suffix}"))
                        .await?;
                }
            }
        }
        Ok(())
    }
}
