//! `experiment`: A/B analysis. The per-user work runs as SQL in the warehouse (first
//! exposure per user, users exposed to several variants excluded, each user's metric
//! value within the window after first exposure); the statistics run in Rust
//! (`crate::stats`). One row per (experiment, metric, variant) goes to the warehouse
//! table `experiment_results`; re-running an interval replaces its rows.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait, Value};

use super::{AnalysisRange, ExperimentSpec, Metric, MetricKind, RowSource};
use crate::dag::template::rfc3339;
use crate::db::tasks::TryOutcome;
use crate::kinds::dialect::ph;
use crate::kinds::dialect::{exact_time as t, ident as q, json_text as prop, lit};
use crate::kinds::env::{RunContext, failure};
use crate::kinds::warehouse::Migration;
use crate::stats::{self, Arm};

/// The warehouse tables of the experiment kind (see `kinds::warehouse`): the results,
/// and the tables exposures and events from files are loaded into.
pub static MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    statements: |pg| {
        let (ts, json) = crate::kinds::warehouse::types(pg);
        vec![
            "CREATE TABLE IF NOT EXISTS experiment_results (experiment TEXT NOT NULL, metric TEXT NOT NULL, variant TEXT NOT NULL, users BIGINT NOT NULL, \
             value DOUBLE PRECISION, diff DOUBLE PRECISION, diff_ci_low DOUBLE PRECISION, diff_ci_high DOUBLE PRECISION, rel_lift DOUBLE PRECISION, \
             rel_lift_ci_low DOUBLE PRECISION, rel_lift_ci_high DOUBLE PRECISION, p_value DOUBLE PRECISION, srm_p_value DOUBLE PRECISION, \
             excluded_users BIGINT NOT NULL, interval_end TEXT NOT NULL, computed_at TEXT NOT NULL, \
             p_value_adjusted DOUBLE PRECISION, reason TEXT)"
                .to_string(),
            format!("CREATE TABLE IF NOT EXISTS weft_experiment_events (experiment TEXT NOT NULL, user_id TEXT NOT NULL, event TEXT NOT NULL, \"timestamp\" {ts} NOT NULL, properties {json} NOT NULL)"),
            format!("CREATE TABLE IF NOT EXISTS weft_exposures (experiment TEXT NOT NULL, user_id TEXT NOT NULL, variant TEXT NOT NULL, \"timestamp\" {ts} NOT NULL)"),
        ]
    },
    // Results tables made before these columns existed get them.
    add_columns: &[
        ("experiment_results", "p_value_adjusted DOUBLE PRECISION"),
        ("experiment_results", "reason TEXT"),
    ],
}];

/// Per-variant sums of the per-user values: (variant, users, sums).
type VariantSums = Vec<(String, i64, stats::RatioSums)>;

/// What bounds an analysis: exposures before `end` (and from `start`), and for the
/// interval range, users first exposed from `first_from`.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    end: DateTime<Utc>,
    start: Option<DateTime<Utc>>,
    first_from: Option<DateTime<Utc>>,
}

/// The relation exposures are read from: a table, or by default the `$exposure` and
/// `$feature_flag_called` events of the events table (flag key in `flag`,
/// `experiment` or `$feature_flag`; variant in `variant` or `$feature_flag_response`).
fn exposures_relation(pg: bool, table: Option<&str>, events: &str) -> String {
    match table {
        Some(t) => q(t),
        None => format!(
            "(SELECT user_id, COALESCE({}, {}, {}) AS experiment, COALESCE({}, {}) AS variant, \"timestamp\" \
             FROM {} x WHERE event IN ('$exposure', '$feature_flag_called'))",
            prop(pg, "", "flag"),
            prop(pg, "", "experiment"),
            prop(pg, "", "$feature_flag"),
            prop(pg, "", "variant"),
            prop(pg, "", "$feature_flag_response"),
            events
        ),
    }
}

/// The first-exposure CTE `f` (user_id, t0, nv, variant) of an analysis.
fn first_exposures(pg: bool, exposures: &str, experiment: &str, b: Bounds) -> String {
    let mut cond = format!(
        "x.experiment = {} AND x.user_id IS NOT NULL AND {} < {}",
        lit(experiment),
        t(pg, "x.\"timestamp\""),
        t(pg, &lit(&rfc3339(b.end)))
    );
    if let Some(s) = b.start {
        cond.push_str(&format!(
            " AND {} >= {}",
            t(pg, "x.\"timestamp\""),
            t(pg, &lit(&rfc3339(s)))
        ));
    }
    let having = b
        .first_from
        .map(|f| {
            format!(
                " HAVING MIN({}) >= {}",
                t(pg, "x.\"timestamp\""),
                t(pg, &lit(&rfc3339(f)))
            )
        })
        .unwrap_or_default();
    format!(
        "f AS (SELECT x.user_id, MIN({}) AS t0, COUNT(DISTINCT x.variant) AS nv, MIN(x.variant) AS variant \
         FROM {exposures} x WHERE {cond} GROUP BY x.user_id{having})",
        t(pg, "x.\"timestamp\"")
    )
}

