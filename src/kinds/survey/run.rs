//! `survey_sync`: survey responses from a Typeform- or Zigpoll-style API, or a CSV
//! export, into the warehouse; then NPS (and CSAT) per form for the run's window.
//!
//! Tables (created when missing; one set shared by every form, keyed by provider and
//! form):
//! - `survey_responses`: one row per response token, upserted (a re-sync replaces the
//!   row, never duplicates it); the NPS/CSAT score and the user id are lifted out of
//!   the answers for easy joins.
//! - `survey_answers`: one row per (response, field) with typed value columns
//!   (`number_value`, `text_value`, `boolean_value`, `date_value`); a re-synced
//!   response's answers are replaced.
//! - `survey_rejects`: malformed items with the reason, one row per item.
//! - `survey_sync_state`: the per-form high-water mark (latest `submitted_at` of a
//!   complete sync); the next sync asks only for responses from then on.
//! - `survey_metrics`: one row per (form, period end, segment): responses, promoters,
//!   passives, detractors, nps, nps_se, CI, csat.
//!
//! Each page is written in its own transaction as it arrives, and the high-water mark
//! moves only after the last page: a sync that fails half-way keeps what it stored, and
//! the next one fetches the same range again without duplicating anything.

use chrono::{DateTime, NaiveDateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict, Query, SimpleExpr};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait, Value};
use serde_json::{Map, Value as Json};

use super::{MetricsWindow, SurveyProvider, SurveySpec};
use crate::config::expand_env;
use crate::dag::template::rfc3339;
use crate::db::tasks::TryOutcome;
use crate::kinds::dialect::{ph, time_col, time_param};
use crate::kinds::env::{RunContext, failure};
use crate::kinds::fetch::{Auth, get_json};
use crate::kinds::warehouse::Migration;
use crate::stats;

/// One typed answer to one field.
#[derive(Debug, Clone, Default, PartialEq)]
struct Answer {
    /// The field's `ref` when it has one, else its id (the CSV column for exports).
    field: String,
    field_id: Option<String>,
    value_type: String,
    number: Option<f64>,
    text: Option<String>,
    boolean: Option<bool>,
    date: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct Response {
    token: String,
    submitted_at: DateTime<Utc>,
    landed_at: Option<DateTime<Utc>>,
    hidden: Map<String, Json>,
    user_id: Option<String>,
    answers: Vec<Answer>,
    nps: Option<u8>,
    csat: Option<u8>,
}

#[derive(Debug, Clone)]
struct Reject {
    key: String,
    source: String,
    reason: String,
    raw: String,
}

fn clip(s: &str) -> String {
    if s.len() <= 2000 {
        return s.to_string();
    }
    let mut end = 2000;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC, as exports write it) or epoch milliseconds.
fn parse_time(v: &Json) -> Option<DateTime<Utc>> {
    match v {
        Json::String(s) => {
            let s = s.trim();
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .ok()
                .or_else(|| {
                    // As SQLite keeps times: `2026-03-01 10:00:00+00:00`.
                    ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f %:z"]
                        .iter()
                        .find_map(|f| DateTime::parse_from_str(s, f).ok())
                        .map(|t| t.with_timezone(&Utc))
                })
                .or_else(|| {
                    [
                        "%Y-%m-%d %H:%M:%S",
                        "%Y-%m-%dT%H:%M:%S",
                        "%Y-%m-%d %H:%M:%S%.f",
                    ]
                    .iter()
                    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
                    .map(|n| n.and_utc())
                })
        }
        Json::Number(n) => n.as_i64().and_then(DateTime::from_timestamp_millis),
        _ => None,
    }
}

fn scalar_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Null => None,
        other => Some(other.to_string()),
    }
}

/// A whole number in `lo..=hi`.
fn score(a: &Answer, lo: u8, hi: u8, what: &str) -> Result<u8, String> {
    let n = a
        .number
        .or_else(|| a.text.as_deref().and_then(|t| t.trim().parse::<f64>().ok()));
    match n {
        Some(x) if x.fract() == 0.0 && x >= f64::from(lo) && x <= f64::from(hi) => Ok(x as u8),
        _ => Err(format!(
            "{what} field \"{}\" holds {}, not a whole number {lo}-{hi}",
            a.field,
            a.number
                .map(|x| x.to_string())
                .or_else(|| a.text.clone())
                .or_else(|| a.boolean.map(|b| b.to_string()))
                .unwrap_or_else(|| "nothing".into())
        )),
    }
}

/// Lifts the user id and the scores out of a parsed response.
fn finish(
    spec: &SurveySpec,
    token: String,
    submitted_at: DateTime<Utc>,
    landed_at: Option<DateTime<Utc>>,
    hidden: Map<String, Json>,
    answers: Vec<Answer>,
) -> Result<Response, String> {
    let find = |name: &Option<String>| {
        name.as_ref().and_then(|n| {
            answers
                .iter()
                .find(|a| &a.field == n || a.field_id.as_ref() == Some(n))
        })
    };
    let nps = find(&spec.nps_field)
        .map(|a| score(a, 0, 10, "NPS"))
        .transpose()?;
    let csat = find(&spec.csat_field)
        .map(|a| score(a, 1, 5, "CSAT"))
        .transpose()?;
    let user_id = hidden.get(&spec.user_field).and_then(scalar_text);
    Ok(Response {
        token,
        submitted_at,
        landed_at,
        hidden,
        user_id,
        answers,
        nps,
        csat,
    })
}

fn need_token(obj: &Map<String, Json>, keys: &[&str]) -> Result<String, String> {
    keys.iter()
        .find_map(|k| obj.get(*k).and_then(scalar_text))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("no response id ({})", keys.join(" or ")))
}

fn need_time(obj: &Map<String, Json>, key: &str) -> Result<DateTime<Utc>, String> {
    match obj.get(key) {
        None | Some(Json::Null) => Err(format!("no \"{key}\"")),
        Some(v) => parse_time(v).ok_or_else(|| format!("\"{key}\" {v} is not a time")),
    }
}

