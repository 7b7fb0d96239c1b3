//! The node's TOML configuration: parsing, defaults and validation.
//!
//! [`Config::parse`] turns the file (the README's "Configuration" section and
//! the doc of each type here) into plain typed values with every default filled
//! in, or into one [`ConfigError`] naming the file, the line, the dotted key
//! (`service[0].backends[2].address`) and what to do about it. Nothing here
//! touches the network or the kernel, so the agent, `vip-agent --check`, a
//! reload and the tests all go through this one function.
//!
//! Parsing is two steps. serde first fills private `Raw*` mirrors of the public
//! types, rejecting unknown keys; the values that later checks look at are kept
//! as [`toml::Spanned`] so an error can point at their line. toml attaches a
//! span to its own errors too, including those raised by the small value types
//! here (durations, addresses), so a type error gets its line for free; the
//! dotted key is then recovered by finding that span in `toml_edit`'s tree of
//! the document. The second step checks what one value alone cannot (ranges,
//! duplicates, references between tables, the data plane's limits) and builds
//! the public types.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::{Ipv4Addr, SocketAddr},
    ops::{Range, RangeInclusive},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{
    Deserialize, Deserializer,
    de::{self, Visitor},
};
use toml::Spanned;

pub use crate::check::{CheckKind, Probe, Schedule};

/// The pin root unless `[node] bpffs` names another.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";

/// Longest interface name the kernel accepts (`IFNAMSIZ` - 1).
const MAX_IFNAME: usize = 15;
/// Longest node name: it becomes a directory and a socket file name.
const MAX_NODE_NAME: usize = 32;
/// Backend weights are relative; a cap keeps the Maglev table balanced.
const MAX_WEIGHT: i64 = 1000;
/// keepalived's `auth_type PASS` carries at most 8 bytes.
const MAX_AUTH_PASS: usize = 8;
/// More gratuitous ARPs than this per transition is a misconfiguration.
const MAX_GARP_COUNT: i64 = 100;
/// Check defaults: a probe a second, two results in a row to change state.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
const CHECK_RISE: u32 = 2;
const CHECK_FALL: u32 = 2;

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
    /// Default [`Protocol::Tcp`].
    pub protocol: Protocol,
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

/// `[[service]] protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
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
    /// Virtual router id, 1..=255, unique on the node.
    pub vrid: u8,
    /// 1..=255 (default 100); 255 means this node owns the addresses.
    pub priority: u8,
    /// 3 (RFC 5798, default) or 2 (RFC 3768, for old keepalived peers).
    pub version: u8,
    /// Default 1s. Version 3: a multiple of 10ms, 10ms..=40.95s; version 2:
    /// whole seconds, 1s..=255s.
    pub advert_interval: Duration,
    /// Default true.
    pub preempt: bool,
    /// Default 0s.
    pub preempt_delay: Duration,
    /// Empty: multicast to 224.0.0.18.
    pub unicast_peers: Vec<Ipv4Addr>,
    /// Version 2 only: keepalived `auth_type PASS`, 1..=8 bytes.
    pub auth_pass: Option<String>,
    /// Non-empty, distinct.
    pub vips: Vec<Ipv4Addr>,
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

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
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

impl Config {
    /// Reads and parses the file at `path`.
    ///
    /// Fails with a [`ConfigError`] naming `path` when the file cannot be read
    /// or is not a valid configuration.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            line: None,
            key: None,
            message: format!(
                "cannot read the configuration: {e}; check the path and its permissions"
            ),
        })?;
        Self::parse(&text, path)
    }

    /// Parses configuration text; `path` only appears in error messages.
    ///
    /// Fails with the first problem found, located by line and dotted key.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let src = Source { text, path };
        let raw: RawConfig = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
        src.build(raw)
    }
}

