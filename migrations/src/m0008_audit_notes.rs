//! What operators did and what they wrote down: an `audit_log` row for every action
//! (trigger, clear, mark, cancel, pause, note, pool and user changes) with who, when,
//! from where (UI, API or CLI, and the client's address) and on what; and a `note` on
//! runs and task instances, as Airflow has; and an index for listing a task's
//! instances across runs (`/task-instances?dag=..&task=..`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const NOTED: [&str; 2] = ["dag_run", "task_instance"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("audit_log")
                .col(big_pk_auto("id"))
                .col(timestamp_with_time_zone("at"))
                .col(string("actor"))
                .col(string("source"))
                .col(string_null("client"))
                .col(string("action"))
                .col(string_null("dag_id"))
                .col(string_null("run_id"))
                .col(string_null("task_id"))
                .col(text("detail").default(""))
                .take(),
        )
        .await?;
        for (name, cols) in [
            ("ix_audit_at", &["at"][..]),
            ("ix_audit_run", &["dag_id", "run_id", "at"][..]),
        ] {
            let mut idx = Index::create();
            idx.name(name).table("audit_log");
            for c in cols {
                idx.col(*c);
            }
            m.create_index(idx.take()).await?;
        }
        // The task instance list by DAG and task, newest first (never updated columns:
        // it costs only an insert).
        m.create_index(
            Index::create()
                .name("ix_ti_dag_task")
                .table("task_instance")
                .col("dag_id")
                .col("task_id")
                .col("id")
                .take(),
        )
        .await?;
        for table in NOTED {
            m.alter_table(
                Table::alter()
                    .table(table)
                    .add_column(text_null("note"))
                    .take(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in NOTED {
            m.alter_table(Table::alter().table(table).drop_column("note").take())
                .await?;
        }
        m.drop_index(
            Index::drop()
                .name("ix_ti_dag_task")
                .table("task_instance")
                .to_owned(),
        )
        .await?;
        m.drop_table(Table::drop().table("audit_log").take()).await
    }
}
