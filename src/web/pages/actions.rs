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
    pub upstream: Option<String>,
    pub only_failed: Option<String>,
    pub note: Option<String>,
    pub authenticity_token: Option<String>,
}

impl ActionQuery {
    /// The scope a clear or mark reaches (checkboxes: present and "1").
    fn scope(&self) -> commands::Scope {
        let on = |v: &Option<String>| v.as_deref() == Some("1");
        commands::Scope {
            upstream: on(&self.upstream),
            downstream: on(&self.downstream),
            only_failed: on(&self.only_failed),
        }
    }

    /// The query's fields by name, for hidden fields and links.
    fn fields(&self) -> [(&'static str, &Option<String>); 8] {
        [
            ("action", &self.action),
            ("dag", &self.dag),
            ("run", &self.run),
            ("task", &self.task),
            ("state", &self.state),
            ("downstream", &self.downstream),
            ("upstream", &self.upstream),
            ("only_failed", &self.only_failed),
        ]
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    pub layout: Layout,
    pub question: String,
    pub fields: Vec<HiddenField>,
    pub back: String,
    /// The scope checkboxes of a clear or a mark (none for other actions), and the
    /// fields that stay when they change.
    pub options: Vec<ScopeBox>,
    pub fixed: Vec<HiddenField>,
    /// For a clear: exactly what it will reset (task, current state).
    pub preview: Option<Vec<(String, String)>>,
}

/// A scope checkbox on the confirmation page.
#[derive(Debug)]
pub struct ScopeBox {
    pub name: &'static str,
    pub label: &'static str,
    pub checked: bool,
}

/// A parsed operator action.
enum Action {
    Pause(String, bool),
    Clear {
        dag: String,
        run: String,
        task: Option<String>,
        scope: commands::Scope,
    },
    MarkTask {
        dag: String,
        run: String,
        task: String,
        state: TaskState,
        scope: commands::Scope,
    },
    Note {
        dag: String,
        run: String,
        task: Option<String>,
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
            scope: q.scope(),
        },
        "note" => Action::Note {
            dag,
            run: need(&q.run, "run")?,
            task: q.task.clone().filter(|t| !t.is_empty()),
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
                scope: commands::Scope {
                    only_failed: false,
                    ..q.scope()
                },
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
                "unknown action \"{other}\"; use pause, unpause, clear, mark_task, mark_run or note"
            )));
        }
    })
}

/// What a scope adds to a question: "and everything downstream of it", ...
fn reach(scope: &commands::Scope) -> String {
    let mut parts = Vec::new();
    if scope.upstream {
        parts.push("upstream");
    }
    if scope.downstream {
        parts.push("downstream");
    }
    let mut out = String::new();
    if !parts.is_empty() {
        out = format!(" and everything {} of it", parts.join(" and "));
    }
    if scope.only_failed {
        out.push_str(" (only failed ones)");
    }
    out
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
                scope,
                ..
            } => format!(
                "Clear task \"{t}\"{} of run \"{run}\" so it runs again?",
                reach(scope)
            ),
            Action::MarkTask {
                run,
                task,
                state,
                scope,
                ..
            } => format!(
                "Mark task \"{task}\"{} of run \"{run}\" as {state}? Running tries are stopped.",
                reach(scope)
            ),
            Action::Note {
                run, task: None, ..
            } => format!("Save the note of run \"{run}\"?"),
            Action::Note {
                run, task: Some(t), ..
            } => format!("Save the note of task \"{t}\" in run \"{run}\"?"),
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
            | Action::MarkRun { dag, run, .. }
            | Action::Note {
                dag,
                run,
                task: None,
            } => run_href(dag, run),
            Action::Note {
                dag,
                run,
                task: Some(t),
            } => task_href(dag, run, t),
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
    let hidden = |names: &[&str]| -> Vec<HiddenField> {
        q.fields()
            .into_iter()
            .filter(|(k, _)| names.contains(k))
            .filter_map(|(k, v)| {
                v.as_ref().map(|v| HiddenField {
                    name: k.to_string(),
                    value: v.clone(),
                })
            })
            .collect()
    };
    let all = [
        "action",
        "dag",
        "run",
        "task",
        "state",
        "downstream",
        "upstream",
        "only_failed",
    ];
    let fields = hidden(&all);
    let fixed = hidden(&["action", "dag", "run", "task", "state"]);
    let scope = q.scope();
    let boxes = |names: &[(&'static str, &'static str, bool)]| {
        names
            .iter()
            .map(|(name, label, checked)| ScopeBox {
                name,
                label,
                checked: *checked,
            })
            .collect()
    };
    let (options, preview) = match &action {
        Action::Clear { dag, run, task, .. } => {
            let tasks: Vec<String> = task.iter().cloned().collect();
            let preview =
                commands::clear_preview(&state.db, &state.registry, dag, run, &tasks, &scope)
                    .await?
                    .into_iter()
                    .map(|(t, s)| (t, s.to_string()))
                    .collect();
            let options = if task.is_some() {
                boxes(&[
                    ("upstream", "upstream", scope.upstream),
                    ("downstream", "downstream", scope.downstream),
                    ("only_failed", "only failed", scope.only_failed),
                ])
            } else {
                boxes(&[("only_failed", "only failed", scope.only_failed)])
            };
            (options, Some(preview))
        }
        Action::MarkTask { .. } => (
            boxes(&[
                ("upstream", "upstream", scope.upstream),
                ("downstream", "downstream", scope.downstream),
            ]),
            None,
        ),
        _ => (Vec::new(), None),
    };
    Ok(pg.render(ConfirmPage {
        layout,
        question: action.question(),
        fields,
        back: action.back(),
        options,
        fixed,
        preview,
    }))
}

