//! Webhook subscriptions, their deliveries and the dispatcher's cursor ([`crate::domain::webhook`]
//! says how events become deliveries). Each method is one statement or one transaction.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

use super::RepoError;
use crate::domain::{
    event::Event,
    webhook::{Attempt, Delivery, DeliveryStatus, NewWebhook, Outgoing, Webhook},
    Page, Paging,
};

/// Renders an event as a delivery's body (the API layer's JSON of it, as the event stream
/// sends it).
pub type Render = Arc<dyn Fn(&Event) -> String + Send + Sync>;

/// What one dispatch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dispatched {
    /// Events read past the cursor (the cursor moved past them).
    pub events: usize,
    /// Deliveries (and `deliver_webhook` jobs) made.
    pub deliveries: usize,
}

/// Subscriptions and deliveries.
#[async_trait]
pub trait WebhookRepository: Send + Sync {
    /// Makes a subscription, to events after the newest one now. Refused
    /// ([`crate::domain::Rejection::TooManyWebhooks`]) past the per-user limit and
    /// ([`crate::domain::Rejection::UnknownMarkets`]) when a market it names does not exist.
    async fn create(&self, new: NewWebhook) -> Result<Webhook, RepoError>;
    /// One subscription.
    async fn get(&self, id: i64) -> Result<Option<Webhook>, RepoError>;
    /// Subscriptions newest first: `user`'s, or everyone's.
    async fn list(&self, user: Option<i64>, paging: Paging) -> Result<Page<Webhook>, RepoError>;
    /// Deletes a subscription and its deliveries; false when there was none.
    async fn delete(&self, id: i64) -> Result<bool, RepoError>;
    /// True when there is a subscription and events wait past the dispatcher's cursor (a read:
    /// the dispatcher's look before it writes). With no subscription the dispatcher does
    /// nothing, and the first one made moves the cursor to the newest event.
    async fn undispatched(&self) -> Result<bool, RepoError>;
    /// In one transaction: the events after the cursor (at most `limit`), a delivery and a
    /// `deliver_webhook` job (allowed `max_attempts` runs) for each subscription each one matches, and the cursor moved past
    /// them. Several processes may call it at once; each event is dispatched once.
    async fn dispatch(
        &self,
        limit: u32,
        max_attempts: u32,
        render: Render,
    ) -> Result<Dispatched, RepoError>;
    /// A delivery with its subscription's URL and secret (`None` when either is gone).
    async fn outgoing(&self, delivery_id: i64) -> Result<Option<Outgoing>, RepoError>;
    /// Records an attempt and the delivery's status after it.
    async fn record(
        &self,
        delivery_id: i64,
        attempt: Attempt,
        status: DeliveryStatus,
    ) -> Result<(), RepoError>;
    /// A subscription's deliveries newest first, attempts included.
    async fn deliveries(
        &self,
        webhook_id: i64,
        status: Option<DeliveryStatus>,
        paging: Paging,
    ) -> Result<Page<Delivery>, RepoError>;
    /// Deletes finished deliveries last changed longer than `age` ago; returns how many.
    async fn prune(&self, age: Duration) -> Result<u64, RepoError>;
}