/// A Typeform-style response item.
fn typeform_item(spec: &SurveySpec, obj: &Map<String, Json>) -> Result<Response, String> {
    let token = need_token(obj, &["token", "response_id"])?;
    let submitted_at = need_time(obj, "submitted_at")?;
    let landed_at = obj.get("landed_at").and_then(parse_time);
    let hidden = match obj.get("hidden") {
        None | Some(Json::Null) => Map::new(),
        Some(Json::Object(h)) => h.clone(),
        Some(_) => return Err("\"hidden\" is not an object".into()),
    };
    let items = match obj.get("answers") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(a)) => a.clone(),
        Some(_) => return Err("\"answers\" is not a list".into()),
    };
    let mut answers = Vec::with_capacity(items.len());
    for (i, a) in items.iter().enumerate() {
        let n = i + 1;
        let Json::Object(a) = a else {
            return Err(format!("answer {n} is not an object"));
        };
        let field = a.get("field").and_then(Json::as_object);
        let field_id = field.and_then(|f| f.get("id")).and_then(scalar_text);
        let field_ref = field.and_then(|f| f.get("ref")).and_then(scalar_text);
        let Some(name) = field_ref.or_else(|| field_id.clone()) else {
            return Err(format!("answer {n} has no field id or ref"));
        };
        let Some(ty) = a.get("type").and_then(Json::as_str) else {
            return Err(format!("answer {n} (field \"{name}\") has no type"));
        };
        let value = a.get(ty).ok_or_else(|| {
            format!("answer {n} (field \"{name}\") has type \"{ty}\" but no \"{ty}\" value")
        })?;
        let mut ans = Answer {
            field: name.clone(),
            field_id,
            value_type: ty.to_string(),
            ..Answer::default()
        };
        let bad = || format!("answer {n} (field \"{name}\"): \"{ty}\" value {value} is malformed");
        match ty {
            "number" => ans.number = Some(value.as_f64().ok_or_else(bad)?),
            "boolean" => ans.boolean = Some(value.as_bool().ok_or_else(bad)?),
            "date" => ans.date = Some(value.as_str().ok_or_else(bad)?.to_string()),
            "choice" => {
                ans.text = Some(
                    value
                        .get("label")
                        .or_else(|| value.get("other"))
                        .and_then(Json::as_str)
                        .ok_or_else(bad)?
                        .to_string(),
                )
            }
            "choices" => {
                let labels = value
                    .get("labels")
                    .and_then(Json::as_array)
                    .ok_or_else(bad)?;
                ans.text = Some(Json::Array(labels.clone()).to_string());
            }
            _ => ans.text = Some(scalar_text(value).ok_or_else(bad)?),
        }
        answers.push(ans);
    }
    finish(spec, token, submitted_at, landed_at, hidden, answers)
}

/// A typed answer from a loosely typed value (Zigpoll responses, CSV cells).
fn loose_answer(field: String, value: &Json) -> Answer {
    let mut a = Answer {
        field,
        ..Answer::default()
    };
    match value {
        Json::Number(n) => {
            a.value_type = "number".into();
            a.number = n.as_f64();
        }
        Json::Bool(b) => {
            a.value_type = "boolean".into();
            a.boolean = Some(*b);
        }
        Json::String(s) => match s.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => {
                a.value_type = "number".into();
                a.number = Some(x);
                a.text = Some(s.clone());
            }
            _ => {
                a.value_type = "text".into();
                a.text = Some(s.clone());
            }
        },
        other => {
            a.value_type = "choices".into();
            a.text = Some(other.to_string());
        }
    }
    a
}

/// A Zigpoll-style response item: `_id`, `createdAt`, `metadata` (hidden fields),
/// and either `answers: [{slideId, response}]` or one `slideId` + `response`.
fn zigpoll_item(spec: &SurveySpec, obj: &Map<String, Json>) -> Result<Response, String> {
    let token = need_token(obj, &["_id", "id", "responseId"])?;
    let submitted_at = need_time(obj, "createdAt")?;
    let mut hidden = match obj.get("metadata") {
        None | Some(Json::Null) => Map::new(),
        Some(Json::Object(h)) => h.clone(),
        Some(_) => return Err("\"metadata\" is not an object".into()),
    };
    if let Some(p) = obj.get("participantId").filter(|p| !p.is_null()) {
        hidden.entry("participant_id").or_insert_with(|| p.clone());
    }
    let field_of = |a: &Map<String, Json>| {
        ["slideId", "slide", "field", "question"]
            .iter()
            .find_map(|k| a.get(*k).and_then(scalar_text))
    };
    let mut answers = Vec::new();
    match obj.get("answers") {
        Some(Json::Array(items)) => {
            for (i, a) in items.iter().enumerate() {
                let Json::Object(a) = a else {
                    return Err(format!("answer {} is not an object", i + 1));
                };
                let field =
                    field_of(a).ok_or_else(|| format!("answer {} has no slideId", i + 1))?;
                let value = a
                    .get("response")
                    .or_else(|| a.get("value"))
                    .unwrap_or(&Json::Null);
                if !value.is_null() {
                    answers.push(loose_answer(field, value));
                }
            }
        }
        Some(_) => return Err("\"answers\" is not a list".into()),
        None => {
            let field = field_of(obj).ok_or("no slideId for the response")?;
            match obj.get("response") {
                None | Some(Json::Null) => return Err("no \"response\" value".into()),
                Some(v) => answers.push(loose_answer(field, v)),
            }
        }
    }
    finish(spec, token, submitted_at, None, hidden, answers)
}

/// Columns of a CSV export with a fixed meaning; every other column is an answer.
const CSV_TOKEN: &[&str] = &["token", "response_id", "#", "Response ID"];
const CSV_SUBMITTED: &[&str] = &["submitted_at", "Submit Date (UTC)", "created_at"];
const CSV_LANDED: &[&str] = &["landed_at", "Start Date (UTC)"];

fn csv_row(
    spec: &SurveySpec,
    headers: &csv::StringRecord,
    rec: &csv::StringRecord,
) -> Result<Response, String> {
    let get = |names: &[&str]| {
        headers
            .iter()
            .position(|h| names.contains(&h.trim()))
            .and_then(|i| rec.get(i))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let token = get(CSV_TOKEN)
        .ok_or("no response id (a token or response_id column)")?
        .to_string();
    let submitted = get(CSV_SUBMITTED).ok_or("no submitted_at")?;
    let submitted_at = parse_time(&Json::String(submitted.into()))
        .ok_or_else(|| format!("submitted_at \"{submitted}\" is not a time"))?;
    let landed_at = get(CSV_LANDED).and_then(|s| parse_time(&Json::String(s.into())));
    let mut hidden = Map::new();
    let mut answers = Vec::new();
    for (h, v) in headers.iter().zip(rec.iter()) {
        let h = h.trim();
        let v = v.trim();
        if v.is_empty()
            || CSV_TOKEN.contains(&h)
            || CSV_SUBMITTED.contains(&h)
            || CSV_LANDED.contains(&h)
        {
            continue;
        }
        if h == spec.user_field || h.starts_with("hidden.") {
            hidden.insert(
                h.trim_start_matches("hidden.").to_string(),
                Json::String(v.into()),
            );
        } else {
            answers.push(loose_answer(h.to_string(), &Json::String(v.into())));
        }
    }
    finish(spec, token, submitted_at, landed_at, hidden, answers)
}

/// Parses one page of items into responses and rejects.
fn parse_items(spec: &SurveySpec, items: &[Json], source: &str) -> (Vec<Response>, Vec<Reject>) {
    let mut ok = Vec::with_capacity(items.len());
    let mut bad = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let parsed = match item {
            Json::Object(obj) => match spec.provider {
                SurveyProvider::Zigpoll => zigpoll_item(spec, obj),
                _ => typeform_item(spec, obj),
            },
            _ => Err("not a JSON object".into()),
        };
        match parsed {
            Ok(r) => ok.push(r),
            Err(reason) => bad.push(reject(item, &format!("{source} item {}", i + 1), reason)),
        }
    }
    (ok, bad)
}

