//! Paging of lists: by `offset`, or by an opaque keyset `cursor` (the `meta.next_cursor` of the
//! previous page).
//!
//! A cursor is the last row's sort key and id, so the next page starts strictly after that row
//! whatever was inserted or deleted in between: no row repeats and none is skipped, unlike an
//! offset, which shifts when rows before it come or go. Each list reads one row past the page
//! to learn whether a next page exists, so `next_cursor` is null exactly on the last page.
//!
//! Encoding (version 1): URL-safe base64 (no padding) of the JSON array
//! `[1, <list fingerprint>, [<key parts>]]` followed by the first 8 bytes of its SHA-256. The
//! fingerprint is a hash of the list's identity (which list, sort, order and filters), so a
//! cursor replayed against another sort or filter is refused instead of silently starting in
//! the wrong place; the checksum refuses a damaged or edited cursor. A cursor is opaque, not
//! secret: a hand-made one can only start a list at another row.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{FieldError, Problems};

/// Largest page size of a list.
pub const PAGE_MAX: u32 = 100;
/// Page size when the client gives none.
pub const PAGE_DEFAULT: u32 = 20;
/// Largest list offset (deep offsets are slow; use `cursor` instead).
pub const OFFSET_MAX: u64 = 1_000_000;
/// Longest cursor accepted, in characters (a market name key is the longest).
pub const CURSOR_MAX: usize = 1_024;

const VERSION: u64 = 1;
const CHECK_LEN: usize = 8;

/// One component of a row's sort key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyPart {
    /// An integer column (ids, credits, Unix milliseconds).
    Int(i64),
    /// A text column.
    Text(String),
    /// A missing value of a nullable column.
    Null,
}

/// What a key part may be, for checking a decoded cursor's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// An integer.
    Int,
    /// A string.
    Text,
    /// An integer or null.
    NullableInt,
}

/// A row's position in a list: its sort key, ending with its id.
pub type Key = Vec<KeyPart>;

/// The identity of a list a cursor belongs to: its name, sort, order and filters, as text.
#[derive(Debug, Clone)]
pub struct ListId {
    text: String,
    shape: &'static [KeyKind],
}

impl ListId {
    /// The list `name` whose keys have `shape`.
    pub fn new(name: &str, shape: &'static [KeyKind]) -> Self {
        ListId {
            text: name.to_owned(),
            shape,
        }
    }

    /// Adds a parameter that selects or orders the rows (`None`: not given).
    pub fn with(mut self, name: &str, value: Option<impl std::fmt::Display>) -> Self {
        use std::fmt::Write;
        match value {
            Some(v) => {
                let _ = write!(self.text, "|{name}={v}");
            }
            None => {
                let _ = write!(self.text, "|{name}");
            }
        }
        self
    }

    fn fingerprint(&self) -> u64 {
        let digest = Sha256::digest(self.text.as_bytes());
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        // JSON numbers above 2^53 lose precision in some clients' hands; the cursor is opaque,
        // but keep it exact everywhere anyway.
        u64::from_be_bytes(bytes) >> 12
    }
}

/// The identities of the lists other than markets (whose [`ListId`] depends on its sort).
pub mod lists {
    use super::{KeyKind, ListId};

    /// The positions on market `market_id`: keyed by amount, staker and outcome.
    pub fn market_positions(market_id: i64) -> ListId {
        ListId::new("market_positions", &[KeyKind::Int; 3]).with("market_id", Some(market_id))
    }

    /// The positions of user `user_id`: keyed by change time, market and outcome.
    pub fn user_positions(user_id: i64) -> ListId {
        ListId::new("user_positions", &[KeyKind::Int; 3]).with("user_id", Some(user_id))
    }

    /// The ledger of user `user_id`: keyed by entry id.
    pub fn ledger(user_id: i64) -> ListId {
        ListId::new("ledger", &[KeyKind::Int]).with("user_id", Some(user_id))
    }

    /// The webhook subscriptions `viewer` sees (its own, or everyone's for an admin): keyed
    /// by id.
    pub fn webhooks(viewer: i64) -> ListId {
        ListId::new("webhooks", &[KeyKind::Int]).with("viewer", Some(viewer))
    }

