//! A DAG version stores its whole bundle: besides the TOML text (`source`), the files
//! the definition reads (SQL files, models, the globs that found them) as JSON, so a run
//! executes exactly the files of its version, before or after a restart.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // Versions recorded before this migration keep '' and are read as TOML only.
        m.alter_table(
            Table::alter()
                .table("dag_version")
                .add_column(text("files").default(""))
                .take(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("dag_version")
                .drop_column("files")
                .take(),
        )
        .await
    }
}