fn reject(item: &Json, source: &str, reason: String) -> Reject {
    use sha2::Digest;
    let raw = item.to_string();
    let key = item
        .get("token")
        .or_else(|| item.get("_id"))
        .and_then(scalar_text)
        .unwrap_or_else(|| {
            let h = sha2::Sha256::digest(raw.as_bytes());
            h.iter().take(12).map(|b| format!("{b:02x}")).collect()
        });
    Reject {
        key,
        source: source.to_string(),
        reason,
        raw: clip(&raw),
    }
}

/// The warehouse tables of the survey kind (see `kinds::warehouse`).
pub static MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    statements: |pg| {
        let (ts, json, boolean) = if pg {
            ("TIMESTAMPTZ", "JSONB", "BOOLEAN")
        } else {
            ("TEXT", "TEXT", "INTEGER")
        };
        vec![
        format!(
            "CREATE TABLE IF NOT EXISTS survey_responses (provider TEXT NOT NULL, form_id TEXT NOT NULL, token TEXT NOT NULL, \
             submitted_at {ts} NOT NULL, landed_at {ts}, user_id TEXT, hidden {json} NOT NULL, nps_score INTEGER, csat_score INTEGER, \
             answers INTEGER NOT NULL, synced_at {ts} NOT NULL, PRIMARY KEY (provider, form_id, token))"
        ),
        "CREATE INDEX IF NOT EXISTS survey_responses_submitted_idx ON survey_responses (provider, form_id, submitted_at)".to_string(),
        format!(
            "CREATE TABLE IF NOT EXISTS survey_answers (provider TEXT NOT NULL, form_id TEXT NOT NULL, token TEXT NOT NULL, field TEXT NOT NULL, \
             field_id TEXT, value_type TEXT NOT NULL, number_value DOUBLE PRECISION, text_value TEXT, boolean_value {boolean}, date_value TEXT, \
             PRIMARY KEY (provider, form_id, token, field))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS survey_rejects (provider TEXT NOT NULL, form_id TEXT NOT NULL, item_key TEXT NOT NULL, source TEXT NOT NULL, \
             reason TEXT NOT NULL, raw TEXT NOT NULL, synced_at {ts} NOT NULL, PRIMARY KEY (provider, form_id, item_key))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS survey_sync_state (provider TEXT NOT NULL, form_id TEXT NOT NULL, high_water {ts}, \
             last_sync_at {ts} NOT NULL, PRIMARY KEY (provider, form_id))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS survey_metrics (provider TEXT NOT NULL, form_id TEXT NOT NULL, segment TEXT NOT NULL, segment_value TEXT NOT NULL, \
             period_start {ts}, period_end {ts} NOT NULL, responses BIGINT NOT NULL, promoters BIGINT NOT NULL, passives BIGINT NOT NULL, \
             detractors BIGINT NOT NULL, nps DOUBLE PRECISION, nps_se DOUBLE PRECISION, nps_ci_low DOUBLE PRECISION, nps_ci_high DOUBLE PRECISION, \
             csat_responses BIGINT NOT NULL, csat DOUBLE PRECISION, computed_at {ts} NOT NULL)"
        ),
    ]
    },
    add_columns: &[],
}];

fn json_expr(pg: bool, v: Json) -> SimpleExpr {
    if pg {
        Expr::value(v)
    } else {
        Expr::value(v.to_string())
    }
}

/// Columns of `survey_responses`: the key (provider, form_id, token), then the rest.
const RESPONSE_COLUMNS: [&str; 11] = [
    "provider",
    "form_id",
    "token",
    "submitted_at",
    "landed_at",
    "user_id",
    "hidden",
    "nps_score",
    "csat_score",
    "answers",
    "synced_at",
];

/// Stores one page in one transaction: responses upserted by token, their answers
/// replaced, rejects recorded.
async fn store_page(
    c: &DatabaseConnection,
    provider: &str,
    form: &str,
    responses: &[Response],
    rejects: &[Reject],
) -> Result<(), sea_orm::DbErr> {
    let pg = c.get_database_backend() == DbBackend::Postgres;
    let b = c.get_database_backend();
    let now = Utc::now();
    let txn = c.begin().await?;
    // The same token twice in one page: the last one wins (an upsert cannot touch a
    // row twice in one statement on Postgres).
    let mut unique: Vec<&Response> = Vec::with_capacity(responses.len());
    let mut at: std::collections::HashMap<&str, usize> =
        std::collections::HashMap::with_capacity(responses.len());
    for r in responses {
        match at.get(r.token.as_str()) {
            Some(&i) => unique[i] = r,
            None => {
                at.insert(&r.token, unique.len());
                unique.push(r);
            }
        }
    }
    for chunk in unique.chunks(500) {
        let mut ins = Query::insert();
        ins.into_table(Alias::new("survey_responses"))
            .columns(RESPONSE_COLUMNS.map(Alias::new));
        for r in chunk {
            ins.values_panic([
                Expr::value(provider),
                Expr::value(form),
                Expr::value(r.token.clone()),
                Expr::value(r.submitted_at),
                Expr::value(r.landed_at),
                Expr::value(r.user_id.clone()),
                json_expr(pg, Json::Object(r.hidden.clone())),
                Expr::value(r.nps.map(i32::from)),
                Expr::value(r.csat.map(i32::from)),
                Expr::value(r.answers.len() as i32),
                Expr::value(now),
            ]);
        }
        ins.on_conflict(
            // The key is the first three columns; a re-sync replaces the rest.
            OnConflict::columns(RESPONSE_COLUMNS[..3].iter().map(|c| Alias::new(*c)))
                .update_columns(RESPONSE_COLUMNS[3..].iter().map(|c| Alias::new(*c)))
                .to_owned(),
        );
        txn.execute_raw(b.build(&ins)).await?;
        let mut del = Query::delete();
        del.from_table(Alias::new("survey_answers"))
            .and_where(Expr::col(Alias::new("provider")).eq(provider))
            .and_where(Expr::col(Alias::new("form_id")).eq(form))
            .and_where(Expr::col(Alias::new("token")).is_in(chunk.iter().map(|r| r.token.clone())));
        txn.execute_raw(b.build(&del)).await?;
        let answers: Vec<(&Response, &Answer)> = chunk
            .iter()
            .flat_map(|r| {
                // One row per field: a repeated field keeps its last answer.
                let mut seen: Vec<&Answer> = Vec::new();
                for a in &r.answers {
                    match seen.iter().position(|s| s.field == a.field) {
                        Some(i) => seen[i] = a,
                        None => seen.push(a),
                    }
                }
                seen.into_iter().map(move |a| (*r, a))
            })
            .collect();
        for part in answers.chunks(500) {
            let mut ins = Query::insert();
            ins.into_table(Alias::new("survey_answers")).columns(
                [
                    "provider",
                    "form_id",
                    "token",
                    "field",
                    "field_id",
                    "value_type",
                    "number_value",
                    "text_value",
                    "boolean_value",
                    "date_value",
                ]
                .map(Alias::new),
            );
            for (r, a) in part {
                ins.values_panic([
                    Expr::value(provider),
                    Expr::value(form),
                    Expr::value(r.token.clone()),
                    Expr::value(a.field.clone()),
                    Expr::value(a.field_id.clone()),
                    Expr::value(a.value_type.clone()),
                    Expr::value(a.number),
                    Expr::value(a.text.clone()),
                    Expr::value(a.boolean),
                    Expr::value(a.date.clone()),
                ]);
            }
            txn.execute_raw(b.build(&ins)).await?;
        }
    }
    for r in rejects {
        let mut ins = Query::insert();
        ins.into_table(Alias::new("survey_rejects"))
            .columns(
                [
                    "provider",
                    "form_id",
                    "item_key",
                    "source",
                    "reason",
                    "raw",
                    "synced_at",
                ]
                .map(Alias::new),
            )
            .values_panic([
                Expr::value(provider),
                Expr::value(form),
                Expr::value(r.key.clone()),
                Expr::value(r.source.clone()),
                Expr::value(r.reason.clone()),
                Expr::value(r.raw.clone()),
                Expr::value(now),
            ])
            .on_conflict(
                OnConflict::columns(["provider", "form_id", "item_key"].map(Alias::new))
                    .update_columns(["source", "reason", "raw", "synced_at"].map(Alias::new))
                    .to_owned(),
            );
        txn.execute_raw(b.build(&ins)).await?;
    }
    txn.commit().await
}

