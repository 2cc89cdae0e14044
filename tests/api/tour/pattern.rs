//! The README's responses as patterns: JSON in which `...` leaves things out, matched against
//! what the server sent.
//!
//! The rule, as the README states it:
//! - every field shown must be present with the value shown;
//! - `...` among an object's members means members were left out; an object shown without it
//!   must have exactly the members shown;
//! - `...` as an array's last item means more items may follow; otherwise the length is exact;
//! - `...` inside a string stands for any text (`"eyJ0eXAi..."`, `"..."`), and in place of a
//!   value for any value;
//! - values that differ from run to run are checked for their kind only: timestamps (members
//!   named `*_at`), tokens (`access_token`, `refresh_token`) and request ids (`request_id`).

use serde_json::Value;

/// One part of a pattern.
#[derive(Debug)]
pub enum Pattern {
    /// An object: its members, and whether `...` allows others.
    Object(Vec<(String, Pattern)>, bool),
    /// An array: its items, and whether `...` allows more after them.
    Array(Vec<Pattern>, bool),
    /// A string, `...` standing for any text.
    Text(String),
    /// A number, `true`, `false` or `null`, compared exactly.
    Exact(Value),
    /// `...` in place of a value: any value.
    Any,
}

/// Parses a response body as shown in the README.
pub fn parse(text: &str) -> Result<Pattern, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        at: 0,
    };
    let pattern = p.value()?;
    p.space();
    if p.at != p.s.len() {
        return Err(p.error("text after the JSON"));
    }
    Ok(pattern)
}

/// Where `actual` differs from `pattern`, one line per difference.
pub fn differences(pattern: &Pattern, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check(pattern, actual, "$", "", &mut out);
    out
}

/// Whether `actual` matches a string pattern with `...` wildcards.
pub fn text_matches(pattern: &str, actual: &str) -> bool {
    let parts: Vec<&str> = pattern.split("...").collect();
    if parts.len() == 1 {
        return pattern == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first)
        || !actual.ends_with(last)
        || actual.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

fn varies(key: &str) -> bool {
    key.ends_with("_at") || matches!(key, "request_id" | "access_token" | "refresh_token")
}

fn check(pattern: &Pattern, actual: &Value, path: &str, key: &str, out: &mut Vec<String>) {
    match (pattern, actual) {
        (Pattern::Any, _) => {}
        (Pattern::Text(_), Value::String(s)) if varies(key) => {
            if s.is_empty() {
                out.push(format!("{path}: empty"));
            }
        }
        (Pattern::Text(p), Value::String(s)) => {
            if !text_matches(p, s) {
                out.push(format!("{path}: shown {p:?}, got {s:?}"));
            }
        }
        (Pattern::Exact(p), a) => {
            if p != a {
                out.push(format!("{path}: shown {p}, got {a}"));
            }
        }
        (Pattern::Object(members, open), Value::Object(a)) => {
            for (k, p) in members {
                match a.get(k) {
                    Some(v) => check(p, v, &format!("{path}.{k}"), k, out),
                    None => out.push(format!("{path}.{k}: shown, but not in the response")),
                }
            }
            if !open {
                for k in a.keys().filter(|k| !members.iter().any(|(m, _)| m == *k)) {
                    out.push(format!(
                        "{path}.{k}: in the response, not shown (add it or `...`)"
                    ));
                }
            }
        }
        (Pattern::Array(items, open), Value::Array(a)) => {
            if a.len() < items.len() || (!open && a.len() != items.len()) {
                out.push(format!(
                    "{path}: shown {} items, got {}",
                    items.len(),
                    a.len()
                ));
            }
            for (i, (p, v)) in items.iter().zip(a).enumerate() {
                check(p, v, &format!("{path}[{i}]"), "", out);
            }
        }
        (p, a) => out.push(format!("{path}: shown {p:?}, got {a}")),
    }
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        let near = String::from_utf8_lossy(&self.s[self.at..(self.at + 30).min(self.s.len())]);
        format!("{what} at byte {} (near {near:?})", self.at)
    }

    fn space(&mut self) {
        while self.s.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.space();
        let found = self.s[self.at..].starts_with(token.as_bytes());
        if found {
            self.at += token.len();
        }
        found
    }

    fn value(&mut self) -> Result<Pattern, String> {
        if self.eat("...") {
            return Ok(Pattern::Any);
        }
        match self.s.get(self.at) {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => Ok(Pattern::Text(self.string()?)),
            Some(_) => {
                let start = self.at;
                while self
                    .s
                    .get(self.at)
                    .is_some_and(|c| !b",]} \n\t\r".contains(c))
                {
                    self.at += 1;
                }
                let token = String::from_utf8_lossy(&self.s[start..self.at]);
                serde_json::from_str(&token)
                    .map(Pattern::Exact)
                    .map_err(|_| self.error("not a JSON value"))
            }
            None => Err(self.error("a value is missing")),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let start = self.at;
        self.at += 1;
        while let Some(&c) = self.s.get(self.at) {
            self.at += 1;
            match c {
                b'\\' => self.at += 1,
                b'"' => {
                    let raw = String::from_utf8_lossy(&self.s[start..self.at]);
                    return serde_json::from_str(&raw).map_err(|_| self.error("a bad string"));
                }
                _ => {}
            }
        }
        Err(self.error("an unterminated string"))
    }

    fn object(&mut self) -> Result<Pattern, String> {
        self.at += 1;
        let (mut members, mut open) = (Vec::new(), false);
        if self.eat("}") {
            return Ok(Pattern::Object(members, open));
        }
        loop {
            if self.eat("...") {
                open = true;
            } else {
                self.space();
                let key = self.string()?;
                if !self.eat(":") {
                    return Err(self.error("expected `:`"));
                }
                members.push((key, self.value()?));
            }
            if self.eat("}") {
                return Ok(Pattern::Object(members, open));
            }
            if !self.eat(",") {
                return Err(self.error("expected `,` or `}`"));
            }
        }
    }

    fn array(&mut self) -> Result<Pattern, String> {
        self.at += 1;
        let mut items = Vec::new();
        if self.eat("]") {
            return Ok(Pattern::Array(items, false));
        }
        loop {
            if self.eat("...") {
                if !self.eat("]") {
                    return Err(self.error("`...` must be an array's last item"));
                }
                return Ok(Pattern::Array(items, true));
            }
            items.push(self.value()?);
            if self.eat("]") {
                return Ok(Pattern::Array(items, false));
            }
            if !self.eat(",") {
                return Err(self.error("expected `,` or `]`"));
            }
        }
    }
}

#[test]
fn a_pattern_matches_what_it_shows_and_refuses_what_it_contradicts() {
    let p = parse(r#"{"data":{...,"id":51,"name":"Will ..."},"meta":{"total":3,...},"list":[1,...],"request_id":"x"}"#).unwrap();
    let ok = serde_json::json!({"data":{"id":51,"name":"Will it?","x":1},"meta":{"total":3,"limit":20},"list":[1,2],"request_id":"abc"});
    assert_eq!(differences(&p, &ok), Vec::<String>::new());
    let bad = serde_json::json!({"data":{"id":52,"name":"Won't"},"meta":{"total":3},"list":[2],"request_id":"abc","extra":true});
    assert_eq!(
        differences(&p, &bad).len(),
        4,
        "{:?}",
        differences(&p, &bad)
    );
}
