//! Entity tags of markets and the `If-Match` condition a write may carry.
//!
//! A market's tag is its id and version (`"42-3"`): versions only grow and ids are never
//! reused (migration 7), so no two representations of any markets share a tag, and a tag
//! cached for one market can never validate another.

use super::market::Market;

impl Market {
    /// The market's strong entity tag, quotes included: `"<id>-<version>"`.
    pub fn entity_tag(&self) -> String {
        format!("\"{}-{}\"", self.id, self.version)
    }
}

/// What an `If-Match` header demands of the market a write changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// `*`: the market exists, at any version.
    Any,
    /// The market's current entity tag is one of these strong tags (quotes included). Weak
    /// tags never match `If-Match` (RFC 9110 section 13.1.1), so they are not listed; an
    /// empty list (only weak tags, or a malformed header) matches nothing.
    OneOf(Vec<String>),
}

impl Precondition {
    /// True when `market`, as it is now, satisfies the condition (strong comparison).
    pub fn holds(&self, market: &Market) -> bool {
        match self {
            Precondition::Any => true,
            Precondition::OneOf(tags) => tags.contains(&market.entity_tag()),
        }
    }
}
