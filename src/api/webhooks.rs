//! Webhooks over HTTP: subscribe, list, read, delete, and a subscription's deliveries.

use std::sync::Arc;

use poem_openapi::{
    param::{Path, Query},
    payload::Json,
    ApiResponse, OpenApi,
};

use super::{
    body::JsonBody,
    error::ApiError,
    security::BearerAuth,
    webhook_models::{
        CreateWebhookBody, CreatedWebhookEnvelope, DeliveryListEnvelope, DeliveryStatusView,
        WebhookEnvelope, WebhookListEnvelope,
    },
    ApiTags,
};
use crate::{
    domain::{paging::lists, webhook::DeliveryStatus, Paging},
    service::webhooks::WebhookService,
};

/// Webhooks API.
pub struct WebhooksApi {
    /// Subscriptions and deliveries.
    pub webhooks: Arc<WebhookService>,
}

/// A subscription made.
#[derive(ApiResponse)]
pub enum CreatedWebhook {
    /// The subscription, with its secret (shown this once).
    #[oai(status = 201)]
    Created(
        Json<CreatedWebhookEnvelope>,
        /// Where the subscription can be read.
        #[oai(header = "Location")]
        String,
    ),
}

/// A subscription deleted.
#[derive(ApiResponse)]
pub enum DeletedWebhook {
    /// It is gone, with its deliveries; pending ones are not sent.
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(prefix_path = "/api/webhooks", tag = "ApiTags::Webhooks")]
impl WebhooksApi {
    /// Subscribe to events
    ///
    /// POSTs each event (as `GET /api/events` sends it: `{"id", "type", "market_id",
    /// "created_at", "data"}`) committed after now to `url`, with the Standard Webhooks headers
    /// `webhook-id` (`evt_<event id>`, the same on every retry), `webhook-timestamp` (Unix
    /// seconds) and `webhook-signature` (`v1,` and the base64 of HMAC-SHA256 over
    /// `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the secret returned here, once).
    /// A 2xx answer is a success; anything else (or no answer in 10 s) is retried with
    /// exponential backoff, 8 attempts by default, then the delivery is `failed`. Redirects are
    /// not followed. Deliveries of different events may arrive out of order (each is retried on
    /// its own): order them by the event's `id`; a retry may repeat a delivery the receiver
    /// took but did not answer in time, so skip a `webhook-id` already handled. Targets on
    /// loopback, private or link-local addresses are refused (422).
    /// Every market is public, so any user may subscribe to any of them, or to all; at most 20
    /// subscriptions per user (409 `webhook_limit`).
    #[oai(path = "/", method = "post", operation_id = "create_webhook")]
    async fn create_webhook(
        &self,
        auth: BearerAuth,
        body: JsonBody<CreateWebhookBody>,
    ) -> Result<CreatedWebhook, ApiError> {
        let body = body.0;
        let created = self
            .webhooks
            .create(&auth.0, &body.url, body.markets, body.events)
            .await?;
        let location = format!("/api/webhooks/{}", created.webhook.id);
        Ok(CreatedWebhook::Created(
            Json(CreatedWebhookEnvelope::new(created.into())),
            location,
        ))
    }

    /// List webhook subscriptions
    ///
    /// The caller's subscriptions (an admin's: everyone's), newest first. Secrets are never
    /// shown again.
    #[oai(path = "/", method = "get", operation_id = "list_webhooks")]
    async fn list_webhooks(
        &self,
        auth: BearerAuth,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// Rows to skip, up to 1,000,000 (default 0). Not with `cursor`.
        #[oai(validator(maximum(value = "1000000")))]
        offset: Query<Option<u64>>,
        /// Start after the last row of an earlier page: its `meta.next_cursor`, unchanged.
        #[oai(validator(max_length = 1024))]
        cursor: Query<Option<String>>,
    ) -> Result<Json<WebhookListEnvelope>, ApiError> {
        let list = lists::webhooks(auth.0.user_id);
        let paging = Paging::parse(limit.0, offset.0, cursor.0.as_deref(), &list)
            .map_err(ApiError::invalid_parameters)?;
        let page = self.webhooks.list(&auth.0, paging.clone()).await?;
        Ok(Json(WebhookListEnvelope::from_page(page, &paging)))
    }

    /// Get a webhook subscription
    ///
    /// Readable by the user it belongs to and by admins; 404 for anyone else.
    #[oai(path = "/:id", method = "get", operation_id = "get_webhook")]
    async fn get_webhook(
        &self,
        auth: BearerAuth,
        /// Subscription id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
    ) -> Result<Json<WebhookEnvelope>, ApiError> {
        let webhook = self.webhooks.get(&auth.0, id.0).await?;
        Ok(Json(WebhookEnvelope::new(webhook.into())))
    }

    /// Delete a webhook subscription
    ///
    /// By the user it belongs to or an admin (404 for anyone else). Its deliveries go with it;
    /// pending ones are not sent.
    #[oai(path = "/:id", method = "delete", operation_id = "delete_webhook")]
    async fn delete_webhook(
        &self,
        auth: BearerAuth,
        /// Subscription id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
    ) -> Result<DeletedWebhook, ApiError> {
        self.webhooks.delete(&auth.0, id.0).await?;
        Ok(DeletedWebhook::NoContent)
    }

    /// List a subscription's deliveries
    ///
    /// One delivery per event sent to the subscription, newest first, each with its status
    /// and every attempt (when, the receiver's status or the error, how long it took). Kept as
    /// long as events are (24 h by default) once finished.
    #[oai(
        path = "/:id/deliveries",
        method = "get",
        operation_id = "list_webhook_deliveries"
    )]
    async fn list_webhook_deliveries(
        &self,
        auth: BearerAuth,
        /// Subscription id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        /// Only deliveries in this status.
        status: Query<Option<DeliveryStatusView>>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// Rows to skip, up to 1,000,000 (default 0). Not with `cursor`.
        #[oai(validator(maximum(value = "1000000")))]
        offset: Query<Option<u64>>,
        /// Start after the last row of an earlier page: its `meta.next_cursor`, unchanged.
        /// Only with the filters of that request; not with `offset`.
        #[oai(validator(max_length = 1024))]
        cursor: Query<Option<String>>,
    ) -> Result<Json<DeliveryListEnvelope>, ApiError> {
        let status: Option<DeliveryStatus> = status.0.map(Into::into);
        let list = lists::deliveries(id.0, status.map(DeliveryStatus::as_str));
        let paging = Paging::parse(limit.0, offset.0, cursor.0.as_deref(), &list)
            .map_err(ApiError::invalid_parameters)?;
        let page = self
            .webhooks
            .deliveries(&auth.0, id.0, status, paging.clone())
            .await?;
        Ok(Json(DeliveryListEnvelope::from_page(page, &paging)))
    }
}
