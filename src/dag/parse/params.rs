//! `[params]`: typed run parameters with defaults, and their TOML values as JSON.

use super::*;

pub(crate) fn infer_type(v: &DeValue<'_>) -> Option<ParamType> {
    Some(match v {
        DeValue::String(_) => ParamType::String,
        DeValue::Integer(_) => ParamType::Int,
        DeValue::Float(_) => ParamType::Float,
        DeValue::Boolean(_) => ParamType::Bool,
        DeValue::Datetime(d) if d.date.is_some() && d.time.is_none() => ParamType::Date,
        _ => return None,
    })
}

pub(crate) fn toml_to_json(v: &DeValue<'_>) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    Some(match v {
        DeValue::String(s) => J::String(s.to_string()),
        DeValue::Integer(i) => {
            let digits: String = i.as_str().chars().filter(|c| *c != '_').collect();
            J::from(i64::from_str_radix(&digits, i.radix()).ok()?)
        }
        DeValue::Float(f) => J::from(f.as_str().replace('_', "").parse::<f64>().ok()?),
        DeValue::Boolean(b) => J::Bool(*b),
        DeValue::Datetime(d) => J::String(d.to_string()),
        _ => return None,
    })
}

impl Parser<'_, '_> {
    pub(crate) fn params(&mut self, v: &Value<'_>, scheduled: bool) -> Vec<Param> {
        let DeValue::Table(t) = v.get_ref() else {
            self.type_error(v, None, "params", "a table ([params])");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, pv) in entries(t) {
            let name = k.get_ref().to_string();
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                self.err(
                    k.span(),
                    None,
                    format!("param name \"{name}\" may only use letters, digits and '_'"),
                );
                continue;
            }
            let (ty, default, description) = match pv.get_ref() {
                DeValue::Table(pt) => {
                    self.check_keys(
                        pt,
                        None,
                        &["type", "default", "description"],
                        &format!("param \"{name}\""),
                    );
                    let ty = match lookup(pt, "type") {
                        Some(tv) => match self.string(tv, None, "type") {
                            Some(s) => match ParamType::from_name(&s) {
                                Some(t) => Some(t),
                                None => {
                                    let hint = did_you_mean(&s, ParamType::NAMES);
                                    self.err(tv.span(), None, format!("param \"{name}\": unknown type \"{s}\"{hint}; use one of {}", ParamType::NAMES.join(", ")));
                                    continue;
                                }
                            },
                            None => continue,
                        },
                        None => None,
                    };
                    let default = lookup(pt, "default");
                    let description =
                        lookup(pt, "description").and_then(|d| self.string(d, None, "description"));
                    let ty = match (ty, default) {
                        (Some(t), _) => t,
                        (None, Some(d)) => {
                            match infer_type(d.get_ref()) {
                                Some(t) => t,
                                None => {
                                    self.err(d.span(), None, format!("param \"{name}\": cannot infer a type from a {}; set type", d.get_ref().type_str()));
                                    continue;
                                }
                            }
                        }
                        (None, None) => {
                            self.err(
                                pv.span(),
                                None,
                                format!("param \"{name}\" needs a type or a default"),
                            );
                            continue;
                        }
                    };
                    let default = match default {
                        Some(d) => match toml_to_json(d.get_ref()).and_then(|j| ty.coerce(&j).ok())
                        {
                            Some(j) => Some(j),
                            None => {
                                self.err(
                                    d.span(),
                                    None,
                                    format!(
                                        "param \"{name}\": default is a {}, but the type is {}",
                                        d.get_ref().type_str(),
                                        ty.name()
                                    ),
                                );
                                continue;
                            }
                        },
                        None => None,
                    };
                    (ty, default, description)
                }
                other => match infer_type(other) {
                    Some(ty) => (
                        ty,
                        toml_to_json(other).and_then(|j| ty.coerce(&j).ok()),
                        None,
                    ),
                    None => {
                        self.err(pv.span(), None, format!("param \"{name}\": a {} cannot be a param; use a string, integer, float, boolean or date", other.type_str()));
                        continue;
                    }
                },
            };
            if default.is_none() && scheduled {
                self.err(
                    k.span(),
                    None,
                    format!("param \"{name}\" has no default, but scheduled runs need one"),
                );
            }
            out.push(Param {
                name,
                ty,
                default,
                description,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(src: &str) -> DeValue<'static> {
        let src: &'static str = Box::leak(format!("v = {src}").into_boxed_str());
        let t = DeTable::parse(src).expect("toml");
        t.get_ref().get("v").expect("v").get_ref().clone()
    }

    #[test]
    fn param_types_are_inferred_from_defaults() {
        assert_eq!(infer_type(&value("\"x\"")), Some(ParamType::String));
        assert_eq!(infer_type(&value("3")), Some(ParamType::Int));
        assert_eq!(infer_type(&value("0.5")), Some(ParamType::Float));
        assert_eq!(infer_type(&value("true")), Some(ParamType::Bool));
        assert_eq!(infer_type(&value("[1]")), None);
        assert_eq!(toml_to_json(&value("3")), Some(serde_json::json!(3)));
        assert_eq!(toml_to_json(&value("\"a\"")), Some(serde_json::json!("a")));
    }
}
