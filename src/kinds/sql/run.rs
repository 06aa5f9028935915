//! `sql`: statements run against a named warehouse connection, templated with the run's
//! variables.

use sea_orm::ConnectionTrait;

use crate::db::tasks::TryOutcome;
use crate::kinds::env::{RunContext, failure};

pub async fn run(ctx: &mut RunContext<'_>, sql: &str, connection: &str) -> TryOutcome {
    let sql = match ctx.tmpl.render_for(sql, crate::dag::template::Quoting::Sql) {
        Ok(s) => s,
        Err(e) => return failure(e),
    };
    let conn = match ctx.warehouses.get(connection).await {
        Ok(c) => c,
        Err(e) => return failure(e),
    };
    ctx.log
        .line(&format!("[weft] on connection \"{connection}\":"))
        .await;
    for line in sql.lines() {
        ctx.log.line(line).await;
    }
    let started = std::time::Instant::now();
    match conn.execute_unprepared(&sql).await {
        Ok(res) => {
            ctx.log
                .line(&format!(
                    "[weft] ok: {} rows affected in {} ms",
                    res.rows_affected(),
                    started.elapsed().as_millis()
                ))
                .await;
            TryOutcome::success()
        }
        Err(e) => failure(format!("sql error on connection \"{connection}\": {e}")),
    }
}
