//! The one error type of the web layer: maps domain errors to status codes, logs
//! internal ones, and never puts internal text in a response body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::db::DbError;
use crate::scheduler::commands::CommandError;

#[derive(Debug)]
pub enum Error {
    /// 400 with a message for the user.
    BadRequest(String),
    /// 401: no or bad credentials.
    Unauthorized,
    /// 403: logged in, but the role does not allow it.
    Forbidden(String),
    /// 404 with a message.
    NotFound(String),
    /// 409: the request conflicts with the current state.
    Conflict(String),
    /// 503 with `Retry-After`: the server is at capacity (no web slot or database
    /// connection came free in time).
    Busy,
    /// 500: logged with its detail, answered generically.
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            Error::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m.clone()),
            Error::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "log in first (or send a bearer token)".into(),
            ),
            Error::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.clone()),
            Error::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m.clone()),
            Error::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone()),
            Error::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the server is busy; try again in a moment".into(),
            ),
            Error::Internal(detail) => {
                tracing::error!("internal error while serving a request: {detail}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; the server log has the details".into(),
                )
            }
        }
    }

    /// The JSON form used by the API: `{"error": {"code", "message"}}`.
    pub fn into_json(self) -> Response {
        let busy = matches!(self, Error::Busy);
        let (status, code, message) = self.parts();
        let res = (
            status,
            Json(serde_json::json!({"error": {"code": code, "message": message}})),
        )
            .into_response();
        retry_after(res, busy)
    }
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound(m) => Error::NotFound(m),
            DbError::Conflict(m) => Error::Conflict(m),
            e if e.is_busy() => {
                tracing::warn!(error = %e, "no database connection came free for a web request: answered 503");
                Error::Busy
            }
            DbError::Db(e) => Error::Internal(e.to_string()),
        }
    }
}

impl From<crate::accounts::AccountError> for Error {
    fn from(e: crate::accounts::AccountError) -> Self {
        use crate::accounts::AccountError as A;
        match e {
            A::Invalid(m) => Error::BadRequest(m),
            A::NotFound(m) => Error::NotFound(m),
            A::Hash(m) => Error::Internal(m),
            A::Db(e) => e.into(),
        }
    }
}

impl From<CommandError> for Error {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Invalid(m) => Error::BadRequest(m),
            CommandError::NotFound(m) => Error::NotFound(m),
            CommandError::Db(e) => e.into(),
        }
    }
}

impl From<askama::Error> for Error {
    fn from(e: askama::Error) -> Self {
        Error::Internal(format!("template: {e}"))
    }
}

/// Pages answer errors with a small HTML page (escaped).
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let busy = matches!(self, Error::Busy);
        let (status, _, message) = self.parts();
        // A 401 offers the way in.
        let login = if status == StatusCode::UNAUTHORIZED {
            "<a class=\"button\" href=\"/login\">Log in</a> "
        } else {
            ""
        };
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} - weft</title><link rel=\"stylesheet\" href=\"/static/weft.css\"><link rel=\"icon\" href=\"/static/favicon.svg\" type=\"image/svg+xml\"></head>\
             <body><main class=\"narrow\"><h1>{}</h1><p class=\"notice error\">{}</p><p>{login}<a href=\"/dags\">Back to DAGs</a></p></main></body></html>",
            status.as_u16(),
            status.canonical_reason().unwrap_or("error"),
            html_escape(&message)
        );
        retry_after((status, Html(body)).into_response(), busy)
    }
}

/// A busy answer says when to come back.
fn retry_after(mut res: Response, busy: bool) -> Response {
    if busy {
        res.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
    }
    res
}

/// Escapes text for HTML (for the few strings not rendered through askama).
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            _ => out.push(c),
        }
    }
    out
}
