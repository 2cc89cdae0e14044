//! Live markets as data: the events every change writes (the outbox), and a market's
//! probability history.
//!
//! **Events.** Every change a client may care about is written as a row with a strictly
//! increasing sequence number in the same transaction as the change itself, so an event exists
//! exactly when its change does: a crash cannot lose one or invent one. The event stream
//! (`GET /api/events`) and the webhooks read these rows; a client resumes after the last
//! sequence number it saw. Rows older than the retention are pruned by a job, which records how
//! far it pruned so a resume point from before that is told so.
//!
//! **History.** Each stake also leaves its market's pools and volume in a row per market and
//! minute (`market_history`, upserted: the last stake of a minute wins). A point of the history
//! at time `t` is the last row before `t`; a market with no row before `t` had nothing staked
//! yet (uniform probabilities). [`history`] turns those rows, one looked up per interval
//! boundary, into the points of a chart: a request costs one index lookup per point, however
//! busy the market.

use serde_json::{json, Value};
use time::OffsetDateTime;

use super::{
    market::{Market, MarketStatus},
    trading::Bet,
    FieldError,
};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A market was created (with its creator's initial stake, if any).
    MarketCreated,
    /// Its name, description or close time changed.
    MarketUpdated,
    /// It stopped taking stakes (by request, or its close time passed).
    MarketClosed,
    /// It was resolved and paid out.
    MarketResolved,
    /// It was cancelled and every stake refunded.
    MarketCancelled,
    /// It was deleted.
    MarketDeleted,
    /// A stake was placed; carries the market's new pools and probabilities.
    StakePlaced,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 7] = [
        EventKind::MarketCreated,
        EventKind::MarketUpdated,
        EventKind::MarketClosed,
        EventKind::MarketResolved,
        EventKind::MarketCancelled,
        EventKind::MarketDeleted,
        EventKind::StakePlaced,
    ];

    /// The stored and API spelling (`event:` of the stream, `type` of the JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::MarketCreated => "market.created",
            EventKind::MarketUpdated => "market.updated",
            EventKind::MarketClosed => "market.closed",
            EventKind::MarketResolved => "market.resolved",
            EventKind::MarketCancelled => "market.cancelled",
            EventKind::MarketDeleted => "market.deleted",
            EventKind::StakePlaced => "stake.placed",
        }
    }

    /// Parses a spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The event a change to `status` is.
    pub fn of_status(status: MarketStatus) -> Self {
        match status {
            MarketStatus::Active => EventKind::MarketUpdated,
            MarketStatus::Closed => EventKind::MarketClosed,
            MarketStatus::Resolved => EventKind::MarketResolved,
            MarketStatus::Cancelled => EventKind::MarketCancelled,
        }
    }
}

/// An event to append in the writing transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// What happened.
    pub kind: EventKind,
    /// To which market.
    pub market_id: i64,
    /// What a client needs to follow it without another request (see [`NewEvent::market`] and
    /// [`NewEvent::stake`]).
    pub data: Value,
}

impl NewEvent {
    /// `kind` of market `m`, with the market's state after the change.
    pub fn market(kind: EventKind, m: &Market) -> Self {
        let pools: Vec<i64> = m.outcomes.iter().map(|o| o.pool).collect();
        NewEvent {
            kind,
            market_id: m.id,
            data: json!({
                "name": m.name,
                "status": m.status.as_str(),
                "version": m.version,
                "volume": m.volume,
                "pools": pools,
                "probabilities": probabilities(&pools),
                "resolution": m.resolution,
                "close_time": m.close_time.map(rfc3339),
            }),
        }
    }

    /// Market `id` was deleted.
    pub fn deleted(id: i64) -> Self {
        NewEvent {
            kind: EventKind::MarketDeleted,
            market_id: id,
            data: json!({}),
        }
    }

    /// `bet` was placed, leaving its market with `pools`, `volume` and `version`.
    pub fn stake(bet: &Bet, pools: &[i64], volume: i64, version: i64) -> Self {
        NewEvent {
            kind: EventKind::StakePlaced,
            market_id: bet.market_id,
            data: json!({
                "bet_id": bet.id,
                "user_id": bet.user_id,
                "outcome": bet.outcome,
                "amount": bet.amount,
                "version": version,
                "volume": volume,
                "pools": pools,
                "probabilities": probabilities(pools),
            }),
        }
    }
}

/// A market's pools (in outcome order), volume and version, as a stake reads them before it
/// adds itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Each outcome's pool.
    pub pools: Vec<i64>,
    /// The sum of all stakes.
    pub volume: i64,
    /// The market's version.
    pub version: i64,
}

