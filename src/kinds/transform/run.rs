//! `transform`: SQL models (one `SELECT` per file, templated, `{{ ref("m") }}` for other
//! models) built in dependency order, materialised as a table (built beside the old one,
//! then swapped in one transaction), a view, or incrementally (the data interval's rows
//! replaced); then data tests, each a query counting offending values.

use std::time::Instant;

use chrono::{DateTime, Utc};
use minijinja::Environment;

use crate::dag::template::Quoting;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait, Value};

use super::{Check, DataTest, Materialized, Model, TransformSpec};
use crate::dag::template::TemplateContext;
use crate::db::tasks::TryOutcome;
use crate::kinds::dialect::{ident as q, lit};
use crate::kinds::env::{RunContext, failure};
use crate::kinds::warehouse::Migration;

/// The warehouse tables of the transform kind (see `kinds::warehouse`).
pub static MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    statements: |_| {
        vec!["CREATE TABLE IF NOT EXISTS weft_test_results (dag_id TEXT NOT NULL, run_id TEXT NOT NULL, task_id TEXT NOT NULL, test TEXT NOT NULL, \
         model TEXT NOT NULL, status TEXT NOT NULL, failures BIGINT NOT NULL, sample TEXT NOT NULL, checked_at TEXT NOT NULL)"
            .to_string()]
    },
    add_columns: &[],
}];

/// Renders a model: the run's variables, `ref("m")` as the quoted relation name, and
/// `config(...)` as nothing.
pub fn render_model(model: &Model, ctx: &TemplateContext) -> Result<String, String> {
    let mut env = Environment::new();
    crate::dag::template::configure(&mut env);
    // Relation names are SQL already: marked safe so they are not quoted as values.
    env.add_function("ref", |name: String| -> minijinja::Value {
        minijinja::Value::from_safe_string(q(&name))
    });
    env.add_function(
        "config",
        |_args: minijinja::value::Rest<minijinja::Value>,
         _kw: minijinja::value::Kwargs|
         -> minijinja::Value { minijinja::Value::from_safe_string(String::new()) },
    );
    crate::dag::template::render_quoted(&env, &model.sql, ctx, Quoting::Sql)
        .map_err(|e| format!("model {}: template error: {e}", model.file))
}

async fn relation_kind(
    c: &impl ConnectionTrait,
    name: &str,
) -> Result<Option<String>, sea_orm::DbErr> {
    let b = c.get_database_backend();
    let stmt = if b == DbBackend::Postgres {
        Statement::from_sql_and_values(
            b,
            "SELECT CASE WHEN table_type = 'VIEW' THEN 'view' ELSE 'table' END FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1",
            [Value::from(name)],
        )
    } else {
        Statement::from_sql_and_values(
            b,
            "SELECT type FROM sqlite_master WHERE name = ? AND type IN ('table', 'view')",
            [Value::from(name)],
        )
    };
    Ok(c.query_one_raw(stmt)
        .await?
        .and_then(|r| r.try_get_by_index::<String>(0).ok()))
}

async fn drop_relation(c: &impl ConnectionTrait, name: &str) -> Result<(), sea_orm::DbErr> {
    let cascade = if c.get_database_backend() == DbBackend::Postgres {
        " CASCADE"
    } else {
        ""
    };
    match relation_kind(c, name).await?.as_deref() {
        Some("view") => c
            .execute_unprepared(&format!("DROP VIEW {}{cascade}", q(name)))
            .await
            .map(|_| ()),
        Some(_) => c
            .execute_unprepared(&format!("DROP TABLE {}{cascade}", q(name)))
            .await
            .map(|_| ()),
        None => Ok(()),
    }
}

/// One data test's outcome.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub name: String,
    pub model: String,
    pub failures: i64,
    pub sample: Vec<String>,
}

