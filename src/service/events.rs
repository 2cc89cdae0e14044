//! Live markets: the event stream's fan-out and the history use cases.
//!
//! [`EventHub`] tails the outbox (every [`EventConfig::poll`]; each process tails it, so every
//! stream carries every event whichever process wrote it) and hands each new event to every open
//! stream through one bounded broadcast ring. A stream that resumes (`Last-Event-ID`) first
//! replays from the outbox, then follows the ring. Writers never wait for streams: the ring
//! overwrites its oldest entries, and a stream that falls that far behind (its client reads too
//! slowly) is ended with a last `stream.dropped` event carrying its position, from which the
//! client resumes. Open streams count against a per-client limit; [`EventHub::close`] (at
//! shutdown) ends them all.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        atomic::{AtomicI64, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

use futures_util::Stream;
use tokio::sync::{broadcast, watch};

use crate::{
    domain::{
        event::{history, Event, HistoryPoint, HistoryRange, Interval},
        market::Market,
        FieldError,
    },
    error::AppError,
    repo::{EventRepository, MarketRepository},
};

/// Event stream settings.
#[derive(Debug, Clone, Copy)]
pub struct EventConfig {
    /// How often the outbox is read for new events.
    pub poll: Duration,
    /// How often an idle stream gets a heartbeat comment.
    pub heartbeat: Duration,
    /// Events the broadcast ring holds: how far a stream may fall behind before it is dropped.
    pub buffer: usize,
    /// Open streams one client (a user, or an address when anonymous) may hold.
    pub per_client: usize,
}

impl Default for EventConfig {
    fn default() -> Self {
        EventConfig {
            poll: Duration::from_millis(50),
            heartbeat: Duration::from_secs(15),
            buffer: 4096,
            per_client: 8,
        }
    }
}

/// Events replayed per read of the outbox.
const REPLAY_BATCH: u32 = 500;

/// An event on its way to the streams, shared by all of them: its text is rendered by the
/// first stream that sends it and reused by the others (with 100 streams, one rendering of an
/// event instead of 100).
#[derive(Debug)]
pub struct LiveEvent {
    /// The event.
    pub event: Event,
    rendered: OnceLock<Arc<str>>,
}

impl LiveEvent {
    /// `event`, not rendered yet.
    pub fn new(event: Event) -> Self {
        LiveEvent {
            event,
            rendered: OnceLock::new(),
        }
    }

    /// Its text: `render`'s, made on the first call.
    pub fn rendered(&self, render: impl FnOnce(&Event) -> String) -> Arc<str> {
        self.rendered
            .get_or_init(|| render(&self.event).into())
            .clone()
    }
}

impl PartialEq for LiveEvent {
    fn eq(&self, other: &Self) -> bool {
        self.event == other.event
    }
}

/// What a stream sends.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// An event.
    Event(Arc<LiveEvent>),
    /// The resume point is older than the retention: events after it up to `pruned_through`
    /// are gone; the stream goes on after them.
    Expired {
        /// The resume point asked for.
        after: i64,
        /// The last event pruned: the stream resumes after it.
        pruned_through: i64,
    },
    /// The client read too slowly; the stream ends here. Resume after `last`.
    Dropped {
        /// Every event up to this one was sent or did not match the stream's filter.
        last: i64,
    },
}

/// The fan-out of the outbox to event streams.
pub struct EventHub {
    repo: Arc<dyn EventRepository>,
    live: broadcast::Sender<Arc<LiveEvent>>,
    head: AtomicI64,
    stop: watch::Sender<bool>,
    clients: Mutex<HashMap<String, usize>>,
    open: AtomicUsize,
    config: EventConfig,
}

impl EventHub {
    /// A hub over `repo`; [`EventHub::start`] starts tailing.
    pub fn new(repo: Arc<dyn EventRepository>, config: EventConfig) -> Arc<Self> {
        let (live, _) = broadcast::channel(config.buffer.max(16));
        Arc::new(EventHub {
            repo,
            live,
            head: AtomicI64::new(0),
            stop: watch::channel(false).0,
            clients: Mutex::new(HashMap::new()),
            open: AtomicUsize::new(0),
            config,
        })
    }

    /// The settings.
    pub fn config(&self) -> &EventConfig {
        &self.config
    }

