//! Changes announced between agora processes on one PostgreSQL: each write that changes what a
//! process keeps in memory notes it in its transaction ([`Conn::announce`](super::Conn::announce)); once the
//! transaction commits, the [`Announcer`] sends it (`pg_notify`, gathered over a few
//! milliseconds), and each process follows the channel with a connection of its own
//! ([`PgChangeFeed`]), ignoring its own announcements (it applied them already).
//!
//! The listening connection is checked every few seconds; when it fails, the feed says so (a
//! warning, and `agora_change_feed_connected 0` in `/metrics`), caches fall back to their
//! time-to-live, and it reconnects every second. After a gap the handler gets
//! [`Change::Resync`]: what was announced meanwhile is lost, so everything derived from the
//! database is dropped and loaded again.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, LazyLock,
    },
    time::Duration,
};

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::repo::{Change, ChangeFeed, ChangeHandler};

/// The channel every agora on the database listens on.
const CHANNEL: &str = "agora_changes";

/// This process, in its announcements: its own come back to it, and are skipped.
static ORIGIN: LazyLock<String> = LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string());

/// How often the listening connection is checked.
const CHECK_EVERY: Duration = Duration::from_secs(3);

/// Sends committed changes to the other processes: a task that gathers what transactions
/// committed over a few milliseconds and announces it in one `NOTIFY`, on a connection of its
/// own.
///
/// Not inside the writing transaction: a transaction that notifies takes a database-wide lock
/// at commit and holds it through the WAL flush, so every notifying commit waits for the
/// previous one's flush (stakes measured 708/s that way, against 1,072/s without). After the
/// commit, announcements cost nothing to the writer; the price is that a process killed
/// between a commit and its announcement (a few milliseconds) leaves the others on the TTL for
/// that change.
pub(crate) struct Announcer {
    tx: std::sync::Mutex<Option<mpsc::UnboundedSender<Vec<Change>>>>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// How long the announcer gathers changes before it sends them.
const GATHER: Duration = Duration::from_millis(5);

/// The most bytes of one announcement (`NOTIFY` takes up to 8000).
const PAYLOAD_MAX: usize = 7900;

impl Announcer {
    /// An announcer that announces nothing (before the runtime is there, and for tools).
    pub(crate) fn none() -> Self {
        Announcer {
            tx: Default::default(),
            task: Default::default(),
        }
    }

    /// The announcer task, on a connection of its own made with `config` (a busy pool must not
    /// delay announcements), made again when it fails.
    pub(crate) fn start(config: tokio_postgres::Config) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<Change>>();
        let task = tokio::spawn(async move {
            let mut client: Option<tokio_postgres::Client> = None;
            let mut failing_since: Option<std::time::Instant> = None;
            while let Some(first) = rx.recv().await {
                tokio::time::sleep(GATHER).await;
                let mut changes = first;
                while let Ok(more) = rx.try_recv() {
                    changes.extend(more);
                }
                let mut seen = std::collections::HashSet::new();
                changes.retain(|c| seen.insert(c.clone()));
                match send(&config, &mut client, &changes).await {
                    Ok(()) => failing_since = None,
                    Err(e) => {
                        client = None;
                        // One warning per outage, not one per batch.
                        if failing_since.is_none() {
                            tracing::warn!(error = %e, "announcing changes to other processes failed: their caches fall back to the TTL");
                            failing_since = Some(std::time::Instant::now());
                        }
                    }
                }
            }
        });
        Announcer {
            tx: std::sync::Mutex::new(Some(tx)),
            task: std::sync::Mutex::new(Some(task)),
        }
    }

