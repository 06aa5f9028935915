//! The keys of a `transform` task.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::*;
use crate::dag::parse::*;

const TEST_TYPES: &[&str] = &[
    "not_null",
    "unique",
    "accepted_values",
    "relationships",
    "sql",
];

impl Parser<'_, '_> {
    pub(crate) fn transform(
        &mut self,
        t: &DeTable<'_>,
        id: &str,
        key_span: Range<usize>,
    ) -> Option<TransformSpec> {
        let task = Some(id);
        let Some(mv) = lookup(t, "models") else {
            self.err(key_span, task, "transform task needs \"models\" (a glob such as \"models/*.sql\", or a list of files)");
            return None;
        };
        let patterns: Vec<String> = match mv.get_ref() {
            DeValue::String(s) => vec![s.to_string()],
            _ => self
                .string_list(mv, task, "models")?
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
        };
        let mut models: Vec<super::Model> = Vec::new();
        let mut ok = true;
        for pat in &patterns {
            let bundle = self.bundle;
            let files: &[String] = match bundle.globs.get(pat.as_str()) {
                None => {
                    self.wants.push(Want::Glob(pat.clone()));
                    ok = false;
                    continue;
                }
                Some(GlobEntry::Bad(e)) => {
                    self.err(
                        mv.span(),
                        task,
                        format!("bad models pattern \"{pat}\": {e}"),
                    );
                    ok = false;
                    continue;
                }
                Some(GlobEntry::Outside) => {
                    self.err(
                        mv.span(),
                        task,
                        format!("models pattern \"{pat}\" reaches outside the DAG's folder; model files must be inside it"),
                    );
                    ok = false;
                    continue;
                }
                Some(GlobEntry::Matches(files)) => files,
            };
            if files.is_empty() {
                self.err(mv.span(), task, format!("no model file matches \"{pat}\" (paths are relative to the DAG file's folder)"));
                ok = false;
            }
            for display in files {
                let Some(sql) = self.file_text(mv.span(), task, "models", "model", display) else {
                    ok = false;
                    continue;
                };
                let (m, errs) = super::models::model(display, sql);
                for e in errs {
                    self.err(mv.span(), task, e);
                    ok = false;
                }
                if models.iter().any(|x| x.name == m.name) {
                    self.err(
                        mv.span(),
                        task,
                        format!("two model files are named \"{}\"", m.name),
                    );
                    ok = false;
                }
                let params: Vec<&str> = self.param_names.iter().map(String::as_str).collect();
                for p in template::check(&m.sql, &params, &["ref", "config"]) {
                    self.err(mv.span(), task, format!("model {display}: {}", p.message));
                    ok = false;
                }
                models.push(m);
            }
        }
        let order = match super::models::order(&models) {
            Ok(o) => o,
            Err(errs) => {
                for e in errs {
                    self.err(mv.span(), task, e);
                }
                ok = false;
                Vec::new()
            }
        };
        let connection = self.connection(t, id)?;
        let tests_block = lookup(t, "tests_block")
            .and_then(|v| self.boolean(v, task, "tests_block"))
            .unwrap_or(false);
        let mut tests = Vec::new();
        if let Some(tv) = lookup(t, "tests") {
            match tv.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        match self.data_test(item, id, &models) {
                            Some(x) => tests.push(x),
                            None => ok = false,
                        }
                    }
                }
                _ => {
                    self.type_error(tv, task, "tests", "a list of tests ([[tasks.<id>.tests]])");
                    ok = false;
                }
            }
        }
        ok.then_some(TransformSpec {
            models,
            order,
            connection,
            tests,
            tests_block,
        })
    }

    pub(crate) fn data_test(
        &mut self,
        item: &Value<'_>,
        id: &str,
        models: &[super::Model],
    ) -> Option<super::DataTest> {
        let task = Some(id);
        let DeValue::Table(t) = item.get_ref() else {
            self.type_error(item, task, "tests", "a table with model, type and column");
            return None;
        };
        self.check_keys(
            t,
            task,
            &["name", "model", "type", "column", "values", "to", "sql"],
            "test",
        );
        let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
        let model = match lookup(t, "model") {
            Some(v) => {
                let m = self.string(v, task, "model")?;
                if !names.contains(&m.as_str()) {
                    let hint = did_you_mean(&m, names.iter().copied());
                    self.err(
                        v.span(),
                        task,
                        format!("test names unknown model \"{m}\"{hint}"),
                    );
                    return None;
                }
                m
            }
            None => {
                self.err(item.span(), task, "a test needs \"model\"");
                return None;
            }
        };
        let ty = match lookup(t, "type") {
            Some(v) => {
                let ty = self.string(v, task, "type")?;
                if !TEST_TYPES.contains(&ty.as_str()) {
                    let hint = did_you_mean(&ty, TEST_TYPES.iter().copied());
                    self.err(
                        v.span(),
                        task,
                        format!(
                            "unknown test type \"{ty}\"{hint}; use one of {}",
                            TEST_TYPES.join(", ")
                        ),
                    );
                    return None;
                }
                ty
            }
            None => {
                self.err(
                    item.span(),
                    task,
                    format!("a test needs \"type\" (one of {})", TEST_TYPES.join(", ")),
                );
                return None;
            }
        };
        let column = |p: &mut Self, key: &str| -> Option<(String, Range<usize>)> {
            match lookup(t, key) {
                Some(v) => {
                    let c = p.string(v, task, key)?;
                    Some((c, v.span()))
                }
                None => {
                    p.err(item.span(), task, format!("a {ty} test needs \"{key}\""));
                    None
                }
            }
        };
        let check = match ty.as_str() {
            "sql" => super::Check::Sql(column(self, "sql")?.0),
            _ => {
                let (col, span) = column(self, "column")?;
                if !super::is_sql_name(&col) {
                    self.err(
                        span,
                        task,
                        format!("column \"{col}\" is not a plain SQL name"),
                    );
                    return None;
                }
                match ty.as_str() {
                    "not_null" => super::Check::NotNull(col),
                    "unique" => super::Check::Unique(col),
                    "accepted_values" => {
                        let Some(v) = lookup(t, "values") else {
                            self.err(
                                item.span(),
                                task,
                                "an accepted_values test needs \"values\" (a list)",
                            );
                            return None;
                        };
                        let vals = self
                            .string_list(v, task, "values")?
                            .into_iter()
                            .map(Spanned::into_inner)
                            .collect();
                        super::Check::AcceptedValues(col, vals)
                    }
                    _ => {
                        let (to, span) = column(self, "to")?;
                        let Some((m, c)) = to
                            .split_once('.')
                            .filter(|(m, c)| names.contains(m) && super::is_sql_name(c))
                        else {
                            self.err(
                                span,
                                task,
                                format!(
                                    "\"to\" must be model.column with a known model, got \"{to}\""
                                ),
                            );
                            return None;
                        };
                        super::Check::Relationships {
                            column: col,
                            to_model: m.to_string(),
                            to_column: c.to_string(),
                        }
                    }
                }
            }
        };
        let name = match lookup(t, "name") {
            Some(v) => self.string(v, task, "name")?,
            None => match &check {
                super::Check::NotNull(c)
                | super::Check::Unique(c)
                | super::Check::AcceptedValues(c, _) => format!("{ty}({model}.{c})"),
                super::Check::Relationships {
                    column,
                    to_model,
                    to_column,
                } => format!("relationships({model}.{column} -> {to_model}.{to_column})"),
                super::Check::Sql(_) => format!("sql({model})"),
            },
        };
        Some(super::DataTest { name, model, check })
    }
}