async fn high_water(
    c: &DatabaseConnection,
    provider: &str,
    form: &str,
) -> Result<Option<DateTime<Utc>>, sea_orm::DbErr> {
    let b = c.get_database_backend();
    let sql = format!(
        "SELECT high_water FROM survey_sync_state WHERE provider = {} AND form_id = {}",
        ph(b, 1),
        ph(b, 2)
    );
    let row = c
        .query_one_raw(Statement::from_sql_and_values(
            b,
            sql,
            [provider.into(), form.into()],
        ))
        .await?;
    Ok(match row {
        None => None,
        Some(r) if b == DbBackend::Postgres => r.try_get_by_index::<Option<DateTime<Utc>>>(0)?,
        Some(r) => r
            .try_get_by_index::<Option<String>>(0)?
            .and_then(|s| parse_time(&Json::String(s))),
    })
}

async fn set_high_water(
    c: &DatabaseConnection,
    provider: &str,
    form: &str,
    mark: Option<DateTime<Utc>>,
) -> Result<(), sea_orm::DbErr> {
    let mut ins = Query::insert();
    ins.into_table(Alias::new("survey_sync_state"))
        .columns(["provider", "form_id", "high_water", "last_sync_at"].map(Alias::new))
        .values_panic([
            Expr::value(provider),
            Expr::value(form),
            Expr::value(mark),
            Expr::value(Utc::now()),
        ])
        .on_conflict(
            OnConflict::columns(["provider", "form_id"].map(Alias::new))
                .update_columns(["high_water", "last_sync_at"].map(Alias::new))
                .to_owned(),
        );
    c.execute_raw(c.get_database_backend().build(&ins)).await?;
    Ok(())
}

/// Rejects of one sync written to the task log.
const LOGGED_REJECTS: u64 = 20;

/// What a sync did.
#[derive(Debug, Default)]
struct Synced {
    pages: u64,
    responses: u64,
    rejects: u64,
    newest: Option<DateTime<Utc>>,
}

impl Synced {
    async fn page(
        &mut self,
        ctx: &mut RunContext<'_>,
        c: &DatabaseConnection,
        spec: &SurveySpec,
        label: &str,
        (ok, bad): (Vec<Response>, Vec<Reject>),
    ) -> Result<(), String> {
        store_page(c, spec.provider.name(), &spec.form_id, &ok, &bad)
            .await
            .map_err(|e| format!("{label}: could not store responses: {e}"))?;
        // The first rejects of a sync go to the log; all of them are in survey_rejects.
        let shown = usize::try_from(LOGGED_REJECTS.saturating_sub(self.rejects)).unwrap_or(0);
        for r in bad.iter().take(shown) {
            ctx.log
                .line(&format!("[weft] reject ({}): {}", r.source, r.reason))
                .await;
        }
        if bad.len() > shown && self.rejects + shown as u64 == LOGGED_REJECTS {
            ctx.log
                .line("[weft] further rejects are not logged; survey_rejects has them all")
                .await;
        }
        self.pages += 1;
        self.responses += ok.len() as u64;
        self.rejects += bad.len() as u64;
        self.newest = ok.iter().map(|r| r.submitted_at).chain(self.newest).max();
        ctx.log
            .line(&format!(
                "[weft] {label}: {} response(s), {} reject(s) stored",
                ok.len(),
                bad.len()
            ))
            .await;
        Ok(())
    }
}

fn items_of<'a>(body: &'a Json, key: &str, shown: &str) -> Result<&'a [Json], String> {
    match body.get(key) {
        Some(Json::Array(a)) => Ok(a),
        None | Some(Json::Null) => Ok(&[]),
        Some(_) => Err(format!("GET {shown}: \"{key}\" is not a list")),
    }
}

/// The URL of an API path under the base URL, how it is shown in messages (no query
/// string), and the credential; `${NAME}` in `base_url` and `token` reads the
/// environment. Errors are prefixed with `label`.
fn endpoint(
    spec: &SurveySpec,
    path: &str,
    label: &str,
) -> Result<(reqwest::Url, String, String), String> {
    let base = match &spec.base_url {
        Some(b) => expand_env(b).map_err(|e| format!("{label}: base_url: {e}"))?,
        None => spec.provider.default_base_url().to_string(),
    };
    let base = base.trim().trim_end_matches('/');
    if base.is_empty() {
        return Err(format!("{label}: base_url is empty"));
    }
    let token = expand_env(spec.token.as_deref().unwrap_or_default())
        .map_err(|e| format!("{label}: token: {e}"))?;
    if token.is_empty() {
        return Err(format!("{label}: token is empty"));
    }
    let url = format!("{base}{path}");
    let parsed =
        reqwest::Url::parse(&url).map_err(|e| format!("{label}: bad url \"{url}\": {e}"))?;
    let shown = format!("{}{}", parsed.origin().ascii_serialization(), parsed.path());
    Ok((parsed, shown, token))
}

