//! Server-side web sessions (logout and password changes end them), named API tokens
//! with scopes and expiry (several per user), and disabled users.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// What an API token may do.
pub const TOKEN_SCOPES: &[&str] = &["read", "operate"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("web_session")
                .col(string("id_hash").primary_key())
                .col(big_integer("user_id"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone("expires_at"))
                .take(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_web_session_user")
                .table("web_session")
                .col("user_id")
                .take(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("api_token")
                .col(big_pk_auto("id"))
                .col(big_integer("user_id"))
                .col(string("name"))
                .col(string_uniq("token_hash"))
                .col(string("scope"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone_null("expires_at"))
                .col(timestamp_with_time_zone_null("last_used_at"))
                .check(Expr::col("scope").is_in(TOKEN_SCOPES.iter().copied()))
                .take(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_api_token_user_name")
                .table("api_token")
                .col("user_id")
                .col("name")
                .unique()
                .take(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table("weft_user")
                .add_column(boolean("disabled").default(false))
                .take(),
        )
        .await?;
        // The one token a user could have before becomes a named token.
        m.get_connection()
            .execute_unprepared(
                "INSERT INTO api_token (user_id, name, token_hash, scope, created_at) \
                 SELECT id, 'default', api_token_hash, \
                 CASE WHEN role = 'viewer' THEN 'read' ELSE 'operate' END, created_at \
                 FROM weft_user WHERE api_token_hash IS NOT NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("weft_user")
                .drop_column("disabled")
                .take(),
        )
        .await?;
        m.drop_table(Table::drop().table("api_token").take())
            .await?;
        m.drop_table(Table::drop().table("web_session").take())
            .await
    }
}
