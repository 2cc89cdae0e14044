//! Schemas of webhooks: a subscription, its deliveries and their attempts.

use poem_openapi::{types::Example, Enum, Object};
use time::{macros::datetime, OffsetDateTime};

use super::envelope::{envelope, ListMeta};
use crate::{
    domain::webhook::{Attempt, Delivery, DeliveryStatus, Webhook},
    service::webhooks::CreatedWebhook,
};

/// A subscription to make.
#[derive(Debug, Clone, Object)]
#[oai(example, deny_unknown_fields)]
pub struct CreateWebhookBody {
    /// Where deliveries are POSTed: an `http` or `https` URL on a public address (loopback,
    /// private and link-local addresses are refused unless the server allows them).
    #[oai(validator(min_length = 1, max_length = 2048))]
    pub url: String,
    /// Only events of these markets (at most 100); leave it out for every market, new ones
    /// included.
    #[oai(validator(min_items = 1, max_items = 100))]
    pub markets: Option<Vec<i64>>,
    /// Only events of these types (`market.created`, `market.updated`, `market.closed`,
    /// `market.resolved`, `market.cancelled`, `market.deleted`, `stake.placed`); leave it out
    /// for every type.
    #[oai(validator(min_items = 1, max_items = 7))]
    pub events: Option<Vec<String>>,
}

impl Example for CreateWebhookBody {
    fn example() -> Self {
        CreateWebhookBody {
            url: "https://example.com/agora-hook".into(),
            markets: Some(vec![42]),
            events: Some(vec!["stake.placed".into(), "market.resolved".into()]),
        }
    }
}

/// A webhook subscription.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct WebhookView {
    /// Id.
    pub id: i64,
    /// The user it belongs to.
    pub user_id: i64,
    /// Where deliveries go.
    pub url: String,
    /// Only events of these markets (`null`: every market).
    #[oai(nullable)]
    pub markets: Option<Vec<i64>>,
    /// Only events of these types (`null`: every type).
    #[oai(nullable)]
    pub events: Option<Vec<String>>,
    /// Events after this one are delivered (the newest when the subscription was made).
    pub after_event_id: i64,
    /// Made.
    pub created_at: OffsetDateTime,
}

impl From<Webhook> for WebhookView {
    fn from(w: Webhook) -> Self {
        WebhookView {
            id: w.id,
            user_id: w.user_id,
            url: w.url,
            markets: w.markets,
            events: w.events,
            after_event_id: w.after_seq,
            created_at: w.created_at,
        }
    }
}

impl Example for WebhookView {
    fn example() -> Self {
        WebhookView {
            id: 3,
            user_id: 7,
            url: "https://example.com/agora-hook".into(),
            markets: Some(vec![42]),
            events: Some(vec!["market.resolved".into(), "stake.placed".into()]),
            after_event_id: 1200,
            created_at: datetime!(2026-11-01 12:00 UTC),
        }
    }
}

/// A subscription as made, with its signing secret: shown this once, keep it.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct CreatedWebhookView {
    /// The subscription.
    #[oai(flatten)]
    pub webhook: WebhookView,
    /// The signing secret (`whsec_` and base64): every delivery carries `webhook-signature:
    /// v1,<base64 of HMAC-SHA256 over "{webhook-id}.{webhook-timestamp}.{body}">`, keyed
    /// with the base64-decoded part after `whsec_` (Standard Webhooks). Never shown again.
    pub secret: String,
}

impl From<CreatedWebhook> for CreatedWebhookView {
    fn from(c: CreatedWebhook) -> Self {
        CreatedWebhookView {
            webhook: c.webhook.into(),
            secret: c.secret,
        }
    }
}

impl Example for CreatedWebhookView {
    fn example() -> Self {
        CreatedWebhookView {
            webhook: WebhookView::example(),
            secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into(),
        }
    }
}