/// The count query and the sample query of a test, against relation `rel`.
fn test_sql(t: &DataTest, rel: &str) -> (String, String) {
    let r = q(rel);
    match &t.check {
        Check::NotNull(c) => (
            format!("SELECT COUNT(*) FROM {r} WHERE {} IS NULL", q(c)),
            String::new(),
        ),
        Check::Unique(c) => {
            let inner = format!(
                "SELECT {c} FROM {r} WHERE {c} IS NOT NULL GROUP BY {c} HAVING COUNT(*) > 1",
                c = q(c)
            );
            (
                format!("SELECT COUNT(*) FROM ({inner}) d"),
                format!("SELECT CAST({} AS TEXT) FROM ({inner}) d LIMIT 10", q(c)),
            )
        }
        Check::AcceptedValues(c, vals) => {
            let list = if vals.is_empty() {
                "NULL".to_string()
            } else {
                vals.iter().map(|v| lit(v)).collect::<Vec<_>>().join(", ")
            };
            let cond = format!(
                "{c} IS NOT NULL AND CAST({c} AS TEXT) NOT IN ({list})",
                c = q(c)
            );
            (
                format!("SELECT COUNT(DISTINCT {}) FROM {r} WHERE {cond}", q(c)),
                format!(
                    "SELECT DISTINCT CAST({} AS TEXT) FROM {r} WHERE {cond} LIMIT 10",
                    q(c)
                ),
            )
        }
        Check::Relationships {
            column,
            to_model,
            to_column,
        } => {
            let cond = format!(
                "FROM {r} s LEFT JOIN {} t ON s.{} = t.{} WHERE s.{} IS NOT NULL AND t.{} IS NULL",
                q(to_model),
                q(column),
                q(to_column),
                q(column),
                q(to_column)
            );
            (
                format!("SELECT COUNT(DISTINCT s.{}) {cond}", q(column)),
                format!(
                    "SELECT DISTINCT CAST(s.{} AS TEXT) {cond} LIMIT 10",
                    q(column)
                ),
            )
        }
        Check::Sql(sql) => (
            format!("SELECT COUNT(*) FROM ({sql}) t"),
            format!("SELECT * FROM ({sql}) t LIMIT 10"),
        ),
    }
}

/// `accepted_values`, compared with the column's type: the distinct values are read as
/// text and a value is accepted when it equals an accepted one as text or, both being
/// numbers, as a number (a REAL `1.0` is the accepted `"1"`).
async fn accepted_values_test(
    c: &impl ConnectionTrait,
    t: &DataTest,
    rel: &str,
    column: &str,
    accepted: &[String],
) -> Result<TestResult, String> {
    let b = c.get_database_backend();
    let sql = format!(
        "SELECT DISTINCT CAST({c} AS TEXT) FROM {r} WHERE {c} IS NOT NULL LIMIT 100001",
        c = q(column),
        r = q(rel)
    );
    let numbers: Vec<f64> = accepted
        .iter()
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .collect();
    let mut bad = Vec::new();
    for r in c
        .query_all_raw(Statement::from_string(b, sql))
        .await
        .map_err(|e| format!("test {}: {e}", t.name))?
    {
        let Ok(Some(v)) = r.try_get_by_index::<Option<String>>(0) else {
            continue;
        };
        let as_number = v.trim().parse::<f64>().ok();
        let ok = accepted.contains(&v) || as_number.is_some_and(|x| numbers.contains(&x));
        if !ok {
            bad.push(v);
        }
    }
    let failures = i64::try_from(bad.len()).unwrap_or(i64::MAX);
    bad.truncate(10);
    Ok(TestResult {
        name: t.name.clone(),
        model: t.model.clone(),
        failures,
        sample: bad,
    })
}

async fn run_test(c: &impl ConnectionTrait, t: &DataTest, rel: &str) -> Result<TestResult, String> {
    if let Check::AcceptedValues(column, vals) = &t.check {
        return accepted_values_test(c, t, rel, column, vals).await;
    }
    let b = c.get_database_backend();
    let (count_sql, sample_sql) = test_sql(t, rel);
    let row = c
        .query_one_raw(Statement::from_string(b, count_sql))
        .await
        .map_err(|e| format!("test {}: {e}", t.name))?;
    let failures = row
        .and_then(|r| r.try_get_by_index::<i64>(0).ok())
        .unwrap_or(0);
    let mut sample = Vec::new();
    if failures > 0 && !sample_sql.is_empty() {
        for r in c
            .query_all_raw(Statement::from_string(b, sample_sql))
            .await
            .map_err(|e| format!("test {}: {e}", t.name))?
        {
            // The first column, whatever its type.
            let v = r
                .try_get_by_index::<Option<String>>(0)
                .ok()
                .map(|x| x.unwrap_or_else(|| "NULL".into()))
                .or_else(|| r.try_get_by_index::<i64>(0).ok().map(|n| n.to_string()))
                .or_else(|| r.try_get_by_index::<i32>(0).ok().map(|n| n.to_string()))
                .or_else(|| r.try_get_by_index::<f64>(0).ok().map(|n| n.to_string()))
                .or_else(|| r.try_get_by_index::<bool>(0).ok().map(|n| n.to_string()))
                .unwrap_or_else(|| "?".into());
            sample.push(v);
        }
    }
    Ok(TestResult {
        name: t.name.clone(),
        model: t.model.clone(),
        failures,
        sample,
    })
}

