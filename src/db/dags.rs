//! Queries on DAGs, their versions, import errors and pools.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, NotSet, QueryFilter, QueryOrder,
    TryInsertResult,
};

use super::entities::{dag, dag_version, import_error, pool};
use super::{DbError, DbResult};

/// What the database records of a parsed DAG (the row and, when its hash is new, a
/// version). Built by the layer that parses DAGs; the db layer never sees a `Dag`.
#[derive(Debug, Clone)]
pub struct DagRecord {
    pub dag_id: String,
    pub fileloc: String,
    /// The hash of the DAG's whole bundle: a new hash is a new version.
    pub source_hash: String,
    /// The DAG file's text.
    pub source: String,
    /// The rest of the bundle, JSON.
    pub files: String,
    pub description: Option<String>,
    pub schedule: String,
    pub timezone: String,
    pub owner: Option<String>,
    pub tags: Vec<String>,
}

/// Records a parsed DAG: the `dag` row, and a new `dag_version` when the source changed.
/// Returns the id of the version that now describes the DAG. Safe to call from several
/// processes at once (the server and a CLI command): both statements are upserts.
pub async fn upsert_dag<C: ConnectionTrait>(
    c: &C,
    d: &DagRecord,
    now: DateTime<Utc>,
) -> DbResult<i64> {
    let tags = serde_json::to_string(&d.tags).unwrap_or_else(|_| "[]".into());
    let fileloc = d.fileloc.clone();
    let row = dag::ActiveModel {
        dag_id: Set(d.dag_id.clone()),
        fileloc: Set(fileloc.clone()),
        source_hash: Set(d.source_hash.clone()),
        is_paused: Set(false),
        is_active: Set(true),
        description: Set(d.description.clone()),
        schedule: Set(Some(d.schedule.clone())),
        timezone: Set(d.timezone.clone()),
        owner: Set(d.owner.clone()),
        tags: Set(tags),
        latest_version_id: Set(None),
        last_parsed_at: Set(now),
        next_run_after: Set(None),
    };
    // An existing row keeps its paused flag and latest version.
    dag::Entity::insert(row)
        .on_conflict(
            OnConflict::column(dag::Column::DagId)
                .update_columns([
                    dag::Column::Fileloc,
                    dag::Column::SourceHash,
                    dag::Column::IsActive,
                    dag::Column::Description,
                    dag::Column::Schedule,
                    dag::Column::Timezone,
                    dag::Column::Owner,
                    dag::Column::Tags,
                    dag::Column::LastParsedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    for _ in 0..5 {
        let latest = dag_version::Entity::find()
            .filter(dag_version::Column::DagId.eq(&d.dag_id))
            .order_by_desc(dag_version::Column::Version)
            .one(c)
            .await?;
        let id = match &latest {
            Some(v) if v.source_hash == d.source_hash => v.id,
            _ => {
                let version = latest.as_ref().map_or(1, |v| v.version + 1);
                let res = dag_version::Entity::insert(dag_version::ActiveModel {
                    id: NotSet,
                    dag_id: Set(d.dag_id.clone()),
                    version: Set(version),
                    source_hash: Set(d.source_hash.clone()),
                    source: Set(d.source.clone()),
                    fileloc: Set(fileloc.clone()),
                    created_at: Set(now),
                    files: Set(d.files.clone()),
                })
                .on_conflict(OnConflict::new().do_nothing().to_owned())
                .try_insert()
                .exec(c)
                .await?;
                match res {
                    TryInsertResult::Inserted(r) => r.last_insert_id,
                    // Another process recorded a version at the same moment: look again.
                    _ => continue,
                }
            }
        };
        let mut up = dag::Entity::update_many()
            .col_expr(dag::Column::LatestVersionId, Expr::value(id))
            .filter(dag::Column::DagId.eq(&d.dag_id));
        if latest.as_ref().is_none_or(|v| v.id != id) {
            // A new version may have a new schedule: the next pass plans it again.
            up = up.col_expr(
                dag::Column::NextRunAfter,
                Expr::value(Option::<DateTime<Utc>>::None),
            );
        }
        up.exec(c).await?;
        if latest.as_ref().is_none_or(|v| v.id != id) {
            super::notify(c).await?;
        }
        return Ok(id);
    }
    Err(DbError::Conflict(format!(
        "could not record a version of dag \"{}\": too many concurrent changes",
        d.dag_id
    )))
}

/// Stores (or replaces) the import error of a file.
pub async fn set_import_error<C: ConnectionTrait>(
    c: &C,
    fileloc: &str,
    message: &str,
    now: DateTime<Utc>,
) -> DbResult<()> {
    import_error::Entity::insert(import_error::ActiveModel {
        id: NotSet,
        fileloc: Set(fileloc.to_string()),
        message: Set(message.to_string()),
        created_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(import_error::Column::Fileloc)
            .update_columns([
                import_error::Column::Message,
                import_error::Column::CreatedAt,
            ])
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
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

/// How many files have import errors (every page's layout shows it).
pub async fn count_import_errors<C: ConnectionTrait>(c: &C) -> DbResult<usize> {
    use sea_orm::PaginatorTrait;
    let n = import_error::Entity::find().count(c).await?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

pub async fn import_errors<C: ConnectionTrait>(c: &C) -> DbResult<Vec<import_error::Model>> {
    Ok(import_error::Entity::find()
        .order_by_asc(import_error::Column::Fileloc)
        .all(c)
        .await?)
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
    Ok(dag::Entity::find()
        .order_by_asc(dag::Column::DagId)
        .all(c)
        .await?)
}

/// `next_run_after` of a DAG that has nothing more to schedule (no schedule, or its
/// end date has passed): far beyond any date a DAG may name.
pub fn never() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(253_402_214_400, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The DAGs a scheduling pass must plan: active, not paused, and due (`next_run_after`
/// passed) or never planned since they changed (`NULL`), oldest first, at most `limit`.
/// One indexed query, whatever the number of DAGs.
pub async fn due_dags<C: ConnectionTrait>(
    c: &C,
    now: DateTime<Utc>,
    limit: u64,
) -> DbResult<Vec<String>> {
    use sea_orm::QuerySelect;
    // Two range reads of the index on next_run_after (an OR would scan the table).
    let query = || {
        dag::Entity::find()
            .select_only()
            .column(dag::Column::DagId)
            .filter(dag::Column::IsActive.eq(true))
            .filter(dag::Column::IsPaused.eq(false))
    };
    let mut due: Vec<String> = query()
        .filter(dag::Column::NextRunAfter.is_null())
        .limit(limit)
        .into_tuple()
        .all(c)
        .await?;
    let left = limit.saturating_sub(due.len() as u64);
    if left > 0 {
        due.extend(
            query()
                .filter(dag::Column::NextRunAfter.lte(now))
                .order_by_asc(dag::Column::NextRunAfter)
                .limit(left)
                .into_tuple::<String>()
                .all(c)
                .await?,
        );
    }
    Ok(due)
}

/// When the next scheduled run of any active, unpaused DAG is due (for the scheduler's
/// sleep): one indexed query.
pub async fn earliest_next_run<C: ConnectionTrait>(c: &C) -> DbResult<Option<DateTime<Utc>>> {
    use sea_orm::QuerySelect;
    let t: Option<Option<DateTime<Utc>>> = dag::Entity::find()
        .select_only()
        .column(dag::Column::NextRunAfter)
        .filter(dag::Column::IsActive.eq(true))
        .filter(dag::Column::IsPaused.eq(false))
        .filter(dag::Column::NextRunAfter.is_not_null())
        .order_by_asc(dag::Column::NextRunAfter)
        .into_tuple()
        .one(c)
        .await?;
    Ok(t.flatten())
}

/// Records when a DAG's next scheduled run is due (written by the scheduler after it
/// planned the DAG).
pub async fn set_next_run_after<C: ConnectionTrait>(
    c: &C,
    dag_id: &str,
    at: DateTime<Utc>,
) -> DbResult<()> {
    dag::Entity::update_many()
        .col_expr(dag::Column::NextRunAfter, Expr::value(at))
        .filter(dag::Column::DagId.eq(dag_id))
        .exec(c)
        .await?;
    Ok(())
}

/// Asks the next scheduling pass to plan a DAG again (it was unpaused, or one of its
/// runs ended and may have made room under `max_active_runs`).
pub async fn replan<C: ConnectionTrait>(c: &C, dag_id: &str) -> DbResult<()> {
    dag::Entity::update_many()
        .col_expr(
            dag::Column::NextRunAfter,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(dag::Column::DagId.eq(dag_id))
        .exec(c)
        .await?;
    super::notify(c).await?;
    Ok(())
}

/// The paused DAGs (usually few; never a list of every DAG).
pub async fn paused_ids<C: ConnectionTrait>(c: &C) -> DbResult<Vec<String>> {
    use sea_orm::QuerySelect;
    // A literal TRUE (not a bound value) lets the partial index of paused DAGs serve it.
    Ok(dag::Entity::find()
        .select_only()
        .column(dag::Column::DagId)
        .filter(Expr::cust("is_paused = TRUE"))
        .into_tuple()
        .all(c)
        .await?)
}

/// Each active DAG with the version that describes it now (workers and web servers
/// that do not read the DAG folder take their definitions from here).
pub async fn active_versions<C: ConnectionTrait>(c: &C) -> DbResult<Vec<(String, i64)>> {
    use sea_orm::QuerySelect;
    Ok(dag::Entity::find()
        .select_only()
        .column(dag::Column::DagId)
        .column(dag::Column::LatestVersionId)
        .filter(dag::Column::IsActive.eq(true))
        .filter(dag::Column::LatestVersionId.is_not_null())
        .into_tuple::<(String, Option<i64>)>()
        .all(c)
        .await?
        .into_iter()
        .filter_map(|(d, v)| Some((d, v?)))
        .collect())
}

/// Pauses or unpauses; an unknown DAG is an error naming it. Unpausing asks the next
/// pass to plan the DAG.
pub async fn set_paused<C: ConnectionTrait>(c: &C, dag_id: &str, paused: bool) -> DbResult<()> {
    let mut up = dag::Entity::update_many()
        .col_expr(dag::Column::IsPaused, Expr::value(paused))
        .filter(dag::Column::DagId.eq(dag_id));
    if !paused {
        up = up.col_expr(
            dag::Column::NextRunAfter,
            Expr::value(Option::<DateTime<Utc>>::None),
        );
    }
    let res = up.exec(c).await?;
    if !paused {
        super::notify(c).await?;
    }
    if res.rows_affected == 0 {
        return Err(DbError::NotFound(format!(
            "no dag \"{dag_id}\" in the database (has `weft serve` or `weft dags sync` loaded it?)"
        )));
    }
    Ok(())
}

pub async fn get_version<C: ConnectionTrait>(
    c: &C,
    id: i64,
) -> DbResult<Option<dag_version::Model>> {
    Ok(dag_version::Entity::find_by_id(id).one(c).await?)
}

pub async fn versions_of<C: ConnectionTrait>(c: &C, dag_id: &str) -> DbResult<Vec<VersionSummary>> {
    // Not the bundles: a DAG with many big versions would read them all per page view.
    use sea_orm::QuerySelect;
    Ok(dag_version::Entity::find()
        .select_only()
        .column(dag_version::Column::Version)
        .column(dag_version::Column::SourceHash)
        .column(dag_version::Column::CreatedAt)
        .filter(dag_version::Column::DagId.eq(dag_id))
        .order_by_desc(dag_version::Column::Version)
        .into_tuple::<(i32, String, DateTime<Utc>)>()
        .all(c)
        .await?
        .into_iter()
        .map(|(version, source_hash, created_at)| VersionSummary {
            version,
            source_hash,
            created_at,
        })
        .collect())
}

/// A version of a DAG without its bundle, for lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSummary {
    pub version: i32,
    pub source_hash: String,
    pub created_at: DateTime<Utc>,
}

/// Version number `version` of a DAG, with its bundle.
pub async fn version_numbered<C: ConnectionTrait>(
    c: &C,
    dag_id: &str,
    version: i32,
) -> DbResult<Option<dag_version::Model>> {
    Ok(dag_version::Entity::find()
        .filter(dag_version::Column::DagId.eq(dag_id))
        .filter(dag_version::Column::Version.eq(version))
        .one(c)
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
        .on_conflict(
            OnConflict::column(pool::Column::Name)
                .update_column(pool::Column::Slots)
                .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    }
    Ok(())
}

pub async fn pools<C: ConnectionTrait>(c: &C) -> DbResult<Vec<pool::Model>> {
    Ok(pool::Entity::find()
        .order_by_asc(pool::Column::Name)
        .all(c)
        .await?)
}
