//! Markets: their lifecycle status, outcomes, parimutuel probabilities, and the validated
//! inputs that create, change and list them.

use std::collections::HashSet;

use time::OffsetDateTime;

use super::{
    paging::{KeyKind, ListId},
    text::label_key,
    trading::Stake,
    user::UserSummary,
    FieldError, Page, Paging, Problems,
};

/// Shortest market name, in characters.
pub const NAME_MIN: usize = 3;
/// Longest market name, in characters.
pub const NAME_MAX: usize = 200;
/// Longest description, in characters.
pub const DESCRIPTION_MAX: usize = 5_000;
/// Longest outcome label, in characters.
pub const LABEL_MAX: usize = 50;
/// Fewest outcomes a market may have.
pub const OUTCOMES_MIN: usize = 2;
/// Most outcomes a market may have.
pub const OUTCOMES_MAX: usize = 10;
pub use super::paging::{OFFSET_MAX, PAGE_DEFAULT, PAGE_MAX};

/// Where a market is in its life. Moves forward only:
/// `active -> closed -> resolved`, or `active|closed -> cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarketStatus {
    /// Open for stakes.
    Active,
    /// No more stakes; awaiting resolution.
    Closed,
    /// Settled: the winning outcome is known and payouts are made.
    Resolved,
    /// Called off: every stake refunded.
    Cancelled,
}

impl MarketStatus {
    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            MarketStatus::Active => "active",
            MarketStatus::Closed => "closed",
            MarketStatus::Resolved => "resolved",
            MarketStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(MarketStatus::Active),
            "closed" => Some(MarketStatus::Closed),
            "resolved" => Some(MarketStatus::Resolved),
            "cancelled" => Some(MarketStatus::Cancelled),
            _ => None,
        }
    }
}

/// One outcome of a market and the credits staked on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The label, unique within the market (compared by [`super::text::label_key`]).
    pub label: String,
    /// Credits staked on this outcome.
    pub pool: i64,
}

/// A market as stored, with its outcomes and creator.
#[derive(Debug, Clone, PartialEq)]
pub struct Market {
    /// Market id.
    pub id: i64,
    /// Short question-like title.
    pub name: String,
    /// Longer text: resolution criteria, sources.
    pub description: Option<String>,
    /// Who created it.
    pub creator: UserSummary,
    /// Lifecycle status.
    pub status: MarketStatus,
    /// Outcomes in their declared order.
    pub outcomes: Vec<Outcome>,
    /// When staking stops, if set.
    pub close_time: Option<OffsetDateTime>,
    /// Index into `outcomes` of the winner once resolved.
    pub resolution: Option<usize>,
    /// Sum of all stakes.
    pub volume: i64,
    /// Bumped on every change; drives ETag / If-Match.
    pub version: i64,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Last change.
    pub updated_at: OffsetDateTime,
}

impl Market {
    /// Parimutuel probability of each outcome: its pool over the total pool, uniform while
    /// nothing is staked.
    pub fn probabilities(&self) -> Vec<f64> {
        let total: i64 = self.outcomes.iter().map(|o| o.pool).sum();
        let n = self.outcomes.len().max(1) as f64;
        self.outcomes
            .iter()
            .map(|o| {
                if total > 0 {
                    o.pool as f64 / total as f64
                } else {
                    1.0 / n
                }
            })
            .collect()
    }
}

/// A validated request to create a market.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMarket {
    /// Trimmed name.
    pub name: String,
    /// Trimmed description; `None` when absent or blank.
    pub description: Option<String>,
    /// The creating user.
    pub creator_id: i64,
    /// Outcome labels in order.
    pub outcomes: Vec<String>,
    /// Future close time, if any.
    pub close_time: Option<OffsetDateTime>,
    /// The creator's first stake, placed in the same transaction as the creation.
    pub initial_stake: Option<Stake>,
}

/// Unvalidated fields of a market creation, as the API received them.
#[derive(Debug, Clone, Default)]
pub struct NewMarketInput {
    /// Raw name.
    pub name: String,
    /// Raw description.
    pub description: Option<String>,
    /// Claimed creator.
    pub creator_id: i64,
    /// Raw outcome labels; `None` means YES/NO.
    pub outcomes: Option<Vec<String>>,
    /// Requested close time.
    pub close_time: Option<OffsetDateTime>,
    /// The creator's first stake: outcome index and amount.
    pub initial_stake: Option<(u32, i64)>,
}

impl NewMarket {
    /// Validates every field, reporting all problems at once.
    pub fn parse(input: NewMarketInput, now: OffsetDateTime) -> Result<Self, Vec<FieldError>> {
        let mut p = Problems::default();
        let name = p.visible_text("name", &input.name, NAME_MIN, NAME_MAX);
        let description = parse_description(&mut p, input.description.as_deref());
        if input.creator_id <= 0 {
            p.add("creator_id", "must be a positive user id");
        }
        let outcomes = match input.outcomes {
            None => vec!["YES".to_owned(), "NO".to_owned()],
            Some(labels) => parse_outcomes(&mut p, &labels),
        };
        check_close_time(&mut p, input.close_time, now);
        let initial_stake = input.initial_stake.and_then(|(outcome, amount)| {
            if outcome as usize >= outcomes.len() {
                p.add(
                    "initial_stake.outcome",
                    format!("must be an outcome index below {}", outcomes.len()),
                );
            }
            Stake::parse(outcome, amount)
                .map_err(|errs| {
                    errs.into_iter()
                        .for_each(|e| p.add(format!("initial_stake.{}", e.field), e.message))
                })
                .ok()
        });
        p.finish(NewMarket {
            name,
            description,
            creator_id: input.creator_id,
            outcomes,
            close_time: input.close_time,
            initial_stake,
        })
    }
}

