//! Schedules: 5-field crontab expressions (plus `@daily`-style aliases) evaluated in a
//! DAG's time zone, and the data intervals between consecutive ticks.
//!
//! Pure: no clock, no I/O. DST is handled by croner on zoned times: a wall-clock time
//! skipped by spring-forward fires once at the next valid instant, a time repeated by
//! fall-back fires once, and an hourly schedule fires every real hour.

use std::fmt;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// When a DAG runs by itself.
#[derive(Clone)]
pub enum Schedule {
    /// Only manual triggers and backfills.
    None,
    /// A crontab expression (as written) and its parsed form. `fixed` when neither the
    /// minute nor the hour field begins with `*` (cronie's "fixed-time" jobs).
    Cron {
        expr: String,
        cron: Box<Cron>,
        fixed: bool,
    },
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::None => f.write_str("Schedule::None"),
            Schedule::Cron { expr, .. } => write!(f, "Schedule::Cron({expr:?})"),
        }
    }
}

const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT, 0 and 7 are Sunday"),
];

const ALIASES: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

fn parser() -> CronParser {
    parser_with(false)
}

/// Crontab semantics: no seconds or year fields; day-of-month and day-of-week combine
/// with OR when both are restricted, and with AND when either field begins with `*`
/// (cronie and Vixie cron: `0 0 */2 * 1` is "odd-numbered days that are Mondays").
fn parser_with(dom_and_dow: bool) -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .dom_and_dow(dom_and_dow)
        .build()
}

