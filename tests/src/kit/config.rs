//! Agent configs built through vip-agent's types: [`node`] is the config
//! the kit starts an agent with, the other constructors give a table with
//! the defaults config would fill in, and a test edits fields
//! (`cfg.vrrp[0].election.advert_interval = ...`) before
//! [`super::Agent::start_config`] writes it with [`write::to_toml`].

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use vip_agent::config::{
    BackendConfig, Check, Config, DEFAULT_BPFFS, Election, Garp, Node, OnBackendDown, Probe, Proto,
    Schedule, Service, ServiceCheck, Track, V3Checksum, Vrrp, XdpMode,
};

pub use vip_agent::config::write;

use super::{VIP, agent_dir};
use crate::lab::Lab;

/// The config of the lab load balancer `name`: `[node]` on `eth0` with the
/// pin root and the control socket in the agent's directory, and one
/// service, VIP:5672/tcp over `backends` (address, weight).
#[must_use]
pub fn node(lab: &Lab, name: &str, backends: &[(&str, u32)]) -> Config {
    at(name, &agent_dir(lab, name).join("bpffs"), backends)
}

/// Like [`node`], with the pin root `bpffs`; the control socket is
/// `<name>.sock` beside it.
#[must_use]
pub fn at(name: &str, bpffs: &Path, backends: &[(&str, u32)]) -> Config {
    Config {
        node: Node {
            bpffs: bpffs.to_owned(),
            control_socket: crate::lab::control_socket(name, bpffs),
            ..node_defaults("eth0", name)
        },
        vrrp: Vec::new(),
        checks: Vec::new(),
        services: vec![service(VIP, 5672, backends)],
    }
}

/// `[node]` with only `interface` and `name` given.
#[must_use]
pub fn node_defaults(interface: &str, name: &str) -> Node {
    Node {
        interface: interface.to_owned(),
        name: name.to_owned(),
        bpffs: PathBuf::from(DEFAULT_BPFFS),
        control_socket: PathBuf::from(format!("/run/vip/{name}.sock")),
        metrics: None,
        xdp_mode: XdpMode::Auto,
        dead_time: None,
        script_user: None,
        script_security: true,
        flow_table_size: vip_agent::config::DEFAULT_FLOW_TABLE_SIZE,
    }
}

/// A `[[vrrp]]` instance with only `name`, `vrid`, `priority` and `vips`
/// given: version 3, 1 s adverts, preempting.
#[must_use]
pub fn vrrp(name: &str, vrid: u8, priority: u8, vips: &[Ipv4Addr]) -> Vrrp {
    Vrrp {
        name: name.to_owned(),
        election: Election {
            vrid,
            priority,
            version: 3,
            advert_interval: Duration::from_secs(1),
            preempt: true,
            preempt_delay: Duration::ZERO,
        },
        unicast_peers: Vec::new(),
        auth_pass: None,
        vips: vips.to_vec(),
        vlans: std::collections::BTreeMap::new(),
        virtual_mac: false,
        garp: Garp::default(),
        track: Vec::new(),
        notify: None,
        track_services: None,
        sync_group: None,
        v3_checksum: V3Checksum::default(),
        line: 0,
    }
}

/// An entry of `[[vrrp]] track`.
#[must_use]
pub fn track(check: &str, weight: i32) -> Track {
    Track {
        check: check.to_owned(),
        weight,
    }
}

/// A TCP `[[service]]` over `backends` (address, weight), without a check.
#[must_use]
pub fn service(vip: Ipv4Addr, port: u16, backends: &[(&str, u32)]) -> Service {
    Service {
        vip,
        port,
        protocol: Proto::Tcp,
        check: None,
        on_backend_down: OnBackendDown::Reset,
        backends: backends.iter().map(|(a, w)| backend(a, *w)).collect(),
        line: 0,
    }
}

/// A UDP `[[service]]` over `backends`, without a check.
#[must_use]
pub fn udp_service(vip: Ipv4Addr, port: u16, backends: &[(&str, u32)]) -> Service {
    Service {
        protocol: Proto::Udp,
        on_backend_down: OnBackendDown::Rehash,
        ..service(vip, port, backends)
    }
}

/// One entry of `backends`.
///
/// # Panics
///
/// If `address` is not an IPv4 address.
#[must_use]
pub fn backend(address: &str, weight: u32) -> BackendConfig {
    BackendConfig {
        address: address
            .parse()
            .unwrap_or_else(|e| panic!("backend {address}: {e}")),
        weight,
    }
}

/// A check's default schedule: 1 s interval and timeout, rise and fall 2.
#[must_use]
pub fn schedule() -> Schedule {
    Schedule {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        rise: 2,
        fall: 2,
    }
}

/// A service check probing the service port with `probe`, on the default
/// schedule.
#[must_use]
pub fn service_check(probe: Probe) -> ServiceCheck {
    ServiceCheck {
        probe,
        schedule: schedule(),
        port: None,
    }
}

/// `check = { kind = "tcp" }`.
#[must_use]
pub fn tcp_check() -> ServiceCheck {
    service_check(Probe::Tcp)
}

/// `check = { kind = "amqp" }` (connects and reads the greeting, no login).
#[must_use]
pub fn amqp_check() -> ServiceCheck {
    service_check(Probe::Amqp { login: None })
}

/// `check = { kind = "exec", command = ... }`.
#[must_use]
pub fn exec_check(command: &str) -> ServiceCheck {
    service_check(exec(command))
}

/// An `exec` probe.
#[must_use]
pub fn exec(command: &str) -> Probe {
    Probe::Exec {
        command: command.to_owned(),
    }
}

/// A `[[check]]` named `name` asking `probe`, on the default schedule; a
/// `tcp`, `amqp` or `http` check needs its `address` (and, for `tcp`, its
/// `port`) set.
#[must_use]
pub fn check(name: &str, probe: Probe) -> Check {
    let port = probe.kind().default_port();
    Check {
        name: name.to_owned(),
        probe,
        address: None,
        port,
        schedule: schedule(),
        line: 0,
    }
}