/// A validated change to a market's editable fields. `None` leaves a field as it is;
/// `Some(None)` clears a nullable field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MarketChanges {
    /// New name.
    pub name: Option<String>,
    /// New description, or cleared.
    pub description: Option<Option<String>>,
    /// New close time, or cleared.
    pub close_time: Option<Option<OffsetDateTime>>,
}

impl MarketChanges {
    /// Validates the fields that are present.
    pub fn parse(input: MarketChanges, now: OffsetDateTime) -> Result<Self, Vec<FieldError>> {
        let mut p = Problems::default();
        let name = input
            .name
            .map(|n| p.visible_text("name", &n, NAME_MIN, NAME_MAX));
        let description = input
            .description
            .map(|d| parse_description(&mut p, d.as_deref()));
        if let Some(close_time) = input.close_time {
            check_close_time(&mut p, close_time, now);
        }
        p.finish(MarketChanges {
            name,
            description,
            close_time: input.close_time,
        })
    }

    /// True when the change would alter nothing.
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.description.is_none() && self.close_time.is_none()
    }

    /// True when applying the change to `market` alters its searchable text (name or
    /// description): setting a field to the value it has is no change.
    pub fn alters_text(&self, market: &Market) -> bool {
        self.name.as_ref().is_some_and(|n| *n != market.name)
            || self
                .description
                .as_ref()
                .is_some_and(|d| *d != market.description)
    }
}

fn parse_description(p: &mut Problems, raw: Option<&str>) -> Option<String> {
    let text = raw?.trim();
    if text.chars().count() > DESCRIPTION_MAX {
        p.add(
            "description",
            format!("must be at most {DESCRIPTION_MAX} characters long"),
        );
    }
    (!text.is_empty()).then(|| text.to_owned())
}

fn parse_outcomes(p: &mut Problems, labels: &[String]) -> Vec<String> {
    if !(OUTCOMES_MIN..=OUTCOMES_MAX).contains(&labels.len()) {
        p.add(
            "outcomes",
            format!("must have {OUTCOMES_MIN} to {OUTCOMES_MAX} labels"),
        );
    }
    let mut seen = HashSet::new();
    labels
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let field = format!("outcomes[{i}]");
            let before = p.len();
            let label = p.visible_text(&field, raw, 1, LABEL_MAX);
            // Labels that read the same (case, spacing, invisible characters aside) would let
            // a staker pick one while meaning the other.
            if p.len() == before && !seen.insert(label_key(&label)) {
                p.add(
                    field,
                    "duplicates an earlier label (compared ignoring case, spacing and invisible characters)",
                );
            }
            label
        })
        .collect()
}

fn check_close_time(p: &mut Problems, close_time: Option<OffsetDateTime>, now: OffsetDateTime) {
    if let Some(t) = close_time {
        if t <= now {
            p.add("close_time", "must be in the future");
        } else if t.year() > 9999 {
            p.add("close_time", "must be before the year 10000");
        }
    }
}

/// Columns a market list can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SortKey {
    /// Total staked.
    Volume,
    /// Creation time.
    CreatedAt,
    /// Close time (markets without one last).
    CloseTime,
    /// Name, case-insensitively.
    Name,
}

impl SortKey {
    /// The natural direction: biggest / newest first, soonest / alphabetical first.
    pub fn default_descending(self) -> bool {
        matches!(self, SortKey::Volume | SortKey::CreatedAt)
    }

    /// The parameter value that selects this sort.
    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::Volume => "volume",
            SortKey::CreatedAt => "created_at",
            SortKey::CloseTime => "close_time",
            SortKey::Name => "name",
        }
    }

    /// What a row's key is under this sort: the sort column, then the id.
    pub fn key_shape(self) -> &'static [KeyKind] {
        match self {
            SortKey::Volume | SortKey::CreatedAt => &[KeyKind::Int, KeyKind::Int],
            SortKey::CloseTime => &[KeyKind::NullableInt, KeyKind::Int],
            SortKey::Name => &[KeyKind::Text, KeyKind::Int],
        }
    }
}

/// A validated market list request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListQuery {
    /// Only markets in this status.
    pub status: Option<MarketStatus>,
    /// Only markets by this creator.
    pub creator_id: Option<i64>,
    /// Sort column.
    pub sort: SortKey,
    /// Descending order.
    pub descending: bool,
    /// Page size, and offset or cursor.
    pub paging: Paging,
}

