//! Cron, DST, data intervals and catchup: tables of inputs and expected outputs.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use weft::dag::{Interval, Schedule, Timetable};
use weft::scheduler::plan::{intervals_between, plan, upcoming};

use crate::support::utc;

fn ticks(expr: &str, tz: &str, from: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    let s = Schedule::parse(expr).expect("valid schedule");
    let tz: Tz = tz.parse().expect("valid tz");
    let mut out = Vec::new();
    let mut t = from;
    for _ in 0..n {
        t = s.next_tick(t, tz, false).expect("a next tick");
        out.push(t);
    }
    out
}

#[test]
fn cron_ticks_across_dst_and_calendars() {
    type Case = (
        &'static str,
        &'static str,
        DateTime<Utc>,
        Vec<DateTime<Utc>>,
    );
    let cases: Vec<Case> = vec![
        // 02:30 Berlin daily; 2026-03-29 02:30 does not exist: fires once at 03:00 CEST.
        (
            "30 2 * * *",
            "Europe/Berlin",
            utc(2026, 3, 27, 12, 0),
            vec![
                utc(2026, 3, 28, 1, 30),
                utc(2026, 3, 29, 1, 0),
                utc(2026, 3, 30, 0, 30),
            ],
        ),
        // 2026-10-25 02:30 happens twice: fires once, at the first.
        (
            "30 2 * * *",
            "Europe/Berlin",
            utc(2026, 10, 24, 12, 0),
            vec![utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],
        ),
        // Hourly fires every real hour through fall-back (25 hours that day)...
        (
            "0 * * * *",
            "Europe/Berlin",
            utc(2026, 10, 24, 23, 30),
            vec![
                utc(2026, 10, 25, 0, 0),
                utc(2026, 10, 25, 1, 0),
                utc(2026, 10, 25, 2, 0),
                utc(2026, 10, 25, 3, 0),
            ],
        ),
        // ... and through spring-forward.
        (
            "@hourly",
            "Europe/Berlin",
            utc(2026, 3, 28, 23, 30),
            vec![
                utc(2026, 3, 29, 0, 0),
                utc(2026, 3, 29, 1, 0),
                utc(2026, 3, 29, 2, 0),
            ],
        ),
        // US DST (2026-03-08): 02:30 New York does not exist.
        (
            "30 2 * * *",
            "America/New_York",
            utc(2026, 3, 7, 12, 0),
            vec![utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)],
        ),
        // Aliases.
        (
            "@daily",
            "UTC",
            utc(2026, 1, 1, 0, 0),
            vec![utc(2026, 1, 2, 0, 0), utc(2026, 1, 3, 0, 0)],
        ),
        (
            "@weekly",
            "UTC",
            utc(2026, 1, 1, 0, 0),
            vec![utc(2026, 1, 4, 0, 0), utc(2026, 1, 11, 0, 0)],
        ),
        (
            "@monthly",
            "UTC",
            utc(2026, 1, 15, 0, 0),
            vec![utc(2026, 2, 1, 0, 0), utc(2026, 3, 1, 0, 0)],
        ),
        (
            "@yearly",
            "UTC",
            utc(2026, 1, 15, 0, 0),
            vec![utc(2027, 1, 1, 0, 0)],
        ),
        // Weekday 0 and 7 are both Sunday.
        (
            "0 9 * * 0",
            "UTC",
            utc(2026, 1, 1, 0, 0),
            vec![utc(2026, 1, 4, 9, 0)],
        ),
        (
            "0 9 * * 7",
            "UTC",
            utc(2026, 1, 1, 0, 0),
            vec![utc(2026, 1, 4, 9, 0)],
        ),
        // Day-of-month OR day-of-week (Vixie): the 15th, or any Monday.
        (
            "0 0 15 * MON",
            "UTC",
            utc(2026, 1, 1, 0, 0),
            vec![
                utc(2026, 1, 5, 0, 0),
                utc(2026, 1, 12, 0, 0),
                utc(2026, 1, 15, 0, 0),
                utc(2026, 1, 19, 0, 0),
            ],
        ),
        // Steps, ranges and lists.
        (
            "*/20 9-10 * * 1-5",
            "UTC",
            utc(2026, 1, 2, 10, 30),
            vec![utc(2026, 1, 2, 10, 40), utc(2026, 1, 5, 9, 0)],
        ),
        (
            "0 0 29 2 *",
            "UTC",
            utc(2026, 1, 1, 0, 0),
            vec![utc(2028, 2, 29, 0, 0)],
        ),
        // Month names.
        (
            "0 12 1 JAN,JUL *",
            "UTC",
            utc(2026, 2, 1, 0, 0),
            vec![utc(2026, 7, 1, 12, 0), utc(2027, 1, 1, 12, 0)],
        ),
    ];
    for (expr, tz, from, want) in cases {
        assert_eq!(
            ticks(expr, tz, from, want.len()),
            want,
            "{expr} in {tz} from {from}"
        );
    }
}