/// `FROM <events> e WHERE ...`: the user's `event`s in `[t0, t0 + window)` after
/// their first exposure, compared exactly, and before the analysis end `end`: events
/// after the data interval never count, so the same interval always gives the same
/// result (a window still open at the interval end is cut there).
fn events_in_window(
    pg: bool,
    events: &str,
    event: &str,
    window: std::time::Duration,
    end: DateTime<Utc>,
) -> String {
    let e = t(pg, "e.\"timestamp\"");
    let end = t(pg, &lit(&exact(end)));
    let in_window = if pg {
        format!(
            "{e} >= f.t0 AND {e} < f.t0 + {} * INTERVAL '1 microsecond' AND {e} < {end}",
            window.as_micros()
        )
    } else {
        format!(
            "{e} >= f.t0 AND {e} < f.t0 + {} AND {e} < {end}",
            window.as_millis()
        )
    };
    format!(
        "FROM {events} e WHERE e.user_id = f.user_id AND e.event = {} AND {in_window}",
        lit(event)
    )
}

/// RFC 3339 with microseconds: times keep their precision on every path.
fn exact(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Per user: how many `event`s (or the sum of their `property`) within the window
/// after first exposure.
fn measure_sql(
    pg: bool,
    events: &str,
    event: &str,
    property: Option<&str>,
    window: std::time::Duration,
    end: DateTime<Utc>,
) -> String {
    let what = match property {
        None => "COUNT(*)".to_string(),
        Some(p) => format!("SUM(CAST({} AS DOUBLE PRECISION))", prop(pg, "e.", p)),
    };
    format!(
        "COALESCE((SELECT {what} {}), 0.0)",
        events_in_window(pg, events, event, window, end)
    )
}

/// The SQL computing, per variant, users and the sums of each user's value `v` (and
/// denominator `w` for ratio metrics).
fn metric_sql(
    pg: bool,
    exposures: &str,
    events: &str,
    experiment: &str,
    b: Bounds,
    m: &Metric,
) -> String {
    let (v, w) = match &m.kind {
        MetricKind::Conversion { event, window } => (
            format!(
                "CASE WHEN EXISTS (SELECT 1 {}) THEN 1.0 ELSE 0.0 END",
                events_in_window(pg, events, event, *window, b.end)
            ),
            "0.0".to_string(),
        ),
        MetricKind::Mean {
            event,
            property,
            window,
        } => (
            measure_sql(pg, events, event, Some(property), *window, b.end),
            "0.0".to_string(),
        ),
        MetricKind::Ratio {
            numerator: n,
            denominator: d,
            window,
        } => (
            measure_sql(pg, events, &n.event, n.property.as_deref(), *window, b.end),
            measure_sql(pg, events, &d.event, d.property.as_deref(), *window, b.end),
        ),
    };
    let dbl = "DOUBLE PRECISION";
    // Second moments are summed around each variant's mean (two passes, the means from a
    // window function): `sum(v^2) - n mean^2` loses every digit at 1e8 +- 1.
    format!(
        "WITH {}, u AS (SELECT f.variant, CAST({v} AS {dbl}) AS v, CAST({w} AS {dbl}) AS w FROM f WHERE f.nv = 1), \
         c AS (SELECT variant, v, w, v - AVG(v) OVER (PARTITION BY variant) AS dv, w - AVG(w) OVER (PARTITION BY variant) AS dw FROM u) \
         SELECT variant, COUNT(*) AS users, CAST(SUM(v) AS {dbl}), CAST(SUM(w) AS {dbl}), CAST(SUM(dv * dv) AS {dbl}), \
         CAST(SUM(dw * dw) AS {dbl}), CAST(SUM(dv * dw) AS {dbl}) FROM c GROUP BY variant",
        first_exposures(pg, exposures, experiment, b)
    )
}

fn excluded_sql(pg: bool, exposures: &str, experiment: &str, b: Bounds) -> String {
    format!(
        "WITH {} SELECT COUNT(*) FROM f WHERE f.nv > 1",
        first_exposures(pg, exposures, experiment, b)
    )
}

async fn sums(c: &DatabaseConnection, sql: String) -> Result<VariantSums, sea_orm::DbErr> {
    let rows = c
        .query_all_raw(Statement::from_string(c.get_database_backend(), sql))
        .await?;
    // A value that does not decode is an error, never a silent zero.
    rows.into_iter()
        .map(|r| {
            let f = |i: usize| -> Result<f64, sea_orm::DbErr> {
                Ok(r.try_get_by_index::<Option<f64>>(i)?.unwrap_or(0.0))
            };
            let n = r.try_get_by_index::<i64>(1)?;
            Ok((
                r.try_get_by_index::<Option<String>>(0)?.unwrap_or_default(),
                n,
                stats::RatioSums {
                    n: u64::try_from(n).unwrap_or(0),
                    x: f(2)?,
                    y: f(3)?,
                    sxx: f(4)?,
                    syy: f(5)?,
                    sxy: f(6)?,
                },
            ))
        })
        .collect()
}

/// Whether a rows file is CSV: its `format` decides; without one, the extension does.
fn is_csv(path: &str, format: Option<super::EventFormat>) -> bool {
    match format {
        Some(f) => f == super::EventFormat::Csv,
        None => path.ends_with(".csv"),
    }
}

/// The events relation of an experiment as SQL: its table, or its rows of
/// `weft_experiment_events` when they come from a file.
fn events_relation(spec: &ExperimentSpec) -> String {
    match &spec.events {
        RowSource::Table(t) => q(t),
        RowSource::File { .. } => format!(
            "(SELECT user_id, event, \"timestamp\", properties FROM weft_experiment_events WHERE experiment = {})",
            lit(&spec.experiment)
        ),
    }
}

/// Loads an experiment's events from a JSONL or CSV file into
/// `weft_experiment_events` (replacing the experiment's rows). Each row needs
/// `user_id`, `event` and an RFC 3339 `timestamp`; `properties` is a JSON object (in
/// CSV, a `properties` column and/or every other column).
async fn load_events(
    c: &DatabaseConnection,
    ctx: &RunContext<'_>,
    experiment: &str,
    path: &str,
    csv_format: bool,
) -> Result<usize, String> {
    let pg = c.get_database_backend() == DbBackend::Postgres;
    let full = ctx.base_dir().join(path);
    let text = tokio::fs::read_to_string(&full)
        .await
        .map_err(|e| format!("cannot read events {path}: {e}"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut rows: Vec<(usize, serde_json::Map<String, serde_json::Value>)> = Vec::new();
    if csv_format {
        let mut rdr = csv::Reader::from_reader(text.as_bytes());
        let headers = rdr.headers().map_err(|e| format!("{path}: {e}"))?.clone();
        for (i, rec) in rdr.records().enumerate() {
            let rec = rec.map_err(|e| format!("{path}: {e}"))?;
            let mut obj = serde_json::Map::new();
            let mut props = serde_json::Map::new();
            for (h, v) in headers.iter().zip(rec.iter()) {
                match h {
                    "user_id" | "event" | "timestamp" => {
                        obj.insert(h.into(), v.into());
                    }
                    "properties" if !v.trim().is_empty() => {
                        let parsed: serde_json::Value = serde_json::from_str(v)
                            .map_err(|e| format!("{path}:{}: properties: {e}", i + 2))?;
                        if let serde_json::Value::Object(o) = parsed {
                            for (k, x) in o {
                                props.insert(k, x);
                            }
                        }
                    }
                    "properties" => {}
                    _ if !v.is_empty() => {
                        props.entry(h.to_string()).or_insert_with(|| v.into());
                    }
                    _ => {}
                }
            }
            obj.insert("properties".into(), serde_json::Value::Object(props));
            rows.push((i + 2, obj));
        }
    } else {
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(serde_json::Value::Object(o)) => rows.push((i + 1, o)),
                Ok(_) => return Err(format!("{path}:{}: not a JSON object", i + 1)),
                Err(e) => return Err(format!("{path}:{}: bad JSON: {e}", i + 1)),
            }
        }
    }
    let b = c.get_database_backend();
    let txn = c.begin().await.map_err(|e| e.to_string())?;
    txn.execute_unprepared(&format!(
        "DELETE FROM weft_experiment_events WHERE experiment = {}",
        lit(experiment)
    ))
    .await
    .map_err(|e| e.to_string())?;
    let n = rows.len();
    for (line, obj) in rows {
        let text_of = |k: &str| {
            obj.get(k).and_then(|x| {
                x.as_str()
                    .map(str::to_string)
                    .or_else(|| (!x.is_null()).then(|| x.to_string()))
            })
        };
        let (Some(user), Some(event), Some(ts_text)) =
            (text_of("user_id"), text_of("event"), text_of("timestamp"))
        else {
            return Err(format!(
                "{path}:{line}: an event needs user_id, event and timestamp"
            ));
        };
        let t = DateTime::parse_from_rfc3339(&ts_text)
            .map_err(|_| format!("{path}:{line}: timestamp \"{ts_text}\" is not an RFC 3339 time"))?
            .with_timezone(&Utc);
        let props = match obj.get("properties") {
            None | Some(serde_json::Value::Null) => serde_json::json!({}),
            Some(serde_json::Value::Object(o)) => serde_json::Value::Object(o.clone()),
            Some(_) => return Err(format!("{path}:{line}: properties must be a JSON object")),
        };
        let ts_value: Value = if pg { t.into() } else { exact(t).into() };
        let props_value: Value = if pg {
            props.into()
        } else {
            props.to_string().into()
        };
        let sql = format!(
            "INSERT INTO weft_experiment_events VALUES ({}, {}, {}, {}, {})",
            ph(b, 1),
            ph(b, 2),
            ph(b, 3),
            ph(b, 4),
            ph(b, 5)
        );
        txn.execute_raw(Statement::from_sql_and_values(
            b,
            sql,
            [
                experiment.into(),
                user.into(),
                event.into(),
                ts_value,
                props_value,
            ],
        ))
        .await
        .map_err(|e| e.to_string())?;
    }
    txn.commit().await.map_err(|e| e.to_string())?;
    Ok(n)
}

/// Loads exposure rows from a file into `weft_exposures` (replacing the experiment's).
async fn load_exposures(
    c: &DatabaseConnection,
    ctx: &RunContext<'_>,
    experiment: &str,
    path: &str,
    csv_format: bool,
) -> Result<(), String> {
    let pg = c.get_database_backend() == DbBackend::Postgres;
    let full = ctx.base_dir().join(path);
    let text = tokio::fs::read_to_string(&full)
        .await
        .map_err(|e| format!("cannot read exposures {path}: {e}"))?;
    let mut rows = Vec::new();
    if csv_format {
        let mut rdr = csv::Reader::from_reader(text.as_bytes());
        let headers = rdr.headers().map_err(|e| format!("{path}: {e}"))?.clone();
        for (i, rec) in rdr.records().enumerate() {
            let rec = rec.map_err(|e| format!("{path}: {e}"))?;
            let get = |k: &str| {
                headers
                    .iter()
                    .position(|h| h == k)
                    .and_then(|j| rec.get(j))
                    .map(str::to_string)
            };
            rows.push((
                i + 2,
                get("experiment"),
                get("user_id"),
                get("variant"),
                get("timestamp"),
            ));
        }
    } else {
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| format!("{path}:{}: bad JSON: {e}", i + 1))?;
            let get = |k: &str| {
                v.get(k).and_then(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .or_else(|| (!x.is_null()).then(|| x.to_string()))
                })
            };
            rows.push((
                i + 1,
                get("experiment"),
                get("user_id"),
                get("variant"),
                get("timestamp"),
            ));
        }
    }
    let b = c.get_database_backend();
    let txn = c.begin().await.map_err(|e| e.to_string())?;
    txn.execute_unprepared(&format!(
        "DELETE FROM weft_exposures WHERE experiment = {}",
        lit(experiment)
    ))
    .await
    .map_err(|e| e.to_string())?;
    for (line, exp, user, variant, ts) in rows {
        let (Some(exp), Some(user), Some(variant), Some(ts)) = (exp, user, variant, ts) else {
            return Err(format!(
                "{path}:{line}: an exposure needs user_id, experiment, variant and timestamp"
            ));
        };
        if exp != experiment {
            continue;
        }
        let t = DateTime::parse_from_rfc3339(&ts)
            .map_err(|_| format!("{path}:{line}: timestamp \"{ts}\" is not an RFC 3339 time"))?
            .with_timezone(&Utc);
        let sql = if pg {
            "INSERT INTO weft_exposures VALUES ($1, $2, $3, $4)"
        } else {
            "INSERT INTO weft_exposures VALUES (?, ?, ?, ?)"
        };
        let ts_value: Value = if pg { t.into() } else { exact(t).into() };
        txn.execute_raw(Statement::from_sql_and_values(
            b,
            sql,
            [exp.into(), user.into(), variant.into(), ts_value],
        ))
        .await
        .map_err(|e| e.to_string())?;
    }
    txn.commit().await.map_err(|e| e.to_string())
}

