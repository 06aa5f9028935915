//! Diagnostics for DAG files: a problem with its file, line, column, DAG and task,
//! plus the helpers that find positions and "did you mean" suggestions.

use std::fmt;
use std::ops::Range;

use serde::Serialize;

/// One problem found in a DAG file. Rendered as
/// `dags/x.toml:14:15: dag "x", task "load": <message>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub dag_id: Option<String>,
    pub task_id: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        match (&self.dag_id, &self.task_id) {
            (Some(d), Some(t)) => write!(f, "dag \"{d}\", task \"{t}\": ")?,
            (Some(d), None) => write!(f, "dag \"{d}\": ")?,
            (None, Some(t)) => write!(f, "task \"{t}\": ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

/// Maps byte offsets in a source text to 1-based line and column numbers
/// (columns count characters, not bytes).
#[derive(Debug)]
pub struct LineIndex<'s> {
    src: &'s str,
    starts: Vec<usize>,
}

impl<'s> LineIndex<'s> {
    pub fn new(src: &'s str) -> Self {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { src, starts }
    }

    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.src.len());
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        let column = self
            .src
            .get(start..offset)
            .map_or(1, |s| s.chars().count() + 1);
        (line + 1, column)
    }

    /// The text of a 1-based line, without its newline.
    pub fn line_text(&self, line: usize) -> &'s str {
        let Some(&start) = self.starts.get(line.wrapping_sub(1)) else {
            return "";
        };
        let end = self.starts.get(line).map_or(self.src.len(), |e| e - 1);
        self.src
            .get(start..end)
            .unwrap_or("")
            .trim_end_matches('\r')
    }
}

/// Collects diagnostics for one file.
#[derive(Debug)]
pub struct Sink<'s> {
    pub file: String,
    pub lines: LineIndex<'s>,
    pub dag_id: Option<String>,
    pub diagnostics: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

impl<'s> Sink<'s> {
    pub fn new(file: String, src: &'s str) -> Self {
        Sink {
            file,
            lines: LineIndex::new(src),
            dag_id: None,
            diagnostics: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn diagnostic(&self, span: Range<usize>, task: Option<&str>, message: String) -> Diagnostic {
        let (line, column) = self.lines.position(span.start);
        Diagnostic {
            file: self.file.clone(),
            line,
            column,
            dag_id: self.dag_id.clone(),
            task_id: task.map(str::to_owned),
            message,
        }
    }

    pub fn error(&mut self, span: Range<usize>, task: Option<&str>, message: impl Into<String>) {
        let d = self.diagnostic(span, task, message.into());
        self.diagnostics.push(d);
    }

    /// A problem that does not stop the DAG from loading; shown by `dags check`.
    pub fn warn(&mut self, span: Range<usize>, task: Option<&str>, message: impl Into<String>) {
        let d = self.diagnostic(span, task, message.into());
        self.warnings.push(d);
    }

    pub fn has_errors(&self) -> bool {
        !self.diagnostics.is_empty()
    }
}

/// The closest candidate to `word`, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= (c.chars().count().max(word.chars().count()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean "x"?)` or an empty string.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    suggest(word, candidates)
        .map(|s| format!(" (did you mean \"{s}\"?)"))
        .unwrap_or_default()
}

/// Renders diagnostics for a terminal: the one-line form, then the source line and a
/// caret under the column.
pub fn render_with_source(d: &Diagnostic, src: &str) -> String {
    let lines = LineIndex::new(src);
    let (text, column) = excerpt(lines.line_text(d.line), d.column);
    let gutter = d.line.to_string().len();
    format!(
        "{d}\n{:gutter$} |\n{} | {}\n{:gutter$} | {}^\n",
        "",
        d.line,
        text,
        "",
        " ".repeat(column.saturating_sub(1)),
    )
}

/// At most 120 characters of a line around a 1-based column (with `…` where cut), and
/// the column within the excerpt; control characters are shown as `?`.
fn excerpt(line: &str, column: usize) -> (String, usize) {
    const WIDTH: usize = 120;
    let chars: Vec<char> = line
        .chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect();
    if chars.len() <= WIDTH {
        return (chars.into_iter().collect(), column);
    }
    let at = column.saturating_sub(1).min(chars.len());
    let start = at.saturating_sub(WIDTH / 2);
    let end = (start + WIDTH).min(chars.len());
    let mut out = String::new();
    let mut col = at - start + 1;
    if start > 0 {
        out.push('…');
        col += 1;
    }
    out.extend(&chars[start..end]);
    if end < chars.len() {
        out.push('…');
    }
    (out, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_chars() {
        let idx = LineIndex::new("a = 1\nbé = 2\n");
        assert_eq!(idx.position(0), (1, 1));
        assert_eq!(idx.position(6), (2, 1));
        assert_eq!(idx.position(9), (2, 3));
        assert_eq!(idx.line_text(2), "bé = 2");
    }

    #[test]
    fn long_lines_are_cut_around_the_column() {
        let line = "x".repeat(1000);
        let (text, col) = excerpt(&line, 500);
        assert!(text.chars().count() <= 122, "{}", text.len());
        assert!(text.starts_with('…') && text.ends_with('…'));
        assert_eq!(col, 62);
        assert_eq!(excerpt("a\u{0}b", 2), ("a?b".to_string(), 2));
    }

    #[test]
    fn suggestions_only_for_close_words() {
        assert_eq!(suggest("extarct", ["extract", "load"]), Some("extract"));
        assert_eq!(
            suggest("retires", ["retries", "retry_delay"]),
            Some("retries")
        );
        assert_eq!(suggest("zzzz", ["extract", "load"]), None);
    }
}