#[test]
fn schedule_errors_name_the_field() {
    let cases = [
        ("61 * * * *", "minute field \"61\""),
        ("0 24 * * *", "hour field \"24\""),
        ("0 0 32 * *", "day-of-month field \"32\""),
        ("0 0 * 0 *", "month field \"0\""),
        ("0 0 * * 8", "day-of-week field \"8\""),
        ("0 0 * *", "has 4 fields, expected 5"),
        ("0 30 2 * * *", "seconds and year fields of Quartz-style"),
        ("@fortnightly", "unknown schedule alias"),
    ];
    for (expr, want) in cases {
        let err = Schedule::parse(expr).expect_err(expr);
        assert!(err.contains(want), "{expr}: {err}");
    }
    assert!(Schedule::parse("none").expect("none").is_none());
}

fn tt<'a>(
    s: &'a Schedule,
    tz: &str,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
) -> Timetable<'a> {
    Timetable {
        schedule: s,
        tz: tz.parse().expect("tz"),
        start_date: Some(start),
        end_date: end,
    }
}

fn iv(a: DateTime<Utc>, b: DateTime<Utc>) -> Interval {
    Interval { start: a, end: b }
}

#[test]
fn catchup_and_latest_interval_planning() {
    let daily = Schedule::parse("@daily").expect("valid");
    let t = tt(&daily, "UTC", utc(2026, 1, 1, 0, 0), None);
    let now = utc(2026, 1, 4, 6, 0);
    // (catchup, last scheduled logical date, room) -> intervals due
    type Case = (bool, Option<DateTime<Utc>>, usize, Vec<Interval>);
    let cases: Vec<Case> = vec![
        (
            true,
            None,
            16,
            vec![
                iv(utc(2026, 1, 1, 0, 0), utc(2026, 1, 2, 0, 0)),
                iv(utc(2026, 1, 2, 0, 0), utc(2026, 1, 3, 0, 0)),
                iv(utc(2026, 1, 3, 0, 0), utc(2026, 1, 4, 0, 0)),
            ],
        ),
        // max_active_runs bounds creation.
        (
            true,
            None,
            2,
            vec![
                iv(utc(2026, 1, 1, 0, 0), utc(2026, 1, 2, 0, 0)),
                iv(utc(2026, 1, 2, 0, 0), utc(2026, 1, 3, 0, 0)),
            ],
        ),
        (
            true,
            Some(utc(2026, 1, 2, 0, 0)),
            16,
            vec![iv(utc(2026, 1, 3, 0, 0), utc(2026, 1, 4, 0, 0))],
        ),
        (true, Some(utc(2026, 1, 3, 0, 0)), 16, vec![]),
        // Without catchup only the latest complete interval runs.
        (
            false,
            None,
            16,
            vec![iv(utc(2026, 1, 3, 0, 0), utc(2026, 1, 4, 0, 0))],
        ),
        (
            false,
            Some(utc(2026, 1, 1, 0, 0)),
            16,
            vec![iv(utc(2026, 1, 3, 0, 0), utc(2026, 1, 4, 0, 0))],
        ),
        (false, Some(utc(2026, 1, 3, 0, 0)), 16, vec![]),
        (true, None, 0, vec![]),
    ];
    for (catchup, last, room, want) in cases {
        let p = plan(&t, catchup, last, now, room);
        assert_eq!(p.due, want, "catchup={catchup} last={last:?} room={room}");
    }
    // The next run time is the end of the first interval not yet due.
    let p = plan(&t, true, Some(utc(2026, 1, 3, 0, 0)), now, 16);
    assert_eq!(p.next_run_after, Some(utc(2026, 1, 5, 0, 0)));
    // Before the first interval ends nothing is due.
    let p = plan(&t, false, None, utc(2026, 1, 1, 12, 0), 16);
    assert!(p.due.is_empty());
    assert_eq!(p.next_run_after, Some(utc(2026, 1, 2, 0, 0)));
}

