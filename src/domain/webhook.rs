//! Webhooks as data: a subscription (a URL, what it wants, a secret), a delivery of one event
//! to one subscription and its attempts, the Standard Webhooks signature, and the rule that
//! keeps deliveries off private networks.
//!
//! How events become deliveries: the dispatcher ([`crate::service::webhooks`]) tails the
//! outbox with a cursor kept in the database; in one transaction it reads the events after the
//! cursor, writes a delivery (unique per subscription and event) and a `deliver_webhook` job
//! for each subscription an event matches, and moves the cursor. A crash before that commit
//! leaves the cursor where it was, so the events are dispatched after the restart; a crash
//! after it leaves the jobs, which the queue runs. Each attempt is a job run: the queue's
//! exponential backoff spaces them, and the last allowed one marks the delivery `failed`.
//!
//! Signatures follow Standard Webhooks (<https://www.standardwebhooks.com>): the secret is
//! `whsec_` and the base64 of 24 random bytes (the key is those bytes), and each request
//! carries `webhook-id` (the same on every retry of one delivery), `webhook-timestamp` (Unix
//! seconds of the attempt) and `webhook-signature: v1,<base64 of HMAC-SHA256(key,
//! "{id}.{timestamp}.{body}")>`.

use std::net::IpAddr;

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use time::OffsetDateTime;

use super::{event::EventKind, FieldError, Problems};

/// Subscriptions one user may hold (admins included).
pub const WEBHOOKS_PER_USER: u64 = 20;
/// Most markets one subscription may name.
pub const WEBHOOK_MARKETS_MAX: usize = 100;
/// Longest target URL.
pub const WEBHOOK_URL_MAX: usize = 2_048;
/// The prefix of a secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a secret.
const SECRET_BYTES: usize = 24;

/// A subscription as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// Id.
    pub id: i64,
    /// Who made it (may read and delete it; admins too).
    pub user_id: i64,
    /// Where deliveries are POSTed.
    pub url: String,
    /// Only events of these markets (`None`: every market).
    pub markets: Option<Vec<i64>>,
    /// Only events of these types (`None`: every type).
    pub events: Option<Vec<String>>,
    /// Events after this sequence number are delivered (the newest one when it was made).
    pub after_seq: i64,
    /// Made.
    pub created_at: OffsetDateTime,
}

impl Webhook {
    /// True when event `kind` on `market_id`, numbered `seq`, goes to this subscription.
    pub fn wants(&self, seq: i64, kind: &str, market_id: i64) -> bool {
        seq > self.after_seq
            && self.markets.as_ref().is_none_or(|m| m.contains(&market_id))
            && self
                .events
                .as_ref()
                .is_none_or(|e| e.iter().any(|k| k == kind))
    }
}

/// A subscription to make, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWebhook {
    /// Its owner.
    pub user_id: i64,
    /// Target URL (`http` or `https`, a host, no credentials, no fragment).
    pub target: TargetUrl,
    /// Market filter, deduplicated and sorted.
    pub markets: Option<Vec<i64>>,
    /// Event type filter, deduplicated and sorted.
    pub events: Option<Vec<String>>,
    /// The signing secret (`whsec_...`).
    pub secret: String,
}

impl NewWebhook {
    /// Validates a request for `user_id`; the secret is made here.
    pub fn parse(
        user_id: i64,
        url: &str,
        markets: Option<Vec<i64>>,
        events: Option<Vec<String>>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut p = Problems::default();
        let target = TargetUrl::parse(url).map_err(|why| p.add("url", why));
        let markets = markets.map(|mut ids| {
            if ids.is_empty() {
                p.add(
                    "markets",
                    "must name at least one market, or be left out for all",
                );
            }
            if ids.len() > WEBHOOK_MARKETS_MAX {
                p.add("markets", format!("at most {WEBHOOK_MARKETS_MAX} markets"));
            }
            if let Some(bad) = ids.iter().find(|id| **id < 1) {
                p.add("markets", format!("must be market ids; {bad} is not one"));
            }
            ids.sort_unstable();
            ids.dedup();
            ids
        });
        let events = events.map(|mut kinds| {
            if kinds.is_empty() {
                p.add(
                    "events",
                    "must name at least one event type, or be left out for all",
                );
            }
            for kind in &kinds {
                if !EventKind::ALL.iter().any(|k| k.as_str() == kind) {
                    let known: Vec<_> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                    p.add(
                        "events",
                        format!(
                            "`{kind}` is not an event type (one of {})",
                            known.join(", ")
                        ),
                    );
                }
            }
            kinds.sort_unstable();
            kinds.dedup();
            kinds
        });
        let Ok(target) = target else {
            return Err(p.finish(()).err().unwrap_or_default());
        };
        p.finish(NewWebhook {
            user_id,
            target,
            markets,
            events,
            secret: new_secret(),
        })
    }
}

/// A target URL that passed the syntax rules; its host still has to resolve to an address
/// deliveries may reach ([`forbidden`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl {
    /// The URL, normalized.
    pub url: String,
    /// Its host (an IP literal without brackets, or a name).
    pub host: String,
    /// Its port (the scheme's default when absent).
    pub port: u16,
}

