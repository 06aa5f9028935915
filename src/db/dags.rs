//! Queries on DAGs, their versions, import errors and pools.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, NotSet, QueryFilter, QueryOrder};

use super::entities::{dag, dag_version, import_error, pool};
use super::{DbError, DbResult};
use crate::dag::Dag;

/// Records a parsed DAG: the `dag` row, and a new `dag_version` when the source changed.
/// Returns the id of the version that now describes the DAG.
pub async fn upsert_dag<C: ConnectionTrait>(c: &C, d: &Dag, now: DateTime<Utc>) -> DbResult<i64> {
    let existing = dag::Entity::find_by_id(d.dag_id.clone()).one(c).await?;
    let latest = dag_version::Entity::find()
        .filter(dag_version::Column::DagId.eq(&d.dag_id))
        .order_by_desc(dag_version::Column::Version)
        .one(c)
        .await?;
    let tags = serde_json::to_string(&d.tags).unwrap_or_else(|_| "[]".into());
    let fileloc = d.file.display().to_string();
    let row = dag::ActiveModel {
        dag_id: Set(d.dag_id.clone()),
        fileloc: Set(fileloc.clone()),
        source_hash: Set(d.source_hash.clone()),
        is_paused: existing.as_ref().map_or(Set(false), |e| Set(e.is_paused)),
        is_active: Set(true),
        description: Set(d.description.clone()),
        schedule: Set(Some(d.schedule.as_str().to_string())),
        timezone: Set(d.timezone.name().to_string()),
        owner: Set(d.owner.clone()),
        tags: Set(tags),
        latest_version_id: Set(latest.as_ref().map(|v| v.id)),
        last_parsed_at: Set(now),
    };
    if existing.is_some() {
        dag::Entity::update(row).exec(c).await?;
    } else {
        dag::Entity::insert(row).exec_without_returning(c).await?;
    }
    if let Some(v) = &latest {
        if v.source_hash == d.source_hash {
            return Ok(v.id);
        }
    }
    let version = latest.map_or(1, |v| v.version + 1);
    let inserted = dag_version::Entity::insert(dag_version::ActiveModel {
        id: NotSet,
        dag_id: Set(d.dag_id.clone()),
        version: Set(version),
        source_hash: Set(d.source_hash.clone()),
        source: Set(d.source.clone()),
        fileloc: Set(fileloc),
        created_at: Set(now),
    })
    .exec(c)
    .await?;
    let id = inserted.last_insert_id;
    dag::Entity::update_many()
        .col_expr(dag::Column::LatestVersionId, Expr::value(id))
        .filter(dag::Column::DagId.eq(&d.dag_id))
        .exec(c)
        .await?;
    Ok(id)
}

/// Stores (or replaces) the import error of a file.
pub async fn set_import_error<C: ConnectionTrait>(c: &C, fileloc: &str, message: &str, now: DateTime<Utc>) -> DbResult<()> {
    import_error::Entity::insert(import_error::ActiveModel {
        id: NotSet,
        fileloc: Set(fileloc.to_string()),
        message: Set(message.to_string()),
        created_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(import_error::Column::Fileloc)
            .update_columns([import_error::Column::Message, import_error::Column::CreatedAt])
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(())
}

pub async fn clear_import_error<C: ConnectionTrait>(c: &C, fileloc: &str) -> DbResult<()> {
    import_error::Entity::delete_many().filter(import_error::Column::Fileloc.eq(fileloc)).exec(c).await?;
    Ok(())
}

/// Removes import errors of files that are not in `current` (deleted files).
pub async fn retain_import_errors<C: ConnectionTrait>(c: &C, current: &[String]) -> DbResult<()> {
    import_error::Entity::delete_many()
        .filter(import_error::Column::Fileloc.is_not_in(current.iter().cloned()))
        .exec(c)
        .await?;
    Ok(())
}

pub async fn import_errors<C: ConnectionTrait>(c: &C) -> DbResult<Vec<import_error::Model>> {
    Ok(import_error::Entity::find().order_by_asc(import_error::Column::Fileloc).all(c).await?)
}

/// Marks DAGs whose files are gone (or no longer define them) as inactive.
pub async fn deactivate_missing<C: ConnectionTrait>(c: &C, active_ids: &[String]) -> DbResult<()> {
    dag::Entity::update_many()
        .col_expr(dag::Column::IsActive, Expr::value(false))
        .filter(dag::Column::DagId.is_not_in(active_ids.iter().cloned()))
        .exec(c)
        .await?;
    Ok(())
}

pub async fn get_dag<C: ConnectionTrait>(c: &C, dag_id: &str) -> DbResult<Option<dag::Model>> {
    Ok(dag::Entity::find_by_id(dag_id.to_string()).one(c).await?)
}

pub async fn list_dags<C: ConnectionTrait>(c: &C) -> DbResult<Vec<dag::Model>> {
    Ok(dag::Entity::find().order_by_asc(dag::Column::DagId).all(c).await?)
}

/// Pauses or unpauses; an unknown DAG is an error naming it.
pub async fn set_paused<C: ConnectionTrait>(c: &C, dag_id: &str, paused: bool) -> DbResult<()> {
    let res = dag::Entity::update_many()
        .col_expr(dag::Column::IsPaused, Expr::value(paused))
        .filter(dag::Column::DagId.eq(dag_id))
        .exec(c)
        .await?;
    if res.rows_affected == 0 {
        return Err(DbError::NotFound(format!("no dag \"{dag_id}\" in the database (has `weft serve` or `weft dags sync` loaded it?)")));
    }
    Ok(())
}

pub async fn get_version<C: ConnectionTrait>(c: &C, id: i64) -> DbResult<Option<dag_version::Model>> {
    Ok(dag_version::Entity::find_by_id(id).one(c).await?)
}

pub async fn versions_of<C: ConnectionTrait>(c: &C, dag_id: &str) -> DbResult<Vec<dag_version::Model>> {
    Ok(dag_version::Entity::find()
        .filter(dag_version::Column::DagId.eq(dag_id))
        .order_by_desc(dag_version::Column::Version)
        .all(c)
        .await?)
}

/// Makes the pool table match the configuration (pools only in the DB are kept, so
/// slots set in the UI survive; configured slots win for configured pools).
pub async fn sync_pools<C: ConnectionTrait>(c: &C, pools: &BTreeMap<String, u32>) -> DbResult<()> {
    for (name, slots) in pools {
        pool::Entity::insert(pool::ActiveModel {
            name: Set(name.clone()),
            slots: Set(i32::try_from(*slots).unwrap_or(i32::MAX)),
            description: Set(None),
        })
        .on_conflict(OnConflict::column(pool::Column::Name).update_column(pool::Column::Slots).to_owned())
        .exec_without_returning(c)
        .await?;
    }
    Ok(())
}

pub async fn pools<C: ConnectionTrait>(c: &C) -> DbResult<Vec<pool::Model>> {
    Ok(pool::Entity::find().order_by_asc(pool::Column::Name).all(c).await?)
}
