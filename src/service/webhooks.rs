//! Webhooks: subscriptions (who may make, see and delete them), the dispatcher that turns
//! events into deliveries, and the sending of one delivery (a run of a `deliver_webhook` job).
//! [`crate::domain::webhook`] holds the rules: signatures, which addresses are refused, what a
//! subscription wants.
//!
//! Every market is public, so a user may subscribe to the events of any of them (or of all);
//! a user sees and deletes its own subscriptions, an admin everyone's.
//!
//! Targets on loopback, private, link-local and other non-public addresses are refused unless
//! `--webhook-allow-private`: when the subscription is made (its host is resolved then), and
//! again at every attempt, where the HTTP client's resolver drops such addresses (a name that
//! resolves to a public address when subscribed and to a private one later is caught there).
//! Redirects are never followed, and no proxy from the environment is used.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::{
    domain::{
        user::{Actor, Permission},
        webhook::{
            forbidden, message_id, sign, Attempt, Delivery, DeliveryStatus, NewWebhook, TargetUrl,
            Webhook,
        },
        FieldError, Page, Paging,
    },
    error::AppError,
    repo::{JobRepository, Render, WebhookRepository},
};

/// Webhook settings.
#[derive(Debug, Clone, Copy)]
pub struct WebhookConfig {
    /// Deliver to loopback, private and link-local addresses too (tests, private networks).
    pub allow_private: bool,
    /// Attempts per delivery (job runs) before it is `failed`.
    pub max_attempts: u32,
    /// Longest an attempt may take (connect, send, answer).
    pub timeout: Duration,
    /// How often the dispatcher looks for new events.
    pub poll: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            allow_private: false,
            max_attempts: 8,
            timeout: Duration::from_secs(10),
            poll: Duration::from_millis(50),
        }
    }
}

/// Events read per dispatch transaction.
const DISPATCH_BATCH: u32 = 500;

/// A subscription as made: the secret is shown this once.
#[derive(Debug, Clone)]
pub struct CreatedWebhook {
    /// The subscription.
    pub webhook: Webhook,
    /// Its signing secret.
    pub secret: String,
}

/// Subscriptions, dispatch and delivery.
pub struct WebhookService {
    repo: Arc<dyn WebhookRepository>,
    render: Render,
    config: WebhookConfig,
    client: reqwest::Client,
    stop: watch::Sender<bool>,
}