fn serde_urlencoded_query(q: &ActionQuery) -> String {
    let mut parts = Vec::new();
    for (k, v) in q.fields() {
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
            let action = if *p { "pause" } else { "unpause" };
            pg.audit(&state, entry(action, d, None, None, String::new()))
                .await;
            format!("dag {d} {action}d")
        }
        Action::Clear {
            dag,
            run,
            task,
            scope,
        } => {
            let tasks: Vec<String> = task.iter().cloned().collect();
            let cleared =
                commands::clear(&state.db, &state.registry, dag, run, &tasks, scope, now).await?;
            if cleared.is_empty() {
                "nothing was cleared (queued or running tasks are left alone)".to_string()
            } else {
                let done = format!("cleared {}", cleared.join(", "));
                let e = entry("clear", dag, Some(run), task.as_deref(), done.clone());
                pg.audit(&state, e).await;
                done
            }
        }
        Action::MarkTask {
            dag,
            run,
            task,
            state: s,
            scope,
        } => {
            let marked =
                commands::mark_task(&state.db, &state.registry, dag, run, task, *s, scope, now)
                    .await?;
            let done = format!("marked {} {s}", marked.join(", "));
            let e = entry("mark", dag, Some(run), Some(task), done.clone());
            pg.audit(&state, e).await;
            done
        }
        Action::MarkRun { dag, run, state: s } => {
            let by = pg
                .viewer
                .0
                .as_ref()
                .map_or("an operator", |u| u.username.as_str());
            commands::mark_run(&state.db, &state.registry, dag, run, *s, by, now).await?;
            let action = if *s == RunState::Failed {
                "cancel"
            } else {
                "mark"
            };
            let e = entry(action, dag, Some(run), None, format!("marked run {s}"));
            pg.audit(&state, e).await;
            format!("marked run {s}")
        }
        Action::Note { dag, run, task } => {
            let note = q.note.as_deref().unwrap_or_default();
            commands::set_note(&state.db, dag, run, task.as_deref(), note).await?;
            let e = entry(
                "note",
                dag,
                Some(run),
                task.as_deref(),
                note.trim().to_string(),
            );
            pg.audit(&state, e).await;
            "note saved".to_string()
        }
    };
    crate::web::stop_marked(&state).await;
    Ok(Redirect::to(&format!("{back}?notice={}", enc(&notice))).into_response())
}

/// An audit entry on a DAG, run or task.
pub(super) fn entry<'a>(
    action: &'a str,
    dag: &'a str,
    run: Option<&'a str>,
    task: Option<&'a str>,
    detail: String,
) -> commands::AuditEntry<'a> {
    commands::AuditEntry {
        action,
        dag_id: Some(dag),
        run_id: run,
        task_id: task,
        detail,
    }
}

/// A hidden form field.
#[derive(Debug)]
pub struct HiddenField {
    pub name: String,
    pub value: String,
}