#[test]
fn end_date_stops_scheduling_and_start_date_aligns_to_ticks() {
    let s = Schedule::parse("0 6 * * *").expect("valid");
    // start_date at midnight: the first interval starts at the first tick at/after it.
    let t = tt(
        &s,
        "UTC",
        utc(2026, 1, 1, 0, 0),
        Some(utc(2026, 1, 2, 6, 0)),
    );
    let p = plan(&t, true, None, utc(2026, 2, 1, 0, 0), 100);
    assert_eq!(
        p.due,
        vec![
            iv(utc(2026, 1, 1, 6, 0), utc(2026, 1, 2, 6, 0)),
            iv(utc(2026, 1, 2, 6, 0), utc(2026, 1, 3, 6, 0))
        ]
    );
    assert_eq!(p.next_run_after, None);
}

#[test]
fn daily_intervals_in_a_dst_zone_have_real_lengths() {
    let s = Schedule::parse("@daily").expect("valid");
    let t = tt(&s, "Europe/Berlin", utc(2026, 3, 27, 23, 0), None);
    let ivs: Vec<_> =
        intervals_between(&t, utc(2026, 3, 27, 23, 0), utc(2026, 3, 29, 23, 0)).collect();
    let hours: Vec<i64> = ivs.iter().map(|i| (i.end - i.start).num_hours()).collect();
    // 2026-03-28 is 24 h long, 2026-03-29 (spring forward) 23 h, 2026-03-30 24 h.
    assert_eq!(hours, vec![24, 23, 24]);
    assert_eq!(ivs[1].start, utc(2026, 3, 28, 23, 0));
    assert_eq!(ivs[1].end, utc(2026, 3, 29, 22, 0));
}

#[test]
fn upcoming_starts_with_the_interval_now_falls_in() {
    let s = Schedule::parse("30 2 * * *").expect("valid");
    let t = tt(&s, "Europe/Berlin", utc(2026, 1, 1, 0, 0), None);
    let ivs = upcoming(&t, utc(2026, 6, 10, 12, 0), 2);
    assert_eq!(
        ivs,
        vec![
            iv(utc(2026, 6, 10, 0, 30), utc(2026, 6, 11, 0, 30)),
            iv(utc(2026, 6, 11, 0, 30), utc(2026, 6, 12, 0, 30))
        ]
    );
    // Before start_date: the first interval.
    let ivs = upcoming(&t, utc(2025, 6, 10, 12, 0), 1);
    assert_eq!(ivs[0].start, utc(2026, 1, 1, 1, 30));
}