impl WebhookService {
    /// The service over `repo`; `render` makes a delivery's body from an event.
    pub fn new(repo: Arc<dyn WebhookRepository>, render: Render, config: WebhookConfig) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("agora-webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: config.allow_private,
            }))
            .build()
            .expect("the webhook HTTP client builds (no TLS roots or proxies to load)");
        WebhookService {
            repo,
            render,
            config,
            client,
            stop: watch::channel(false).0,
        }
    }

    /// The settings.
    pub fn config(&self) -> WebhookConfig {
        self.config
    }

    /// Subscribes `actor` to the events of `markets` (all when `None`) of `events` types (all
    /// when `None`), delivered to `url`.
    pub async fn create(
        &self,
        actor: &Actor,
        url: &str,
        markets: Option<Vec<i64>>,
        events: Option<Vec<String>>,
    ) -> Result<CreatedWebhook, AppError> {
        let new = NewWebhook::parse(actor.user_id, url, markets, events)?;
        self.check_target(&new.target).await?;
        let secret = new.secret.clone();
        let webhook = self.repo.create(new).await?;
        tracing::info!(
            webhook = webhook.id,
            user = actor.user_id,
            "webhook subscribed"
        );
        Ok(CreatedWebhook { webhook, secret })
    }

    /// The subscriptions `actor` may see: its own, or everyone's for an admin.
    pub async fn list(&self, actor: &Actor, paging: Paging) -> Result<Page<Webhook>, AppError> {
        let whose = (!actor.can(Permission::Admin)).then_some(actor.user_id);
        Ok(self.repo.list(whose, paging).await?)
    }

    /// One subscription, when `actor` may see it (404 otherwise: others' ids are not told).
    pub async fn get(&self, actor: &Actor, id: i64) -> Result<Webhook, AppError> {
        match self.repo.get(id).await? {
            Some(w) if w.user_id == actor.user_id || actor.can(Permission::Admin) => Ok(w),
            _ => Err(AppError::NotFound("webhook")),
        }
    }

    /// Deletes a subscription `actor` may see, with its deliveries; pending ones are not sent.
    pub async fn delete(&self, actor: &Actor, id: i64) -> Result<(), AppError> {
        self.get(actor, id).await?;
        if !self.repo.delete(id).await? {
            return Err(AppError::NotFound("webhook"));
        }
        tracing::info!(webhook = id, user = actor.user_id, "webhook deleted");
        Ok(())
    }

    /// A subscription's deliveries, newest first.
    pub async fn deliveries(
        &self,
        actor: &Actor,
        id: i64,
        status: Option<DeliveryStatus>,
        paging: Paging,
    ) -> Result<Page<Delivery>, AppError> {
        self.get(actor, id).await?;
        Ok(self.repo.deliveries(id, status, paging).await?)
    }

    /// Refuses a target whose host is a forbidden address or resolves to one (or to nothing).
    async fn check_target(&self, target: &TargetUrl) -> Result<(), AppError> {
        if self.config.allow_private {
            return Ok(());
        }
        let addrs: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, target.port)],
            Err(_) => tokio::net::lookup_host((target.host.as_str(), target.port))
                .await
                .map_err(|e| field("url", format!("its host does not resolve ({e})")))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(field("url", "its host does not resolve to any address"));
        }
        if let Some((addr, why)) = addrs
            .iter()
            .find_map(|a| forbidden(a.ip()).map(|why| (a, why)))
        {
            return Err(field(
                "url",
                format!(
                    "resolves to {}, a {why} address: deliveries go to public addresses only",
                    addr.ip()
                ),
            ));
        }
        Ok(())
    }

    /// Starts the dispatcher: every poll interval, turns new events into deliveries (and wakes
    /// the job workers when it made some). It starts from the cursor in the database, so events
    /// committed before a crash are dispatched after the restart.
    pub fn start_dispatcher(self: &Arc<Self>, queue: Arc<dyn JobRepository>) {
        let service = self.clone();
        let mut stopped = self.stop.subscribe();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                match service.dispatch_all().await {
                    Ok(made) => {
                        failing = false;
                        if made > 0 {
                            queue.wake();
                        }
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "dispatching webhook deliveries failed; retrying");
                        }
                        failing = true;
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(service.config.poll) => {}
                    _ = stopped.changed() => return,
                }
            }
        });
    }

    /// Stops the dispatcher (at shutdown; what it has not dispatched waits in the outbox).
    pub fn close(&self) {
        let _ = self.stop.send(true);
    }

    /// Dispatches until the outbox is caught up; returns the deliveries made. A look on a
    /// reader comes first, so an idle server writes nothing.
    async fn dispatch_all(&self) -> Result<usize, AppError> {
        if !self.repo.undispatched().await? {
            return Ok(0);
        }
        let mut made = 0;
        loop {
            let done = self
                .repo
                .dispatch(
                    DISPATCH_BATCH,
                    self.config.max_attempts,
                    self.render.clone(),
                )
                .await?;
            made += done.deliveries;
            if done.events < DISPATCH_BATCH as usize {
                return Ok(made);
            }
        }
    }

    /// One attempt at delivery `id` (attempt number `attempt`; `last` when no other follows).
    /// `Err` (with the reason) when it failed and another attempt should follow.
    pub async fn deliver(&self, id: i64, attempt: u32, last: bool) -> Result<Value, String> {
        let Some(out) = self.repo.outgoing(id).await.map_err(|e| e.to_string())? else {
            return Ok(json!({ "delivery_id": id, "skipped": "the subscription was deleted" }));
        };
        if out.delivery.status != DeliveryStatus::Pending {
            return Ok(json!({ "delivery_id": id, "status": out.delivery.status.as_str() }));
        }
        let at = OffsetDateTime::now_utc();
        let started = Instant::now();
        let sent = self.send(&out.url, &out.secret, &out.delivery).await;
        let (status_code, error) = match sent {
            Ok(code) if (200..300).contains(&code) => (Some(code), None),
            Ok(code) => (Some(code), Some(format!("the receiver answered {code}"))),
            Err(e) => (None, Some(e)),
        };
        let status = match (&error, last) {
            (None, _) => DeliveryStatus::Succeeded,
            (Some(_), true) => DeliveryStatus::Failed,
            (Some(_), false) => DeliveryStatus::Pending,
        };
        let attempt = Attempt {
            n: attempt,
            at,
            status_code,
            error: error.clone(),
            duration_ms: started.elapsed().as_millis() as i64,
        };
        self.repo
            .record(id, attempt, status)
            .await
            .map_err(|e| e.to_string())?;
        match error {
            None => Ok(json!({
                "delivery_id": id,
                "status": status.as_str(),
                "status_code": status_code,
            })),
            Some(e) => Err(e),
        }
    }

    /// POSTs `delivery` to `url`, signed; the receiver's status.
    async fn send(&self, url: &str, secret: &str, delivery: &Delivery) -> Result<u16, String> {
        let target = TargetUrl::parse(url).map_err(|e| format!("the URL {e}"))?;
        if let (false, Ok(ip)) = (self.config.allow_private, target.host.parse::<IpAddr>()) {
            if let Some(why) = forbidden(ip) {
                return Err(format!("{ip} is a {why} address; not delivered"));
            }
        }
        let id = message_id(delivery.event_seq);
        let timestamp = OffsetDateTime::now_utc().unix_timestamp();
        let signature = sign(secret, &id, timestamp, &delivery.body);
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.body.clone())
            .send()
            .await
            .map_err(|e| describe(&e))?;
        Ok(response.status().as_u16())
    }
}

/// A validation error of one field.
fn field(name: &str, message: impl Into<String>) -> AppError {
    AppError::Validation(vec![FieldError::new(name, message)])
}

/// A request error in words, with its causes (reqwest's own text omits them).
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Resolves names for the webhook client, dropping the addresses deliveries may not reach.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| allow_private || forbidden(a.ip()).is_none())
                .collect();
            if allowed.is_empty() && !addrs.is_empty() {
                let why = format!(
                    "{host} resolves only to addresses deliveries may not reach ({})",
                    addrs[0].ip()
                );
                return Err(why.into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