/// Typeform: newest first, paging backwards with `before=<last token>` while there is
/// more (see the loop); `since` is the high-water mark.
async fn sync_typeform(
    ctx: &mut RunContext<'_>,
    c: &DatabaseConnection,
    spec: &SurveySpec,
    since: Option<DateTime<Utc>>,
    label: &str,
) -> Result<Synced, String> {
    let (first, shown, token) =
        endpoint(spec, &format!("/forms/{}/responses", spec.form_id), label)?;
    let mut synced = Synced::default();
    let mut before: Option<String> = None;
    loop {
        let mut u = first.clone();
        {
            let mut q = u.query_pairs_mut();
            q.append_pair("page_size", &spec.page_size.to_string());
            if let Some(s) = since {
                q.append_pair("since", &rfc3339(s));
            }
            if let Some(b) = &before {
                q.append_pair("before", b);
            }
        }
        let body = get_json(&u, Auth::Bearer(&token), &shown)
            .await
            .map_err(|e| format!("{label}: {e}"))?;
        let items = items_of(&body, "items", &shown).map_err(|e| format!("{label}: {e}"))?;
        let last = items
            .last()
            .and_then(|i| i.get("token"))
            .and_then(scalar_text);
        let n = items.len();
        let page = synced.pages + 1;
        let parsed = parse_items(spec, items, &format!("page {page}"));
        synced
            .page(ctx, c, spec, &format!("{label} page {page}"), parsed)
            .await?;
        // More pages when this one is full, or when the server says there are more
        // (a server may cap the page below `page_size`); an empty page always ends.
        let count = |k: &str| body.get(k).and_then(Json::as_u64).unwrap_or(0);
        let more = n >= spec.page_size as usize
            || count("total_items") > n as u64
            || count("page_count") > 1;
        if n == 0 || !more {
            break;
        }
        match last {
            Some(t) if before.as_ref() != Some(&t) => before = Some(t),
            Some(_) => {
                return Err(format!(
                    "{label}: GET {shown} returned the same page twice; the server ignores \"before\""
                ));
            }
            None => {
                return Err(format!(
                    "{label}: the last item of page {page} has no token to page from"
                ));
            }
        }
    }
    Ok(synced)
}

/// Zigpoll: cursor paging (`startCursor` = the previous page's `endCursor`) until no
/// cursor comes back; `createdAfter` is the high-water mark.
async fn sync_zigpoll(
    ctx: &mut RunContext<'_>,
    c: &DatabaseConnection,
    spec: &SurveySpec,
    since: Option<DateTime<Utc>>,
    label: &str,
) -> Result<Synced, String> {
    let (first, shown, key) = endpoint(spec, "/responses", label)?;
    let mut synced = Synced::default();
    let mut cursor: Option<String> = None;
    loop {
        let mut u = first.clone();
        {
            let mut q = u.query_pairs_mut();
            q.append_pair("pollId", &spec.form_id);
            q.append_pair("limit", &spec.page_size.to_string());
            if let Some(s) = since {
                q.append_pair("createdAfter", &rfc3339(s));
            }
            if let Some(cur) = &cursor {
                q.append_pair("startCursor", cur);
            }
        }
        let body = get_json(&u, Auth::Header(&spec.key_header, &key), &shown)
            .await
            .map_err(|e| format!("{label}: {e}"))?;
        let items = items_of(&body, "data", &shown).map_err(|e| format!("{label}: {e}"))?;
        let page = synced.pages + 1;
        let empty = items.is_empty();
        let parsed = parse_items(spec, items, &format!("page {page}"));
        synced
            .page(ctx, c, spec, &format!("{label} page {page}"), parsed)
            .await?;
        let next = body
            .get("endCursor")
            .and_then(scalar_text)
            .filter(|s| !s.is_empty());
        let more = body.get("hasNextPage").and_then(Json::as_bool) != Some(false);
        match next {
            Some(n) if more && !empty => {
                if cursor.as_ref() == Some(&n) {
                    return Err(format!(
                        "{label}: GET {shown} returned the same cursor twice; the server ignores \"startCursor\""
                    ));
                }
                cursor = Some(n);
            }
            _ => break,
        }
    }
    Ok(synced)
}

/// Rows of a CSV export stored per transaction.
const CSV_BATCH: usize = 5000;

/// A CSV export: every row, upserted (reading a file is cheap and an edited export
/// then updates its rows).
async fn sync_csv(
    ctx: &mut RunContext<'_>,
    c: &DatabaseConnection,
    spec: &SurveySpec,
    label: &str,
) -> Result<Synced, String> {
    let path = ctx
        .render(spec.path.as_deref().unwrap_or_default())
        .map_err(|e| format!("{label}: {e}"))?;
    let full = ctx.base_dir().join(&path);
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(&full)
        .map_err(|e| format!("{label}: cannot read the export {path}: {e}"))?;
    let headers = rdr
        .headers()
        .map_err(|e| format!("{label}: {path}: {e}"))?
        .clone();
    let mut synced = Synced::default();
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let line = i + 2;
        let source = format!("{path}:{line}");
        match rec {
            Ok(rec) => match csv_row(spec, &headers, &rec) {
                Ok(r) => ok.push(r),
                Err(reason) => {
                    let raw = Json::Array(rec.iter().map(|v| Json::String(v.into())).collect());
                    bad.push(reject(&raw, &source, reason));
                }
            },
            Err(e) => bad.push(reject(&Json::Null, &source, e.to_string())),
        }
        if ok.len() + bad.len() >= CSV_BATCH {
            let page = (std::mem::take(&mut ok), std::mem::take(&mut bad));
            synced.page(ctx, c, spec, label, page).await?;
        }
    }
    if !ok.is_empty() || !bad.is_empty() || synced.pages == 0 {
        synced.page(ctx, c, spec, label, (ok, bad)).await?;
    }
    Ok(synced)
}

/// The responses a run's metrics cover: `[start, end)`, `start` None = from the first.
fn period(
    window: MetricsWindow,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, DateTime<Utc>) {
    match window {
        MetricsWindow::Interval if start < end => (Some(start), end),
        MetricsWindow::Interval | MetricsWindow::All => (None, end),
        MetricsWindow::Trailing(d) => (
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| end.checked_sub_signed(d)),
            end,
        ),
    }
}

/// One metrics row: a segment (`all`, or a user property) and its value.
struct MetricsRow {
    segment: String,
    value: String,
    nps: Option<stats::Nps>,
    responses: u64,
    csat: Option<(u64, f64)>,
}

/// Score counts per segment value: (segment value, score, count).
async fn score_counts(
    c: &DatabaseConnection,
    spec: &SurveySpec,
    score_col: &str,
    seg: Option<&str>,
    (from, to): (Option<DateTime<Utc>>, DateTime<Utc>),
) -> Result<Vec<(String, i64, i64)>, sea_orm::DbErr> {
    let b = c.get_database_backend();
    let mut values: Vec<Value> = vec![spec.provider.name().into(), spec.form_id.clone().into()];
    let t = |v: DateTime<Utc>| -> Value {
        if b == DbBackend::Postgres {
            v.into()
        } else {
            rfc3339(v).into()
        }
    };
    values.push(t(to));
    let mut cond = format!(
        "r.provider = {} AND r.form_id = {} AND {} < {} AND r.{score_col} IS NOT NULL",
        ph(b, 1),
        ph(b, 2),
        time_col(b, "r.submitted_at"),
        time_param(b, 3)
    );
    if let Some(f) = from {
        values.push(t(f));
        cond.push_str(&format!(
            " AND {} >= {}",
            time_col(b, "r.submitted_at"),
            time_param(b, 4)
        ));
    }
    // A user listed twice in the segments table counts once (with the smallest value),
    // never twice.
    let (sel, join) = match (seg, &spec.segments) {
        (Some(col), Some(s)) => (
            "COALESCE(u.v, '(unknown)')".to_string(),
            format!(
                " LEFT JOIN (SELECT CAST(\"{key}\" AS TEXT) AS k, MIN(CAST(\"{col}\" AS TEXT)) AS v FROM \"{table}\" GROUP BY CAST(\"{key}\" AS TEXT)) u ON u.k = r.user_id",
                key = s.key,
                table = s.table
            ),
        ),
        _ => ("'all'".to_string(), String::new()),
    };
    let sql = format!(
        "SELECT {sel} AS v, CAST(r.{score_col} AS BIGINT) AS s, COUNT(*) AS n FROM survey_responses r{join} WHERE {cond} GROUP BY 1, 2"
    );
    let rows = c
        .query_all_raw(Statement::from_sql_and_values(b, sql, values))
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.try_get_by_index::<Option<String>>(0)?.unwrap_or_default(),
                r.try_get_by_index::<i64>(1)?,
                r.try_get_by_index::<i64>(2)?,
            ))
        })
        .collect()
}