impl Schedule {
    /// Parses `none`, an alias such as `@daily`, or a 5-field crontab expression.
    /// Errors name the offending field.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let trimmed = expr.trim();
        if trimmed.eq_ignore_ascii_case("none") {
            return Ok(Schedule::None);
        }
        if trimmed.starts_with('@') {
            let lower = trimmed.to_ascii_lowercase();
            if !ALIASES.contains(&lower.as_str()) {
                return Err(format!(
                    "unknown schedule alias \"{trimmed}\"{}; known aliases: {}",
                    super::diag::did_you_mean(&lower, ALIASES),
                    ALIASES.join(", ")
                ));
            }
            let cron = parser().parse(&lower).map_err(|e| e.to_string())?;
            return Ok(Schedule::Cron {
                expr: trimmed.to_string(),
                cron: Box::new(cron),
                // @hourly is `0 * * * *`: a wildcard hour; the others fix both.
                fixed: lower != "@hourly",
            });
        }
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        if fields.len() != 5 {
            let hint = if fields.len() == 6 || fields.len() == 7 {
                " (weft uses crontab syntax; the seconds and year fields of Quartz-style expressions are not supported)"
            } else {
                ""
            };
            return Err(format!(
                "cron expression \"{trimmed}\" has {} field{}, expected 5: minute hour day-of-month month day-of-week{hint}",
                fields.len(),
                if fields.len() == 1 { "" } else { "s" }
            ));
        }
        // Check each field on its own so the error can say which one is wrong.
        for (i, field) in fields.iter().enumerate() {
            let mut probe = ["*"; 5];
            probe[i] = field;
            if let Err(e) = parser().parse(&probe.join(" ")) {
                let (name, range) = FIELDS[i];
                let detail = e.to_string();
                return Err(format!(
                    "cron expression \"{trimmed}\": {name} field \"{field}\" is not valid (allowed: {range}; {})",
                    detail.trim_end_matches('.').to_lowercase()
                ));
            }
        }
        let and = fields[2].starts_with('*') || fields[4].starts_with('*');
        let cron = parser_with(and).parse(trimmed).map_err(|e| {
            format!(
                "cron expression \"{trimmed}\": {}",
                e.to_string().to_lowercase()
            )
        })?;
        // A schedule must fire at some point: `0 0 30 2 *` (February 30) never does.
        // 28 years cover every combination of leap day and weekday.
        let from = Utc.with_ymd_and_hms(2001, 1, 1, 0, 0, 0).single();
        let fires = from.is_some_and(|f| {
            cron.find_next_occurrence(&f, false)
                .is_ok_and(|n| n.year() <= 2001 + 28)
        });
        if !fires {
            return Err(format!(
                "cron expression \"{trimmed}\" never fires (no such date exists); check the day-of-month and month fields"
            ));
        }
        Ok(Schedule::Cron {
            expr: trimmed.to_string(),
            cron: Box::new(cron),
            fixed: !fields[0].starts_with('*') && !fields[1].starts_with('*'),
        })
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Schedule::None)
    }

    /// The expression as written (`none` for manual-only DAGs).
    pub fn as_str(&self) -> &str {
        match self {
            Schedule::None => "none",
            Schedule::Cron { expr, .. } => expr,
        }
    }

    /// A plain-English description, e.g. "At 02:30 every day".
    pub fn describe(&self) -> String {
        match self {
            Schedule::None => "manual only".to_string(),
            Schedule::Cron { cron, .. } => cron.describe(),
        }
    }

    /// The first tick strictly after `t` (or at `t` when `inclusive`), in `tz`.
    ///
    /// Ticks follow cronie's rules for daylight-saving changes. The expression is
    /// matched against wall-clock times of `tz`; each matching wall time becomes the
    /// instants it names. A *fixed-time* schedule (minute and hour not starting with
    /// `*`) fires once for a wall time repeated by fall-back (its first occurrence) and
    /// once, at the first instant after the gap, for a wall time skipped by
    /// spring-forward. A *wildcard* schedule fires at every instant whose wall time
    /// matches — in both passes of a repeated hour — and a skipped wall time does not
    /// exist.
    pub fn next_tick(&self, t: DateTime<Utc>, tz: Tz, inclusive: bool) -> Option<DateTime<Utc>> {
        let Schedule::Cron { cron, fixed, .. } = self else {
            return None;
        };
        let wall = t.with_timezone(&tz).naive_local();
        // Fast path: with no change of UTC offset anywhere between `t` and the candidate
        // (give or take 3 hours), wall time and instants map one to one.
        if let Ok(w) = cron.find_next_occurrence(&Utc.from_utc_datetime(&wall), inclusive)
            && let Some(i) = tz.from_local_datetime(&w.naive_utc()).single()
        {
            let i = i.with_timezone(&Utc);
            if steady(
                tz,
                t - chrono::Duration::hours(3),
                i + chrono::Duration::hours(3),
            ) {
                return Some(i);
            }
        }
        // Wall times up to 3 hours before `t`'s can map to instants after `t` (the second
        // pass of a repeated hour); candidates are walked from there.
        let mut cursor = wall - chrono::Duration::hours(3);
        let mut best: Option<DateTime<Utc>> = None;
        for _ in 0..10_000 {
            let Ok(w) = cron.find_next_occurrence(&Utc.from_utc_datetime(&cursor), false) else {
                break;
            };
            let w = w.naive_utc();
            for i in instants(w, tz, *fixed) {
                if (i > t || (inclusive && i == t)) && best.is_none_or(|b| i < b) {
                    best = Some(i);
                }
            }
            // Past 3 hours after `t`'s wall time every later candidate is later still.
            if best.is_some() && w > wall + chrono::Duration::hours(3) {
                break;
            }
            cursor = w;
            if best.is_some_and(|b| w.and_utc() > b + chrono::Duration::hours(14)) {
                break;
            }
        }
        best
    }

    /// The last tick strictly before `t` (or at `t` when `inclusive`), in `tz`: the
    /// same ticks as [`Schedule::next_tick`], walked backwards.
    pub fn prev_tick(&self, t: DateTime<Utc>, tz: Tz, inclusive: bool) -> Option<DateTime<Utc>> {
        let Schedule::Cron { cron, fixed, .. } = self else {
            return None;
        };
        let wall = t.with_timezone(&tz).naive_local();
        if let Ok(w) = cron.find_previous_occurrence(&Utc.from_utc_datetime(&wall), inclusive)
            && let Some(i) = tz.from_local_datetime(&w.naive_utc()).single()
        {
            let i = i.with_timezone(&Utc);
            if steady(
                tz,
                i - chrono::Duration::hours(3),
                t + chrono::Duration::hours(3),
            ) {
                return Some(i);
            }
        }
        let mut cursor = wall + chrono::Duration::hours(3);
        let mut best: Option<DateTime<Utc>> = None;
        for _ in 0..10_000 {
            let Ok(w) = cron.find_previous_occurrence(&Utc.from_utc_datetime(&cursor), false)
            else {
                break;
            };
            let w = w.naive_utc();
            for i in instants(w, tz, *fixed) {
                if (i < t || (inclusive && i == t)) && best.is_none_or(|b| i > b) {
                    best = Some(i);
                }
            }
            if best.is_some() && w < wall - chrono::Duration::hours(3) {
                break;
            }
            cursor = w;
        }
        best
    }
}

/// True when `tz` keeps one UTC offset over `[a, b]` (checked at both ends and at every
/// 6 hours between: zones change offset at most twice a year, months apart).
fn steady(tz: Tz, a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
    use chrono::Offset;
    let off = |t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc()).fix();
    let first = off(a);
    let mut at = a;
    while at < b {
        if off(at) != first {
            return false;
        }
        at += chrono::Duration::hours(6);
    }
    off(b) == first
}