/// One output row.
struct ResultRow {
    metric: String,
    variant: String,
    users: i64,
    /// `None` where it cannot be computed (a ratio whose denominator sums to 0).
    value: Option<f64>,
    cmp: Option<stats::Comparison>,
    /// Holm-adjusted p-value over every comparison of the analysis.
    p_adjusted: Option<f64>,
    /// Why the statistics of this row are missing, when they are.
    reason: Option<String>,
}

/// The first exposed user whose `property` of `event` is present but not a number:
/// `(user, value)`. Such values are never coerced (`"5 EUR"` is not 5).
#[allow(clippy::too_many_arguments)]
async fn non_numeric(
    c: &DatabaseConnection,
    pg: bool,
    exposures: &str,
    events: &str,
    experiment: &str,
    b: Bounds,
    event: &str,
    property: &str,
) -> Result<Option<(String, String)>, sea_orm::DbErr> {
    let key = if pg {
        lit(property)
    } else {
        lit(&format!("$.\"{property}\""))
    };
    // Numbers are fine, and so is text that is exactly a number (CSV files carry every
    // value as text); booleans, objects, arrays and other text are not.
    let (value, kind) = if pg {
        (
            format!("CAST(e.properties ->> {key} AS TEXT)"),
            format!("jsonb_typeof(CAST(e.properties -> {key} AS JSONB))"),
        )
    } else {
        (
            format!("CAST(json_extract(e.properties, {key}) AS TEXT)"),
            format!("json_type(e.properties, {key})"),
        )
    };
    let (number, text) = if pg {
        ("'number'", "'string'")
    } else {
        ("'integer', 'real'", "'text'")
    };
    let from = format!(
        "WITH {} SELECT e.user_id, {value} FROM {events} e JOIN f ON f.user_id = e.user_id \
         WHERE f.nv = 1 AND e.event = {}",
        first_exposures(pg, exposures, experiment, b),
        lit(event)
    );
    let b2 = c.get_database_backend();
    let first = |sql: String| async move {
        Ok::<_, sea_orm::DbErr>(
            c.query_all_raw(Statement::from_string(b2, sql))
                .await?
                .into_iter()
                .map(|r| {
                    (
                        r.try_get_by_index::<Option<String>>(0)
                            .ok()
                            .flatten()
                            .unwrap_or_default(),
                        r.try_get_by_index::<Option<String>>(1)
                            .ok()
                            .flatten()
                            .unwrap_or_default(),
                    )
                })
                .collect::<Vec<_>>(),
        )
    };
    if let Some(bad) = first(format!(
        "{from} AND {kind} NOT IN ({number}, {text}, 'null') LIMIT 1"
    ))
    .await?
    .into_iter()
    .next()
    {
        return Ok(Some(bad));
    }
    let texts = first(format!("{from} AND {kind} = {text} LIMIT 100000")).await?;
    Ok(texts
        .into_iter()
        .find(|(_, v)| v.trim().parse::<f64>().map_or(true, |x| !x.is_finite())))
}

