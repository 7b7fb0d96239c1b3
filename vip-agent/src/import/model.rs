//! What the keepalived file says, in vip's terms, and the converter that
//! gathers it.

use std::{collections::HashSet, net::Ipv4Addr, path::PathBuf, time::Duration};

use super::{
    ast::Stmt,
    lex::{Loc, RawNote},
};
use crate::{
    check::{self, Schedule},
    config::{Check, ServiceCheck},
};

/// keepalived's defaults that differ from vip's.
pub(in crate::import) const KA_VRRP_VERSION: u8 = 2;
pub(in crate::import) const KA_PRIORITY: u8 = 100;
pub(in crate::import) const KA_ADVERT: Duration = Duration::from_secs(1);
/// `delay_loop` and `connect_timeout` when not given.
pub(in crate::import) const KA_DELAY_LOOP: Duration = Duration::from_mins(1);
pub(in crate::import) const KA_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Default)]
pub(in crate::import) struct Garp {
    pub(in crate::import) count: Option<u32>,
    pub(in crate::import) interval: Option<Duration>,
    pub(in crate::import) refresh: Option<Duration>,
}

impl Garp {
    pub(in crate::import) fn or(&self, base: &Garp) -> Garp {
        Garp {
            count: self.count.or(base.count),
            interval: self.interval.or(base.interval),
            refresh: self.refresh.or(base.refresh),
        }
    }
}

/// A `vrrp_script`.
#[derive(Debug)]
pub(in crate::import) struct Script {
    pub(in crate::import) name: String,
    pub(in crate::import) at: Loc,
    pub(in crate::import) command: Option<String>,
    pub(in crate::import) interval: Duration,
    pub(in crate::import) timeout: Option<Duration>,
    pub(in crate::import) weight: i32,
    pub(in crate::import) rise: u32,
    pub(in crate::import) fall: u32,
}

impl Script {
    /// The `[[check]]` in config's terms: an exec check of the script.
    pub(in crate::import) fn check(&self) -> Check {
        Check {
            name: self.name.clone(),
            probe: check::Probe::Exec {
                command: self.command.clone().unwrap_or_default(),
            },
            address: None,
            port: None,
            schedule: Schedule {
                interval: self.interval,
                timeout: self.timeout.unwrap_or(self.interval),
                rise: self.rise,
                fall: self.fall,
            },
            line: 0,
        }
    }
}

/// A `track_script` line.
#[derive(Debug)]
pub(in crate::import) struct Track {
    pub(in crate::import) name: String,
    pub(in crate::import) weight: Option<i32>,
    pub(in crate::import) at: Loc,
}

/// A notify script: the script with its own arguments, and where.
#[derive(Debug, Clone)]
pub(in crate::import) struct Notify {
    pub(in crate::import) keyword: String,
    pub(in crate::import) script: String,
    pub(in crate::import) at: Loc,
    /// Index into [`STATE_KEYWORDS`] for `notify_*`.
    pub(in crate::import) state: usize,
}

pub(in crate::import) const STATE_KEYWORDS: [&str; 3] =
    ["notify_master", "notify_backup", "notify_fault"];

/// A `vrrp_instance`.
#[derive(Debug)]
pub(in crate::import) struct Instance {
    pub(in crate::import) name: String,
    pub(in crate::import) at: Loc,
    pub(in crate::import) interface: Option<(String, Loc)>,
    pub(in crate::import) vrid: Option<u8>,
    pub(in crate::import) priority: Option<u8>,
    pub(in crate::import) version: Option<u8>,
    pub(in crate::import) advert: Option<(Duration, Loc)>,
    pub(in crate::import) nopreempt: bool,
    pub(in crate::import) preempt_delay: Option<Duration>,
    pub(in crate::import) auth_pass: Option<(String, Loc)>,
    pub(in crate::import) peers: Vec<Ipv4Addr>,
    pub(in crate::import) vips: Vec<(Ipv4Addr, Loc)>,
    pub(in crate::import) virtual_mac: bool,
    pub(in crate::import) garp: Garp,
    pub(in crate::import) tracks: Vec<Track>,
    pub(in crate::import) notify: Option<Notify>,
    /// `notify_master`, `notify_backup`, `notify_fault`.
    pub(in crate::import) notify_states: [Option<Notify>; 3],
    pub(in crate::import) old_checksum: Option<Loc>,
    /// `state MASTER`: without a priority, keepalived makes it 255.
    pub(in crate::import) master: Option<Loc>,
}

