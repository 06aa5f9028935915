//! Admin pages: import errors, pools, users and their tokens.

use axum::Router;
use axum::routing::{get, post};

use super::*;

/// The routes of these pages.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/import-errors", get(import_errors))
        .route("/pools", get(pools_page).post(pools_post))
        .route("/users", get(users_page).post(users_post))
        .route("/users/manage", post(users_manage))
        .route("/audit", get(audit_page))
}

/// An audit entry on no DAG (pools, users).
fn admin_entry(action: &str, detail: String) -> commands::AuditEntry<'_> {
    commands::AuditEntry {
        action,
        detail,
        ..Default::default()
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub layout: Layout,
    pub rows: Vec<super::run::AuditRow>,
    pub filter: AuditQuery,
    pub total: u64,
    pub first: u64,
    pub last: u64,
    pub newer: Option<String>,
    pub older: Option<String>,
    pub actions: Vec<&'static str>,
}

/// Filters and the page of the audit log.
#[derive(Debug, Default, Deserialize, Clone)]
pub struct AuditQuery {
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub dag: String,
    #[serde(default)]
    pub run: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub page: Option<String>,
}

/// Every action taken, newest first, with filters (admin).
pub async fn audit_page(
    State(state): State<AppState>,
    pg: Page,
    Query(q): Query<AuditQuery>,
) -> Result<Response> {
    let layout = pg.layout(&state, "Audit log".into(), "audit", None).await?;
    pg.viewer.require(Role::Admin)?;
    const PER_PAGE: u64 = 50;
    let page = super::page_number(q.page.as_deref(), "page", 1_000_000)?;
    let filter = crate::db::audit::Filter {
        actor: Some(q.actor.trim().to_string()),
        action: Some(q.action.trim().to_string()),
        dag_id: Some(q.dag.trim().to_string()),
        run_id: Some(q.run.trim().to_string()),
        source: Some(q.source.trim().to_string()),
    };
    let offset = (page - 1) * PER_PAGE;
    let (entries, total) =
        crate::db::audit::list(&state.db.read, &filter, PER_PAGE, offset).await?;
    let link = |p: u64| {
        format!(
            "/audit?actor={}&action={}&dag={}&run={}&source={}&page={p}",
            enc(&q.actor),
            enc(&q.action),
            enc(&q.dag),
            enc(&q.run),
            enc(&q.source)
        )
    };
    let shown = entries.len() as u64;
    Ok(pg.render(AuditPage {
        layout,
        rows: entries.iter().map(super::run::AuditRow::of).collect(),
        total,
        first: if shown == 0 { 0 } else { offset + 1 },
        last: offset + shown,
        newer: (page > 1).then(|| link(page - 1)),
        older: (offset + shown < total).then(|| link(page + 1)),
        actions: vec![
            "trigger",
            "clear",
            "mark",
            "cancel",
            "pause",
            "unpause",
            "note",
            "pool",
            "user.create",
            "user.disable",
            "user.enable",
            "user.delete",
            "user.revoke",
            "user.password",
            "user.token",
        ],
        filter: q,
    }))
}

/// A file that does not load.
#[derive(Debug)]
pub struct ImportErrorRow {
    pub anchor: String,
    pub file: String,
    pub message: String,
    pub found: Time,
}

/// A pool: its slots and how many are in use.
#[derive(Debug)]
pub struct PoolRow {
    pub name: String,
    pub slots: i32,
    pub used: i64,
    pub description: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "import_errors.html")]
pub struct ImportErrorsPage {
    pub layout: Layout,
    pub errors: Vec<ImportErrorRow>,
}

pub async fn import_errors(State(state): State<AppState>, pg: Page) -> Result<Response> {
    let layout = pg
        .layout(&state, "Import errors".into(), "dags", None)
        .await?;
    let errors = dags::import_errors(&state.db.read)
        .await?
        .into_iter()
        .map(|e| ImportErrorRow {
            anchor: super::error_anchor(&e.fileloc),
            file: e.fileloc,
            message: e.message,
            found: time(e.created_at),
        })
        .collect();
    Ok(pg.render(ImportErrorsPage { layout, errors }))
}

#[derive(Template, WebTemplate)]
#[template(path = "pools.html")]
pub struct PoolsPage {
    pub layout: Layout,
    pub pools: Vec<PoolRow>,
}

pub async fn pools_page(
    State(state): State<AppState>,
    pg: Page,
    Query(q): Query<NoticeQuery>,
) -> Result<Response> {
    let layout = pg.layout(&state, "Pools".into(), "pools", q.notice).await?;
    let used = stats::pool_usage(&state.db.read).await?;
    let pools = dags::pools(&state.db.read)
        .await?
        .into_iter()
        .map(|p| {
            let used = used.get(&p.name).copied().unwrap_or(0);
            PoolRow {
                name: p.name,
                slots: p.slots,
                used,
                description: p.description.unwrap_or_default(),
            }
        })
        .collect();
    Ok(pg.render(PoolsPage { layout, pools }))
}

#[derive(Debug, Deserialize)]
pub struct PoolForm {
    pub authenticity_token: String,
    pub name: String,
    pub slots: String,
}

