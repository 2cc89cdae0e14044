//! Live markets over HTTP: the event stream (Server-Sent Events) and probability histories.

use std::{collections::HashSet, sync::Arc};

use futures_util::{stream::BoxStream, StreamExt};
use poem::web::sse::Event as SseEvent;
use poem_openapi::{
    param::{Header, Path, Query},
    payload::{EventStream, Json},
    ApiResponse, OpenApi,
};
use time::OffsetDateTime;

use super::{
    error::ApiError,
    event_models::{
        HistoryEnvelope, HistoryListEnvelope, HistoryListMeta, IntervalView, StreamedEvent,
    },
    ApiTags,
};
use crate::{
    domain::{event::HISTORY_MARKETS_MAX, FieldError},
    middleware::rate_limit::{RateLimits, VerifiedActor},
    repo::to_millis,
    service::events::{EventHub, HistoryAsk, HistoryService},
};

/// Most markets one stream may filter on.
pub const STREAM_MARKETS_MAX: usize = 100;

/// Live markets API.
pub struct EventsApi {
    /// The fan-out of events.
    pub hub: Arc<EventHub>,
    /// History reads.
    pub history: Arc<HistoryService>,
    /// Where the per-client stream limit finds the client's address.
    pub limits: Arc<RateLimits>,
}

