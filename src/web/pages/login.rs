//! The login page (the form posts to `auth::login_post`).

use axum::Router;
use axum::routing::{get, post};

use super::*;

/// The routes of these pages.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page).post(crate::web::auth::login_post))
        .route("/logout", post(crate::web::auth::logout_post))
}

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub layout: Layout,
    pub next: String,
    pub failed: bool,
    pub no_users: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    pub next: Option<String>,
    pub error: Option<String>,
}

pub async fn login_page(
    State(state): State<AppState>,
    token: CsrfToken,
    Query(q): Query<LoginQuery>,
) -> Result<Response> {
    // Anonymous whoever asks: the form's CSRF token is checked against no session, and
    // the page is readable even when reading needs a login.
    let pg = Page {
        viewer: Viewer(None),
        token,
        client: None,
    };
    let layout = pg
        .open_layout(&state, "Log in".into(), "login", None)
        .await?;
    let no_users = users::count(&state.db.read).await? == 0;
    Ok(pg.render(LoginPage {
        layout,
        next: q.next.unwrap_or_else(|| "/dags".into()),
        failed: q.error.is_some(),
        no_users,
    }))
}

// ---------------------------------------------------------------- confirm + actions
