//! Operator actions from the UI: the confirmation page and the form post that performs
//! the action (trigger, clear, mark, cancel, pause) through `scheduler::commands`.

use axum::Router;
use axum::routing::{get, post};

use super::*;

/// The routes of these pages.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/confirm", get(confirm_page))
        .route("/actions", post(action_post))
}

#[derive(Debug, Default, Deserialize, Clone)]
pub struct ActionQuery {
    pub action: Option<String>,
    pub dag: Option<String>,
    pub run: Option<String>,
    pub task: Option<String>,
    pub state: Option<String>,
    pub downstream: Option<String>,
    pub authenticity_token: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    pub layout: Layout,
    pub question: String,
    pub fields: Vec<HiddenField>,
    pub back: String,
}

/// A parsed operator action.
enum Action {
    Pause(String, bool),
    Clear {
        dag: String,
        run: String,
        task: Option<String>,
        downstream: bool,
    },
    MarkTask {
        dag: String,
        run: String,
        task: String,
        state: TaskState,
    },
    MarkRun {
        dag: String,
        run: String,
        state: RunState,
    },
}

/// `state=success` (true) or `state=failed` (false) of a mark action on `what`.
fn marked_success(q: &ActionQuery, what: &str) -> Result<bool> {
    match q.state.as_deref() {
        Some("success") => Ok(true),
        Some("failed") => Ok(false),
        other => Err(Error::BadRequest(format!(
            "a {what} can be marked success or failed, not {:?}",
            other.unwrap_or("")
        ))),
    }
}

fn parse_action(q: &ActionQuery) -> Result<Action> {
    let need = |v: &Option<String>, name: &str| {
        v.clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::BadRequest(format!("missing \"{name}\"")))
    };
    let action = need(&q.action, "action")?;
    let dag = need(&q.dag, "dag")?;
    Ok(match action.as_str() {
        "pause" => Action::Pause(dag, true),
        "unpause" => Action::Pause(dag, false),
        "clear" => Action::Clear {
            dag,
            run: need(&q.run, "run")?,
            task: q.task.clone().filter(|t| !t.is_empty()),
            downstream: q.downstream.as_deref() == Some("1"),
        },
        "mark_task" => {
            let state = if marked_success(q, "task")? {
                TaskState::Success
            } else {
                TaskState::Failed
            };
            Action::MarkTask {
                dag,
                run: need(&q.run, "run")?,
                task: need(&q.task, "task")?,
                state,
            }
        }
        "mark_run" => {
            let state = if marked_success(q, "run")? {
                RunState::Success
            } else {
                RunState::Failed
            };
            Action::MarkRun {
                dag,
                run: need(&q.run, "run")?,
                state,
            }
        }
        other => {
            return Err(Error::BadRequest(format!(
                "unknown action \"{other}\"; use pause, unpause, clear, mark_task or mark_run"
            )));
        }
    })
}

impl Action {
    fn question(&self) -> String {
        match self {
            Action::Pause(d, true) => format!(
                "Pause dag \"{d}\"? It will create and start no runs until unpaused; running tries finish."
            ),
            Action::Pause(d, false) => {
                format!("Unpause dag \"{d}\"? Due runs will be created and started.")
            }
            Action::Clear {
                run, task: None, ..
            } => format!("Clear every task of run \"{run}\" so the whole run runs again?"),
            Action::Clear {
                run,
                task: Some(t),
                downstream: false,
                ..
            } => format!("Clear task \"{t}\" of run \"{run}\" so it runs again?"),
            Action::Clear {
                run,
                task: Some(t),
                downstream: true,
                ..
            } => format!("Clear task \"{t}\" and everything downstream of it in run \"{run}\"?"),
            Action::MarkTask {
                run, task, state, ..
            } => format!(
                "Mark task \"{task}\" of run \"{run}\" as {state}? A running try is stopped."
            ),
            Action::MarkRun {
                run,
                state: RunState::Failed,
                ..
            } => format!(
                "Mark run \"{run}\" failed? Running tries are stopped and tasks that have not run are skipped."
            ),
            Action::MarkRun { run, state, .. } => {
                format!("Mark run \"{run}\" and all its unfinished tasks as {state}?")
            }
        }
    }

