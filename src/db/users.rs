//! Web users, their API tokens (stored hashed), and installation settings.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, NotSet, QueryFilter, QueryOrder,
};

use super::entities::{setting, user};
use super::{DbError, DbResult, Role};

pub async fn create<C: ConnectionTrait>(
    c: &C,
    username: &str,
    password_hash: &str,
    role: Role,
    now: DateTime<Utc>,
) -> DbResult<user::Model> {
    if find_by_name(c, username).await?.is_some() {
        return Err(DbError::Conflict(format!(
            "user \"{username}\" already exists"
        )));
    }
    let res = user::Entity::insert(user::ActiveModel {
        id: NotSet,
        username: Set(username.to_string()),
        password_hash: Set(password_hash.to_string()),
        role: Set(role),
        api_token_hash: Set(None),
        created_at: Set(now),
        last_login_at: Set(None),
    })
    .exec(c)
    .await?;
    get(c, res.last_insert_id)
        .await?
        .ok_or_else(|| DbError::NotFound("user vanished".into()))
}

pub async fn get<C: ConnectionTrait>(c: &C, id: i64) -> DbResult<Option<user::Model>> {
    Ok(user::Entity::find_by_id(id).one(c).await?)
}

pub async fn find_by_name<C: ConnectionTrait>(
    c: &C,
    username: &str,
) -> DbResult<Option<user::Model>> {
    Ok(user::Entity::find()
        .filter(user::Column::Username.eq(username))
        .one(c)
        .await?)
}

pub async fn find_by_token_hash<C: ConnectionTrait>(
    c: &C,
    hash: &str,
) -> DbResult<Option<user::Model>> {
    Ok(user::Entity::find()
        .filter(user::Column::ApiTokenHash.eq(hash))
        .one(c)
        .await?)
}

pub async fn list<C: ConnectionTrait>(c: &C) -> DbResult<Vec<user::Model>> {
    Ok(user::Entity::find()
        .order_by_asc(user::Column::Username)
        .all(c)
        .await?)
}

pub async fn count<C: ConnectionTrait>(c: &C) -> DbResult<u64> {
    use sea_orm::PaginatorTrait;
    Ok(user::Entity::find().count(c).await?)
}

pub async fn set_token_hash<C: ConnectionTrait>(
    c: &C,
    id: i64,
    hash: Option<&str>,
) -> DbResult<()> {
    user::Entity::update_many()
        .col_expr(
            user::Column::ApiTokenHash,
            Expr::value(hash.map(str::to_string)),
        )
        .filter(user::Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}

pub async fn set_password_hash<C: ConnectionTrait>(c: &C, id: i64, hash: &str) -> DbResult<()> {
    user::Entity::update_many()
        .col_expr(user::Column::PasswordHash, Expr::value(hash))
        .filter(user::Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}

pub async fn touch_login<C: ConnectionTrait>(c: &C, id: i64, now: DateTime<Utc>) -> DbResult<()> {
    user::Entity::update_many()
        .col_expr(user::Column::LastLoginAt, Expr::value(now))
        .filter(user::Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}

/// A setting's value, creating it with `init` when absent (first writer wins, so every
/// process ends up with the same value).
pub async fn setting_or_init<C: ConnectionTrait>(
    c: &C,
    key: &str,
    init: impl FnOnce() -> String,
) -> DbResult<String> {
    if let Some(s) = setting::Entity::find_by_id(key.to_string()).one(c).await? {
        return Ok(s.value);
    }
    setting::Entity::insert(setting::ActiveModel {
        key: Set(key.to_string()),
        value: Set(init()),
    })
    .on_conflict(
        OnConflict::column(setting::Column::Key)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    setting::Entity::find_by_id(key.to_string())
        .one(c)
        .await?
        .map(|s| s.value)
        .ok_or_else(|| DbError::NotFound(format!("setting {key}")))
}