pub async fn pools_post(
    State(state): State<AppState>,
    pg: Page,
    Form(f): Form<PoolForm>,
) -> Result<Response> {
    crate::web::auth::verify_csrf(&pg.token, &pg.viewer, Some(&f.authenticity_token))?;
    pg.viewer.require(Role::Admin)?;
    let name = f.name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Error::BadRequest(format!(
            "pool name \"{name}\" may only use letters, digits, '_' and '-'"
        )));
    }
    let slots: u32 = f.slots.trim().parse().map_err(|_| {
        Error::BadRequest(format!("slots must be a whole number, got \"{}\"", f.slots))
    })?;
    commands::set_pool(&state.db, name, slots).await?;
    pg.audit(
        &state,
        admin_entry("pool", format!("{name}: {slots} slots")),
    )
    .await;
    Ok(Redirect::to(&format!(
        "/pools?notice={}",
        enc(&format!("pool {name} now has {slots} slots"))
    ))
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "users.html")]
pub struct UsersPage {
    pub layout: Layout,
    pub users: Vec<UserRow>,
}

#[derive(Debug, Clone)]
pub struct UserRow {
    pub name: String,
    pub role: String,
    pub created: Time,
    pub last_login: Option<Time>,
    pub disabled: bool,
    pub tokens: Vec<TokenRow>,
}

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub name: String,
    pub scope: String,
    pub expires: Option<Time>,
    pub last_used: Option<Time>,
}

pub async fn users_page(
    State(state): State<AppState>,
    pg: Page,
    Query(q): Query<NoticeQuery>,
) -> Result<Response> {
    let layout = pg.layout(&state, "Users".into(), "users", q.notice).await?;
    pg.viewer.require(Role::Admin)?;
    let mut tokens: BTreeMap<i64, Vec<TokenRow>> = BTreeMap::new();
    for t in users::tokens(&state.db.read, None).await? {
        tokens.entry(t.user_id).or_default().push(TokenRow {
            name: t.name,
            scope: t.scope,
            expires: views::opt_time(t.expires_at),
            last_used: views::opt_time(t.last_used_at),
        });
    }
    let users = users::list(&state.db.read)
        .await?
        .into_iter()
        .map(|u| UserRow {
            tokens: tokens.remove(&u.id).unwrap_or_default(),
            name: u.username,
            role: u.role.to_string(),
            created: time(u.created_at),
            last_login: views::opt_time(u.last_login_at),
            disabled: u.disabled,
        })
        .collect();
    Ok(pg.render(UsersPage { layout, users }))
}

#[derive(Debug, Deserialize)]
pub struct ManageUserForm {
    pub authenticity_token: String,
    pub user: String,
    /// disable, enable, delete, or revoke (with `token`).
    pub op: String,
    pub token: Option<String>,
}

/// Disables, enables or deletes a user, or revokes one of their API tokens (admin).
pub async fn users_manage(
    State(state): State<AppState>,
    pg: Page,
    Form(f): Form<ManageUserForm>,
) -> Result<Response> {
    crate::web::auth::verify_csrf(&pg.token, &pg.viewer, Some(&f.authenticity_token))?;
    let me = pg.viewer.require(Role::Admin)?;
    let user = accounts::find(&state.db, &f.user).await?;
    if user.id == me.id && matches!(f.op.as_str(), "disable" | "delete") {
        return Err(Error::BadRequest(
            "you cannot disable or delete yourself; ask another admin".into(),
        ));
    }
    let notice = match f.op.as_str() {
        "disable" => {
            accounts::set_disabled(&state.db, &user, true).await?;
            format!(
                "disabled {}: sessions ended, logins and tokens refused",
                user.username
            )
        }
        "enable" => {
            accounts::set_disabled(&state.db, &user, false).await?;
            format!("enabled {}", user.username)
        }
        "delete" => {
            accounts::delete_user(&state.db, &user).await?;
            format!("deleted {}", user.username)
        }
        "revoke" => {
            let name = f.token.as_deref().unwrap_or_default();
            accounts::revoke_token(&state.db, &user, name).await?;
            format!("revoked token \"{name}\" of {}", user.username)
        }
        other => {
            return Err(Error::BadRequest(format!(
                "unknown operation \"{other}\"; use disable, enable, delete or revoke"
            )));
        }
    };
    tracing::info!(admin = %me.username, user = %user.username, op = %f.op, "user changed");
    let action = format!("user.{}", f.op);
    pg.audit(&state, admin_entry(&action, notice.clone())).await;
    Ok(Redirect::to(&format!("/users?notice={}", enc(&notice))).into_response())
}

#[derive(Debug, Deserialize)]
pub struct UserForm {
    pub authenticity_token: String,
    pub username: String,
    pub password: String,
    pub role: String,
}

pub async fn users_post(
    State(state): State<AppState>,
    pg: Page,
    Form(f): Form<UserForm>,
) -> Result<Response> {
    crate::web::auth::verify_csrf(&pg.token, &pg.viewer, Some(&f.authenticity_token))?;
    pg.viewer.require(Role::Admin)?;
    let username = f.username.trim().to_string();
    let role = Role::parse(&f.role).ok_or_else(|| {
        Error::BadRequest(format!(
            "unknown role \"{}\"; use admin, operator or viewer",
            f.role
        ))
    })?;
    accounts::create_user(&state.db, &username, &f.password, role, Utc::now()).await?;
    pg.audit(
        &state,
        admin_entry("user.create", format!("{username} ({role})")),
    )
    .await;
    Ok(Redirect::to(&format!(
        "/users?notice={}",
        enc(&format!("created {role} {username}"))
    ))
    .into_response())
}

// ---------------------------------------------------------------- login
