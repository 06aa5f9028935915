//! `ingest`: events (Segment-style envelope) from JSONL or CSV files — globbed,
//! templated by the data interval, gzip read transparently — into a warehouse table.
//!
//! Per data interval the load is idempotent: one transaction deletes the interval's
//! rows and inserts the new ones, deduplicated on `message_id` (a message already
//! loaded, by this or another interval, is counted as a duplicate and kept once).
//! Client clocks are corrected (`received_at - (sent_at - timestamp)`). A bad line goes
//! to `<table>_rejects` with its file, line number and reason; the task fails only when
//! rejects exceed `max_reject_ratio`, and then nothing of the interval is loaded (the
//! rejects are kept for inspection). Files are read line by line: memory stays flat.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict, Query, SimpleExpr};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, TransactionTrait, Value};

use super::{RunContext, failure};
use crate::dag::{EventFormat, IngestSpec};
use crate::db::tasks::TryOutcome;

/// One event ready to insert.
#[derive(Debug, Clone)]
struct Event {
    message_id: String,
    kind: String,
    event: Option<String>,
    user_id: Option<String>,
    anonymous_id: Option<String>,
    timestamp: DateTime<Utc>,
    original_timestamp: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
    received_at: Option<DateTime<Utc>>,
    properties: serde_json::Value,
    context: serde_json::Value,
}

#[derive(Debug, Clone)]
struct Reject {
    source: String,
    line: u64,
    reason: String,
    raw: String,
}

enum Item {
    Event(Box<Event>, String),
    Reject(Reject),
}

const BATCH: usize = 500;

fn parse_time(v: Option<&serde_json::Value>, field: &str) -> Result<Option<DateTime<Utc>>, String> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) => DateTime::parse_from_rfc3339(s.trim())
            .map(|d| Some(d.with_timezone(&Utc)))
            .map_err(|_| format!("{field} \"{s}\" is not an RFC 3339 time")),
        Some(other) => Err(format!("{field} must be a string time, got {other}")),
    }
}

fn text(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) if s.is_empty() => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Builds an event from a JSON object (a JSONL line, or a CSV row turned into one).
fn event_from(obj: &serde_json::Map<String, serde_json::Value>) -> Result<Event, String> {
    let message_id = text(obj.get("message_id")).ok_or("missing message_id")?;
    let original = parse_time(obj.get("timestamp"), "timestamp")?.ok_or("missing timestamp")?;
    let sent_at = parse_time(obj.get("sent_at"), "sent_at")?;
    let received_at = parse_time(obj.get("received_at"), "received_at")?;
    // Client clocks drift: shift the event by the difference between when the client
    // says it sent it and when it arrived.
    let timestamp = match (sent_at, received_at) {
        (Some(s), Some(r)) => r - (s - original),
        _ => original,
    };
    let object = |k: &str| match obj.get(k) {
        Some(v @ serde_json::Value::Object(_)) => Ok(v.clone()),
        None | Some(serde_json::Value::Null) => Ok(serde_json::json!({})),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(serde_json::json!({})),
        Some(serde_json::Value::String(s)) => match serde_json::from_str::<serde_json::Value>(s) {
            Ok(v @ serde_json::Value::Object(_)) => Ok(v),
            _ => Err(format!("{k} must be a JSON object")),
        },
        Some(_) => Err(format!("{k} must be a JSON object")),
    };
    Ok(Event {
        message_id,
        kind: text(obj.get("type")).unwrap_or_else(|| "track".into()),
        event: text(obj.get("event")),
        user_id: text(obj.get("user_id")),
        anonymous_id: text(obj.get("anonymous_id")),
        timestamp,
        original_timestamp: original,
        sent_at,
        received_at,
        properties: object("properties")?,
        context: object("context")?,
    })
}

const ENVELOPE: &[&str] = &[
    "message_id",
    "type",
    "event",
    "user_id",
    "anonymous_id",
    "timestamp",
    "sent_at",
    "received_at",
    "context",
];

fn open(path: &Path) -> std::io::Result<Box<dyn Read + Send>> {
    let f = std::fs::File::open(path)?;
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(f)))
    } else {
        Ok(Box::new(f))
    }
}

