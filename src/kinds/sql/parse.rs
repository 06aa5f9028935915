//! The keys of a `sql` task.

use std::ops::Range;

use toml::de::DeTable;

use super::*;
use crate::dag::parse::*;

impl Parser<'_, '_> {
    pub(crate) fn sql(
        &mut self,
        t: &DeTable<'_>,
        id: &str,
        key_span: Range<usize>,
    ) -> Option<SqlSpec> {
        let connection = self.connection(t, id)?;
        let sql = match (lookup(t, "sql"), lookup(t, "file")) {
            (Some(_), None) => self.required(t, id, "sql", &key_span, "sql")?.0,
            (None, Some(f)) => {
                let rel = self.string(f, Some(id), "file")?;
                let s = self.file_text(f.span(), Some(id), "file", "sql file", &rel)?;
                let params: Vec<&str> = self.param_names.iter().map(String::as_str).collect();
                for p in template::check(&s, &params, &[]) {
                    self.err(f.span(), Some(id), format!("{rel}: {}", p.message));
                }
                s
            }
            (Some(s), Some(_)) => {
                self.err(
                    s.span(),
                    Some(id),
                    "give either \"sql\" or \"file\", not both",
                );
                return None;
            }
            (None, None) => {
                self.err(
                    key_span,
                    Some(id),
                    "sql task needs \"sql\" (inline statements) or \"file\" (a .sql file)",
                );
                return None;
            }
        };
        Some(SqlSpec { sql, connection })
    }
}
