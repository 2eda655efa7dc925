//! Kubernetes label selectors (`labelSelector`, `metricLabelSelector`):
//! `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, joined
//! by commas, as `k8s.io/apimachinery/pkg/labels` parses them.

use serde_json::{json, Map, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid label selector {selector:?}: {reason}")]
pub struct SelectorError {
    selector: String,
    reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

/// A parsed selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

const MAX_NAME_LEN: usize = 63;
const MAX_PREFIX_LEN: usize = 253;

impl Selector {
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let fail = |reason: String| SelectorError { selector: text.to_owned(), reason };
        let mut lexer = Lexer { rest: text };
        let mut requirements = Vec::new();
        if lexer.at_end() {
            return Ok(Selector { requirements });
        }
        loop {
            requirements.push(parse_requirement(&mut lexer).map_err(fail)?);
            match lexer.next_token() {
                None => break,
                Some(Token::Comma) => continue,
                Some(other) => return Err(fail(format!("expected ',' but found {other}"))),
            }
        }
        Ok(Selector { requirements })
    }

    /// Whether a series with these labels is selected.
    pub fn matches<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|r| {
            let value = label(&r.key);
            match r.operator {
                Operator::In => value.is_some_and(|v| r.values.iter().any(|w| w == v)),
                Operator::NotIn => value.is_none_or(|v| r.values.iter().all(|w| w != v)),
                Operator::Exists => value.is_some(),
                Operator::DoesNotExist => value.is_none(),
            }
        })
    }

    /// The single value `key` must equal, if the selector pins it.
    pub fn pinned(&self, key: &str) -> Option<&str> {
        self.requirements.iter().find_map(|r| match (r.operator, r.values.as_slice()) {
            (Operator::In, [only]) if r.key == key => Some(only.as_str()),
            _ => None,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The selector as a `metav1.LabelSelector` object.
    pub fn to_label_selector(&self) -> Value {
        let mut match_labels = Map::new();
        let mut expressions = Vec::new();
        for r in &self.requirements {
            match (r.operator, r.values.as_slice()) {
                (Operator::In, [only]) if !match_labels.contains_key(&r.key) => {
                    match_labels.insert(r.key.clone(), Value::from(only.as_str()));
                }
                (operator, values) => {
                    let operator = match operator {
                        Operator::In => "In",
                        Operator::NotIn => "NotIn",
                        Operator::Exists => "Exists",
                        Operator::DoesNotExist => "DoesNotExist",
                    };
                    let mut expression = json!({ "key": r.key, "operator": operator });
                    if !values.is_empty() {
                        expression["values"] = json!(values);
                    }
                    expressions.push(expression);
                }
            }
        }
        let mut selector = Map::new();
        if !match_labels.is_empty() {
            selector.insert("matchLabels".into(), Value::Object(match_labels));
        }
        if !expressions.is_empty() {
            selector.insert("matchExpressions".into(), Value::Array(expressions));
        }
        Value::Object(selector)
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match (r.operator, r.values.as_slice()) {
                (Operator::In, [only]) => write!(f, "{}={}", r.key, only)?,
                (Operator::NotIn, [only]) => write!(f, "{}!={}", r.key, only)?,
                (Operator::In, values) => write!(f, "{} in ({})", r.key, values.join(","))?,
                (Operator::NotIn, values) => write!(f, "{} notin ({})", r.key, values.join(","))?,
                (Operator::Exists, _) => write!(f, "{}", r.key)?,
                (Operator::DoesNotExist, _) => write!(f, "!{}", r.key)?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str),
    Comma,
    Open,
    Close,
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
}

impl std::fmt::Display for Token<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Word(w) => write!(f, "{w:?}"),
            Token::Comma => f.write_str("','"),
            Token::Open => f.write_str("'('"),
            Token::Close => f.write_str("')'"),
            Token::Bang => f.write_str("'!'"),
            Token::Equals => f.write_str("'='"),
            Token::DoubleEquals => f.write_str("'=='"),
            Token::NotEquals => f.write_str("'!='"),
        }
    }
}