fn format_of(path: &Path, given: Option<EventFormat>) -> Result<EventFormat, String> {
    if let Some(f) = given {
        return Ok(f);
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .trim_end_matches(".gz");
    if name.ends_with(".jsonl") || name.ends_with(".ndjson") || name.ends_with(".json") {
        Ok(EventFormat::Jsonl)
    } else if name.ends_with(".csv") {
        Ok(EventFormat::Csv)
    } else {
        Err(format!(
            "cannot tell the format of {}; set source.format = \"jsonl\" or \"csv\"",
            path.display()
        ))
    }
}

fn clip(s: &str) -> String {
    s.chars().take(500).collect()
}

/// Reads one file, sending events and rejects in batches (runs on a blocking thread).
fn read_file(
    path: &Path,
    display: &str,
    format: EventFormat,
    tx: &tokio::sync::mpsc::Sender<Vec<Item>>,
) -> Result<(), String> {
    let reader = open(path).map_err(|e| format!("cannot open {display}: {e}"))?;
    let mut batch = Vec::with_capacity(BATCH);
    let push = |item: Item, batch: &mut Vec<Item>| -> Result<(), String> {
        batch.push(item);
        if batch.len() >= BATCH {
            tx.blocking_send(std::mem::take(batch))
                .map_err(|_| "the loader stopped".to_string())?;
        }
        Ok(())
    };
    match format {
        EventFormat::Jsonl => {
            for (i, line) in BufReader::with_capacity(1 << 16, reader)
                .lines()
                .enumerate()
            {
                let n = i as u64 + 1;
                let line = match line {
                    Ok(l) => l,
                    Err(e) => {
                        push(
                            Item::Reject(Reject {
                                source: display.into(),
                                line: n,
                                reason: format!("unreadable line: {e}"),
                                raw: String::new(),
                            }),
                            &mut batch,
                        )?;
                        continue;
                    }
                };
                if line.trim().is_empty() {
                    continue;
                }
                let item = match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(serde_json::Value::Object(obj)) => match event_from(&obj) {
                        Ok(ev) => Item::Event(Box::new(ev), format!("{display}:{n}")),
                        Err(reason) => Item::Reject(Reject {
                            source: display.into(),
                            line: n,
                            reason,
                            raw: clip(&line),
                        }),
                    },
                    Ok(_) => Item::Reject(Reject {
                        source: display.into(),
                        line: n,
                        reason: "not a JSON object".into(),
                        raw: clip(&line),
                    }),
                    Err(e) => Item::Reject(Reject {
                        source: display.into(),
                        line: n,
                        reason: format!("bad JSON: {e}"),
                        raw: clip(&line),
                    }),
                };
                push(item, &mut batch)?;
            }
        }
        EventFormat::Csv => {
            let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
            let headers = rdr
                .headers()
                .map_err(|e| format!("{display}: cannot read the CSV header: {e}"))?
                .clone();
            for rec in rdr.records() {
                let item = match rec {
                    Ok(r) => {
                        let n = r.position().map_or(0, |p| p.line());
                        let mut obj = serde_json::Map::new();
                        let mut props = serde_json::Map::new();
                        for (h, v) in headers.iter().zip(r.iter()) {
                            if h == "properties" || ENVELOPE.contains(&h) {
                                obj.insert(h.to_string(), serde_json::Value::String(v.to_string()));
                            } else if !v.is_empty() {
                                props.insert(
                                    h.to_string(),
                                    serde_json::Value::String(v.to_string()),
                                );
                            }
                        }
                        if !props.is_empty() && !obj.contains_key("properties") {
                            obj.insert("properties".into(), serde_json::Value::Object(props));
                        }
                        match event_from(&obj) {
                            Ok(ev) => Item::Event(Box::new(ev), format!("{display}:{n}")),
                            Err(reason) => Item::Reject(Reject {
                                source: display.into(),
                                line: n,
                                reason,
                                raw: clip(&r.iter().collect::<Vec<_>>().join(",")),
                            }),
                        }
                    }
                    Err(e) => {
                        let n = e.position().map_or(0, |p| p.line());
                        Item::Reject(Reject {
                            source: display.into(),
                            line: n,
                            reason: format!("bad CSV: {e}"),
                            raw: String::new(),
                        })
                    }
                };
                push(item, &mut batch)?;
            }
        }
    }
    if !batch.is_empty() {
        tx.blocking_send(batch)
            .map_err(|_| "the loader stopped".to_string())?;
    }
    Ok(())
}

