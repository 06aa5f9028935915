//! Quoting of template values for the language they land in. A value rendered into a
//! shell command or an SQL statement is data, never code: the renderer leaves a marker
//! where each `{{ ... }}` value goes, and these lexers walk the rendered text, learn the
//! quoting context at each marker (a bare word, inside '...', inside "...", inside
//! `$(...)`, an SQL string literal, a quoted identifier, a comment) and put the value in
//! escaped for exactly that context. Values marked `| raw` are spliced as they are.
//!
//! Pure string functions: no I/O.

/// Where a rendered template goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    /// As written (environment values, paths, URLs, messages).
    Plain,
    /// A POSIX `sh -c` command.
    Shell,
    /// An SQL statement (SQLite or PostgreSQL).
    Sql,
}

/// A value captured while rendering: its text and whether it is a number or boolean
/// (which SQL may take bare).
#[derive(Debug, Clone, PartialEq)]
pub struct Captured {
    pub text: String,
    pub bare_ok: bool,
}

/// Opens and closes a marker; private-use code points that no template writes.
pub const OPEN: char = '\u{E000}';
pub const CLOSE: char = '\u{E001}';
const OPEN_UTF8: &[u8] = "\u{E000}".as_bytes();

/// Replaces each marker in `rendered` with its value quoted for its context.
pub fn fill(rendered: &str, values: &[Captured], quoting: Quoting) -> String {
    match quoting {
        Quoting::Plain => splice(rendered, values, |_, v| v.text.clone()),
        Quoting::Shell => fill_shell(rendered, values),
        Quoting::Sql => fill_sql(rendered, values),
    }
}

