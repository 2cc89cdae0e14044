//! [`WebhookRepository`] on SQLite (migration 11). The single writer runs one dispatch at a
//! time, so the cursor needs no lock of its own here.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};
use time::OffsetDateTime;

use super::{from_millis, to_millis};
use crate::{
    db::{snapshot, Db},
    domain::{
        event::Event,
        job::{JobKind, NewJob},
        paging::KeyPart,
        webhook::{
            job_payload, Attempt, Delivery, DeliveryStatus, NewWebhook, Outgoing, Webhook,
            WEBHOOKS_PER_USER,
        },
        Page, Paging, Rejection,
    },
    repo::{Dispatched, Render, RepoError, WebhookRepository},
};

const WEBHOOK_COLUMNS: &str = "id, user_id, url, markets, events, after_seq, created_at";
const DELIVERY_COLUMNS: &str =
    "d.id, d.webhook_id, d.event_seq, d.event_type, d.body, d.status, d.created_at, d.updated_at";

fn json_list<T: serde::de::DeserializeOwned>(text: Option<String>) -> rusqlite::Result<Option<T>> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })
    })
    .transpose()
}

fn webhook_from_row(r: &Row<'_>) -> rusqlite::Result<Webhook> {
    Ok(Webhook {
        id: r.get(0)?,
        user_id: r.get(1)?,
        url: r.get(2)?,
        markets: json_list(r.get(3)?)?,
        events: json_list(r.get(4)?)?,
        after_seq: r.get(5)?,
        created_at: from_millis(r.get(6)?),
    })
}

fn delivery_from_row(r: &Row<'_>) -> rusqlite::Result<Delivery> {
    let status: String = r.get(5)?;
    Ok(Delivery {
        id: r.get(0)?,
        webhook_id: r.get(1)?,
        event_seq: r.get(2)?,
        event_type: r.get(3)?,
        body: r.get(4)?,
        status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Pending),
        attempts: Vec::new(),
        created_at: from_millis(r.get(6)?),
        updated_at: from_millis(r.get(7)?),
    })
}