struct Lexer<'a> {
    rest: &'a str,
}

impl<'a> Lexer<'a> {
    fn at_end(&mut self) -> bool {
        self.rest = self.rest.trim_start();
        self.rest.is_empty()
    }

    fn next_token(&mut self) -> Option<Token<'a>> {
        if self.at_end() {
            return None;
        }
        let (token, len) = match self.rest.as_bytes() {
            [b',', ..] => (Token::Comma, 1),
            [b'(', ..] => (Token::Open, 1),
            [b')', ..] => (Token::Close, 1),
            [b'!', b'=', ..] => (Token::NotEquals, 2),
            [b'!', ..] => (Token::Bang, 1),
            [b'=', b'=', ..] => (Token::DoubleEquals, 2),
            [b'=', ..] => (Token::Equals, 1),
            _ => {
                let len =
                    self.rest.find(|c: char| c.is_whitespace() || matches!(c, ',' | '(' | ')' | '!' | '=')).unwrap_or(self.rest.len());
                (Token::Word(&self.rest[..len]), len)
            }
        };
        self.rest = &self.rest[len..];
        Some(token)
    }

    /// Peeks whether the next token is a value-less end of requirement.
    fn peek_ends_requirement(&mut self) -> bool {
        self.at_end() || self.rest.starts_with(',')
    }
}

fn parse_requirement(lexer: &mut Lexer<'_>) -> Result<Requirement, String> {
    let requirement = |key: &str, operator, values| Requirement { key: key.to_owned(), operator, values };
    match lexer.next_token() {
        Some(Token::Bang) => match lexer.next_token() {
            Some(Token::Word(key)) => {
                validate_key(key)?;
                Ok(requirement(key, Operator::DoesNotExist, Vec::new()))
            }
            other => Err(format!("expected a label key after '!', found {}", describe(other))),
        },
        Some(Token::Word(key)) => {
            validate_key(key)?;
            if lexer.peek_ends_requirement() {
                return Ok(requirement(key, Operator::Exists, Vec::new()));
            }
            let operator = match lexer.next_token() {
                Some(Token::Equals | Token::DoubleEquals) => Operator::In,
                Some(Token::NotEquals) => Operator::NotIn,
                Some(Token::Word("in")) => return Ok(requirement(key, Operator::In, parse_set(lexer)?)),
                Some(Token::Word("notin")) => return Ok(requirement(key, Operator::NotIn, parse_set(lexer)?)),
                other => return Err(format!("expected an operator after {key:?}, found {}", describe(other))),
            };
            // `k=` selects the empty value, as in Kubernetes.
            let value = if lexer.peek_ends_requirement() {
                ""
            } else {
                match lexer.next_token() {
                    Some(Token::Word(value)) => value,
                    other => return Err(format!("expected a value for {key:?}, found {}", describe(other))),
                }
            };
            validate_value(value)?;
            Ok(requirement(key, operator, vec![value.to_owned()]))
        }
        other => Err(format!("expected a label key, found {}", describe(other))),
    }
}

fn parse_set(lexer: &mut Lexer<'_>) -> Result<Vec<String>, String> {
    if lexer.next_token() != Some(Token::Open) {
        return Err("expected '(' after in/notin".to_owned());
    }
    let mut values = Vec::new();
    loop {
        match lexer.next_token() {
            Some(Token::Word(value)) => {
                validate_value(value)?;
                values.push(value.to_owned());
                match lexer.next_token() {
                    Some(Token::Comma) => continue,
                    Some(Token::Close) => break,
                    other => return Err(format!("expected ',' or ')' in a value set, found {}", describe(other))),
                }
            }
            Some(Token::Close) if values.is_empty() => return Err("a value set needs at least one value".to_owned()),
            other => return Err(format!("expected a value in a value set, found {}", describe(other))),
        }
    }
    values.sort();
    values.dedup();
    Ok(values)
}

fn describe(token: Option<Token<'_>>) -> String {
    token.map_or_else(|| "the end".to_owned(), |t| t.to_string())
}

