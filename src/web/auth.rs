//! Who is asking: users from the session cookie (signed) or a bearer token (stored
//! hashed), roles, password hashing (argon2), login and logout.

use crate::accounts::{dummy_hash, token_hash, verify_password};
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
use subtle::ConstantTimeEq;

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
    /// Set for API tokens: `read` tokens never act, whatever the user's role.
    pub scope: Option<String>,
    /// Ties CSRF tokens to this login: derived from the session id (empty for tokens).
    pub csrf_tag: String,
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
            Some(u) if role != Role::Viewer && u.scope.as_deref() == Some("read") => {
                Err(Error::Forbidden(format!(
                    "this API token of \"{}\" has the read scope; acting needs a token with the operate scope",
                    u.username
                )))
            }
            Some(u) if rank(u.role) >= rank(role) => Ok(u),
            Some(u) => Err(Error::Forbidden(format!(
                "user \"{}\" is {}; this needs the {} role",
                u.username, u.role, role
            ))),
        }
    }

    /// Reading needs a login unless `public_read` is on.
    pub fn can_read(&self, state: &AppState) -> Result<()> {
        if state.config.public_read() || self.0.is_some() {
            Ok(())
        } else {
            Err(Error::Unauthorized)
        }
    }

    /// Task logs can hold anything a task printed: anonymous readers see them only
    /// with `public_logs = true`.
    pub fn can_read_logs(&self, state: &AppState) -> Result<()> {
        self.can_read(state)?;
        if self.0.is_some() || state.config.public_logs {
            Ok(())
        } else {
            Err(Error::Unauthorized)
        }
    }

    pub fn has(&self, role: Role) -> bool {
        self.0.as_ref().is_some_and(|u| rank(u.role) >= rank(role))
    }

    /// The part of CSRF tokens that ties them to this viewer's session.
    pub fn csrf_tag(&self) -> &str {
        self.0.as_ref().map_or("anon", |u| u.csrf_tag.as_str())
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let now = Utc::now();
        if let Some(token) = bearer(&parts.headers) {
            return Ok(Viewer(Some(token_user(state, &token).await?)));
        }
        let jar = SignedCookieJar::from_headers(&parts.headers, state.key.clone());
        let Some(id) = jar.get(SESSION_COOKIE).map(|c| c.value().to_string()) else {
            return Ok(Viewer(None));
        };
        let id_hash = token_hash(&id);
        Ok(Viewer(
            users::session_user(&state.db.read, &id_hash, now)
                .await?
                .map(|u| User {
                    id: u.id,
                    username: u.username,
                    role: u.role,
                    scope: None,
                    csrf_tag: id_hash[..16].to_string(),
                }),
        ))
    }
}

/// The user an API token belongs to (401 for an unknown, revoked or expired token).
pub async fn token_user(state: &AppState, token: &str) -> Result<User> {
    let (user, scope) = crate::accounts::user_for_token(&state.db, token, Utc::now())
        .await?
        .ok_or(Error::Unauthorized)?;
    Ok(User {
        id: user.id,
        username: user.username,
        role: user.role,
        scope: Some(scope),
        csrf_tag: String::new(),
    })
}

/// The token of an `Authorization: Bearer ...` header.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

/// Only same-site paths are followed after login: one leading `/`, then no `/` or `\\`
/// right after it, no backslash and no control character anywhere (browsers drop tabs
/// and newlines, so `/\t/evil.example` would become `//evil.example`).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n[1..].starts_with(['/', '\\'])
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n.to_string()
        }
        _ => "/dags".to_string(),
    }
}

/// Failed logins per account and per client address, with exponential backoff: after
/// [`FREE_FAILURES`] failures each further one locks the key for 2^n seconds, up to 15
/// minutes; a quiet quarter of an hour forgets them. In memory, per web server.
#[derive(Debug, Default)]
pub struct LoginGuard {
    keys: std::sync::Mutex<std::collections::HashMap<String, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: std::time::Instant,
    locked_until: std::time::Instant,
}

const FREE_FAILURES: u32 = 5;
const MAX_LOCK: std::time::Duration = std::time::Duration::from_secs(15 * 60);

impl LoginGuard {
    /// How long these keys are still locked, if any is.
    pub fn locked(&self, keys: &[String]) -> Option<std::time::Duration> {
        let now = std::time::Instant::now();
        let map = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .filter_map(|k| map.get(k))
            .filter(|f| f.locked_until > now)
            .map(|f| f.locked_until - now)
            .max()
    }

