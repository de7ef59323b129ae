//! Trigger rules from text: the form [`TriggerRule`]'s `Display` writes,
//! e.g. `any(one_failed, context_value(force, equals true))`.

use std::str::FromStr;

use serde_json::Value;

use super::{TriggerRule, ValueCondition};

/// Text that is not a trigger rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid trigger rule `{text}`: {reason}")]
pub struct TriggerRuleError {
    /// The part of the text that was refused.
    pub text: String,
    /// What is wrong and what is allowed.
    pub reason: String,
}

const FORMS: &str = "expected all_success, all_done (always), one_success, one_failed, none_failed, \
                     task_success(id), task_failed(id), task_skipped(id), context_value(key, condition), \
                     all(rules), any(rules) or none(rules)";

const CONDITIONS: &str = "expected exists, not_exists, or equals / not_equals / greater_than / less_than / \
                          contains / not_contains followed by a JSON value";

fn err(text: &str, reason: impl Into<String>) -> TriggerRuleError {
    TriggerRuleError { text: text.trim().to_owned(), reason: reason.into() }
}

/// Splits `a, b(c, d), "e,f"` at its top-level commas.
fn split_args(text: &str) -> Result<Vec<&str>, TriggerRuleError> {
    let mut parts = Vec::new();
    let (mut depth, mut start, mut in_string, mut escaped) = (0i32, 0usize, false, false);
    for (i, c) in text.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth < 0 {
                    return Err(err(text, format!("unbalanced `{c}`")));
                }
            }
            ',' if depth == 0 => {
                parts.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if in_string || depth != 0 {
        return Err(err(text, "unbalanced brackets or quotes"));
    }
    let last = text[start..].trim();
    if !last.is_empty() || !parts.is_empty() {
        parts.push(last);
    }
    if parts.iter().any(|p| p.is_empty()) {
        return Err(err(text, "an argument is empty"));
    }
    Ok(parts)
}

/// An id argument: bare (`load`) or quoted (`"load-2"`).
fn id_arg(form: &str, args: &[&str], whole: &str) -> Result<String, TriggerRuleError> {
    match args {
        [one] => match serde_json::from_str::<Value>(one) {
            Ok(Value::String(s)) => Ok(s),
            _ => Ok((*one).to_owned()),
        },
        _ => Err(err(whole, format!("`{form}` takes one task id, e.g. {form}(load)"))),
    }
}

fn condition(text: &str) -> Result<ValueCondition, TriggerRuleError> {
    let text = text.trim();
    let (op, rest) = match text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        Some(i) => (&text[..i], text[i..].trim()),
        None => (text, ""),
    };
    // `equals(5)` is accepted as well as `equals 5`.
    let rest = match rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        Some(inner) => inner.trim(),
        None => rest,
    };
    let value = || -> Result<Value, TriggerRuleError> {
        serde_json::from_str(rest).map_err(|e| err(text, format!("`{op}` needs a JSON value after it: {e}")))
    };
    Ok(match op {
        "exists" if rest.is_empty() => ValueCondition::Exists,
        "not_exists" if rest.is_empty() => ValueCondition::NotExists,
        "equals" => ValueCondition::Equals(value()?),
        "not_equals" => ValueCondition::NotEquals(value()?),
        "greater_than" => ValueCondition::GreaterThan(value()?),
        "less_than" => ValueCondition::LessThan(value()?),
        "contains" => ValueCondition::Contains(value()?),
        "not_contains" => ValueCondition::NotContains(value()?),
        _ => return Err(err(text, CONDITIONS)),
    })
}

fn rule(text: &str) -> Result<TriggerRule, TriggerRuleError> {
    let text = text.trim();
    let (name, args) = match text.find('(') {
        Some(open) if text.ends_with(')') => (text[..open].trim(), Some(&text[open + 1..text.len() - 1])),
        Some(_) => return Err(err(text, "a rule with arguments ends with `)`")),
        None => (text, None),
    };
    let args = args.map(split_args).transpose()?;
    let plain = |r: TriggerRule| match &args {
        None => Ok(r),
        Some(_) => Err(err(text, format!("`{name}` takes no arguments"))),
    };
    let list = |make: fn(Vec<TriggerRule>) -> TriggerRule| match &args {
        Some(a) => Ok(make(a.iter().map(|r| rule(r)).collect::<Result<_, _>>()?)),
        None => Err(err(text, format!("`{name}` takes a list of rules, e.g. {name}(one_failed, all_done)"))),
    };
    let id = || id_arg(name, args.as_deref().unwrap_or(&[]), text);
    match name {
        "all_success" => plain(TriggerRule::AllSuccess),
        "all_done" | "always" => plain(TriggerRule::AllDone),
        "one_success" => plain(TriggerRule::OneSuccess),
        "one_failed" => plain(TriggerRule::OneFailed),
        "none_failed" => plain(TriggerRule::NoneFailed),
        "task_success" => Ok(TriggerRule::TaskSuccess(id()?)),
        "task_failed" => Ok(TriggerRule::TaskFailed(id()?)),
        "task_skipped" => Ok(TriggerRule::TaskSkipped(id()?)),
        "context_value" => match args.as_deref() {
            Some([key, cond]) => {
                Ok(TriggerRule::ContextValue { key: id_arg(name, &[key], text)?, condition: condition(cond)? })
            }
            _ => Err(err(text, "`context_value` takes a key and a condition, e.g. context_value(force, equals true)")),
        },
        "all" => list(TriggerRule::All),
        "any" => list(TriggerRule::Any),
        "none" => list(TriggerRule::None),
        _ => Err(err(text, FORMS)),
    }
}