#[test]
fn a_catch_up_from_1970_per_minute_proceeds_in_bounded_steps() {
    let s = Schedule::parse("* * * * *").expect("valid");
    let t = tt(&s, "UTC", utc(1970, 1, 1, 0, 0), None);
    let p = plan(&t, true, None, utc(2026, 12, 1, 0, 0), 10_000);
    assert_eq!(p.due.len(), weft::scheduler::plan::MAX_RUNS_PER_PASS);
    assert_eq!(p.due[0].start, utc(1970, 1, 1, 0, 0));
    // The next pass continues where this one stopped, at once.
    assert_eq!(p.next_run_after, Some(utc(1970, 1, 1, 1, 41)));
    // Counting a range stops at the limit instead of walking 30 million minutes.
    let started = std::time::Instant::now();
    assert_eq!(
        weft::scheduler::plan::count_intervals_between(
            &t,
            utc(1970, 1, 1, 0, 0),
            utc(2999, 1, 1, 0, 0),
            100_000
        ),
        None
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn without_catchup_a_past_end_date_yields_only_the_last_interval() {
    let s = Schedule::parse("@daily").expect("valid");
    let t = tt(
        &s,
        "UTC",
        utc(2026, 1, 1, 0, 0),
        Some(utc(2026, 1, 10, 0, 0)),
    );
    let p = plan(&t, false, None, utc(2026, 6, 1, 0, 0), 100);
    assert_eq!(
        p.due,
        vec![iv(utc(2026, 1, 10, 0, 0), utc(2026, 1, 11, 0, 0))]
    );
    // And nothing more once it exists.
    let p = plan(
        &t,
        false,
        Some(utc(2026, 1, 10, 0, 0)),
        utc(2026, 6, 1, 0, 0),
        100,
    );
    assert!(p.due.is_empty(), "{p:?}");
}

/// Consecutive ticks after `from`, as `YYYY-MM-DDTHH:MMZ`.
fn tick_texts(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
    let s = Schedule::parse(expr).expect("valid");
    let tz: Tz = tz.parse().expect("tz");
    let mut at: DateTime<Utc> = from.parse().expect("time");
    let mut out = Vec::new();
    for _ in 0..n {
        at = s.next_tick(at, tz, false).expect("tick");
        out.push(at.format("%Y-%m-%dT%H:%MZ").to_string());
    }
    out
}

/// cronie's daylight-saving rules, zone by zone, for both transitions of 2026 and 2027:
/// fixed-time schedules (minute and hour without a leading `*`) fire once for a
/// repeated wall time (its first pass) and once at the end of a gap for a skipped one;
/// wildcard schedules fire at every real instant that matches and skip what does not
/// exist. Each tick is also found backwards by prev_tick.
#[test]
fn daylight_saving_follows_cronie() {
    let cases: &[(&str, &str, &str, &[&str])] = &[
        // New York, fall back 2026-11-01 02:00 EDT -> 01:00 EST.
        (
            "0 1,2,3 * * *",
            "America/New_York",
            "2026-11-01T04:00:00Z",
            &[
                "2026-11-01T05:00Z",
                "2026-11-01T07:00Z",
                "2026-11-01T08:00Z",
                "2026-11-02T06:00Z",
            ],
        ),
        (
            "*/30 1 * * *",
            "America/New_York",
            "2026-11-01T04:00:00Z",
            &[
                "2026-11-01T05:00Z",
                "2026-11-01T05:30Z",
                "2026-11-01T06:00Z",
                "2026-11-01T06:30Z",
                "2026-11-02T06:00Z",
            ],
        ),
        (
            "@hourly",
            "America/New_York",
            "2026-11-01T04:30:00Z",
            &[
                "2026-11-01T05:00Z",
                "2026-11-01T06:00Z",
                "2026-11-01T07:00Z",
            ],
        ),
        // New York, spring forward 2026-03-08 02:00 EST -> 03:00 EDT.
        (
            "30 2 * * *",
            "America/New_York",
            "2026-03-07T12:00:00Z",
            &["2026-03-08T07:00Z", "2026-03-09T06:30Z"],
        ),
        (
            "*/20 1-3 * * *",
            "America/New_York",
            "2026-03-08T05:50:00Z",
            &[
                "2026-03-08T06:00Z",
                "2026-03-08T06:20Z",
                "2026-03-08T06:40Z",
                "2026-03-08T07:00Z",
                "2026-03-08T07:20Z",
                "2026-03-08T07:40Z",
                "2026-03-09T05:00Z",
            ],
        ),
        // New York 2027: spring 2027-03-14, fall 2027-11-07.
        (
            "30 2 * * *",
            "America/New_York",
            "2027-03-13T12:00:00Z",
            &["2027-03-14T07:00Z", "2027-03-15T06:30Z"],
        ),
        (
            "30 1 * * *",
            "America/New_York",
            "2027-11-06T12:00:00Z",
            &["2027-11-07T05:30Z", "2027-11-08T06:30Z"],
        ),
        // Berlin: spring 2026-03-29 02:00 CET -> 03:00 CEST, fall 2026-10-25 03:00 -> 02:00.
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2026-03-28T12:00:00Z",
            &["2026-03-29T01:00Z", "2026-03-30T00:30Z"],
        ),
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-24T12:00:00Z",
            &["2026-10-25T00:30Z", "2026-10-26T01:30Z"],
        ),
        (
            "0 * * * *",
            "Europe/Berlin",
            "2026-10-24T23:30:00Z",
            &[
                "2026-10-25T00:00Z",
                "2026-10-25T01:00Z",
                "2026-10-25T02:00Z",
            ],
        ),
        (
            "15 2 * * *",
            "Europe/Berlin",
            "2027-03-27T12:00:00Z",
            &["2027-03-28T01:00Z", "2027-03-29T00:15Z"],
        ),
        (
            "15 2 * * *",
            "Europe/Berlin",
            "2027-10-30T12:00:00Z",
            &["2027-10-31T00:15Z", "2027-11-01T01:15Z"],
        ),
        // Lord Howe: 30-minute shifts. Back 2026-04-05 02:00 (+11) -> 01:30 (+10:30),
        // forward 2026-10-04 02:00 (+10:30) -> 02:30 (+11).
        (
            "45 1 * * *",
            "Australia/Lord_Howe",
            "2026-04-04T12:00:00Z",
            &["2026-04-04T14:45Z", "2026-04-05T15:15Z"],
        ),
        (
            "*/15 1 * * *",
            "Australia/Lord_Howe",
            "2026-04-04T13:55:00Z",
            &[
                "2026-04-04T14:00Z",
                "2026-04-04T14:15Z",
                "2026-04-04T14:30Z",
                "2026-04-04T14:45Z",
                "2026-04-04T15:00Z",
                "2026-04-04T15:15Z",
                "2026-04-05T14:30Z",
            ],
        ),
        (
            "15 2 * * *",
            "Australia/Lord_Howe",
            "2026-10-03T12:00:00Z",
            &["2026-10-03T15:30Z", "2026-10-04T15:15Z"],
        ),
        (
            "*/15 2 * * *",
            "Australia/Lord_Howe",
            "2026-10-03T15:00:00Z",
            &[
                "2026-10-03T15:30Z",
                "2026-10-03T15:45Z",
                "2026-10-04T15:00Z",
            ],
        ),
        // Kolkata: no daylight saving, half-hour offset.
        (
            "30 2 * * *",
            "Asia/Kolkata",
            "2026-11-01T00:00:00Z",
            &["2026-11-01T21:00Z", "2026-11-02T21:00Z"],
        ),
    ];
    for (expr, tz, from, want) in cases {
        let got = tick_texts(expr, tz, from, want.len());
        assert_eq!(&got, want, "{expr} in {tz} after {from}");
        // Backwards: from just after the last tick, prev_tick walks the same ticks.
        let s = Schedule::parse(expr).expect("valid");
        let zone: Tz = tz.parse().expect("tz");
        let mut at: DateTime<Utc> = format!("{}:00Z", &want[want.len() - 1][..16])
            .parse()
            .expect("t");
        let mut back = vec![at.format("%Y-%m-%dT%H:%MZ").to_string()];
        for _ in 1..want.len() {
            at = s.prev_tick(at, zone, false).expect("prev");
            back.push(at.format("%Y-%m-%dT%H:%MZ").to_string());
        }
        back.reverse();
        assert_eq!(&back, want, "backwards: {expr} in {tz}");
    }
}