    /// A subscription's deliveries in `status` (`None`: any): keyed by id.
    pub fn deliveries(webhook_id: i64, status: Option<&str>) -> ListId {
        ListId::new("webhook_deliveries", &[KeyKind::Int])
            .with("webhook_id", Some(webhook_id))
            .with("status", status)
    }

    /// The jobs in `status` of `kind` (`None`: any): keyed by job id.
    pub fn jobs(status: Option<&str>, kind: Option<&str>) -> ListId {
        ListId::new("jobs", &[KeyKind::Int])
            .with("status", status)
            .with("kind", kind)
    }
}

/// Validated paging of a list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Paging {
    /// Page size, `1..=PAGE_MAX`.
    pub limit: u32,
    /// Rows to skip, `0..=OFFSET_MAX` (0 with a cursor).
    pub offset: u64,
    /// Start after this row (from a cursor).
    pub after: Option<Key>,
    /// The fingerprint of the list, for the next cursor.
    list: u64,
}

impl Paging {
    /// Validates `limit` (default [`PAGE_DEFAULT`]), `offset` (default 0) and `cursor` (which
    /// must have been made for `list`, and excludes `offset`).
    pub fn parse(
        limit: Option<u32>,
        offset: Option<u64>,
        cursor: Option<&str>,
        list: &ListId,
    ) -> Result<Self, Vec<FieldError>> {
        let mut p = Problems::default();
        let limit = limit.unwrap_or(PAGE_DEFAULT);
        if !(1..=PAGE_MAX).contains(&limit) {
            p.add("limit", format!("must be between 1 and {PAGE_MAX}"));
        }
        if offset.is_some_and(|o| o > OFFSET_MAX) {
            p.add("offset", format!("must be at most {OFFSET_MAX}"));
        }
        let fingerprint = list.fingerprint();
        let after = match cursor {
            None => None,
            Some(_) if offset.is_some() => {
                p.add(
                    "cursor",
                    "cannot be used together with offset: send one or the other",
                );
                None
            }
            Some(c) => match decode(c, fingerprint, list.shape) {
                Ok(key) => Some(key),
                Err(why) => {
                    p.add("cursor", why);
                    None
                }
            },
        };
        p.finish(Paging {
            limit,
            offset: offset.unwrap_or(0),
            after,
            list: fingerprint,
        })
    }

    /// The first `limit` rows of a list (no filters in its identity), for internal reads.
    pub fn first(limit: u32) -> Self {
        Paging {
            limit,
            offset: 0,
            after: None,
            list: 0,
        }
    }

    /// Rows to read: one more than the page, to learn whether a next page exists.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// The cursor that continues this list after the row with `key`.
    pub fn cursor_after(&self, key: &[KeyPart]) -> String {
        let parts: Vec<Value> = key
            .iter()
            .map(|k| match k {
                KeyPart::Int(i) => json!(i),
                KeyPart::Text(s) => json!(s),
                KeyPart::Null => Value::Null,
            })
            .collect();
        let mut bytes = json!([VERSION, self.list, parts]).to_string().into_bytes();
        let check = Sha256::digest(&bytes);
        bytes.extend_from_slice(&check[..CHECK_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }
}

const MALFORMED: &str =
    "is not a valid cursor: pass back the meta.next_cursor of the previous page unchanged";

fn decode(cursor: &str, fingerprint: u64, shape: &[KeyKind]) -> Result<Key, &'static str> {
    if cursor.len() > CURSOR_MAX {
        return Err(MALFORMED);
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| MALFORMED)?;
    if bytes.len() <= CHECK_LEN {
        return Err(MALFORMED);
    }
    let (body, check) = bytes.split_at(bytes.len() - CHECK_LEN);
    if Sha256::digest(body)[..CHECK_LEN] != *check {
        return Err(MALFORMED);
    }
    let value: Value = serde_json::from_slice(body).map_err(|_| MALFORMED)?;
    let (version, list, parts) = match value.as_array().map(Vec::as_slice) {
        Some([v, l, Value::Array(parts)]) => (v.as_u64(), l.as_u64(), parts),
        _ => return Err(MALFORMED),
    };
    if version != Some(VERSION) {
        return Err(MALFORMED);
    }
    if list != Some(fingerprint) {
        return Err("belongs to another list: a cursor works only with the same sort, order and filters as the request that returned it");
    }
    if parts.len() != shape.len() {
        return Err(MALFORMED);
    }
    parts
        .iter()
        .zip(shape)
        .map(|(part, kind)| match (kind, part) {
            (KeyKind::Int | KeyKind::NullableInt, Value::Number(n)) => {
                n.as_i64().map(KeyPart::Int).ok_or(MALFORMED)
            }
            (KeyKind::NullableInt, Value::Null) => Ok(KeyPart::Null),
            (KeyKind::Text, Value::String(s)) => Ok(KeyPart::Text(s.clone())),
            _ => Err(MALFORMED),
        })
        .collect()
}

/// One page of a list, the number of rows matching in all, and where the next page starts.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The rows on this page, in order.
    pub items: Vec<T>,
    /// Rows matching in all.
    pub total: u64,
    /// The key of the page's last row when more rows follow; `None` on the last page.
    pub next: Option<Key>,
}

