//! Parsing the arguments of `#[task(...)]` and `#[workflow(...)]`:
//! `key = value` pairs, where a value is every token up to the next
//! top-level comma (so `trigger = any(one_failed, task_success(check))`
//! and `timeout = 30s` need no quoting).

use std::time::Duration;

use cloacina_core::{RetryPolicy, TriggerRule};
use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{Error, Ident, Lit, LitStr, Path, Result};

/// One `key = value` argument.
pub(crate) struct Arg {
    pub(crate) key: Ident,
    pub(crate) value: TokenStream,
}

impl Arg {
    /// The span of the whole value.
    pub(crate) fn value_span(&self) -> Span {
        let mut iter = self.value.clone().into_iter();
        let first = iter.next().map(|t| t.span()).unwrap_or_else(|| self.key.span());
        let last = iter.last().map(|t| t.span());
        last.and_then(|l| first.join(l)).unwrap_or(first)
    }
}

impl Arg {
    /// An error covering the whole value.
    pub(crate) fn error(&self, message: impl std::fmt::Display) -> Error {
        Error::new_spanned(&self.value, message)
    }
}

/// The tokens as text in one fixed form, whatever the compiler's
/// printing: one space between tokens (none after an opening bracket), a
/// `-` joined to what follows, string literals as JSON strings, `_`
/// dropped from plain numbers. Used for trigger rules written without
/// quotes, and for code fingerprints.
pub(crate) fn tokens_text(tokens: TokenStream) -> String {
    let mut out = String::new();
    write_tokens(tokens, &mut out);
    out
}

fn write_tokens(tokens: TokenStream, out: &mut String) {
    let mut glue = false;
    for t in tokens {
        // `a-b` and `-1` stay joined: ids may hold `-`, numbers a sign.
        let minus = matches!(&t, TokenTree::Punct(p) if p.as_char() == '-');
        let joined =
            out.is_empty() || glue || out.ends_with(['(', '[', '{']) || (minus && out.ends_with(char::is_alphanumeric));
        if !joined {
            out.push(' ');
        }
        glue = false;
        match t {
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::None => ("", ""),
                };
                out.push_str(open);
                write_tokens(g.stream(), out);
                out.push_str(close);
            }
            TokenTree::Ident(i) => out.push_str(&i.to_string()),
            TokenTree::Punct(p) => {
                out.push(p.as_char());
                glue = p.as_char() == '-';
            }
            TokenTree::Literal(l) => match syn::parse2::<Lit>(TokenTree::Literal(l.clone()).into()) {
                Ok(Lit::Str(s)) => out.push_str(&json_string(&s.value())),
                Ok(Lit::Int(i)) if i.suffix().is_empty() => out.push_str(i.base10_digits()),
                Ok(Lit::Float(f)) if f.suffix().is_empty() => out.push_str(f.base10_digits()),
                _ => out.push_str(&l.to_string()),
            },
        }
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Splits attribute arguments into `key = value` pairs.
pub(crate) fn parse_args(tokens: TokenStream, allowed: &[&str]) -> Result<Vec<Arg>> {
    let mut args: Vec<Arg> = Vec::new();
    let mut iter = tokens.into_iter().peekable();
    while iter.peek().is_some() {
        let key = match iter.next() {
            Some(TokenTree::Ident(i)) => i,
            Some(other) => {
                return Err(Error::new(other.span(), format!("expected an argument name: {}", allowed.join(", "))));
            }
            None => break,
        };
        let key_text = key.to_string();
        if !allowed.contains(&key_text.as_str()) {
            return Err(Error::new(
                key.span(),
                format!("unknown argument `{key_text}`; expected one of: {}", allowed.join(", ")),
            ));
        }
        if args.iter().any(|a| a.key == key_text) {
            return Err(Error::new(key.span(), format!("`{key_text}` is given twice")));
        }
        match iter.next() {
            Some(TokenTree::Punct(p)) if p.as_char() == '=' => {}
            other => {
                let span = other.map(|t| t.span()).unwrap_or_else(|| key.span());
                return Err(Error::new(span, format!("expected `=` after `{key_text}`, e.g. `{key_text} = ...`")));
            }
        }
        // Up to the next comma outside `<…>` (`state = HashMap<K, V>`);
        // commas inside brackets are inside a group already.
        let mut value = TokenStream::new();
        let (mut angle, mut after_minus) = (0usize, false);
        while let Some(t) = iter.peek() {
            if let TokenTree::Punct(p) = t {
                match p.as_char() {
                    ',' if angle == 0 => {
                        iter.next();
                        break;
                    }
                    '<' => angle += 1,
                    '>' if !after_minus => angle = angle.saturating_sub(1),
                    _ => {}
                }
                after_minus = p.as_char() == '-';
            } else {
                after_minus = false;
            }
            value.extend(iter.next());
        }
        if value.is_empty() {
            return Err(Error::new(key.span(), format!("`{key_text}` has no value")));
        }
        args.push(Arg { key, value });
    }
    Ok(args)
}

