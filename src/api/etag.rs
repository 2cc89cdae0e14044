//! `If-Match` and `If-None-Match` (RFC 9110 section 13.1): lists of entity tags, parsed by
//! the grammar (a comma may sit inside a quoted tag), compared strongly for `If-Match` and
//! weakly for `If-None-Match`.
//!
//! The `headers` crate (already in the tree through poem) compares tags too, but only against
//! its own `ETag` type and without exposing the tags it parsed, so the service would have to
//! hold an HTTP type to check a precondition against the market it reads; the grammar is small
//! enough to parse here into the domain's [`Precondition`].

use crate::domain::precondition::Precondition;

/// One element of an entity-tag list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element<'a> {
    /// `*`.
    Any,
    /// A tag; `opaque` keeps its quotes.
    Tag { weak: bool, opaque: &'a str },
}

/// `etagc = %x21 / %x23-7E / obs-text`.
fn is_etagc(c: char) -> bool {
    c == '\x21' || ('\x23'..='\x7e').contains(&c) || c >= '\u{80}'
}

/// The elements of a list header, or `None` when it breaks the grammar. Empty list elements
/// and optional whitespace around commas are accepted, as RFC 9110 section 5.6.1 asks.
fn parse(header: &str) -> Option<Vec<Element<'_>>> {
    let mut rest = header;
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Some(out);
        }
        let (element, after) = if let Some(after) = rest.strip_prefix('*') {
            (Element::Any, after)
        } else {
            let (weak, tag) = match rest.strip_prefix("W/") {
                Some(tag) => (true, tag),
                None => (false, rest),
            };
            let inner = tag.strip_prefix('"')?;
            let end = inner.find('"')?;
            if !inner[..end].chars().all(is_etagc) {
                return None;
            }
            let opaque = &tag[..end + 2];
            (Element::Tag { weak, opaque }, &inner[end + 1..])
        };
        out.push(element);
        rest = after.trim_start_matches([' ', '\t']);
        if !rest.is_empty() && !rest.starts_with(',') {
            return None;
        }
    }
}

/// The condition an `If-Match` header sets: `None` without the header; `*` alone is
/// [`Precondition::Any`]; otherwise the strong tags listed. Weak tags never match, and a
/// header that breaks the grammar (`*` inside a list included) matches nothing, so the write
/// gets 412 rather than going ahead unconditionally.
pub fn if_match(header: Option<&str>) -> Option<Precondition> {
    let elements = parse(header?);
    Some(match elements.as_deref() {
        Some([Element::Any]) => Precondition::Any,
        Some(list) if !list.contains(&Element::Any) => Precondition::OneOf(
            list.iter()
                .filter_map(|e| match e {
                    Element::Tag {
                        weak: false,
                        opaque,
                    } => Some((*opaque).to_owned()),
                    _ => None,
                })
                .collect(),
        ),
        _ => Precondition::OneOf(Vec::new()),
    })
}

/// True when an `If-None-Match` header is `*` or lists `current` (weak comparison: `W/` is
/// ignored). A malformed header lists nothing.
pub fn none_match_hits(header: &str, current: &str) -> bool {
    let current = current.strip_prefix("W/").unwrap_or(current);
    parse(header).unwrap_or_default().iter().any(|e| match e {
        Element::Any => true,
        Element::Tag { opaque, .. } => *opaque == current,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_of(tags: &[&str]) -> Option<Precondition> {
        Some(Precondition::OneOf(
            tags.iter().map(|t| (*t).to_owned()).collect(),
        ))
    }

    #[test]
    fn if_match_keeps_only_strong_tags() {
        assert_eq!(if_match(None), None);
        assert_eq!(if_match(Some("*")), Some(Precondition::Any));
        assert_eq!(if_match(Some(" * ")), Some(Precondition::Any));
        assert_eq!(if_match(Some("\"1-3\"")), one_of(&["\"1-3\""]));
        assert_eq!(if_match(Some("W/\"1-3\"")), one_of(&[]));
        assert_eq!(
            if_match(Some("W/\"1-2\", \"1-3\" ,,\"x,y\"")),
            one_of(&["\"1-3\"", "\"x,y\""])
        );
    }

    #[test]
    fn malformed_if_match_headers_match_nothing() {
        for bad in [
            "garbage",
            "3",
            "\"1-3",
            "\"1-3\"x",
            "*, \"1-3\"",
            "\"a b\"",
            "w/\"1\"",
            "",
        ] {
            assert_eq!(if_match(Some(bad)), one_of(&[]), "{bad:?}");
        }
    }

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(none_match_hits("\"1-3\"", "\"1-3\""));
        assert!(none_match_hits("W/\"1-3\"", "\"1-3\""));
        assert!(none_match_hits("\"1-2\", W/\"1-3\"", "\"1-3\""));
        assert!(none_match_hits("*", "\"1-3\""));
        assert!(!none_match_hits("\"2-3\"", "\"1-3\""));
        assert!(!none_match_hits("\"3\"", "\"1-3\""));
        assert!(!none_match_hits("garbage, \"1-3\"", "\"1-3\""));
    }
}