impl Tally {
    /// The tally after `amount` more on `outcome` (a stake bumps the version once).
    pub fn with_stake(mut self, outcome: u32, amount: i64) -> Self {
        if let Some(pool) = self.pools.get_mut(outcome as usize) {
            *pool += amount;
        }
        self.volume += amount;
        self.version += 1;
        self
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its sequence number: strictly increasing in commit order (gaps are possible).
    pub seq: i64,
    /// The kind's spelling (kept as stored: a newer agora's kind passes through).
    pub kind: String,
    /// The market.
    pub market_id: i64,
    /// The kind's data.
    pub data: Value,
    /// When it was committed (to the millisecond).
    pub created_at: OffsetDateTime,
}

/// Where the outbox stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventBounds {
    /// The newest sequence number written (0 when none ever was).
    pub newest: i64,
    /// Every event up to this one has been pruned (0 when none was).
    pub pruned_through: i64,
}

/// Parimutuel probabilities of `pools`: each over the total, uniform while nothing is staked.
pub fn probabilities(pools: &[i64]) -> Vec<f64> {
    let total: i64 = pools.iter().sum();
    let n = pools.len().max(1) as f64;
    pools
        .iter()
        .map(|&p| {
            if total > 0 {
                p as f64 / total as f64
            } else {
                1.0 / n
            }
        })
        .collect()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The width of a history point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// One minute.
    Minute,
    /// Five minutes.
    FiveMinutes,
    /// One hour.
    Hour,
    /// One day (UTC).
    Day,
}

impl Interval {
    /// Every interval, shortest first.
    pub const ALL: [Interval; 4] = [
        Interval::Minute,
        Interval::FiveMinutes,
        Interval::Hour,
        Interval::Day,
    ];

    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Minute => "1m",
            Interval::FiveMinutes => "5m",
            Interval::Hour => "1h",
            Interval::Day => "1d",
        }
    }

    /// Parses the API spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.as_str() == s)
    }

    /// Its length in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            Interval::Minute => 60_000,
            Interval::FiveMinutes => 300_000,
            Interval::Hour => 3_600_000,
            Interval::Day => 86_400_000,
        }
    }
}

/// The most points one history request returns.
pub const HISTORY_POINTS_MAX: i64 = 1_500;
/// The most markets of one multi-market history request.
pub const HISTORY_MARKETS_MAX: usize = 20;

/// The minute a time falls in, as stored (Unix milliseconds of its start).
pub fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(60_000) * 60_000
}

/// A market's pools and volume at the end of a minute in which it was staked on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// The minute (Unix milliseconds of its start).
    pub minute: i64,
    /// Each outcome's pool after the minute's last stake.
    pub pools: Vec<i64>,
    /// The market's volume after it.
    pub volume: i64,
}

impl HistoryRow {
    /// Pools as stored: decimal integers joined by commas.
    pub fn encode_pools(pools: &[i64]) -> String {
        pools
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Stored pools back (`None` for text that is not such a list).
    pub fn decode_pools(text: &str) -> Option<Vec<i64>> {
        if text.is_empty() {
            return Some(vec![]);
        }
        text.split(',').map(|p| p.parse().ok()).collect()
    }
}

/// A validated history request: `points` intervals of `interval` from `from` (both aligned
/// to the interval in UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRange {
    /// The width of each point.
    pub interval: Interval,
    /// Start of the first point (Unix milliseconds).
    pub from: i64,
    /// How many points.
    pub points: i64,
}

impl HistoryRange {
    /// The range of a market created at `created`, as asked (`from`, `to`: Unix milliseconds,
    /// either may be absent) at `now`. The range is widened to whole intervals and starts no
    /// earlier than the interval of the market's creation; `to` defaults to now (and a later one
    /// is taken as now: no point is made for time to come) and `from` to
    /// the creation, or, when that would be more than [`HISTORY_POINTS_MAX`] points, to as many
    /// points back from `to`. An explicit range of more points than that is refused.
    pub fn parse(
        interval: Interval,
        from: Option<i64>,
        to: Option<i64>,
        created: i64,
        now: i64,
    ) -> Result<Self, Vec<FieldError>> {
        let step = interval.millis();
        let floor = |t: i64| t.div_euclid(step) * step;
        let to_ms = to.unwrap_or(now).min(now);
        if let (Some(f), Some(t)) = (from, to) {
            if f > t {
                return Err(vec![FieldError::new("from", "must not be after `to`")]);
            }
        }
        let start = floor(created);
        // The interval holding `to` is the last point (its end may be past `to`).
        let end = floor(to_ms).max(start) + step;
        let first = match from {
            Some(f) => floor(f).max(start).min(end - step),
            None => start.max(end - HISTORY_POINTS_MAX * step),
        };
        let points = (end - first) / step;
        if points > HISTORY_POINTS_MAX {
            return Err(vec![FieldError::new(
                "from",
                format!(
                    "the range holds {points} points of {}; at most {HISTORY_POINTS_MAX}: narrow \
                     `from`/`to` or choose a longer interval",
                    interval.as_str()
                ),
            )]);
        }
        Ok(HistoryRange {
            interval,
            from: first,
            points,
        })
    }

    /// The times whose last row each point needs: the start of every point, and the end of
    /// the last (`points + 1` boundaries).
    pub fn boundaries(&self) -> Vec<i64> {
        let step = self.interval.millis();
        (0..=self.points).map(|i| self.from + i * step).collect()
    }
}