impl<T> Page<T> {
    /// The page of `rows`, read with [`Paging::fetch`] (one past the page): the extra row, if
    /// any, is dropped and says a next page exists, which starts after the last kept row.
    pub fn of(mut rows: Vec<T>, total: u64, paging: &Paging, key: impl Fn(&T) -> Key) -> Self {
        let more = rows.len() > paging.limit as usize;
        rows.truncate(paging.limit as usize);
        let next = if more { rows.last().map(key) } else { None };
        Page {
            items: rows,
            total,
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: &[KeyKind] = &[KeyKind::NullableInt, KeyKind::Text, KeyKind::Int];

    fn list(sort: &str) -> ListId {
        ListId::new("markets", SHAPE).with("sort", Some(sort))
    }

    #[test]
    fn a_cursor_round_trips_within_its_list() {
        let paging = Paging::parse(Some(5), None, None, &list("name")).unwrap();
        let key = vec![
            KeyPart::Null,
            KeyPart::Text("Zürich?".into()),
            KeyPart::Int(7),
        ];
        let cursor = paging.cursor_after(&key);
        assert!(cursor
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let next = Paging::parse(Some(5), None, Some(&cursor), &list("name")).unwrap();
        assert_eq!(next.after, Some(key));
    }

    #[test]
    fn a_cursor_is_refused_with_offset_in_another_list_or_when_edited() {
        let paging = Paging::parse(None, None, None, &list("name")).unwrap();
        let cursor =
            paging.cursor_after(&[KeyPart::Int(1), KeyPart::Text("a".into()), KeyPart::Int(2)]);
        let field_of = |r: Result<Paging, Vec<FieldError>>| r.unwrap_err()[0].field.clone();
        assert_eq!(
            field_of(Paging::parse(None, Some(0), Some(&cursor), &list("name"))),
            "cursor"
        );
        let other = Paging::parse(None, None, Some(&cursor), &list("volume")).unwrap_err();
        assert!(other[0].message.contains("another list"), "{other:?}");
        let mut edited = cursor.into_bytes();
        edited[3] = if edited[3] == b'A' { b'B' } else { b'A' };
        let edited = String::from_utf8(edited).unwrap();
        let bad = Paging::parse(None, None, Some(&edited), &list("name")).unwrap_err();
        assert!(bad[0].message.contains("not a valid cursor"));
        for junk in ["", "!!", "abc", &"A".repeat(CURSOR_MAX + 1)] {
            assert_eq!(
                field_of(Paging::parse(None, None, Some(junk), &list("name"))),
                "cursor"
            );
        }
    }

    #[test]
    fn a_page_keeps_the_limit_and_keys_its_last_row_only_when_more_follow() {
        let paging = Paging::parse(Some(2), None, None, &list("name")).unwrap();
        let key = |i: &i64| vec![KeyPart::Int(*i)];
        let page = Page::of(vec![1, 2, 3], 9, &paging, key);
        assert_eq!(
            (page.items, page.next),
            (vec![1, 2], Some(vec![KeyPart::Int(2)]))
        );
        let last = Page::of(vec![1, 2], 9, &paging, key);
        assert_eq!(last.next, None);
    }
}
