//! Changes announced between agora processes on one PostgreSQL: each write that changes what a
//! process keeps in memory calls [`announce`] in its transaction (`pg_notify`, delivered to
//! every listener when the transaction commits, never when it rolls back), and each process
//! follows the channel with a connection of its own ([`PgChangeFeed`]), ignoring its own
//! announcements (it applied them already).
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

use super::{Conn, TxError};
use crate::repo::{Change, ChangeFeed, ChangeHandler};

/// The channel every agora on the database listens on.
const CHANNEL: &str = "agora_changes";

/// This process, in its announcements: its own come back to it, and are skipped.
static ORIGIN: LazyLock<String> = LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string());

/// How often the listening connection is checked.
const CHECK_EVERY: Duration = Duration::from_secs(3);

/// Announces `change` inside the transaction of `c` (at its commit).
pub(super) async fn announce(c: &Conn<'_>, change: Change) -> Result<(), TxError> {
    c.exec(
        "SELECT pg_notify('agora_changes', $1)",
        &[&payload(&change)],
    )
    .await?;
    Ok(())
}

/// The text announcing `change`: this process's origin, then the change.
pub(super) fn payload(change: &Change) -> String {
    format!("{} {}", *ORIGIN, change.encode())
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
                        if let Some(change) = decode(&payload) {
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

/// Another process's change in `payload`; `None` for this process's own, or one it cannot read.
fn decode(payload: &str) -> Option<Change> {
    let (origin, change) = payload.split_once(' ')?;
    if origin == ORIGIN.as_str() {
        return None;
    }
    Change::decode(change)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_skips_its_own_announcements_and_reads_others() {
        assert_eq!(decode(&format!("{} m:5", *ORIGIN)), None);
        assert_eq!(decode("someone-else m:5"), Some(Change::Market(5)));
        assert_eq!(decode("someone-else z:5"), None);
        assert_eq!(decode("no-space"), None);
    }
}