fn pct(x: f64) -> String {
    format!("{:+.2}", x)
}

pub async fn run(ctx: &mut RunContext<'_>, spec: &ExperimentSpec) -> TryOutcome {
    let started = std::time::Instant::now();
    let conn = match ctx.warehouses.get(&spec.connection).await {
        Ok(c) => c,
        Err(e) => return failure(e),
    };
    let pg = conn.get_database_backend() == DbBackend::Postgres;
    let end = match DateTime::parse_from_rfc3339(&ctx.tmpl.data_interval_end) {
        Ok(e) => e.with_timezone(&Utc),
        Err(_) => return failure("the run has no valid data interval"),
    };
    let interval_start = DateTime::parse_from_rfc3339(&ctx.tmpl.data_interval_start)
        .map(|s| s.with_timezone(&Utc))
        .unwrap_or(end);
    let bounds = Bounds {
        end,
        start: spec.start,
        first_from: (spec.range == AnalysisRange::Interval && interval_start < end)
            .then_some(interval_start),
    };
    if let RowSource::File { path, format } = &spec.events {
        let path = match ctx.render(path) {
            Ok(p) => p,
            Err(e) => return failure(e),
        };
        match load_events(&conn, ctx, &spec.experiment, &path, is_csv(&path, *format)).await {
            Ok(n) => {
                ctx.log
                    .line(&format!("[weft] {n} events from {path}"))
                    .await
            }
            Err(e) => return failure(e),
        }
    }
    let events = events_relation(spec);
    let exposures = match &spec.exposures {
        None => exposures_relation(pg, None, &events),
        Some(RowSource::Table(t)) => exposures_relation(pg, Some(t), &events),
        Some(RowSource::File { path, format }) => {
            let path = match ctx.render(path) {
                Ok(p) => p,
                Err(e) => return failure(e),
            };
            if let Err(e) =
                load_exposures(&conn, ctx, &spec.experiment, &path, is_csv(&path, *format)).await
            {
                return failure(e);
            }
            q("weft_exposures")
        }
    };
    // The per-user lookups need an index on the events table (made once; ignored when
    // the events relation is a view).
    let (index_on, index_name) = match &spec.events {
        RowSource::Table(t) => (q(t), q(&format!("{t}_weft_user_event"))),
        RowSource::File { .. } => (
            "weft_experiment_events".to_string(),
            "weft_experiment_events_user_event".to_string(),
        ),
    };
    let index = format!("CREATE INDEX IF NOT EXISTS {index_name} ON {index_on} (user_id, event)");
    if let Err(e) = conn.execute_unprepared(&index).await {
        tracing::debug!("no index on {index_on}: {e}");
    }
    let excluded = match conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            excluded_sql(pg, &exposures, &spec.experiment, bounds),
        ))
        .await
    {
        Ok(r) => r
            .and_then(|r| r.try_get_by_index::<i64>(0).ok())
            .unwrap_or(0),
        Err(e) => return failure(format!("experiment {}: {e}", spec.experiment)),
    };
    let mut rows: Vec<ResultRow> = Vec::new();
    let mut srm_p: Option<f64> = None;
    let mut data_errors: Vec<String> = Vec::new();
    for m in &spec.metrics {
        let numeric: Vec<(&str, &str)> = match &m.kind {
            MetricKind::Conversion { .. } => Vec::new(),
            MetricKind::Mean {
                event, property, ..
            } => vec![(event, property)],
            MetricKind::Ratio {
                numerator: n,
                denominator: d,
                ..
            } => [n, d]
                .into_iter()
                .filter_map(|x| x.property.as_deref().map(|p| (x.event.as_str(), p)))
                .collect(),
        };
        let mut bad_value = None;
        for (event, property) in numeric {
            match non_numeric(
                &conn,
                pg,
                &exposures,
                &events,
                &spec.experiment,
                bounds,
                event,
                property,
            )
            .await
            {
                Ok(Some((user, value))) => {
                    bad_value = Some(format!(
                        "user \"{user}\" has {property} = {value} in a \"{event}\" event, which is not a number"
                    ));
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    return failure(format!(
                        "experiment {}, metric {}: {e}",
                        spec.experiment, m.name
                    ));
                }
            }
        }
        if let Some(reason) = bad_value {
            ctx.log
                .line(&format!(
                    "[weft] {}: {reason}; its results are not computed",
                    m.name
                ))
                .await;
            data_errors.push(format!("metric {}: {reason}", m.name));
            for (variant, _) in &spec.split {
                rows.push(ResultRow {
                    metric: m.name.clone(),
                    variant: variant.clone(),
                    users: 0,
                    value: None,
                    cmp: None,
                    p_adjusted: None,
                    reason: Some(reason.clone()),
                });
            }
            continue;
        }
        let data = match sums(
            &conn,
            metric_sql(pg, &exposures, &events, &spec.experiment, bounds, m),
        )
        .await
        {
            Ok(d) => d,
            Err(e) => {
                return failure(format!(
                    "experiment {}, metric {}: {e}",
                    spec.experiment, m.name
                ));
            }
        };
        let sums_of = |variant: &str| -> Option<stats::RatioSums> {
            data.iter()
                .find(|(v, ..)| v == variant)
                .map(|(_, _, s)| *s)
                .filter(|s| s.n > 0)
        };
        // Conversion and mean metrics: the mean and (population) variance of `x`.
        let arm = |s: stats::RatioSums| -> Arm {
            Arm {
                n: s.n,
                mean: s.x / s.n as f64,
                var: (s.sxx / s.n as f64).max(0.0),
            }
        };
        let value = |s: stats::RatioSums| -> Option<f64> {
            match &m.kind {
                MetricKind::Ratio { .. } if s.y != 0.0 => Some(s.x / s.y),
                MetricKind::Ratio { .. } => None,
                _ => Some(s.x / s.n as f64),
            }
        };
        if srm_p.is_none() {
            let counts: Vec<u64> = spec
                .split
                .iter()
                .map(|(v, _)| {
                    data.iter()
                        .find(|(x, ..)| x == v)
                        .map_or(0, |(_, n, ..)| (*n).max(0) as u64)
                })
                .collect();
            let shares: Vec<f64> = spec.split.iter().map(|(_, s)| *s).collect();
            // Traffic in a variant the split does not list (say a 60% holdout) is a
            // mismatch by definition: its planned share is 0.
            let unlisted: Vec<String> = data
                .iter()
                .filter(|(v, n, _)| *n > 0 && !spec.split.iter().any(|(s, _)| s == v))
                .map(|(v, n, _)| format!("{v} ({n} users)"))
                .collect();
            if unlisted.is_empty() {
                srm_p = stats::srm(&counts, &shares).ok().map(|(_, p)| p);
            } else {
                ctx.log
                    .line(&format!(
                        "[weft] WARNING: exposures in variants the split does not list: {}; the sample ratio cannot be as planned (srm p = 0)",
                        unlisted.join(", ")
                    ))
                    .await;
                srm_p = Some(0.0);
            }
        }
        let Some(control) = sums_of(&spec.control) else {
            return failure(format!(
                "experiment {}: the control variant \"{}\" has no exposed users before {}",
                spec.experiment,
                spec.control,
                rfc3339(end)
            ));
        };
        rows.push(ResultRow {
            metric: m.name.clone(),
            variant: spec.control.clone(),
            users: control.n as i64,
            value: value(control),
            cmp: None,
            p_adjusted: None,
            reason: None,
        });
        for (variant, _) in spec.split.iter().filter(|(v, _)| *v != spec.control) {
            let Some(t) = sums_of(variant) else {
                ctx.log
                    .line(&format!(
                        "[weft] {}: variant {variant} has no exposed users",
                        m.name
                    ))
                    .await;
                continue;
            };
            let cmp = match &m.kind {
                MetricKind::Conversion { .. } => stats::two_proportions(arm(control), arm(t)),
                MetricKind::Mean { .. } => {
                    // Sample variances for Welch.
                    let sample = |a: Arm| Arm {
                        var: if a.n > 1 {
                            a.var * a.n as f64 / (a.n as f64 - 1.0)
                        } else {
                            a.var
                        },
                        ..a
                    };
                    stats::welch(sample(arm(control)), sample(arm(t)))
                }
                MetricKind::Ratio { .. } => stats::ratio(control, t),
            };
            // What cannot be computed (one user in an arm, a denominator that is 0 for
            // everyone) is a row with no statistics and the reason, never a NaN and
            // never the end of the other metrics.
            let (cmp, reason) = match cmp {
                Ok(c) => (Some(c), None),
                Err(e) => {
                    ctx.log
                        .line(&format!("[weft] {} {variant}: not computed: {e}", m.name))
                        .await;
                    (None, Some(e.to_string()))
                }
            };
            rows.push(ResultRow {
                metric: m.name.clone(),
                variant: variant.clone(),
                users: t.n as i64,
                value: value(t),
                cmp,
                p_adjusted: None,
                reason,
            });
        }
    }
    // Several metrics x variants: Holm's adjustment over every comparison.
    let raw: Vec<Option<f64>> = rows
        .iter()
        .map(|r| r.cmp.and_then(|c| c.diff.p_value))
        .collect();
    for (r, adj) in rows.iter_mut().zip(stats::holm(&raw)) {
        r.p_adjusted = adj;
    }
    let shown = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.4}"));
    for r in &rows {
        let line = match &r.cmp {
            None if r.reason.is_some() => continue,
            None => format!(
                "[weft] {} {} (control): {} users, value {}",
                r.metric,
                r.variant,
                r.users,
                shown(r.value)
            ),
            Some(c) => {
                let lift = c
                    .rel_lift
                    .map(|l| {
                        format!(
                            ", lift {}% [{}, {}]",
                            pct(l.value * 100.0),
                            pct(l.ci_low * 100.0),
                            pct(l.ci_high * 100.0)
                        )
                    })
                    .unwrap_or_default();
                let p = c
                    .diff
                    .p_value
                    .map(|p| format!("{p:.4}"))
                    .unwrap_or_else(|| "n/a (no variance)".into());
                format!(
                    "[weft] {} {}: {} users, value {}, diff {:.4} [{:.4}, {:.4}]{lift}, p = {p} (Holm-adjusted {})",
                    r.metric,
                    r.variant,
                    r.users,
                    shown(r.value),
                    c.diff.value,
                    c.diff.ci_low,
                    c.diff.ci_high,
                    shown(r.p_adjusted)
                )
            }
        };
        ctx.log.line(&line).await;
    }
    ctx.log
        .line(&format!(
            "[weft] {} users exposed to more than one variant were excluded",
            excluded
        ))
        .await;
    match srm_p {
        Some(p) if p < 0.001 => ctx.log.line(&format!("[weft] WARNING: sample-ratio mismatch (p = {p:.6}): the split is not as planned; treat the results with suspicion")).await,
        Some(p) => ctx.log.line(&format!("[weft] sample ratio as planned (p = {p:.4})")).await,
        None => {}
    }
    if let Err(e) = write_results(&conn, spec, &rows, srm_p, excluded, end).await {
        return failure(format!("could not write experiment_results: {e}"));
    }
    let users: i64 = rows
        .iter()
        .filter(|r| spec.metrics.first().is_some_and(|m| m.name == r.metric))
        .map(|r| r.users)
        .sum();
    ctx.log
        .line(&format!(
            "[weft] analysed {users} users, {} metric(s) in {} ms",
            spec.metrics.len(),
            started.elapsed().as_millis()
        ))
        .await;
    if !data_errors.is_empty() {
        return failure(format!(
            "experiment {}: {} (the other metrics were written)",
            spec.experiment,
            data_errors.join("; ")
        ));
    }
    TryOutcome::success()
}

