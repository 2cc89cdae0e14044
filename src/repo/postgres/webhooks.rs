//! [`WebhookRepository`] on PostgreSQL (migration 3). A dispatch locks the cursor's row first
//! (`FOR UPDATE`): dispatchers of several processes take turns, and each sees the cursor the
//! one before it left.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use futures_util::FutureExt;
use tokio_postgres::Row;

use super::{now_ms, read, snapshot, transaction, Conn, Pg, TxError};
use crate::{
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
    repo::{from_millis, to_millis, Dispatched, Render, RepoError, WebhookRepository},
};

const WEBHOOK_COLUMNS: &str = "id, user_id, url, markets, events, after_seq, created_at";
const DELIVERY_COLUMNS: &str =
    "d.id, d.webhook_id, d.event_seq, d.event_type, d.body, d.status, d.created_at, d.updated_at";

fn json_list<T: serde::de::DeserializeOwned>(text: Option<String>) -> Result<Option<T>, TxError> {
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| TxError::Repo(RepoError::Internal(format!("bad webhook filter: {e}"))))
    })
    .transpose()
}

fn webhook_from_row(r: &Row) -> Result<Webhook, TxError> {
    Ok(Webhook {
        id: r.try_get(0)?,
        user_id: r.try_get(1)?,
        url: r.try_get(2)?,
        markets: json_list(r.try_get(3)?)?,
        events: json_list(r.try_get(4)?)?,
        after_seq: r.try_get(5)?,
        created_at: from_millis(r.try_get(6)?),
    })
}

fn delivery_from_row(r: &Row) -> Result<Delivery, TxError> {
    let status: &str = r.try_get(5)?;
    Ok(Delivery {
        id: r.try_get(0)?,
        webhook_id: r.try_get(1)?,
        event_seq: r.try_get(2)?,
        event_type: r.try_get(3)?,
        body: r.try_get(4)?,
        status: DeliveryStatus::parse(status).unwrap_or(DeliveryStatus::Pending),
        attempts: Vec::new(),
        created_at: from_millis(r.try_get(6)?),
        updated_at: from_millis(r.try_get(7)?),
    })
}

/// Fills in each delivery's attempts (one statement for all of them).
async fn with_attempts(c: &Conn<'_>, deliveries: &mut [Delivery]) -> Result<(), TxError> {
    let ids: Vec<i64> = deliveries.iter().map(|d| d.id).collect();
    let rows = c
        .rows(
            "SELECT delivery_id, n, at, status_code, error, duration_ms FROM webhook_attempts
              WHERE delivery_id = ANY($1) ORDER BY delivery_id, n",
            &[&ids],
        )
        .await?;
    for r in &rows {
        let id: i64 = r.try_get(0)?;
        let status: Option<i32> = r.try_get(3)?;
        let n: i32 = r.try_get(1)?;
        if let Some(d) = deliveries.iter_mut().find(|d| d.id == id) {
            d.attempts.push(Attempt {
                n: n as u32,
                at: from_millis(r.try_get(2)?),
                status_code: status.map(|s| s as u16),
                error: r.try_get(4)?,
                duration_ms: r.try_get(5)?,
            });
        }
    }
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &Option<T>) -> Option<String> {
    value
        .as_ref()
        .map(|v| serde_json::to_string(v).unwrap_or_default())
}

/// Webhooks on PostgreSQL.
pub struct PgWebhookRepository {
    pg: Arc<Pg>,
}

impl PgWebhookRepository {
    pub(super) fn new(pg: Arc<Pg>) -> Self {
        Self { pg }
    }
}