impl ListQuery {
    /// The key `m` has in this list: the sort column as stored (times in Unix milliseconds,
    /// markets without a close time as null), then the id. Cursors continue after it.
    pub fn key_of(&self, m: &Market) -> super::paging::Key {
        use super::paging::KeyPart;
        let millis = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
        let column = match self.sort {
            SortKey::Volume => KeyPart::Int(m.volume),
            SortKey::CreatedAt => KeyPart::Int(millis(m.created_at)),
            SortKey::CloseTime => m
                .close_time
                .map_or(KeyPart::Null, |t| KeyPart::Int(millis(t))),
            SortKey::Name => KeyPart::Text(m.name.clone()),
        };
        vec![column, KeyPart::Int(m.id)]
    }

    /// Validates paging; `sort` defaults to `created_at`, `descending` to the sort's natural
    /// direction, `limit` to [`PAGE_DEFAULT`]. A `cursor` must come from a list with the same
    /// filters, sort and order.
    pub fn parse(
        status: Option<MarketStatus>,
        creator_id: Option<i64>,
        sort: Option<SortKey>,
        descending: Option<bool>,
        limit: Option<u32>,
        offset: Option<u64>,
        cursor: Option<&str>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut p = Problems::default();
        if creator_id.is_some_and(|id| id <= 0) {
            p.add("creator_id", "must be a positive user id");
        }
        let sort = sort.unwrap_or(SortKey::CreatedAt);
        let descending = descending.unwrap_or(sort.default_descending());
        let list = ListId::new("markets", sort.key_shape())
            .with("status", status.map(MarketStatus::as_str))
            .with("creator_id", creator_id)
            .with("sort", Some(sort.as_str()))
            .with("descending", Some(descending));
        let paging = Paging::parse(limit, offset, cursor, &list).unwrap_or_else(|errs| {
            errs.into_iter().for_each(|e| p.add(e.field, e.message));
            Paging::first(PAGE_DEFAULT)
        });
        p.finish(ListQuery {
            status,
            creator_id,
            sort,
            descending,
            paging,
        })
    }
}

/// One page of markets and the number of markets matching the filters.
pub type MarketPage = Page<Market>;

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn input() -> NewMarketInput {
        NewMarketInput {
            name: "Will it rain?".into(),
            creator_id: 1,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_to_yes_no_outcomes() {
        let m = NewMarket::parse(input(), OffsetDateTime::now_utc()).unwrap();
        assert_eq!(m.outcomes, vec!["YES", "NO"]);
    }

    #[test]
    fn reports_every_problem_at_once() {
        let now = OffsetDateTime::now_utc();
        let bad = NewMarketInput {
            name: "  x ".into(),
            creator_id: 0,
            outcomes: Some(vec!["A".into(), "a".into(), " ".into()]),
            close_time: Some(now - Duration::hours(1)),
            ..Default::default()
        };
        let errs = NewMarket::parse(bad, now).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "creator_id",
                "outcomes[1]",
                "outcomes[2]",
                "close_time"
            ]
        );
    }

    fn market() -> Market {
        let now = OffsetDateTime::now_utc();
        Market {
            id: 1,
            name: "n".into(),
            description: None,
            creator: UserSummary {
                id: 1,
                username: "u".into(),
            },
            status: MarketStatus::Active,
            outcomes: vec![
                Outcome {
                    label: "A".into(),
                    pool: 0,
                },
                Outcome {
                    label: "B".into(),
                    pool: 0,
                },
            ],
            close_time: None,
            resolution: None,
            volume: 0,
            version: 1,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn probabilities_are_uniform_when_empty_and_proportional_otherwise() {
        let mut m = market();
        assert_eq!(m.probabilities(), vec![0.5, 0.5]);
        m.outcomes[0].pool = 30;
        m.outcomes[1].pool = 10;
        assert_eq!(m.probabilities(), vec![0.75, 0.25]);
    }

    #[test]
    fn only_a_different_name_or_description_alters_the_searchable_text() {
        let mut m = market();
        let change = |name: Option<&str>, description: Option<Option<&str>>| MarketChanges {
            name: name.map(Into::into),
            description: description.map(|d| d.map(Into::into)),
            close_time: Some(None),
        };
        assert!(
            !change(None, None).alters_text(&m),
            "a close time is not text"
        );
        assert!(
            !change(Some("n"), Some(None)).alters_text(&m),
            "same values"
        );
        assert!(change(Some("m"), None).alters_text(&m));
        assert!(change(None, Some(Some("d"))).alters_text(&m));
        m.description = Some("d".into());
        assert!(
            change(None, Some(None)).alters_text(&m),
            "a cleared description"
        );
    }

    #[test]
    fn list_query_rejects_out_of_range_paging() {
        let errs = ListQuery::parse(
            None,
            Some(-1),
            None,
            None,
            Some(0),
            Some(OFFSET_MAX + 1),
            None,
        )
        .unwrap_err();
        assert_eq!(errs.len(), 3);
        let q = ListQuery::parse(None, None, Some(SortKey::Name), None, None, None, None).unwrap();
        assert!(!q.descending);
        assert_eq!(q.paging.limit, PAGE_DEFAULT);
    }
}