/// One point of a history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPoint {
    /// Start of its interval.
    pub t: OffsetDateTime,
    /// Each outcome's probability at the end of the interval (the last in it).
    pub probabilities: Vec<f64>,
    /// Credits staked during the interval.
    pub volume: i64,
}

/// The points of `range` for a market of `outcomes` outcomes, given for each of
/// [`HistoryRange::boundaries`] the last row before it (`None`: nothing staked yet).
pub fn history(
    range: &HistoryRange,
    outcomes: usize,
    before: &[Option<HistoryRow>],
) -> Vec<HistoryPoint> {
    let step = range.interval.millis();
    let empty = vec![0; outcomes];
    let state = |row: &Option<HistoryRow>| match row {
        Some(r) => (r.pools.clone(), r.volume),
        None => (empty.clone(), 0),
    };
    before
        .windows(2)
        .enumerate()
        .map(|(i, pair)| {
            let (_, volume_before) = state(&pair[0]);
            let (pools, volume_after) = state(&pair[1]);
            HistoryPoint {
                t: crate::repo::from_millis(range.from + i as i64 * step),
                probabilities: probabilities(&pools),
                volume: volume_after - volume_before,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn kinds_and_intervals_read_back_as_spelled() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        for interval in Interval::ALL {
            assert_eq!(Interval::parse(interval.as_str()), Some(interval));
        }
        assert_eq!(Interval::parse("2m"), None);
        assert_eq!(EventKind::parse("market.exploded"), None);
    }

    #[test]
    fn pools_round_trip_and_bad_text_is_refused() {
        let pools = [0, 15, 1_000_000_000];
        let text = HistoryRow::encode_pools(&pools);
        assert_eq!(text, "0,15,1000000000");
        assert_eq!(HistoryRow::decode_pools(&text), Some(pools.to_vec()));
        assert_eq!(HistoryRow::decode_pools("1,,2"), None);
        assert_eq!(HistoryRow::decode_pools("x"), None);
    }

    #[test]
    fn probabilities_are_uniform_until_something_is_staked() {
        assert_eq!(probabilities(&[0, 0, 0, 0]), vec![0.25; 4]);
        assert_eq!(probabilities(&[30, 10]), vec![0.75, 0.25]);
    }

    #[test]
    fn a_range_is_whole_intervals_from_the_creation_and_bounded() {
        let created = 10 * MIN + 5_000;
        let now = 25 * MIN + 1;
        let r = HistoryRange::parse(Interval::FiveMinutes, None, None, created, now).unwrap();
        assert_eq!((r.from, r.points), (10 * MIN, 4)); // 10-15, 15-20, 20-25, 25-30
        assert_eq!(r.boundaries().len(), 5);
        // `from` before the creation starts at the creation; `to` inside an interval ends it.
        let r =
            HistoryRange::parse(Interval::Minute, Some(0), Some(12 * MIN), created, now).unwrap();
        assert_eq!((r.from, r.points), (10 * MIN, 3));
        assert!(
            HistoryRange::parse(Interval::Minute, Some(20 * MIN), Some(MIN), created, now).is_err()
        );
        // A `to` to come ends at now: no point for time that has not happened.
        let r =
            HistoryRange::parse(Interval::FiveMinutes, None, Some(90 * MIN), created, now).unwrap();
        assert_eq!((r.from, r.points), (10 * MIN, 4));
        // Too many points: refused when asked for, the latest ones by default.
        let now = created + 10_000 * MIN;
        assert!(
            HistoryRange::parse(Interval::Minute, Some(created), Some(now), created, now).is_err()
        );
        let r = HistoryRange::parse(Interval::Minute, None, None, created, now).unwrap();
        assert_eq!(r.points, HISTORY_POINTS_MAX);
        assert_eq!(r.from + r.points * MIN, minute_of(now) + MIN);
        let r = HistoryRange::parse(Interval::Day, None, None, created, now).unwrap();
        assert_eq!((r.from, r.points), (0, 7));
    }

    #[test]
    fn points_carry_the_last_state_of_their_interval_and_the_volume_within_it() {
        let range = HistoryRange {
            interval: Interval::Minute,
            from: 0,
            points: 4,
        };
        let row = |minute, pools: &[i64], volume| {
            Some(HistoryRow {
                minute,
                pools: pools.to_vec(),
                volume,
            })
        };
        // Staked in minutes 0 and 2; nothing in 1 and 3.
        let before = [
            None,
            row(0, &[10, 0], 10),
            row(0, &[10, 0], 10),
            row(2 * MIN, &[10, 30], 40),
            row(2 * MIN, &[10, 30], 40),
        ];
        let points = history(&range, 2, &before);
        let summary: Vec<(Vec<f64>, i64)> = points
            .iter()
            .map(|p| (p.probabilities.clone(), p.volume))
            .collect();
        assert_eq!(
            summary,
            vec![
                (vec![1.0, 0.0], 10),
                (vec![1.0, 0.0], 0),
                (vec![0.25, 0.75], 30),
                (vec![0.25, 0.75], 0)
            ]
        );
        assert_eq!(points[3].t, crate::repo::from_millis(3 * MIN));
    }
}
