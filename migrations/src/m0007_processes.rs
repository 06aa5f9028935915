//! Processes say what they are: a worker row (one per running engine) records its
//! role (`serve`, `scheduler`, `worker`), the queues it serves (empty: all) and how
//! many tries it runs at once, so `weft status` and the Health page can list the
//! schedulers and workers of a deployment.

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
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for column in COLUMNS {
            m.alter_table(Table::alter().table("worker").drop_column(column).take())
                .await?;
        }
        Ok(())
    }
}