impl FromStr for TriggerRule {
    type Err = TriggerRuleError;
    /// Parses the form `Display` writes; whitespace between parts is free.
    /// Ids and keys may be quoted as JSON strings (`task_success("load-2")`),
    /// and must be when they hold `,`, brackets, quotes or surrounding
    /// spaces (`Display` writes them bare, so for those its text does not
    /// parse back).
    ///
    /// ```
    /// use cloacina_core::{TriggerRule, ValueCondition};
    /// let rule: TriggerRule = "any(one_failed, context_value(force_alert, equals true))".parse()?;
    /// assert_eq!(rule, TriggerRule::Any(vec![
    ///     TriggerRule::OneFailed,
    ///     TriggerRule::ContextValue { key: "force_alert".into(), condition: ValueCondition::Equals(true.into()) },
    /// ]));
    /// assert!("one_faild".parse::<TriggerRule>().is_err());
    /// # Ok::<(), cloacina_core::trigger::TriggerRuleError>(())
    /// ```
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        rule(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(s: &str) -> TriggerRule {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn every_display_form_parses_back() {
        let rules = [
            TriggerRule::AllSuccess,
            TriggerRule::AllDone,
            TriggerRule::OneSuccess,
            TriggerRule::OneFailed,
            TriggerRule::NoneFailed,
            TriggerRule::TaskSuccess("a".into()),
            TriggerRule::TaskFailed("b".into()),
            TriggerRule::TaskSkipped("c".into()),
            TriggerRule::ContextValue { key: "k".into(), condition: ValueCondition::Exists },
            TriggerRule::ContextValue { key: "k".into(), condition: ValueCondition::NotExists },
            TriggerRule::ContextValue { key: "k".into(), condition: ValueCondition::Equals(json!("a, b)")) },
            TriggerRule::ContextValue { key: "k".into(), condition: ValueCondition::NotEquals(json!([1, 2])) },
            TriggerRule::ContextValue { key: "k".into(), condition: ValueCondition::GreaterThan(json!(-1.5)) },
            TriggerRule::ContextValue { key: "k".into(), condition: ValueCondition::LessThan(json!(3)) },
            TriggerRule::ContextValue { key: "k".into(), condition: ValueCondition::Contains(json!({"x": 1})) },
            TriggerRule::ContextValue { key: "k".into(), condition: ValueCondition::NotContains(json!(null)) },
            TriggerRule::All(vec![]),
            TriggerRule::Any(vec![TriggerRule::OneFailed, TriggerRule::None(vec![TriggerRule::AllDone])]),
        ];
        for r in rules {
            assert_eq!(parse(&r.to_string()), r, "{r}");
        }
    }

    #[test]
    fn spacing_quotes_and_aliases() {
        assert_eq!(
            parse(" any ( one_failed , task_success ( \"load-2\" ) ) "),
            TriggerRule::Any(vec![TriggerRule::OneFailed, TriggerRule::TaskSuccess("load-2".into())])
        );
        assert_eq!(parse("always"), TriggerRule::AllDone);
        assert_eq!(
            parse("context_value(n, greater_than(5))"),
            TriggerRule::ContextValue { key: "n".into(), condition: ValueCondition::GreaterThan(json!(5)) }
        );
    }

    #[test]
    fn bad_text_says_what_is_allowed() {
        for (text, needle) in [
            ("one_faild", "expected all_success"),
            ("task_success", "takes one task id"),
            ("task_success(a, b)", "takes one task id"),
            ("all_done(x)", "takes no arguments"),
            ("any", "takes a list of rules"),
            ("any(one_failed", "ends with `)`"),
            ("any(one_failed,)", "empty"),
            ("context_value(k)", "takes a key and a condition"),
            ("context_value(k, equals)", "needs a JSON value"),
            ("context_value(k, bigger 3)", "expected exists"),
            ("all(\"x)", "unbalanced"),
        ] {
            let e = text.parse::<TriggerRule>().unwrap_err();
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }
}