async fn write_results(
    c: &DatabaseConnection,
    spec: &ExperimentSpec,
    rows: &[ResultRow],
    srm_p: Option<f64>,
    excluded: i64,
    end: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    let b = c.get_database_backend();
    let txn = c.begin().await?;
    let end_s = rfc3339(end);
    let del = format!(
        "DELETE FROM experiment_results WHERE experiment = {} AND interval_end = {}",
        ph(b, 1),
        ph(b, 2)
    );
    txn.execute_raw(Statement::from_sql_and_values(
        b,
        del,
        [spec.experiment.clone().into(), end_s.clone().into()],
    ))
    .await?;
    let now = rfc3339(Utc::now());
    for r in rows {
        let d = r.cmp.map(|c| c.diff);
        let l = r.cmp.and_then(|c| c.rel_lift);
        let values: Vec<Value> = vec![
            spec.experiment.clone().into(),
            r.metric.clone().into(),
            r.variant.clone().into(),
            r.users.into(),
            r.value.into(),
            d.map(|x| x.value).into(),
            d.map(|x| x.ci_low).into(),
            d.map(|x| x.ci_high).into(),
            l.map(|x| x.value).into(),
            l.map(|x| x.ci_low).into(),
            l.map(|x| x.ci_high).into(),
            d.and_then(|x| x.p_value).into(),
            srm_p.into(),
            excluded.into(),
            end_s.clone().into(),
            now.clone().into(),
            r.p_adjusted.into(),
            r.reason.clone().into(),
        ];
        let placeholders: Vec<String> = (1..=values.len()).map(|i| ph(b, i)).collect();
        let sql = format!(
            "INSERT INTO experiment_results (experiment, metric, variant, users, value, diff, diff_ci_low, diff_ci_high, \
             rel_lift, rel_lift_ci_low, rel_lift_ci_high, p_value, srm_p_value, excluded_users, interval_end, computed_at, \
             p_value_adjusted, reason) VALUES ({})",
            placeholders.join(", ")
        );
        txn.execute_raw(Statement::from_sql_and_values(b, sql, values))
            .await?;
    }
    txn.commit().await
}

