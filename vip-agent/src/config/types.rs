//! The validated configuration: plain typed values, every default filled in.

use std::{
    collections::BTreeMap,
    fmt,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use serde::Deserialize;

use vip_common::Proto;

use crate::{
    check::{Probe, Schedule},
    vrrp::machine::Election,
};

/// A whole node configuration, defaults applied and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[node]`: this machine.
    pub node: Node,
    /// `[[vrrp]]`: the VRRP instances, in file order.
    pub vrrp: Vec<Vrrp>,
    /// `[[check]]`: named node-level checks that `[[vrrp]]` instances track.
    pub checks: Vec<Check>,
    /// `[[service]]`: the load-balanced services, in file order.
    pub services: Vec<Service>,
}

impl Config {
    /// The VLAN id of `vip` (0: untagged): the one its `[[vrrp]]` entry
    /// names. A service's VIP is on the VLAN of the instance VIP with its
    /// address; a VIP that only services name is untagged.
    #[must_use]
    pub fn vlan_of(&self, vip: Ipv4Addr) -> u16 {
        self.vrrp
            .iter()
            .find_map(|v| v.vlans.get(&vip).copied())
            .unwrap_or(0)
    }
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Where XDP attaches and VRRP runs.
    pub interface: String,
    /// Names the pin directory `<bpffs>/vip/<name>`: `[A-Za-z0-9_-]{1,32}`.
    pub name: String,
    /// The pin root (default [`DEFAULT_BPFFS`]).
    pub bpffs: PathBuf,
    /// The agent's control socket (default `/run/vip/<name>.sock`).
    pub control_socket: PathBuf,
    /// Where to serve Prometheus metrics; `None` serves none.
    pub metrics: Option<SocketAddr>,
    /// How to attach XDP (key `xdp_mode`, default `auto`).
    pub xdp_mode: XdpMode,
    /// How old the agent's heartbeat may get before XDP stops acting on
    /// packets (key `dead_time`); `None` lets the agent derive it.
    pub dead_time: Option<Duration>,
    /// Who exec checks and notify scripts run as (key `script_user`,
    /// `"user"` or `"user:group"`); `None`: the agent's own user, or for a
    /// root agent `vip-script` when that user exists.
    pub script_user: Option<ScriptUser>,
    /// Refuse scripts that anyone but root or the agent's user may rewrite
    /// (key `script_security`, default true; keepalived's
    /// `enable_script_security`).
    pub script_security: bool,
    /// Entries of the XDP flow table, an LRU (key `flow_table_size`,
    /// default [`DEFAULT_FLOW_TABLE_SIZE`], [`MIN_FLOW_TABLE_SIZE`] to
    /// [`MAX_FLOW_TABLE_SIZE`]). Applied when the agent loads the data
    /// plane: a change needs a restart with the pins removed (SIGTERM).
    ///
    /// [`DEFAULT_FLOW_TABLE_SIZE`]: crate::config::DEFAULT_FLOW_TABLE_SIZE
    /// [`MIN_FLOW_TABLE_SIZE`]: crate::config::MIN_FLOW_TABLE_SIZE
    /// [`MAX_FLOW_TABLE_SIZE`]: crate::config::MAX_FLOW_TABLE_SIZE
    pub flow_table_size: u32,
}

/// `[node] script_user`: a user, by name or number, and optionally a group
/// instead of the user's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptUser {
    pub user: String,
    pub group: Option<String>,
}

impl ScriptUser {
    /// `"user"` or `"user:group"`, each a name (as `useradd` takes them) or a
    /// number. Whether they exist on this machine is checked at load
    /// (`config::host`).
    pub fn parse(text: &str) -> Result<Self, String> {
        const MAX: usize = 32;
        let name_ok = |n: &str| {
            (1..=MAX).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
                && !n.starts_with('-')
        };
        let (user, group) = match text.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (text, None),
        };
        if !name_ok(user) || group.is_some_and(|g| !name_ok(g)) {
            return Err(format!(
                "{text:?} is not a user: write \"name\" or \"name:group\", each 1 to {MAX} letters, digits, '_', '-' or '.', or a number"
            ));
        }
        Ok(Self {
            user: user.to_owned(),
            group: group.map(str::to_owned),
        })
    }
}

impl std::fmt::Display for ScriptUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.group {
            Some(g) => write!(f, "{}:{g}", self.user),
            None => f.write_str(&self.user),
        }
    }
}

/// `[node] xdp_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode where the driver supports it, else generic.
    #[default]
    Auto,
    /// Driver mode only; fail if the driver lacks it.
    Native,
    /// Generic (skb) mode only: works everywhere, slower.
    Generic,
}

