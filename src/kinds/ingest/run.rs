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

use super::{EventFormat, IngestSpec};
use crate::db::tasks::TryOutcome;
use crate::kinds::dialect::ident as q;
use crate::kinds::env::{RunContext, failure};
use crate::kinds::fetch::{Auth, get_json};

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
    /// Compact JSON text of the properties and context objects.
    properties: String,
    context: String,
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

const BATCH: usize = 1000;

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

/// The JSON text of the object at `k` (`{}` when absent; a string holding a JSON object
/// is accepted, as CSV exports write them).
fn event_object(
    obj: &serde_json::Map<String, serde_json::Value>,
    k: &str,
) -> Result<String, String> {
    match obj.get(k) {
        Some(v @ serde_json::Value::Object(_)) => Ok(v.to_string()),
        None | Some(serde_json::Value::Null) => Ok("{}".into()),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok("{}".into()),
        Some(serde_json::Value::String(s)) => match serde_json::from_str::<serde_json::Value>(s) {
            Ok(v @ serde_json::Value::Object(_)) => Ok(v.to_string()),
            _ => Err(format!("{k} must be a JSON object")),
        },
        Some(_) => Err(format!("{k} must be a JSON object")),
    }
}

/// Builds an event from a JSON object (an HTTP item, or a CSV row turned into one).
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
    let object = |k: &str| -> Result<String, String> {
        match obj.get(k) {
            Some(v @ serde_json::Value::Object(_)) => Ok(v.to_string()),
            None | Some(serde_json::Value::Null) => Ok("{}".into()),
            Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok("{}".into()),
            Some(serde_json::Value::String(s)) => {
                match serde_json::from_str::<serde_json::Value>(s) {
                    Ok(v @ serde_json::Value::Object(_)) => Ok(v.to_string()),
                    _ => Err(format!("{k} must be a JSON object")),
                }
            }
            Some(_) => Err(format!("{k} must be a JSON object")),
        }
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

/// A JSONL line, with every field left as raw JSON: nothing is copied or re-encoded
/// until it is needed (properties and context go to the table as the text they came as).
#[derive(serde::Deserialize)]
struct RawLine<'a> {
    #[serde(borrow)]
    message_id: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, rename = "type")]
    kind: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    event: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    user_id: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    anonymous_id: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    timestamp: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    sent_at: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    received_at: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    properties: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    context: Option<&'a serde_json::value::RawValue>,
}

