//! Users and their credentials, for the web server and the CLI alike: password rules
//! and hashing (argon2id), API tokens (random, stored as sha256), and the actions on
//! users. Neither the web layer nor the CLI writes user rows itself; both come here.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::db::entities::user;
use crate::db::{Db, DbError, Role, users};

/// What can go wrong with an action on users.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The input breaks a rule; the message says which, for the user.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

pub type AccountResult<T> = Result<T, AccountError>;

/// A new user's name: 1-64 letters, digits and `. _ - @`.
pub fn check_username(username: &str) -> AccountResult<()> {
    if username.is_empty()
        || username.len() > 64
        || !username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
    {
        return Err(AccountError::Invalid(
            "user names use 1-64 letters, digits and . _ - @".into(),
        ));
    }
    Ok(())
}

/// A new password: at least 8 characters.
pub fn check_password(password: &str) -> AccountResult<()> {
    if password.chars().count() < 8 {
        return Err(AccountError::Invalid(
            "passwords need at least 8 characters".into(),
        ));
    }
    Ok(())
}

/// An argon2id PHC string.
pub fn hash_password(password: &str) -> AccountResult<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// An argon2 hash to check passwords of unknown users against, so a login takes as
/// long whether or not the user exists.
pub fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| hash_password("weft-dummy-password").unwrap_or_default())
}

/// API tokens have ~244 random bits, so a fast hash is enough to store them.
pub fn token_hash(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

/// A new API token and its hash.
pub fn new_token() -> (String, String) {
    let token = format!(
        "weft_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let hash = token_hash(&token);
    (token, hash)
}

/// The user named `name`.
pub async fn find(db: &Db, name: &str) -> AccountResult<user::Model> {
    users::find_by_name(&db.conn, name)
        .await?
        .ok_or_else(|| AccountError::NotFound(format!("no user \"{name}\"")))
}

/// Creates a user after checking the name and the password (hashed off the async
/// workers: argon2 takes a while on purpose).
pub async fn create_user(
    db: &Db,
    name: &str,
    password: &str,
    role: Role,
    now: DateTime<Utc>,
) -> AccountResult<user::Model> {
    check_username(name)?;
    let hash = checked_hash(password).await?;
    Ok(users::create(&db.conn, name, &hash, role, now).await?)
}

/// Sets a user's password; their sessions end.
pub async fn set_password(db: &Db, name: &str, password: &str) -> AccountResult<()> {
    let u = find(db, name).await?;
    let hash = checked_hash(password).await?;
    Ok(users::set_password_hash(&db.conn, u.id, &hash).await?)
}

async fn checked_hash(password: &str) -> AccountResult<String> {
    check_password(password)?;
    let pw = password.to_string();
    tokio::task::spawn_blocking(move || hash_password(&pw))
        .await
        .map_err(|e| AccountError::Hash(e.to_string()))?
}

/// Disables (sessions end, logins and tokens refused) or enables a user.
pub async fn set_disabled(db: &Db, u: &user::Model, disabled: bool) -> AccountResult<()> {
    Ok(users::set_disabled(&db.conn, u.id, disabled).await?)
}

/// Deletes a user with their sessions and tokens.
pub async fn delete_user(db: &Db, u: &user::Model) -> AccountResult<()> {
    Ok(users::delete(&db.conn, u.id).await?)
}

/// Issues a named API token (replacing one of the same name); returns the token, which
/// is stored only as its hash. A viewer can only hold `read` tokens.
pub async fn issue_token(
    db: &Db,
    u: &user::Model,
    token_name: &str,
    scope: &str,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> AccountResult<String> {
    if scope == "operate" && u.role == Role::Viewer {
        return Err(AccountError::Invalid(format!(
            "user \"{}\" is a viewer; an operate token needs an operator or admin",
            u.username
        )));
    }
    let (token, hash) = new_token();
    users::create_token(&db.conn, u.id, token_name, &hash, scope, expires_at, now).await?;
    Ok(token)
}

/// Revokes a user's token by name.
pub async fn revoke_token(db: &Db, u: &user::Model, token_name: &str) -> AccountResult<()> {
    if users::revoke_token(&db.conn, u.id, token_name).await? {
        Ok(())
    } else {
        Err(AccountError::NotFound(format!(
            "user \"{}\" has no token named \"{token_name}\"",
            u.username
        )))
    }
}

/// Starts a web session for a user who just logged in: records the login and stores
/// the session by the hash of its id. Returns the id, for the cookie.
pub async fn start_session(
    db: &Db,
    u: &user::Model,
    now: DateTime<Utc>,
    expires: DateTime<Utc>,
) -> AccountResult<String> {
    users::touch_login(&db.conn, u.id, now).await?;
    let (session_id, id_hash) = new_token();
    users::create_session(&db.conn, &id_hash, u.id, now, expires).await?;
    Ok(session_id)
}

/// The user an API token belongs to and the token's scope, if the token is known,
/// unexpired and its user enabled; records that the token was used.
pub async fn user_for_token(
    db: &Db,
    token: &str,
    now: DateTime<Utc>,
) -> AccountResult<Option<(user::Model, String)>> {
    Ok(users::find_by_token_hash(&db.conn, &token_hash(token), now).await?)
}

/// Ends the session whose id is `session_id` (logout).
pub async fn end_session(db: &Db, session_id: &str) -> AccountResult<()> {
    Ok(users::end_session(&db.conn, &token_hash(session_id)).await?)
}

/// The key that signs session cookies, made once and kept in the database (hex).
pub async fn session_key(db: &Db, generate: impl FnOnce() -> String) -> AccountResult<String> {
    Ok(users::setting_or_init(&db.conn, "session_key", generate).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_hashes() {
        assert!(check_username("ada.l@x-1_").is_ok());
        assert!(check_username("").is_err() && check_username("a b").is_err());
        assert!(check_password("1234567").is_err() && check_password("12345678").is_ok());
        let h = hash_password("correct horse").expect("hash");
        assert!(verify_password("correct horse", &h) && !verify_password("wrong", &h));
        let (t, th) = new_token();
        assert!(t.starts_with("weft_") && token_hash(&t) == th && th.len() == 64);
    }
}