/// A string literal value.
pub(crate) fn lit_str(arg: &Arg) -> Result<LitStr> {
    syn::parse2::<LitStr>(arg.value.clone()).map_err(|_| arg.error(format!("`{}` takes a string", arg.key)))
}

/// A path value (`state = AppState`, `crate = ::cloacina_runner`).
pub(crate) fn path(arg: &Arg) -> Result<Path> {
    syn::parse2::<Path>(arg.value.clone())
        .map_err(|_| arg.error(format!("`{}` takes a path, e.g. `{} = my::Type`", arg.key, arg.key)))
}

/// A task id in a dependency list: an identifier or a string.
pub(crate) struct DepRef {
    pub(crate) id: String,
    pub(crate) span: Span,
}

/// `depends_on = [a, "b-2"]` (a single id without brackets is accepted too).
pub(crate) fn dependencies(arg: &Arg) -> Result<Vec<DepRef>> {
    let tokens: Vec<TokenTree> = arg.value.clone().into_iter().collect();
    let inner = match tokens.as_slice() {
        [TokenTree::Group(g)] if g.delimiter() == Delimiter::Bracket => g.stream(),
        _ => arg.value.clone(),
    };
    let mut out = Vec::new();
    let mut expect_item = true;
    for t in inner {
        match (&t, expect_item) {
            (TokenTree::Punct(p), false) if p.as_char() == ',' => expect_item = true,
            (TokenTree::Ident(i), true) => {
                out.push(DepRef { id: i.to_string(), span: i.span() });
                expect_item = false;
            }
            (TokenTree::Literal(_), true) => match syn::parse2::<Lit>(t.to_token_stream()) {
                Ok(Lit::Str(s)) => {
                    out.push(DepRef { id: s.value(), span: s.span() });
                    expect_item = false;
                }
                _ => return Err(Error::new(t.span(), "a dependency is a task id: an identifier or a string")),
            },
            _ => {
                return Err(Error::new(
                    t.span(),
                    "expected a list of task ids, e.g. `depends_on = [extract, \"clean-up\"]`",
                ));
            }
        }
    }
    Ok(out)
}

/// A duration: `30s`, `100ms`, `2min`, `1h`, or a string humantime reads
/// (`"1m 30s"`).
pub(crate) fn duration(arg: &Arg) -> Result<Duration> {
    let hint = "a duration such as `100ms`, `30s`, `5min`, `1h` or \"1m 30s\"";
    match syn::parse2::<Lit>(arg.value.clone()) {
        Ok(Lit::Int(i)) => duration_of(&i).ok_or_else(|| Error::new(i.span(), format!("`{}` takes {hint}", arg.key))),
        Ok(Lit::Str(s)) => humantime::parse_duration(&s.value())
            .map_err(|e| Error::new(s.span(), format!("`{}` takes {hint}: {e}", arg.key))),
        _ => Err(arg.error(format!("`{}` takes {hint}", arg.key))),
    }
}