/// Fills in each delivery's attempts.
fn with_attempts(conn: &Connection, deliveries: &mut [Delivery]) -> Result<(), RepoError> {
    let mut stmt = conn.prepare_cached(
        "SELECT n, at, status_code, error, duration_ms FROM webhook_attempts
          WHERE delivery_id = ?1 ORDER BY n",
    )?;
    for d in deliveries {
        d.attempts = stmt
            .query_map([d.id], |r| {
                Ok(Attempt {
                    n: r.get(0)?,
                    at: from_millis(r.get(1)?),
                    status_code: r.get(2)?,
                    error: r.get(3)?,
                    duration_ms: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
    }
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &Option<T>) -> Option<String> {
    value
        .as_ref()
        .map(|v| serde_json::to_string(v).unwrap_or_default())
}

/// Webhooks on SQLite.
pub struct SqliteWebhookRepository {
    db: Arc<Db>,
}

impl SqliteWebhookRepository {
    /// A repository over `db`.
    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }
}

#[async_trait]
impl WebhookRepository for SqliteWebhookRepository {
    async fn create(&self, new: NewWebhook) -> Result<Webhook, RepoError> {
        self.db
            .write(move |conn| {
                let held: i64 = conn
                    .prepare_cached("SELECT count(*) FROM webhooks WHERE user_id = ?1")?
                    .query_row([new.user_id], |r| r.get(0))?;
                if held as u64 >= WEBHOOKS_PER_USER {
                    return Err(RepoError::Refused(Rejection::TooManyWebhooks {
                        limit: WEBHOOKS_PER_USER,
                    }));
                }
                if let Some(ids) = &new.markets {
                    let missing: Vec<i64> = conn
                        .prepare_cached(
                            "SELECT value FROM json_each(?1)
                              WHERE value NOT IN (SELECT id FROM markets) ORDER BY value",
                        )?
                        .query_map([serde_json::to_string(ids).unwrap_or_default()], |r| {
                            r.get(0)
                        })?
                        .collect::<rusqlite::Result<_>>()?;
                    if !missing.is_empty() {
                        return Err(RepoError::Refused(Rejection::UnknownMarkets {
                            ids: missing,
                        }));
                    }
                }
                // The first subscription: no other one needs the events so far, so the
                // dispatcher (idle while there was none) starts at the newest.
                conn.prepare_cached(
                    "UPDATE webhook_dispatch
                        SET dispatched_through = max(dispatched_through,
                                                     (SELECT coalesce(max(seq), 0) FROM events))
                      WHERE id = 1 AND NOT EXISTS (SELECT 1 FROM webhooks)",
                )?
                .execute([])?;
                Ok(conn
                    .prepare_cached(&format!(
                        "INSERT INTO webhooks (user_id, url, secret, markets, events, after_seq,
                                               created_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, (SELECT coalesce(max(seq), 0) FROM events), ?6)
                         RETURNING {WEBHOOK_COLUMNS}"
                    ))?
                    .query_row(
                        params![
                            new.user_id,
                            new.target.url,
                            new.secret,
                            to_json(&new.markets),
                            to_json(&new.events),
                            to_millis(OffsetDateTime::now_utc())
                        ],
                        webhook_from_row,
                    )?)
            })
            .await
    }

    async fn get(&self, id: i64) -> Result<Option<Webhook>, RepoError> {
        self.db
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(&format!(
                        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ?1"
                    ))?
                    .query_row([id], webhook_from_row)
                    .optional()?)
            })
            .await
    }

    async fn list(&self, user: Option<i64>, paging: Paging) -> Result<Page<Webhook>, RepoError> {
        self.db
            .read(move |conn| {
                let filter = "(?1 IS NULL OR user_id = ?1)";
                let (after, offset) = match paging.after.as_deref() {
                    Some([KeyPart::Int(id)]) => ("AND id < ?3 ORDER BY id DESC LIMIT ?2", *id),
                    _ => ("ORDER BY id DESC LIMIT ?2 OFFSET ?3", paging.offset as i64),
                };
                snapshot(conn, || {
                    let total: i64 = conn
                        .prepare_cached(&format!("SELECT count(*) FROM webhooks WHERE {filter}"))?
                        .query_row([user], |r| r.get(0))?;
                    let rows = conn
                        .prepare_cached(&format!(
                            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE {filter} {after}"
                        ))?
                        .query_map(params![user, paging.fetch(), offset], webhook_from_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    Ok::<_, RepoError>(Page::of(rows, total as u64, &paging, |w| {
                        vec![KeyPart::Int(w.id)]
                    }))
                })
            })
            .await
    }

    async fn delete(&self, id: i64) -> Result<bool, RepoError> {
        self.db
            .write(move |conn| {
                Ok(conn
                    .prepare_cached("DELETE FROM webhooks WHERE id = ?1")?
                    .execute([id])?
                    > 0)
            })
            .await
    }

    async fn undispatched(&self) -> Result<bool, RepoError> {
        self.db
            .read(|conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM webhooks)
                            AND EXISTS (SELECT 1 FROM events WHERE seq >
                                  (SELECT dispatched_through FROM webhook_dispatch WHERE id = 1))",
                    )?
                    .query_row([], |r| r.get(0))?)
            })
            .await
    }

    async fn dispatch(
        &self,
        limit: u32,
        max_attempts: u32,
        render: Render,
    ) -> Result<Dispatched, RepoError> {
        self.db
            .write(move |conn| {
                let cursor: i64 = conn
                    .prepare_cached("SELECT dispatched_through FROM webhook_dispatch WHERE id = 1")?
                    .query_row([], |r| r.get(0))?;
                let events: Vec<Event> = conn
                    .prepare_cached(
                        "SELECT seq, kind, market_id, data, created_at FROM events
                          WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                    )?
                    .query_map(params![cursor, limit], super::events::event_from_row)?
                    .collect::<rusqlite::Result<_>>()?;
                let Some(last) = events.last().map(|e| e.seq) else {
                    return Ok(Dispatched::default());
                };
                let hooks: Vec<Webhook> = conn
                    .prepare_cached(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks"))?
                    .query_map([], webhook_from_row)?
                    .collect::<rusqlite::Result<_>>()?;
                let now = to_millis(OffsetDateTime::now_utc());
                let mut deliveries = 0;
                for event in &events {
                    let mut body = None;
                    for hook in hooks
                        .iter()
                        .filter(|h| h.wants(event.seq, &event.kind, event.market_id))
                    {
                        let body: &String = body.get_or_insert_with(|| render(event));
                        let made: Option<i64> = conn
                            .prepare_cached(
                                "INSERT INTO webhook_deliveries
                                        (webhook_id, event_seq, event_type, body, created_at,
                                         updated_at)
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                                 ON CONFLICT DO NOTHING RETURNING id",
                            )?
                            .query_row(params![hook.id, event.seq, event.kind, body, now], |r| {
                                r.get(0)
                            })
                            .optional()?;
                        if let Some(id) = made {
                            let job = NewJob::new(JobKind::DeliverWebhook, job_payload(id))
                                .owned_by(hook.user_id)
                                .max_attempts(max_attempts);
                            super::jobs::insert(conn, &job)?;
                            deliveries += 1;
                        }
                    }
                }
                conn.prepare_cached(
                    "UPDATE webhook_dispatch SET dispatched_through = ?1 WHERE id = 1",
                )?
                .execute([last])?;
                Ok(Dispatched {
                    events: events.len(),
                    deliveries,
                })
            })
            .await
    }

    async fn outgoing(&self, delivery_id: i64) -> Result<Option<Outgoing>, RepoError> {
        self.db
            .read(move |conn| {
                let row = conn
                    .prepare_cached(&format!(
                        "SELECT {DELIVERY_COLUMNS}, w.url, w.secret FROM webhook_deliveries d
                           JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = ?1"
                    ))?
                    .query_row([delivery_id], |r| {
                        Ok((delivery_from_row(r)?, r.get(8)?, r.get(9)?))
                    })
                    .optional()?;
                let Some((delivery, url, secret)) = row else {
                    return Ok(None);
                };
                let mut one = [delivery];
                with_attempts(conn, &mut one)?;
                let [delivery] = one;
                Ok(Some(Outgoing {
                    delivery,
                    url,
                    secret,
                }))
            })
            .await
    }

    async fn record(
        &self,
        delivery_id: i64,
        attempt: Attempt,
        status: DeliveryStatus,
    ) -> Result<(), RepoError> {
        self.db
            .write(move |conn| {
                let n = conn
                    .prepare_cached(
                        "UPDATE webhook_deliveries SET status = ?2, updated_at = ?3 WHERE id = ?1",
                    )?
                    .execute(params![
                        delivery_id,
                        status.as_str(),
                        to_millis(OffsetDateTime::now_utc())
                    ])?;
                if n > 0 {
                    conn.prepare_cached(
                        "INSERT INTO webhook_attempts (delivery_id, n, at, status_code, error,
                                                       duration_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (delivery_id, n) DO UPDATE SET
                             at = excluded.at, status_code = excluded.status_code,
                             error = excluded.error, duration_ms = excluded.duration_ms",
                    )?
                    .execute(params![
                        delivery_id,
                        attempt.n,
                        to_millis(attempt.at),
                        attempt.status_code,
                        attempt.error,
                        attempt.duration_ms
                    ])?;
                }
                Ok(())
            })
            .await
    }

    async fn deliveries(
        &self,
        webhook_id: i64,
        status: Option<DeliveryStatus>,
        paging: Paging,
    ) -> Result<Page<Delivery>, RepoError> {
        self.db
            .read(move |conn| {
                let status = status.map(DeliveryStatus::as_str);
                let filter = "d.webhook_id = ?1 AND (?2 IS NULL OR d.status = ?2)";
                let (after, offset) = match paging.after.as_deref() {
                    Some([KeyPart::Int(id)]) => ("AND d.id < ?4 ORDER BY d.id DESC LIMIT ?3", *id),
                    _ => (
                        "ORDER BY d.id DESC LIMIT ?3 OFFSET ?4",
                        paging.offset as i64,
                    ),
                };
                snapshot(conn, || {
                    let total: i64 = conn
                        .prepare_cached(&format!(
                            "SELECT count(*) FROM webhook_deliveries d WHERE {filter}"
                        ))?
                        .query_row(params![webhook_id, status], |r| r.get(0))?;
                    let mut rows = conn
                        .prepare_cached(&format!(
                            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
                              WHERE {filter} {after}"
                        ))?
                        .query_map(
                            params![webhook_id, status, paging.fetch(), offset],
                            delivery_from_row,
                        )?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    with_attempts(conn, &mut rows)?;
                    Ok::<_, RepoError>(Page::of(rows, total as u64, &paging, |d| {
                        vec![KeyPart::Int(d.id)]
                    }))
                })
            })
            .await
    }

    async fn prune(&self, age: Duration) -> Result<u64, RepoError> {
        let cutoff = to_millis(OffsetDateTime::now_utc()) - age.as_millis() as i64;
        self.db
            .write(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "DELETE FROM webhook_deliveries
                          WHERE updated_at < ?1 AND status <> 'pending'",
                    )?
                    .execute([cutoff])? as u64)
            })
            .await
    }
}
