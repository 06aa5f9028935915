//! Processes say what they are: a worker row (one per running engine) records its
//! role (`serve`, `scheduler`, `worker`), the queues it serves (empty: all) and how
//! many tries it runs at once, so `weft status` and the Health page can list the
//! schedulers and workers of a deployment.
//!
//! And two indexes on task instances: the claim's (ready ones in claim order: priority,
//! then age), so a claim reads the first few instead of sorting every ready one; and
//! by kind (never updated, so it costs only an insert), so the Health page's freshness
//! and turnaround figures find the runs with a transform or an experiment without
//! reading every task instance.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const COLUMNS: [&str; 3] = ["role", "queues", "capacity"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // Rows of earlier versions were all-in-one engines serving every queue.
        let columns = [
            string(COLUMNS[0]).default("serve").take(),
            string(COLUMNS[1]).default("").take(),
            integer(COLUMNS[2]).default(0).take(),
        ];
        for column in columns {
            m.alter_table(Table::alter().table("worker").add_column(column).take())
                .await?;
        }
        m.create_index(
            Index::create()
                .name("ix_ti_claim")
                .table("task_instance")
                .col("state")
                .col((Alias::new("priority"), IndexOrder::Desc))
                .col("id")
                .take(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_ti_kind_run")
                .table("task_instance")
                .col("kind")
                .col("dag_run_id")
                .take(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("ix_ti_kind_run")
                .table("task_instance")
                .to_owned(),
        )
        .await?;
        m.drop_index(
            Index::drop()
                .name("ix_ti_claim")
                .table("task_instance")
                .to_owned(),
        )
        .await?;
        for column in COLUMNS {
            m.alter_table(Table::alter().table("worker").drop_column(column).take())
                .await?;
        }
        Ok(())
    }
}