// ---------------------------------------------------------------------------
// Raw mirrors, filled by serde.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: RawNode,
    #[serde(default)]
    vrrp: Vec<Spanned<RawVrrp>>,
    #[serde(default)]
    check: Vec<Spanned<RawCheck>>,
    #[serde(default)]
    service: Vec<Spanned<RawService>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    interface: Spanned<String>,
    name: Spanned<String>,
    bpffs: Option<Spanned<PathBuf>>,
    control_socket: Option<Spanned<PathBuf>>,
    metrics: Option<Addr>,
    xdp_mode: Option<XdpMode>,
    dead_time: Option<Spanned<Dur>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVrrp {
    name: Spanned<String>,
    vrid: Spanned<Int>,
    priority: Option<Spanned<Int>>,
    version: Option<Spanned<Int>>,
    advert_interval: Option<Spanned<Dur>>,
    preempt: Option<bool>,
    preempt_delay: Option<Dur>,
    #[serde(default)]
    unicast_peers: Vec<Spanned<Ip>>,
    auth_pass: Option<Spanned<String>>,
    vips: Spanned<Vec<Spanned<Ip>>>,
    virtual_mac: Option<bool>,
    garp: Option<RawGarp>,
    #[serde(default)]
    track: Vec<Spanned<RawTrack>>,
    notify: Option<Spanned<PathBuf>>,
    track_services: Option<RawTrackServices>,
    sync_group: Option<Spanned<String>>,
    v3_checksum: Option<Spanned<V3Checksum>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGarp {
    count: Option<Spanned<Int>>,
    interval: Option<Dur>,
    refresh: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrackServices {
    weight: Option<Spanned<Int>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrack {
    check: Spanned<String>,
    weight: Option<Spanned<Int>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    name: Spanned<String>,
    kind: Spanned<CheckKind>,
    command: Option<Spanned<String>>,
    interval: Option<Spanned<Dur>>,
    timeout: Option<Spanned<Dur>>,
    rise: Option<Spanned<Int>>,
    fall: Option<Spanned<Int>>,
    address: Option<Spanned<Ip>>,
    port: Option<Spanned<Int>>,
    path: Option<Spanned<String>>,
    expect_status: Option<Spanned<Int>>,
    expect_body: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    vhost: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    vip: Spanned<Ip>,
    port: Spanned<Int>,
    protocol: Option<Protocol>,
    check: Option<RawServiceCheck>,
    on_backend_down: Option<Spanned<OnBackendDown>>,
    backends: Option<Vec<Spanned<RawBackend>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServiceCheck {
    kind: Spanned<CheckKind>,
    command: Option<Spanned<String>>,
    interval: Option<Spanned<Dur>>,
    timeout: Option<Spanned<Dur>>,
    rise: Option<Spanned<Int>>,
    fall: Option<Spanned<Int>>,
    port: Option<Spanned<Int>>,
    path: Option<Spanned<String>>,
    expect_status: Option<Spanned<Int>>,
    expect_body: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    vhost: Option<Spanned<String>>,
}

/// The keys that say what a probe sends and expects, shared by `[[check]]`
/// and a service `check`.
struct RawProbeKeys {
    path: Option<Spanned<String>>,
    expect_status: Option<Spanned<Int>>,
    expect_body: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    vhost: Option<Spanned<String>>,
}

/// The keys that say when a check probes, shared likewise.
#[derive(Clone, Copy)]
struct RawSchedule<'a> {
    interval: Option<&'a Spanned<Dur>>,
    timeout: Option<&'a Spanned<Dur>>,
    rise: Option<&'a Spanned<Int>>,
    fall: Option<&'a Spanned<Int>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    address: Spanned<Ip>,
    weight: Option<Spanned<Int>>,
}

// ---------------------------------------------------------------------------
// Value types whose own errors say what to write instead.

/// A TOML integer, range-checked later so the message can give the range.
struct Int(i64);

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
struct Dur(Duration);

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
                humantime::parse_duration(t).map(Dur).map_err(|e| {
                    E::custom(format!(
                        "{v:?} is not a duration ({e}); write it like \"20ms\", \"1s\", \"1.5s\" or \"2m\""
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

fn no_unit<E: de::Error>(number: &str) -> E {
    E::custom(format!(
        "the duration {number} has no unit; add one, as a string: \"{number}s\" or \"{number}ms\""
    ))
}

/// An IPv4 address written as a string.
struct Ip(Ipv4Addr);

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
struct Addr(SocketAddr);

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

// ---------------------------------------------------------------------------
// Locating toml's own errors.

/// The dotted key (`service[0].backends[2].address`) of the innermost key or
/// value whose span covers `at`, read from `toml_edit`'s view of the document:
/// toml's errors carry a span but not the key path. `None` when the text is
/// not valid TOML or nothing but the root covers `at`.
fn key_at(text: &str, at: &Range<usize>) -> Option<String> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    in_table(doc.as_table(), at, "")
}

fn covers(span: Option<Range<usize>>, at: &Range<usize>) -> bool {
    span.is_some_and(|s| s.start <= at.start && at.end <= s.end)
}

fn in_table(table: &toml_edit::Table, at: &Range<usize>, path: &str) -> Option<String> {
    table
        .iter()
        .find_map(|(name, _)| {
            let (key, item) = table.get_key_value(name)?;
            let path = join(path, name);
            if covers(key.span(), at) {
                return Some(path);
            }
            in_item(item, at, &path)
        })
        // Implicit tables (`[a.b]` makes `a`) have no span and never match.
        .or_else(|| (!path.is_empty() && covers(table.span(), at)).then(|| path.to_owned()))
}

fn in_item(item: &toml_edit::Item, at: &Range<usize>, path: &str) -> Option<String> {
    match item {
        toml_edit::Item::None => None,
        toml_edit::Item::Value(v) => in_value(v, at, path),
        toml_edit::Item::Table(t) => in_table(t, at, path),
        // No span of its own: the error lies in one of its tables.
        toml_edit::Item::ArrayOfTables(tables) => tables
            .iter()
            .enumerate()
            .find_map(|(i, t)| in_table(t, at, &format!("{path}[{i}]"))),
    }
}

fn in_value(value: &toml_edit::Value, at: &Range<usize>, path: &str) -> Option<String> {
    let inner = match value {
        toml_edit::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| in_value(v, at, &format!("{path}[{i}]"))),
        toml_edit::Value::InlineTable(table) => table.iter().find_map(|(name, _)| {
            let (key, item) = table.get_key_value(name)?;
            let path = join(path, name);
            if covers(key.span(), at) {
                return Some(path);
            }
            in_item(item, at, &path)
        }),
        _ => None,
    };
    inner.or_else(|| covers(value.span(), at).then(|| path.to_owned()))
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// The name in a serde message such as "missing field `vip`".
fn quoted_name<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    rest.split_once('`').map(|(name, _)| name)
}

// ---------------------------------------------------------------------------
// Validation.

/// The text being parsed, for turning byte offsets into errors.
struct Source<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Source<'_> {
    /// The 1-based line holding byte `offset`.
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        // Lines are the pieces between newlines.
        self.text.as_bytes()[..end].split(|&b| b == b'\n').count()
    }

    fn error(&self, at: usize, key: &str, message: String) -> ConfigError {
        ConfigError {
            path: self.path.to_owned(),
            line: Some(self.line(at)),
            key: Some(key.to_owned()),
            message,
        }
    }

    /// toml's error, with its line and the dotted key it concerns.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
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

    fn build(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let node = self.node(raw.node)?;

        let mut checks = Vec::with_capacity(raw.check.len());
        let mut check_names: HashMap<String, (usize, usize)> = HashMap::new();
        for (i, c) in raw.check.into_iter().enumerate() {
            let name_at = c.get_ref().name.span().start;
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
            if let Some((j, line)) = vrids.get(&inst.vrid) {
                return Err(self.error(
                    vrid_at,
                    &format!("vrrp[{i}].vrid"),
                    format!(
                        "vrid {} is already used by vrrp[{j}] (line {line}); each instance on an interface needs its own",
                        inst.vrid
                    ),
                ));
            }
            names.insert(inst.name.clone(), (i, inst.line));
            vrids.insert(inst.vrid, (i, inst.line));
            vrrp.push(inst);
        }

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

        Ok(Node {
            interface,
            name,
            bpffs,
            control_socket,
            metrics: raw.metrics.map(|a| a.0),
            xdp_mode: raw.xdp_mode.unwrap_or_default(),
            dead_time,
        })
    }

    fn check(&self, i: usize, raw: Spanned<RawCheck>) -> Result<Check, ConfigError> {
        let line = self.line(raw.span().start);
        let table_at = raw.span().start;
        let raw = raw.into_inner();
        let key = |k: &str| format!("check[{i}].{k}");
        let name = self.non_empty(raw.name, &key("name"), "the check name")?;
        let kind = *raw.kind.get_ref();
        let command = self.command(kind, raw.command, table_at, &key("command"), "")?;
        let schedule = self.schedule(
            RawSchedule {
                interval: raw.interval.as_ref(),
                timeout: raw.timeout.as_ref(),
                rise: raw.rise.as_ref(),
                fall: raw.fall.as_ref(),
            },
            &format!("check[{i}]"),
        )?;
        let (address, port) =
            self.check_target(kind, raw.address, raw.port.as_ref(), table_at, i)?;
        let probe = self.probe(
            kind,
            command,
            RawProbeKeys {
                path: raw.path,
                expect_status: raw.expect_status,
                expect_body: raw.expect_body,
                user: raw.user,
                password: raw.password,
                vhost: raw.vhost,
            },
            &format!("check[{i}]"),
        )?;
        Ok(Check {
            name,
            probe,
            address,
            port,
            schedule,
            line,
        })
    }

    /// The `command` of a check of `kind`: required for `exec` (the error
    /// then points at `missing_at`), refused for the others. `hint` is added
    /// to the message for a missing command.
    fn command(
        &self,
        kind: CheckKind,
        command: Option<Spanned<String>>,
        missing_at: usize,
        key: &str,
        hint: &str,
    ) -> Result<Option<String>, ConfigError> {
        match (kind, command) {
            (CheckKind::Exec, None) => Err(self.error(
                missing_at,
                key,
                format!(
                    "kind = \"exec\" needs a command to run; add command = \"/path/to/script\"{hint}"
                ),
            )),
            (CheckKind::Exec, Some(c)) => Ok(Some(self.non_empty(c, key, "the command")?)),
            (_, Some(c)) => Err(self.error(
                c.span().start,
                key,
                format!(
                    "only kind = \"exec\" runs a command and this check is kind = \"{kind}\"; \
                     remove the command or change the kind"
                ),
            )),
            (_, None) => Ok(None),
        }
    }

    /// `address` and `port` of `check[i]`: what a `tcp`, `amqp` or `http`
    /// check probes; an `exec` check has neither.
    fn check_target(
        &self,
        kind: CheckKind,
        address: Option<Spanned<Ip>>,
        port: Option<&Spanned<Int>>,
        table_at: usize,
        i: usize,
    ) -> Result<(Option<Ipv4Addr>, Option<u16>), ConfigError> {
        let key = |k: &str| format!("check[{i}].{k}");
        if kind == CheckKind::Exec {
            let refuse = |at: usize, k: &str| {
                self.error(
                    at,
                    &key(k),
                    format!(
                        "an exec check runs its command and probes no {k}; remove {k}, or use \
                         kind = \"tcp\", \"amqp\" or \"http\" to probe an address"
                    ),
                )
            };
            if let Some(a) = &address {
                return Err(refuse(a.span().start, "address"));
            }
            if let Some(p) = port {
                return Err(refuse(p.span().start, "port"));
            }
            return Ok((None, None));
        }
        let Some(address) = address else {
            return Err(self.error(
                table_at,
                &key("address"),
                format!(
                    "kind = \"{kind}\" needs the address to probe; add address = \"127.0.0.1\" \
                     (for the broker on this node)"
                ),
            ));
        };
        let port = match (port, kind) {
            (Some(p), _) => self.int(p, &key("port"), 1..=65535, "a port")?,
            (None, kind) if kind.default_port().is_some() => {
                kind.default_port().expect("just checked")
            }
            (None, _) => {
                return Err(self.error(
                    table_at,
                    &key("port"),
                    format!("kind = \"{kind}\" needs the port to probe; add port = 5672, say"),
                ));
            }
        };
        Ok((Some(address.into_inner().0), Some(port)))
    }

    /// `expect_body` of an http check: not empty.
    fn probe_body(
        &self,
        body: Option<Spanned<String>>,
        key: &str,
    ) -> Result<Option<String>, ConfigError> {
        Ok(match body {
            Some(b) if b.get_ref().is_empty() => {
                return Err(self.error(
                    b.span().start,
                    key,
                    "is empty, which every body contains; remove it or give the text to look for"
                        .to_owned(),
                ));
            }
            b => b.map(Spanned::into_inner),
        })
    }

    /// `path` of an http check: absolute, no spaces; `/` by default.
    fn probe_path(
        &self,
        path: Option<Spanned<String>>,
        kind: CheckKind,
        key: &str,
    ) -> Result<Option<String>, ConfigError> {
        Ok(match path {
            Some(p) if !p.get_ref().starts_with('/') => {
                return Err(self.error(
                    p.span().start,
                    key,
                    format!("{:?} must start with '/'", p.get_ref()),
                ));
            }
            Some(p)
                if p.get_ref()
                    .contains(|c: char| c.is_whitespace() || c.is_control()) =>
            {
                return Err(self.error(
                    p.span().start,
                    key,
                    format!(
                        "{:?} contains a space or a control character; percent-encode it (%20)",
                        p.get_ref()
                    ),
                ));
            }
            Some(p) => Some(p.into_inner()),
            None => (kind == CheckKind::Http).then(|| "/".to_owned()),
        })
    }

    /// The probe of a check of `kind` from its keys (`key` is the check's
    /// own dotted key; `command` is validated already): each key is refused
    /// where it means nothing for the kind, rather than silently ignored, and
    /// the defaults are filled in.
    fn probe(
        &self,
        kind: CheckKind,
        command: Option<String>,
        raw: RawProbeKeys,
        key: &str,
    ) -> Result<Probe, ConfigError> {
        let sub = |k: &str| format!("{key}.{k}");
        self.refuse_foreign_keys(kind, &raw, key)?;
        match (&raw.user, &raw.password) {
            (Some(u), None) => {
                return Err(self.error(
                    u.span().start,
                    &sub("password"),
                    "a user needs a password too".to_owned(),
                ));
            }
            (None, Some(p)) => {
                return Err(self.error(
                    p.span().start,
                    &sub("user"),
                    "a password needs a user too".to_owned(),
                ));
            }
            _ => {}
        }
        let user = raw
            .user
            .map(|u| self.credential(u, kind, &sub("user"), true))
            .transpose()?;
        let password = raw
            .password
            .map(|p| self.credential(p, kind, &sub("password"), false))
            .transpose()?;
        let vhost = match raw.vhost {
            Some(v) if user.is_none() => {
                return Err(self.error(
                    v.span().start,
                    &sub("vhost"),
                    "the check opens a vhost only after logging in; add user and password, \
                     or remove vhost"
                        .to_owned(),
                ));
            }
            Some(v) if v.get_ref().is_empty() || v.get_ref().len() > 255 => {
                return Err(self.error(
                    v.span().start,
                    &sub("vhost"),
                    "must be 1 to 255 bytes (AMQP carries it as a short string), such as \"/\""
                        .to_owned(),
                ));
            }
            v => v.map(Spanned::into_inner),
        };
        let path = self.probe_path(raw.path, kind, &sub("path"))?;
        let expect_status = match &raw.expect_status {
            Some(v) => Some(self.int(v, &sub("expect_status"), 100..=599, "an HTTP status")?),
            None => (kind == CheckKind::Http).then_some(200),
        };
        let expect_body = self.probe_body(raw.expect_body, &sub("expect_body"))?;
        let login = user.zip(password);
        Ok(match kind {
            CheckKind::Tcp => Probe::Tcp,
            CheckKind::Amqp => Probe::Amqp {
                login: login.map(|(u, p)| (u, p, vhost.unwrap_or_else(|| "/".to_owned()))),
            },
            CheckKind::Http => Probe::Http {
                path: path.unwrap_or_else(|| "/".to_owned()),
                expect_status: expect_status.unwrap_or(200),
                expect_body,
                auth: login,
            },
            CheckKind::Exec => Probe::Exec {
                command: command.unwrap_or_default(),
            },
        })
    }

    /// Refuses a probe key that a check of `kind` does not use
    /// ([`CheckKind::keys`]), naming the kinds that do.
    fn refuse_foreign_keys(
        &self,
        kind: CheckKind,
        raw: &RawProbeKeys,
        key: &str,
    ) -> Result<(), ConfigError> {
        let given = [
            ("path", raw.path.as_ref().map(Spanned::span)),
            (
                "expect_status",
                raw.expect_status.as_ref().map(Spanned::span),
            ),
            ("expect_body", raw.expect_body.as_ref().map(Spanned::span)),
            ("user", raw.user.as_ref().map(Spanned::span)),
            ("password", raw.password.as_ref().map(Spanned::span)),
            ("vhost", raw.vhost.as_ref().map(Spanned::span)),
        ];
        for (name, span) in given {
            let Some(span) = span else { continue };
            if kind.keys().contains(&name) {
                continue;
            }
            let users: Vec<String> = CheckKind::ALL
                .iter()
                .filter(|k| k.keys().contains(&name))
                .map(|k| format!("\"{k}\""))
                .collect();
            return Err(self.error(
                span.start,
                &format!("{key}.{name}"),
                format!(
                    "only a kind = {} check uses {name}; this one is \"{kind}\"",
                    users.join(" or ")
                ),
            ));
        }
        Ok(())
    }

    /// `interval`, `timeout`, `rise` and `fall` of a check (`key` is its
    /// dotted key), defaults filled in.
    fn schedule(&self, raw: RawSchedule<'_>, key: &str) -> Result<Schedule, ConfigError> {
        let sub = |k: &str| format!("{key}.{k}");
        Ok(Schedule {
            interval: self.positive(raw.interval, CHECK_INTERVAL, &sub("interval"))?,
            timeout: self.positive(raw.timeout, CHECK_TIMEOUT, &sub("timeout"))?,
            rise: self.times(raw.rise, CHECK_RISE, &sub("rise"))?,
            fall: self.times(raw.fall, CHECK_FALL, &sub("fall"))?,
        })
    }

    /// A login user or password, refusing what the wire cannot carry: a NUL
    /// ends a PLAIN field, and a ':' in an HTTP basic-auth user splits it.
    fn credential(
        &self,
        v: Spanned<String>,
        kind: CheckKind,
        key: &str,
        is_user: bool,
    ) -> Result<String, ConfigError> {
        let s = v.get_ref();
        if is_user && s.is_empty() {
            return Err(self.error(v.span().start, key, "the user is empty".to_owned()));
        }
        if s.contains('\0') {
            return Err(self.error(
                v.span().start,
                key,
                "contains a NUL character, which a login cannot carry".to_owned(),
            ));
        }
        if is_user && kind == CheckKind::Http && s.contains(':') {
            return Err(self.error(
                v.span().start,
                key,
                format!("{s:?} contains ':', which HTTP basic auth cannot carry in a user"),
            ));
        }
        Ok(v.into_inner())
    }

    fn vrrp(
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
        let vips = self.distinct(raw.vips.into_inner(), &key("vips"), "VIP")?;
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
            vrid,
            priority,
            version,
            advert_interval,
            preempt: raw.preempt.unwrap_or(true),
            preempt_delay: raw.preempt_delay.map_or(Duration::ZERO, |d| d.0),
            unicast_peers,
            auth_pass,
            vips,
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
    fn garp(&self, garp: Option<RawGarp>, i: usize) -> Result<Garp, ConfigError> {
        let key = |k: &str| format!("vrrp[{i}].{k}");
        Ok(match garp {
            None => Garp::default(),
            Some(g) => Garp {
                count: self.int_or(
                    g.count.as_ref(),
                    Garp::default().count,
                    &key("garp.count"),
                    0..=MAX_GARP_COUNT,
                    "the gratuitous ARP count",
                )?,
                interval: g.interval.map_or(Garp::default().interval, |d| d.0),
                refresh: g.refresh.map_or(Garp::default().refresh, |d| d.0),
            },
        })
    }

    /// `track_services`, `sync_group` and `v3_checksum` of `vrrp[i]`.
    fn vrrp_extras(
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

    fn advert_interval(
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

    fn auth_pass(
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

    fn track(
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
    fn distinct(
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

    fn services(&self, raw: Vec<Spanned<RawService>>) -> Result<Vec<Service>, ConfigError> {
        let mut services: Vec<Service> = Vec::with_capacity(raw.len());
        let mut seen: HashMap<(Ipv4Addr, u16, Protocol), usize> = HashMap::new();
        let mut total_backends = 0;
        for (i, s) in raw.into_iter().enumerate() {
            let at = s.span().start;
            if i >= limit(vip_common::MAX_SERVICES) {
                return Err(self.error(
                    at,
                    &format!("service[{i}]"),
                    format!(
                        "a node serves at most {} services",
                        vip_common::MAX_SERVICES
                    ),
                ));
            }
            let svc = self.service(i, s)?;
            if let Some(j) = seen.insert((svc.vip, svc.port, svc.protocol), i) {
                return Err(self.error(
                    at,
                    &format!("service[{i}]"),
                    format!(
                        "{}:{}/{} is already defined by service[{j}] (line {}); merge their backends",
                        svc.vip, svc.port, svc.protocol, services[j].line
                    ),
                ));
            }
            total_backends += svc.backends.len();
            if total_backends > limit(vip_common::MAX_BACKENDS) {
                return Err(self.error(
                    at,
                    &format!("service[{i}].backends"),
                    format!(
                        "the services have {total_backends} backends so far, but a node holds at most {}",
                        vip_common::MAX_BACKENDS
                    ),
                ));
            }
            services.push(svc);
        }
        Ok(services)
    }

    fn service(&self, i: usize, raw: Spanned<RawService>) -> Result<Service, ConfigError> {
        let at = raw.span().start;
        let raw = raw.into_inner();
        let key = |k: &str| format!("service[{i}].{k}");
        let port = self.int(&raw.port, &key("port"), 1..=65535, "a port")?;
        let protocol = raw.protocol.unwrap_or_default();
        let check = raw
            .check
            .map(|c| self.service_check(c, &key("check")))
            .transpose()?;
        let on_backend_down =
            self.on_backend_down(raw.on_backend_down, protocol, &key("on_backend_down"))?;

        let raw_backends = raw.backends.unwrap_or_default();
        if raw_backends.is_empty() {
            return Err(self.error(
                at,
                &key("backends"),
                "a service needs at least one backend: backends = [{ address = \"10.0.0.11\" }]"
                    .to_owned(),
            ));
        }
        if raw_backends.len() > limit(vip_common::MAX_BACKENDS_PER_SERVICE) {
            return Err(self.error(
                raw_backends[limit(vip_common::MAX_BACKENDS_PER_SERVICE)]
                    .span()
                    .start,
                &key("backends"),
                format!(
                    "{} backends, but a service has at most {}",
                    raw_backends.len(),
                    vip_common::MAX_BACKENDS_PER_SERVICE
                ),
            ));
        }
        let mut seen: HashMap<Ipv4Addr, usize> = HashMap::new();
        let mut backends = Vec::with_capacity(raw_backends.len());
        for (b, raw_b) in raw_backends.into_iter().enumerate() {
            let raw_b = raw_b.into_inner();
            let address = raw_b.address.get_ref().0;
            let addr_at = raw_b.address.span().start;
            if let Some(first) = seen.insert(address, self.line(addr_at)) {
                return Err(self.error(
                    addr_at,
                    &key(&format!("backends[{b}].address")),
                    format!(
                        "backend {address} is listed twice in this service (first at line {first})"
                    ),
                ));
            }
            let weight = self.int_or(
                raw_b.weight.as_ref(),
                1,
                &key(&format!("backends[{b}].weight")),
                0..=MAX_WEIGHT,
                "a weight (0 drains the backend)",
            )?;
            backends.push(BackendConfig { address, weight });
        }

        Ok(Service {
            vip: raw.vip.get_ref().0,
            port,
            protocol,
            check,
            on_backend_down,
            backends,
            line: self.line(at),
        })
    }

    fn service_check(&self, raw: RawServiceCheck, key: &str) -> Result<ServiceCheck, ConfigError> {
        let sub = |k: &str| format!("{key}.{k}");
        let kind = *raw.kind.get_ref();
        let command = self.command(
            kind,
            raw.command,
            raw.kind.span().start,
            &sub("command"),
            " (it runs once per backend, with VIP_BACKEND_ADDRESS and VIP_BACKEND_PORT set)",
        )?;
        let schedule = self.schedule(
            RawSchedule {
                interval: raw.interval.as_ref(),
                timeout: raw.timeout.as_ref(),
                rise: raw.rise.as_ref(),
                fall: raw.fall.as_ref(),
            },
            key,
        )?;
        let port = raw
            .port
            .as_ref()
            .map(|p| self.int(p, &sub("port"), 1..=65535, "a port"))
            .transpose()?;
        let probe = self.probe(
            kind,
            command,
            RawProbeKeys {
                path: raw.path,
                expect_status: raw.expect_status,
                expect_body: raw.expect_body,
                user: raw.user,
                password: raw.password,
                vhost: raw.vhost,
            },
            key,
        )?;
        Ok(ServiceCheck {
            probe,
            schedule,
            port,
        })
    }

    /// `on_backend_down` of a service: UDP has no RST to send.
    fn on_backend_down(
        &self,
        v: Option<Spanned<OnBackendDown>>,
        protocol: Protocol,
        key: &str,
    ) -> Result<OnBackendDown, ConfigError> {
        match (v, protocol) {
            (None, Protocol::Tcp) => Ok(OnBackendDown::Reset),
            (None, Protocol::Udp) => Ok(OnBackendDown::Rehash),
            (Some(v), Protocol::Udp) if *v.get_ref() == OnBackendDown::Reset => Err(self.error(
                v.span().start,
                key,
                "\"reset\" answers with a TCP RST, and UDP has no RST; use \"rehash\" \
                 (the default for UDP) or \"keep\""
                    .to_owned(),
            )),
            (Some(v), _) => Ok(v.into_inner()),
        }
    }
}

/// A data-plane limit as a count.
fn limit(max: u32) -> usize {
    usize::try_from(max).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The project's reference configuration example, verbatim.
    const EXAMPLE: &str = r#"[node]
interface = "eth0"              # XDP attaches here; VRRP runs here
name = "lb1"                    # pins live under <bpffs>/vip/<name>
# bpffs = "/sys/fs/bpf"         # pin root; mounted by the agent if it is not a bpffs yet
# control_socket = "/run/vip/lb1.sock"
# metrics = "127.0.0.1:9650"

[[vrrp]]
name = "VI_1"
vrid = 51
priority = 100                  # 1..=254; 255 = address owner
version = 3                     # 3 (default) or 2 for old keepalived peers
advert_interval = "20ms"         # v3: multiples of 10ms; v2: whole seconds
preempt = true
preempt_delay = "0s"
unicast_peers = ["10.99.0.3"]   # omit for multicast 224.0.0.18
auth_pass = "1111"              # v2 only (keepalived auth_type PASS)
vips = ["10.99.0.100"]
virtual_mac = false             # true: answer with 00:00:5e:00:01:<vrid>
garp = { count = 5, interval = "10ms", refresh = "0s" }
track = [{ check = "local-broker", weight = -60 }]
notify = "/etc/vip/notify.sh"   # called as: notify.sh <master|backup|fault> <instance>

[[check]]                        # a named node-level check (keepalived vrrp_script)
name = "local-broker"
kind = "exec"                    # exec | tcp | amqp | http
command = "/usr/local/bin/check-rabbit"
interval = "500ms"
rise = 2
fall = 2

[[service]]
vip = "10.99.0.100"
port = 5672
protocol = "tcp"
check = { kind = "amqp", interval = "200ms", timeout = "300ms", rise = 2, fall = 2 }
backends = [
  { address = "10.99.0.11" },
  { address = "10.99.0.12", weight = 2 },
  { address = "10.99.0.13" },
]
"#;

    /// Lines 1-3.
    const NODE: &str = "[node]\ninterface = \"eth0\"\nname = \"lb1\"\n";
    /// Lines 4-7 after [`NODE`].
    const SERVICE: &str =
        "[[service]]\nvip = \"10.0.0.100\"\nport = 80\nbackends = [{ address = \"10.0.0.11\" }]\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("vip.toml"))
    }

    fn ok(text: &str) -> Config {
        parse(text).unwrap_or_else(|e| panic!("expected a valid config, got: {e}"))
    }

    /// Asserts that `text` fails at `line` on `key` with a message containing `needle`.
    #[track_caller]
    fn fails(text: &str, line: usize, key: &str, needle: &str) -> ConfigError {
        let e = match parse(text) {
            Ok(c) => panic!("expected an error at {key}, parsed: {c:?}"),
            Err(e) => e,
        };
        let shown = e.to_string();
        assert_eq!(e.line, Some(line), "line of: {shown}");
        assert_eq!(e.key.as_deref(), Some(key), "key of: {shown}");
        assert!(shown.contains(&format!(":{line}: {key}: ")), "{shown}");
        assert!(
            shown.contains(needle),
            "{shown:?} should contain {needle:?}"
        );
        e
    }

    /// A check `c` (line 1, as an inline table, so that it fits on one
    /// line), [`NODE`] (lines 2-4) and a vrrp instance (from line 7) whose
    /// extra keys start at line 11.
    fn vrrp_with(extra: &str) -> String {
        format!(
            "check = [{{ name = \"c\", kind = \"tcp\", address = \"127.0.0.1\", port = 5672 }}]\n\
             {NODE}# lines 5 and 6 are left\n# for the vrrp tests' line numbers\n\
             [[vrrp]]\nname = \"VI_1\"\nvrid = 51\nvips = [\"10.0.0.100\"]\n{extra}"
        )
    }

    #[test]
    fn the_documented_example_parses() {
        let c = ok(EXAMPLE);
        assert_eq!(c.node.interface, "eth0");
        assert_eq!(c.node.name, "lb1");
        assert_eq!(c.node.bpffs, PathBuf::from("/sys/fs/bpf"));
        assert_eq!(c.node.control_socket, PathBuf::from("/run/vip/lb1.sock"));
        let v = &c.vrrp[0];
        assert_eq!((v.vrid, v.priority, v.version), (51, 100, 3));
        assert_eq!(v.advert_interval, Duration::from_millis(20));
        assert_eq!(v.unicast_peers, [Ipv4Addr::new(10, 99, 0, 3)]);
        assert_eq!(v.vips, [Ipv4Addr::new(10, 99, 0, 100)]);
        assert_eq!(
            v.garp,
            Garp {
                count: 5,
                interval: Duration::from_millis(10),
                refresh: Duration::ZERO
            }
        );
        assert_eq!(
            v.track,
            [Track {
                check: "local-broker".into(),
                weight: -60
            }]
        );
        assert_eq!(v.notify.as_deref(), Some(Path::new("/etc/vip/notify.sh")));
        assert_eq!(v.line, 8);
        assert_eq!(c.checks[0].probe.kind(), CheckKind::Exec);
        assert_eq!(c.checks[0].schedule.interval, Duration::from_millis(500));
        assert_eq!(c.checks[0].line, 24);
        let s = &c.services[0];
        assert_eq!(
            (s.vip, s.port, s.protocol),
            (Ipv4Addr::new(10, 99, 0, 100), 5672, Protocol::Tcp)
        );
        assert_eq!(s.line, 32);
        let check = s.check.as_ref().unwrap();
        assert_eq!(check.probe.kind(), CheckKind::Amqp);
        assert_eq!(check.schedule.timeout, Duration::from_millis(300));
        assert_eq!(s.backends.len(), 3);
        assert_eq!(
            s.backends[1],
            BackendConfig {
                address: Ipv4Addr::new(10, 99, 0, 12),
                weight: 2
            }
        );
        assert_eq!(s.backends[0].weight, 1);
    }

    #[test]
    fn auth_pass_is_kept_for_version_2_only() {
        // The documented example pairs auth_pass with version 3; like
        // keepalived, a v3 instance ignores it (with a warning).
        assert_eq!(ok(EXAMPLE).vrrp[0].auth_pass, None);
        let v2 = EXAMPLE
            .replace("version = 3 ", "version = 2 ")
            .replace("\"20ms\"", "\"1s\"");
        assert_eq!(ok(&v2).vrrp[0].auth_pass.as_deref(), Some("1111"));
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let c = ok(&format!("{NODE}{SERVICE}"));
        assert_eq!(c.node.bpffs, PathBuf::from(DEFAULT_BPFFS));
        assert_eq!(c.node.control_socket, PathBuf::from("/run/vip/lb1.sock"));
        assert_eq!(
            (c.node.metrics, c.node.xdp_mode, c.node.dead_time),
            (None, XdpMode::Auto, None)
        );
        assert!(c.vrrp.is_empty() && c.checks.is_empty());
        let s = &c.services[0];
        assert_eq!(
            (s.protocol, s.check.as_ref(), s.line),
            (Protocol::Tcp, None, 4)
        );
        assert_eq!(s.backends[0].weight, 1);

        let c = ok(&vrrp_with(
            "[[service]]\nvip = \"10.0.0.100\"\nport = 80\nbackends = [{ address = \"10.0.0.11\" }]\ncheck = { kind = \"http\" }\n",
        ));
        let v = &c.vrrp[0];
        assert_eq!(
            (v.priority, v.version, v.preempt, v.virtual_mac),
            (100, 3, true, false)
        );
        assert_eq!(
            (v.advert_interval, v.preempt_delay),
            (Duration::from_secs(1), Duration::ZERO)
        );
        assert_eq!(
            (v.garp.clone(), v.auth_pass.as_ref(), v.notify.as_ref()),
            (Garp::default(), None, None)
        );
        let defaults = Schedule {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 2,
        };
        assert_eq!(c.checks[0].schedule, defaults);
        let sc = c.services[0].check.clone().unwrap();
        assert_eq!(sc.schedule, defaults);
        assert_eq!(
            (sc.probe, sc.port),
            (
                Probe::Http {
                    path: "/".into(),
                    expect_status: 200,
                    expect_body: None,
                    auth: None
                },
                None
            )
        );
    }

    #[test]
    fn node_options_parse() {
        let c = ok(&format!(
            "{NODE}bpffs = \"/mnt/bpf\"\ncontrol_socket = \"/tmp/x.sock\"\nmetrics = \"127.0.0.1:9650\"\nxdp_mode = \"generic\"\ndead_time = \"1.5s\"\n"
        ));
        assert_eq!(c.node.bpffs, PathBuf::from("/mnt/bpf"));
        assert_eq!(c.node.control_socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(c.node.metrics, Some("127.0.0.1:9650".parse().unwrap()));
        assert_eq!(c.node.xdp_mode, XdpMode::Generic);
        assert_eq!(c.node.dead_time, Some(Duration::from_millis(1500)));
        fails(
            &format!("{NODE}xdp_mode = \"turbo\"\n"),
            4,
            "node.xdp_mode",
            "`native`",
        );
        fails(
            &format!("{NODE}metrics = \"localhost\"\n"),
            4,
            "node.metrics",
            "is not an address:port",
        );
        fails(
            &format!("{NODE}dead_time = \"0s\"\n"),
            4,
            "node.dead_time",
            "0s",
        );
    }

    #[test]
    fn display_has_path_line_key_and_message() {
        let text = format!("{NODE}{SERVICE}").replace("10.0.0.11", "10.0.0.300");
        let e = parse(&text).unwrap_err();
        assert_eq!(
            e.to_string(),
            "vip.toml:7: service[0].backends[0].address: \"10.0.0.300\" is not an IPv4 address"
        );
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        fails("[nodes]\ninterface = \"eth0\"\n", 1, "nodes", "unknown key");
        fails(
            &format!("{NODE}colour = \"blue\"\n"),
            4,
            "node.colour",
            "expected",
        );
        let text =
            format!("{NODE}{SERVICE}").replace("\"10.0.0.11\" }", "\"10.0.0.11\", wieght = 2 }");
        fails(&text, 7, "service[0].backends[0].wieght", "unknown key");
        fails(
            &vrrp_with("garp = { count = 1, burst = 2 }\n"),
            11,
            "vrrp[0].garp.burst",
            "unknown key",
        );
        fails(
            &vrrp_with("garp.burst = 2\n"),
            11,
            "vrrp[0].garp.burst",
            "unknown key",
        );
        fails(
            &vrrp_with("[vrrp.garp]\nburst = 2\n"),
            12,
            "vrrp[0].garp.burst",
            "unknown key",
        );
        fails(
            &vrrp_with("[vrrp.garb]\ncount = 2\n"),
            11,
            "vrrp[0].garb",
            "unknown key",
        );
        fails(
            &vrrp_with("[[vrrp.gorp]]\ncount = 2\n"),
            11,
            "vrrp[0].gorp",
            "unknown key",
        );
        fails(
            "[[nodes]]\ninterface = \"eth0\"\n",
            1,
            "nodes",
            "unknown key",
        );
        fails("[node]\nnode = 1\n", 2, "node.node", "unknown key");
        fails(
            &format!("{NODE}{SERVICE}check = {{ kind = \"tcp\", comand = \"x\" }}\n"),
            8,
            "service[0].check.comand",
            "unknown key",
        );
    }

    #[test]
    fn unknown_keys_in_sub_tables_are_found() {
        let text = format!(
            "{NODE}[[service]]\nvip = \"10.0.0.100\"\nport = 80\n[[service.backends]]\naddress = \"10.0.0.11\"\n[[service.backends]]\naddress = \"10.0.0.12\"\nport = 81\n"
        );
        fails(&text, 11, "service[0].backends[1].port", "unknown key");
    }

    #[test]
    fn missing_required_keys_are_named() {
        fails(
            "[node]\nname = \"lb1\"\n",
            1,
            "node.interface",
            "required key is missing",
        );
        fails("[node]\ninterface = \"eth0\"\n", 1, "node.name", "missing");
        fails(SERVICE, 1, "node", "missing");
        fails(
            &format!("{NODE}[[service]]\nport = 80\nbackends = [{{ address = \"10.0.0.11\" }}]\n"),
            4,
            "service[0].vip",
            "missing",
        );
        fails(
            &format!(
                "{NODE}[[service]]\nvip = \"10.0.0.100\"\nbackends = [{{ address = \"10.0.0.11\" }}]\n"
            ),
            4,
            "service[0].port",
            "missing",
        );
        let text = format!("{NODE}{SERVICE}").replace(
            "[{ address = \"10.0.0.11\" }]",
            "[{ address = \"10.0.0.11\" },\n  { weight = 2 }]",
        );
        fails(&text, 8, "service[0].backends[1].address", "missing");
        fails(
            &format!("{NODE}[[vrrp]]\nvrid = 1\nvips = [\"10.0.0.1\"]\n"),
            4,
            "vrrp[0].name",
            "missing",
        );
        fails(
            &format!("{NODE}[[vrrp]]\nname = \"a\"\nvips = [\"10.0.0.1\"]\n"),
            4,
            "vrrp[0].vrid",
            "missing",
        );
        fails(
            &format!("{NODE}[[vrrp]]\nname = \"a\"\nvrid = 1\n"),
            4,
            "vrrp[0].vips",
            "missing",
        );
        fails(
            &format!("{NODE}[[check]]\nkind = \"tcp\"\n"),
            4,
            "check[0].name",
            "missing",
        );
        fails(
            &format!("{NODE}[[check]]\nname = \"c\"\n"),
            4,
            "check[0].kind",
            "missing",
        );
    }

    #[test]
    fn type_errors_point_at_the_value() {
        let text = format!("{NODE}{SERVICE}").replace("port = 80", "port = \"80\"");
        fails(&text, 6, "service[0].port", "expected an integer");
        fails(
            &format!("{NODE}{SERVICE}protocol = \"sctp\"\n"),
            8,
            "service[0].protocol",
            "`udp`",
        );
        fails(
            &vrrp_with("preempt = \"yes\"\n"),
            11,
            "vrrp[0].preempt",
            "expected a boolean",
        );
    }

    #[test]
    fn durations_need_a_unit() {
        fails(
            &vrrp_with("garp.interval = 5\n"),
            11,
            "vrrp[0].garp.interval",
            "\"5ms\"",
        );
        fails(
            &vrrp_with("[[vrrp.track]]\ncheck = \"c\"\nweight = \"-5\"\n"),
            13,
            "vrrp[0].track[0].weight",
            "an integer",
        );
        fails(
            &vrrp_with("advert_interval = 1\n"),
            11,
            "vrrp[0].advert_interval",
            "no unit; add one",
        );
        fails(
            &vrrp_with("advert_interval = \"20\"\n"),
            11,
            "vrrp[0].advert_interval",
            "\"20ms\"",
        );
        fails(
            &vrrp_with("advert_interval = 0.5\n"),
            11,
            "vrrp[0].advert_interval",
            "unit",
        );
        fails(
            &vrrp_with("advert_interval = \"fast\"\n"),
            11,
            "vrrp[0].advert_interval",
            "is not a duration",
        );
        let c = ok(&vrrp_with(
            "advert_interval = \"1.5s\"\npreempt_delay = \"2m\"\n",
        ));
        assert_eq!(c.vrrp[0].advert_interval, Duration::from_millis(1500));
        assert_eq!(c.vrrp[0].preempt_delay, Duration::from_mins(2));
    }

    #[test]
    fn bad_addresses_are_quoted() {
        fails(
            &format!("{NODE}{SERVICE}").replace("10.0.0.100", "10.0.0"),
            5,
            "service[0].vip",
            "\"10.0.0\" is not an IPv4 address",
        );
        fails(
            &vrrp_with("unicast_peers = [\"10.0.0.2\", \"fe80::1\"]\n"),
            11,
            "vrrp[0].unicast_peers[1]",
            "not an IPv4",
        );
    }

    #[test]
    fn node_names_and_interfaces_are_checked() {
        let node = |iface: &str, name: &str| {
            format!("[node]\ninterface = \"{iface}\"\nname = \"{name}\"\n")
        };
        fails(&node("eth0", "lb 1"), 3, "node.name", "letters, digits");
        fails(&node("eth0", ""), 3, "node.name", "1 to 32");
        fails(
            &node("eth0", &"a".repeat(33)),
            3,
            "node.name",
            "not a valid node name",
        );
        fails(
            &node("eth0", "../x"),
            3,
            "node.name",
            "not a valid node name",
        );
        assert_eq!(ok(&node("eth0", &"a-Z_9".repeat(6))).node.name.len(), 30);
        fails(&node("", "lb1"), 2, "node.interface", "is empty");
        fails(
            &node("a-very-long-name0", "lb1"),
            2,
            "node.interface",
            "longer than 15",
        );
        fails(
            &node("eth0/1", "lb1"),
            2,
            "node.interface",
            "not a valid interface name",
        );
        assert_eq!(
            ok(&node("enp0s31f6.4000", "lb1")).node.interface,
            "enp0s31f6.4000"
        );
    }

    #[test]
    fn ports_and_weights_have_ranges() {
        fails(
            &format!("{NODE}{SERVICE}").replace("port = 80", "port = 0"),
            6,
            "service[0].port",
            "1..=65535",
        );
        fails(
            &format!("{NODE}{SERVICE}").replace("port = 80", "port = 65536"),
            6,
            "service[0].port",
            "out of range",
        );
        let weight = |w: &str| {
            format!("{NODE}{SERVICE}").replace(
                "\"10.0.0.11\" }",
                &format!("\"10.0.0.11\", weight = {w} }}"),
            )
        };
        fails(
            &weight("1001"),
            7,
            "service[0].backends[0].weight",
            "0..=1000",
        );
        fails(
            &weight("-1"),
            7,
            "service[0].backends[0].weight",
            "out of range",
        );
        assert_eq!(ok(&weight("0")).services[0].backends[0].weight, 0);
        assert_eq!(ok(&weight("1000")).services[0].backends[0].weight, 1000);
    }

    #[test]
    fn backends_are_non_empty_bounded_and_distinct() {
        fails(
            &format!("{NODE}[[service]]\nvip = \"10.0.0.100\"\nport = 80\n"),
            4,
            "service[0].backends",
            "at least one backend",
        );
        fails(
            &format!("{NODE}{SERVICE}").replace("[{ address = \"10.0.0.11\" }]", "[]"),
            4,
            "service[0].backends",
            "at least one",
        );
        let many: Vec<String> = (0..257)
            .map(|i| format!("{{ address = \"10.1.{}.{}\" }},\n", i / 256, i % 256))
            .collect();
        let text = format!(
            "{NODE}[[service]]\nvip = \"10.0.0.100\"\nport = 80\nbackends = [\n{}]\n",
            many.concat()
        );
        fails(&text, 8 + 256, "service[0].backends", "at most 256");
        let dup = format!("{NODE}{SERVICE}").replace(
            "[{ address = \"10.0.0.11\" }]",
            "[\n  { address = \"10.0.0.11\" },\n  { address = \"10.0.0.12\" },\n  { address = \"10.0.0.11\" },\n]",
        );
        fails(
            &dup,
            10,
            "service[0].backends[2].address",
            "listed twice in this service (first at line 8)",
        );
    }

    #[test]
    fn services_are_distinct_and_bounded() {
        let text = format!("{NODE}{SERVICE}{SERVICE}");
        fails(
            &text,
            8,
            "service[1]",
            "10.0.0.100:80/tcp is already defined by service[0] (line 4)",
        );
        let udp = format!("{NODE}{SERVICE}{SERVICE}protocol = \"udp\"\n");
        assert_eq!(ok(&udp).services[1].protocol, Protocol::Udp);
        let many: String = (1..=17)
            .map(|p| SERVICE.replace("port = 80", &format!("port = {p}")))
            .collect();
        fails(
            &format!("{NODE}{many}"),
            4 + 16 * 4,
            "service[16]",
            "at most 16 services",
        );
    }

    #[test]
    fn vrrp_numbers_have_ranges() {
        fails(
            &vrrp_with("").replace("vrid = 51", "vrid = 0"),
            9,
            "vrrp[0].vrid",
            "1..=255",
        );
        fails(
            &vrrp_with("").replace("vrid = 51", "vrid = 256"),
            9,
            "vrrp[0].vrid",
            "out of range",
        );
        fails(
            &vrrp_with("priority = 0\n"),
            11,
            "vrrp[0].priority",
            "1..=255",
        );
        assert_eq!(ok(&vrrp_with("priority = 255\n")).vrrp[0].priority, 255);
        fails(
            &vrrp_with("version = 4\n"),
            11,
            "vrrp[0].version",
            "use 3 (RFC 5798) or 2",
        );
        fails(
            &vrrp_with("garp = { count = 101 }\n"),
            11,
            "vrrp[0].garp.count",
            "0..=100",
        );
        fails(
            &vrrp_with("garp.count = -1\n"),
            11,
            "vrrp[0].garp.count",
            "0..=100",
        );
        let c = ok(&vrrp_with("[vrrp.garp]\ncount = 0\nrefresh = \"30s\"\n"));
        assert_eq!(
            c.vrrp[0].garp,
            Garp {
                count: 0,
                interval: Duration::from_millis(10),
                refresh: Duration::from_secs(30)
            }
        );
    }

    #[test]
    fn advert_interval_fits_the_version() {
        fails(
            &vrrp_with("advert_interval = \"15ms\"\n"),
            11,
            "vrrp[0].advert_interval",
            "multiple of 10ms",
        );
        fails(
            &vrrp_with("advert_interval = \"41s\"\n"),
            11,
            "vrrp[0].advert_interval",
            "40.95s",
        );
        fails(
            &vrrp_with("advert_interval = \"0s\"\n"),
            11,
            "vrrp[0].advert_interval",
            "version 3",
        );
        assert_eq!(
            ok(&vrrp_with("advert_interval = \"40.95s\"\n")).vrrp[0].advert_interval,
            Duration::from_millis(40_950)
        );
        fails(
            &vrrp_with("version = 2\nadvert_interval = \"500ms\"\n"),
            12,
            "vrrp[0].advert_interval",
            "whole seconds",
        );
        fails(
            &vrrp_with("version = 2\nadvert_interval = \"256s\"\n"),
            12,
            "vrrp[0].advert_interval",
            "255s",
        );
        assert_eq!(
            ok(&vrrp_with("version = 2\nadvert_interval = \"3s\"\n")).vrrp[0].advert_interval,
            Duration::from_secs(3)
        );
    }

    #[test]
    fn auth_pass_is_short() {
        fails(
            &vrrp_with("version = 2\nauth_pass = \"123456789\"\n"),
            12,
            "vrrp[0].auth_pass",
            "1 to 8 bytes",
        );
        fails(
            &vrrp_with("version = 2\nauth_pass = \"\"\n"),
            12,
            "vrrp[0].auth_pass",
            "1 to 8 bytes",
        );
        fails(
            &vrrp_with("auth_pass = \"123456789\"\n"),
            11,
            "vrrp[0].auth_pass",
            "1 to 8 bytes",
        );
        assert_eq!(
            ok(&vrrp_with("version = 2\nauth_pass = \"12345678\"\n")).vrrp[0]
                .auth_pass
                .as_deref(),
            Some("12345678")
        );
        assert_eq!(
            ok(&vrrp_with("auth_pass = \"1234\"\n")).vrrp[0].auth_pass,
            None
        );
    }

    #[test]
    fn vips_are_non_empty_and_distinct() {
        fails(
            &vrrp_with("").replace("vips = [\"10.0.0.100\"]", "vips = []"),
            10,
            "vrrp[0].vips",
            "at least one VIP",
        );
        let dup = vrrp_with("").replace(
            "vips = [\"10.0.0.100\"]",
            "vips = [\"10.0.0.100\",\n  \"10.0.0.100\"]",
        );
        fails(
            &dup,
            11,
            "vrrp[0].vips[1]",
            "VIP 10.0.0.100 is listed twice (first at line 10)",
        );
        fails(
            &vrrp_with("unicast_peers = [\"10.0.0.2\", \"10.0.0.2\"]\n"),
            11,
            "vrrp[0].unicast_peers[1]",
            "listed twice",
        );
    }

    #[test]
    fn vrrp_names_and_vrids_are_unique() {
        let second = |name: &str, vrid: u8| {
            format!("[[vrrp]]\nname = \"{name}\"\nvrid = {vrid}\nvips = [\"10.0.0.101\"]\n")
        };
        fails(
            &(vrrp_with("") + &second("VI_1", 52)),
            12,
            "vrrp[1].name",
            "already the name of vrrp[0] (line 7)",
        );
        fails(
            &(vrrp_with("") + &second("VI_2", 51)),
            13,
            "vrrp[1].vrid",
            "vrid 51 is already used by vrrp[0] (line 7)",
        );
        assert_eq!(ok(&(vrrp_with("") + &second("VI_2", 52))).vrrp.len(), 2);
    }

    #[test]
    fn sync_group_checksum_and_track_services() {
        let c = ok(&vrrp_with(
            "sync_group = \"G1\"\nv3_checksum = \"message-only\"\ntrack_services = { weight = -50 }\n",
        ));
        assert_eq!(c.vrrp[0].sync_group.as_deref(), Some("G1"));
        assert_eq!(c.vrrp[0].v3_checksum, V3Checksum::MessageOnly);
        assert_eq!(c.vrrp[0].track_services, Some(-50));
        let c = ok(&vrrp_with("track_services = {}\n"));
        assert_eq!(c.vrrp[0].track_services, Some(0));
        let c = ok(&vrrp_with(""));
        assert_eq!(c.vrrp[0].v3_checksum, V3Checksum::PseudoHeader);
        assert_eq!(
            (c.vrrp[0].sync_group.as_ref(), c.vrrp[0].track_services),
            (None, None)
        );
        fails(
            &vrrp_with("sync_group = \" \"\n"),
            11,
            "vrrp[0].sync_group",
            "empty",
        );
        fails(
            &vrrp_with("track_services = { weight = -300 }\n"),
            11,
            "vrrp[0].track_services.weight",
            "-254..=254",
        );
        fails(
            &vrrp_with("v3_checksum = \"rfc\"\n"),
            11,
            "vrrp[0].v3_checksum",
            "pseudo-header",
        );
        fails(
            &vrrp_with("version = 2\nadvert_interval = \"1s\"\nv3_checksum = \"message-only\"\n"),
            13,
            "vrrp[0].v3_checksum",
            "version 3 only",
        );
    }

    #[test]
    fn tracks_name_existing_checks_within_weight_range() {
        fails(
            &vrrp_with("track = [{ check = \"nope\" }]\n"),
            11,
            "vrrp[0].track[0].check",
            "no [[check]] named \"nope\"",
        );
        fails(
            &vrrp_with("track = [{ check = \"c\", weight = 255 }]\n"),
            11,
            "vrrp[0].track[0].weight",
            "-254..=254",
        );
        let c = ok(&vrrp_with(
            "track = [{ check = \"c\", weight = -254 }, { check = \"c\" }]\n",
        ));
        assert_eq!(
            c.vrrp[0].track,
            [
                Track {
                    check: "c".into(),
                    weight: -254
                },
                Track {
                    check: "c".into(),
                    weight: 0
                }
            ]
        );
    }

    #[test]
    fn checks_are_unique_and_complete() {
        let check = |body: &str| format!("{NODE}[[check]]\nname = \"c\"\n{body}");
        fails(
            &check("kind = \"exec\"\n"),
            4,
            "check[0].command",
            "needs a command",
        );
        fails(
            &check("kind = \"tcp\"\ncommand = \"x\"\n"),
            7,
            "check[0].command",
            "only kind = \"exec\"",
        );
        fails(
            &check("kind = \"tcp\"\ninterval = \"0s\"\n"),
            7,
            "check[0].interval",
            "greater than 0s",
        );
        fails(
            &check("kind = \"tcp\"\ntimeout = \"0ms\"\n"),
            7,
            "check[0].timeout",
            "greater than 0s",
        );
        fails(
            &check("kind = \"tcp\"\nrise = 0\n"),
            7,
            "check[0].rise",
            "out of range",
        );
        fails(&check("kind = \"ping\"\n"), 6, "check[0].kind", "`exec`");
        let twice = format!(
            "{}[[check]]\nname = \"c\"\nkind = \"exec\"\ncommand = \"true\"\n",
            check("kind = \"amqp\"\naddress = \"127.0.0.1\"\n")
        );
        fails(
            &twice,
            9,
            "check[1].name",
            "already the name of check[0] (line 4)",
        );
    }

    #[test]
    fn service_checks_take_only_their_kind_keys() {
        let svc = |check: &str| format!("{NODE}{SERVICE}check = {{ {check} }}\n");
        fails(
            &svc("kind = \"exec\""),
            8,
            "service[0].check.command",
            "needs a command",
        );
        fails(
            &svc("kind = \"tcp\", command = \"true\""),
            8,
            "service[0].check.command",
            "only kind = \"exec\" runs a command",
        );
        fails(
            &svc("kind = \"amqp\", path = \"/\""),
            8,
            "service[0].check.path",
            "only a kind = \"http\" check uses path",
        );
        fails(
            &svc("kind = \"tcp\", vhost = \"/\""),
            8,
            "service[0].check.vhost",
            "only a kind = \"amqp\"",
        );
        fails(
            &svc("kind = \"tcp\", expect_status = 200"),
            8,
            "service[0].check.expect_status",
            "http",
        );
        fails(
            &svc("kind = \"http\", path = \"health\""),
            8,
            "service[0].check.path",
            "must start with '/'",
        );
        fails(
            &svc("kind = \"http\", expect_status = 99"),
            8,
            "service[0].check.expect_status",
            "100..=599",
        );
        fails(
            &svc("kind = \"amqp\", user = \"u\""),
            8,
            "service[0].check.password",
            "needs a password",
        );
        fails(
            &svc("kind = \"tcp\", interval = \"0s\""),
            8,
            "service[0].check.interval",
            "greater than 0s",
        );
        fails(
            &svc("kind = \"tcp\", port = 0"),
            8,
            "service[0].check.port",
            "1..=65535",
        );
        let c = ok(&svc(
            "kind = \"amqp\", port = 15672, user = \"u\", password = \"p\", vhost = \"/\"",
        ));
        let sc = c.services[0].check.clone().unwrap();
        assert_eq!(
            (sc.port, sc.probe),
            (
                Some(15672),
                Probe::Amqp {
                    login: Some(("u".into(), "p".into(), "/".into()))
                }
            )
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let e = parse(&format!("{NODE}[[service]\n")).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.to_string().starts_with("vip.toml:4: "), "{e}");
        let e = parse(&vrrp_with("vips = [\"10.0.0.1\"]\n")).unwrap_err();
        assert_eq!(e.line, Some(11), "{e}");
        assert!(e.message.contains("duplicate key `vips`"), "{e}");
    }

    #[test]
    fn load_names_the_unreadable_file() {
        let path = Path::new("/nonexistent/vip-config-test.toml");
        let e = Config::load(path).unwrap_err();
        assert_eq!(
            (e.path.as_path(), e.line, e.key.as_ref()),
            (path, None, None)
        );
        assert!(
            e.to_string()
                .starts_with("/nonexistent/vip-config-test.toml: cannot read"),
            "{e}"
        );
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn load_reads_a_file() {
        let dir = std::env::temp_dir().join(format!("vip-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vip.toml");
        std::fs::write(&path, EXAMPLE).unwrap();
        let c = Config::load(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(c.unwrap().services[0].backends.len(), 3);
    }
}