    /// Sends what is queued and stops (at shutdown, and when `agora seed` ends: a server
    /// running on the database must hear of the last markets too). Waits at most 5 s.
    pub(crate) async fn close(&self) {
        drop(self.tx.lock().ok().and_then(|mut tx| tx.take()));
        let task = self.task.lock().ok().and_then(|mut task| task.take());
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// Queues `changes` (committed) for announcement.
    pub(crate) fn send(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        if let Some(tx) = self.tx.lock().ok().as_ref().and_then(|tx| tx.as_ref()) {
            let _ = tx.send(changes);
        }
    }
}

/// Announces `changes` in as few `NOTIFY`s as fit, on `client` (connected first if need be).
async fn send(
    config: &tokio_postgres::Config,
    client: &mut Option<tokio_postgres::Client>,
    changes: &[Change],
) -> Result<(), String> {
    if client.as_ref().is_none_or(|c| c.is_closed()) {
        let (c, connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        *client = Some(c);
    }
    let client = client.as_ref().expect("connected above");
    let mut payload = ORIGIN.clone();
    for change in changes {
        let text = change.encode();
        if payload.len() + 1 + text.len() > PAYLOAD_MAX {
            notify(client, &payload).await?;
            payload = ORIGIN.clone();
        }
        payload.push(' ');
        payload.push_str(&text);
    }
    notify(client, &payload).await
}

async fn notify(client: &tokio_postgres::Client, payload: &str) -> Result<(), String> {
    client
        .execute("SELECT pg_notify('agora_changes', $1)", &[&payload])
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Follows the changes other processes announce.
pub struct PgChangeFeed {
    config: tokio_postgres::Config,
    connected: Arc<AtomicBool>,
}

impl PgChangeFeed {
    pub(super) fn new(config: tokio_postgres::Config) -> Self {
        PgChangeFeed {
            config,
            connected: Arc::new(AtomicBool::new(false)),
        }
    }
}

#[async_trait]
impl ChangeFeed for PgChangeFeed {
    async fn follow(&self, handler: ChangeHandler) {
        let (config, connected) = (self.config.clone(), self.connected.clone());
        let (listening, first) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut listening = Some(listening);
            let mut gap = false;
            loop {
                let ended = listen(&config, &handler, &connected, gap, &mut listening).await;
                connected.store(false, Ordering::Relaxed);
                if let Some(l) = listening.take() {
                    let _ = l.send(());
                }
                tracing::warn!(
                    error = %ended.err().map_or_else(|| "the connection closed".to_owned(), |e| e.to_string()),
                    "not following other processes' changes: cached markets fall back to their time-to-live; reconnecting"
                );
                gap = true;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        // Return once listening (or once the first attempt failed): what the caller loads
        // next is then either announced to it or already in the database it reads.
        let _ = first.await;
    }

    fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// Listens until the connection fails; `gap`: announcements may have been missed before.
async fn listen(
    config: &tokio_postgres::Config,
    handler: &ChangeHandler,
    connected: &AtomicBool,
    gap: bool,
    listening: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The connection is driven here; notifications come out of it as messages.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(Ok(n.payload().to_owned())).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    });
    let result = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        connected.store(true, Ordering::Relaxed);
        if let Some(l) = listening.take() {
            let _ = l.send(());
        }
        if gap {
            tracing::info!("following other processes' changes again; reloading what may be stale");
            handler(Change::Resync);
        }
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.tick().await;
        loop {
            tokio::select! {
                message = rx.recv() => match message {
                    Some(Ok(payload)) => {
                        for change in decode(&payload) {
                            handler(change);
                        }
                    }
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                },
                _ = check.tick() => {
                    tokio::time::timeout(CHECK_EVERY, client.simple_query("SELECT 1"))
                        .await
                        .unwrap_or_else(|_| Ok(Vec::new()))?;
                    if client.is_closed() {
                        return Ok(());
                    }
                }
            }
        }
    }
    .await;
    driver.abort();
    result
}

/// Another process's changes in `payload`; none for this process's own, or ones it cannot read.
fn decode(payload: &str) -> Vec<Change> {
    let mut words = payload.split(' ');
    match words.next() {
        Some(origin) if origin != ORIGIN.as_str() => words.filter_map(Change::decode).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_skips_its_own_announcements_and_reads_others() {
        assert_eq!(decode(&format!("{} m:5", *ORIGIN)), vec![]);
        assert_eq!(
            decode("someone-else m:5 z:1 c:5 v:6 s:fam-ily"),
            vec![
                Change::Market(5),
                Change::Status(5),
                Change::Vector(6),
                Change::Session("fam-ily".into())
            ]
        );
        assert_eq!(decode("no-space"), vec![]);
    }
}