async fn record_results(
    c: &DatabaseConnection,
    ctx: &RunContext<'_>,
    results: &[TestResult],
) -> Result<(), sea_orm::DbErr> {
    let b = c.get_database_backend();
    let now = crate::dag::template::rfc3339(Utc::now());
    for r in results {
        let sql = if b == DbBackend::Postgres {
            "INSERT INTO weft_test_results VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        } else {
            "INSERT INTO weft_test_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        };
        let values: Vec<Value> = vec![
            ctx.tmpl.dag_id.clone().into(),
            ctx.tmpl.run_id.clone().into(),
            ctx.tmpl.task_id.clone().into(),
            r.name.clone().into(),
            r.model.clone().into(),
            (if r.failures == 0 { "pass" } else { "fail" }).into(),
            r.failures.into(),
            serde_json::to_string(&r.sample).unwrap_or_default().into(),
            now.clone().into(),
        ];
        c.execute_raw(Statement::from_sql_and_values(b, sql, values))
            .await?;
    }
    Ok(())
}

fn describe(r: &TestResult) -> String {
    if r.failures == 0 {
        format!("PASS {}", r.name)
    } else if r.sample.is_empty() {
        format!("FAIL {}: {} offending", r.name, r.failures)
    } else {
        format!(
            "FAIL {}: {} offending, e.g. {}",
            r.name,
            r.failures,
            r.sample.join(", ")
        )
    }
}

/// Builds one model. A table is built as `<name>__weft_new`; with `tests_block` its
/// tests run there first, and only a passing table is swapped in.
#[allow(clippy::too_many_arguments)]
async fn build(
    c: &DatabaseConnection,
    m: &Model,
    sql: &str,
    tests: &[&DataTest],
    block: bool,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> Result<Vec<TestResult>, String> {
    let err = |e: sea_orm::DbErr| format!("model {}: {e}", m.file);
    let b = c.get_database_backend();
    match m.materialized {
        Materialized::View => {
            let txn = c.begin().await.map_err(err)?;
            drop_relation(&txn, &m.name).await.map_err(err)?;
            txn.execute_unprepared(&format!("CREATE VIEW {} AS {sql}", q(&m.name)))
                .await
                .map_err(err)?;
            txn.commit().await.map_err(err)?;
            Ok(Vec::new())
        }
        Materialized::Table => {
            let tmp = format!("{}__weft_new", m.name);
            drop_relation(c, &tmp).await.map_err(err)?;
            c.execute_unprepared(&format!("CREATE TABLE {} AS {sql}", q(&tmp)))
                .await
                .map_err(err)?;
            let mut results = Vec::new();
            if block {
                for t in tests {
                    results.push(run_test(c, t, &tmp).await?);
                }
                if results.iter().any(|r| r.failures > 0) {
                    drop_relation(c, &tmp).await.map_err(err)?;
                    return Ok(results);
                }
            }
            let txn = c.begin().await.map_err(err)?;
            drop_relation(&txn, &m.name).await.map_err(err)?;
            txn.execute_unprepared(&format!("ALTER TABLE {} RENAME TO {}", q(&tmp), q(&m.name)))
                .await
                .map_err(err)?;
            txn.commit().await.map_err(err)?;
            Ok(results)
        }
        Materialized::Incremental => {
            let col = m.interval_column.as_deref().unwrap_or("interval_start");
            if relation_kind(c, &m.name).await.map_err(err)?.is_none() {
                c.execute_unprepared(&format!("CREATE TABLE {} AS {sql}", q(&m.name)))
                    .await
                    .map_err(err)?;
                return Ok(Vec::new());
            }
            let txn = c.begin().await.map_err(err)?;
            // The column may hold a timestamp, a date, or their text. A timestamp is an
            // instant, compared with the interval's instants; a date (`YYYY-MM-DD`, as
            // `'{{ ds }}'` writes it) is a day of the DAG's time zone, compared with the
            // interval's local dates — so New York's 2026-01-01 is the interval
            // [05:00Z, 05:00Z next day), not midnight UTC.
            let (d0, d1) = (
                start.with_timezone(&tz).date_naive().to_string(),
                end.with_timezone(&tz).date_naive().to_string(),
            );
            let as_text = format!("CAST({} AS TEXT)", q(col));
            let is_date = format!("LENGTH({as_text}) = 10");
            let (del, values): (String, Vec<Value>) = if b == DbBackend::Postgres {
                (
                    format!(
                        "DELETE FROM {} WHERE ({is_date} AND {as_text} >= $1 AND {as_text} < $2) \
                         OR (NOT {is_date} AND CAST({c} AS TIMESTAMPTZ) >= $3 AND CAST({c} AS TIMESTAMPTZ) < $4)",
                        q(&m.name),
                        c = q(col)
                    ),
                    vec![d0.into(), d1.into(), Value::from(start), Value::from(end)],
                )
            } else {
                (
                    format!(
                        "DELETE FROM {} WHERE ({is_date} AND {as_text} >= ? AND {as_text} < ?) \
                         OR (NOT {is_date} AND julianday({c}) >= julianday(?) AND julianday({c}) < julianday(?))",
                        q(&m.name),
                        c = q(col)
                    ),
                    vec![
                        d0.into(),
                        d1.into(),
                        Value::from(crate::dag::template::rfc3339(start)),
                        Value::from(crate::dag::template::rfc3339(end)),
                    ],
                )
            };
            txn.execute_raw(Statement::from_sql_and_values(b, del, values))
                .await
                .map_err(err)?;
            txn.execute_unprepared(&format!("INSERT INTO {} {sql}", q(&m.name)))
                .await
                .map_err(err)?;
            txn.commit().await.map_err(err)?;
            Ok(Vec::new())
        }
    }
}

pub async fn run(ctx: &mut RunContext<'_>, spec: &TransformSpec) -> TryOutcome {
    let conn = match ctx.warehouses.get(&spec.connection).await {
        Ok(c) => c,
        Err(e) => return failure(e),
    };
    let (start, end) = match (
        DateTime::parse_from_rfc3339(&ctx.tmpl.data_interval_start),
        DateTime::parse_from_rfc3339(&ctx.tmpl.data_interval_end),
    ) {
        (Ok(s), Ok(e)) => (s.with_timezone(&Utc), e.with_timezone(&Utc)),
        _ => return failure("the run has no valid data interval"),
    };
    let mut results: Vec<TestResult> = Vec::new();
    let mut blocked = Vec::new();
    for &i in &spec.order {
        let m = &spec.models[i];
        let sql = match render_model(m, ctx.tmpl) {
            Ok(s) => s,
            Err(e) => return failure(e),
        };
        let t = Instant::now();
        let tests: Vec<&DataTest> = spec.tests.iter().filter(|t| t.model == m.name).collect();
        match build(
            &conn,
            m,
            sql.trim().trim_end_matches(';'),
            &tests,
            spec.tests_block,
            start,
            end,
            ctx.dag.timezone,
        )
        .await
        {
            Ok(pre) => {
                let failed = pre.iter().any(|r| r.failures > 0);
                ctx.log
                    .line(&format!(
                        "[weft] {} {} ({}) in {} ms{}",
                        if failed { "kept the old" } else { "built" },
                        m.name,
                        m.materialized.name(),
                        t.elapsed().as_millis(),
                        if failed { ": its tests failed" } else { "" }
                    ))
                    .await;
                if failed {
                    blocked.push(m.name.clone());
                }
                results.extend(pre);
            }
            Err(e) => return failure(e),
        }
    }
    for t in &spec.tests {
        if results.iter().any(|r| r.name == t.name) {
            continue;
        }
        match run_test(&conn, t, &t.model).await {
            Ok(r) => results.push(r),
            Err(e) => return failure(e),
        }
    }
    for r in &results {
        ctx.log.line(&format!("[weft] {}", describe(r))).await;
    }
    if let Err(e) = record_results(&conn, ctx, &results).await {
        ctx.log
            .line(&format!(
                "[weft] could not store test results in weft_test_results: {e}"
            ))
            .await;
    }
    let failed: Vec<&TestResult> = results.iter().filter(|r| r.failures > 0).collect();
    if failed.is_empty() {
        ctx.log
            .line(&format!(
                "[weft] {} model(s) built, {} test(s) passed",
                spec.models.len(),
                results.len()
            ))
            .await;
        TryOutcome::success()
    } else {
        let names: Vec<String> = failed.iter().map(|r| describe(r)).collect();
        let kept = if blocked.is_empty() {
            String::new()
        } else {
            format!(" (kept the previous {})", blocked.join(", "))
        };
        failure(format!(
            "{} of {} data test(s) failed{kept}: {}",
            failed.len(),
            results.len(),
            names.join("; ")
        ))
    }
}

/// Rendered SQL of every model in build order (for `weft models compile`).
pub fn compile(
    spec: &TransformSpec,
    ctx: &TemplateContext,
) -> Result<Vec<(String, String, String)>, String> {
    spec.order
        .iter()
        .map(|&i| {
            let m = &spec.models[i];
            render_model(m, ctx).map(|sql| (m.name.clone(), m.materialized.name().to_string(), sql))
        })
        .collect()
}

/// Runs only the data tests (for `weft models test`).
pub async fn test_only(
    conn: &DatabaseConnection,
    spec: &TransformSpec,
) -> Result<Vec<(String, bool, String)>, String> {
    let mut out = Vec::new();
    for t in &spec.tests {
        let r = run_test(conn, t, &t.model).await?;
        out.push((r.name.clone(), r.failures == 0, describe(&r)));
    }
    Ok(out)
}