/// Calls `f(at, value)` for each marker, `at` its byte offset in `rendered` (callers
/// look up the context they computed there); copies the rest.
fn splice(
    rendered: &str,
    values: &[Captured],
    mut f: impl FnMut(usize, &Captured) -> String,
) -> String {
    let mut out = String::with_capacity(rendered.len());
    let mut rest = rendered;
    let mut at = 0;
    while let Some(i) = rest.find(OPEN) {
        out.push_str(&rest[..i]);
        let after = &rest[i + OPEN.len_utf8()..];
        match after.find(CLOSE).and_then(|j| {
            after[..j]
                .parse::<usize>()
                .ok()
                .and_then(|n| values.get(n))
                .map(|v| (j, v))
        }) {
            Some((j, v)) => {
                out.push_str(&f(at + i, v));
                let consumed = i + OPEN.len_utf8() + j + CLOSE.len_utf8();
                at += consumed;
                rest = &rest[consumed..];
            }
            None => {
                out.push(OPEN);
                let consumed = i + OPEN.len_utf8();
                at += consumed;
                rest = &rest[consumed..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Sh {
    /// Unquoted; `paren` when opened by `$(` (closed by its `)`), with nested `(` depth.
    Bare {
        paren: bool,
        depth: u32,
    },
    Single,
    Double,
    Backtick,
    Comment,
}

/// The shell context at each byte offset where a marker starts.
fn shell_contexts(text: &str) -> Vec<(usize, Sh)> {
    let b = text.as_bytes();
    let mut stack = vec![Sh::Bare {
        paren: false,
        depth: 0,
    }];
    let mut out = Vec::new();
    let mut i = 0;
    let mut word_start = true;
    while i < b.len() {
        let top = *stack.last().unwrap_or(&Sh::Bare {
            paren: false,
            depth: 0,
        });
        if b[i..].starts_with(OPEN_UTF8) {
            out.push((i, top));
            i += OPEN.len_utf8();
            word_start = false;
            continue;
        }
        let c = b[i];
        match top {
            Sh::Bare { .. } | Sh::Backtick => {
                let (paren, depth) = match top {
                    Sh::Bare { paren, depth } => (paren, depth),
                    _ => (false, 0),
                };
                let in_tick = matches!(top, Sh::Backtick);
                match c {
                    b'\\' => i += 1,
                    b'\'' => stack.push(Sh::Single),
                    b'"' => stack.push(Sh::Double),
                    b'`' if in_tick => {
                        stack.pop();
                    }
                    b'`' => stack.push(Sh::Backtick),
                    b'$' if b.get(i + 1) == Some(&b'(') => {
                        stack.push(Sh::Bare {
                            paren: true,
                            depth: 0,
                        });
                        i += 1;
                    }
                    b'(' if paren && !in_tick => {
                        if let Some(Sh::Bare { depth, .. }) = stack.last_mut() {
                            *depth += 1;
                        }
                    }
                    b')' if paren && !in_tick => {
                        if depth == 0 {
                            stack.pop();
                        } else if let Some(Sh::Bare { depth, .. }) = stack.last_mut() {
                            *depth -= 1;
                        }
                    }
                    b'#' if word_start => stack.push(Sh::Comment),
                    _ => {}
                }
            }
            Sh::Single => {
                if c == b'\'' {
                    stack.pop();
                }
            }
            Sh::Double => match c {
                b'\\' => i += 1,
                b'"' => {
                    stack.pop();
                }
                b'`' => stack.push(Sh::Backtick),
                b'$' if b.get(i + 1) == Some(&b'(') => {
                    stack.push(Sh::Bare {
                        paren: true,
                        depth: 0,
                    });
                    i += 1;
                }
                _ => {}
            },
            Sh::Comment => {
                if c == b'\n' {
                    stack.pop();
                }
            }
        }
        word_start = matches!(c, b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'(');
        i += 1;
    }
    out
}

/// A word the shell reads literally: unchanged when it has only safe characters,
/// otherwise in single quotes.
pub fn shell_word(v: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !v.is_empty() && v.chars().all(safe) {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', r"'\''"))
    }
}

fn fill_shell(rendered: &str, values: &[Captured]) -> String {
    let contexts = shell_contexts(rendered);
    let mut k = 0;
    splice(rendered, values, |at, v| {
        while k < contexts.len() && contexts[k].0 < at {
            k += 1;
        }
        let ctx = contexts.get(k).map_or(
            Sh::Bare {
                paren: false,
                depth: 0,
            },
            |c| c.1,
        );
        let text = v.text.replace('\0', "");
        match ctx {
            Sh::Bare { .. } | Sh::Backtick => shell_word(&text),
            Sh::Single => text.replace('\'', r"'\''"),
            Sh::Double => {
                let mut s = String::with_capacity(text.len());
                for ch in text.chars() {
                    if matches!(ch, '\\' | '$' | '`' | '"') {
                        s.push('\\');
                    }
                    s.push(ch);
                }
                s
            }
            Sh::Comment => shell_word(&text).replace(['\n', '\r'], " "),
        }
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Sq {
    Code,
    Str,
    Ident,
    Line,
    Block,
    Dollar(String),
}

fn sql_contexts(text: &str) -> Vec<(usize, Sq)> {
    let b = text.as_bytes();
    let mut state = Sq::Code;
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(OPEN_UTF8) {
            out.push((i, state.clone()));
            i += OPEN.len_utf8();
            continue;
        }
        let c = b[i];
        match &state {
            Sq::Code => match c {
                b'\'' => state = Sq::Str,
                b'"' => state = Sq::Ident,
                b'-' if b.get(i + 1) == Some(&b'-') => state = Sq::Line,
                b'/' if b.get(i + 1) == Some(&b'*') => {
                    state = Sq::Block;
                    i += 1;
                }
                b'$' => {
                    // $tag$ opens a dollar-quoted string (PostgreSQL); $1 is a parameter.
                    let tag_end = text[i + 1..]
                        .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                        .map(|j| i + 1 + j);
                    if let Some(e) = tag_end
                        && b.get(e) == Some(&b'$')
                        && !b.get(i + 1).is_some_and(u8::is_ascii_digit)
                    {
                        state = Sq::Dollar(text[i..=e].to_string());
                        i = e;
                    }
                }
                _ => {}
            },
            Sq::Str | Sq::Ident => {
                // A doubled quote is the quote itself; a single one closes.
                let q = if state == Sq::Str { b'\'' } else { b'"' };
                if c == q {
                    if b.get(i + 1) == Some(&q) {
                        i += 1;
                    } else {
                        state = Sq::Code;
                    }
                }
            }
            Sq::Line => {
                if c == b'\n' {
                    state = Sq::Code;
                }
            }
            Sq::Block => {
                if c == b'*' && b.get(i + 1) == Some(&b'/') {
                    state = Sq::Code;
                    i += 1;
                }
            }
            Sq::Dollar(tag) => {
                if b[i..].starts_with(tag.as_bytes()) {
                    i += tag.len() - 1;
                    state = Sq::Code;
                }
            }
        }
        i += 1;
    }
    out
}

/// An SQL string literal.
pub fn sql_literal(v: &str) -> String {
    format!("'{}'", v.replace('\0', "").replace('\'', "''"))
}

fn fill_sql(rendered: &str, values: &[Captured]) -> String {
    let contexts = sql_contexts(rendered);
    let mut k = 0;
    splice(rendered, values, |at, v| {
        while k < contexts.len() && contexts[k].0 < at {
            k += 1;
        }
        let ctx = contexts.get(k).map_or(Sq::Code, |c| c.1.clone());
        let text = v.text.replace('\0', "");
        match ctx {
            Sq::Code if v.bare_ok => text,
            Sq::Code => sql_literal(&text),
            Sq::Str => text.replace('\'', "''"),
            Sq::Ident => text.replace('"', "\"\""),
            Sq::Line => text.replace(['\n', '\r'], " "),
            Sq::Block => text.replace("*/", "* /"),
            Sq::Dollar(tag) => text.replace(tag.as_str(), ""),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(n: usize) -> String {
        format!("{OPEN}{n}{CLOSE}")
    }

    fn s(t: &str) -> Captured {
        Captured {
            text: t.into(),
            bare_ok: false,
        }
    }

    #[test]
    fn shell_values_are_quoted_for_their_context() {
        let evil = s("$(touch f); rm -rf / 'x' \"y\" `z`");
        let cases = [
            (
                format!("echo {}", m(0)),
                "echo '$(touch f); rm -rf / '\\''x'\\'' \"y\" `z`'",
            ),
            (
                format!("echo '{}'", m(0)),
                "echo '$(touch f); rm -rf / '\\''x'\\'' \"y\" `z`'",
            ),
            (
                format!("echo \"{}\"", m(0)),
                "echo \"\\$(touch f); rm -rf / 'x' \\\"y\\\" \\`z\\`\"",
            ),
            (
                format!("echo \"$(printf %s {})\"", m(0)),
                "echo \"$(printf %s '$(touch f); rm -rf / '\\''x'\\'' \"y\" `z`')\"",
            ),
        ];
        for (tmpl, want) in cases {
            assert_eq!(
                fill(&tmpl, std::slice::from_ref(&evil), Quoting::Shell),
                want,
                "{tmpl}"
            );
        }
        // Safe words stay as they are, so `'{{ ds }}'` and `{{ ds }}` both work.
        assert_eq!(
            fill(
                &format!("echo {} '{}'", m(0), m(0)),
                &[s("2026-01-01")],
                Quoting::Shell
            ),
            "echo 2026-01-01 '2026-01-01'"
        );
        assert_eq!(
            fill(&format!("echo {}", m(0)), &[s("")], Quoting::Shell),
            "echo ''"
        );
        // A comment cannot be ended by a newline in a value.
        assert_eq!(
            fill(&format!("true # {}", m(0)), &[s("a\nrm x")], Quoting::Shell),
            "true # 'a rm x'"
        );
    }

    #[test]
    fn sql_values_are_literals_or_escaped_inside_strings() {
        let v = [
            s("x'; DROP TABLE t; --"),
            Captured {
                text: "42".into(),
                bare_ok: true,
            },
        ];
        assert_eq!(
            fill(
                &format!(
                    "SELECT {} , '{}', {} -- {}\nFROM \"{}\"",
                    m(0),
                    m(0),
                    m(1),
                    m(0),
                    m(0)
                ),
                &v,
                Quoting::Sql
            ),
            "SELECT 'x''; DROP TABLE t; --' , 'x''; DROP TABLE t; --', 42 -- x'; DROP TABLE t; --\nFROM \"x'; DROP TABLE t; --\""
        );
        assert_eq!(
            fill(
                &format!("SELECT $$ {} $$", m(0)),
                &[s("a $$ b")],
                Quoting::Sql
            ),
            "SELECT $$ a  b $$"
        );
        assert_eq!(
            fill(&format!("/* {} */", m(0)), &[s("*/ drop")], Quoting::Sql),
            "/* * / drop */"
        );
    }

    #[test]
    fn stray_markers_are_kept() {
        assert_eq!(
            fill(&format!("a {OPEN}x"), &[], Quoting::Shell),
            format!("a {OPEN}x")
        );
        assert_eq!(
            fill(&format!("a {}", m(5)), &[], Quoting::Plain),
            format!("a {}", m(5))
        );
    }
}
