//! `[[vrrp]]` instances: addresses, timers, authentication, tracking.

use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
    path::PathBuf,
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use super::Source;
use crate::config::Int;
use crate::config::{
    ConfigError, Dur, Election, Garp, Ip, MAX_AUTH_PASS, MAX_GARP_COUNT, Track, V3Checksum, Vrrp,
};

/// A `[[vrrp]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawVrrp {
    pub(in crate::config) name: Spanned<String>,
    pub(in crate::config) vrid: Spanned<Int>,
    pub(in crate::config) priority: Option<Spanned<Int>>,
    pub(in crate::config) version: Option<Spanned<Int>>,
    pub(in crate::config) advert_interval: Option<Spanned<Dur>>,
    pub(in crate::config) preempt: Option<bool>,
    pub(in crate::config) preempt_delay: Option<Dur>,
    #[serde(default)]
    pub(in crate::config) unicast_peers: Vec<Spanned<Ip>>,
    pub(in crate::config) auth_pass: Option<Spanned<String>>,
    pub(in crate::config) vips: Spanned<Vec<Spanned<RawVip>>>,
    pub(in crate::config) virtual_mac: Option<bool>,
    pub(in crate::config) garp: Option<RawGarp>,
    #[serde(default)]
    pub(in crate::config) track: Vec<Spanned<RawTrack>>,
    pub(in crate::config) notify: Option<Spanned<PathBuf>>,
    pub(in crate::config) track_services: Option<RawTrackServices>,
    pub(in crate::config) sync_group: Option<Spanned<String>>,
    pub(in crate::config) v3_checksum: Option<Spanned<V3Checksum>>,
}

/// One entry of `vips` as written: an address string (untagged), or a table
/// `{ address = "…", vlan = N }` (keepalived's `10.0.0.1/24 dev eth0.100`).
pub(in crate::config) enum RawVip {
    Plain(Ip),
    Table(RawVipTable),
}

/// `{ address = "…", vlan = N }` in `vips`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawVipTable {
    pub(in crate::config) address: Spanned<Ip>,
    pub(in crate::config) vlan: Option<Spanned<Int>>,
}

impl<'de> Deserialize<'de> for RawVip {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawVip;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "an IPv4 address string such as \"10.0.0.1\", or a table such as \
                     { address = \"10.0.0.1\", vlan = 100 }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawVip, E> {
                v.parse()
                    .map(|a| RawVip::Plain(Ip(a)))
                    .map_err(|_| E::custom(format!("{v:?} is not an IPv4 address")))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawVip, A::Error> {
                RawVipTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawVip::Table)
            }
        }
        d.deserialize_any(V)
    }
}

/// `garp = { … }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawGarp {
    pub(in crate::config) count: Option<Spanned<Int>>,
    pub(in crate::config) interval: Option<Dur>,
    pub(in crate::config) refresh: Option<Dur>,
}

/// `track_services = { … }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawTrackServices {
    pub(in crate::config) weight: Option<Spanned<Int>>,
}

/// One entry of `track` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawTrack {
    pub(in crate::config) check: Spanned<String>,
    pub(in crate::config) weight: Option<Spanned<Int>>,
}