// ------------------------------------------------------------------ reading results back

/// One stored row of `experiment_results`, as the experiment page and the API show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct StoredResult {
    pub metric: String,
    pub variant: String,
    pub users: i64,
    pub value: Option<f64>,
    pub diff: Option<f64>,
    pub diff_ci_low: Option<f64>,
    pub diff_ci_high: Option<f64>,
    pub rel_lift: Option<f64>,
    pub rel_lift_ci_low: Option<f64>,
    pub rel_lift_ci_high: Option<f64>,
    pub p_value: Option<f64>,
    pub srm_p_value: Option<f64>,
    pub excluded_users: i64,
    pub interval_end: String,
    pub computed_at: String,
    /// Holm-adjusted p-value over every metric x variant comparison of the analysis.
    pub p_value_adjusted: Option<f64>,
    /// Why the statistics are missing, when they are.
    pub reason: Option<String>,
}

/// The rows of the latest analysed interval of an experiment (empty when the table or
/// the experiment is not there yet).
pub async fn latest_results(
    c: &DatabaseConnection,
    experiment: &str,
) -> Result<Vec<StoredResult>, sea_orm::DbErr> {
    let b = c.get_database_backend();
    let sql = format!(
        "SELECT metric, variant, users, value, diff, diff_ci_low, diff_ci_high, rel_lift, rel_lift_ci_low, rel_lift_ci_high, \
         p_value, srm_p_value, excluded_users, interval_end, computed_at, p_value_adjusted, reason FROM experiment_results \
         WHERE experiment = {p1} AND interval_end = (SELECT MAX(interval_end) FROM experiment_results WHERE experiment = {p2}) \
         ORDER BY metric, variant",
        p1 = ph(b, 1),
        p2 = ph(b, 2)
    );
    let rows = c
        .query_all_raw(Statement::from_sql_and_values(
            b,
            sql,
            [experiment.into(), experiment.into()],
        ))
        .await?;
    rows.into_iter()
        .map(|r| {
            let f = |i: usize| r.try_get_by_index::<Option<f64>>(i);
            Ok(StoredResult {
                metric: r.try_get_by_index(0)?,
                variant: r.try_get_by_index(1)?,
                users: r.try_get_by_index(2)?,
                value: f(3)?,
                diff: f(4)?,
                diff_ci_low: f(5)?,
                diff_ci_high: f(6)?,
                rel_lift: f(7)?,
                rel_lift_ci_low: f(8)?,
                rel_lift_ci_high: f(9)?,
                p_value: f(10)?,
                srm_p_value: f(11)?,
                excluded_users: r.try_get_by_index(12)?,
                interval_end: r.try_get_by_index(13)?,
                computed_at: r.try_get_by_index(14)?,
                p_value_adjusted: f(15)?,
                reason: r.try_get_by_index(16)?,
            })
        })
        .collect()
}

