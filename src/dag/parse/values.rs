//! Values and their spans: reading strings, numbers, durations, lists and tables out
//! of the spanned TOML tree, each problem a diagnostic at the value's span.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::*;

/// The deepest nesting of arrays and inline tables a DAG file may use.
pub(crate) const MAX_NESTING: usize = 64;

/// Where brackets first nest deeper than [`MAX_NESTING`], outside strings and comments;
/// checked before parsing so the TOML parser never recurses that deep.
pub(crate) fn nesting_too_deep(src: &str) -> Option<usize> {
    let b = src.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            q @ (b'"' | b'\'') => {
                let triple = b.get(i..i + 3) == Some(&[q, q, q][..]);
                i += if triple { 3 } else { 1 };
                while i < b.len() {
                    if q == b'"' && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if triple {
                        if b.get(i..i + 3) == Some(&[q, q, q][..]) {
                            i += 2;
                            break;
                        }
                    } else if b[i] == q || b[i] == b'\n' {
                        break;
                    }
                    i += 1;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'\n' if depth == 0 => {}
            _ => {}
        }
        i += 1;
    }
    None
}

/// Entries of a table in the order they appear in the file.
pub(crate) fn entries<'t, 'i>(
    t: &'t DeTable<'i>,
) -> Vec<(&'t Spanned<std::borrow::Cow<'i, str>>, &'t Value<'i>)> {
    let mut v: Vec<_> = t.iter().collect();
    v.sort_by_key(|(k, _)| k.span().start);
    v
}

pub(crate) fn lookup<'t, 'i>(t: &'t DeTable<'i>, key: &str) -> Option<&'t Value<'i>> {
    t.iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}

/// An http(s) URL, or a template that renders to one at run time.
pub(crate) fn url_or_template(url: &str) -> bool {
    template::is_templated(url) || url.starts_with("http://") || url.starts_with("https://")
}

/// Letters, digits, `_`, `-` and `.`, starting with a letter, digit or `_` (so no id is
/// `.`, `..` or reads as a command-line option such as `-rf`).
pub(crate) fn is_identifier(s: &str) -> bool {
    s.len() <= 200
        && s.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Parses `2026-01-01`, `2026-01-01T02:00:00` (both in `tz`) or an RFC 3339 time.
pub(crate) fn parse_datetime_in(s: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        let dt = dt.with_timezone(&Utc);
        if !(MIN_YEAR..=MAX_YEAR).contains(&dt.year()) {
            return Err(format!(
                "\"{s}\" is out of range; dates must lie between the years {MIN_YEAR} and {MAX_YEAR}"
            ));
        }
        return Ok(dt);
    }
    let naive = if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0)
    } else {
        [
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d %H:%M",
        ]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    };
    let naive = naive.ok_or_else(|| {
        format!(
            "\"{s}\" is not a date or time; expected e.g. \"2026-01-01\" or \"2026-01-01T02:00:00\""
        )
    })?;
    if !(MIN_YEAR..=MAX_YEAR).contains(&naive.year()) {
        return Err(format!(
            "\"{s}\" is out of range; dates must lie between the years {MIN_YEAR} and {MAX_YEAR}"
        ));
    }
    tz.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(naive + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|d| d.with_timezone(&Utc))
        .ok_or_else(|| format!("\"{s}\" does not exist in time zone {tz}"))
}

impl Parser<'_, '_> {
    pub(crate) fn err(&mut self, span: Range<usize>, task: Option<&str>, msg: impl Into<String>) {
        self.sink.error(span, task, msg);
    }

    pub(crate) fn check_keys(
        &mut self,
        t: &DeTable<'_>,
        task: Option<&str>,
        allowed: &[&str],
        what: &str,
    ) {
        for (k, _) in entries(t) {
            let key = k.get_ref().as_ref();
            if !allowed.contains(&key) {
                let hint = did_you_mean(key, allowed.iter().copied());
                self.err(
                    k.span(),
                    task,
                    format!("unknown key \"{key}\" in {what}{hint}"),
                );
            }
        }
    }

    /// The text of a file the definition reads (`rel` is relative to the DAG file's
    /// folder), or a diagnostic on `span` saying why there is none. A file the bundle
    /// does not hold yet is asked for.
    pub(crate) fn file_text(
        &mut self,
        span: Range<usize>,
        task: Option<&str>,
        key: &str,
        what: &str,
        rel: &str,
    ) -> Option<String> {
        let bundle = self.bundle;
        match bundle.files.get(rel) {
            None => {
                self.wants.push(Want::File(rel.to_string()));
                None
            }
            Some(FileEntry::Text(s)) => Some(s.clone()),
            Some(FileEntry::Outside) => {
                self.err(
                    span,
                    task,
                    format!("\"{key}\" = \"{rel}\" is outside the DAG's folder; files a DAG reads must be inside the folder of its TOML file"),
                );
                None
            }
            Some(FileEntry::TooBig(n)) => {
                self.err(
                    span,
                    task,
                    format!("{what} \"{rel}\" is {n} bytes; at most {MAX_FILE_BYTES} are allowed"),
                );
                None
            }
            Some(FileEntry::Unreadable(e)) => {
                self.err(span, task, format!("cannot read {what} \"{rel}\": {e}"));
                None
            }
        }
    }