    /// Starts tailing the outbox from its newest event (older ones are replayed from the table
    /// by the streams that ask for them). While no stream is open it reads only the newest
    /// number, not the events.
    pub async fn start(self: &Arc<Self>) {
        match self.repo.bounds().await {
            Ok(bounds) => self.head.store(bounds.newest, Ordering::SeqCst),
            Err(e) => {
                tracing::warn!(error = %e, "reading the outbox failed; tailing from its start")
            }
        }
        let hub = self.clone();
        let mut stopped = self.stop.subscribe();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(hub.config.poll) => {}
                    _ = stopped.changed() => return,
                }
                // Nobody listens: only the newest number is kept (for the next stream to
                // start from), without reading the events themselves.
                if hub.open.load(Ordering::SeqCst) == 0 {
                    if let Ok(bounds) = hub.repo.bounds().await {
                        hub.head.fetch_max(bounds.newest, Ordering::SeqCst);
                    }
                    continue;
                }
                loop {
                    let head = hub.head.load(Ordering::SeqCst);
                    match hub.repo.after(head, None, 1000).await {
                        Ok(events) => {
                            failing = false;
                            let full = events.len() == 1000;
                            for event in events {
                                hub.head.store(event.seq, Ordering::SeqCst);
                                // No receiver is not an error: nobody listens right now.
                                let _ = hub.live.send(Arc::new(LiveEvent::new(event)));
                            }
                            if full {
                                continue;
                            }
                        }
                        Err(e) => {
                            if !failing {
                                tracing::warn!(error = %e, "reading new events failed; retrying");
                            }
                            failing = true;
                        }
                    }
                    break;
                }
            }
        });
    }

    /// Ends every open stream and stops tailing (at shutdown).
    pub fn close(&self) {
        let _ = self.stop.send(true);
    }

    /// Streams open now (a gauge).
    pub fn open_streams(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The newest event sequence number this process has seen.
    pub fn head(&self) -> i64 {
        self.head.load(Ordering::SeqCst)
    }

    /// Opens a stream for `client`: every event after `after` (replayed from the outbox), or
    /// from now on without it; only those of `markets` when given. Refused (429) when the
    /// client holds its limit of open streams already.
    pub async fn subscribe(
        self: &Arc<Self>,
        client: String,
        after: Option<i64>,
        markets: Option<HashSet<i64>>,
    ) -> Result<impl Stream<Item = StreamItem> + Send + 'static, AppError> {
        let guard = self.admit(client)?;
        let rx = self.live.subscribe();
        let mut pending = VecDeque::new();
        let cursor = match after {
            None => self.head(),
            Some(after) => {
                let bounds = self.repo.bounds().await?;
                if after < bounds.pruned_through {
                    pending.push_back(StreamItem::Expired {
                        after,
                        pruned_through: bounds.pruned_through,
                    });
                }
                after.max(bounds.pruned_through)
            }
        };
        let state = Subscription {
            repo: self.repo.clone(),
            rx,
            stopped: self.stop.subscribe(),
            cursor,
            markets,
            replaying: after.is_some(),
            caught_up: false,
            pending,
            done: false,
            _guard: guard,
        };
        Ok(futures_util::stream::unfold(state, |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
        }))
    }

    fn admit(self: &Arc<Self>, client: String) -> Result<StreamGuard, AppError> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let open = clients.entry(client.clone()).or_insert(0);
        if *open >= self.config.per_client {
            return Err(AppError::TooManyStreams {
                limit: self.config.per_client,
            });
        }
        *open += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(StreamGuard {
            hub: self.clone(),
            client,
        })
    }
}

/// One open stream's place in its client's count.
struct StreamGuard {
    hub: Arc<EventHub>,
    client: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.hub.open.fetch_sub(1, Ordering::Relaxed);
        let mut clients = self.hub.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = clients.get_mut(&self.client) {
            *open -= 1;
            if *open == 0 {
                clients.remove(&self.client);
            }
        }
    }
}

/// The state of one stream.
struct Subscription {
    repo: Arc<dyn EventRepository>,
    rx: broadcast::Receiver<Arc<LiveEvent>>,
    stopped: watch::Receiver<bool>,
    /// Every event up to here was sent or filtered out.
    cursor: i64,
    markets: Option<HashSet<i64>>,
    /// Reading the outbox (a resume) rather than the ring.
    replaying: bool,
    /// The last replay has just ended: a lag now is the replay's, not the client's.
    caught_up: bool,
    pending: VecDeque<StreamItem>,
    done: bool,
    _guard: StreamGuard,
}