/// Turnaround of the latest `limit` analysed intervals: (interval end, seconds from it
/// to the results being written), oldest first.
pub async fn turnarounds(
    c: &DatabaseConnection,
    experiment: &str,
    limit: u32,
) -> Result<Vec<(String, f64)>, sea_orm::DbErr> {
    let b = c.get_database_backend();
    let sql = format!(
        "SELECT interval_end, MAX(computed_at) FROM experiment_results WHERE experiment = {} \
         GROUP BY interval_end ORDER BY interval_end DESC LIMIT {limit}",
        ph(b, 1)
    );
    let rows = c
        .query_all_raw(Statement::from_sql_and_values(b, sql, [experiment.into()]))
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let end: String = r.try_get_by_index(0)?;
        let at: String = r.try_get_by_index(1)?;
        if let (Ok(e), Ok(a)) = (
            DateTime::parse_from_rfc3339(&end),
            DateTime::parse_from_rfc3339(&at),
        ) {
            out.push((end, (a - e).num_milliseconds() as f64 / 1000.0));
        }
    }
    out.reverse();
    Ok(out)
}

/// The relation an experiment's exposures are read from (see `exposures_relation`).
pub fn exposures_source(spec: &ExperimentSpec, pg: bool) -> String {
    match &spec.exposures {
        None => exposures_relation(pg, None, &events_relation(spec)),
        Some(RowSource::Table(t)) => exposures_relation(pg, Some(t), &events_relation(spec)),
        Some(RowSource::File { .. }) => q("weft_exposures"),
    }
}