/// `[[service]]`: one (VIP, port, protocol) and its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub vip: Ipv4Addr,
    /// 1..=65535.
    pub port: u16,
    /// Key `protocol`: `"tcp"` (the default) or `"udp"`.
    pub protocol: Proto,
    /// The health check of every backend; `None`: backends are always up.
    pub check: Option<ServiceCheck>,
    /// What happens to the flows of a backend that goes down (key
    /// `on_backend_down`): default [`OnBackendDown::Reset`] for TCP,
    /// [`OnBackendDown::Rehash`] for UDP (which has no RST, so `"reset"` is
    /// refused there).
    pub on_backend_down: OnBackendDown,
    /// 1..=256 backends, distinct addresses.
    pub backends: Vec<BackendConfig>,
    /// 1-based line of the service's table header (or inline table), so
    /// later errors about this service can point at it.
    pub line: usize,
}

/// `[[service]] on_backend_down`: what the data plane does with a packet of
/// an existing flow whose backend health checks declared down.
///
/// ```toml
/// [[service]]
/// vip = "10.99.0.100"
/// port = 5672
/// on_backend_down = "reset"   # "reset" (TCP default) | "rehash" (UDP default) | "keep"
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBackendDown {
    /// Answer the client's TCP segment with an RST, so it reconnects at once
    /// (through the table, to a live backend) instead of waiting for its own
    /// timeout. TCP only.
    Reset,
    /// Place the flow anew through the lookup table: its next packets go to
    /// a live backend (which, for TCP, answers them with an RST itself).
    Rehash,
    /// Leave the flow on its backend (new flows still avoid it): for a
    /// backend that fails its check but may still serve the connections it
    /// has.
    Keep,
}

/// One entry of `[[service]] backends`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub address: Ipv4Addr,
    /// Relative share, 0..=1000 (default 1); 0 drains the backend: it keeps
    /// its existing flows but gets no new ones.
    pub weight: u32,
}

/// `[[service]] check`: how each backend of the service is probed.
///
/// ```toml
/// check = { kind = "amqp", interval = "200ms", timeout = "300ms", user = "guest", password = "guest", vhost = "/" }
/// check = { kind = "http", port = 15672, path = "/api/health/checks/alarms", user = "guest", password = "guest", expect_body = "\"ok\"" }
/// check = { kind = "tcp" }
/// check = { kind = "exec", command = "/usr/local/bin/check-backend" }   # keepalived MISC_CHECK
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCheck {
    /// What a probe asks. An `exec` check (keepalived's `MISC_CHECK`) runs
    /// its command once per backend, with the environment variables
    /// `VIP_BACKEND_ADDRESS` and `VIP_BACKEND_PORT` naming the backend. An
    /// `http` body check searches the first 64 KiB.
    pub probe: Probe,
    /// Interval and timeout (default 1s each, > 0), rise and fall (default 2).
    pub schedule: Schedule,
    /// The port to probe (for `exec`: the value of `VIP_BACKEND_PORT`);
    /// `None` probes the service port.
    pub port: Option<u16>,
}

/// `[[check]]`: a named node-level check (keepalived's `vrrp_script`).
///
/// An `exec` check runs a command; a `tcp`, `amqp` or `http` check probes
/// `address`:`port` in-process, with the same keys as a service check:
///
/// ```toml
/// [[check]]
/// name = "local-broker"
/// kind = "amqp"                 # exec | tcp | amqp | http
/// address = "127.0.0.1"         # tcp/amqp/http: required; exec: refused
/// # port = 5672                 # default 5672 (amqp), 80 (http); required for tcp
/// # user = "guest"              # amqp: log in (PLAIN) and open vhost; http: basic auth
/// # password = "guest"
/// # vhost = "/"                 # amqp with user only
/// interval = "500ms"
///
/// [[check]]
/// name = "broker-alarms"
/// kind = "http"
/// address = "127.0.0.1"
/// port = 15672
/// path = "/api/health/checks/alarms"   # default "/"
/// user = "guest"
/// password = "guest"
/// expect_status = 200                  # the default
/// expect_body = "\"ok\""             # optional substring of the body
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Unique; what `[[vrrp]] track` refers to.
    pub name: String,
    /// What the check asks (its `kind` and the keys of that kind).
    pub probe: Probe,
    /// What a `tcp`, `amqp` or `http` check probes (required for them,
    /// refused for `exec`).
    pub address: Option<Ipv4Addr>,
    /// The port to probe: default [`CheckKind::default_port`] (5672 for
    /// `amqp`, 80 for `http`), required for `tcp`; `None` for `exec`.
    pub port: Option<u16>,
    /// Interval and timeout (default 1s each, > 0), rise and fall (default 2).
    pub schedule: Schedule,
    /// 1-based line of the check's table header.
    pub line: usize,
}

