//! Quotas as configured: `N/window` rates and the set of them the server enforces.

use std::{fmt, num::NonZeroU32, str::FromStr, time::Duration};

use governor::Quota;

use super::client::IpNet;

/// A quota: `count` requests per `window`, written `N/s`, `N/min`, `N/h` or with a multiple
/// such as `N/15min`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed in one burst (and per window on average).
    pub count: NonZeroU32,
    /// Time to refill the whole burst.
    pub window: Duration,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a rate such as 100/min, 10/s, 5/15min or 1000/h");
        let (count, per) = s.trim().split_once('/').ok_or_else(bad)?;
        let count = count.trim().parse::<NonZeroU32>().map_err(|_| bad())?;
        let per = per.trim();
        let digits = per.bytes().take_while(u8::is_ascii_digit).count();
        let (multiple, unit) = per.split_at(digits);
        let multiple = if multiple.is_empty() {
            1
        } else {
            multiple.parse::<u64>().map_err(|_| bad())?
        };
        let unit_secs = match unit {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86_400,
            _ => return Err(bad()),
        };
        let secs = multiple
            .checked_mul(unit_secs)
            .filter(|&secs| (1..=7 * 86_400).contains(&secs))
            .ok_or_else(|| format!("`{s}`: the window must be 1 second to 7 days"))?;
        let window = Duration::from_secs(secs);
        if window.as_nanos() / u128::from(count.get()) == 0 {
            return Err(format!("`{s}`: more than one request per nanosecond"));
        }
        Ok(Rate { count, window })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.window.as_secs();
        match secs {
            s if s % 3600 == 0 => write!(f, "{}/{}h", self.count, s / 3600),
            s if s % 60 == 0 => write!(f, "{}/{}min", self.count, s / 60),
            s => write!(f, "{}/{}s", self.count, s),
        }
    }
}

impl Rate {
    pub(super) fn quota(self) -> Quota {
        let period = self.window / self.count.get();
        Quota::with_period(period)
            .expect("Rate::from_str keeps the period above zero")
            .allow_burst(self.count)
    }

    /// GCRA's two parameters in whole microseconds, the resolution of Redis's clock: `t`, the
    /// time one request takes to refill (window / count, rounded down, at least 1 µs), and
    /// `tau`, the burst tolerance `t * (count - 1)`.
    pub fn gcra_micros(self) -> (u64, u64) {
        let t = u64::try_from((self.window / self.count.get()).as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        (t, t * u64::from(self.count.get() - 1))
    }
}

/// The quotas, from configuration.
#[derive(Debug, Clone)]
pub struct Quotas {
    /// Off: nothing is limited and no headers are sent.
    pub enabled: bool,
    /// `/api/auth/*`, per client IP.
    pub auth: Rate,
    /// Login attempts per username and client IP.
    pub login: Rate,
    /// Login attempts per username, from every address together.
    pub login_account: Rate,
    /// Other non-GET requests, per user or client IP.
    pub writes: Rate,
    /// GET requests, per user or client IP.
    pub reads: Rate,
    /// Market search, per user or client IP.
    pub search: Rate,
    /// Every non-auth request of an admin, per admin.
    pub admin: Rate,
    /// Peers whose `X-Forwarded-For` / `Forwarded` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print() {
        let r: Rate = "100/min".parse().unwrap();
        assert_eq!((r.count.get(), r.window), (100, Duration::from_secs(60)));
        assert_eq!(r.to_string(), "100/1min");
        let r: Rate = "5/15min".parse().unwrap();
        assert_eq!(r.window, Duration::from_secs(900));
        assert_eq!("10/s".parse::<Rate>().unwrap().to_string(), "10/1s");
        assert_eq!("7/2h".parse::<Rate>().unwrap().window.as_secs(), 7200);
        for bad in [
            "",
            "10",
            "0/s",
            "-1/s",
            "10/",
            "10/fortnight",
            "10/0s",
            "1/8d",
            "x/s",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad} parsed");
        }
        assert!("4000000000/s".parse::<Rate>().is_err());
    }

    #[test]
    fn gcra_parameters_are_whole_microseconds() {
        let micros = |s: &str| s.parse::<Rate>().unwrap().gcra_micros();
        assert_eq!(micros("10/s"), (100_000, 900_000));
        assert_eq!(micros("3/2s"), (666_666, 1_333_332));
        assert_eq!(micros("1/min"), (60_000_000, 0));
        // Faster than one per microsecond: one per microsecond.
        assert_eq!(micros("3000000/s"), (1, 2_999_999));
    }
}
