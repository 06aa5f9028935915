//! Web users, their API tokens (stored hashed), and installation settings.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, NotSet, QueryFilter, QueryOrder,
};

use super::entities::{api_token, setting, user, web_session};
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
        disabled: Set(false),
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

/// The user and scope of an API token that is neither expired nor its user disabled;
/// records when the token was last used.
pub async fn find_by_token_hash<C: ConnectionTrait>(
    c: &C,
    hash: &str,
    now: DateTime<Utc>,
) -> DbResult<Option<(user::Model, String)>> {
    let Some(t) = api_token::Entity::find()
        .filter(api_token::Column::TokenHash.eq(hash))
        .one(c)
        .await?
    else {
        return Ok(None);
    };
    if t.expires_at.is_some_and(|e| e <= now) {
        return Ok(None);
    }
    let Some(u) = get(c, t.user_id).await?.filter(|u| !u.disabled) else {
        return Ok(None);
    };
    // At most one write a minute per token, so reads stay reads.
    if t.last_used_at
        .is_none_or(|l| now - l > chrono::Duration::minutes(1))
    {
        api_token::Entity::update_many()
            .col_expr(api_token::Column::LastUsedAt, Expr::value(now))
            .filter(api_token::Column::Id.eq(t.id))
            .exec(c)
            .await?;
    }
    Ok(Some((u, t.scope)))
}

/// Creates a named token for a user; a token of the same name is replaced.
pub async fn create_token<C: ConnectionTrait>(
    c: &C,
    user_id: i64,
    name: &str,
    hash: &str,
    scope: &str,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> DbResult<()> {
    api_token::Entity::delete_many()
        .filter(api_token::Column::UserId.eq(user_id))
        .filter(api_token::Column::Name.eq(name))
        .exec(c)
        .await?;
    api_token::Entity::insert(api_token::ActiveModel {
        id: NotSet,
        user_id: Set(user_id),
        name: Set(name.to_string()),
        token_hash: Set(hash.to_string()),
        scope: Set(scope.to_string()),
        created_at: Set(now),
        expires_at: Set(expires_at),
        last_used_at: Set(None),
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
}

/// The tokens of a user (all users when `None`), by user and name.
pub async fn tokens<C: ConnectionTrait>(
    c: &C,
    user_id: Option<i64>,
) -> DbResult<Vec<api_token::Model>> {
    let mut q = api_token::Entity::find();
    if let Some(u) = user_id {
        q = q.filter(api_token::Column::UserId.eq(u));
    }
    Ok(q.order_by_asc(api_token::Column::UserId)
        .order_by_asc(api_token::Column::Name)
        .all(c)
        .await?)
}

/// Revokes (deletes) a user's token by name; false when there was none.
pub async fn revoke_token<C: ConnectionTrait>(c: &C, user_id: i64, name: &str) -> DbResult<bool> {
    let r = api_token::Entity::delete_many()
        .filter(api_token::Column::UserId.eq(user_id))
        .filter(api_token::Column::Name.eq(name))
        .exec(c)
        .await?;
    Ok(r.rows_affected > 0)
}

/// Starts a session (the id's hash is stored; the id goes into the cookie).
pub async fn create_session<C: ConnectionTrait>(
    c: &C,
    id_hash: &str,
    user_id: i64,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> DbResult<()> {
    web_session::Entity::insert(web_session::ActiveModel {
        id_hash: Set(id_hash.to_string()),
        user_id: Set(user_id),
        created_at: Set(now),
        expires_at: Set(expires_at),
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
}

/// The user of a live session whose user is not disabled.
pub async fn session_user<C: ConnectionTrait>(
    c: &C,
    id_hash: &str,
    now: DateTime<Utc>,
) -> DbResult<Option<user::Model>> {
    let Some(s) = web_session::Entity::find_by_id(id_hash.to_string())
        .one(c)
        .await?
    else {
        return Ok(None);
    };
    if s.expires_at <= now {
        return Ok(None);
    }
    Ok(get(c, s.user_id).await?.filter(|u| !u.disabled))
}

/// Ends one session (logout).
pub async fn end_session<C: ConnectionTrait>(c: &C, id_hash: &str) -> DbResult<()> {
    web_session::Entity::delete_by_id(id_hash.to_string())
        .exec(c)
        .await?;
    Ok(())
}

/// Ends every session of a user (password change, disabling, deletion).
pub async fn end_sessions_of<C: ConnectionTrait>(c: &C, user_id: i64) -> DbResult<u64> {
    Ok(web_session::Entity::delete_many()
        .filter(web_session::Column::UserId.eq(user_id))
        .exec(c)
        .await?
        .rows_affected)
}

/// Deletes expired sessions.
pub async fn purge_sessions<C: ConnectionTrait>(c: &C, now: DateTime<Utc>) -> DbResult<u64> {
    Ok(web_session::Entity::delete_many()
        .filter(web_session::Column::ExpiresAt.lte(now))
        .exec(c)
        .await?
        .rows_affected)
}

/// Disables or enables a user; disabling ends their sessions (their tokens stop
/// working while disabled).
pub async fn set_disabled<C: ConnectionTrait>(c: &C, id: i64, disabled: bool) -> DbResult<()> {
    user::Entity::update_many()
        .col_expr(user::Column::Disabled, Expr::value(disabled))
        .filter(user::Column::Id.eq(id))
        .exec(c)
        .await?;
    if disabled {
        end_sessions_of(c, id).await?;
    }
    Ok(())
}

/// Deletes a user with their sessions and tokens.
pub async fn delete<C: ConnectionTrait>(c: &C, id: i64) -> DbResult<()> {
    end_sessions_of(c, id).await?;
    api_token::Entity::delete_many()
        .filter(api_token::Column::UserId.eq(id))
        .exec(c)
        .await?;
    user::Entity::delete_by_id(id).exec(c).await?;
    Ok(())
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

/// Sets a new password and ends the user's sessions.
pub async fn set_password_hash<C: ConnectionTrait>(c: &C, id: i64, hash: &str) -> DbResult<()> {
    user::Entity::update_many()
        .col_expr(user::Column::PasswordHash, Expr::value(hash))
        .filter(user::Column::Id.eq(id))
        .exec(c)
        .await?;
    end_sessions_of(c, id).await?;
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