/// Keys are qualified names: an optional DNS-subdomain prefix and a name.
fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let ok = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX_LEN
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !ok {
            return Err(format!("invalid label key prefix in {key:?}"));
        }
    }
    if name.is_empty() || name.len() > MAX_NAME_LEN || !is_name_body(name) {
        return Err(format!(
            "invalid label key {key:?}: a name is at most 63 alphanumeric characters, '-', '_' or '.', starting and ending alphanumeric"
        ));
    }
    Ok(())
}

fn validate_value(value: &str) -> Result<(), String> {
    if value.is_empty() || (value.len() <= MAX_NAME_LEN && is_name_body(value)) {
        return Ok(());
    }
    Err(format!("invalid label value {value:?}: at most 63 alphanumeric characters, '-', '_' or '.', starting and ending alphanumeric"))
}

fn is_name_body(s: &str) -> bool {
    let b = s.as_bytes();
    b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
    }

    fn selects(selector: &str, pairs: &[(&str, &str)]) -> bool {
        Selector::parse(selector).unwrap().matches(labels(pairs))
    }

    #[test]
    fn operators() {
        let s = [("scope", "test"), ("stream", "stream")];
        assert!(selects("", &s));
        assert!(selects("scope=test", &s));
        assert!(selects("scope==test,stream=stream", &s));
        assert!(!selects("scope=test,stream=other", &s));
        assert!(selects("scope!=other", &s));
        assert!(!selects("scope!=test", &s));
        assert!(selects("missing!=x", &s), "!= selects series without the label");
        assert!(selects("stream in (a, stream)", &s));
        assert!(!selects("stream notin (a,stream)", &s));
        assert!(selects("missing notin (a)", &s));
        assert!(selects("scope", &s));
        assert!(!selects("!scope", &s));
        assert!(selects("!missing,scope", &s));
        assert!(!selects("missing", &s));
        assert!(selects("  scope = test ,  stream  in(stream) ", &s));
        assert!(selects("missing=", &[("missing", "")]));
        assert!(selects("app.kubernetes.io/name notin (x)", &s));
    }

    #[test]
    fn pinned_values_come_from_equalities_only() {
        let s = Selector::parse("scope=test,stream in (a),x in (a,b),y!=z").unwrap();
        assert_eq!(s.pinned("scope"), Some("test"));
        assert_eq!(s.pinned("stream"), Some("a"));
        assert_eq!(s.pinned("x"), None);
        assert_eq!(s.pinned("y"), None);
    }

    #[test]
    fn rejects_malformed_selectors() {
        for bad in [
            "=x",
            "scope=test,",
            ",scope",
            "scope test",
            "scope in a",
            "scope in ()",
            "scope in (a b)",
            "scope in (a,",
            "scope=a=b",
            "sc ope=x",
            "scope=te st",
            "!",
            "!scope=x",
            "scope=-bad",
            "scope=bad_",
            "-key=x",
            "UPPER.Prefix/key=x",
            &"k".repeat(64),
            "scope=(x)",
            "scope=\"quoted\"",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn error_names_the_selector() {
        let err = Selector::parse("scope in a").unwrap_err();
        assert!(err.to_string().contains("\"scope in a\""), "{err}");
    }

    #[test]
    fn label_selector_object_and_display() {
        let s = Selector::parse("scope=test,stream!=x,tier in (b,a),env,!debug").unwrap();
        assert_eq!(
            s.to_label_selector(),
            json!({
                "matchLabels": {"scope": "test"},
                "matchExpressions": [
                    {"key": "stream", "operator": "NotIn", "values": ["x"]},
                    {"key": "tier", "operator": "In", "values": ["a", "b"]},
                    {"key": "env", "operator": "Exists"},
                    {"key": "debug", "operator": "DoesNotExist"},
                ]
            })
        );
        assert_eq!(s.to_string(), "scope=test,stream!=x,tier in (a,b),env,!debug");
        assert_eq!(Selector::parse(&s.to_string()).unwrap(), s);
        assert_eq!(Selector::default().to_label_selector(), json!({}));
    }
}
