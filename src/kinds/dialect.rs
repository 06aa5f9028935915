//! The warehouse dialect layer: how kinds spell SQL for a warehouse on PostgreSQL or
//! SQLite. Placeholders, quoting of identifiers and literals, time comparisons and JSON
//! access are written here once; a kind never spells a backend difference itself.

use sea_orm::DbBackend;

/// The `i`-th (from 1) bind placeholder: `$i` on PostgreSQL, `?` on SQLite.
pub fn ph(b: DbBackend, i: usize) -> String {
    crate::db::ph(b, i)
}

/// A quoted identifier (table, column). Names reach here validated as plain SQL names;
/// a `"` is doubled all the same.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal (`'` doubled; NUL, which PostgreSQL refuses, dropped).
pub fn lit(s: &str) -> String {
    crate::dag::quote::sql_literal(s)
}

/// The text of JSON property `key` of the JSON column `{alias}properties`.
pub fn json_text(pg: bool, alias: &str, key: &str) -> String {
    if pg {
        format!("{alias}properties ->> {}", lit(key))
    } else {
        format!(
            "json_extract({alias}properties, {})",
            lit(&format!("$.\"{key}\""))
        )
    }
}

/// A time expression compared exactly on both backends: a timestamp on PostgreSQL
/// (microseconds), integer milliseconds since the epoch on SQLite (which keeps
/// milliseconds; `julianday` floats made `t0 + 7m` miss events exactly at the edge).
pub fn exact_time(pg: bool, expr: &str) -> String {
    if pg {
        format!("CAST({expr} AS TIMESTAMPTZ)")
    } else {
        // Seconds with milliseconds, scaled and rounded: exact integers (doubles hold
        // every millisecond count of the next 280,000 years exactly).
        format!("CAST(ROUND(unixepoch({expr}, 'subsec') * 1000) AS INTEGER)")
    }
}

/// A time column compared as a time (to the second) on both backends.
pub fn time_col(b: DbBackend, col: &str) -> String {
    if b == DbBackend::Postgres {
        col.to_string()
    } else {
        format!("julianday({col})")
    }
}

/// The `i`-th bind placeholder holding a time, comparable with [`time_col`].
pub fn time_param(b: DbBackend, i: usize) -> String {
    if b == DbBackend::Postgres {
        format!("CAST(${i} AS TIMESTAMPTZ)")
    } else {
        "julianday(?)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_is_safe_for_any_text() {
        assert_eq!(ident("events"), "\"events\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(lit("it's"), "'it''s'");
        assert_eq!(lit("a\0b"), "'ab'");
        assert_eq!(ph(DbBackend::Postgres, 3), "$3");
        assert_eq!(ph(DbBackend::Sqlite, 3), "?");
        assert_eq!(json_text(true, "e.", "plan"), "e.properties ->> 'plan'");
        assert_eq!(
            json_text(false, "", "$flag"),
            "json_extract(properties, '$.\"$flag\"')"
        );
    }
}
