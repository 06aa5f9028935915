//! Installation settings (the web session key, shared by every web server) and an
//! index for failure-rate windows.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("setting")
                .col(string("key").primary_key())
                .col(text("value"))
                .take(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_dag_run_ended")
                .table("dag_run")
                .col("ended_at")
                .take(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_task_try_ended")
                .table("task_try")
                .col("ended_at")
                .take(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let mut idx = Index::drop();
        idx.name("ix_task_try_ended").table("task_try");
        m.drop_index(idx).await?;
        let mut idx = Index::drop();
        idx.name("ix_dag_run_ended").table("dag_run");
        m.drop_index(idx).await?;
        m.drop_table(Table::drop().table("setting").take()).await
    }
}
