//! A market's JSON written straight from the domain value, byte for byte what
//! `Json<MarketEnvelope>` writes (keys in the same sorted order, the same numbers and times).
//!
//! poem-openapi's `ToJSON` turns a market into a `serde_json::Value` tree (a `BTreeMap` per
//! object, a `String` per key) and serializes that: in a profile of reads by random id it was
//! 10% of the process's time, more than SQLite's B-tree work for the same read. Serializing the
//! borrowed [`Market`] through serde instead still took 11% of a cache hit's samples (most in
//! serde_json's escaping, which looks up every byte of every string in a table, and in growing
//! the output three times). This module writes the bytes itself into a buffer sized once: the
//! keys and punctuation are constants, a string that needs no escaping (every string of the
//! bench's markets; checked for the three characters JSON escapes in one pass the compiler
//! vectorizes) is copied as it is, and only a string that does goes through serde_json; numbers
//! and times are written by the same code serde_json and poem-openapi use (`itoa`, serde_json's
//! float formatting, `time`'s RFC 3339). The schema in the document is still `MarketEnvelope`'s;
//! a property test compares both renderings on generated markets, escapes included.

use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::market_models::MarketStatusView;
use crate::domain::market::Market;

/// `{"data": <market>, "success": true}` as JSON.
pub fn market_envelope(m: &Market) -> Vec<u8> {
    let strings = m.name.len()
        + m.description.as_ref().map_or(0, String::len)
        + m.creator.username.len()
        + m.outcomes.iter().map(|o| o.label.len()).sum::<usize>();
    // The constant part is about 300 bytes, an outcome about 70 more than its label.
    let mut out = Vec::with_capacity(320 + strings + 80 * m.outcomes.len());
    out.extend_from_slice(b"{\"data\":{\"close_time\":");
    match &m.close_time {
        Some(t) => time(&mut out, t),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"created_at\":");
    time(&mut out, &m.created_at);
    out.extend_from_slice(b",\"creator\":{\"id\":");
    integer(&mut out, m.creator.id);
    out.extend_from_slice(b",\"username\":");
    string(&mut out, &m.creator.username);
    out.extend_from_slice(b"},\"description\":");
    match &m.description {
        Some(d) => string(&mut out, d),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"id\":");
    integer(&mut out, m.id);
    out.extend_from_slice(b",\"name\":");
    string(&mut out, &m.name);
    out.extend_from_slice(b",\"outcomes\":[");
    for (index, (o, probability)) in m.outcomes.iter().zip(m.probabilities()).enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"index\":");
        integer(&mut out, index as i64);
        out.extend_from_slice(b",\"label\":");
        string(&mut out, &o.label);
        out.extend_from_slice(b",\"pool\":");
        integer(&mut out, o.pool);
        out.extend_from_slice(b",\"probability\":");
        // serde_json's own float formatting (and `null` for a non-finite one).
        let _ = serde_json::to_writer(&mut out, &probability);
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"resolution\":");
    match m.resolution.and_then(|i| m.outcomes.get(i)) {
        Some(o) => string(&mut out, &o.label),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"status\":\"");
    out.extend_from_slice(status(m).as_bytes());
    out.extend_from_slice(b"\",\"updated_at\":");
    time(&mut out, &m.updated_at);
    out.extend_from_slice(b",\"version\":");
    integer(&mut out, m.version);
    out.extend_from_slice(b",\"volume\":");
    integer(&mut out, m.volume);
    out.extend_from_slice(b"},\"success\":true}");
    out
}

fn integer(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `s` as a JSON string, as serde_json writes it: copied when nothing in it is escaped (a
/// control character, `"` or `\`), else escaped by serde_json.
fn string(out: &mut Vec<u8>, s: &str) {
    // A fold rather than `any`: without an early exit the loop is vectorized.
    let escaped = s.bytes().fold(false, |found, b| {
        found | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if escaped {
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// A time as RFC 3339 (poem-openapi's form), or `null` when it cannot be formatted.
fn time(out: &mut Vec<u8>, t: &OffsetDateTime) {
    let start = out.len();
    out.push(b'"');
    match t.format_into(&mut *out, &Rfc3339) {
        Ok(_) => out.push(b'"'),
        Err(_) => {
            out.truncate(start);
            out.extend_from_slice(b"null");
        }
    }
}

fn status(m: &Market) -> &'static str {
    match MarketStatusView::from(m.status) {
        MarketStatusView::Active => "active",
        MarketStatusView::Closed => "closed",
        MarketStatusView::Resolved => "resolved",
        MarketStatusView::Cancelled => "cancelled",
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::types::ToJSON;
    use proptest::prelude::*;

    use super::*;
    use crate::{
        api::market_models::MarketEnvelope,
        domain::{
            market::{MarketStatus, Outcome},
            user::UserSummary,
        },
    };

    fn time(ms: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap()
    }

    /// Strings full of what JSON escapes (quotes, backslashes, control characters) beside
    /// what it does not (non-ASCII, `/`, DEL).
    const ESCAPED: &str = "[a-z \"\\\\/\\x00-\\x1f\\x7fé€]{0,30}";

    prop_compose! {
        fn market()(
            id in 1i64..i64::MAX,
            name in prop_oneof![".{0,40}", ESCAPED],
            description in proptest::option::of(prop_oneof![".{0,60}", ESCAPED]),
            creator in 1i64..1_000_000,
            username in "[a-z0-9_]{1,20}",
            status in 0usize..4,
            outcomes in proptest::collection::vec((prop_oneof!["\\PC{1,12}", ESCAPED], 0i64..1_000_000_000), 2..10),
            close in proptest::option::of(0i64..4_102_444_800_000),
            resolution in proptest::option::of(0usize..12),
            volume in 0i64..i64::MAX,
            version in 1i64..1_000_000,
            created in 0i64..4_102_444_800_000,
            updated in 0i64..4_102_444_800_000,
        ) -> Market {
            Market {
                id,
                name,
                description,
                creator: UserSummary { id: creator, username },
                status: [MarketStatus::Active, MarketStatus::Closed, MarketStatus::Resolved, MarketStatus::Cancelled][status],
                outcomes: outcomes.into_iter().map(|(label, pool)| Outcome { label, pool }).collect(),
                close_time: close.map(time),
                resolution,
                volume,
                version,
                created_at: time(created),
                updated_at: time(updated),
            }
        }
    }

    proptest! {
        #[test]
        fn the_direct_rendering_is_byte_for_byte_the_documented_one(m in market()) {
            let direct = market_envelope(&m);
            let documented = serde_json::to_vec(&MarketEnvelope::new(m.clone().into()).to_json()).unwrap();
            prop_assert_eq!(String::from_utf8(direct).unwrap(), String::from_utf8(documented).unwrap());
        }
    }
}
