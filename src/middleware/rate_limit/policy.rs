//! One named quota: its headers, its count of refusals, and where its buckets are counted,
//! governor's keyed limiter in this process or the GCRA script in a shared Redis. Both run the
//! same algorithm and give the same [`Decision`], so the headers are built once, here.

use std::{
    fmt::Write as _,
    hash::Hash,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use governor::{
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
    RateLimiter,
};
use poem::http::HeaderValue;

use super::{
    redis::{RedisStore, StoreDown},
    Key, Rate, Throttled,
};

type Limiter<K> =
    RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// What GCRA decided for one request, wherever it was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; `remaining` more requests would be allowed right now.
    Allowed {
        /// Requests left in the burst.
        remaining: u32,
    },
    /// Refused; a request can be allowed after `wait`.
    Refused {
        /// Time until the next request conforms.
        wait: Duration,
    },
}

/// How a bucket is named in Redis: the quota's name, then this.
pub trait BucketKey: Sync {
    /// Appends the bucket's name within its quota.
    fn write_key(&self, out: &mut String);
}

impl BucketKey for IpAddr {
    fn write_key(&self, out: &mut String) {
        let _ = write!(out, "ip:{self}");
    }
}

impl BucketKey for i64 {
    fn write_key(&self, out: &mut String) {
        let _ = write!(out, "user:{self}");
    }
}

impl BucketKey for Key {
    fn write_key(&self, out: &mut String) {
        match self {
            Key::User(id) => id.write_key(out),
            Key::Ip(ip) => ip.write_key(out),
        }
    }
}

impl BucketKey for String {
    /// A username (lower-cased; any characters, so it comes last).
    fn write_key(&self, out: &mut String) {
        out.push_str("name:");
        out.push_str(self);
    }
}

impl BucketKey for (String, IpAddr) {
    /// An address, then a username: an address never holds a space, so the two cannot blur.
    fn write_key(&self, out: &mut String) {
        let _ = write!(out, "ip:{} name:{}", self.1, self.0);
    }
}

/// Where a quota's buckets are counted.
enum Counter<K: Hash + Eq + Clone> {
    /// governor's keyed limiter, in this process.
    Local(Limiter<K>),
    /// The GCRA script in Redis, shared with every process that uses it.
    Shared(Arc<RedisStore>),
}

/// The headers of an allowed request.
#[derive(Debug)]
pub struct Allowed {
    pub(super) policy: HeaderValue,
    pub(super) state: String,
}

/// One named quota over keys of type `K`.
pub(super) struct Policy<K: Hash + Eq + Clone> {
    pub(super) name: &'static str,
    header: HeaderValue,
    rate: Rate,
    refill: Duration,
    burst: u32,
    counter: Counter<K>,
    pub(super) rejected: AtomicU64,
}

impl<K: Hash + Eq + Clone + BucketKey> Policy<K> {
    /// The quota `name` at `rate`, counted in `store` when given, else in this process.
    pub(super) fn new(name: &'static str, rate: Rate, store: Option<&Arc<RedisStore>>) -> Self {
        let header = format!("\"{name}\";q={};w={}", rate.count, rate.window.as_secs());
        let counter = match store {
            Some(store) => Counter::Shared(store.clone()),
            None => Counter::Local(
                RateLimiter::keyed(rate.quota()).with_middleware::<StateInformationMiddleware>(),
            ),
        };
        Policy {
            name,
            header: HeaderValue::from_str(&header).expect("ASCII header"),
            rate,
            refill: rate.window / rate.count.get(),
            burst: rate.count.get(),
            rejected: AtomicU64::new(0),
            counter,
        }
    }

    /// Counts a request against `key`'s bucket; `Err` when the store could not answer.
    pub(super) async fn check(
        &self,
        key: &K,
    ) -> std::result::Result<std::result::Result<Allowed, Throttled>, StoreDown> {
        let decision = match &self.counter {
            Counter::Local(limiter) => match limiter.check_key(key) {
                Ok(snapshot) => Decision::Allowed {
                    remaining: snapshot.remaining_burst_capacity(),
                },
                Err(not_until) => Decision::Refused {
                    wait: not_until.wait_time_from(limiter.clock().now()),
                },
            },
            Counter::Shared(store) => store.count(self.name, key, self.rate).await?,
        };
        Ok(self.verdict(decision))
    }