    pub(crate) fn type_error(&mut self, v: &Value<'_>, task: Option<&str>, key: &str, want: &str) {
        let found = v.get_ref().type_str();
        self.err(
            v.span(),
            task,
            format!("\"{key}\" must be {want}, found {found}"),
        );
    }

    pub(crate) fn string(
        &mut self,
        v: &Value<'_>,
        task: Option<&str>,
        key: &str,
    ) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) if s.contains('\0') => {
                self.err(
                    v.span(),
                    task,
                    format!("\"{key}\" contains a NUL character"),
                );
                None
            }
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.type_error(v, task, key, "a string");
                None
            }
        }
    }

    pub(crate) fn boolean(&mut self, v: &Value<'_>, task: Option<&str>, key: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.type_error(v, task, key, "true or false");
                None
            }
        }
    }

    pub(crate) fn integer(
        &mut self,
        v: &Value<'_>,
        task: Option<&str>,
        key: &str,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let DeValue::Integer(i) = v.get_ref() else {
            self.type_error(v, task, key, "an integer");
            return None;
        };
        let digits: String = i.as_str().chars().filter(|c| *c != '_').collect();
        let digits = digits
            .trim_start_matches("0x")
            .trim_start_matches("0o")
            .trim_start_matches("0b");
        match i64::from_str_radix(digits, i.radix()) {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            Ok(n) => {
                self.err(
                    v.span(),
                    task,
                    format!("\"{key}\" must be between {min} and {max}, found {n}"),
                );
                None
            }
            Err(_) => {
                self.err(v.span(), task, format!("\"{key}\" is not a valid integer"));
                None
            }
        }
    }

    pub(crate) fn duration(
        &mut self,
        v: &Value<'_>,
        task: Option<&str>,
        key: &str,
    ) -> Option<Duration> {
        let DeValue::String(s) = v.get_ref() else {
            self.type_error(
                v,
                task,
                key,
                "a duration string such as \"90s\", \"5m\" or \"1h30m\"",
            );
            return None;
        };
        match humantime::parse_duration(s.trim()) {
            Ok(d) if d.is_zero() && key != "retry_delay" => {
                self.err(
                    v.span(),
                    task,
                    format!("\"{key}\" must be longer than zero"),
                );
                None
            }
            Ok(d) if d > MAX_DURATION => {
                self.err(
                    v.span(),
                    task,
                    format!("\"{key}\" is {s}; the longest duration weft accepts is 366 days"),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.err(
                    v.span(),
                    task,
                    format!(
                        "\"{key}\": bad duration \"{s}\" ({}); write e.g. \"90s\", \"5m\" or \"1h30m\"",
                        e.to_string().to_lowercase()
                    ),
                );
                None
            }
        }
    }

    pub(crate) fn string_list(
        &mut self,
        v: &Value<'_>,
        task: Option<&str>,
        key: &str,
    ) -> Option<Vec<Spanned<String>>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.type_error(v, task, key, "a list of strings");
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push(Spanned::new(item.span(), s.to_string())),
                _ => {
                    let found = item.get_ref().type_str();
                    self.err(
                        item.span(),
                        task,
                        format!("\"{key}\" must list strings, found {found}"),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// A table of string values (env, headers); values are template-checked.
    pub(crate) fn string_table(
        &mut self,
        v: &Value<'_>,
        task: Option<&str>,
        key: &str,
        templated: bool,
    ) -> Option<BTreeMap<String, String>> {
        let DeValue::Table(t) = v.get_ref() else {
            self.type_error(v, task, key, "a table of strings");
            return None;
        };
        let mut out = BTreeMap::new();
        for (k, val) in entries(t) {
            let name = format!("{key}.{}", k.get_ref());
            let valid_var = |n: &str| {
                n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            };
            if key == "env" && !valid_var(k.get_ref()) {
                self.err(
                    k.span(),
                    task,
                    format!(
                        "environment variable name \"{}\" may only use letters, digits and '_', not starting with a digit",
                        k.get_ref().escape_debug()
                    ),
                );
                continue;
            }
            if let Some(s) = self.string(val, task, &name) {
                if templated {
                    self.check_template(val, &s, task, &[]);
                }
                out.insert(k.get_ref().to_string(), s);
            }
        }
        Some(out)
    }

    pub(crate) fn check_template(
        &mut self,
        v: &Value<'_>,
        text: &str,
        task: Option<&str>,
        extra: &[&str],
    ) {
        let params: Vec<&str> = self.param_names.iter().map(String::as_str).collect();
        let problems = template::check(text, &params, extra);
        if problems.is_empty() {
            return;
        }
        let span = v.span();
        let raw = self.src.get(span.clone()).unwrap_or("");
        // Where the text starts inside the literal: after `"`/`'`, or `"""`/`'''` and the
        // newline TOML trims after them. Exact unless the string has escapes.
        let mut prefix = if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
            3
        } else {
            1
        };
        if prefix == 3 && raw[3..].starts_with('\n') {
            prefix += 1;
        }
        for p in problems {
            let at = match p.offset {
                Some(o) if !raw.contains('\\') => span.start + prefix + o,
                _ => span.start,
            };
            self.err(at..at, task, p.message);
        }
    }

    pub(crate) fn method(&mut self, t: &DeTable<'_>, task: Option<&str>) -> Option<String> {
        let Some(m) = lookup(t, "method") else {
            return Some("POST".into());
        };
        let s = self.string(m, task, "method")?.to_uppercase();
        if HTTP_METHODS.contains(&s.as_str()) {
            Some(s)
        } else {
            self.err(
                m.span(),
                task,
                format!(
                    "unknown HTTP method \"{s}\"; use one of {}",
                    HTTP_METHODS.join(", ")
                ),
            );
            None
        }
    }

    pub(crate) fn required(
        &mut self,
        t: &DeTable<'_>,
        id: &str,
        key: &str,
        key_span: &Range<usize>,
        kind: &str,
    ) -> Option<(String, Range<usize>)> {
        match lookup(t, key) {
            Some(v) => {
                let s = self.string(v, Some(id), key)?;
                if s.trim().is_empty() {
                    self.err(v.span(), Some(id), format!("\"{key}\" is empty"));
                    return None;
                }
                self.check_template(v, &s, Some(id), &[]);
                Some((s, v.span()))
            }
            None => {
                self.err(
                    key_span.clone(),
                    Some(id),
                    format!("{kind} task needs \"{key}\""),
                );
                None
            }
        }
    }

    pub(crate) fn connection(&mut self, t: &DeTable<'_>, id: &str) -> Option<String> {
        match lookup(t, "connection") {
            Some(v) => {
                let c = self.string(v, Some(id), "connection")?;
                if !self.ctx.connections.contains(&c) {
                    let hint = did_you_mean(&c, self.ctx.connections.iter().map(String::as_str));
                    self.err(v.span(), Some(id), format!("unknown connection \"{c}\"{hint}; connections are declared in weft.toml [connections]"));
                }
                Some(c)
            }
            None => Some("warehouse".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_measured_outside_strings_and_comments() {
        let deep = format!("x = {}1{}", "[".repeat(65), "]".repeat(65));
        assert!(nesting_too_deep(&deep).is_some());
        let ok = format!("x = {}1{}", "[".repeat(64), "]".repeat(64));
        assert_eq!(nesting_too_deep(&ok), None);
        let quoted = format!("x = \"{}\"\n# {}", "[".repeat(100), "{".repeat(100));
        assert_eq!(nesting_too_deep(&quoted), None);
    }

    #[test]
    fn datetimes_read_in_the_dags_zone() {
        let tz: Tz = "Europe/Berlin".parse().expect("tz");
        let d = parse_datetime_in("2026-07-01", tz).expect("date");
        assert_eq!(d.to_rfc3339(), "2026-06-30T22:00:00+00:00");
        let dt = parse_datetime_in("2026-01-01T02:00:00", tz).expect("local");
        assert_eq!(dt.to_rfc3339(), "2026-01-01T01:00:00+00:00");
        let z = parse_datetime_in("2026-01-01T02:00:00Z", tz).expect("rfc3339");
        assert_eq!(z.to_rfc3339(), "2026-01-01T02:00:00+00:00");
        assert!(parse_datetime_in("yesterday", tz).is_err());
        assert!(parse_datetime_in("2026-02-30", tz).is_err());
    }

    #[test]
    fn identifiers_and_urls() {
        assert!(is_identifier("load_events-2.v1"));
        for bad in ["", ".", "..", "-rf", "a b", "a/b", "é"] {
            assert!(!is_identifier(bad), "{bad}");
        }
        assert!(url_or_template("https://example.com/x"));
        assert!(url_or_template("{{ base_url }}/health"));
        assert!(!url_or_template("ftp://example.com"));
    }
}
