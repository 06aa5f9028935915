//! Trigger rules and run completion: pure functions of a DAG and its task states.
//!
//! `evaluate` decides, for every `pending` task, whether it can be scheduled, can never
//! run (`upstream_failed` / `skipped`), or must wait. Decisions cascade in topological
//! order, so one call settles a whole chain of upstream failures.

use std::collections::HashMap;

use crate::dag::{Dag, TriggerRule};
use crate::db::{RunState, TaskState};

/// What the rule of a task says given its upstream states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Wait,
    Run,
    Skip,
    UpstreamFailed,
}

/// Counts of upstream states.
#[derive(Debug, Default, Clone, Copy)]
struct Ups {
    total: usize,
    success: usize,
    failed: usize,
    skipped: usize,
    done: usize,
}

fn count(states: &[TaskState]) -> Ups {
    let mut u = Ups {
        total: states.len(),
        ..Ups::default()
    };
    for s in states {
        match s {
            TaskState::Success => u.success += 1,
            TaskState::Failed | TaskState::UpstreamFailed => u.failed += 1,
            TaskState::Skipped => u.skipped += 1,
            // A removed upstream no longer constrains anything: count it as done and
            // successful so it neither blocks nor fails its downstream.
            TaskState::Removed => u.success += 1,
            _ => {}
        }
        if s.is_terminal() {
            u.done += 1;
        }
    }
    u
}

/// Applies a trigger rule to the states of a task's upstreams (Airflow semantics).
pub fn verdict(rule: TriggerRule, upstream: &[TaskState]) -> Verdict {
    let u = count(upstream);
    let all_done = u.done == u.total;
    if u.total == 0 {
        return Verdict::Run;
    }
    match rule {
        TriggerRule::AllSuccess => {
            if u.failed > 0 {
                Verdict::UpstreamFailed
            } else if u.skipped > 0 {
                Verdict::Skip
            } else if all_done {
                Verdict::Run
            } else {
                Verdict::Wait
            }
        }
        TriggerRule::AllDone => {
            if all_done {
                Verdict::Run
            } else {
                Verdict::Wait
            }
        }
        TriggerRule::AllFailed => {
            if u.success > 0 || u.skipped > 0 {
                Verdict::Skip
            } else if all_done {
                Verdict::Run
            } else {
                Verdict::Wait
            }
        }
        TriggerRule::OneSuccess => {
            if u.success > 0 {
                Verdict::Run
            } else if !all_done {
                Verdict::Wait
            } else if u.skipped == u.total {
                Verdict::Skip
            } else {
                Verdict::UpstreamFailed
            }
        }
        TriggerRule::OneFailed => {
            if u.failed > 0 {
                Verdict::Run
            } else if all_done {
                Verdict::Skip
            } else {
                Verdict::Wait
            }
        }
        TriggerRule::NoneFailed => {
            if u.failed > 0 {
                Verdict::UpstreamFailed
            } else if all_done {
                Verdict::Run
            } else {
                Verdict::Wait
            }
        }
    }
}

/// New states for pending tasks, in topological order. Tasks not in `states` are
/// ignored (they belong to another version of the DAG).
pub fn evaluate(dag: &Dag, states: &HashMap<String, TaskState>) -> Vec<(String, TaskState)> {
    let mut current = states.clone();
    let mut out = Vec::new();
    for &i in &dag.topo_order {
        let task = &dag.tasks[i];
        if current.get(&task.task_id) != Some(&TaskState::Pending) {
            continue;
        }
        let ups: Vec<TaskState> = task
            .depends_on
            .iter()
            .map(|d| current.get(d).copied().unwrap_or(TaskState::Removed))
            .collect();
        let new = match verdict(task.trigger_rule, &ups) {
            Verdict::Wait => continue,
            Verdict::Run => TaskState::Scheduled,
            Verdict::Skip => TaskState::Skipped,
            Verdict::UpstreamFailed => TaskState::UpstreamFailed,
        };
        current.insert(task.task_id.clone(), new);
        out.push((task.task_id.clone(), new));
    }
    out
}

/// The final state of a run once every task is terminal, or `None` while any task can
/// still change. A run succeeds when all its leaves succeeded or were skipped.
pub fn run_outcome(dag: &Dag, states: &HashMap<String, TaskState>) -> Option<RunState> {
    if states.values().any(|s| !s.is_terminal()) {
        return None;
    }
    let leaves_ok = dag
        .tasks
        .iter()
        .enumerate()
        .filter(|(i, _)| dag.is_leaf(*i))
        .filter_map(|(_, t)| states.get(&t.task_id))
        .all(|s| {
            matches!(
                s,
                TaskState::Success | TaskState::Skipped | TaskState::Removed
            )
        });
    // Tasks of the run that the DAG no longer has must not fail it either, but a failed
    // task that is no longer a leaf in this version still counts through its downstream.
    Some(if leaves_ok {
        RunState::Success
    } else {
        RunState::Failed
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;
    use TriggerRule::*;

    #[test]
    fn trigger_rule_table() {
        let cases: &[(TriggerRule, &[TaskState], Verdict)] = &[
            (AllSuccess, &[Success, Success], Verdict::Run),
            (AllSuccess, &[Success, Running], Verdict::Wait),
            (AllSuccess, &[Success, Failed], Verdict::UpstreamFailed),
            (
                AllSuccess,
                &[Running, UpstreamFailed],
                Verdict::UpstreamFailed,
            ),
            (AllSuccess, &[Success, Skipped], Verdict::Skip),
            (AllSuccess, &[UpForRetry, Success], Verdict::Wait),
            (AllDone, &[Success, Failed, Skipped], Verdict::Run),
            (AllDone, &[Success, Running], Verdict::Wait),
            (AllFailed, &[Failed, UpstreamFailed], Verdict::Run),
            (AllFailed, &[Failed, Success], Verdict::Skip),
            (AllFailed, &[Failed, Running], Verdict::Wait),
            (OneSuccess, &[Success, Running], Verdict::Run),
            (OneSuccess, &[Failed, Running], Verdict::Wait),
            (OneSuccess, &[Failed, Failed], Verdict::UpstreamFailed),
            (OneSuccess, &[Skipped, Skipped], Verdict::Skip),
            (OneFailed, &[Failed, Running], Verdict::Run),
            (OneFailed, &[Success, Success], Verdict::Skip),
            (OneFailed, &[Success, Running], Verdict::Wait),
            (NoneFailed, &[Success, Skipped], Verdict::Run),
            (NoneFailed, &[Success, Failed], Verdict::UpstreamFailed),
            (NoneFailed, &[Success, Queued], Verdict::Wait),
            (AllSuccess, &[], Verdict::Run),
        ];
        for (rule, ups, want) in cases {
            assert_eq!(verdict(*rule, ups), *want, "{rule:?} {ups:?}");
        }
    }
}