/// Where a delivery is: `pending` (more attempts are due), `succeeded` (a 2xx answered it),
/// `failed` (its last allowed attempt failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum DeliveryStatusView {
    /// Not yet answered with a 2xx; another attempt is due.
    Pending,
    /// Answered with a 2xx.
    Succeeded,
    /// Every allowed attempt failed.
    Failed,
}

impl From<DeliveryStatus> for DeliveryStatusView {
    fn from(s: DeliveryStatus) -> Self {
        match s {
            DeliveryStatus::Pending => Self::Pending,
            DeliveryStatus::Succeeded => Self::Succeeded,
            DeliveryStatus::Failed => Self::Failed,
        }
    }
}

impl From<DeliveryStatusView> for DeliveryStatus {
    fn from(s: DeliveryStatusView) -> Self {
        match s {
            DeliveryStatusView::Pending => Self::Pending,
            DeliveryStatusView::Succeeded => Self::Succeeded,
            DeliveryStatusView::Failed => Self::Failed,
        }
    }
}

/// One attempt to deliver.
#[derive(Debug, Clone, Object)]
pub struct AttemptView {
    /// 1 for the first.
    pub n: u32,
    /// When it was sent.
    pub at: OffsetDateTime,
    /// The receiver's HTTP status (`null`: no answer).
    #[oai(nullable)]
    pub status_code: Option<u16>,
    /// Why it failed (`null` when it succeeded).
    #[oai(nullable)]
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: i64,
}

impl From<Attempt> for AttemptView {
    fn from(a: Attempt) -> Self {
        AttemptView {
            n: a.n,
            at: a.at,
            status_code: a.status_code,
            error: a.error,
            duration_ms: a.duration_ms,
        }
    }
}

/// One event's delivery to a subscription.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct DeliveryView {
    /// Id.
    pub id: i64,
    /// The subscription.
    pub webhook_id: i64,
    /// The event (its `id` in the event stream); the request's `webhook-id` is `evt_<this>`.
    pub event_id: i64,
    /// The event's type.
    pub event_type: String,
    /// Where it is.
    pub status: DeliveryStatusView,
    /// Attempts so far, oldest first.
    pub attempts: Vec<AttemptView>,
    /// Made.
    pub created_at: OffsetDateTime,
    /// Last changed.
    pub updated_at: OffsetDateTime,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        DeliveryView {
            id: d.id,
            webhook_id: d.webhook_id,
            event_id: d.event_seq,
            event_type: d.event_type,
            status: d.status.into(),
            attempts: d.attempts.into_iter().map(Into::into).collect(),
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

impl Example for DeliveryView {
    fn example() -> Self {
        let t = datetime!(2026-11-01 12:00:05 UTC);
        DeliveryView {
            id: 88,
            webhook_id: 3,
            event_id: 1207,
            event_type: "stake.placed".into(),
            status: DeliveryStatusView::Succeeded,
            attempts: vec![
                AttemptView {
                    n: 1,
                    at: t,
                    status_code: Some(503),
                    error: Some("the receiver answered 503".into()),
                    duration_ms: 12,
                },
                AttemptView {
                    n: 2,
                    at: datetime!(2026-11-01 12:00:06 UTC),
                    status_code: Some(204),
                    error: None,
                    duration_ms: 9,
                },
            ],
            created_at: t,
            updated_at: datetime!(2026-11-01 12:00:06 UTC),
        }
    }
}

envelope! {
    /// A webhook subscription.
    WebhookEnvelope { data: WebhookView }
}

envelope! {
    /// A webhook subscription as made, with its secret.
    CreatedWebhookEnvelope { data: CreatedWebhookView }
}

envelope! {
    /// A page of webhook subscriptions, newest first.
    WebhookListEnvelope { data: Vec<WebhookView>, meta: ListMeta }
}

envelope! {
    /// A page of a subscription's deliveries, newest first.
    DeliveryListEnvelope { data: Vec<DeliveryView>, meta: ListMeta }
}
