//! Database migrations for weft, shared by SQLite and PostgreSQL.
//!
//! Every table, CHECK constraint and index the database of record needs. The same
//! migrations run on both backends; sea-query renders the backend-specific DDL.

pub use sea_orm_migration::prelude::*;

mod m0001_initial;
mod m0002_settings;
mod m0003_security;
mod m0004_bundles;
mod m0005_state_invariants;
mod m0006_scale_out;
mod m0007_processes;
mod m0008_audit_notes;
pub use m0003_security::TOKEN_SCOPES;

/// The ordered list of migrations applied by `weft db migrate` and `weft serve`.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_initial::Migration),
            Box::new(m0002_settings::Migration),
            Box::new(m0003_security::Migration),
            Box::new(m0004_bundles::Migration),
            Box::new(m0005_state_invariants::Migration),
            Box::new(m0006_scale_out::Migration),
            Box::new(m0007_processes::Migration),
            Box::new(m0008_audit_notes::Migration),
        ]
    }
}

/// Task instance states. Mirrored by `weft::db::TaskState`; the CHECK constraint and
/// the Rust enum must list the same values.
pub const TASK_STATES: &[&str] = &[
    "pending",
    "scheduled",
    "queued",
    "running",
    "success",
    "failed",
    "up_for_retry",
    "upstream_failed",
    "skipped",
    "removed",
];
/// DAG run states.
pub const RUN_STATES: &[&str] = &["queued", "running", "success", "failed"];
/// How a run came to be.
pub const RUN_TYPES: &[&str] = &["scheduled", "manual", "backfill"];
/// States of one try of a task.
pub const TRY_STATES: &[&str] = &["running", "success", "failed"];
/// Roles of web users.
pub const ROLES: &[&str] = &["admin", "operator", "viewer"];
