//! `on_failure`, `on_success`, `on_retry`: a command or an HTTP request, on a DAG or a
//! task.

use super::*;

impl Parser<'_, '_> {
    pub(crate) fn callbacks(&mut self, t: &DeTable<'_>, task: Option<&str>) -> Callbacks {
        let mut cb = Callbacks::default();
        for key in ["on_failure", "on_success", "on_retry"] {
            let Some(v) = lookup(t, key) else { continue };
            let parsed = self.callback(v, task, key);
            match key {
                "on_failure" => cb.on_failure = parsed,
                "on_success" => cb.on_success = parsed,
                _ => cb.on_retry = parsed,
            }
        }
        cb
    }

    pub(crate) fn callback(
        &mut self,
        v: &Value<'_>,
        task: Option<&str>,
        key: &str,
    ) -> Option<Callback> {
        let extra = template::CALLBACK_VARIABLES;
        match v.get_ref() {
            DeValue::String(s) => {
                self.check_template(v, s, task, extra);
                Some(Callback::Command {
                    command: s.to_string(),
                })
            }
            DeValue::Table(t) => {
                self.check_keys(t, task, &["command", "url", "method", "headers"], key);
                match (lookup(t, "command"), lookup(t, "url")) {
                    (Some(c), None) => {
                        let command = self.string(c, task, "command")?;
                        self.check_template(c, &command, task, extra);
                        Some(Callback::Command { command })
                    }
                    (None, Some(u)) => {
                        let url = self.string(u, task, "url")?;
                        self.check_template(u, &url, task, extra);
                        let method = self.method(t, task)?;
                        let headers = lookup(t, "headers")
                            .and_then(|h| self.string_table(h, task, "headers", false))
                            .unwrap_or_default();
                        Some(Callback::Http {
                            url,
                            method,
                            headers,
                        })
                    }
                    _ => {
                        self.err(
                            v.span(),
                            task,
                            format!("\"{key}\" needs exactly one of command or url"),
                        );
                        None
                    }
                }
            }
            _ => {
                self.type_error(
                    v,
                    task,
                    key,
                    "a shell command or a table { command = ... } / { url = ... }",
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::dag::bundle::Bundle;
    use crate::dag::{Callback, ValidationContext};

    fn parse(src: &str) -> Result<crate::dag::Dag, Vec<String>> {
        let b = Bundle::of_toml(src);
        let (r, _) = super::super::parse_bundle(
            "c.toml",
            std::path::Path::new("c.toml"),
            &b,
            &ValidationContext::default(),
        );
        r.map_err(|d| d.into_iter().map(|d| d.message).collect())
    }

    #[test]
    fn a_callback_is_a_command_or_a_request_never_both() {
        let d = parse("on_failure = \"echo failed\"\n[tasks.a]\nkind = \"noop\"\non_retry = { url = \"https://example.com/hook\" }\n")
            .expect("valid");
        assert!(
            matches!(&d.callbacks.on_failure, Some(Callback::Command { command }) if command == "echo failed")
        );
        assert!(matches!(
            &d.tasks[0].callbacks.on_retry,
            Some(Callback::Http { url, .. }) if url == "https://example.com/hook"
        ));
        let e = parse("[tasks.a]\nkind = \"noop\"\non_failure = { command = \"x\", url = \"https://e.com\" }\n")
            .expect_err("both");
        assert_eq!(e.len(), 1, "{e:?}");
    }
}