impl Subscription {
    fn wanted(&self, event: &Event) -> bool {
        self.markets
            .as_ref()
            .is_none_or(|m| m.contains(&event.market_id))
    }

    async fn next(&mut self) -> Option<StreamItem> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.done || *self.stopped.borrow() {
                return None;
            }
            if self.replaying {
                let filter = self.markets.as_ref().map(|m| m.iter().copied().collect());
                match self.repo.after(self.cursor, filter, REPLAY_BATCH).await {
                    Ok(events) => {
                        if (events.len() as u32) < REPLAY_BATCH {
                            self.replaying = false;
                            self.caught_up = true;
                        }
                        for event in events {
                            self.cursor = event.seq;
                            self.pending
                                .push_back(StreamItem::Event(Arc::new(LiveEvent::new(event))));
                        }
                        continue;
                    }
                    Err(e) => {
                        // The client reconnects and resumes where it is.
                        tracing::warn!(error = %e, "replaying events failed; ending the stream");
                        return None;
                    }
                }
            }
            tokio::select! {
                received = self.rx.recv() => match received {
                    Ok(live) => {
                        self.caught_up = false;
                        if live.event.seq > self.cursor {
                            self.cursor = live.event.seq;
                            if self.wanted(&live.event) {
                                return Some(StreamItem::Event(live));
                            }
                        }
                    }
                    // Events queued in the ring while the stream replayed: read them from the
                    // outbox instead.
                    Err(broadcast::error::RecvError::Lagged(_)) if self.caught_up => {
                        self.replaying = true;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.done = true;
                        return Some(StreamItem::Dropped { last: self.cursor });
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.stopped.changed() => return None,
            }
        }
    }
}

/// A market's probability history.
#[derive(Debug, Clone, PartialEq)]
pub struct MarketHistory {
    /// The market as it is now.
    pub market: Arc<Market>,
    /// The range the points cover.
    pub range: HistoryRange,
    /// One point per interval.
    pub points: Vec<HistoryPoint>,
}

/// History reads.
pub struct HistoryService {
    events: Arc<dyn EventRepository>,
    markets: Arc<dyn MarketRepository>,
}

/// The raw history request: interval, and optional bounds in Unix milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct HistoryAsk {
    /// Width of a point.
    pub interval: Interval,
    /// First time wanted.
    pub from: Option<i64>,
    /// Last time wanted.
    pub to: Option<i64>,
}

impl HistoryService {
    /// The service over its repositories.
    pub fn new(events: Arc<dyn EventRepository>, markets: Arc<dyn MarketRepository>) -> Self {
        Self { events, markets }
    }

    /// The history of market `id`.
    pub async fn history(&self, id: i64, ask: HistoryAsk) -> Result<MarketHistory, AppError> {
        let market = self
            .markets
            .get(id)
            .await?
            .ok_or(AppError::NotFound("market"))?;
        self.of(market, ask).await
    }

    /// The histories of `ids` (each once, in the order given); 404 naming the first that does
    /// not exist.
    pub async fn histories(
        &self,
        ids: Vec<i64>,
        ask: HistoryAsk,
    ) -> Result<Vec<MarketHistory>, AppError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let market = self.markets.get(id).await?.ok_or_else(|| {
                AppError::Validation(vec![FieldError::new(
                    "ids",
                    format!("there is no market {id}"),
                )])
            })?;
            out.push(self.of(market, ask).await?);
        }
        Ok(out)
    }

    async fn of(&self, market: Arc<Market>, ask: HistoryAsk) -> Result<MarketHistory, AppError> {
        let now = crate::repo::to_millis(time::OffsetDateTime::now_utc());
        let created = crate::repo::to_millis(market.created_at);
        let range = HistoryRange::parse(ask.interval, ask.from, ask.to, created, now)
            .map_err(AppError::Validation)?;
        let rows = self
            .events
            .history_at(market.id, range.boundaries())
            .await?;
        let points = history(&range, market.outcomes.len(), &rows);
        Ok(MarketHistory {
            market,
            range,
            points,
        })
    }
}
