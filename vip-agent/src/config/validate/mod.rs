//! Validation: checks what one value alone cannot (ranges, duplicates,
//! references between tables, the data plane's limits) and builds the
//! public types, each error located by line and dotted key. The node and
//! the shared helpers are here; checks, VRRP instances and services each
//! have a file.

mod check;
mod service;
mod vrrp;

pub(in crate::config) use self::{check::RawCheck, service::RawService, vrrp::RawVrrp};
#[cfg(test)]
pub(in crate::config) use self::{
    service::RawBackend,
    vrrp::{RawGarp, RawTrack, RawTrackServices, RawVipTable},
};

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    ops::RangeInclusive,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use crate::config::{
    Addr, Config, ConfigError, DEFAULT_BPFFS, DEFAULT_FLOW_TABLE_SIZE, Dur, Int,
    MAX_FLOW_TABLE_SIZE, MAX_IFNAME, MAX_NODE_NAME, MIN_FLOW_TABLE_SIZE, Node, ScriptUser, XdpMode,
    join, key_at, limit, quoted_name,
};

/// The file as serde reads it: raw mirrors of the public types, unknown
/// keys refused, and the values later checks look at keep their spans.
/// Each table's mirror sits beside its validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawConfig {
    pub(in crate::config) node: RawNode,
    #[serde(default)]
    pub(in crate::config) vrrp: Vec<Spanned<RawVrrp>>,
    #[serde(default)]
    pub(in crate::config) check: Vec<Spanned<RawCheck>>,
    #[serde(default)]
    pub(in crate::config) service: Vec<Spanned<RawService>>,
}

/// `[node]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawNode {
    pub(in crate::config) interface: Spanned<String>,
    pub(in crate::config) name: Spanned<String>,
    pub(in crate::config) bpffs: Option<Spanned<PathBuf>>,
    pub(in crate::config) control_socket: Option<Spanned<PathBuf>>,
    pub(in crate::config) metrics: Option<Addr>,
    pub(in crate::config) xdp_mode: Option<XdpMode>,
    pub(in crate::config) dead_time: Option<Spanned<Dur>>,
    pub(in crate::config) script_user: Option<Spanned<String>>,
    pub(in crate::config) script_security: Option<bool>,
    pub(in crate::config) flow_table_size: Option<Spanned<Int>>,
}

/// The text being parsed, for turning byte offsets into errors.
pub(super) struct Source<'a> {
    pub(super) text: &'a str,
    pub(super) path: &'a Path,
}

