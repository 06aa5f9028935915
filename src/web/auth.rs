//! Who is asking: users from the session cookie (signed) or a bearer token (stored
//! hashed), roles, password hashing (argon2), login and logout.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use axum::Form;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_csrf::CsrfToken;
use axum_extra::extract::SignedCookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use chrono::Utc;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::{Error, Result};
use crate::db::{Role, users};

pub const SESSION_COOKIE: &str = "weft_session";
const SESSION_HOURS: i64 = 12;

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub role: Role,
}

fn rank(r: Role) -> u8 {
    match r {
        Role::Viewer => 0,
        Role::Operator => 1,
        Role::Admin => 2,
    }
}

/// The user behind a request, if any.
#[derive(Debug, Clone)]
pub struct Viewer(pub Option<User>);

impl Viewer {
    /// The user, if their role is at least `role`: 401 without a login, 403 with too
    /// small a role. Checked on the server for every state-changing request.
    pub fn require(&self, role: Role) -> Result<&User> {
        match &self.0 {
            None => Err(Error::Unauthorized),
            Some(u) if rank(u.role) >= rank(role) => Ok(u),
            Some(u) => Err(Error::Forbidden(format!(
                "user \"{}\" is {}; this needs the {} role",
                u.username, u.role, role
            ))),
        }
    }

    /// Reading needs a login unless `public_read` is on.
    pub fn can_read(&self, state: &AppState) -> Result<()> {
        if state.config.public_read || self.0.is_some() {
            Ok(())
        } else {
            Err(Error::Unauthorized)
        }
    }

    pub fn has(&self, role: Role) -> bool {
        self.0.as_ref().is_some_and(|u| rank(u.role) >= rank(role))
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        if let Some(token) = bearer(&parts.headers) {
            let user = users::find_by_token_hash(&state.db.conn, &token_hash(&token))
                .await?
                .ok_or(Error::Unauthorized)?;
            return Ok(Viewer(Some(User {
                id: user.id,
                username: user.username,
                role: user.role,
            })));
        }
        let jar = SignedCookieJar::from_headers(&parts.headers, state.key.clone());
        let Some((id, expires)) = jar
            .get(SESSION_COOKIE)
            .and_then(|c| parse_session(c.value()))
        else {
            return Ok(Viewer(None));
        };
        if expires < Utc::now().timestamp() {
            return Ok(Viewer(None));
        }
        Ok(Viewer(users::get(&state.db.conn, id).await?.map(|u| {
            User {
                id: u.id,
                username: u.username,
                role: u.role,
            }
        })))
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

fn parse_session(v: &str) -> Option<(i64, i64)> {
    let (id, exp) = v.split_once(':')?;
    Some((id.parse().ok()?, exp.parse().ok()?))
}

/// A new user's name: 1-64 letters, digits and `. _ - @`.
pub fn check_username(username: &str) -> std::result::Result<(), String> {
    if username.is_empty()
        || username.len() > 64
        || !username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
    {
        return Err("user names use 1-64 letters, digits and . _ - @".into());
    }
    Ok(())
}

/// A new password: at least 8 characters.
pub fn check_password(password: &str) -> std::result::Result<(), String> {
    if password.chars().count() < 8 {
        return Err("passwords need at least 8 characters".into());
    }
    Ok(())
}

/// An argon2id PHC string.
pub fn hash_password(password: &str) -> std::result::Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
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

/// Only same-site paths are followed after login.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/dags".to_string(),
    }
}

fn is_https(headers: &HeaderMap, state: &AppState) -> bool {
    state.config.secure_cookies
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    pub username: String,
    pub password: String,
    pub authenticity_token: String,
    pub next: Option<String>,
}

pub async fn login_post(
    State(state): State<AppState>,
    token: CsrfToken,
    jar: SignedCookieJar,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response> {
    if token.verify(&form.authenticity_token).is_err() {
        return Err(Error::Forbidden("the form expired or did not come from this site (CSRF check failed); reload and try again".into()));
    }
    let user = users::find_by_name(&state.db.conn, form.username.trim()).await?;
    let ok = match &user {
        Some(u) => {
            let (pw, hash) = (form.password.clone(), u.password_hash.clone());
            tokio::task::spawn_blocking(move || verify_password(&pw, &hash))
                .await
                .unwrap_or(false)
        }
        None => false,
    };
    let Some(user) = user.filter(|_| ok) else {
        let next = form.next.as_deref().unwrap_or("/dags");
        let q = percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC);
        return Ok(Redirect::to(&format!("/login?error=1&next={q}")).into_response());
    };
    users::touch_login(&state.db.conn, user.id, Utc::now()).await?;
    let expires = Utc::now().timestamp() + SESSION_HOURS * 3600;
    let cookie = Cookie::build((SESSION_COOKIE, format!("{}:{expires}", user.id)))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(is_https(&headers, &state))
        .max_age(time::Duration::hours(SESSION_HOURS))
        .build();
    Ok((
        jar.add(cookie),
        Redirect::to(&safe_next(form.next.as_deref())),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    pub authenticity_token: String,
}

pub async fn logout_post(
    token: CsrfToken,
    jar: SignedCookieJar,
    Form(form): Form<LogoutForm>,
) -> Result<Response> {
    if token.verify(&form.authenticity_token).is_err() {
        return Err(Error::Forbidden(
            "CSRF check failed; reload and try again".into(),
        ));
    }
    Ok((
        jar.remove(Cookie::build(SESSION_COOKIE).path("/").build()),
        Redirect::to("/dags"),
    )
        .into_response())
}