/// Users by day of first exposure and variant (users in several variants left out):
/// (day `YYYY-MM-DD`, variant, users), by day.
pub async fn daily_exposures(
    c: &DatabaseConnection,
    spec: &ExperimentSpec,
) -> Result<Vec<(String, String, i64)>, sea_orm::DbErr> {
    let b = c.get_database_backend();
    let sql = format!(
        "SELECT SUBSTR(CAST(t0 AS TEXT), 1, 10) AS day, variant, COUNT(*) FROM \
         (SELECT user_id, MIN(variant) AS variant, MIN(\"timestamp\") AS t0 FROM {} x \
          WHERE experiment = {} AND user_id IS NOT NULL GROUP BY user_id HAVING COUNT(DISTINCT variant) = 1) f \
         GROUP BY 1, 2 ORDER BY 1, 2",
        exposures_source(spec, b == DbBackend::Postgres),
        ph(b, 1)
    );
    let rows = c
        .query_all_raw(Statement::from_sql_and_values(
            b,
            sql,
            [spec.experiment.clone().into()],
        ))
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.try_get_by_index::<Option<String>>(0)?.unwrap_or_default(),
                r.try_get_by_index::<Option<String>>(1)?.unwrap_or_default(),
                r.try_get_by_index::<i64>(2)?,
            ))
        })
        .collect()
}