fn expand(counts: &[(String, i64, i64)], value: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (_, s, n) in counts.iter().filter(|(v, ..)| v == value) {
        out.extend(std::iter::repeat_n(
            *s as u8,
            usize::try_from(*n).unwrap_or(0),
        ));
    }
    out
}

async fn compute_metrics(
    c: &DatabaseConnection,
    spec: &SurveySpec,
    range: (Option<DateTime<Utc>>, DateTime<Utc>),
) -> Result<Vec<MetricsRow>, sea_orm::DbErr> {
    let mut segs: Vec<Option<&str>> = vec![None];
    if let Some(s) = &spec.segments {
        segs.extend(s.columns.iter().map(|c| Some(c.as_str())));
    }
    let mut rows = Vec::new();
    for seg in segs {
        let nps = if spec.nps_field.is_some() {
            score_counts(c, spec, "nps_score", seg, range).await?
        } else {
            Vec::new()
        };
        let csat = if spec.csat_field.is_some() {
            score_counts(c, spec, "csat_score", seg, range).await?
        } else {
            Vec::new()
        };
        let mut values: Vec<String> = nps.iter().chain(&csat).map(|(v, ..)| v.clone()).collect();
        values.sort();
        values.dedup();
        if seg.is_none() && values.is_empty() {
            values.push("all".into());
        }
        for v in values {
            let n_scores = expand(&nps, &v);
            let c_scores = expand(&csat, &v);
            rows.push(MetricsRow {
                segment: seg.unwrap_or("all").to_string(),
                value: v,
                responses: n_scores.len() as u64,
                nps: stats::nps(&n_scores).ok(),
                csat: stats::csat(&c_scores)
                    .ok()
                    .map(|x| (c_scores.len() as u64, x)),
            });
        }
    }
    Ok(rows)
}

async fn write_metrics(
    c: &DatabaseConnection,
    spec: &SurveySpec,
    (from, to): (Option<DateTime<Utc>>, DateTime<Utc>),
    rows: &[MetricsRow],
) -> Result<(), sea_orm::DbErr> {
    let b = c.get_database_backend();
    let txn = c.begin().await?;
    let mut del = Query::delete();
    del.from_table(Alias::new("survey_metrics"))
        .and_where(Expr::col(Alias::new("provider")).eq(spec.provider.name()))
        .and_where(Expr::col(Alias::new("form_id")).eq(spec.form_id.clone()))
        .and_where(Expr::col(Alias::new("period_end")).eq(to));
    txn.execute_raw(b.build(&del)).await?;
    let now = Utc::now();
    for r in rows {
        let mut ins = Query::insert();
        ins.into_table(Alias::new("survey_metrics"))
            .columns(
                [
                    "provider",
                    "form_id",
                    "segment",
                    "segment_value",
                    "period_start",
                    "period_end",
                    "responses",
                    "promoters",
                    "passives",
                    "detractors",
                    "nps",
                    "nps_se",
                    "nps_ci_low",
                    "nps_ci_high",
                    "csat_responses",
                    "csat",
                    "computed_at",
                ]
                .map(Alias::new),
            )
            .values_panic([
                Expr::value(spec.provider.name()),
                Expr::value(spec.form_id.clone()),
                Expr::value(r.segment.clone()),
                Expr::value(r.value.clone()),
                Expr::value(from),
                Expr::value(to),
                Expr::value(r.responses as i64),
                Expr::value(r.nps.map_or(0, |n| n.promoters as i64)),
                Expr::value(r.nps.map_or(0, |n| n.passives as i64)),
                Expr::value(r.nps.map_or(0, |n| n.detractors as i64)),
                Expr::value(r.nps.map(|n| n.nps)),
                Expr::value(r.nps.map(|n| n.se)),
                Expr::value(r.nps.map(|n| n.ci_low)),
                Expr::value(r.nps.map(|n| n.ci_high)),
                Expr::value(r.csat.map_or(0, |c| c.0 as i64)),
                Expr::value(r.csat.map(|c| c.1)),
                Expr::value(now),
            ]);
        txn.execute_raw(b.build(&ins)).await?;
    }
    txn.commit().await
}

