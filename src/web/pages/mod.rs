//! Server-rendered pages (askama templates in `templates/`). Each page reads what it
//! shows in a bounded number of queries (no query per row).

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use askama_web::WebTemplate;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum_csrf::CsrfToken;
use chrono::{Duration, Utc};
use serde::Deserialize;

use super::AppState;

mod actions;
mod admin;
mod calendar;
mod dag;
mod health;
mod login;
mod run;
use super::error::{Error, Result};
use super::views::{
    self, Chart, Graph, Time, dag_href, duration_ms, enc, percent, run_href, task_href, time,
};
use crate::accounts;
use crate::dag::Dag;
use crate::db::rows::{Run, TaskInstance};
use crate::db::runs::RunFilter;
use crate::db::{Role, RunState, TaskState, dags, runs, stats, tasks, users};
use crate::scheduler::{commands, plan};
use crate::web::auth::Viewer;

/// A labelled link (an action button, a results page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub label: String,
    pub href: String,
}

impl Link {
    fn new(label: impl Into<String>, href: impl Into<String>) -> Link {
        Link {
            label: label.into(),
            href: href.into(),
        }
    }
}

/// What every page shows around its content.
#[derive(Debug, Clone)]
pub struct Layout {
    pub title: String,
    pub nav: &'static str,
    pub user: Option<String>,
    pub role: String,
    pub operator: bool,
    pub admin: bool,
    pub csrf: String,
    pub notice: Option<String>,
    pub import_errors: usize,
    /// The first problem of each broken file (`file:line`), linked to its section of
    /// the import-errors page (at most five).
    pub import_error_links: Vec<Link>,
    pub refresh: bool,
}

/// A page number from a query parameter (1 when absent or empty), from 1 to `max`.
pub fn page_number(value: Option<&str>, name: &str, max: u64) -> Result<u64> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(1),
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "{name} must be a page number from 1 to {max}, got \"{v}\""
                ))
            }),
    }
}

/// The anchor of a file's section on the import-errors page.
pub fn error_anchor(file: &str) -> String {
    let tail: String = file
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("err-{tail}")
}

/// The first `file:line` an import error's message names (its lines start with
/// `path:line:column: ...`), else the file alone.
pub fn first_location(file: &str, message: &str) -> String {
    message
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (path, line) = (parts.next()?, parts.next()?);
            (!path.is_empty() && !path.contains(' ') && line.parse::<u32>().is_ok())
                .then(|| format!("{path}:{line}"))
        })
        .unwrap_or_else(|| file.to_string())
}

#[derive(Debug, Default, Deserialize)]
pub struct NoticeQuery {
    pub notice: Option<String>,
}

/// What a page handler starts from, extracted together: who is asking and the CSRF
/// token its forms carry; it builds the layout around the page and renders it (with the
/// token's cookie).
pub struct Page {
    pub viewer: Viewer,
    pub token: CsrfToken,
    /// The client's address, when the server knows it (for the audit log).
    pub client: Option<std::net::IpAddr>,
}

impl axum::extract::FromRequestParts<AppState> for Page {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> std::result::Result<Self, Response> {
        let viewer = Viewer::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let token = CsrfToken::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let client = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(Page {
            viewer,
            token,
            client,
        })
    }
}

impl Page {
    /// Records what the logged-in viewer did from the UI in the audit log.
    pub async fn audit(&self, state: &AppState, entry: commands::AuditEntry<'_>) {
        let who = self
            .viewer
            .0
            .as_ref()
            .map_or_else(|| "anonymous".to_string(), |u| u.username.clone());
        let actor = commands::Actor {
            who,
            source: "ui",
            client: self.client.map(|a| a.to_string()),
        };
        commands::audit(&state.db, &actor, entry).await;
    }

    /// The layout of a page titled `title` under the `nav` section; checks that the
    /// viewer may read.
    pub async fn layout(
        &self,
        state: &AppState,
        title: String,
        nav: &'static str,
        notice: Option<String>,
    ) -> Result<Layout> {
        self.viewer.can_read(state)?;
        self.open_layout(state, title, nav, notice).await
    }

    /// The layout of a page anyone may see (the login page): the import-error count
    /// only for viewers who may read.
    pub async fn open_layout(
        &self,
        state: &AppState,
        title: String,
        nav: &'static str,
        notice: Option<String>,
    ) -> Result<Layout> {
        let viewer = &self.viewer;
        let import_errors = if viewer.can_read(state).is_ok() {
            dags::count_import_errors(&state.db.read).await?
        } else {
            0
        };
        let mut import_error_links = Vec::new();
        if import_errors > 0 {
            for e in dags::import_errors(&state.db.read).await?.iter().take(5) {
                import_error_links.push(Link::new(
                    first_location(&e.fileloc, &e.message),
                    format!("/import-errors#{}", error_anchor(&e.fileloc)),
                ));
            }
        }
        Ok(Layout {
            title,
            nav,
            user: viewer.0.as_ref().map(|u| u.username.clone()),
            role: viewer
                .0
                .as_ref()
                .map(|u| u.role.to_string())
                .unwrap_or_default(),
            operator: viewer.has(Role::Operator),
            admin: viewer.has(Role::Admin),
            csrf: crate::web::auth::csrf_token(&self.token, viewer)?,
            notice: notice
                .filter(|n| !n.is_empty())
                .map(|n| n.chars().take(300).collect()),
            import_errors,
            import_error_links,
            refresh: false,
        })
    }

    /// The page's response, with the CSRF cookie.
    pub fn render(self, body: impl IntoResponse) -> Response {
        (self.token, body).into_response()
    }
}

fn known_dag(state: &AppState, dag_id: &str) -> Result<(std::sync::Arc<Dag>, i64)> {
    state.registry.current(dag_id).ok_or_else(|| {
        let hint = crate::dag::diag::did_you_mean(
            dag_id,
            state
                .registry
                .all()
                .iter()
                .map(|(d, _)| d.dag_id.as_str())
                .collect::<Vec<_>>(),
        );
        Error::NotFound(format!("no dag \"{dag_id}\"{hint}"))
    })
}

// ---------------------------------------------------------------- DAGs

pub async fn root() -> Redirect {
    Redirect::to("/dags")
}

/// The routes of the server-rendered pages, each area with its own router.
pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/", axum::routing::get(root))
        .merge(dag::router())
        .merge(run::router())
        .merge(health::router())
        .merge(admin::router())
        .merge(login::router())
        .merge(actions::router())
        .merge(calendar::router())
}