/// `[[vrrp]]`: one VRRP instance (keepalived's `vrrp_instance`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vrrp {
    /// Unique; passed to the notify script.
    pub name: String,
    /// `vrid`, `priority`, `version`, `advert_interval`, `preempt`,
    /// `preempt_delay`: what the VRRP machine elects with (their ranges and
    /// defaults are documented there).
    pub election: Election,
    /// Empty: multicast to 224.0.0.18.
    pub unicast_peers: Vec<Ipv4Addr>,
    /// Version 2 only: keepalived `auth_type PASS`, 1..=8 bytes.
    pub auth_pass: Option<String>,
    /// Non-empty, distinct.
    pub vips: Vec<Ipv4Addr>,
    /// The 802.1Q VLAN (1..=4094) of each VIP that names one (`vips =
    /// [{ address = "…", vlan = 100 }]`); a VIP not here is untagged. The
    /// VIP is answered and forwarded only on its VLAN, and its gratuitous
    /// ARPs carry the tag.
    pub vlans: BTreeMap<Ipv4Addr, u16>,
    /// Answer for the VIPs with 00:00:5e:00:01:<vrid> (default false).
    pub virtual_mac: bool,
    pub garp: Garp,
    /// Checks whose state moves the priority.
    pub track: Vec<Track>,
    /// Called as `<notify> <master|backup|fault> <instance>`.
    pub notify: Option<PathBuf>,
    /// keepalived-style weight applied while every service on this
    /// instance's VIPs has no healthy backend (key `track_services =
    /// { weight = N }`): negative lowers the priority, 0 puts the instance in
    /// Fault; `None` (no key) lets the instance keep its role.
    pub track_services: Option<i32>,
    /// Instances naming the same group change state together (keepalived's
    /// `vrrp_sync_group`): one in Fault puts them all in Fault, one becoming
    /// master takes the others with it, one falling back takes the others back.
    pub sync_group: Option<String>,
    /// Version 3 only: the checksum form this instance sends (all three are
    /// accepted). Default [`V3Checksum::PseudoHeader`], what keepalived checks.
    pub v3_checksum: V3Checksum,
    /// 1-based line of the instance's table header.
    pub line: usize,
}

impl Vrrp {
    /// The VLAN id of `vip`: 0 when it names none.
    #[must_use]
    pub fn vlan(&self, vip: Ipv4Addr) -> u16 {
        self.vlans.get(&vip).copied().unwrap_or(0)
    }

    /// Whether `other` says the same as this instance, wherever in the file
    /// each was written: a reload that only moves a table restarts nothing.
    #[must_use]
    pub fn same_as(&self, other: &Self) -> bool {
        *self
            == Self {
                line: self.line,
                ..other.clone()
            }
    }
}

impl Check {
    /// Whether `other` says the same as this check, wherever in the file
    /// each was written.
    #[must_use]
    pub fn same_as(&self, other: &Self) -> bool {
        *self
            == Self {
                line: self.line,
                ..other.clone()
            }
    }
}

/// `[[vrrp]] v3_checksum`: how a version 3 advert's checksum is computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum V3Checksum {
    /// `"pseudo-header"`: with the IPv4 pseudo-header of the real
    /// destination (keepalived >= 1.3.7 and FRR; keepalived 2.2.7 accepts
    /// only this form on multicast).
    #[default]
    PseudoHeader,
    /// `"group-pseudo-header"`: pseudo-header with 224.0.0.18 even on
    /// unicast (keepalived <= 1.3.6, `old_unicast_checksum`).
    GroupPseudoHeader,
    /// `"message-only"`: the VRRP message alone, as RFC 9568 says for IPv4
    /// (Cisco, Juniper, keepalived `v3_checksum_as_v2`).
    MessageOnly,
}

/// `[[vrrp]] garp`: gratuitous ARPs sent on becoming master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Garp {
    /// How many per VIP on a transition, 0..=100 (default 5).
    pub count: u32,
    /// Gap between them (default 10ms).
    pub interval: Duration,
    /// While master, send one gratuitous ARP per VIP this often, so a host
    /// that picked the wrong MAC (after a split) is corrected; 0s disables.
    /// Default 30s.
    pub refresh: Duration,
}

impl Default for Garp {
    fn default() -> Self {
        Self {
            count: 5,
            interval: Duration::from_millis(10),
            refresh: Duration::from_secs(30),
        }
    }
}

/// One entry of `[[vrrp]] track`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// The `name` of a `[[check]]`.
    pub check: String,
    /// -254..=254, added to the priority while the check fails (negative) or
    /// passes (positive); 0 (the default, as in keepalived) puts the instance
    /// in FAULT while the check fails.
    pub weight: i32,
}

/// A configuration that cannot be used, and where.
///
/// Displays as `path:line: key: message`, leaving out what is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file, as given.
    pub path: PathBuf,
    /// 1-based line, when the error has a place in the file.
    pub line: Option<usize>,
    /// Dotted key such as `service[0].backends[2].address`.
    pub key: Option<String>,
    /// What is wrong and, where useful, what to do.
    pub message: String,
}

impl ConfigError {
    /// The process exit code for this error: 2, "usage or configuration".
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        2
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Generic => "generic",
        })
    }
}

impl fmt::Display for OnBackendDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Reset => "reset",
            Self::Rehash => "rehash",
            Self::Keep => "keep",
        })
    }
}
