//! Leases: a named row held by one process until it expires. The scheduler's cron
//! planning and maintenance run under the `scheduler` lease, so with several
//! schedulers on one PostgreSQL one of them (the leader) does that work, and another
//! takes over when the leader stops renewing. A lease is one conditional `UPDATE`: no
//! consensus protocol, no clock but the holders' (keep hosts on NTP, as for heartbeats).

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Condition, Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::DbResult;
use super::entities::lease;

/// The lease of the scheduler that plans cron runs and sweeps dead workers.
pub const SCHEDULER: &str = "scheduler";

fn expiry(now: DateTime<Utc>, ttl: std::time::Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(10))
}

/// Gives the lease `name` to `holder` until `until` if its row meets `condition`: the
/// one conditional update both taking and taking over are made of.
async fn assign<C: ConnectionTrait>(
    c: &C,
    name: &str,
    holder: &str,
    until: DateTime<Utc>,
    condition: Condition,
) -> DbResult<bool> {
    let res = lease::Entity::update_many()
        .col_expr(lease::Column::Holder, Expr::value(holder))
        .col_expr(lease::Column::ExpiresAt, Expr::value(until))
        .filter(lease::Column::Name.eq(name))
        .filter(condition)
        .exec(c)
        .await?;
    Ok(res.rows_affected == 1)
}

/// Takes or renews the lease `name` for `holder` until `now + ttl`: true when `holder`
/// holds it now (it was free, expired, or already `holder`'s).
pub async fn hold<C: ConnectionTrait>(
    c: &C,
    name: &str,
    holder: &str,
    now: DateTime<Utc>,
    ttl: std::time::Duration,
) -> DbResult<bool> {
    let until = expiry(now, ttl);
    let free_or_ours = Condition::any()
        .add(lease::Column::Holder.eq(holder))
        .add(lease::Column::ExpiresAt.lt(now));
    if assign(c, name, holder, until, free_or_ours).await? {
        return Ok(true);
    }
    // No row yet: the first to insert it holds it.
    let inserted = lease::Entity::insert(lease::ActiveModel {
        name: Set(name.to_string()),
        holder: Set(holder.to_string()),
        expires_at: Set(until),
    })
    .on_conflict(
        OnConflict::column(lease::Column::Name)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(inserted == 1)
}

/// Takes the lease from `from` (known dead: its worker row is stopped, or its process
/// is gone from this host) without waiting for it to expire; conditional on `from`
/// still holding it, so two takers cannot both win.
pub async fn take_over<C: ConnectionTrait>(
    c: &C,
    name: &str,
    from: &str,
    holder: &str,
    now: DateTime<Utc>,
    ttl: std::time::Duration,
) -> DbResult<bool> {
    let held_by_from = Condition::all().add(lease::Column::Holder.eq(from));
    assign(c, name, holder, expiry(now, ttl), held_by_from).await
}

/// Gives the lease up (at shutdown), so another holder takes over at once.
pub async fn release<C: ConnectionTrait>(c: &C, name: &str, holder: &str) -> DbResult<()> {
    lease::Entity::update_many()
        .col_expr(
            lease::Column::ExpiresAt,
            Expr::value(DateTime::<Utc>::UNIX_EPOCH),
        )
        .filter(lease::Column::Name.eq(name))
        .filter(lease::Column::Holder.eq(holder))
        .exec(c)
        .await?;
    Ok(())
}

/// Who holds a lease and until when (for `/health`).
pub async fn holder<C: ConnectionTrait>(
    c: &C,
    name: &str,
) -> DbResult<Option<(String, DateTime<Utc>)>> {
    Ok(lease::Entity::find_by_id(name.to_string())
        .one(c)
        .await?
        .map(|l| (l.holder, l.expires_at)))
}