    pub fn failed(&self, keys: &[String]) {
        let now = std::time::Instant::now();
        let mut map = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, f| now - f.last < MAX_LOCK);
        }
        for k in keys {
            let f = map.entry(k.clone()).or_insert(Failures {
                count: 0,
                last: now,
                locked_until: now,
            });
            if now - f.last > MAX_LOCK {
                f.count = 0;
            }
            f.count += 1;
            f.last = now;
            if f.count > FREE_FAILURES {
                let secs = 1u64 << (f.count - FREE_FAILURES).min(10);
                f.locked_until = now + std::time::Duration::from_secs(secs).min(MAX_LOCK);
            }
        }
    }

    pub fn succeeded(&self, keys: &[String]) {
        let mut map = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            map.remove(k);
        }
    }
}

/// The client's address, when the server knows it (`ConnectInfo`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// Checks a form's CSRF token: the signed token of `axum_csrf` plus the tag of the
/// viewer's session, so a token taken from one session is worthless in another.
pub fn verify_csrf(token: &CsrfToken, viewer: &Viewer, given: Option<&String>) -> Result<()> {
    let ok = given
        .and_then(|g| g.rsplit_once('.'))
        .is_some_and(|(t, tag)| {
            tag.as_bytes().ct_eq(viewer.csrf_tag().as_bytes()).into() && token.verify(t).is_ok()
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Forbidden("the form expired or did not come from this site (CSRF check failed); reload the page and try again".into()))
    }
}

/// A CSRF token for forms shown to `viewer`.
pub fn csrf_token(token: &CsrfToken, viewer: &Viewer) -> Result<String> {
    let t = token
        .authenticity_token()
        .map_err(|e| Error::Internal(format!("csrf token: {e}")))?;
    Ok(format!("{t}.{}", viewer.csrf_tag()))
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

#[allow(clippy::too_many_arguments)]
pub async fn login_post(
    State(state): State<AppState>,
    token: CsrfToken,
    viewer: Viewer,
    client: ClientAddr,
    jar: SignedCookieJar,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response> {
    verify_csrf(&token, &viewer, Some(&form.authenticity_token))?;
    let username = form.username.trim().to_string();
    let mut keys = vec![format!("user:{}", username.to_lowercase())];
    if let Some(ip) = client.0 {
        keys.push(format!("ip:{ip}"));
    }
    if let Some(wait) = state.login_guard.locked(&keys) {
        let secs = wait.as_secs().max(1);
        return Ok((
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.to_string())],
            format!("too many failed logins; try again in {secs} s"),
        )
            .into_response());
    }
    let user = users::find_by_name(&state.db.read, &username).await?;
    // Unknown and disabled users are checked against a dummy hash: same time, same
    // answer, so user names cannot be found by timing.
    let hash = user
        .as_ref()
        .filter(|u| !u.disabled)
        .map_or_else(|| dummy_hash().to_string(), |u| u.password_hash.clone());
    let pw = form.password.clone();
    let verified = tokio::task::spawn_blocking(move || verify_password(&pw, &hash))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|u| verified && !u.disabled) else {
        state.login_guard.failed(&keys);
        tracing::warn!(user = %username, client = ?client.0, "failed login");
        let next = form.next.as_deref().unwrap_or("/dags");
        let q = percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC);
        return Ok(Redirect::to(&format!("/login?error=1&next={q}")).into_response());
    };
    state.login_guard.succeeded(&keys);
    let now = Utc::now();
    let expires = now + chrono::Duration::hours(SESSION_HOURS);
    let session_id = crate::accounts::start_session(&state.db, &user, now, expires).await?;
    let cookie = Cookie::build((SESSION_COOKIE, session_id))
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

/// Ends the session on the server (the cookie is worthless afterwards) and drops it.
pub async fn logout_post(
    State(state): State<AppState>,
    token: CsrfToken,
    viewer: Viewer,
    jar: SignedCookieJar,
    Form(form): Form<LogoutForm>,
) -> Result<Response> {
    verify_csrf(&token, &viewer, Some(&form.authenticity_token))?;
    if let Some(c) = jar.get(SESSION_COOKIE) {
        crate::accounts::end_session(&state.db, c.value()).await?;
    }
    Ok((
        jar.remove(Cookie::build(SESSION_COOKIE).path("/").build()),
        Redirect::to("/dags"),
    )
        .into_response())
}