fn q(name: &str) -> String {
    format!("\"{name}\"")
}

/// Creates the target and rejects tables when missing.
async fn ensure_tables(c: &impl ConnectionTrait, table: &str) -> Result<(), sea_orm::DbErr> {
    let pg = c.get_database_backend() == DbBackend::Postgres;
    let (ts, json) = if pg {
        ("TIMESTAMPTZ", "JSONB")
    } else {
        ("TEXT", "TEXT")
    };
    let t = q(table);
    let r = q(&format!("{table}_rejects"));
    c.execute_unprepared(&format!(
        "CREATE TABLE IF NOT EXISTS {t} (message_id TEXT PRIMARY KEY, type TEXT NOT NULL, event TEXT, user_id TEXT, anonymous_id TEXT, \
         \"timestamp\" {ts} NOT NULL, original_timestamp {ts} NOT NULL, sent_at {ts}, received_at {ts}, properties {json} NOT NULL, context {json} NOT NULL, \
         interval_start {ts} NOT NULL, interval_end {ts} NOT NULL, source TEXT NOT NULL, loaded_at {ts} NOT NULL)"
    ))
    .await?;
    c.execute_unprepared(&format!(
        "CREATE INDEX IF NOT EXISTS {} ON {t} (interval_start)",
        q(&format!("{table}_interval_idx"))
    ))
    .await?;
    c.execute_unprepared(&format!(
        "CREATE TABLE IF NOT EXISTS {r} (source TEXT NOT NULL, line BIGINT NOT NULL, reason TEXT NOT NULL, raw TEXT NOT NULL, interval_start {ts} NOT NULL, loaded_at {ts} NOT NULL)"
    ))
    .await?;
    Ok(())
}

fn v_opt(s: &Option<String>) -> SimpleExpr {
    Expr::value(Value::String(s.clone()))
}

/// Inserts events, skipping message ids already present. Returns how many were new.
async fn insert_events(
    c: &impl ConnectionTrait,
    table: &str,
    events: &[(Event, String)],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64, sea_orm::DbErr> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut ins = Query::insert();
    ins.into_table(Alias::new(table)).columns(
        [
            "message_id",
            "type",
            "event",
            "user_id",
            "anonymous_id",
            "timestamp",
            "original_timestamp",
            "sent_at",
            "received_at",
            "properties",
            "context",
            "interval_start",
            "interval_end",
            "source",
            "loaded_at",
        ]
        .map(Alias::new),
    );
    for (e, source) in events {
        ins.values_panic([
            Expr::value(e.message_id.clone()),
            Expr::value(e.kind.clone()),
            v_opt(&e.event),
            v_opt(&e.user_id),
            v_opt(&e.anonymous_id),
            Expr::value(e.timestamp),
            Expr::value(e.original_timestamp),
            Expr::value(e.sent_at),
            Expr::value(e.received_at),
            Expr::value(e.properties.clone()),
            Expr::value(e.context.clone()),
            Expr::value(start),
            Expr::value(end),
            Expr::value(source.clone()),
            Expr::value(now),
        ]);
    }
    ins.on_conflict(
        OnConflict::column(Alias::new("message_id"))
            .do_nothing()
            .to_owned(),
    );
    let stmt = c.get_database_backend().build(&ins);
    Ok(c.execute_raw(stmt).await?.rows_affected())
}

async fn insert_rejects(
    c: &impl ConnectionTrait,
    table: &str,
    rejects: &[Reject],
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    for chunk in rejects.chunks(BATCH) {
        let mut ins = Query::insert();
        ins.into_table(Alias::new(format!("{table}_rejects")))
            .columns(
                [
                    "source",
                    "line",
                    "reason",
                    "raw",
                    "interval_start",
                    "loaded_at",
                ]
                .map(Alias::new),
            );
        for r in chunk {
            ins.values_panic([
                Expr::value(r.source.clone()),
                Expr::value(i64::try_from(r.line).unwrap_or(i64::MAX)),
                Expr::value(r.reason.clone()),
                Expr::value(r.raw.clone()),
                Expr::value(start),
                Expr::value(now),
            ]);
        }
        let stmt = c.get_database_backend().build(&ins);
        c.execute_raw(stmt).await?;
    }
    Ok(())
}