impl Source<'_> {
    /// The 1-based line holding byte `offset`.
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        // Lines are the pieces between newlines.
        self.text.as_bytes()[..end].split(|&b| b == b'\n').count()
    }

    /// The message for a toml error that has none, at byte `at`.
    fn unexplained(&self, at: usize) -> String {
        let before = self.text.get(..at).unwrap_or(self.text);
        let line = before.rsplit('\n').next().unwrap_or_default();
        if line.trim_end().ends_with('=') {
            "a value is missing after `=`".to_owned()
        } else {
            format!("not valid TOML at column {}", line.chars().count() + 1)
        }
    }

    pub(in crate::config) fn error(&self, at: usize, key: &str, message: String) -> ConfigError {
        ConfigError {
            path: self.path.to_owned(),
            line: Some(self.line(at)),
            key: Some(key.to_owned()),
            message,
        }
    }

    /// toml's error, with its line and the dotted key it concerns.
    pub(super) fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let message = e.message().trim_end();
        let span = e.span();
        // A root-level error (a missing `[node]`) comes with an empty span at
        // 0, which would otherwise match the first key.
        let located = span
            .as_ref()
            .filter(|s| !s.is_empty())
            .and_then(|s| key_at(self.text, s))
            .unwrap_or_default();
        let (key, message) = if let Some(name) = quoted_name(message, "missing field ") {
            // The span is that of the table lacking the key.
            (
                join(&located, name),
                "this required key is missing".to_owned(),
            )
        } else if let Some(name) = quoted_name(message, "unknown field ") {
            // The span is the key's own.
            let expected = message.split_once(", ").map_or("", |(_, rest)| rest);
            let key = if located == name || located.ends_with(&format!(".{name}")) {
                located
            } else {
                join(&located, name)
            };
            (key, format!("unknown key; {expected}"))
        } else if message.is_empty() {
            // toml says nothing where a value is missing at the end of the
            // text (`a =`); the span is where the value should start.
            (
                located,
                self.unexplained(span.as_ref().map_or(0, |s| s.start)),
            )
        } else {
            (located, message.to_owned())
        };
        ConfigError {
            path: self.path.to_owned(),
            line: span.map(|s| self.line(s.start)),
            key: (!key.is_empty()).then_some(key),
            message,
        }
    }

    /// `v` as a `T` within `range`; `what` names the value in the message.
    fn int<T: TryFrom<i64>>(
        &self,
        v: &Spanned<Int>,
        key: &str,
        range: RangeInclusive<i64>,
        what: &str,
    ) -> Result<T, ConfigError> {
        let n = v.get_ref().0;
        range
            .contains(&n)
            .then(|| T::try_from(n).ok())
            .flatten()
            .ok_or_else(|| {
                self.error(
                    v.span().start,
                    key,
                    format!(
                        "{n} is out of range: {what} must be {}..={}",
                        range.start(),
                        range.end()
                    ),
                )
            })
    }

    /// Like [`Self::int`] for an optional key with a default.
    fn int_or<T: TryFrom<i64>>(
        &self,
        v: Option<&Spanned<Int>>,
        default: T,
        key: &str,
        range: RangeInclusive<i64>,
        what: &str,
    ) -> Result<T, ConfigError> {
        v.map_or(Ok(default), |v| self.int(v, key, range, what))
    }

    /// An optional count of checks in a row: at least 1.
    fn times(&self, v: Option<&Spanned<Int>>, default: u32, key: &str) -> Result<u32, ConfigError> {
        let Some(v) = v else { return Ok(default) };
        let n = v.get_ref().0;
        u32::try_from(n).ok().filter(|&n| n >= 1).ok_or_else(|| {
            self.error(
                v.span().start,
                key,
                format!("{n} is out of range: it counts checks in a row, at least 1"),
            )
        })
    }

    /// An optional duration that must not be zero.
    fn positive(
        &self,
        v: Option<&Spanned<Dur>>,
        default: Duration,
        key: &str,
    ) -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(d) if d.get_ref().0.is_zero() => {
                Err(self.error(d.span().start, key, "must be greater than 0s".to_owned()))
            }
            Some(d) => Ok(d.get_ref().0),
        }
    }

    fn non_empty(&self, v: Spanned<String>, key: &str, what: &str) -> Result<String, ConfigError> {
        if v.get_ref().trim().is_empty() {
            return Err(self.error(v.span().start, key, format!("{what} is empty")));
        }
        Ok(v.into_inner())
    }

    pub(super) fn build(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let node = self.node(raw.node)?;

        let mut checks = Vec::with_capacity(raw.check.len());
        let mut check_names: HashMap<String, (usize, usize)> = HashMap::new();
        for (i, c) in raw.check.into_iter().enumerate() {
            // Where the name is (check() refuses a table without one).
            let name_at = c
                .get_ref()
                .name
                .as_ref()
                .map_or(c.span().start, |n| n.span().start);
            let check = self.check(i, c)?;
            if let Some((j, line)) = check_names.get(&check.name) {
                return Err(self.error(
                    name_at,
                    &format!("check[{i}].name"),
                    format!("{:?} is already the name of check[{j}] (line {line}); names must be unique", check.name),
                ));
            }
            check_names.insert(check.name.clone(), (i, check.line));
            checks.push(check);
        }

        let mut vrrp = Vec::with_capacity(raw.vrrp.len());
        let mut names: HashMap<String, (usize, usize)> = HashMap::new();
        let mut vrids: HashMap<u8, (usize, usize)> = HashMap::new();
        for (i, v) in raw.vrrp.into_iter().enumerate() {
            let name_at = v.get_ref().name.span().start;
            let vrid_at = v.get_ref().vrid.span().start;
            let inst = self.vrrp(i, v, &check_names)?;
            if let Some((j, line)) = names.get(&inst.name) {
                return Err(self.error(
                    name_at,
                    &format!("vrrp[{i}].name"),
                    format!(
                        "{:?} is already the name of vrrp[{j}] (line {line}); names must be unique",
                        inst.name
                    ),
                ));
            }
            if let Some((j, line)) = vrids.get(&inst.election.vrid) {
                return Err(self.error(
                    vrid_at,
                    &format!("vrrp[{i}].vrid"),
                    format!(
                        "vrid {} is already used by vrrp[{j}] (line {line}); each instance on an interface needs its own",
                        inst.election.vrid
                    ),
                ));
            }
            names.insert(inst.name.clone(), (i, inst.line));
            vrids.insert(inst.election.vrid, (i, inst.line));
            vrrp.push(inst);
        }

        self.one_vlan_per_address(&vrrp)?;
        let services = self.services(raw.service)?;

        let vips: HashSet<Ipv4Addr> = services
            .iter()
            .map(|s| s.vip)
            .chain(vrrp.iter().flat_map(|v| v.vips.iter().copied()))
            .collect();
        if vips.len() > limit(vip_common::MAX_VIPS) {
            return Err(ConfigError {
                path: self.path.to_owned(),
                line: None,
                key: None,
                message: format!(
                    "{} distinct VIPs in [[service]] and [[vrrp]], but a node serves at most {}",
                    vips.len(),
                    vip_common::MAX_VIPS
                ),
            });
        }
        Ok(Config {
            node,
            vrrp,
            checks,
            services,
        })
    }

    /// One address, one VLAN: the VIP table is keyed by address alone, so
    /// two instances cannot hold the same address on different VLANs.
    fn one_vlan_per_address(&self, vrrp: &[crate::config::Vrrp]) -> Result<(), ConfigError> {
        let mut seen: HashMap<Ipv4Addr, (u16, usize, usize)> = HashMap::new();
        for (i, v) in vrrp.iter().enumerate() {
            for vip in &v.vips {
                let vlan = v.vlan(*vip);
                match seen.get(vip) {
                    Some(&(other, j, line)) if other != vlan => {
                        let on = |id: u16| {
                            if id == 0 {
                                "untagged".to_owned()
                            } else {
                                format!("on VLAN {id}")
                            }
                        };
                        return Err(ConfigError {
                            path: self.path.to_owned(),
                            line: Some(v.line),
                            key: Some(format!("vrrp[{i}].vips")),
                            message: format!(
                                "VIP {vip} is {} here but {} in vrrp[{j}] (line {line}); an address has one VLAN: use another address",
                                on(vlan),
                                on(other)
                            ),
                        });
                    }
                    Some(_) => {}
                    None => {
                        seen.insert(*vip, (vlan, i, v.line));
                    }
                }
            }
        }
        Ok(())
    }

    fn node(&self, raw: RawNode) -> Result<Node, ConfigError> {
        let at = raw.interface.span().start;
        let interface = raw.interface.into_inner();
        if interface.is_empty() {
            return Err(self.error(
                at,
                "node.interface",
                "is empty; name the interface XDP attaches to, such as \"eth0\"".to_owned(),
            ));
        }
        if interface.len() > MAX_IFNAME {
            return Err(self.error(
                at,
                "node.interface",
                format!("{interface:?} is longer than {MAX_IFNAME} bytes, the kernel's limit for interface names"),
            ));
        }
        // The kernel's own rule (dev_valid_name).
        if interface == "."
            || interface == ".."
            || interface.contains(['/', ':'])
            || interface.contains(char::is_whitespace)
        {
            return Err(self.error(
                at,
                "node.interface",
                format!("{interface:?} is not a valid interface name"),
            ));
        }

        let at = raw.name.span().start;
        let name = raw.name.into_inner();
        let name_ok = (1..=MAX_NODE_NAME).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(self.error(
                at,
                "node.name",
                format!(
                    "{name:?} is not a valid node name: use 1 to {MAX_NODE_NAME} letters, digits, '-' or '_' \
                     (it names the pin directory <bpffs>/vip/<name>)"
                ),
            ));
        }

        let path_or = |v: Option<Spanned<PathBuf>>, key: &str, default: PathBuf| match v {
            None => Ok(default),
            Some(p) if p.get_ref().as_os_str().is_empty() => Err(self.error(
                p.span().start,
                key,
                "is empty; leave the key out for the default".to_owned(),
            )),
            Some(p) => Ok(p.into_inner()),
        };
        let bpffs = path_or(raw.bpffs, "node.bpffs", PathBuf::from(DEFAULT_BPFFS))?;
        let control_socket = path_or(
            raw.control_socket,
            "node.control_socket",
            PathBuf::from(format!("/run/vip/{name}.sock")),
        )?;

        let dead_time = match raw.dead_time {
            Some(d) if d.get_ref().0.is_zero() => {
                return Err(self.error(
                    d.span().start,
                    "node.dead_time",
                    "0s would stop XDP at once; give the agent time to beat, such as \"1s\", or leave it out"
                        .to_owned(),
                ));
            }
            d => d.map(|d| d.into_inner().0),
        };
        let flow_table_size = self.int_or(
            raw.flow_table_size.as_ref(),
            DEFAULT_FLOW_TABLE_SIZE,
            "node.flow_table_size",
            i64::from(MIN_FLOW_TABLE_SIZE)..=i64::from(MAX_FLOW_TABLE_SIZE),
            "the flow table's entries",
        )?;

        let script_user = match raw.script_user {
            None => None,
            Some(s) => Some(
                ScriptUser::parse(s.get_ref())
                    .map_err(|m| self.error(s.span().start, "node.script_user", m))?,
            ),
        };

        Ok(Node {
            interface,
            name,
            bpffs,
            control_socket,
            metrics: raw.metrics.map(|a| a.0),
            xdp_mode: raw.xdp_mode.unwrap_or_default(),
            dead_time,
            script_user,
            script_security: raw.script_security.unwrap_or(true),
            flow_table_size,
        })
    }
}