pub async fn run(ctx: &mut RunContext<'_>, spec: &SurveySpec) -> TryOutcome {
    let started = std::time::Instant::now();
    let label = format!("{} form {}", spec.provider.name(), spec.form_id);
    let conn = match ctx.warehouses.get(&spec.connection).await {
        Ok(c) => c,
        Err(e) => return failure(format!("{label}: {e}")),
    };
    let (start, end) = match (
        DateTime::parse_from_rfc3339(&ctx.tmpl.data_interval_start),
        DateTime::parse_from_rfc3339(&ctx.tmpl.data_interval_end),
    ) {
        (Ok(s), Ok(e)) => (s.with_timezone(&Utc), e.with_timezone(&Utc)),
        _ => return failure("the run has no valid data interval"),
    };
    let mark = match high_water(&conn, spec.provider.name(), &spec.form_id).await {
        Ok(m) => m,
        Err(e) => return failure(format!("{label}: cannot read the high-water mark: {e}")),
    };
    // Ask from one second before the mark: a response that landed in the same second
    // as the last one synced is not missed (the overlap is upserted, not duplicated).
    let since = mark.map(|m| m - chrono::Duration::seconds(1));
    ctx.log
        .line(&format!(
            "[weft] {label}: {}",
            match mark {
                Some(m) => format!(
                    "fetching responses since the high-water mark {}",
                    rfc3339(m)
                ),
                None => "first sync: fetching every response".into(),
            }
        ))
        .await;
    let synced = match spec.provider {
        SurveyProvider::Typeform => sync_typeform(ctx, &conn, spec, since, &label).await,
        SurveyProvider::Zigpoll => sync_zigpoll(ctx, &conn, spec, since, &label).await,
        SurveyProvider::Csv => sync_csv(ctx, &conn, spec, &label).await,
    };
    let synced = match synced {
        Ok(s) => s,
        Err(e) => {
            ctx.log
                .line("[weft] the pages stored before the failure are kept; the high-water mark did not move, so the next run fetches the rest")
                .await;
            return failure(e);
        }
    };
    let new_mark = synced.newest.into_iter().chain(mark).max();
    if let Err(e) = set_high_water(&conn, spec.provider.name(), &spec.form_id, new_mark).await {
        return failure(format!("{label}: cannot store the high-water mark: {e}"));
    }
    ctx.log
        .line(&format!(
            "[weft] {label}: {} page(s), {} response(s) upserted, {} reject(s) in {} ms; high-water mark {}",
            synced.pages,
            synced.responses,
            synced.rejects,
            started.elapsed().as_millis(),
            new_mark.map_or("none".into(), rfc3339)
        ))
        .await;
    if spec.nps_field.is_none() && spec.csat_field.is_none() {
        return TryOutcome::success();
    }
    let range = period(spec.metrics_window, start, end);
    let rows = match compute_metrics(&conn, spec, range).await {
        Ok(r) => r,
        Err(e) => return failure(format!("{label}: cannot compute the metrics: {e}")),
    };
    if let Err(e) = write_metrics(&conn, spec, range, &rows).await {
        return failure(format!("{label}: cannot write survey_metrics: {e}"));
    }
    let over = match range.0 {
        Some(f) => format!("{} to {}", rfc3339(f), rfc3339(range.1)),
        None => format!("everything before {}", rfc3339(range.1)),
    };
    for r in &rows {
        let who = if r.segment == "all" {
            String::new()
        } else {
            format!(" [{} = {}]", r.segment, r.value)
        };
        let nps = match r.nps {
            Some(n) => format!(
                "NPS {:+.1} (95% CI {:+.1} to {:+.1}; {} promoters, {} passives, {} detractors of {})",
                n.nps, n.ci_low, n.ci_high, n.promoters, n.passives, n.detractors, n.responses
            ),
            None if spec.nps_field.is_some() => "no NPS answer".into(),
            None => String::new(),
        };
        let csat = r
            .csat
            .map(|(n, x)| format!(", CSAT {:.1}% of {n}", x * 100.0))
            .unwrap_or_default();
        ctx.log
            .line(&format!("[weft] {label}{who}, {over}: {nps}{csat}"))
            .await;
    }
    TryOutcome::success()
}

// ------------------------------------------------------------------ reading back

/// Responses of a form by quarter hour and score: (start of the quarter hour, score,
/// responses); the score is `None` for responses without one. Quarter hours (every time
/// zone's offset is a multiple of 15 minutes) let callers bucket by day or week in any
/// zone.
pub async fn scores_by_quarter_hour(
    c: &DatabaseConnection,
    provider: &str,
    form: &str,
    csat: bool,
) -> Result<Vec<(DateTime<Utc>, Option<i64>, i64)>, sea_orm::DbErr> {
    let b = c.get_database_backend();
    let col = if csat { "csat_score" } else { "nps_score" };
    let quarter = if b == DbBackend::Postgres {
        "CAST(FLOOR(EXTRACT(EPOCH FROM submitted_at) / 900) AS BIGINT)"
    } else {
        "CAST(strftime('%s', submitted_at) AS INTEGER) / 900"
    };
    let sql = format!(
        "SELECT {quarter} AS q, CAST({col} AS BIGINT) AS s, COUNT(*) FROM survey_responses \
         WHERE provider = {} AND form_id = {} GROUP BY 1, 2 ORDER BY 1",
        ph(b, 1),
        ph(b, 2)
    );
    let rows = c
        .query_all_raw(Statement::from_sql_and_values(
            b,
            sql,
            [provider.into(), form.into()],
        ))
        .await?;
    rows.into_iter()
        .filter_map(|r| {
            let q = match r.try_get_by_index::<Option<i64>>(0) {
                Ok(q) => q?,
                Err(e) => return Some(Err(e)),
            };
            let at = DateTime::from_timestamp(q.checked_mul(900)?, 0)?;
            Some(Ok((
                at,
                match r.try_get_by_index::<Option<i64>>(1) {
                    Ok(s) => s,
                    Err(e) => return Some(Err(e)),
                },
                match r.try_get_by_index::<i64>(2) {
                    Ok(n) => n,
                    Err(e) => return Some(Err(e)),
                },
            )))
        })
        .collect()
}

/// One stored row of `survey_metrics`, as the survey page and the API show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct StoredMetrics {
    pub segment: String,
    pub segment_value: String,
    pub period_start: Option<String>,
    pub period_end: String,
    pub responses: i64,
    pub promoters: i64,
    pub passives: i64,
    pub detractors: i64,
    pub nps: Option<f64>,
    pub nps_ci_low: Option<f64>,
    pub nps_ci_high: Option<f64>,
    pub csat: Option<f64>,
    pub csat_responses: i64,
    pub computed_at: String,
}