impl TargetUrl {
    /// Checks `text` is an absolute `http`/`https` URL with a host and no credentials.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > WEBHOOK_URL_MAX {
            return Err(format!("must be at most {WEBHOOK_URL_MAX} characters"));
        }
        let url = url::Url::parse(text.trim())
            .map_err(|e| format!("must be an absolute http or https URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "must be an http or https URL, not `{}:`",
                url.scheme()
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials (user:password@)".into());
        }
        if url.fragment().is_some() {
            return Err("must not have a fragment (#...)".into());
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err("must name a host".into()),
        };
        let port = url
            .port_or_known_default()
            .ok_or("must name a port for this scheme")?;
        Ok(TargetUrl {
            url: url.to_string(),
            host,
            port,
        })
    }
}

/// Why deliveries may not go to `ip`: loopback, private (RFC 1918, IPv6 unique local),
/// link-local, shared (CGNAT), unspecified, broadcast, multicast or documentation addresses
/// (IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry). `None`: public.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared (carrier-grade NAT)")
            } else if v4.is_unspecified() || a == 0 {
                Some("unspecified")
            } else if v4.is_broadcast() || v4.is_multicast() || a >= 240 {
                Some("broadcast, multicast or reserved")
            } else if v4.is_documentation() {
                Some("documentation")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("broadcast, multicast or reserved")
            } else if first == 0x2001 && v6.segments()[1] == 0x0db8 {
                Some("documentation")
            } else {
                None
            }
        }
    }
}

/// A fresh secret: `whsec_` and the base64 of 24 random bytes.
pub fn new_secret() -> String {
    let bytes: [u8; SECRET_BYTES] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// The `webhook-signature` value of `body` sent as message `id` at `timestamp` (Unix seconds)
/// under `secret`: `v1,` and the base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))
        .unwrap_or_else(|_| secret.as_bytes().to_vec());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-id` of the delivery of event `seq`: the same on every attempt, so a receiver
/// can ignore a delivery it has already processed.
pub fn message_id(seq: i64) -> String {
    format!("evt_{seq}")
}

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Not yet answered with a 2xx; more attempts are due.
    Pending,
    /// A 2xx answered it.
    Succeeded,
    /// Its last allowed attempt failed.
    Failed,
}

impl DeliveryStatus {
    /// Every status.
    pub const ALL: [DeliveryStatus; 3] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Succeeded,
        DeliveryStatus::Failed,
    ];

    /// The stored and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

/// One attempt to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first.
    pub n: u32,
    /// When it was sent.
    pub at: OffsetDateTime,
    /// The receiver's HTTP status (`None`: no answer).
    pub status_code: Option<u16>,
    /// Why it failed (`None` when it succeeded).
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: i64,
}

impl Attempt {
    /// True when it succeeded.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// One event's delivery to one subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Id.
    pub id: i64,
    /// The subscription.
    pub webhook_id: i64,
    /// The event's sequence number.
    pub event_seq: i64,
    /// The event's type.
    pub event_type: String,
    /// The request body (the event as JSON, as the event stream sends it).
    pub body: String,
    /// Where it is.
    pub status: DeliveryStatus,
    /// Attempts so far, oldest first.
    pub attempts: Vec<Attempt>,
    /// Made.
    pub created_at: OffsetDateTime,
    /// Last changed.
    pub updated_at: OffsetDateTime,
}

/// What a delivery needs to be sent: itself and its subscription's URL and secret.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The delivery.
    pub delivery: Delivery,
    /// Where to.
    pub url: String,
    /// Signing secret.
    pub secret: String,
}

/// The job payload of a delivery.
pub fn job_payload(delivery_id: i64) -> Value {
    serde_json::json!({ "delivery_id": delivery_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_standard_webhooks_one() {
        // The example of the Standard Webhooks reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, id, 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_fresh_and_well_formed() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX));
        assert_eq!(
            STANDARD.decode(&a[SECRET_PREFIX.len()..]).unwrap().len(),
            24
        );
    }

    #[test]
    fn private_loopback_and_link_local_addresses_are_forbidden() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(forbidden(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert_eq!(forbidden(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn target_urls_are_http_with_a_host_and_no_credentials() {
        let t = TargetUrl::parse("https://example.com/hooks?x=1").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("example.com", 443));
        assert_eq!(TargetUrl::parse("http://[::1]:8080/").unwrap().host, "::1");
        for bad in [
            "ftp://example.com/",
            "example.com/hook",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "",
        ] {
            assert!(TargetUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_subscription_wants_newer_events_of_its_markets_and_types() {
        let w = Webhook {
            id: 1,
            user_id: 1,
            url: "https://example.com/".into(),
            markets: Some(vec![3]),
            events: Some(vec!["stake.placed".into()]),
            after_seq: 10,
            created_at: OffsetDateTime::UNIX_EPOCH,
        };
        assert!(w.wants(11, "stake.placed", 3));
        assert!(!w.wants(10, "stake.placed", 3));
        assert!(!w.wants(11, "stake.placed", 4));
        assert!(!w.wants(11, "market.closed", 3));
    }

    #[test]
    fn requests_are_validated_and_filters_normalized() {
        let w = NewWebhook::parse(
            1,
            "https://example.com/",
            Some(vec![3, 1, 3]),
            Some(vec!["stake.placed".into(), "market.closed".into()]),
        )
        .unwrap();
        assert_eq!(w.markets, Some(vec![1, 3]));
        assert_eq!(
            w.events,
            Some(vec!["market.closed".into(), "stake.placed".into()])
        );
        let problems = NewWebhook::parse(1, "gopher://x", Some(vec![]), Some(vec!["nope".into()]))
            .unwrap_err();
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["url", "markets", "events"]);
    }
}