async fn delete_interval(
    c: &impl ConnectionTrait,
    table: &str,
    start: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    for t in [table.to_string(), format!("{table}_rejects")] {
        let mut del = Query::delete();
        del.from_table(Alias::new(t)).and_where(ExprTrait::eq(
            Expr::col(Alias::new("interval_start")),
            start,
        ));
        let stmt = c.get_database_backend().build(&del);
        c.execute_raw(stmt).await?;
    }
    Ok(())
}

/// Counts of one load.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    read: u64,
    loaded: u64,
    duplicates: u64,
    rejected: u64,
}

pub async fn run(ctx: &mut RunContext<'_>, spec: &IngestSpec) -> TryOutcome {
    let pattern = match ctx.render(&spec.path) {
        Ok(p) => p,
        Err(e) => return failure(e),
    };
    let base = ctx.base_dir();
    let full = if Path::new(&pattern).is_absolute() {
        PathBuf::from(&pattern)
    } else {
        base.join(&pattern)
    };
    let files: Vec<PathBuf> = match glob::glob(&full.to_string_lossy()) {
        Ok(paths) => {
            let mut v: Vec<PathBuf> = paths
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            v.sort();
            v
        }
        Err(e) => return failure(format!("bad source path pattern \"{pattern}\": {e}")),
    };
    let (start, end) = match (
        DateTime::parse_from_rfc3339(&ctx.tmpl.data_interval_start),
        DateTime::parse_from_rfc3339(&ctx.tmpl.data_interval_end),
    ) {
        (Ok(s), Ok(e)) => (s.with_timezone(&Utc), e.with_timezone(&Utc)),
        _ => return failure("the run has no valid data interval"),
    };
    if files.is_empty() {
        if spec.allow_empty {
            ctx.log
                .line(&format!(
                    "[weft] no file matches {pattern}; nothing to load (allow_empty)"
                ))
                .await;
            return TryOutcome {
                success: true,
                exit_code: None,
                error: None,
            };
        }
        return failure(format!(
            "no file matches \"{pattern}\" (relative to {}); set source.allow_empty = true if that is normal",
            base.display()
        ));
    }
    let conn = match ctx.warehouses.get(&spec.connection).await {
        Ok(c) => c,
        Err(e) => return failure(e),
    };
    ctx.log
        .line(&format!(
            "[weft] loading {} file(s) into \"{}\" for [{}, {})",
            files.len(),
            spec.table,
            ctx.tmpl.data_interval_start,
            ctx.tmpl.data_interval_end
        ))
        .await;
    let started = Instant::now();
    match load(&conn, ctx, spec, &files, start, end).await {
        Ok((counts, over)) => {
            let secs = started.elapsed().as_secs_f64().max(1e-6);
            ctx.log
                .line(&format!(
                    "[weft] read {}, loaded {}, duplicates {}, rejected {} in {:.2} s ({:.0} events/s)",
                    counts.read,
                    counts.loaded,
                    counts.duplicates,
                    counts.rejected,
                    secs,
                    counts.read as f64 / secs
                ))
                .await;
            match over {
                None => TryOutcome {
                    success: true,
                    exit_code: None,
                    error: None,
                },
                Some(msg) => failure(msg),
            }
        }
        Err(e) => failure(format!(
            "loading into \"{}\" on connection \"{}\" failed: {e}",
            spec.table, spec.connection
        )),
    }
}

