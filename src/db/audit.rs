//! The audit log (what operators did: who, when, from where, on what) and the notes
//! operators keep on runs and task instances.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, NotSet, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};

use super::DbResult;
use super::entities::{audit_log, dag_run, task_instance};

/// Who acted and through what: `source` is `ui`, `api` or `cli`; `client` is the
/// client's address (web) or the OS user and host (CLI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub who: String,
    pub source: &'static str,
    pub client: Option<String>,
}

/// One action to record.
#[derive(Debug, Clone, Default)]
pub struct Entry<'a> {
    pub action: &'a str,
    pub dag_id: Option<&'a str>,
    pub run_id: Option<&'a str>,
    pub task_id: Option<&'a str>,
    pub detail: String,
}

/// Records an action.
pub async fn record<C: ConnectionTrait>(
    c: &C,
    actor: &Actor,
    e: &Entry<'_>,
    now: DateTime<Utc>,
) -> DbResult<()> {
    audit_log::Entity::insert(audit_log::ActiveModel {
        id: NotSet,
        at: Set(now),
        actor: Set(actor.who.clone()),
        source: Set(actor.source.to_string()),
        client: Set(actor.client.clone()),
        action: Set(e.action.to_string()),
        dag_id: Set(e.dag_id.map(str::to_string)),
        run_id: Set(e.run_id.map(str::to_string)),
        task_id: Set(e.task_id.map(str::to_string)),
        detail: Set(e.detail.clone()),
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
}

/// What to list; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub dag_id: Option<String>,
    pub run_id: Option<String>,
    pub source: Option<String>,
}

/// Entries matching `f`, newest first, with the total count for paging.
pub async fn list<C: ConnectionTrait>(
    c: &C,
    f: &Filter,
    limit: u64,
    offset: u64,
) -> DbResult<(Vec<audit_log::Model>, u64)> {
    let mut cond = Condition::all();
    let eq = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_string);
    if let Some(v) = eq(&f.actor) {
        cond = cond.add(audit_log::Column::Actor.eq(v));
    }
    if let Some(v) = eq(&f.action) {
        cond = cond.add(audit_log::Column::Action.eq(v));
    }
    if let Some(v) = eq(&f.dag_id) {
        cond = cond.add(audit_log::Column::DagId.eq(v));
    }
    if let Some(v) = eq(&f.run_id) {
        cond = cond.add(audit_log::Column::RunId.eq(v));
    }
    if let Some(v) = eq(&f.source) {
        cond = cond.add(audit_log::Column::Source.eq(v));
    }
    let total = audit_log::Entity::find()
        .filter(cond.clone())
        .count(c)
        .await?;
    let rows = audit_log::Entity::find()
        .filter(cond)
        .order_by_desc(audit_log::Column::At)
        .order_by_desc(audit_log::Column::Id)
        .limit(limit)
        .offset(offset)
        .all(c)
        .await?;
    Ok((rows, total))
}

/// Sets (or, with an empty text, removes) the note of a run.
pub async fn set_run_note<C: ConnectionTrait>(c: &C, run_pk: i64, note: &str) -> DbResult<()> {
    dag_run::Entity::update_many()
        .col_expr(
            dag_run::Column::Note,
            sea_orm::sea_query::Expr::value((!note.is_empty()).then(|| note.to_string())),
        )
        .filter(dag_run::Column::Id.eq(run_pk))
        .exec(c)
        .await?;
    Ok(())
}

/// Sets (or, with an empty text, removes) the note of a task instance.
pub async fn set_task_note<C: ConnectionTrait>(c: &C, ti_id: i64, note: &str) -> DbResult<()> {
    task_instance::Entity::update_many()
        .col_expr(
            task_instance::Column::Note,
            sea_orm::sea_query::Expr::value((!note.is_empty()).then(|| note.to_string())),
        )
        .filter(task_instance::Column::Id.eq(ti_id))
        .exec(c)
        .await?;
    Ok(())
}
