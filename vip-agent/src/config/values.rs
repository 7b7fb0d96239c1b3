//! Value types whose own errors say what to write instead.

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use serde::{
    de::Visitor,
    {Deserialize, Deserializer, de},
};

/// The longest duration any key takes: a day.
pub const MAX_DURATION: Duration = Duration::from_hours(24);

/// A TOML integer, range-checked later so the message can give the range.
pub(super) struct Int(pub(super) i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                i64::try_from(v)
                    .map(Int)
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written as a string with a unit: "20ms", "1s", "1.5s", "2m".
pub(super) struct Dur(pub(super) Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, such as \"20ms\" or \"1s\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                Err(no_unit(&v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Err(no_unit(&v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dur, E> {
                Err(no_unit(&v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                let t = v.trim();
                // A bare number is the likeliest mistake (keepalived takes
                // seconds, HAProxy milliseconds): refuse to guess which.
                if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                    return Err(no_unit(t));
                }
                let d = humantime::parse_duration(t).map_err(|e| {
                    E::custom(format!(
                        "{v:?} is not a duration ({e}); write it like \"20ms\", \"1s\", \"1.5s\" or \"2m\""
                    ))
                })?;
                // Timers add durations to clock readings: a bound keeps
                // every such sum far from overflow.
                if d > MAX_DURATION {
                    return Err(E::custom(format!(
                        "{v:?} is longer than {}, the longest duration vip takes for any key",
                        humantime::format_duration(MAX_DURATION)
                    )));
                }
                Ok(Dur(d))
            }
        }
        d.deserialize_any(V)
    }
}

pub(super) fn no_unit<E: de::Error>(number: &str) -> E {
    E::custom(format!(
        "the duration {number} has no unit; add one, as a string: \"{number}s\" or \"{number}ms\""
    ))
}

/// An IPv4 address written as a string.
pub(super) struct Ip(pub(super) Ipv4Addr);

impl<'de> Deserialize<'de> for Ip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Ip;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IPv4 address string such as \"10.0.0.1\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Ip, E> {
                v.parse()
                    .map(Ip)
                    .map_err(|_| E::custom(format!("{v:?} is not an IPv4 address")))
            }
        }
        d.deserialize_any(V)
    }
}

/// An `address:port` written as a string.
pub(super) struct Addr(pub(super) SocketAddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Addr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address:port string such as \"127.0.0.1:9650\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Addr, E> {
                v.parse().map(Addr).map_err(|_| {
                    E::custom(format!(
                        "{v:?} is not an address:port such as \"127.0.0.1:9650\""
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}
