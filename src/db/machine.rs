//! The state machine of task instances and runs, named once.
//!
//! Every write of a `state` column goes through one of the moves below: the db
//! functions that write state take a move, filter on its `from` states (a conditional
//! `UPDATE ... WHERE state IN (...)`, so a move that lost a race changes nothing) and
//! refuse a target outside its `to` states. ARCHITECTURE.md carries the same table; a
//! test checks the two agree, and a tidy test that no other code writes `state`.

use super::{RunState, TaskState};

use RunState as R;
use TaskState as T;

/// A named change of state, of task instances ([`TaskMove`]) or runs ([`RunMove`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Move<S: 'static> {
    pub name: &'static str,
    pub from: &'static [S],
    pub to: &'static [S],
    /// The columns it writes besides `state` and `updated_at`.
    pub sets: &'static [&'static str],
}

/// A named change of a task instance's state.
pub type TaskMove = Move<TaskState>;
/// A named change of a run's state.
pub type RunMove = Move<RunState>;

/// The states no task leaves without an operator.
const TERMINAL: &[TaskState] = &[
    T::Success,
    T::Failed,
    T::UpstreamFailed,
    T::Skipped,
    T::Removed,
];

/// Trigger rules found an upstream ready: the task may be claimed.
pub const SCHEDULE: TaskMove = TaskMove {
    name: "schedule",
    from: &[T::Pending],
    to: &[T::Scheduled],
    sets: &["scheduled_at"],
};
/// Trigger rules found the task will never run.
pub const BLOCK: TaskMove = TaskMove {
    name: "block",
    from: &[T::Pending],
    to: &[T::UpstreamFailed, T::Skipped],
    sets: &["ended_at"],
};
/// A worker takes a scheduled task (fenced: only a `scheduled` row is taken).
pub const CLAIM: TaskMove = TaskMove {
    name: "claim",
    from: &[T::Scheduled],
    to: &[T::Queued],
    sets: &["worker_id", "queued_at"],
};
/// The claiming worker starts the next try (fenced by worker id).
pub const START: TaskMove = TaskMove {
    name: "start",
    from: &[T::Queued],
    to: &[T::Running],
    sets: &[
        "try_number",
        "started_at",
        "hostname",
        "ended_at",
        "duration_ms",
    ],
};
/// The worker records how the try ended (fenced by worker id and try number).
pub const FINISH: TaskMove = TaskMove {
    name: "finish",
    from: &[T::Running],
    to: &[T::Success, T::Failed, T::UpForRetry],
    sets: &[
        "ended_at",
        "duration_ms",
        "exit_code",
        "error",
        "next_retry_at",
        "pid",
    ],
};
/// A retry's delay passed.
pub const RETRY: TaskMove = TaskMove {
    name: "retry",
    from: &[T::UpForRetry],
    to: &[T::Scheduled],
    sets: &["scheduled_at", "worker_id"],
};
/// An operator runs finished tasks again.
pub const CLEAR: TaskMove = TaskMove {
    name: "clear",
    from: TERMINAL,
    to: &[T::Pending],
    sets: &[
        "max_tries",
        "scheduled_at",
        "queued_at",
        "started_at",
        "ended_at",
        "duration_ms",
        "exit_code",
        "next_retry_at",
        "error",
        "worker_id",
    ],
};
/// An operator sets the outcome of a task (a running try is stopped by its worker).
/// A removed task is not in the run's DAG version: it cannot be marked.
pub const MARK: TaskMove = TaskMove {
    name: "mark",
    from: &[
        T::Pending,
        T::Scheduled,
        T::Queued,
        T::Running,
        T::Success,
        T::Failed,
        T::UpForRetry,
        T::UpstreamFailed,
        T::Skipped,
    ],
    to: &[T::Success, T::Failed],
    sets: &["ended_at", "next_retry_at"],
};
/// An operator cancels a run: what holds a worker fails (its process is stopped).
pub const CANCEL: TaskMove = TaskMove {
    name: "cancel",
    from: &[T::Queued, T::Running],
    to: &[T::Failed],
    sets: &["ended_at", "error"],
};
/// An operator cancels a run: what waits is skipped.
pub const CANCEL_WAITING: TaskMove = TaskMove {
    name: "cancel_waiting",
    from: &[T::Pending, T::Scheduled, T::UpForRetry],
    to: &[T::Skipped],
    sets: &["ended_at"],
};
/// A claim that never started goes back (fenced by the worker that claimed it).
pub const UNCLAIM: TaskMove = TaskMove {
    name: "unclaim",
    from: &[T::Queued],
    to: &[T::Scheduled],
    sets: &["worker_id"],
};
/// A running try whose worker is gone fails, or is retried (fenced by worker id and
/// try number, like `finish`; its log line is written in the same transaction).
pub const RESCUE: TaskMove = TaskMove {
    name: "rescue",
    from: &[T::Running],
    to: &[T::Failed, T::UpForRetry],
    sets: &[
        "ended_at",
        "duration_ms",
        "exit_code",
        "error",
        "next_retry_at",
        "pid",
    ],
};
/// A new DAG version no longer has the task: if it has not run, it is removed.
pub const REMOVE: TaskMove = TaskMove {
    name: "remove",
    from: &[T::Pending, T::Scheduled, T::UpForRetry],
    to: &[T::Removed],
    sets: &["ended_at"],
};
/// `weft db check --repair`: a task left unfinished in a finished run.
pub const REPAIR: TaskMove = TaskMove {
    name: "repair",
    from: &[
        T::Pending,
        T::Scheduled,
        T::Queued,
        T::Running,
        T::UpForRetry,
    ],
    to: &[T::Failed, T::Skipped],
    sets: &["ended_at"],
};