/// The event stream.
#[derive(ApiResponse)]
pub enum EventStreamResponse {
    /// Server-Sent Events, one per change, each `id: <sequence number>`, `event: <type>`,
    /// `data: <the event as JSON>`; a comment line (`:`) every 15 s keeps idle connections open.
    #[oai(status = 200)]
    Stream(EventStream<BoxStream<'static, StreamedEvent>>),
}

/// A comma-separated list of positive ids, at most `max`, as `field`.
fn id_list(field: &str, text: &str, max: usize) -> Result<Vec<i64>, FieldError> {
    let refuse = |message: String| FieldError::new(field, message);
    let ids = text
        .split(',')
        .map(|part| match part.trim().parse::<i64>() {
            Ok(id) if id >= 1 => Ok(id),
            _ => Err(refuse(format!(
                "must be market ids (positive integers) separated by commas; `{}` is not one",
                part.trim()
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ids.len() > max {
        return Err(refuse(format!("at most {max} ids")));
    }
    Ok(ids)
}

fn millis(t: Option<OffsetDateTime>) -> Option<i64> {
    t.map(to_millis)
}

#[OpenApi(tag = "ApiTags::Markets")]
impl EventsApi {
    /// Stream events
    ///
    /// Every change to markets as it commits, as Server-Sent Events (`text/event-stream`; in a
    /// browser, `new EventSource("/api/events")` and `addEventListener("stake.placed", ...)`).
    /// Each message is `id: <sequence number>`, `event: <type>` and `data: <event JSON>`.
    /// Reconnecting with `Last-Event-ID` (browsers send it by themselves) or `?after=<id>`
    /// replays every event after that one from the server's record, in order, once, then goes
    /// on live. Events are kept for the retention (24 h by default); a resume point older than
    /// that gets a `stream.expired` message first. A client that reads too slowly is sent
    /// `stream.dropped` (with the id to resume after) and disconnected. Each client (user, or
    /// address when anonymous) may hold 8 open streams; 429 past that.
    #[oai(path = "/api/events", method = "get", operation_id = "stream_events")]
    async fn stream_events(
        &self,
        /// Only events of these markets: ids separated by commas (at most 100).
        markets: Query<Option<String>>,
        /// Resume after this event (for clients that cannot send `Last-Event-ID`; the header
        /// wins when both are sent).
        #[oai(validator(minimum(value = "0")))]
        after: Query<Option<i64>>,
        /// Resume after this event (what `EventSource` sends when it reconnects).
        #[oai(name = "Last-Event-ID")]
        last_event_id: Header<Option<String>>,
        req: &poem::Request,
    ) -> Result<EventStreamResponse, ApiError> {
        let markets = match markets.0.as_deref() {
            Some(text) => Some(
                id_list("markets", text, STREAM_MARKETS_MAX)
                    .map_err(|e| ApiError::from(vec![e]))?
                    .into_iter()
                    .collect::<HashSet<_>>(),
            ),
            None => None,
        };
        let resume =
            match last_event_id.0.as_deref().map(str::trim) {
                Some(text) => Some(text.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(
                    || {
                        ApiError::from(vec![FieldError::new(
                            "Last-Event-ID",
                            "must be the id of an event (a non-negative integer)",
                        )])
                    },
                )?),
                None => after.0,
            };
        let client = match req.extensions().get::<VerifiedActor>() {
            Some(VerifiedActor(actor)) => format!("user:{}", actor.user_id),
            None => {
                let peer = req.remote_addr().as_socket_addr().map(|a| a.ip());
                format!("ip:{}", self.limits.client_ip(peer, req.headers()))
            }
        };
        let stream = self.hub.subscribe(client, resume, markets).await?;
        let views = stream.map(StreamedEvent::from).boxed();
        Ok(EventStreamResponse::Stream(
            EventStream::new(views)
                .keep_alive(self.hub.config().heartbeat)
                .to_event(|event| {
                    SseEvent::message(event.json.as_ref())
                        .id(event.id.to_string())
                        .event_type(event.kind)
                }),
        ))
    }

    /// A market's history
    ///
    /// The probability of each outcome over time, one point per interval (the last probability
    /// in it, and the credits staked in it), from the market's creation: dense enough to draw a
    /// chart. `from` and `to` widen to whole intervals (UTC). Without `from`, the history
    /// starts at the creation, or 1,500 points before `to` when it is older; a range of more
    /// than 1,500 points is refused (422: narrow it or choose a longer interval).
    #[oai(
        path = "/api/markets/:id/history",
        method = "get",
        operation_id = "get_market_history"
    )]
    async fn get_market_history(
        &self,
        /// Market id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        /// Width of a point (default `1h`).
        interval: Query<Option<IntervalView>>,
        /// First time wanted (RFC 3339; default: the creation).
        from: Query<Option<OffsetDateTime>>,
        /// Last time wanted (RFC 3339; default, and latest: now).
        to: Query<Option<OffsetDateTime>>,
    ) -> Result<Json<HistoryEnvelope>, ApiError> {
        let ask = ask(interval.0, from.0, to.0);
        let history = self.history.history(id.0, ask).await?;
        Ok(Json(HistoryEnvelope::new(history.into())))
    }

    /// Several markets' histories
    ///
    /// The histories of up to 20 markets at once (as `GET /api/markets/{id}/history` gives
    /// each), in the order of `ids`. 422 when one of them does not exist.
    #[oai(
        path = "/api/markets/history",
        method = "get",
        operation_id = "get_markets_history"
    )]
    async fn get_markets_history(
        &self,
        /// Market ids separated by commas (1 to 20).
        #[oai(validator(min_length = 1, max_length = 400))]
        ids: Query<String>,
        /// Width of a point (default `1h`).
        interval: Query<Option<IntervalView>>,
        /// First time wanted (RFC 3339; default: each market's creation).
        from: Query<Option<OffsetDateTime>>,
        /// Last time wanted (RFC 3339; default, and latest: now).
        to: Query<Option<OffsetDateTime>>,
    ) -> Result<Json<HistoryListEnvelope>, ApiError> {
        let mut ids =
            id_list("ids", &ids.0, HISTORY_MARKETS_MAX).map_err(|e| ApiError::from(vec![e]))?;
        let mut seen = HashSet::new();
        ids.retain(|id| seen.insert(*id));
        let ask = ask(interval.0, from.0, to.0);
        let histories = self.history.histories(ids, ask).await?;
        let meta = HistoryListMeta {
            count: histories.len() as u32,
        };
        Ok(Json(HistoryListEnvelope::new(
            histories.into_iter().map(Into::into).collect(),
            meta,
        )))
    }
}

fn ask(
    interval: Option<IntervalView>,
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
) -> HistoryAsk {
    HistoryAsk {
        interval: interval.unwrap_or(IntervalView::OneHour).into(),
        from: millis(from),
        to: millis(to),
    }
}