/// The metrics rows of a form's latest period end.
pub async fn latest_metrics(
    c: &DatabaseConnection,
    provider: &str,
    form: &str,
) -> Result<Vec<StoredMetrics>, sea_orm::DbErr> {
    let b = c.get_database_backend();
    let sql = format!(
        "SELECT segment, segment_value, CAST(period_start AS TEXT), CAST(period_end AS TEXT), responses, promoters, passives, detractors, \
         nps, nps_ci_low, nps_ci_high, csat, csat_responses, CAST(computed_at AS TEXT) FROM survey_metrics \
         WHERE provider = {p1} AND form_id = {p2} AND period_end = (SELECT MAX(period_end) FROM survey_metrics WHERE provider = {p3} AND form_id = {p4}) \
         ORDER BY CASE WHEN segment = 'all' THEN 0 ELSE 1 END, segment, segment_value",
        p1 = ph(b, 1),
        p2 = ph(b, 2),
        p3 = ph(b, 3),
        p4 = ph(b, 4)
    );
    let rows = c
        .query_all_raw(Statement::from_sql_and_values(
            b,
            sql,
            [provider.into(), form.into(), provider.into(), form.into()],
        ))
        .await?;
    rows.into_iter()
        .map(|r| {
            let f = |i: usize| r.try_get_by_index::<Option<f64>>(i);
            Ok(StoredMetrics {
                segment: r.try_get_by_index(0)?,
                segment_value: r.try_get_by_index(1)?,
                period_start: r.try_get_by_index(2)?,
                period_end: r.try_get_by_index::<Option<String>>(3)?.unwrap_or_default(),
                responses: r.try_get_by_index(4)?,
                promoters: r.try_get_by_index(5)?,
                passives: r.try_get_by_index(6)?,
                detractors: r.try_get_by_index(7)?,
                nps: f(8)?,
                nps_ci_low: f(9)?,
                nps_ci_high: f(10)?,
                csat: f(11)?,
                csat_responses: r.try_get_by_index(12)?,
                computed_at: r
                    .try_get_by_index::<Option<String>>(13)?
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// A form's sync state: (responses stored, rejects, high-water mark, last sync).
pub async fn form_state(
    c: &DatabaseConnection,
    provider: &str,
    form: &str,
) -> Result<(i64, i64, Option<String>, Option<String>), sea_orm::DbErr> {
    let b = c.get_database_backend();
    let sql = format!(
        "SELECT (SELECT COUNT(*) FROM survey_responses WHERE provider = {p1} AND form_id = {p2}), \
         (SELECT COUNT(*) FROM survey_rejects WHERE provider = {p3} AND form_id = {p4}), \
         (SELECT CAST(high_water AS TEXT) FROM survey_sync_state WHERE provider = {p5} AND form_id = {p6}), \
         (SELECT CAST(last_sync_at AS TEXT) FROM survey_sync_state WHERE provider = {p7} AND form_id = {p8})",
        p1 = ph(b, 1),
        p2 = ph(b, 2),
        p3 = ph(b, 3),
        p4 = ph(b, 4),
        p5 = ph(b, 5),
        p6 = ph(b, 6),
        p7 = ph(b, 7),
        p8 = ph(b, 8)
    );
    let mut values: Vec<Value> = Vec::new();
    for _ in 0..4 {
        values.push(provider.into());
        values.push(form.into());
    }
    let row = c
        .query_one_raw(Statement::from_sql_and_values(b, sql, values))
        .await?;
    match row {
        None => Ok((0, 0, None, None)),
        Some(r) => Ok((
            r.try_get_by_index(0)?,
            r.try_get_by_index(1)?,
            r.try_get_by_index(2)?,
            r.try_get_by_index(3)?,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec(provider: SurveyProvider) -> SurveySpec {
        SurveySpec {
            provider,
            form_id: "nps1".into(),
            base_url: None,
            token: None,
            key_header: "Authorization".into(),
            path: None,
            page_size: 1000,
            nps_field: Some("nps".into()),
            csat_field: None,
            user_field: "user_id".into(),
            segments: None,
            metrics_window: MetricsWindow::Interval,
            connection: "warehouse".into(),
        }
    }

    fn obj(v: Json) -> Map<String, Json> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn typeform_answers_become_typed_values() {
        let item = serde_json::json!({
            "token": "t1", "landed_at": "2026-11-01T10:00:00Z", "submitted_at": "2026-11-01T10:02:00Z",
            "hidden": {"user_id": "u7"},
            "answers": [
                {"field": {"id": "f1", "ref": "nps", "type": "opinion_scale"}, "type": "number", "number": 9},
                {"field": {"id": "f2", "type": "multiple_choice"}, "type": "choice", "choice": {"label": "Price"}},
                {"field": {"id": "f3", "type": "multiple_choice"}, "type": "choices", "choices": {"labels": ["A", "B"]}},
                {"field": {"id": "f4", "type": "yes_no"}, "type": "boolean", "boolean": false},
                {"field": {"id": "f5", "type": "email"}, "type": "email", "email": "a@b.c"},
                {"field": {"id": "f6", "type": "date"}, "type": "date", "date": "2026-10-01"}
            ]
        });
        let r = typeform_item(&spec(SurveyProvider::Typeform), &obj(item)).unwrap();
        assert_eq!(r.token, "t1");
        assert_eq!(r.nps, Some(9));
        assert_eq!(r.user_id.as_deref(), Some("u7"));
        assert_eq!(r.answers[0].field, "nps");
        assert_eq!(r.answers[0].number, Some(9.0));
        assert_eq!(r.answers[1].text.as_deref(), Some("Price"));
        assert_eq!(r.answers[2].text.as_deref(), Some("[\"A\",\"B\"]"));
        assert_eq!(r.answers[3].boolean, Some(false));
        assert_eq!(r.answers[4].text.as_deref(), Some("a@b.c"));
        assert_eq!(r.answers[5].date.as_deref(), Some("2026-10-01"));
    }

    #[test]
    fn malformed_items_say_why() {
        let s = spec(SurveyProvider::Typeform);
        let cases = [
            (
                serde_json::json!({"submitted_at": "2026-11-01T10:00:00Z"}),
                "no response id",
            ),
            (serde_json::json!({"token": "a"}), "no \"submitted_at\""),
            (
                serde_json::json!({"token": "a", "submitted_at": "yesterday"}),
                "is not a time",
            ),
            (
                serde_json::json!({"token": "a", "submitted_at": "2026-11-01T10:00:00Z", "answers": 3}),
                "\"answers\" is not a list",
            ),
            (
                serde_json::json!({"token": "a", "submitted_at": "2026-11-01T10:00:00Z",
                "answers": [{"field": {"ref": "nps"}, "type": "number", "number": 11}]}),
                "holds 11, not a whole number 0-10",
            ),
            (
                serde_json::json!({"token": "a", "submitted_at": "2026-11-01T10:00:00Z",
                "answers": [{"field": {"ref": "nps"}, "type": "number"}]}),
                "no \"number\" value",
            ),
        ];
        for (item, want) in cases {
            let err = typeform_item(&s, &obj(item.clone())).unwrap_err();
            assert!(err.contains(want), "{item}: {err}");
        }
        let (ok, bad) = parse_items(&s, &[serde_json::json!(5)], "page 1");
        assert!(ok.is_empty());
        assert_eq!(bad[0].reason, "not a JSON object");
        assert_eq!(bad[0].source, "page 1 item 1");
    }

    #[test]
    fn zigpoll_items_and_csv_rows_read_loosely_typed_values() {
        let s = spec(SurveyProvider::Zigpoll);
        let item = serde_json::json!({"_id": "z1", "createdAt": 1_700_000_000_000_i64,
            "slideId": "nps", "response": "10", "metadata": {"user_id": 42}});
        let r = zigpoll_item(&s, &obj(item)).unwrap();
        assert_eq!((r.token.as_str(), r.nps), ("z1", Some(10)));
        assert_eq!(r.user_id.as_deref(), Some("42"));
        assert_eq!(r.submitted_at.timestamp(), 1_700_000_000);

        let s = spec(SurveyProvider::Csv);
        let headers = csv::StringRecord::from(vec![
            "token",
            "Submit Date (UTC)",
            "nps",
            "comment",
            "user_id",
        ]);
        let rec = csv::StringRecord::from(vec!["c1", "2026-11-02 08:00:00", "6", "slow", "u1"]);
        let r = csv_row(&s, &headers, &rec).unwrap();
        assert_eq!(r.nps, Some(6));
        assert_eq!(r.user_id.as_deref(), Some("u1"));
        assert_eq!(r.answers.len(), 2);
        assert_eq!(r.answers[1].text.as_deref(), Some("slow"));
        assert_eq!(rfc3339(r.submitted_at), "2026-11-02T08:00:00Z");
    }

    #[test]
    fn the_metrics_period_follows_the_window() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let (s, e) = (t("2026-11-01T00:00:00Z"), t("2026-11-02T00:00:00Z"));
        assert_eq!(period(MetricsWindow::Interval, s, e), (Some(s), e));
        assert_eq!(period(MetricsWindow::Interval, e, e), (None, e));
        assert_eq!(period(MetricsWindow::All, s, e), (None, e));
        assert_eq!(
            period(
                MetricsWindow::Trailing(Duration::from_secs(7 * 86400)),
                s,
                e
            ),
            (Some(t("2026-10-26T00:00:00Z")), e)
        );
    }
}