/// Builds an event from a JSONL line without building a JSON tree.
fn event_from_line(line: &str) -> Result<Event, String> {
    if !line.trim_start().starts_with('{') {
        return match serde_json::from_str::<serde_json::Value>(line) {
            Ok(_) => Err("not a JSON object".into()),
            Err(e) => Err(format!("bad JSON: {e}")),
        };
    }
    let raw: RawLine = serde_json::from_str(line).map_err(|e| format!("bad JSON: {e}"))?;
    let value = |r: Option<&serde_json::value::RawValue>| -> Option<serde_json::Value> {
        r.and_then(|r| serde_json::from_str(r.get()).ok())
    };
    let message_id = text(value(raw.message_id).as_ref()).ok_or("missing message_id")?;
    let original =
        parse_time(value(raw.timestamp).as_ref(), "timestamp")?.ok_or("missing timestamp")?;
    let sent_at = parse_time(value(raw.sent_at).as_ref(), "sent_at")?;
    let received_at = parse_time(value(raw.received_at).as_ref(), "received_at")?;
    let timestamp = match (sent_at, received_at) {
        (Some(s), Some(r)) => r - (s - original),
        _ => original,
    };
    let object = |r: Option<&serde_json::value::RawValue>, k: &str| -> Result<String, String> {
        let Some(r) = r else { return Ok("{}".into()) };
        let t = r.get().trim();
        if t.starts_with('{') {
            return Ok(t.to_string());
        }
        let mut obj = serde_json::Map::new();
        obj.insert(
            k.to_string(),
            serde_json::from_str(t).unwrap_or(serde_json::Value::Null),
        );
        event_object(&obj, k)
    };
    Ok(Event {
        message_id,
        kind: text(value(raw.kind).as_ref()).unwrap_or_else(|| "track".into()),
        event: text(value(raw.event).as_ref()),
        user_id: text(value(raw.user_id).as_ref()),
        anonymous_id: text(value(raw.anonymous_id).as_ref()),
        timestamp,
        original_timestamp: original,
        sent_at,
        received_at,
        properties: object(raw.properties, "properties")?,
        context: object(raw.context, "context")?,
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
            // Lines are read as bytes: a line that is not UTF-8 is one reject, while an
            // error of the reader itself (a truncated or corrupt .gz, a failing disk)
            // fails the file at once — retrying a broken decoder never progresses.
            for (i, line) in BufReader::with_capacity(1 << 16, reader)
                .split(b'\n')
                .enumerate()
            {
                let n = i as u64 + 1;
                let bytes =
                    line.map_err(|e| format!("{display}: cannot read past line {}: {e}", n - 1))?;
                let line = match String::from_utf8(bytes) {
                    Ok(l) => l,
                    Err(e) => {
                        push(
                            Item::Reject(Reject {
                                source: display.into(),
                                line: n,
                                reason: format!("line is not UTF-8: {}", e.utf8_error()),
                                raw: clip(&String::from_utf8_lossy(e.as_bytes())),
                            }),
                            &mut batch,
                        )?;
                        continue;
                    }
                };
                // A UTF-8 byte order mark may open the file, as CSV files may.
                let line = if n == 1 {
                    line.strip_prefix('\u{feff}')
                        .map(str::to_string)
                        .unwrap_or(line)
                } else {
                    line
                };
                let line = line.strip_suffix('\r').map(str::to_string).unwrap_or(line);
                if line.trim().is_empty() {
                    continue;
                }
                let item = match event_from_line(&line) {
                    Ok(ev) => Item::Event(Box::new(ev), format!("{display}:{n}")),
                    Err(reason) => Item::Reject(Reject {
                        source: display.into(),
                        line: n,
                        reason,
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
                        if !props.is_empty() {
                            // Extra columns join the JSON of a `properties` column (which
                            // wins where both name the same key), or become it.
                            let merged = match obj.get("properties") {
                                None => Some(props),
                                Some(serde_json::Value::String(text)) if text.trim().is_empty() => {
                                    Some(props)
                                }
                                Some(serde_json::Value::String(text)) => {
                                    match serde_json::from_str::<serde_json::Value>(text) {
                                        Ok(serde_json::Value::Object(mut given)) => {
                                            for (k, v) in props {
                                                given.entry(k).or_insert(v);
                                            }
                                            Some(given)
                                        }
                                        // Not an object: event_from says so.
                                        _ => None,
                                    }
                                }
                                Some(_) => None,
                            };
                            if let Some(m) = merged {
                                obj.insert("properties".into(), serde_json::Value::Object(m));
                            }
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
                    // The reader itself failed (a corrupt .gz): the file fails at once.
                    Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => {
                        return Err(format!("{display}: cannot read the file: {e}"));
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

/// Pages through an HTTP source, sending events and rejects in batches.
async fn fetch_http(
    src: super::HttpEventSource,
    url: String,
    token: Option<String>,
    tx: tokio::sync::mpsc::Sender<Vec<Item>>,
) -> Result<(), String> {
    let base = reqwest::Url::parse(&url).map_err(|e| format!("bad url \"{url}\": {e}"))?;
    let display = format!("{}{}", base.origin().ascii_serialization(), base.path());
    let mut cursor: Option<String> = None;
    let mut page = 1u64;
    let mut n = 0u64;
    while page <= 100_000 {
        let mut u = base.clone();
        if let Some(p) = &src.page_param {
            u.query_pairs_mut().append_pair(p, &page.to_string());
        }
        if let Some(c) = &cursor {
            u.query_pairs_mut().append_pair(&src.cursor_param, c);
        }
        let auth = token.as_deref().map_or(Auth::None, Auth::Bearer);
        let body = get_json(&u, auth, &display)
            .await
            .map_err(|e| e.to_string())?;
        let items: Vec<serde_json::Value> = match &body {
            serde_json::Value::Array(a) => a.clone(),
            serde_json::Value::Object(o) => match o.get(&src.items) {
                Some(serde_json::Value::Array(a)) => a.clone(),
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(_) => return Err(format!("GET {display}: \"{}\" is not a list", src.items)),
            },
            _ => return Err(format!("GET {display}: expected a JSON object or list")),
        };
        let empty = items.is_empty();
        let source = format!("{display} page {page}");
        let mut batch = Vec::with_capacity(items.len());
        for item in items {
            n += 1;
            batch.push(match item {
                serde_json::Value::Object(obj) => match event_from(&obj) {
                    Ok(ev) => Item::Event(Box::new(ev), format!("{source}:{n}")),
                    Err(reason) => Item::Reject(Reject {
                        source: source.clone(),
                        line: n,
                        reason,
                        raw: clip(&serde_json::Value::Object(obj).to_string()),
                    }),
                },
                other => Item::Reject(Reject {
                    source: source.clone(),
                    line: n,
                    reason: "not a JSON object".into(),
                    raw: clip(&other.to_string()),
                }),
            });
        }
        if !batch.is_empty() {
            tx.send(batch)
                .await
                .map_err(|_| "the loader stopped".to_string())?;
        }
        let next = src
            .next
            .as_ref()
            .and_then(|k| body.get(k))
            .and_then(|v| match v {
                serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
                serde_json::Value::Number(x) => Some(x.to_string()),
                _ => None,
            });
        match (next, &src.page_param) {
            (Some(c), _) => cursor = Some(c),
            (None, Some(_)) if !empty && src.next.is_none() => {}
            _ => break,
        }
        page += 1;
    }
    Ok(())
}

/// Creates the target and rejects tables when missing.
async fn ensure_tables(
    c: &(impl ConnectionTrait + sea_orm::TransactionTrait),
    table: &str,
) -> Result<(), sea_orm::DbErr> {
    let pg = c.get_database_backend() == DbBackend::Postgres;
    let (ts, json) = if pg {
        ("TIMESTAMPTZ", "JSONB")
    } else {
        ("TEXT", "TEXT")
    };
    let t = q(table);
    let r = q(&format!("{table}_rejects"));
    let st = q(&format!("{table}_staged"));
    let cols = format!(
        "type TEXT NOT NULL, event TEXT, user_id TEXT, anonymous_id TEXT, \
         \"timestamp\" {ts} NOT NULL, original_timestamp {ts} NOT NULL, sent_at {ts}, received_at {ts}, properties {json} NOT NULL, context {json} NOT NULL, \
         interval_start {ts} NOT NULL, interval_end {ts} NOT NULL, source TEXT NOT NULL, loaded_at {ts} NOT NULL"
    );
    let creates = [
        format!("CREATE TABLE IF NOT EXISTS {t} (message_id TEXT PRIMARY KEY, {cols})"),
        // Every interval's events as its files hold them; the table is, per message id,
        // the one of the earliest interval (see `load`).
        format!(
            "CREATE TABLE IF NOT EXISTS {st} (message_id TEXT NOT NULL, {cols}, PRIMARY KEY (message_id, interval_start))"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {st} (interval_start)",
            q(&format!("{table}_staged_interval_idx"))
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {t} (interval_start)",
            q(&format!("{table}_interval_idx"))
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (file TEXT PRIMARY KEY, interval_start {ts} NOT NULL, loaded_at {ts} NOT NULL)",
            q(&format!("{table}_files"))
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {r} (source TEXT NOT NULL, line BIGINT NOT NULL, reason TEXT NOT NULL, raw TEXT NOT NULL, interval_start {ts} NOT NULL, loaded_at {ts} NOT NULL)"
        ),
    ];
    crate::kinds::env::ensure_tables(c, &creates, &[]).await
}

fn v_opt(s: &Option<String>) -> SimpleExpr {
    Expr::value(Value::String(s.clone()))
}

/// Inserts an interval's events into the staging table (one row per message id and
/// interval; a repeated message id of the same interval is skipped). The table is
/// filled from the stage at the end of the load (see [`promote`]).
async fn insert_events(
    c: &impl ConnectionTrait,
    table: &str,
    events: &[(Event, String)],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    insert_rows(c, &format!("{table}_staged"), events, start, end, now).await
}

/// Copies an interval's staged events into the table in one statement: a message id
/// already there is replaced only by an earlier interval's event.
async fn promote(
    c: &impl ConnectionTrait,
    table: &str,
    start: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    let b = c.get_database_backend();
    let p = crate::kinds::dialect::ph(b, 1);
    let t = q(table);
    let cols = EVENT_COLUMNS.map(q).join(", ");
    let set = EVENT_COLUMNS[1..]
        .iter()
        .map(|c| format!("{} = excluded.{}", q(c), q(c)))
        .collect::<Vec<_>>()
        .join(", ");
    c.execute_raw(sea_orm::Statement::from_sql_and_values(
        b,
        format!(
            "INSERT INTO {t} ({cols}) SELECT {cols} FROM {} WHERE interval_start = {p} \
             ON CONFLICT (message_id) DO UPDATE SET {set} WHERE {t}.interval_start > excluded.interval_start",
            q(&format!("{table}_staged"))
        ),
        [Value::from(start)],
    ))
    .await?;
    Ok(())
}

/// The columns of an events table, in order.
const EVENT_COLUMNS: [&str; 15] = [
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
];

/// One multi-row INSERT into a staging table; a repeated message id of the same
/// interval is skipped.
async fn insert_rows(
    c: &impl ConnectionTrait,
    table: &str,
    events: &[(Event, String)],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    if events.is_empty() {
        return Ok(());
    }
    // JSONB on Postgres takes a JSON value; SQLite stores the text as it is.
    let pg = c.get_database_backend() == DbBackend::Postgres;
    let json = |text: &str| -> SimpleExpr {
        if pg {
            Expr::value(serde_json::from_str::<serde_json::Value>(text).unwrap_or_default())
        } else {
            Expr::value(text.to_string())
        }
    };
    let mut ins = Query::insert();
    ins.into_table(Alias::new(table))
        .columns(EVENT_COLUMNS.map(Alias::new));
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
            json(&e.properties),
            json(&e.context),
            Expr::value(start),
            Expr::value(end),
            Expr::value(source.clone()),
            Expr::value(now),
        ]);
    }
    ins.on_conflict(
        OnConflict::columns([Alias::new("message_id"), Alias::new("interval_start")])
            .do_nothing()
            .to_owned(),
    );
    let stmt = c.get_database_backend().build(&ins);
    c.execute_raw(stmt).await?;
    Ok(())
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

/// Records which files an interval loaded (replacing what it recorded before).
async fn write_ledger(
    c: &impl ConnectionTrait,
    table: &str,
    files: &[String],
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    let name = format!("{table}_files");
    let mut del = Query::delete();
    del.from_table(Alias::new(name.clone()))
        .and_where(ExprTrait::eq(
            Expr::col(Alias::new("interval_start")),
            start,
        ));
    c.execute_raw(c.get_database_backend().build(&del)).await?;
    for chunk in files.chunks(BATCH) {
        let mut ins = Query::insert();
        ins.into_table(Alias::new(name.clone()))
            .columns(["file", "interval_start", "loaded_at"].map(Alias::new));
        for f in chunk {
            ins.values_panic([Expr::value(f.clone()), Expr::value(start), Expr::value(now)]);
        }
        ins.on_conflict(
            OnConflict::column(Alias::new("file"))
                .update_columns([Alias::new("interval_start"), Alias::new("loaded_at")])
                .to_owned(),
        );
        c.execute_raw(c.get_database_backend().build(&ins)).await?;
    }
    Ok(())
}

/// The temporary table of message ids whose owner must be found again.
fn affected(b: DbBackend) -> &'static str {
    if b == DbBackend::Postgres {
        "pg_temp.weft_ingest_affected"
    } else {
        "temp.weft_ingest_affected"
    }
}

/// Removes an interval's contribution: its staged events, its rejects, and its rows of
/// the table — remembering those message ids, since another interval's files may hold
/// them too (see [`rederive`]).
async fn clear_interval(
    c: &impl ConnectionTrait,
    table: &str,
    start: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    let b = c.get_database_backend();
    let aff = affected(b);
    let p = crate::kinds::dialect::ph(b, 1);
    c.execute_unprepared(&format!("DROP TABLE IF EXISTS {aff}"))
        .await?;
    c.execute_unprepared("CREATE TEMP TABLE weft_ingest_affected (message_id TEXT PRIMARY KEY)")
        .await?;
    let t = q(table);
    for sql in [
        format!("INSERT INTO {aff} SELECT message_id FROM {t} WHERE interval_start = {p}"),
        format!("DELETE FROM {t} WHERE interval_start = {p}"),
        format!(
            "DELETE FROM {} WHERE interval_start = {p}",
            q(&format!("{table}_staged"))
        ),
        format!(
            "DELETE FROM {} WHERE interval_start = {p}",
            q(&format!("{table}_rejects"))
        ),
    ] {
        c.execute_raw(sea_orm::Statement::from_sql_and_values(
            b,
            sql,
            [Value::from(start)],
        ))
        .await?;
    }
    Ok(())
}

/// Gives each message id the interval cleared lost back to the earliest other interval
/// whose files hold it. With [`insert_rows`] this keeps the rule: the table holds, per
/// message id, the event of the earliest interval whose current files contain it — so
/// re-runs in any order give the table that running every interval once would.
async fn rederive(c: &impl ConnectionTrait, table: &str) -> Result<(), sea_orm::DbErr> {
    let b = c.get_database_backend();
    let aff = affected(b);
    let (t, st) = (q(table), q(&format!("{table}_staged")));
    let cols = EVENT_COLUMNS
        .iter()
        .map(|c| format!("s.{}", q(c)))
        .collect::<Vec<_>>()
        .join(", ");
    c.execute_unprepared(&format!(
        "INSERT INTO {t} SELECT {cols} FROM {st} s WHERE s.message_id IN (SELECT message_id FROM {aff}) \
         AND NOT EXISTS (SELECT 1 FROM {t} x WHERE x.message_id = s.message_id) \
         AND s.interval_start = (SELECT MIN(s2.interval_start) FROM {st} s2 WHERE s2.message_id = s.message_id)"
    ))
    .await?;
    c.execute_unprepared(&format!("DROP TABLE IF EXISTS {aff}"))
        .await?;
    Ok(())
}

/// Rows of the table that an interval owns.
async fn owned_by(
    c: &impl ConnectionTrait,
    table: &str,
    start: DateTime<Utc>,
) -> Result<u64, sea_orm::DbErr> {
    let b = c.get_database_backend();
    let p = crate::kinds::dialect::ph(b, 1);
    let row = c
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            b,
            format!(
                "SELECT COUNT(*) FROM {} WHERE interval_start = {p}",
                q(table)
            ),
            [Value::from(start)],
        ))
        .await?;
    Ok(row
        .and_then(|r| r.try_get_by_index::<i64>(0).ok())
        .map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

/// Tables made before the staging table existed: their rows become its first content,
/// so earlier intervals keep their claims.
async fn seed_staged(c: &impl ConnectionTrait, table: &str) -> Result<(), sea_orm::DbErr> {
    let b = c.get_database_backend();
    let (t, st) = (q(table), q(&format!("{table}_staged")));
    let any = |sql: String| async move {
        c.query_one_raw(sea_orm::Statement::from_string(b, sql))
            .await
            .map(|r| r.is_some())
    };
    if !any(format!("SELECT 1 FROM {st} LIMIT 1")).await?
        && any(format!("SELECT 1 FROM {t} LIMIT 1")).await?
    {
        c.execute_unprepared(&format!("INSERT INTO {st} SELECT * FROM {t}"))
            .await?;
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
    if let Some(src) = &spec.http {
        let url = match ctx.render(&src.url) {
            Ok(u) => u,
            Err(e) => return failure(e),
        };
        let token = match src
            .token
            .as_deref()
            .map(crate::config::expand_env)
            .transpose()
        {
            Ok(t) => t,
            Err(e) => return failure(format!("token: {e}")),
        };
        return load_and_report(ctx, spec, vec![Feed::Http(src.clone(), url, token)], None).await;
    }
    if spec.drop_zone {
        return drop_zone(ctx, spec).await;
    }
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
    if files.is_empty() {
        if spec.allow_empty {
            ctx.log
                .line(&format!(
                    "[weft] no file matches {pattern}; nothing to load (allow_empty)"
                ))
                .await;
            return TryOutcome::success();
        }
        return failure(format!(
            "no file matches \"{pattern}\" (relative to {}); set source.allow_empty = true if that is normal",
            base.display()
        ));
    }
    let feeds = files.into_iter().map(Feed::File).collect();
    load_and_report(ctx, spec, feeds, None).await
}

/// A drop zone: the files of a folder, each loaded once. The ledger `<table>_files`
/// records which interval loaded which file; a re-run of an interval loads its files
/// again plus any new ones.
async fn drop_zone(ctx: &mut RunContext<'_>, spec: &IngestSpec) -> TryOutcome {
    let dir_name = match ctx.render(&spec.path) {
        Ok(p) => p,
        Err(e) => return failure(e),
    };
    let base = ctx.base_dir();
    let dir = if Path::new(&dir_name).is_absolute() {
        PathBuf::from(&dir_name)
    } else {
        base.join(&dir_name)
    };
    // The folder is listed off the async workers.
    let listing = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<PathBuf>> {
        // Hidden and partial files are still being written: leave them for the next run.
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    !n.starts_with('.') && !n.ends_with(".tmp") && !n.ends_with(".part")
                })
            })
            .collect();
        files.sort();
        Ok(files)
    })
    .await;
    let files = match listing {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return failure(format!("cannot read the drop zone \"{dir_name}\": {e}")),
        Err(e) => return failure(format!("listing the drop zone \"{dir_name}\" failed: {e}")),
    };
    let conn = match ctx.warehouses.get(&spec.connection).await {
        Ok(c) => c,
        Err(e) => return failure(e),
    };
    let start = match DateTime::parse_from_rfc3339(&ctx.tmpl.data_interval_start) {
        Ok(s) => s.with_timezone(&Utc),
        Err(_) => return failure("the run has no valid data interval"),
    };
    let taken = match ledger(&conn, &spec.table).await {
        Ok(t) => t,
        Err(e) => return failure(format!("drop zone ledger of \"{}\": {e}", spec.table)),
    };
    let name_of = |p: &Path| p.strip_prefix(&base).unwrap_or(p).display().to_string();
    let mine: Vec<PathBuf> = files
        .into_iter()
        .filter(|p| match taken.get(&name_of(p)) {
            None => true,
            Some(loaded_for) => *loaded_for == start,
        })
        .collect();
    if mine.is_empty() && !spec.allow_empty {
        return failure(format!(
            "no new file in the drop zone \"{dir_name}\"; set source.allow_empty = true if that is normal"
        ));
    }
    let names: Vec<String> = mine.iter().map(|p| name_of(p)).collect();
    ctx.log
        .line(&format!(
            "[weft] drop zone {dir_name}: {} file(s) for this interval",
            names.len()
        ))
        .await;
    load_and_report(
        ctx,
        spec,
        mine.into_iter().map(Feed::File).collect(),
        Some(names),
    )
    .await
}

/// File -> interval start of the files a drop zone already loaded.
async fn ledger(
    c: &DatabaseConnection,
    table: &str,
) -> Result<std::collections::HashMap<String, DateTime<Utc>>, sea_orm::DbErr> {
    ensure_tables(c, table).await?;
    let rows = c
        .query_all_raw(sea_orm::Statement::from_string(
            c.get_database_backend(),
            format!(
                "SELECT file, interval_start FROM {}",
                q(&format!("{table}_files"))
            ),
        ))
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let f = r.try_get_by_index::<String>(0).ok()?;
            let t = r.try_get_by_index::<DateTime<Utc>>(1).ok().or_else(|| {
                r.try_get_by_index::<String>(1).ok().and_then(|s| {
                    DateTime::parse_from_rfc3339(&s)
                        .ok()
                        .map(|d| d.with_timezone(&Utc))
                })
            })?;
            Some((f, t))
        })
        .collect())
}