/// A `vrrp_sync_group`.
#[derive(Debug)]
pub(in crate::import) struct Group {
    pub(in crate::import) name: String,
    pub(in crate::import) at: Loc,
    pub(in crate::import) members: Vec<(String, Loc)>,
    /// `sync_group_tracking_weight`: keep the members' track weights.
    pub(in crate::import) keep_weights: bool,
}

/// The checker options that cascade from virtual to real server to checker.
#[derive(Debug, Clone, Default)]
pub(in crate::import) struct Timing {
    pub(in crate::import) connect_timeout: Option<Duration>,
    pub(in crate::import) retry: Option<u32>,
    pub(in crate::import) delay_loop: Option<Duration>,
}

/// A service check in vip's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::import) struct Probe {
    pub(in crate::import) kind: &'static str,
    pub(in crate::import) interval: Duration,
    pub(in crate::import) timeout: Duration,
    pub(in crate::import) fall: u32,
    pub(in crate::import) port: Option<u16>,
    pub(in crate::import) path: Option<String>,
    pub(in crate::import) expect_status: Option<u16>,
    pub(in crate::import) expect_body: Option<String>,
    pub(in crate::import) command: Option<String>,
}

impl Probe {
    /// The names of the fields in which `other` differs.
    pub(in crate::import) fn differences(&self, other: &Probe) -> Vec<&'static str> {
        let mut d = Vec::new();
        let mut check = |differs: bool, name| {
            if differs {
                d.push(name);
            }
        };
        check(self.kind != other.kind, "kind");
        check(self.interval != other.interval, "interval");
        check(self.timeout != other.timeout, "timeout");
        check(self.fall != other.fall, "retries");
        check(self.port != other.port, "port");
        check(self.path != other.path, "path");
        check(self.expect_status != other.expect_status, "status");
        check(self.expect_body != other.expect_body, "regex");
        check(self.command != other.command, "command");
        d
    }

    /// The service check in config's terms (keepalived's checkers rise at
    /// the first success).
    pub(in crate::import) fn check(&self) -> ServiceCheck {
        let probe = match self.kind {
            "http" => check::Probe::Http {
                path: self.path.clone().unwrap_or_else(|| "/".to_owned()),
                expect_status: self.expect_status.unwrap_or(200),
                expect_body: self.expect_body.clone(),
                auth: None,
            },
            "exec" => check::Probe::Exec {
                command: self.command.clone().unwrap_or_default(),
            },
            _ => check::Probe::Tcp,
        };
        ServiceCheck {
            probe,
            schedule: Schedule {
                interval: self.interval,
                timeout: self.timeout,
                rise: 1,
                fall: self.fall,
            },
            port: self.port,
        }
    }
}

/// A `real_server`.
#[derive(Debug)]
pub(in crate::import) struct Real {
    pub(in crate::import) addr: Ipv4Addr,
    pub(in crate::import) at: Loc,
    pub(in crate::import) weight: u32,
    /// `inhibit_on_failure`: keep serving existing connections when down.
    pub(in crate::import) inhibit: bool,
    /// The first checker in vip's terms, if it has one vip can run.
    pub(in crate::import) probe: Option<(Probe, Loc)>,
}

/// A `virtual_server`.
#[derive(Debug)]
pub(in crate::import) struct Server {
    pub(in crate::import) vip: Ipv4Addr,
    pub(in crate::import) port: u16,
    pub(in crate::import) udp: bool,
    pub(in crate::import) at: Loc,
    pub(in crate::import) reals: Vec<Real>,
}

/// `inhibit_on_failure [<BOOL>]` and the like: on unless the value says off.
pub(in crate::import) fn flag(s: &Stmt) -> bool {
    !matches!(s.arg(0), Some("false" | "off" | "no"))
}

pub(in crate::import) struct Converter {
    pub(in crate::import) files: Vec<PathBuf>,
    pub(in crate::import) notes: Vec<RawNote>,
    /// Notes given once per import.
    pub(in crate::import) said: HashSet<&'static str>,
    pub(in crate::import) router_id: Option<(String, Loc)>,
    /// `script_user`, as vip writes it.
    pub(in crate::import) script_user: Option<(crate::config::ScriptUser, Loc)>,
    /// Where `enable_script_security` is set.
    pub(in crate::import) script_security: Option<Loc>,
    pub(in crate::import) version: Option<u8>,
    pub(in crate::import) garp: Garp,
    pub(in crate::import) scripts: Vec<Script>,
    pub(in crate::import) instances: Vec<Instance>,
    pub(in crate::import) groups: Vec<Group>,
    pub(in crate::import) servers: Vec<Server>,
}