fn duration_of(i: &syn::LitInt) -> Option<Duration> {
    let n: u64 = i.base10_parse().ok()?;
    let ms = match i.suffix() {
        "ms" => n,
        "s" => n.checked_mul(1_000)?,
        "m" | "min" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// What `retry = ...` says.
pub(crate) enum Retry {
    /// A policy the macro built and checked; emitted as its text form.
    Checked(RetryPolicy),
    /// A path to a `fn() -> RetryPolicy` of the user's.
    Function(Path),
}

/// `retry = none`, `exponential(3, 100ms)` (3 attempts in all, doubling
/// from 100 ms; a third argument sets the multiplier), `fixed(5, 1s)`,
/// `linear(4, 500ms)`, a policy string (`"total_attempts=4;
/// backoff=fixed(1s)"`), or a path to a function returning a policy.
pub(crate) fn retry(arg: &Arg) -> Result<Retry> {
    let forms = "expected `none`, `exponential(attempts, base[, multiplier])`, `fixed(attempts, delay)`, \
                 `linear(attempts, step)`, a policy string, or a path to a `fn() -> RetryPolicy`";
    let tokens: Vec<TokenTree> = arg.value.clone().into_iter().collect();
    let policy = match tokens.as_slice() {
        [TokenTree::Ident(i)] if i == "none" => RetryPolicy::none(),
        [TokenTree::Literal(_)] => {
            let text = lit_str(arg)?.value();
            text.parse::<RetryPolicy>().map_err(|e| arg.error(format!("invalid retry policy: {e}")))?
        }
        [TokenTree::Ident(i), TokenTree::Group(g)]
            if g.delimiter() == Delimiter::Parenthesis
                && matches!(i.to_string().as_str(), "exponential" | "fixed" | "linear") =>
        {
            let parts: Vec<TokenStream> = split_commas(g.stream());
            let name = i.to_string();
            let (attempts, delay, mult) = match parts.as_slice() {
                [a, d] => (a, d, None),
                [a, d, m] if name == "exponential" => (a, d, Some(m)),
                _ => {
                    return Err(Error::new(
                        g.span(),
                        format!(
                            "`{name}` takes (attempts, delay){}; {forms}",
                            if name == "exponential" { " or (attempts, base, multiplier)" } else { "" }
                        ),
                    ));
                }
            };
            let attempts: u32 =
                syn::parse2::<syn::LitInt>(attempts.clone()).and_then(|l| l.base10_parse()).map_err(|_| {
                    Error::new(attempts.span(), "the number of attempts in all, first run included, e.g. 3")
                })?;
            let delay_arg = Arg { key: Ident::new("delay", i.span()), value: delay.clone() };
            let delay = duration(&delay_arg)?;
            let backoff = match (name.as_str(), mult) {
                ("fixed", _) => cloacina_core::Backoff::Fixed(delay),
                ("linear", _) => cloacina_core::Backoff::Linear(delay),
                (_, None) => cloacina_core::Backoff::Exponential { base: delay, multiplier: 2.0 },
                (_, Some(m)) => {
                    let multiplier: f64 = syn::parse2::<Lit>(m.clone())
                        .ok()
                        .and_then(|l| match l {
                            Lit::Float(f) => f.base10_parse().ok(),
                            Lit::Int(i) => i.base10_parse().ok(),
                            _ => None,
                        })
                        .ok_or_else(|| Error::new(m.span(), "the multiplier is a number ≥ 1, e.g. 2 or 1.5"))?;
                    cloacina_core::Backoff::Exponential { base: delay, multiplier }
                }
            };
            RetryPolicy::builder()
                .total_attempts(attempts)
                .backoff(backoff)
                .build()
                .map_err(|e| arg.error(format!("invalid retry policy: {e}")))?
        }
        _ => match syn::parse2::<Path>(arg.value.clone()) {
            Ok(p) => return Ok(Retry::Function(p)),
            Err(_) => return Err(arg.error(forms)),
        },
    };
    // The policy is emitted as text and parsed when the workflow is built:
    // make sure that reads back the same policy.
    match policy.to_string().parse::<RetryPolicy>() {
        Ok(back) if back == policy => Ok(Retry::Checked(policy)),
        _ => Err(arg.error(format!("this retry policy cannot be written as text (`{policy}`); use a function"))),
    }
}

/// `trigger = all_done`, `any(one_failed, task_success(check))`, … or the
/// same as a string (for ids and keys that are not identifiers). Emitted
/// as constructor code, so any id or key survives.
pub(crate) fn trigger(arg: &Arg) -> Result<TriggerRule> {
    let text = match syn::parse2::<LitStr>(arg.value.clone()) {
        Ok(s) => s.value(),
        Err(_) => tokens_text(arg.value.clone()),
    };
    text.parse().map_err(|e| arg.error(e))
}

fn split_commas(tokens: TokenStream) -> Vec<TokenStream> {
    let mut parts = vec![TokenStream::new()];
    for t in tokens {
        match &t {
            TokenTree::Punct(p) if p.as_char() == ',' => parts.push(TokenStream::new()),
            _ => parts.last_mut().expect("never empty").extend([t]),
        }
    }
    if parts.last().is_some_and(TokenStream::is_empty) && parts.len() > 1 {
        parts.pop();
    }
    parts
}
