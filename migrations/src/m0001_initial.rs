//! The initial schema: DAGs and their versions, runs, task instances, tries, logs,
//! pools, users, import errors, workers and leases.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::{ROLES, RUN_STATES, RUN_TYPES, TASK_STATES, TRY_STATES};

#[derive(DeriveMigrationName)]
pub struct Migration;

fn one_of(column: &'static str, values: &[&str]) -> SimpleExpr {
    Expr::col(column).is_in(values.iter().map(|v| String::from(*v)))
}

fn ts(col: &'static str) -> ColumnDef {
    timestamp_with_time_zone(col)
}

fn ts_null(col: &'static str) -> ColumnDef {
    timestamp_with_time_zone_null(col)
}

fn fk(
    from_table: &'static str,
    col: &'static str,
    to: &'static str,
    to_col: &'static str,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(from_table, col)
        .to(to, to_col)
        .on_delete(ForeignKeyAction::Cascade)
        .take()
}

async fn index(
    m: &SchemaManager<'_>,
    table: &'static str,
    name: &str,
    cols: &[&'static str],
    unique: bool,
) -> Result<(), DbErr> {
    let mut idx = Index::create();
    idx.name(name).table(table);
    for c in cols {
        idx.col(*c);
    }
    if unique {
        idx.unique();
    }
    m.create_index(idx).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("dag")
                .col(string("dag_id").primary_key())
                .col(text("fileloc"))
                .col(string("source_hash"))
                .col(boolean("is_paused").default(false))
                .col(boolean("is_active").default(true))
                .col(text_null("description"))
                .col(string_null("schedule"))
                .col(string("timezone"))
                .col(string_null("owner"))
                .col(text("tags"))
                .col(big_integer_null("latest_version_id"))
                .col(ts("last_parsed_at"))
                .take(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("dag_version")
                .col(big_pk_auto("id"))
                .col(string("dag_id"))
                .col(integer("version"))
                .col(string("source_hash"))
                .col(text("source"))
                .col(text("fileloc"))
                .col(ts("created_at"))
                .foreign_key(&mut fk("dag_version", "dag_id", "dag", "dag_id"))
                .take(),
        )
        .await?;
        index(
            m,
            "dag_version",
            "ux_dag_version",
            &["dag_id", "version"],
            true,
        )
        .await?;

        m.create_table(
            Table::create()
                .table("dag_run")
                .col(big_pk_auto("id"))
                .col(string("dag_id"))
                .col(string("run_id"))
                .col(string("run_type"))
                .col(string("state"))
                .col(ts("logical_date"))
                .col(ts("data_interval_start"))
                .col(ts("data_interval_end"))
                .col(big_integer("dag_version_id"))
                .col(text("params"))
                .col(text("conf"))
                .col(ts("created_at"))
                .col(ts_null("started_at"))
                .col(ts_null("ended_at"))
                .check(one_of("state", RUN_STATES))
                .check(one_of("run_type", RUN_TYPES))
                .foreign_key(&mut fk("dag_run", "dag_id", "dag", "dag_id"))
                .foreign_key(&mut fk("dag_run", "dag_version_id", "dag_version", "id"))
                .take(),
        )
        .await?;
        index(
            m,
            "dag_run",
            "ux_dag_run_run_id",
            &["dag_id", "run_id"],
            true,
        )
        .await?;
        index(
            m,
            "dag_run",
            "ix_dag_run_state",
            &["state", "dag_id"],
            false,
        )
        .await?;
        index(
            m,
            "dag_run",
            "ix_dag_run_logical",
            &["dag_id", "logical_date"],
            false,
        )
        .await?;
        // Scheduled and backfill runs are unique per logical date, so two schedulers (or a
        // scheduler and a backfill) can never create the same interval twice. Manual runs
        // are keyed by run_id only. Partial indexes read the same on SQLite and Postgres.
        m.get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX ux_dag_run_logical ON dag_run (dag_id, logical_date) \
                 WHERE run_type <> 'manual'",
            )
            .await?;

        m.create_table(
            Table::create()
                .table("task_instance")
                .col(big_pk_auto("id"))
                .col(big_integer("dag_run_id"))
                .col(string("dag_id"))
                .col(string("task_id"))
                .col(string("kind"))
                .col(string("state"))
                .col(integer("try_number").default(0))
                .col(integer("max_tries"))
                .col(string("pool"))
                .col(integer("pool_slots").default(1))
                .col(integer("priority").default(0))
                .col(ts_null("scheduled_at"))
                .col(ts_null("queued_at"))
                .col(ts_null("started_at"))
                .col(ts_null("ended_at"))
                .col(big_integer_null("duration_ms"))
                .col(string_null("hostname"))
                .col(string_null("worker_id"))
                .col(integer_null("pid"))
                .col(ts_null("heartbeat_at"))
                .col(integer_null("exit_code"))
                .col(ts_null("next_retry_at"))
                .col(text_null("error"))
                .col(ts("updated_at"))
                .check(one_of("state", TASK_STATES))
                .foreign_key(&mut fk("task_instance", "dag_run_id", "dag_run", "id"))
                .take(),
        )
        .await?;
        index(
            m,
            "task_instance",
            "ux_task_instance",
            &["dag_run_id", "task_id"],
            true,
        )
        .await?;
        index(
            m,
            "task_instance",
            "ix_ti_state_pool",
            &["state", "pool"],
            false,
        )
        .await?;
        index(
            m,
            "task_instance",
            "ix_ti_dag_state",
            &["dag_id", "state"],
            false,
        )
        .await?;
        index(m, "task_instance", "ix_ti_worker", &["worker_id"], false).await?;

        m.create_table(
            Table::create()
                .table("task_try")
                .col(big_pk_auto("id"))
                .col(big_integer("task_instance_id"))
                .col(big_integer("dag_run_id"))
                .col(string("dag_id"))
                .col(string("task_id"))
                .col(integer("try_number"))
                .col(string("state"))
                .col(ts("started_at"))
                .col(ts_null("ended_at"))
                .col(big_integer_null("duration_ms"))
                .col(integer_null("exit_code"))
                .col(text_null("error"))
                .col(string("hostname"))
                .col(string("worker_id"))
                .col(integer_null("pid"))
                .check(one_of("state", TRY_STATES))
                .foreign_key(&mut fk(
                    "task_try",
                    "task_instance_id",
                    "task_instance",
                    "id",
                ))
                .take(),
        )
        .await?;
        index(
            m,
            "task_try",
            "ux_task_try",
            &["task_instance_id", "try_number"],
            true,
        )
        .await?;
        index(
            m,
            "task_try",
            "ix_task_try_dag_ended",
            &["dag_id", "ended_at"],
            false,
        )
        .await?;

        m.create_table(
            Table::create()
                .table("task_log")
                .col(big_pk_auto("id"))
                .col(big_integer("task_try_id"))
                .col(integer("seq"))
                .col(text("content"))
                .col(ts("created_at"))
                .foreign_key(&mut fk("task_log", "task_try_id", "task_try", "id"))
                .take(),
        )
        .await?;
        index(m, "task_log", "ux_task_log", &["task_try_id", "seq"], true).await?;

        m.create_table(
            Table::create()
                .table("pool")
                .col(string("name").primary_key())
                .col(integer("slots"))
                .col(text_null("description"))
                .check(Expr::col("slots").gte(0))
                .take(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("weft_user")
                .col(big_pk_auto("id"))
                .col(string_uniq("username"))
                .col(string("password_hash"))
                .col(string("role"))
                .col(string_null("api_token_hash"))
                .col(ts("created_at"))
                .col(ts_null("last_login_at"))
                .check(one_of("role", ROLES))
                .take(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("import_error")
                .col(big_pk_auto("id"))
                .col(text_uniq("fileloc"))
                .col(text("message"))
                .col(ts("created_at"))
                .take(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("worker")
                .col(string("id").primary_key())
                .col(string("hostname"))
                .col(integer("pid"))
                .col(ts("started_at"))
                .col(ts("heartbeat_at"))
                .col(ts_null("stopped_at"))
                .take(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("lease")
                .col(string("name").primary_key())
                .col(string("holder"))
                .col(ts("expires_at"))
                .take(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "lease",
            "worker",
            "import_error",
            "weft_user",
            "pool",
            "task_log",
            "task_try",
            "task_instance",
            "dag_run",
            "dag_version",
            "dag",
        ] {
            m.drop_table(Table::drop().table(t).take()).await?;
        }
        Ok(())
    }
}
