//! Scale-out: a DAG row carries the time its next scheduled run is due
//! (`next_run_after`, maintained by the scheduler), so a scheduling pass selects only
//! the due DAGs in one bounded, indexed query; a task instance names the worker queue
//! it runs on (`queue`, default `default`), which `weft worker --queues` filters on.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // Existing DAGs start with NULL (= plan me): the first pass plans each once.
        m.alter_table(
            Table::alter()
                .table("dag")
                .add_column(timestamp_with_time_zone_null("next_run_after"))
                .take(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_dag_next_run_after")
                .table("dag")
                .col("next_run_after")
                .take(),
        )
        .await?;
        // The paused set is read every pass: a partial index of the paused DAGs keeps
        // that independent of the number of DAGs (a plain index on the flag would also
        // tempt SQLite's planner away from next_run_after for the due-DAG query).
        m.get_connection()
            .execute_unprepared("CREATE INDEX ix_dag_paused ON dag (dag_id) WHERE is_paused = TRUE")
            .await?;
        m.alter_table(
            Table::alter()
                .table("task_instance")
                .add_column(string("queue").default("default"))
                .take(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_ti_state_queue")
                .table("task_instance")
                .col("state")
                .col("queue")
                .take(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("ix_ti_state_queue")
                .table("task_instance")
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table("task_instance")
                .drop_column("queue")
                .take(),
        )
        .await?;
        m.drop_index(Index::drop().name("ix_dag_paused").table("dag").to_owned())
            .await?;
        m.drop_index(
            Index::drop()
                .name("ix_dag_next_run_after")
                .table("dag")
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table("dag")
                .drop_column("next_run_after")
                .take(),
        )
        .await
    }
}