/// Every task move.
pub const TASK_MOVES: &[&TaskMove] = &[
    &SCHEDULE,
    &BLOCK,
    &CLAIM,
    &START,
    &FINISH,
    &RETRY,
    &CLEAR,
    &MARK,
    &CANCEL,
    &CANCEL_WAITING,
    &UNCLAIM,
    &RESCUE,
    &REMOVE,
    &REPAIR,
];

/// A queued run starts when there is room under `max_active_runs`.
pub const RUN_START: RunMove = RunMove {
    name: "run_start",
    from: &[R::Queued],
    to: &[R::Running],
    sets: &["started_at (first start only)", "ended_at"],
};
/// Every task of a running run is done.
pub const RUN_FINISH: RunMove = RunMove {
    name: "run_finish",
    from: &[R::Running],
    to: &[R::Success, R::Failed],
    sets: &["ended_at"],
};
/// A finished run whose tasks were cleared waits for room again.
pub const RUN_CLEAR: RunMove = RunMove {
    name: "run_clear",
    from: &[R::Success, R::Failed],
    to: &[R::Queued],
    sets: &["ended_at"],
};
/// A finished run whose task was marked is evaluated again.
pub const RUN_REOPEN: RunMove = RunMove {
    name: "run_reopen",
    from: &[R::Success, R::Failed],
    to: &[R::Running],
    sets: &["ended_at"],
};
/// An operator marks a run (cancel is marking it failed).
pub const RUN_MARK: RunMove = RunMove {
    name: "run_mark",
    from: &[R::Queued, R::Running, R::Success, R::Failed],
    to: &[R::Success, R::Failed],
    sets: &["ended_at"],
};

/// Every run move.
pub const RUN_MOVES: &[&RunMove] = &[&RUN_START, &RUN_FINISH, &RUN_CLEAR, &RUN_REOPEN, &RUN_MARK];

impl<S: Copy + PartialEq + std::fmt::Display> Move<S> {
    pub fn allows(&self, from: S, to: S) -> bool {
        self.from.contains(&from) && self.to.contains(&to)
    }

    /// `from` as strings, for a `WHERE state IN (...)`.
    pub fn from_strs(&self) -> impl Iterator<Item = String> + '_ {
        self.from.iter().map(|s| s.to_string())
    }

    /// An error when `to` is not a target of this move (a bug in the caller).
    pub fn check_target(&self, to: S) -> super::DbResult<()> {
        if self.to.contains(&to) {
            Ok(())
        } else {
            Err(super::DbError::Conflict(format!(
                "the {} move cannot lead to {to}",
                self.name
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of the "moves" table in ARCHITECTURE.md: name, from states, to states.
    fn documented() -> Vec<(String, Vec<String>, Vec<String>)> {
        let doc = include_str!("../../ARCHITECTURE.md");
        let start = doc
            .find("| move | from | to |")
            .expect("ARCHITECTURE.md has a table of moves");
        doc[start..]
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
                let list = |s: &str| -> Vec<String> {
                    s.split(',').map(|x| x.trim().to_string()).collect()
                };
                (
                    cells[0].trim_matches('`').to_string(),
                    list(cells[1]),
                    list(cells[2]),
                )
            })
            .collect()
    }

    #[test]
    fn the_code_and_architecture_md_name_the_same_moves() {
        let mut code: Vec<(String, Vec<String>, Vec<String>)> = TASK_MOVES
            .iter()
            .map(|m| {
                (
                    m.name.to_string(),
                    m.from.iter().map(|s| s.to_string()).collect(),
                    m.to.iter().map(|s| s.to_string()).collect(),
                )
            })
            .chain(RUN_MOVES.iter().map(|m| {
                (
                    m.name.to_string(),
                    m.from.iter().map(|s| s.to_string()).collect(),
                    m.to.iter().map(|s| s.to_string()).collect(),
                )
            }))
            .collect();
        let mut doc = documented();
        for row in code.iter_mut().chain(doc.iter_mut()) {
            row.1.sort();
            row.2.sort();
        }
        code.sort();
        doc.sort();
        assert_eq!(code, doc);
    }

    #[test]
    fn every_state_is_reachable_and_left_only_as_the_diagram_says() {
        // Every state but pending is entered by some move; every non-terminal state is
        // left by some move.
        for s in TaskState::ALL {
            if *s != T::Pending {
                assert!(
                    TASK_MOVES.iter().any(|m| m.to.contains(s)),
                    "{s} is never entered"
                );
            }
            assert!(
                TASK_MOVES.iter().any(|m| m.from.contains(s)),
                "{s} is never left"
            );
        }
        // The known holes stay closed.
        assert!(!MARK.allows(T::Removed, T::Success));
        assert!(!CLEAR.allows(T::Running, T::Pending));
        assert!(!CLEAR.allows(T::Queued, T::Pending));
        assert!(CLEAR.from.iter().all(|s| s.is_terminal()));
        assert!(MARK.check_target(T::Running).is_err());
    }
}