/// Where events come from.
enum Feed {
    File(PathBuf),
    Http(super::HttpEventSource, String, Option<String>),
}

async fn load_and_report(
    ctx: &mut RunContext<'_>,
    spec: &IngestSpec,
    feeds: Vec<Feed>,
    ledger_files: Option<Vec<String>>,
) -> TryOutcome {
    let (start, end) = match (
        DateTime::parse_from_rfc3339(&ctx.tmpl.data_interval_start),
        DateTime::parse_from_rfc3339(&ctx.tmpl.data_interval_end),
    ) {
        (Ok(s), Ok(e)) => (s.with_timezone(&Utc), e.with_timezone(&Utc)),
        _ => return failure("the run has no valid data interval"),
    };
    let conn = match ctx.warehouses.get(&spec.connection).await {
        Ok(c) => c,
        Err(e) => return failure(e),
    };
    ctx.log
        .line(&format!(
            "[weft] loading {} source(s) into \"{}\" for [{}, {})",
            feeds.len(),
            spec.table,
            ctx.tmpl.data_interval_start,
            ctx.tmpl.data_interval_end
        ))
        .await;
    let started = Instant::now();
    match load(&conn, ctx, spec, feeds, ledger_files, start, end).await {
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
                None => TryOutcome::success(),
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
    feeds: Vec<Feed>,
    ledger_files: Option<Vec<String>>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<(Counts, Option<String>), String> {
    ensure_tables(conn, &spec.table)
        .await
        .map_err(|e| e.to_string())?;
    seed_staged(conn, &spec.table)
        .await
        .map_err(|e| e.to_string())?;
    let now = Utc::now();
    let base = ctx.base_dir();
    let mut counts = Counts::default();
    let mut rejects: Vec<Reject> = Vec::new();
    let txn = conn.begin().await.map_err(|e| e.to_string())?;
    clear_interval(&txn, &spec.table, start)
        .await
        .map_err(|e| e.to_string())?;
    for feed in feeds {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Item>>(4);
        let (display, reader) = match feed {
            Feed::File(path) => {
                let display = path
                    .strip_prefix(&base)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                let format = format_of(&path, spec.format)?;
                let d = display.clone();
                (
                    display,
                    tokio::task::spawn_blocking(move || read_file(&path, &d, format, &tx)),
                )
            }
            Feed::Http(src, url, token) => {
                let display = url.split('?').next().unwrap_or(&url).to_string();
                (display, tokio::spawn(fetch_http(src, url, token, tx)))
            }
        };
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
            insert_events(&txn, &spec.table, &events, start, end, now)
                .await
                .map_err(|e| e.to_string())?;
            counts.duplicates += events.len() as u64;
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
        clear_interval(&txn, &spec.table, start)
            .await
            .map_err(|e| e.to_string())?;
        rederive(&txn, &spec.table)
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
    promote(&txn, &spec.table, start)
        .await
        .map_err(|e| e.to_string())?;
    rederive(&txn, &spec.table)
        .await
        .map_err(|e| e.to_string())?;
    // Loaded: the rows this interval owns now; the rest of its events were duplicates.
    counts.loaded = owned_by(&txn, &spec.table, start)
        .await
        .map_err(|e| e.to_string())?;
    counts.duplicates = counts.duplicates.saturating_sub(counts.loaded);
    insert_rejects(&txn, &spec.table, &rejects, start, now)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(files) = &ledger_files {
        write_ledger(&txn, &spec.table, files, start, now)
            .await
            .map_err(|e| e.to_string())?;
    }
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
    fn raw_lines_read_like_parsed_objects() {
        let line = r#"{"message_id": 42, "timestamp": "2026-01-01T10:00:00Z", "sent_at": "2026-01-01T10:05:00Z", "received_at": "2026-01-01T10:00:30Z", "properties": {"a": [1, 2]}, "context": "{\"ip\": \"x\"}", "user_id": null}"#;
        let e = event_from_line(line).expect("valid");
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let o = event_from(v.as_object().expect("object")).expect("valid");
        assert_eq!(
            (e.message_id.as_str(), e.timestamp, e.user_id.clone()),
            (o.message_id.as_str(), o.timestamp, o.user_id.clone())
        );
        assert_eq!(e.message_id, "42");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&e.properties).expect("p"),
            serde_json::json!({"a": [1, 2]})
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&e.context).expect("c"),
            serde_json::json!({"ip": "x"})
        );
        for (bad, why) in [
            ("not json", "bad JSON"),
            ("[1, 2]", "not a JSON object"),
            (r#"{"message_id": "m"}"#, "missing timestamp"),
            (
                r#"{"message_id": "m", "timestamp": "2026-01-01T10:00:00Z", "properties": 3}"#,
                "properties must be a JSON object",
            ),
        ] {
            let err = event_from_line(bad).expect_err(bad);
            assert!(err.starts_with(why), "{bad}: {err}");
        }
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