    fn back(&self) -> String {
        match self {
            Action::Pause(d, _) => dag_href(d),
            Action::Clear { dag, run, .. }
            | Action::MarkTask { dag, run, .. }
            | Action::MarkRun { dag, run, .. } => run_href(dag, run),
        }
    }
}

pub async fn confirm_page(
    State(state): State<AppState>,
    pg: Page,
    Query(q): Query<ActionQuery>,
) -> Result<Response> {
    let layout = pg.layout(&state, "Confirm".into(), "dags", None).await?;
    if pg.viewer.0.is_none() {
        let next = format!("/confirm?{}", serde_urlencoded_query(&q));
        return Ok(Redirect::to(&format!("/login?next={}", enc(&next))).into_response());
    }
    pg.viewer.require(Role::Operator)?;
    let action = parse_action(&q)?;
    let mut fields = Vec::new();
    for (k, v) in [
        ("action", &q.action),
        ("dag", &q.dag),
        ("run", &q.run),
        ("task", &q.task),
        ("state", &q.state),
        ("downstream", &q.downstream),
    ] {
        if let Some(v) = v {
            fields.push(HiddenField {
                name: k.to_string(),
                value: v.clone(),
            });
        }
    }
    Ok(pg.render(ConfirmPage {
        layout,
        question: action.question(),
        fields,
        back: action.back(),
    }))
}

fn serde_urlencoded_query(q: &ActionQuery) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("action", &q.action),
        ("dag", &q.dag),
        ("run", &q.run),
        ("task", &q.task),
        ("state", &q.state),
        ("downstream", &q.downstream),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k}={}", enc(v)));
        }
    }
    parts.join("&")
}

pub async fn action_post(
    State(state): State<AppState>,
    pg: Page,
    Form(q): Form<ActionQuery>,
) -> Result<Response> {
    crate::web::auth::verify_csrf(&pg.token, &pg.viewer, q.authenticity_token.as_ref())?;
    pg.viewer.require(Role::Operator)?;
    let action = parse_action(&q)?;
    let now = Utc::now();
    let back = action.back();
    let notice = match &action {
        Action::Pause(d, p) => {
            commands::set_paused(&state.db, d, *p, None).await?;
            format!("dag {d} {}", if *p { "paused" } else { "unpaused" })
        }
        Action::Clear {
            dag,
            run,
            task,
            downstream,
        } => {
            let tasks: Vec<String> = task.iter().cloned().collect();
            let cleared = commands::clear(
                &state.db,
                &state.registry,
                dag,
                run,
                &tasks,
                *downstream,
                now,
            )
            .await?;
            if cleared.is_empty() {
                "nothing was cleared (queued or running tasks are left alone)".to_string()
            } else {
                format!("cleared {}", cleared.join(", "))
            }
        }
        Action::MarkTask {
            dag,
            run,
            task,
            state: s,
        } => {
            commands::mark_task(&state.db, &state.registry, dag, run, task, *s, now).await?;
            format!("marked {task} {s}")
        }
        Action::MarkRun { dag, run, state: s } => {
            let by = pg
                .viewer
                .0
                .as_ref()
                .map_or("an operator", |u| u.username.as_str());
            commands::mark_run(&state.db, &state.registry, dag, run, *s, by, now).await?;
            format!("marked run {s}")
        }
    };
    crate::web::stop_marked(&state).await;
    Ok(Redirect::to(&format!("{back}?notice={}", enc(&notice))).into_response())
}

/// A hidden form field.
#[derive(Debug)]
pub struct HiddenField {
    pub name: String,
    pub value: String,
}