async fn load(
    conn: &DatabaseConnection,
    ctx: &mut RunContext<'_>,
    spec: &IngestSpec,
    files: &[PathBuf],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<(Counts, Option<String>), String> {
    ensure_tables(conn, &spec.table)
        .await
        .map_err(|e| e.to_string())?;
    let now = Utc::now();
    let base = ctx.base_dir();
    let mut counts = Counts::default();
    let mut rejects: Vec<Reject> = Vec::new();
    let txn = conn.begin().await.map_err(|e| e.to_string())?;
    delete_interval(&txn, &spec.table, start)
        .await
        .map_err(|e| e.to_string())?;
    for path in files {
        let display = path
            .strip_prefix(&base)
            .unwrap_or(path)
            .display()
            .to_string();
        let format = format_of(path, spec.format)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Item>>(4);
        let (p, d) = (path.clone(), display.clone());
        let reader = tokio::task::spawn_blocking(move || read_file(&p, &d, format, &tx));
        while let Some(batch) = rx.recv().await {
            let mut events = Vec::with_capacity(batch.len());
            for item in batch {
                counts.read += 1;
                match item {
                    Item::Event(e, src) => {
                        if spec.reject_outside_interval
                            && (e.timestamp < start || e.timestamp >= end)
                        {
                            let line = src
                                .rsplit(':')
                                .next()
                                .and_then(|n| n.parse().ok())
                                .unwrap_or(0);
                            rejects.push(Reject {
                                source: display.clone(),
                                line,
                                reason: format!(
                                    "timestamp {} is outside the data interval",
                                    crate::dag::template::rfc3339(e.timestamp)
                                ),
                                raw: e.message_id.clone(),
                            });
                        } else {
                            events.push((*e, src));
                        }
                    }
                    Item::Reject(r) => rejects.push(r),
                }
            }
            let inserted = insert_events(&txn, &spec.table, &events, start, end, now)
                .await
                .map_err(|e| e.to_string())?;
            counts.loaded += inserted;
            counts.duplicates += events.len() as u64 - inserted;
        }
        reader.await.map_err(|e| e.to_string())??;
        ctx.log.line(&format!("[weft] {display}: done")).await;
    }
    counts.rejected = rejects.len() as u64;
    for r in rejects.iter().take(20) {
        ctx.log
            .line(&format!(
                "[weft] rejected {}:{}: {}",
                r.source, r.line, r.reason
            ))
            .await;
    }
    if rejects.len() > 20 {
        ctx.log
            .line(&format!(
                "[weft] ... and {} more rejects in \"{}_rejects\"",
                rejects.len() - 20,
                spec.table
            ))
            .await;
    }
    let ratio = if counts.read == 0 {
        0.0
    } else {
        counts.rejected as f64 / counts.read as f64
    };
    if ratio > spec.max_reject_ratio {
        // Too many bad lines: load nothing of the interval, keep the rejects to look at.
        txn.rollback().await.map_err(|e| e.to_string())?;
        let txn = conn.begin().await.map_err(|e| e.to_string())?;
        delete_interval(&txn, &spec.table, start)
            .await
            .map_err(|e| e.to_string())?;
        insert_rejects(&txn, &spec.table, &rejects, start, now)
            .await
            .map_err(|e| e.to_string())?;
        txn.commit().await.map_err(|e| e.to_string())?;
        let msg = format!(
            "{} of {} lines rejected ({:.2} %), above max_reject_ratio {}; nothing was loaded for this interval (see table \"{}_rejects\")",
            counts.rejected,
            counts.read,
            ratio * 100.0,
            spec.max_reject_ratio,
            spec.table
        );
        counts.loaded = 0;
        counts.duplicates = 0;
        return Ok((counts, Some(msg)));
    }
    insert_rejects(&txn, &spec.table, &rejects, start, now)
        .await
        .map_err(|e| e.to_string())?;
    txn.commit().await.map_err(|e| e.to_string())?;
    Ok((counts, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_clock_skew_is_corrected() {
        let obj = serde_json::json!({
            "message_id": "m1", "timestamp": "2026-01-01T10:00:00Z",
            "sent_at": "2026-01-01T10:05:00Z", "received_at": "2026-01-01T10:00:30Z"
        });
        let e = event_from(obj.as_object().expect("object")).expect("valid");
        // The client clock was 4.5 minutes fast.
        assert_eq!(
            crate::dag::template::rfc3339(e.timestamp),
            "2026-01-01T09:55:30Z"
        );
        assert_eq!(
            crate::dag::template::rfc3339(e.original_timestamp),
            "2026-01-01T10:00:00Z"
        );
        assert_eq!(e.kind, "track");
    }

    #[test]
    fn malformed_events_say_why() {
        let cases = [
            (
                serde_json::json!({"timestamp": "2026-01-01T10:00:00Z"}),
                "missing message_id",
            ),
            (serde_json::json!({"message_id": "m"}), "missing timestamp"),
            (
                serde_json::json!({"message_id": "m", "timestamp": "yesterday"}),
                "timestamp \"yesterday\" is not an RFC 3339 time",
            ),
            (
                serde_json::json!({"message_id": "m", "timestamp": "2026-01-01T10:00:00Z", "properties": [1]}),
                "properties must be a JSON object",
            ),
        ];
        for (obj, want) in cases {
            let err = event_from(obj.as_object().expect("object")).expect_err(want);
            assert_eq!(err, want);
        }
    }
}