    fn verdict(&self, decision: Decision) -> std::result::Result<Allowed, Throttled> {
        match decision {
            Decision::Allowed { remaining } => {
                // The bucket is full again once every used cell has refilled.
                let full_in = self.refill * (self.burst - remaining.min(self.burst));
                Ok(Allowed {
                    policy: self.header.clone(),
                    state: format!("\"{}\";r={remaining};t={}", self.name, ceil_secs(full_in)),
                })
            }
            Decision::Refused { wait } => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                let retry_after = ceil_secs(wait).max(1);
                Err(Throttled {
                    policy: self.header.clone(),
                    state: format!("\"{}\";r=0;t={retry_after}", self.name),
                    retry_after,
                })
            }
        }
    }

    /// Forgets keys whose state equals a fresh one; returns how many are still tracked. Redis
    /// needs no sweep (its keys expire by themselves), so a shared quota tracks none here.
    pub(super) fn sweep(&self) -> usize {
        match &self.counter {
            Counter::Local(limiter) => {
                limiter.retain_recent();
                limiter.shrink_to_fit();
                limiter.len()
            }
            Counter::Shared(_) => 0,
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    impl BucketKey for u64 {
        fn write_key(&self, out: &mut String) {
            let _ = write!(out, "n:{self}");
        }
    }

    /// A check of an in-process policy, which never waits.
    fn check<K: Hash + Eq + Clone + BucketKey>(
        policy: &Policy<K>,
        key: &K,
    ) -> std::result::Result<Allowed, Throttled> {
        policy
            .check(key)
            .now_or_never()
            .expect("in process: ready at once")
            .expect("in process: no store to fail")
    }

    #[test]
    fn a_burst_is_allowed_then_refused_with_a_retry_time() {
        let policy = Policy::<i64>::new("reads", "3/min".parse().unwrap(), None);
        let first = check(&policy, &1).ok().unwrap();
        assert_eq!(first.policy, "\"reads\";q=3;w=60");
        assert_eq!(first.state, "\"reads\";r=2;t=20");
        check(&policy, &1).ok().unwrap();
        let last = check(&policy, &1).ok().unwrap();
        assert_eq!(last.state, "\"reads\";r=0;t=60");
        let refused = check(&policy, &1).err().unwrap();
        assert!((19..=20).contains(&refused.retry_after), "{refused:?}");
        assert_eq!(
            refused.state,
            format!("\"reads\";r=0;t={}", refused.retry_after)
        );
        // Another key has its own bucket.
        assert!(check(&policy, &2).is_ok());
    }

    #[test]
    fn idle_keys_are_forgotten_so_a_million_clients_do_not_grow_memory() {
        // 1 request per key per millisecond: a key used once is fresh again 1 ms later.
        let policy = Policy::<u64>::new("reads", "1000/s".parse().unwrap(), None);
        let batch = 100_000u64;
        for round in 0..10 {
            for key in round * batch..(round + 1) * batch {
                assert!(check(&policy, &key).is_ok());
            }
            let Counter::Local(limiter) = &policy.counter else {
                unreachable!("built without a store")
            };
            assert_eq!(limiter.len(), batch as usize);
            std::thread::sleep(Duration::from_millis(5));
            assert_eq!(policy.sweep(), 0, "round {round}");
        }
    }

    #[test]
    fn bucket_names_cannot_collide_across_kinds_of_key() {
        let name = |key: &dyn BucketKey| {
            let mut out = String::new();
            key.write_key(&mut out);
            out
        };
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(name(&Key::User(7)), "user:7");
        assert_eq!(name(&Key::Ip(ip)), "ip:2001:db8::1");
        assert_eq!(name(&"bob".to_owned()), "name:bob");
        assert_eq!(name(&("a b:c".to_owned(), ip)), "ip:2001:db8::1 name:a b:c");
    }
}