impl Source<'_> {
    pub(super) fn vrrp(
        &self,
        i: usize,
        raw: Spanned<RawVrrp>,
        checks: &HashMap<String, (usize, usize)>,
    ) -> Result<Vrrp, ConfigError> {
        let line = self.line(raw.span().start);
        let raw = raw.into_inner();
        let key = |k: &str| format!("vrrp[{i}].{k}");

        let name = self.non_empty(raw.name, &key("name"), "the instance name")?;
        let vrid = self.int(&raw.vrid, &key("vrid"), 1..=255, "a virtual router id")?;
        let priority = self.int_or(
            raw.priority.as_ref(),
            100,
            &key("priority"),
            1..=255,
            "the priority",
        )?;
        let version = match &raw.version {
            None => 3,
            Some(v) => match v.get_ref().0 {
                2 => 2,
                3 => 3,
                n => {
                    return Err(self.error(
                        v.span().start,
                        &key("version"),
                        format!(
                            "VRRP version {n} does not exist; use 3 (RFC 5798) or 2 (RFC 3768, for old keepalived peers)"
                        ),
                    ));
                }
            },
        };
        let advert_interval = self.advert_interval(
            raw.advert_interval.as_ref(),
            version,
            &key("advert_interval"),
        )?;
        let auth_pass = self.auth_pass(raw.auth_pass, version, &key("auth_pass"))?;
        let unicast_peers = self.distinct(raw.unicast_peers, &key("unicast_peers"), "peer")?;

        let vips_at = raw.vips.span().start;
        let (vips, vlans) = self.vips(raw.vips.into_inner(), &key("vips"))?;
        if vips.is_empty() {
            return Err(self.error(
                vips_at,
                &key("vips"),
                "lists no address; an instance needs at least one VIP to move".to_owned(),
            ));
        }

        let garp = self.garp(raw.garp, i)?;

        let track = raw
            .track
            .into_iter()
            .enumerate()
            .map(|(t, tr)| self.track(tr, checks, &key(&format!("track[{t}]"))))
            .collect::<Result<Vec<_>, _>>()?;

        let notify = match raw.notify {
            Some(p) if p.get_ref().as_os_str().is_empty() => {
                return Err(self.error(
                    p.span().start,
                    &key("notify"),
                    "is empty; name a script or leave the key out".to_owned(),
                ));
            }
            p => p.map(Spanned::into_inner),
        };
        let (track_services, sync_group, v3_checksum) = self.vrrp_extras(
            raw.track_services,
            raw.sync_group,
            raw.v3_checksum,
            version,
            i,
        )?;

        Ok(Vrrp {
            name,
            election: Election {
                vrid,
                priority,
                version,
                advert_interval,
                preempt: raw.preempt.unwrap_or(true),
                preempt_delay: raw.preempt_delay.map_or(Duration::ZERO, |d| d.0),
            },
            unicast_peers,
            auth_pass,
            vips,
            vlans,
            virtual_mac: raw.virtual_mac.unwrap_or(false),
            garp,
            track,
            notify,
            track_services,
            sync_group,
            v3_checksum,
            line,
        })
    }

    /// `vrrp[i].garp`, defaults filled in.
    pub(super) fn garp(&self, garp: Option<RawGarp>, i: usize) -> Result<Garp, ConfigError> {
        let key = |k: &str| format!("vrrp[{i}].{k}");
        Ok(match garp {
            None => Garp::default(),
            Some(g) => Garp {
                count: self.int_or(
                    g.count.as_ref(),
                    Garp::default().count,
                    &key("garp.count"),
                    0..=i64::from(MAX_GARP_COUNT),
                    "the gratuitous ARP count",
                )?,
                interval: g.interval.map_or(Garp::default().interval, |d| d.0),
                refresh: g.refresh.map_or(Garp::default().refresh, |d| d.0),
            },
        })
    }

    /// `track_services`, `sync_group` and `v3_checksum` of `vrrp[i]`.
    pub(super) fn vrrp_extras(
        &self,
        track_services: Option<RawTrackServices>,
        sync_group: Option<Spanned<String>>,
        v3_checksum: Option<Spanned<V3Checksum>>,
        version: u8,
        i: usize,
    ) -> Result<(Option<i32>, Option<String>, V3Checksum), ConfigError> {
        let key = |k: &str| format!("vrrp[{i}].{k}");
        let track_services = track_services
            .map(|t| {
                self.int_or(
                    t.weight.as_ref(),
                    0,
                    &key("track_services.weight"),
                    -254..=254,
                    "a track weight",
                )
            })
            .transpose()?;
        let sync_group = sync_group
            .map(|g| self.non_empty(g, &key("sync_group"), "the sync group name"))
            .transpose()?;
        let v3_checksum = match v3_checksum {
            None => V3Checksum::default(),
            Some(c) if version == 2 => {
                return Err(self.error(
                    c.span().start,
                    &key("v3_checksum"),
                    "applies to VRRP version 3 only and this instance is version 2; \
                     remove the key"
                        .to_owned(),
                ));
            }
            Some(c) => c.into_inner(),
        };

        Ok((track_services, sync_group, v3_checksum))
    }

    pub(super) fn advert_interval(
        &self,
        v: Option<&Spanned<Dur>>,
        version: u8,
        key: &str,
    ) -> Result<Duration, ConfigError> {
        let Some(v) = v else {
            return Ok(Duration::from_secs(1));
        };
        let d = v.get_ref().0;
        let shown = humantime::format_duration(d);
        if version == 2 {
            // RFC 3768 carries the interval in a one-byte seconds field.
            if d.subsec_nanos() != 0 || !(1..=255).contains(&d.as_secs()) {
                return Err(self.error(
                    v.span().start,
                    key,
                    format!("{shown} cannot be sent by VRRP version 2: use whole seconds from 1s to 255s"),
                ));
            }
        } else {
            // RFC 5798 carries it in 12 bits of centiseconds.
            let centis = Duration::from_millis(10);
            if d.as_nanos() % centis.as_nanos() != 0
                || d < centis
                || d > Duration::from_millis(40_950)
            {
                return Err(self.error(
                    v.span().start,
                    key,
                    format!("{shown} cannot be sent by VRRP version 3: use a multiple of 10ms from 10ms to 40.95s"),
                ));
            }
        }
        Ok(d)
    }

    pub(super) fn auth_pass(
        &self,
        v: Option<Spanned<String>>,
        version: u8,
        key: &str,
    ) -> Result<Option<String>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        if !(1..=MAX_AUTH_PASS).contains(&v.get_ref().len()) {
            return Err(self.error(
                v.span().start,
                key,
                format!(
                    "must be 1 to {MAX_AUTH_PASS} bytes, as keepalived's auth_type PASS sends it"
                ),
            ));
        }
        if version != 2 {
            // keepalived ignores authentication on a version 3 instance with a
            // warning, and the documented example carries both keys: do the
            // same rather than refuse a file a keepalived user would expect to
            // work. Dropping the value keeps it from reaching a v3 packet.
            tracing::warn!(
                "{}:{}: {key}: ignored: VRRP version 3 has no authentication (RFC 5798 removed it); \
                 remove auth_pass, or set version = 2 to talk to old keepalived peers",
                self.path.display(),
                self.line(v.span().start),
            );
            return Ok(None);
        }
        Ok(Some(v.into_inner()))
    }

    pub(super) fn track(
        &self,
        raw: Spanned<RawTrack>,
        checks: &HashMap<String, (usize, usize)>,
        key: &str,
    ) -> Result<Track, ConfigError> {
        let raw = raw.into_inner();
        if !checks.contains_key(raw.check.get_ref()) {
            return Err(self.error(
                raw.check.span().start,
                &format!("{key}.check"),
                format!(
                    "there is no [[check]] named {:?}; define one or fix the name",
                    raw.check.get_ref()
                ),
            ));
        }
        Ok(Track {
            check: raw.check.into_inner(),
            weight: self.int_or(
                raw.weight.as_ref(),
                0,
                &format!("{key}.weight"),
                -254..=254,
                "a track weight",
            )?,
        })
    }

    /// The addresses of a list, refusing one listed twice.
    /// `vips`: distinct addresses, and the VLAN of each entry that names one.
    fn vips(
        &self,
        list: Vec<Spanned<RawVip>>,
        key: &str,
    ) -> Result<(Vec<Ipv4Addr>, BTreeMap<Ipv4Addr, u16>), ConfigError> {
        let mut addrs = Vec::with_capacity(list.len());
        let mut vlans = BTreeMap::new();
        for (n, v) in list.into_iter().enumerate() {
            let span = v.span();
            match v.into_inner() {
                RawVip::Plain(a) => addrs.push(Spanned::new(span, a)),
                RawVip::Table(t) => {
                    if let Some(vlan) = &t.vlan {
                        let id: u16 = self.int(
                            vlan,
                            &format!("{key}[{n}].vlan"),
                            1..=4094,
                            "an 802.1Q VLAN id",
                        )?;
                        vlans.insert(t.address.get_ref().0, id);
                    }
                    addrs.push(t.address);
                }
            }
        }
        Ok((self.distinct(addrs, key, "VIP")?, vlans))
    }

    pub(super) fn distinct(
        &self,
        list: Vec<Spanned<Ip>>,
        key: &str,
        what: &str,
    ) -> Result<Vec<Ipv4Addr>, ConfigError> {
        let mut seen: HashMap<Ipv4Addr, usize> = HashMap::new();
        let mut out = Vec::with_capacity(list.len());
        for (n, a) in list.into_iter().enumerate() {
            let addr = a.get_ref().0;
            let line = self.line(a.span().start);
            if let Some(first) = seen.insert(addr, line) {
                return Err(self.error(
                    a.span().start,
                    &format!("{key}[{n}]"),
                    format!("{what} {addr} is listed twice (first at line {first})"),
                ));
            }
            out.push(addr);
        }
        Ok(out)
    }
}
