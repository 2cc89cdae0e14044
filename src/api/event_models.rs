//! Schemas of live markets: the event (one SSE message, and the body of a webhook delivery) and
//! a market's probability history.

use std::{borrow::Cow, sync::Arc};

use poem_openapi::{
    registry::{MetaSchemaRef, Registry},
    types::{Example, ParseFromJSON, ToJSON, Type},
    Enum, Object,
};
use time::{macros::datetime, OffsetDateTime};

use super::envelope::envelope;
use crate::{
    domain::event::{Event, Interval},
    service::events::{MarketHistory, StreamItem},
};

/// What an event's `data` holds. Market events (`market.*`) carry the market after the change
/// (`name`, `status`, `version`, `volume`, `pools`, `probabilities`, `resolution`,
/// `close_time`); `market.deleted` carries nothing; `stake.placed` carries the bet (`bet_id`,
/// `user_id`, `outcome`, `amount`) and the market after it (`version`, `volume`, `pools`,
/// `probabilities`). The stream's own messages: `stream.expired` (`after`, `pruned_through`)
/// and `stream.dropped` (`last`). Fields a type does not have are absent.
#[derive(Debug, Clone, Default, Object)]
pub struct EventData {
    /// The market's name.
    #[oai(skip_serializing_if_is_none)]
    pub name: Option<String>,
    /// The market's status: `active`, `closed`, `resolved` or `cancelled`.
    #[oai(skip_serializing_if_is_none)]
    pub status: Option<String>,
    /// The market's version (its ETag is `"<id>-<version>"`).
    #[oai(skip_serializing_if_is_none)]
    pub version: Option<i64>,
    /// The market's volume: credits staked in all.
    #[oai(skip_serializing_if_is_none)]
    pub volume: Option<i64>,
    /// Credits staked on each outcome, in outcome order.
    #[oai(skip_serializing_if_is_none)]
    pub pools: Option<Vec<i64>>,
    /// Each outcome's probability (its pool over the total; uniform while nothing is staked).
    #[oai(skip_serializing_if_is_none)]
    pub probabilities: Option<Vec<f64>>,
    /// The winning outcome of a resolved market.
    #[oai(skip_serializing_if_is_none)]
    pub resolution: Option<u32>,
    /// When the market stops taking stakes.
    #[oai(skip_serializing_if_is_none)]
    pub close_time: Option<OffsetDateTime>,
    /// The bet's id.
    #[oai(skip_serializing_if_is_none)]
    pub bet_id: Option<i64>,
    /// Who staked.
    #[oai(skip_serializing_if_is_none)]
    pub user_id: Option<i64>,
    /// The outcome staked on.
    #[oai(skip_serializing_if_is_none)]
    pub outcome: Option<u32>,
    /// Credits staked.
    #[oai(skip_serializing_if_is_none)]
    pub amount: Option<i64>,
    /// `stream.expired`: the resume point asked for.
    #[oai(skip_serializing_if_is_none)]
    pub after: Option<i64>,
    /// `stream.expired`: events up to this one were pruned; the stream goes on after it.
    #[oai(skip_serializing_if_is_none)]
    pub pruned_through: Option<i64>,
    /// `stream.dropped`: resume after this one.
    #[oai(skip_serializing_if_is_none)]
    pub last: Option<i64>,
}

/// One event: a message of `GET /api/events` (its `id:` is `id`, its `event:` is `type`, its
/// `data:` this object) and the body of a webhook delivery.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct EventView {
    /// The sequence number: strictly increasing (with gaps) in the order the changes
    /// committed. Resume after it with `Last-Event-ID` or `?after=`.
    pub id: i64,
    /// `market.created`, `market.updated`, `market.closed`, `market.resolved`,
    /// `market.cancelled`, `market.deleted`, `stake.placed`; on the stream also
    /// `stream.expired` and `stream.dropped`.
    #[oai(rename = "type")]
    pub kind: String,
    /// The market (absent on `stream.*` messages).
    #[oai(skip_serializing_if_is_none)]
    pub market_id: Option<i64>,
    /// When the change committed (absent on `stream.*` messages).
    #[oai(skip_serializing_if_is_none)]
    pub created_at: Option<OffsetDateTime>,
    /// What changed.
    pub data: EventData,
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> Self {
        EventView {
            id: e.seq,
            kind: e.kind.clone(),
            market_id: Some(e.market_id),
            created_at: Some(e.created_at),
            data: EventData::parse_from_json(Some(e.data.clone())).unwrap_or_default(),
        }
    }
}

impl From<StreamItem> for EventView {
    fn from(item: StreamItem) -> Self {
        match item {
            StreamItem::Event(live) => (&live.event).into(),
            StreamItem::Expired {
                after,
                pruned_through,
            } => EventView {
                id: pruned_through,
                kind: "stream.expired".into(),
                market_id: None,
                created_at: None,
                data: EventData {
                    after: Some(after),
                    pruned_through: Some(pruned_through),
                    ..EventData::default()
                },
            },
            StreamItem::Dropped { last } => EventView {
                id: last,
                kind: "stream.dropped".into(),
                market_id: None,
                created_at: None,
                data: EventData {
                    last: Some(last),
                    ..EventData::default()
                },
            },
        }
    }
}