/// The instants a matching wall time `w` of `tz` names: one; both passes of a repeated
/// wall time (a fixed-time schedule keeps the first only); for a wall time skipped by
/// spring-forward, none — or, for a fixed-time schedule, the first instant after the
/// gap.
fn instants(w: chrono::NaiveDateTime, tz: Tz, fixed: bool) -> Vec<DateTime<Utc>> {
    use chrono::LocalResult;
    match tz.from_local_datetime(&w) {
        LocalResult::Single(i) => vec![i.with_timezone(&Utc)],
        LocalResult::Ambiguous(a, _) if fixed => vec![a.with_timezone(&Utc)],
        LocalResult::Ambiguous(a, b) => vec![a.with_timezone(&Utc), b.with_timezone(&Utc)],
        LocalResult::None if fixed => {
            // The first wall time after `w` that exists: the end of the gap (gaps are
            // at most a few hours; minutes suffice since offsets are whole minutes).
            (1..=24 * 60)
                .map(|m| w + chrono::Duration::minutes(m))
                .find_map(|x| tz.from_local_datetime(&x).earliest())
                .map(|i| vec![i.with_timezone(&Utc)])
                .unwrap_or_default()
        }
        LocalResult::None => Vec::new(),
    }
}

/// A data interval `[start, end)`; a scheduled run for it is created at `end` and its
/// logical date is `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// The scheduling facts of a DAG that interval planning needs.
#[derive(Debug, Clone)]
pub struct Timetable<'a> {
    pub schedule: &'a Schedule,
    pub tz: Tz,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
}

impl Timetable<'_> {
    /// The interval that starts at the tick `start` (which must be a tick).
    pub fn interval_starting(&self, start: DateTime<Utc>) -> Option<Interval> {
        let end = self.schedule.next_tick(start, self.tz, false)?;
        Some(Interval { start, end })
    }

    /// The first interval of the DAG: it starts at the first tick at or after
    /// `start_date`.
    pub fn first_interval(&self) -> Option<Interval> {
        let start_date = self.start_date?;
        let start = self.schedule.next_tick(start_date, self.tz, true)?;
        self.bounded(self.interval_starting(start)?)
    }

    /// The interval after one that starts at `prev_start`.
    pub fn next_interval(&self, prev_start: DateTime<Utc>) -> Option<Interval> {
        let start = self.schedule.next_tick(prev_start, self.tz, false)?;
        self.bounded(self.interval_starting(start)?)
    }

    /// The latest interval that has ended by `now` (its end <= now), if any.
    pub fn latest_complete(&self, now: DateTime<Utc>) -> Option<Interval> {
        let end = self.schedule.prev_tick(now, self.tz, true)?;
        let start = self.schedule.prev_tick(end, self.tz, false)?;
        let iv = Interval { start, end };
        if self.start_date.is_some_and(|s| iv.start < s) {
            return None;
        }
        self.bounded(iv)
    }

    /// The interval whose start is the tick at or before `t`: the one a logical date
    /// `t` belongs to (used by backfill and manual triggers).
    pub fn interval_containing(&self, t: DateTime<Utc>) -> Option<Interval> {
        let start = self.schedule.prev_tick(t, self.tz, true)?;
        self.interval_starting(start)
    }

    fn bounded(&self, iv: Interval) -> Option<Interval> {
        match self.end_date {
            Some(end) if iv.start > end => None,
            _ => Some(iv),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn field_errors_name_the_field() {
        let cases = [
            ("61 * * * *", "minute field \"61\""),
            ("* 24 * * *", "hour field \"24\""),
            ("* * 0 * *", "day-of-month field \"0\""),
            ("* * * 13 *", "month field \"13\""),
            ("* * * * 9", "day-of-week field \"9\""),
            ("0 0 * * * *", "has 6 fields, expected 5"),
            ("@dailly", "did you mean \"@daily\""),
        ];
        for (expr, want) in cases {
            let err = Schedule::parse(expr).expect_err(expr);
            assert!(err.contains(want), "{expr}: {err}");
        }
    }

    #[test]
    fn weekday_seven_is_sunday_and_dom_dow_combine_like_cronie() {
        let s = Schedule::parse("0 0 * * 7").expect("valid");
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(); // Thursday
        let next = s.next_tick(t, Tz::UTC, false).expect("tick");
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 1, 4, 0, 0, 0).unwrap());
        // 13th of the month OR Friday.
        let s = Schedule::parse("0 0 13 * 5").expect("valid");
        let next = s.next_tick(t, Tz::UTC, false).expect("tick");
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap());
        // A field starting with `*` makes it AND (cronie): odd days that are Mondays.
        let s = Schedule::parse("0 0 */2 * 1").expect("valid");
        let mut at = t;
        let mut got = Vec::new();
        for _ in 0..3 {
            at = s.next_tick(at, Tz::UTC, false).expect("tick");
            got.push(at.date_naive().to_string());
        }
        assert_eq!(got, ["2026-01-05", "2026-01-19", "2026-02-09"]);
        // And `*` in day-of-month with a weekday is just that weekday.
        let s = Schedule::parse("0 0 * * 1").expect("valid");
        assert_eq!(
            s.next_tick(t, Tz::UTC, false).expect("tick"),
            Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap()
        );
    }
}