#[async_trait]
impl WebhookRepository for PgWebhookRepository {
    async fn create(&self, new: NewWebhook) -> Result<Webhook, RepoError> {
        transaction(&self.pg, |c| {
            let new = new.clone();
            async move {
                // One user's subscriptions are counted and added one request at a time.
                c.exec(
                    "SELECT pg_advisory_xact_lock(hashtext('webhooks'), $1::int)",
                    &[&(new.user_id as i32)],
                )
                .await?;
                let held: i64 = c
                    .one(
                        "SELECT count(*) FROM webhooks WHERE user_id = $1",
                        &[&new.user_id],
                    )
                    .await?
                    .try_get(0)?;
                if held as u64 >= WEBHOOKS_PER_USER {
                    return Err(RepoError::Refused(Rejection::TooManyWebhooks {
                        limit: WEBHOOKS_PER_USER,
                    })
                    .into());
                }
                if let Some(ids) = &new.markets {
                    let missing: Vec<i64> = c
                        .rows(
                            "SELECT want.id FROM unnest($1::bigint[]) AS want (id)
                              WHERE NOT EXISTS (SELECT 1 FROM markets m WHERE m.id = want.id)
                              ORDER BY want.id",
                            &[ids],
                        )
                        .await?
                        .iter()
                        .map(|r| r.try_get(0))
                        .collect::<Result<_, _>>()?;
                    if !missing.is_empty() {
                        return Err(
                            RepoError::Refused(Rejection::UnknownMarkets { ids: missing }).into(),
                        );
                    }
                }
                // The first subscription: no other one needs the events so far, so the
                // dispatcher (idle while there was none) starts at the newest. (A dispatch in
                // progress holds this row; the update waits for it.)
                c.exec(
                    "UPDATE webhook_dispatch
                        SET dispatched_through = greatest(dispatched_through,
                                                          (SELECT coalesce(max(seq), 0) FROM events))
                      WHERE id = 1 AND NOT EXISTS (SELECT 1 FROM webhooks)",
                    &[],
                )
                .await?;
                let row = c
                    .one(
                        &format!(
                            "INSERT INTO webhooks (user_id, url, secret, markets, events,
                                                   after_seq, created_at)
                             VALUES ($1, $2, $3, $4, $5,
                                     (SELECT coalesce(max(seq), 0) FROM events), $6)
                             RETURNING {WEBHOOK_COLUMNS}"
                        ),
                        &[
                            &new.user_id,
                            &new.target.url,
                            &new.secret,
                            &to_json(&new.markets),
                            &to_json(&new.events),
                            &now_ms(),
                        ],
                    )
                    .await?;
                webhook_from_row(&row)
            }
            .boxed()
        })
        .await
    }

    async fn get(&self, id: i64) -> Result<Option<Webhook>, RepoError> {
        read(&self.pg, |client| async move {
            Conn::client(&client)
                .opt(
                    &format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1"),
                    &[&id],
                )
                .await?
                .map(|r| webhook_from_row(&r))
                .transpose()
        })
        .await
    }

    async fn list(&self, user: Option<i64>, paging: Paging) -> Result<Page<Webhook>, RepoError> {
        snapshot(&self.pg, move |c| {
            async move {
                let filter = "($1::bigint IS NULL OR user_id = $1)";
                let (after, offset) = match paging.after.as_deref() {
                    Some([KeyPart::Int(id)]) => ("AND id < $3 ORDER BY id DESC LIMIT $2", *id),
                    _ => ("ORDER BY id DESC LIMIT $2 OFFSET $3", paging.offset as i64),
                };
                let total: i64 = c
                    .one(
                        &format!("SELECT count(*) FROM webhooks WHERE {filter}"),
                        &[&user],
                    )
                    .await?
                    .try_get(0)?;
                let rows = c
                    .rows(
                        &format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE {filter} {after}"),
                        &[&user, &paging.fetch(), &offset],
                    )
                    .await?
                    .iter()
                    .map(webhook_from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Page::of(rows, total as u64, &paging, |w| {
                    vec![KeyPart::Int(w.id)]
                }))
            }
            .boxed()
        })
        .await
    }

    async fn delete(&self, id: i64) -> Result<bool, RepoError> {
        read(&self.pg, |client| async move {
            Ok(Conn::client(&client)
                .exec("DELETE FROM webhooks WHERE id = $1", &[&id])
                .await?
                > 0)
        })
        .await
    }

    async fn undispatched(&self) -> Result<bool, RepoError> {
        read(&self.pg, |client| async move {
            Ok(Conn::client(&client)
                .one(
                    "SELECT EXISTS (SELECT 1 FROM webhooks)
                        AND EXISTS (SELECT 1 FROM events WHERE seq >
                              (SELECT dispatched_through FROM webhook_dispatch WHERE id = 1))",
                    &[],
                )
                .await?
                .try_get(0)?)
        })
        .await
    }

    async fn dispatch(
        &self,
        limit: u32,
        max_attempts: u32,
        render: Render,
    ) -> Result<Dispatched, RepoError> {
        transaction(&self.pg, |c| {
            let render = render.clone();
            async move {
                let cursor: i64 = c
                    .one(
                        "SELECT dispatched_through FROM webhook_dispatch WHERE id = 1 FOR UPDATE",
                        &[],
                    )
                    .await?
                    .try_get(0)?;
                let events: Vec<Event> = c
                    .rows(
                        "SELECT seq, kind, market_id, data, created_at FROM events
                          WHERE seq > $1 ORDER BY seq LIMIT $2",
                        &[&cursor, &i64::from(limit)],
                    )
                    .await?
                    .iter()
                    .map(super::events::event_from_row)
                    .collect::<Result<_, _>>()?;
                let Some(last) = events.last().map(|e| e.seq) else {
                    return Ok(Dispatched::default());
                };
                let hooks: Vec<Webhook> = c
                    .rows(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks"), &[])
                    .await?
                    .iter()
                    .map(webhook_from_row)
                    .collect::<Result<_, _>>()?;
                let now = now_ms();
                let mut deliveries = 0;
                for event in &events {
                    let mut body = None;
                    for hook in hooks
                        .iter()
                        .filter(|h| h.wants(event.seq, &event.kind, event.market_id))
                    {
                        let body: &String = body.get_or_insert_with(|| render(event));
                        let made = c
                            .opt(
                                "INSERT INTO webhook_deliveries
                                        (webhook_id, event_seq, event_type, body, created_at,
                                         updated_at)
                                 VALUES ($1, $2, $3, $4, $5, $5)
                                 ON CONFLICT DO NOTHING RETURNING id",
                                &[&hook.id, &event.seq, &event.kind, body, &now],
                            )
                            .await?;
                        if let Some(row) = made {
                            let id: i64 = row.try_get(0)?;
                            let job = NewJob::new(JobKind::DeliverWebhook, job_payload(id))
                                .owned_by(hook.user_id)
                                .max_attempts(max_attempts);
                            super::jobs::insert(c, &job).await?;
                            deliveries += 1;
                        }
                    }
                }
                c.exec(
                    "UPDATE webhook_dispatch SET dispatched_through = $1 WHERE id = 1",
                    &[&last],
                )
                .await?;
                Ok(Dispatched {
                    events: events.len(),
                    deliveries,
                })
            }
            .boxed()
        })
        .await
    }

    async fn outgoing(&self, delivery_id: i64) -> Result<Option<Outgoing>, RepoError> {
        read(&self.pg, |client| async move {
            let c = Conn::client(&client);
            let Some(row) = c
                .opt(
                    &format!(
                        "SELECT {DELIVERY_COLUMNS}, w.url, w.secret FROM webhook_deliveries d
                           JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = $1"
                    ),
                    &[&delivery_id],
                )
                .await?
            else {
                return Ok(None);
            };
            let mut one = [delivery_from_row(&row)?];
            with_attempts(&c, &mut one).await?;
            let [delivery] = one;
            Ok(Some(Outgoing {
                delivery,
                url: row.try_get(8)?,
                secret: row.try_get(9)?,
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
        transaction(&self.pg, |c| {
            let attempt = attempt.clone();
            async move {
                let n = c
                    .exec(
                        "UPDATE webhook_deliveries SET status = $2, updated_at = $3 WHERE id = $1",
                        &[&delivery_id, &status.as_str(), &now_ms()],
                    )
                    .await?;
                if n > 0 {
                    c.exec(
                        "INSERT INTO webhook_attempts (delivery_id, n, at, status_code, error,
                                                       duration_ms)
                         VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (delivery_id, n) DO UPDATE SET
                             at = excluded.at, status_code = excluded.status_code,
                             error = excluded.error, duration_ms = excluded.duration_ms",
                        &[
                            &delivery_id,
                            &(attempt.n as i32),
                            &to_millis(attempt.at),
                            &attempt.status_code.map(i32::from),
                            &attempt.error,
                            &attempt.duration_ms,
                        ],
                    )
                    .await?;
                }
                Ok(())
            }
            .boxed()
        })
        .await
    }

    async fn deliveries(
        &self,
        webhook_id: i64,
        status: Option<DeliveryStatus>,
        paging: Paging,
    ) -> Result<Page<Delivery>, RepoError> {
        snapshot(&self.pg, move |c| {
            async move {
                let status = status.map(DeliveryStatus::as_str);
                let filter = "d.webhook_id = $1 AND ($2::text IS NULL OR d.status = $2)";
                let (after, offset) = match paging.after.as_deref() {
                    Some([KeyPart::Int(id)]) => ("AND d.id < $4 ORDER BY d.id DESC LIMIT $3", *id),
                    _ => (
                        "ORDER BY d.id DESC LIMIT $3 OFFSET $4",
                        paging.offset as i64,
                    ),
                };
                let total: i64 = c
                    .one(
                        &format!("SELECT count(*) FROM webhook_deliveries d WHERE {filter}"),
                        &[&webhook_id, &status],
                    )
                    .await?
                    .try_get(0)?;
                let mut rows = c
                    .rows(
                        &format!(
                            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
                              WHERE {filter} {after}"
                        ),
                        &[&webhook_id, &status, &paging.fetch(), &offset],
                    )
                    .await?
                    .iter()
                    .map(delivery_from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                with_attempts(c, &mut rows).await?;
                Ok(Page::of(rows, total as u64, &paging, |d| {
                    vec![KeyPart::Int(d.id)]
                }))
            }
            .boxed()
        })
        .await
    }

    async fn prune(&self, age: Duration) -> Result<u64, RepoError> {
        let cutoff = now_ms() - age.as_millis() as i64;
        read(&self.pg, |client| async move {
            Conn::client(&client)
                .exec(
                    "DELETE FROM webhook_deliveries WHERE updated_at < $1 AND status <> 'pending'",
                    &[&cutoff],
                )
                .await
        })
        .await
    }
}
