//! Planning scheduled runs: a pure function of a DAG's timetable, its latest scheduled
//! run, and `now`. No clock, no database.

use chrono::{DateTime, Utc};

use crate::dag::{Interval, Timetable};

/// What the cron side of the scheduler should do for one DAG now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Intervals whose runs are due, oldest first.
    pub due: Vec<Interval>,
    /// When the next interval after `due` ends (its run time), if any.
    pub next_run_after: Option<DateTime<Utc>>,
}

/// The most runs one scheduler pass creates for one DAG: a catch-up from 1970 on a
/// per-minute schedule proceeds in steps (the next pass follows at once) instead of
/// creating runs without end in one transaction.
pub const MAX_RUNS_PER_PASS: usize = 100;

/// The interval after the latest scheduled run (or the first one), taking catchup into
/// account: without catchup, scheduling jumps to the latest complete interval.
fn next_candidate(
    tt: &Timetable<'_>,
    catchup: bool,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<Interval> {
    let next = match last {
        Some(l) => tt.next_interval(l),
        None => tt.first_interval(),
    };
    if catchup {
        return next;
    }
    // Without catchup only the latest interval is due: the latest complete one by now,
    // or, when end_date has passed, the last one that starts by end_date.
    let horizon = match tt.end_date.and_then(|e| tt.interval_containing(e)) {
        Some(last) if last.end < now => last.end,
        _ => now,
    };
    match (next, tt.latest_complete(horizon)) {
        (Some(n), Some(latest)) if n.start < latest.start => Some(latest),
        (None, Some(latest)) if last.is_none() => Some(latest),
        (n, _) => n,
    }
}

/// Plans up to `room` runs (room = max_active_runs minus the active ones).
pub fn plan(
    tt: &Timetable<'_>,
    catchup: bool,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    room: usize,
) -> Plan {
    let mut due = Vec::new();
    let mut next = next_candidate(tt, catchup, last, now);
    let room = room.min(MAX_RUNS_PER_PASS);
    while let Some(iv) = next {
        if iv.end > now || due.len() >= room {
            break;
        }
        due.push(iv);
        next = tt.next_interval(iv.start);
    }
    Plan {
        due,
        next_run_after: next.map(|iv| iv.end),
    }
}

/// The next `n` intervals whose runs happen after `after` (for `weft dags next`): the
/// first is the interval `after` falls in.
pub fn upcoming(tt: &Timetable<'_>, after: DateTime<Utc>, n: usize) -> Vec<Interval> {
    let first_start = match tt.start_date {
        Some(s) if s > after => tt.schedule.next_tick(s, tt.tz, true),
        _ => tt.schedule.prev_tick(after, tt.tz, true),
    };
    let mut next = first_start.and_then(|s| tt.interval_starting(s));
    while let Some(iv) = next {
        if iv.end > after {
            break;
        }
        next = tt.next_interval(iv.start);
    }
    let mut out = Vec::new();
    while let Some(iv) = next {
        if out.len() >= n || tt.end_date.is_some_and(|e| iv.start > e) {
            break;
        }
        out.push(iv);
        next = tt.next_interval(iv.start);
    }
    out
}

/// Every interval whose start (logical date) lies in `[from, to]`, for backfill,
/// made one at a time as the caller asks (a range of millions costs no memory).
pub fn intervals_between<'a>(
    tt: &'a Timetable<'a>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> impl Iterator<Item = Interval> + 'a {
    let mut next = tt
        .schedule
        .next_tick(from, tt.tz, true)
        .and_then(|s| tt.interval_starting(s));
    std::iter::from_fn(move || {
        let iv = next.filter(|iv| iv.start <= to)?;
        next = tt.interval_starting(iv.end);
        Some(iv)
    })
}

/// How many intervals start in `[from, to]`, or `None` when more than `limit` do
/// (counting stops there, so an absurd range is refused fast).
pub fn count_intervals_between(
    tt: &Timetable<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: usize,
) -> Option<usize> {
    let n = intervals_between(tt, from, to).take(limit + 1).count();
    (n <= limit).then_some(n)
}
