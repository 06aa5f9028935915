//! Formatting and geometry for pages: times (UTC text, local time via JS), durations,
//! state classes, and the shapes of the grid, graph, Gantt and bar charts. Pure.

use chrono::{DateTime, Utc};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use crate::dag::Dag;

/// A time shown in UTC, with the ISO form for the browser to show local time.
#[derive(Debug, Clone)]
pub struct Time {
    pub iso: String,
    pub text: String,
}

pub fn time(t: DateTime<Utc>) -> Time {
    Time {
        iso: crate::dag::template::rfc3339(t),
        text: t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    }
}

/// A time shown in a DAG's zone (as its schedule reads), with the zone's abbreviation;
/// the `datetime` attribute stays UTC.
pub fn time_in(t: DateTime<Utc>, tz: chrono_tz::Tz) -> Time {
    if tz == chrono_tz::UTC {
        return time(t);
    }
    Time {
        iso: crate::dag::template::rfc3339(t),
        text: t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string(),
    }
}

pub fn opt_time(t: Option<DateTime<Utc>>) -> Option<Time> {
    t.map(time)
}

/// `850ms`, `12.3s`, `4m 05s`, `2h 03m`.
pub fn duration_ms(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h {:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

pub fn between(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => duration_ms((b - a).num_milliseconds()),
        (Some(a), None) => format!(
            "{} so far",
            duration_ms((Utc::now() - a).num_milliseconds())
        ),
        _ => "-".into(),
    }
}

/// A lag in seconds, negative ones with a minus sign.
pub fn lag(secs: f64) -> String {
    if secs < 0.0 {
        format!("-{}", duration_ms((-secs * 1000.0) as i64))
    } else {
        duration_ms((secs * 1000.0) as i64)
    }
}

/// Percent-encodes a path segment (run ids contain `:` and `+`).
pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

pub fn dag_href(dag: &str) -> String {
    format!("/dags/{}", enc(dag))
}

pub fn run_href(dag: &str, run: &str) -> String {
    format!("/dags/{}/runs/{}", enc(dag), enc(run))
}

pub fn task_href(dag: &str, run: &str, task: &str) -> String {
    format!("/dags/{}/runs/{}/tasks/{}", enc(dag), enc(run), enc(task))
}

pub fn percent(p: Option<f64>) -> String {
    p.map_or("-".into(), |p| format!("{p:.1}%"))
}

/// A node of the task graph.
#[derive(Debug, Clone)]
pub struct Node {
    pub x: i64,
    pub y: i64,
    pub label: String,
    pub class: String,
    pub title: String,
}

#[derive(Debug, Clone)]
pub struct Edge {
    pub x1: i64,
    pub y1: i64,
    pub x2: i64,
    pub y2: i64,
}

/// A layered drawing of a DAG: a task's column is the length of the longest path to
/// it; rows follow the topological order within a column.
#[derive(Debug, Clone)]
pub struct Graph {
    pub width: i64,
    pub height: i64,
    pub node_w: i64,
    pub node_h: i64,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

pub const NODE_W: i64 = 160;
pub const NODE_H: i64 = 30;

pub fn graph(dag: &Dag, state_of: impl Fn(&str) -> Option<String>) -> Graph {
    let n = dag.tasks.len();
    let mut layer = vec![0i64; n];
    for &i in &dag.topo_order {
        for d in &dag.tasks[i].depends_on {
            if let Some(j) = dag.task_index(d) {
                layer[i] = layer[i].max(layer[j] + 1);
            }
        }
    }
    // Within a column, tasks as the file lists them: a fan-out reads t00, t01, ... t11.
    let mut row_in_layer = vec![0i64; n];
    let mut counts = std::collections::HashMap::new();
    for (row, l) in row_in_layer.iter_mut().zip(&layer) {
        let c = counts.entry(*l).or_insert(0i64);
        *row = *c;
        *c += 1;
    }
    let (gx, gy) = (NODE_W + 50, NODE_H + 16);
    let pos = |i: usize| (10 + layer[i] * gx, 10 + row_in_layer[i] * gy);
    let nodes = (0..n)
        .map(|i| {
            let (x, y) = pos(i);
            let t = &dag.tasks[i];
            let state = state_of(&t.task_id);
            let mut label: String = t.task_id.chars().take(20).collect();
            if t.task_id.chars().count() > 20 {
                label.push('…');
            }
            Node {
                x,
                y,
                label,
                class: format!("s-{}", state.clone().unwrap_or_else(|| "none".into())),
                title: format!(
                    "{} ({}){}",
                    t.task_id,
                    t.kind_name(),
                    state.map(|s| format!(": {s}")).unwrap_or_default()
                ),
            }
        })
        .collect();
    let mut edges = Vec::new();
    for (i, t) in dag.tasks.iter().enumerate() {
        for d in &t.depends_on {
            if let Some(j) = dag.task_index(d) {
                let (x1, y1) = pos(j);
                let (x2, y2) = pos(i);
                edges.push(Edge {
                    x1: x1 + NODE_W,
                    y1: y1 + NODE_H / 2,
                    x2,
                    y2: y2 + NODE_H / 2,
                });
            }
        }
    }
    let width = 20 + (layer.iter().max().copied().unwrap_or(0) + 1) * gx;
    let height = 20 + counts.values().max().copied().unwrap_or(1) * gy;
    Graph {
        width,
        height,
        node_w: NODE_W,
        node_h: NODE_H,
        nodes,
        edges,
    }
}

/// One bar of a chart (run durations, Gantt).
#[derive(Debug, Clone)]
pub struct Bar {
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub h: i64,
    pub class: String,
    pub title: String,
    pub label: String,
    pub href: String,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub width: i64,
    pub height: i64,
    pub bars: Vec<Bar>,
    pub axis: String,
}

/// Vertical bars, one per run, height proportional to its duration.
pub fn duration_bars(items: &[(String, String, i64, String)]) -> Chart {
    let max = items.iter().map(|i| i.2).max().unwrap_or(1).max(1);
    let (bw, h) = (18i64, 120i64);
    let bars = items
        .iter()
        .enumerate()
        .map(|(k, (title, class, ms, href))| {
            let bh = ((*ms as f64 / max as f64) * (h - 10) as f64)
                .round()
                .max(2.0) as i64;
            Bar {
                x: 10 + k as i64 * (bw + 4),
                y: h - bh,
                w: bw,
                h: bh,
                class: class.clone(),
                title: format!("{title}: {}", duration_ms(*ms)),
                label: String::new(),
                href: href.clone(),
            }
        })
        .collect();
    Chart {
        width: 20 + items.len() as i64 * (bw + 4),
        height: h + 2,
        bars,
        axis: format!("max {}", duration_ms(max)),
    }
}

/// One try in a Gantt row: its number, state class, start, end (none while running)
/// and link.
pub type GanttTry = (i32, String, DateTime<Utc>, Option<DateTime<Utc>>, String);

/// A Gantt row: a task, the time its current try waited in the queue (queued at,
/// started at) and every try it made.
#[derive(Debug, Clone)]
pub struct GanttRow {
    pub task: String,
    pub queued: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub tries: Vec<GanttTry>,
}

/// A Gantt chart: one row per task with a bar for each of its tries (and the wait in
/// the queue before the current one), on one time axis from the run's start. Drawn
/// 1,200 units wide: the page scales it to its width.
pub fn gantt(rows: &[GanttRow], start: Option<DateTime<Utc>>) -> Chart {
    let label_w = 200i64;
    let plot_w = 980i64;
    let row_h = 22i64;
    let now = Utc::now();
    let starts = rows
        .iter()
        .flat_map(|r| r.tries.iter().map(|t| t.2).chain(r.queued.map(|q| q.0)));
    let t0 = start.into_iter().chain(starts).min();
    let t1 = rows
        .iter()
        .flat_map(|r| r.tries.iter().map(|t| t.3.unwrap_or(now)))
        .max();
    let span = match (t0, t1) {
        (Some(a), Some(b)) => (b - a).num_milliseconds().max(1),
        _ => 1,
    };
    let at = |t: DateTime<Utc>| -> i64 {
        let ms = t0.map_or(0, |t0| (t - t0).num_milliseconds().max(0));
        label_w + (ms as f64 / span as f64 * plot_w as f64) as i64
    };
    let mut bars = Vec::new();
    for (k, r) in rows.iter().enumerate() {
        let y = 4 + k as i64 * row_h;
        let label: String = r.task.chars().take(28).collect();
        if let Some((q, s)) = r.queued.filter(|(q, s)| q < s) {
            bars.push(Bar {
                x: at(q),
                y: y + 4,
                w: (at(s) - at(q)).max(1),
                h: row_h - 14,
                class: "queued".into(),
                title: format!("{}: queued {}", r.task, between(Some(q), Some(s))),
                label: String::new(),
                href: String::new(),
            });
        }
        for (number, class, s, e, href) in &r.tries {
            let end = e.unwrap_or(now);
            bars.push(Bar {
                x: at(*s),
                y,
                w: (at(end) - at(*s)).max(2),
                h: row_h - 6,
                class: class.clone(),
                title: format!("{} try {number}: {}", r.task, between(Some(*s), *e)),
                label: String::new(),
                href: href.clone(),
            });
        }
        // The row's label rides on its first bar (or an empty one).
        bars.push(Bar {
            x: label_w,
            y,
            w: 0,
            h: row_h - 6,
            class: "label-only".into(),
            title: r.task.clone(),
            label,
            href: String::new(),
        });
    }
    Chart {
        width: label_w + plot_w + 20,
        height: 8 + rows.len() as i64 * row_h,
        bars,
        axis: format!("{} total", duration_ms(span)),
    }
}

/// Points of a sparkline of rates in percent (0-100), 100x24 box.
pub fn sparkline(values: &[f64]) -> String {
    if values.is_empty() {
        return String::new();
    }
    let step = if values.len() > 1 {
        100.0 / (values.len() - 1) as f64
    } else {
        0.0
    };
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                22.0 - v.clamp(0.0, 100.0) * 0.2
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_show_in_the_dags_zone_with_its_abbreviation() {
        use chrono::TimeZone;
        let summer = Utc
            .with_ymd_and_hms(2026, 7, 1, 0, 30, 0)
            .single()
            .expect("time");
        let winter = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 30, 0)
            .single()
            .expect("time");
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().expect("tz");
        assert_eq!(time_in(summer, berlin).text, "2026-07-01 02:30 CEST");
        assert_eq!(time_in(winter, berlin).text, "2026-01-01 01:30 CET");
        assert_eq!(time_in(summer, berlin).iso, "2026-07-01T00:30:00Z");
        assert_eq!(
            time_in(summer, chrono_tz::UTC).text,
            "2026-07-01 00:30:00 UTC"
        );
    }

    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_ms(850), "850ms");
        assert_eq!(duration_ms(12_340), "12.3s");
        assert_eq!(duration_ms(245_000), "4m 05s");
        assert_eq!(duration_ms(7_380_000), "2h 03m");
    }

    #[test]
    fn run_ids_are_encoded_in_links() {
        assert_eq!(
            run_href("d", "manual__2026-01-01T00:00:00+00:00"),
            "/dags/d/runs/manual%5F%5F2026%2D01%2D01T00%3A00%3A00%2B00%3A00"
        );
    }
}