impl Example for EventView {
    fn example() -> Self {
        EventView {
            id: 1207,
            kind: "stake.placed".into(),
            market_id: Some(42),
            created_at: Some(datetime!(2026-11-01 12:00:05 UTC)),
            data: EventData {
                bet_id: Some(311),
                user_id: Some(7),
                outcome: Some(0),
                amount: Some(100),
                version: Some(5),
                volume: Some(400),
                pools: Some(vec![300, 100]),
                probabilities: Some(vec![0.75, 0.25]),
                ..EventData::default()
            },
        }
    }
}

/// The width of a history point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum IntervalView {
    /// One minute.
    #[oai(rename = "1m")]
    OneMinute,
    /// Five minutes.
    #[oai(rename = "5m")]
    FiveMinutes,
    /// One hour.
    #[oai(rename = "1h")]
    OneHour,
    /// One day (UTC).
    #[oai(rename = "1d")]
    OneDay,
}

impl From<IntervalView> for Interval {
    fn from(i: IntervalView) -> Self {
        match i {
            IntervalView::OneMinute => Interval::Minute,
            IntervalView::FiveMinutes => Interval::FiveMinutes,
            IntervalView::OneHour => Interval::Hour,
            IntervalView::OneDay => Interval::Day,
        }
    }
}

impl From<Interval> for IntervalView {
    fn from(i: Interval) -> Self {
        match i {
            Interval::Minute => IntervalView::OneMinute,
            Interval::FiveMinutes => IntervalView::FiveMinutes,
            Interval::Hour => IntervalView::OneHour,
            Interval::Day => IntervalView::OneDay,
        }
    }
}

/// One point of a history.
#[derive(Debug, Clone, Object)]
pub struct HistoryPointView {
    /// Start of the interval.
    pub t: OffsetDateTime,
    /// Each outcome's probability at the end of the interval (after its last stake), in
    /// outcome order.
    pub probabilities: Vec<f64>,
    /// Credits staked during the interval.
    pub volume: i64,
}

/// A market's probability over time: one point per interval from `from` to `to`.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct HistoryView {
    /// The market.
    pub market_id: i64,
    /// The width of each point.
    pub interval: IntervalView,
    /// Start of the first point (aligned to the interval in UTC; never before the interval of
    /// the market's creation).
    pub from: OffsetDateTime,
    /// End of the last point.
    pub to: OffsetDateTime,
    /// The outcomes' labels, in the order of `probabilities`.
    pub outcomes: Vec<String>,
    /// One point per interval, oldest first.
    pub points: Vec<HistoryPointView>,
}

impl From<MarketHistory> for HistoryView {
    fn from(h: MarketHistory) -> Self {
        let step = h.range.interval.millis();
        HistoryView {
            market_id: h.market.id,
            interval: h.range.interval.into(),
            from: crate::repo::from_millis(h.range.from),
            to: crate::repo::from_millis(h.range.from + h.range.points * step),
            outcomes: h.market.outcomes.iter().map(|o| o.label.clone()).collect(),
            points: h
                .points
                .into_iter()
                .map(|p| HistoryPointView {
                    t: p.t,
                    probabilities: p.probabilities,
                    volume: p.volume,
                })
                .collect(),
        }
    }
}

impl Example for HistoryView {
    fn example() -> Self {
        let point = |t, p: f64, volume| HistoryPointView {
            t,
            probabilities: vec![p, 1.0 - p],
            volume,
        };
        HistoryView {
            market_id: 42,
            interval: IntervalView::OneHour,
            from: datetime!(2026-11-01 12:00 UTC),
            to: datetime!(2026-11-01 15:00 UTC),
            outcomes: vec!["YES".into(), "NO".into()],
            points: vec![
                point(datetime!(2026-11-01 12:00 UTC), 0.5, 200),
                point(datetime!(2026-11-01 13:00 UTC), 0.5, 0),
                point(datetime!(2026-11-01 14:00 UTC), 0.75, 200),
            ],
        }
    }
}

envelope! {
    /// A market's history.
    HistoryEnvelope { data: HistoryView }
}

/// Facts about a multi-market history.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct HistoryListMeta {
    /// How many markets.
    pub count: u32,
}

impl Example for HistoryListMeta {
    fn example() -> Self {
        HistoryListMeta { count: 1 }
    }
}

envelope! {
    /// Histories of several markets, in the order asked.
    HistoryListEnvelope { data: Vec<HistoryView>, meta: HistoryListMeta }
}

/// A stream's message: an event's id, type and JSON (an [`EventView`]), the JSON of a live event
/// rendered once for every stream that sends it. Documented as an [`EventView`].
#[derive(Debug, Clone)]
pub struct StreamedEvent {
    /// The event's id.
    pub id: i64,
    /// Its type.
    pub kind: String,
    /// The [`EventView`] as JSON.
    pub json: Arc<str>,
}

impl From<StreamItem> for StreamedEvent {
    fn from(item: StreamItem) -> Self {
        match item {
            StreamItem::Event(live) => StreamedEvent {
                id: live.event.seq,
                kind: live.event.kind.clone(),
                json: live.rendered(|e| EventView::from(e).to_json_string()),
            },
            other => {
                let view = EventView::from(other);
                StreamedEvent {
                    id: view.id,
                    json: view.to_json_string().into(),
                    kind: view.kind,
                }
            }
        }
    }
}

impl Type for StreamedEvent {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        EventView::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        EventView::schema_ref()
    }

    fn register(registry: &mut Registry) {
        EventView::register(registry)
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl ToJSON for StreamedEvent {
    fn to_json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.json).ok()
    }

    fn to_json_string(&self) -> String {
        self.json.to_string()
    }
}
