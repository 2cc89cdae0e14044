//! Changes made to the database, so what each process keeps in memory (the market cache, the
//! vector index, the session cache) follows writes made anywhere. A [`ChangeFeed`] hands them
//! to a handler. On PostgreSQL each process announces its changes after they commit (`NOTIFY`)
//! and hears the others' (it applied its own already: read-your-writes). On SQLite triggers
//! note every change that matters in a table the server polls, whoever wrote it (`agora seed`
//! beside the server, say), the server's own changes included (applying one again is harmless).

use std::sync::Arc;

/// One committed change (another process's; on SQLite, any process's).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// A market was created, or its volume, pools or outcomes changed (a stake).
    Market(i64),
    /// A market's status, text or close time changed (what the search index keeps of it).
    Status(i64),
    /// A market was deleted.
    MarketDeleted(i64),
    /// A market's search vector was stored.
    Vector(i64),
    /// A session (refresh-token family) was revoked.
    Session(String),
    /// An account's role changed.
    User(i64),
    /// Announcements may have been missed (the feed was down): forget everything derived from
    /// the database and load it again.
    Resync,
}

impl Change {
    /// The announcement's text (at most a few dozen bytes).
    pub fn encode(&self) -> String {
        match self {
            Change::Market(id) => format!("m:{id}"),
            Change::Status(id) => format!("c:{id}"),
            Change::MarketDeleted(id) => format!("d:{id}"),
            Change::Vector(id) => format!("v:{id}"),
            Change::Session(family) => format!("s:{family}"),
            Change::User(id) => format!("u:{id}"),
            Change::Resync => "r:".into(),
        }
    }

    /// An announcement back; `None` for text this build does not know (a newer agora's).
    pub fn decode(text: &str) -> Option<Change> {
        let (kind, rest) = text.split_once(':')?;
        let id = || rest.parse::<i64>().ok();
        Some(match kind {
            "m" => Change::Market(id()?),
            "c" => Change::Status(id()?),
            "d" => Change::MarketDeleted(id()?),
            "v" => Change::Vector(id()?),
            "s" => Change::Session(rest.to_owned()),
            "u" => Change::User(id()?),
            "r" => Change::Resync,
            _ => return None,
        })
    }
}

/// What a process does with another process's change.
pub type ChangeHandler = Arc<dyn Fn(Change) + Send + Sync>;

/// Other processes' changes, as the engine announces them.
#[async_trait::async_trait]
pub trait ChangeFeed: Send + Sync {
    /// Starts following: `handler` gets every change another process commits from now on, and
    /// [`Change::Resync`] after any gap (the feed reconnected). Returns once it listens (or
    /// its first attempt failed); follows until the process ends.
    async fn follow(&self, handler: ChangeHandler);
    /// Whether the feed is connected now (a gauge in `/metrics`; while it is not, caches fall
    /// back to their time-to-live).
    fn connected(&self) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_round_trips_through_its_announcement() {
        for change in [
            Change::Market(7),
            Change::Status(9),
            Change::MarketDeleted(8),
            Change::Vector(9),
            Change::Session("a-b:c".into()),
            Change::User(3),
            Change::Resync,
        ] {
            assert_eq!(Change::decode(&change.encode()), Some(change));
        }
        assert_eq!(Change::decode("x:1"), None);
        assert_eq!(Change::decode("m:nope"), None);
        assert_eq!(Change::decode("garbage"), None);
    }
}
