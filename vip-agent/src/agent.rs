//! The agent: turns a config into the data plane's maps and keeps them true.
//!
//! `Ids` assigns stable service and backend ids (config order on a fresh
//! start, kept across reloads and restarts so flows stay on their backends);
//! `plan` turns a config into the wanted map contents; `Agent` applies a plan,
//! stamps the heartbeat, re-resolves backend MACs and reloads on SIGHUP.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use vip_common::{
    BACKEND_DOWN, BACKEND_DRAINING, BACKEND_ENABLED, BACKEND_LOCAL, Backend, LOOKUP_SIZE,
    MAX_BACKENDS, MAX_SERVICES, NO_BACKEND, PROTO_TCP, PROTO_UDP, SERVICE_REHASH_ON_DOWN,
    SERVICE_RESET_ON_DOWN, ServiceKey, VipState,
};

use crate::{
    config::{Config, ConfigError, OnBackendDown, Protocol},
    dataplane::{AttachMode, Dataplane, DataplaneError},
    maglev,
    net::{Iface, Net, NetError, arp_resolve, fmt_mac},
};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Bpffs(#[from] crate::bpffs::BpffsError),
    #[error("cannot start the node checks: {0}")]
    Checks(#[from] crate::check::runner::HealthError),
    #[error("too many {what}: at most {max}")]
    Capacity { what: &'static str, max: u32 },
    #[error("{path}: {what}")]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where an id-keyed thing lives: a service by (VIP, port, protocol), a
/// backend by (service id, address).
pub type ServiceIdent = (Ipv4Addr, u16, u8);

/// Runtime changes to the configured backend set: backends an operator
/// drained (`vipctl drain`), and backends health checks declared down, with
/// the reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Steering {
    pub drained: BTreeSet<Ipv4Addr>,
    pub down: BTreeMap<(ServiceIdent, Ipv4Addr), String>,
}

/// Stable ids for services and backends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ids {
    services: BTreeMap<ServiceIdent, u32>,
    backends: BTreeMap<(u32, Ipv4Addr), u32>,
}

impl Ids {
    /// Ids found in pinned maps (an agent restarting over a running data plane).
    pub fn from_dataplane(dp: &Dataplane) -> Result<Self, DataplaneError> {
        let mut ids = Self::default();
        for (key, svc) in dp.services()?.into_values() {
            ids.services.insert(
                (
                    Ipv4Addr::from(key.vip.to_ne_bytes()),
                    u16::from_be(key.port),
                    key.proto,
                ),
                svc.id,
            );
        }
        for (i, b) in dp.backends()?.iter().enumerate() {
            if b.flags & BACKEND_ENABLED != 0 {
                let id = u32::try_from(i).expect("MAX_BACKENDS fits u32");
                ids.backends
                    .insert((b.service, Ipv4Addr::from(b.addr.to_ne_bytes())), id);
            }
        }
        Ok(ids)
    }

    fn lowest_free(used: impl Iterator<Item = u32>, max: u32) -> Option<u32> {
        let used: BTreeSet<u32> = used.collect();
        (0..max).find(|i| !used.contains(i))
    }

    /// Keeps the ids of what `config` still has, drops the rest, and gives
    /// new things the lowest free ids (so a fresh start numbers in config order).
    pub fn assign(&mut self, config: &Config) -> Result<(), AgentError> {
        let wanted: Vec<ServiceIdent> = config.services.iter().map(service_ident).collect();
        self.services.retain(|k, _| wanted.contains(k));
        for ident in &wanted {
            if !self.services.contains_key(ident) {
                let id = Self::lowest_free(self.services.values().copied(), MAX_SERVICES).ok_or(
                    AgentError::Capacity {
                        what: "services",
                        max: MAX_SERVICES,
                    },
                )?;
                self.services.insert(*ident, id);
            }
        }
        let mut wanted_backends = Vec::new();
        for svc in &config.services {
            let sid = self.services[&service_ident(svc)];
            for b in &svc.backends {
                wanted_backends.push((sid, b.address));
            }
        }
        self.backends.retain(|k, _| wanted_backends.contains(k));
        for key in wanted_backends {
            if !self.backends.contains_key(&key) {
                let id = Self::lowest_free(self.backends.values().copied(), MAX_BACKENDS).ok_or(
                    AgentError::Capacity {
                        what: "backends",
                        max: MAX_BACKENDS,
                    },
                )?;
                self.backends.insert(key, id);
            }
        }
        Ok(())
    }

    #[must_use]
    pub fn service(&self, ident: &ServiceIdent) -> Option<u32> {
        self.services.get(ident).copied()
    }

    #[must_use]
    pub fn backend(&self, service: u32, addr: Ipv4Addr) -> Option<u32> {
        self.backends.get(&(service, addr)).copied()
    }
}

fn proto_num(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => PROTO_TCP,
        Protocol::Udp => PROTO_UDP,
    }
}

/// The identity of a configured service.
#[must_use]
pub fn service_ident(s: &crate::config::Service) -> ServiceIdent {
    (s.vip, s.port, proto_num(s.protocol))
}

/// The map key of a service.
#[must_use]
pub fn service_key(vip: Ipv4Addr, port: u16, proto: u8) -> ServiceKey {
    ServiceKey::new(vip.octets(), port, proto)
}

/// What the agent knows about one backend's link-layer address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub local: bool,
}

/// One backend as it should appear in the maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendPlan {
    pub id: u32,
    pub addr: Ipv4Addr,
    pub weight: u32,
    /// Weight 0 or drained by an operator: keeps its flows, takes no new ones.
    pub draining: bool,
    /// Declared down by the service's health check.
    pub down: bool,
    /// `None` while the backend's MAC is unknown: it stays out of the table.
    pub resolved: Option<Resolved>,
}

impl BackendPlan {
    /// Whether new flows may land on it.
    #[must_use]
    pub fn in_table(&self) -> bool {
        self.resolved.is_some() && !self.draining && !self.down && self.weight > 0
    }
}

/// One service as it should appear in the maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePlan {
    pub id: u32,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: u8,
    /// `SERVICE_*` flags (what XDP does with flows of a down backend).
    pub flags: u32,
    pub backends: Vec<BackendPlan>,
}

impl ServicePlan {
    #[must_use]
    pub fn key(&self) -> ServiceKey {
        service_key(self.vip, self.port, self.proto)
    }

    /// The Maglev table: backends with weight > 0 and a known MAC that are
    /// neither drained nor down.
    #[must_use]
    pub fn table(&self) -> Vec<u32> {
        let identities: Vec<[u8; 4]> = self.backends.iter().map(|b| b.addr.octets()).collect();
        let entries: Vec<maglev::Entry<'_>> = self
            .backends
            .iter()
            .zip(&identities)
            .filter(|(b, _)| b.in_table())
            .map(|(b, ident)| maglev::Entry {
                identity: ident,
                weight: b.weight,
                id: b.id,
            })
            .collect();
        maglev::build(&entries, LOOKUP_SIZE, NO_BACKEND)
    }

    fn map_backend(&self, b: &BackendPlan) -> Backend {
        let r = b.resolved.expect("only resolved backends are written");
        let mut flags = BACKEND_ENABLED;
        if r.local {
            flags |= BACKEND_LOCAL;
        }
        if b.draining || b.weight == 0 {
            flags |= BACKEND_DRAINING;
        }
        if b.down {
            flags |= BACKEND_DOWN;
        }
        Backend {
            addr: u32::from_ne_bytes(b.addr.octets()),
            ifindex: r.ifindex,
            mac: r.mac,
            src_mac: r.src_mac,
            flags,
            service: self.id,
        }
    }
}

/// Everything the maps should hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub vips: BTreeMap<Ipv4Addr, VipState>,
    pub services: Vec<ServicePlan>,
}

/// Builds the plan for `config` with `ids`, the node's interfaces and what is
/// known of backend MACs.
#[must_use]
pub fn plan(
    config: &Config,
    ids: &Ids,
    iface: &Iface,
    all: &[Iface],
    macs: &BTreeMap<Ipv4Addr, Resolved>,
    vrrp_vips: &BTreeMap<Ipv4Addr, VipState>,
    steering: &Steering,
) -> Plan {
    // VIPs of a VRRP instance are active while it is master; every other
    // service VIP is owned statically by this node.
    let mut vips = vrrp_vips.clone();
    let mut services = Vec::new();
    for svc in &config.services {
        vips.entry(svc.vip).or_insert(VipState {
            mac: iface.mac,
            active: 1,
            _pad: 0,
        });
        let id = ids.service(&service_ident(svc)).expect("ids assigned");
        let backends = svc
            .backends
            .iter()
            .map(|b| {
                let local = all
                    .iter()
                    .any(|i| i.addrs.iter().any(|(a, _)| *a == b.address));
                let resolved = if local {
                    Some(Resolved {
                        ifindex: iface.index,
                        mac: iface.mac,
                        src_mac: iface.mac,
                        local: true,
                    })
                } else {
                    macs.get(&b.address).copied()
                };
                BackendPlan {
                    id: ids.backend(id, b.address).expect("ids assigned"),
                    addr: b.address,
                    weight: b.weight,
                    draining: b.weight == 0 || steering.drained.contains(&b.address),
                    down: steering.down.contains_key(&(service_ident(svc), b.address)),
                    resolved,
                }
            })
            .collect();
        services.push(ServicePlan {
            id,
            vip: svc.vip,
            port: svc.port,
            proto: proto_num(svc.protocol),
            flags: service_flags(svc),
            backends,
        });
    }
    Plan { vips, services }
}

/// The `SERVICE_*` flags of a configured service.
fn service_flags(svc: &crate::config::Service) -> u32 {
    match svc.on_backend_down {
        OnBackendDown::Reset => SERVICE_RESET_ON_DOWN,
        OnBackendDown::Rehash => SERVICE_REHASH_ON_DOWN,
        OnBackendDown::Keep => 0,
    }
}

/// What [`apply`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Lookup tables rebuilt and switched.
    pub switched: u64,
    /// How long the last one took (build, fill, flip).
    pub last_us: u64,
}

/// Writes `plan` into the maps, replacing `old` (the plan last applied).
/// Backends first, then each table switch, then removals, so no packet ever
/// meets a table slot naming a backend that is not written yet.
pub fn apply(
    dp: &mut Dataplane,
    old: Option<&Plan>,
    plan: &Plan,
) -> Result<Applied, DataplaneError> {
    let mut applied = Applied::default();
    for svc in &plan.services {
        for b in svc.backends.iter().filter(|b| b.resolved.is_some()) {
            dp.set_backend(b.id, &svc.map_backend(b))?;
            let r = b.resolved.expect("filtered");
            if !r.local {
                dp.add_tx_port(r.ifindex)?;
            }
        }
    }
    for svc in &plan.services {
        let unchanged = old
            .and_then(|o| o.services.iter().find(|s| s.id == svc.id))
            .is_some_and(|o| o == svc);
        if !unchanged {
            let t0 = Instant::now();
            dp.switch_table(svc.key(), svc.id, svc.flags, &svc.table())?;
            applied.switched += 1;
            applied.last_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
            tracing::info!(
                service = %format!("{}:{}", svc.vip, svc.port),
                backends = svc.backends.iter().filter(|b| b.in_table()).count(),
                took_us = applied.last_us,
                "lookup table switched"
            );
        }
    }
    for (vip, state) in &plan.vips {
        dp.set_vip(*vip, *state)?;
    }
    prune(dp, plan)?;
    Ok(applied)
}

/// Removes from the maps whatever `plan` does not hold: services, backends
/// (flags cleared, so the program stops following flows to them) and VIPs.
/// Works from the maps themselves, so it also cleans up after a previous
/// agent whose pins were adopted.
fn prune(dp: &mut Dataplane, plan: &Plan) -> Result<(), DataplaneError> {
    for (key, _) in dp.services()?.into_values() {
        if !plan.services.iter().any(|s| s.key() == key) {
            dp.remove_service(&key)?;
        }
    }
    let live: BTreeSet<u32> = plan
        .services
        .iter()
        .flat_map(|s| &s.backends)
        .filter(|b| b.resolved.is_some())
        .map(|b| b.id)
        .collect();
    for (i, b) in dp.backends()?.iter().enumerate() {
        let id = u32::try_from(i).expect("MAX_BACKENDS fits u32");
        if b.flags != 0 && !live.contains(&id) {
            dp.set_backend(id, &Backend::default())?;
        }
    }
    for vip in dp.vips()?.into_keys() {
        if !plan.vips.contains_key(&vip) {
            dp.remove_vip(vip)?;
        }
    }
    Ok(())
}

/// Resolves the MACs of every non-local backend of `config` that sits on a
/// directly connected subnet: `known` first, then the kernel's neighbour
/// table, then (with `arp`) our own ARP requests, which can take 600 ms per
/// silent backend. Unresolved backends are logged and left out.
pub async fn resolve_backends(
    net: &Net,
    config: &Config,
    iface: &Iface,
    all: &[Iface],
    known: &BTreeMap<Ipv4Addr, Resolved>,
    arp: bool,
) -> Result<BTreeMap<Ipv4Addr, Resolved>, AgentError> {
    let mut out = BTreeMap::new();
    let addrs: BTreeSet<Ipv4Addr> = config
        .services
        .iter()
        .flat_map(|s| s.backends.iter().map(|b| b.address))
        .collect();
    let neighbours = net.neighbours().await?;
    for addr in addrs {
        if all.iter().any(|i| i.addrs.iter().any(|(a, _)| *a == addr)) {
            continue;
        }
        // Known MACs are kept (a reload must not wait on ARP); `refresh`
        // re-resolves everything periodically.
        if let Some(r) = known.get(&addr) {
            out.insert(addr, *r);
            continue;
        }
        // The XDP interface first: a backend there is reached with XDP_TX.
        let Some(link) = std::iter::once(iface)
            .chain(all.iter())
            .find(|i| i.on_link(addr))
        else {
            tracing::warn!(backend = %addr, "backend is not on a directly connected subnet of this node; direct server return needs layer-2 adjacency, so it stays out of the table");
            continue;
        };
        let mac = if let Some(mac) = neighbours.get(&(link.index, addr)) {
            Some(*mac)
        } else if !arp {
            continue;
        } else {
            let (index, mac, src) = (
                link.index,
                link.mac,
                link.source_for(addr).expect("on link"),
            );
            tokio::task::spawn_blocking(move || {
                arp_resolve(index, mac, src, addr, 3, Duration::from_millis(200))
            })
            .await
            .map_err(|e| AgentError::Io {
                what: format!("ARP task failed: {e}"),
                path: PathBuf::new(),
                source: std::io::Error::other(e.to_string()),
            })?
            .map_err(|source| AgentError::Io {
                what: format!("cannot send ARP for backend {addr} (needs CAP_NET_RAW)"),
                path: PathBuf::from(&link.name),
                source,
            })?
        };
        if let Some(mac) = mac {
            out.insert(
                addr,
                Resolved {
                    ifindex: link.index,
                    mac,
                    src_mac: link.mac,
                    local: false,
                },
            );
        } else {
            tracing::warn!(backend = %addr, iface = %link.name, "backend does not answer ARP; it stays out of the table until it does");
        }
    }
    Ok(out)
}

/// The heartbeat dead time: `[node] dead_time`; with VRRP, 4.5 advert
/// intervals of the slowest instance; else 1 s.
///
/// A killed agent must not stop forwarding before a backup takes over, and
/// the latest a backup can take over is `Master_Down_Interval` at priority 1,
/// just under 4 intervals after the last advert. Stamped every dead/9, the
/// program turns passive between 4 and 4.5 intervals after the crash: after
/// the takeover (no gap; both nodes forward through identical tables for at
/// most that half interval plus one), never long after it.
#[must_use]
pub fn dead_time(config: &Config) -> Duration {
    if let Some(d) = config.node.dead_time {
        return d;
    }
    config
        .vrrp
        .iter()
        .map(|v| v.advert_interval * 9 / 2)
        .max()
        .unwrap_or(Duration::from_secs(1))
}

/// How often the heartbeat is stamped for a dead time.
#[must_use]
pub fn stamp_period(dead: Duration) -> Duration {
    (dead / 9).clamp(Duration::from_millis(1), Duration::from_millis(250))
}

/// One VRRP instance as `vipctl status` shows it.
fn instance_status(i: &crate::vrrp::instance::Instance) -> crate::control::InstanceStatus {
    crate::control::InstanceStatus {
        name: i.cfg.name.clone(),
        vrid: i.cfg.vrid,
        state: i.machine.state().as_str().to_owned(),
        priority: i.machine.priority(),
        base_priority: i.cfg.priority,
        vips: i.cfg.vips.clone(),
        since_s: i.since.elapsed().as_secs_f64(),
        transitions: i.transitions,
        adverts_sent: i.sent,
        adverts_received: i.received,
        adverts_dropped: i
            .dropped
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
        sync_group: i.cfg.sync_group.clone(),
    }
}

/// Whether every service on one of `vips` has lost all its backends (down
/// or unreachable); false when no service uses them.
fn no_backends(plan: &Plan, vips: &[Ipv4Addr]) -> bool {
    let mut services = plan
        .services
        .iter()
        .filter(|s| vips.contains(&s.vip))
        .peekable();
    services.peek().is_some()
        && services.all(|s| s.backends.iter().all(|b| b.down || b.resolved.is_none()))
}

/// The VRRP runtime of `config` on `iface` (none without `[[vrrp]]`),
/// not started yet.
fn open_vrrp(
    config: &Config,
    iface: &Iface,
) -> Result<Option<crate::vrrp::instance::Runtime>, AgentError> {
    if config.vrrp.is_empty() {
        return Ok(None);
    }
    let primary = iface.addrs.first().map(|(a, _)| *a).ok_or_else(|| AgentError::Io {
        what: "VRRP needs an IPv4 address on the interface (its primary address is the advert source)".into(),
        path: PathBuf::from(&iface.name),
        source: std::io::Error::other("no IPv4 address"),
    })?;
    crate::vrrp::instance::Runtime::open(
        &config.vrrp,
        &iface.name,
        iface.index,
        iface.mac,
        primary,
        Instant::now(),
    )
    .map(Some)
    .map_err(|source| AgentError::Io {
        what: "cannot open the VRRP sockets (needs CAP_NET_RAW)".into(),
        path: PathBuf::from(&iface.name),
        source,
    })
}

/// What the backend checks of a config are: per service, its identity,
/// check and backend addresses.
fn service_checks(
    config: &Config,
) -> Vec<(
    ServiceIdent,
    Option<crate::config::ServiceCheck>,
    Vec<Ipv4Addr>,
)> {
    config
        .services
        .iter()
        .map(|s| {
            (
                service_ident(s),
                s.check.clone(),
                s.backends.iter().map(|b| b.address).collect(),
            )
        })
        .collect()
}

/// What a background resolution found: the backend addresses it looked
/// at, and the MACs of those that answered.
type Resolution = (BTreeSet<Ipv4Addr>, BTreeMap<Ipv4Addr, Resolved>);

/// A running node.
pub struct Agent {
    pub config_path: PathBuf,
    pub config: Config,
    pub dp: Dataplane,
    pub net: Net,
    pub iface: Iface,
    pub ids: Ids,
    pub plan: Plan,
    pub macs: BTreeMap<Ipv4Addr, Resolved>,
    pub mode: AttachMode,
    /// The node's VRRP instances (none: the node owns its VIPs statically).
    pub vrrp: Option<crate::vrrp::instance::Runtime>,
    /// Operator drains and health-check verdicts applied over the config.
    pub steering: Steering,
    /// Node checks (`[[check]]`) by name: up, and the last change's reason.
    pub checks: BTreeMap<String, (bool, String)>,
    pub link_up: bool,
    /// Backend MACs resolved in the background (ARP must never stall the
    /// VRRP loop): the addresses a job covered, and what it found.
    resolved_tx: tokio::sync::mpsc::UnboundedSender<Resolution>,
    resolved_rx: tokio::sync::mpsc::UnboundedReceiver<Resolution>,
    resolving: Option<tokio::task::JoinHandle<()>>,
    /// Bumped by a reload that changed `[[check]]`s or service checks, so
    /// the run loop restarts them.
    checks_epoch: u64,
    /// The service identities the running backend checks were started for
    /// (a `BackendEvent`'s `service` indexes this).
    checked_services: Vec<ServiceIdent>,
    node_stats: crate::check::runner::Stats<String>,
    backend_stats: crate::check::runner::Stats<(usize, Ipv4Addr)>,
    started: Instant,
    reloads: u64,
    rebuilds: u64,
    last_rebuild_us: u64,
}

/// The VIP-table state VRRP wants now (none without VRRP).
fn vrrp_vips(vrrp: Option<&crate::vrrp::instance::Runtime>) -> BTreeMap<Ipv4Addr, VipState> {
    vrrp.map(crate::vrrp::instance::Runtime::vip_states)
        .unwrap_or_default()
}

impl Agent {
    /// Loads (or adopts) the data plane, writes the maps, attaches XDP.
    pub async fn start(config_path: PathBuf, config: Config) -> Result<Self, AgentError> {
        let net = Net::new()?;
        let all = net.interfaces().await?;
        let iface = all
            .iter()
            .find(|i| i.name == config.node.interface)
            .cloned()
            .ok_or_else(|| NetError::NoInterface(config.node.interface.clone()))?;
        crate::bpffs::ensure_mounted(&config.node.bpffs)?;
        let pins = crate::dataplane::pin_dir(&config.node.bpffs, &config.node.name);
        let adopting = pins.join(crate::dataplane::LINK_PIN).exists();
        let mut dp = Dataplane::load(Some(&pins))?;
        let mut ids = if adopting {
            Ids::from_dataplane(&dp)?
        } else {
            Ids::default()
        };
        ids.assign(&config)?;
        let macs = resolve_backends(&net, &config, &iface, &all, &BTreeMap::new(), true).await?;
        let mut vrrp = open_vrrp(&config, &iface)?;
        let steering = Steering::default();
        let plan = plan(
            &config,
            &ids,
            &iface,
            &all,
            &macs,
            &vrrp_vips(vrrp.as_ref()),
            &steering,
        );
        // Stamp before attaching so the first packets are served.
        dp.stamp(dead_time(&config))?;
        let applied = apply(&mut dp, None, &plan)?;
        let mode = dp.attach(&iface.name, config.node.xdp_mode)?;
        tracing::info!(
            iface = %iface.name,
            mode = mode.as_str(),
            adopted = adopting,
            pins = %pins.display(),
            mac = %fmt_mac(&iface.mac),
            "XDP attached"
        );
        if let Some(rt) = vrrp.as_mut() {
            rt.startup(Instant::now(), &mut dp);
        }
        // Every check starts up (see health::RiseFall::new).
        let checks = config
            .checks
            .iter()
            .map(|c| (c.name.clone(), (true, "starting".to_owned())))
            .collect();
        let (resolved_tx, resolved_rx) = tokio::sync::mpsc::unbounded_channel();
        Ok(Self {
            config_path,
            config,
            dp,
            net,
            iface,
            ids,
            plan,
            macs,
            mode,
            vrrp,
            steering,
            checks,
            link_up: true,
            resolved_tx,
            resolved_rx,
            resolving: None,
            checks_epoch: 0,
            checked_services: Vec::new(),
            node_stats: crate::check::runner::Stats::default(),
            backend_stats: crate::check::runner::Stats::default(),
            started: Instant::now(),
            reloads: 0,
            rebuilds: applied.switched,
            last_rebuild_us: applied.last_us,
        })
    }

    fn count(&mut self, applied: Applied) {
        self.rebuilds += applied.switched;
        if applied.switched > 0 {
            self.last_rebuild_us = applied.last_us;
        }
    }

    /// Rebuilds the plan from the current config, MACs, VRRP state and
    /// steering, and applies the difference.
    async fn replan(&mut self) -> Result<(), AgentError> {
        let all = self.net.interfaces().await?;
        let plan = plan(
            &self.config,
            &self.ids,
            &self.iface,
            &all,
            &self.macs,
            &vrrp_vips(self.vrrp.as_ref()),
            &self.steering,
        );
        let applied = apply(&mut self.dp, Some(&self.plan), &plan)?;
        self.count(applied);
        self.plan = plan;
        Ok(())
    }

    /// Re-reads the config; on success applies only what changed: backends
    /// and checks rebuild tables, a changed VRRP instance restarts alone and
    /// unchanged ones keep their role. An invalid file changes nothing.
    pub async fn reload(&mut self) -> Result<(), AgentError> {
        let mut config = Config::load(&self.config_path)?;
        // `--iface` overrides the file's interface for the agent's life.
        config
            .node
            .interface
            .clone_from(&self.config.node.interface);
        if config.node != self.config.node {
            tracing::warn!("[node] changed; those settings apply on restart only");
        }
        let all = self.net.interfaces().await?;
        let mut ids = self.ids.clone();
        ids.assign(&config)?;
        let macs =
            resolve_backends(&self.net, &config, &self.iface, &all, &self.macs, false).await?;
        if config.vrrp != self.config.vrrp {
            if let Some(v) = self.vrrp.as_mut() {
                let (restarted, stopped, started) =
                    v.reconfigure(Instant::now(), &config.vrrp, &mut self.dp);
                tracing::info!(
                    restarted,
                    stopped,
                    started,
                    "[[vrrp]] changed: only the changed instances restarted"
                );
            } else {
                let mut v = open_vrrp(&config, &self.iface)?;
                if let Some(v) = v.as_mut() {
                    v.startup(Instant::now(), &mut self.dp);
                    tracing::info!("[[vrrp]] added: VRRP started");
                }
                self.vrrp = v;
            }
        }
        // Health verdicts of backends that are gone are forgotten.
        let idents: BTreeSet<(ServiceIdent, Ipv4Addr)> = config
            .services
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| (service_ident(s), b.address)))
            .collect();
        self.steering.down.retain(|k, _| idents.contains(k));
        let checks_changed = config.checks != self.config.checks
            || service_checks(&config) != service_checks(&self.config);
        if checks_changed {
            // Restarted checks start up, like keepalived's without `alpha`.
            self.steering.down.clear();
            self.checks_epoch += 1;
        }
        let plan = plan(
            &config,
            &ids,
            &self.iface,
            &all,
            &macs,
            &vrrp_vips(self.vrrp.as_ref()),
            &self.steering,
        );
        let applied = apply(&mut self.dp, Some(&self.plan), &plan)?;
        self.count(applied);
        self.config = config;
        self.ids = ids;
        self.macs = macs;
        self.plan = plan;
        self.reloads += 1;
        tracing::info!(
            services = self.plan.services.len(),
            "configuration reloaded"
        );
        let unresolved = self
            .plan
            .services
            .iter()
            .flat_map(|s| &s.backends)
            .any(|b| b.resolved.is_none());
        if unresolved {
            self.spawn_resolve(self.macs.clone());
        }
        Ok(())
    }

    /// Resolves every backend's MAC in the background (`known` ones are
    /// taken as they are); the result comes back through `resolved_rx`.
    /// One job at a time.
    fn spawn_resolve(&mut self, known: BTreeMap<Ipv4Addr, Resolved>) {
        if self.resolving.as_ref().is_some_and(|j| !j.is_finished()) {
            return;
        }
        let (net, config, iface, tx) = (
            self.net.clone(),
            self.config.clone(),
            self.iface.clone(),
            self.resolved_tx.clone(),
        );
        self.resolving = Some(tokio::spawn(async move {
            let covered: BTreeSet<Ipv4Addr> = config
                .services
                .iter()
                .flat_map(|s| s.backends.iter().map(|b| b.address))
                .collect();
            let found = match net.interfaces().await {
                Ok(all) => resolve_backends(&net, &config, &iface, &all, &known, true).await,
                Err(e) => Err(e.into()),
            };
            match found {
                Ok(macs) => {
                    let _ = tx.send((covered, macs));
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "backend resolution failed");
                }
            }
        }));
    }

    /// Takes a background resolution's result; rewrites the maps if a MAC
    /// changed, appeared or went away.
    async fn resolved(&mut self, (covered, found): Resolution) -> Result<(), AgentError> {
        let mut macs = self.macs.clone();
        for addr in covered {
            match found.get(&addr) {
                Some(r) => macs.insert(addr, *r),
                None => macs.remove(&addr),
            };
        }
        if macs != self.macs {
            self.macs = macs;
            self.replan().await?;
            tracing::info!("backend link-layer addresses changed; maps rewritten");
        }
        Ok(())
    }

    /// Drains (`drain`) or undrains every backend with this address.
    async fn set_drained(&mut self, addr: Ipv4Addr, drain: bool) -> crate::control::Reply {
        use crate::control::Reply;
        let services = self
            .config
            .services
            .iter()
            .filter(|s| s.backends.iter().any(|b| b.address == addr))
            .count();
        if services == 0 {
            return Reply::error(
                format!("{addr} is not a backend of any service; see `vipctl backends`"),
                2,
            );
        }
        let changed = if drain {
            self.steering.drained.insert(addr)
        } else {
            self.steering.drained.remove(&addr)
        };
        if let Err(e) = self.replan().await {
            return Reply::error(
                format!("cannot rewrite the maps: {}", crate::error_chain(&e)),
                1,
            );
        }
        let verb = if drain { "drained" } else { "undrained" };
        tracing::info!(backend = %addr, services, "{verb} by the operator");
        Reply::ok(if changed {
            format!("{addr} {verb} in {services} service(s)")
        } else {
            format!("{addr} was already {verb}")
        })
    }

    /// Answers one control-socket request.
    pub async fn handle(&mut self, command: crate::control::Command) -> crate::control::Reply {
        use crate::control::{Command, Reply};
        match command {
            Command::Status => Reply::status(self.status()),
            Command::Drain { address } => self.set_drained(address, true).await,
            Command::Undrain { address } => self.set_drained(address, false).await,
            Command::Reload => match self.reload_notified().await {
                Ok(()) => {
                    self.reevaluate();
                    Reply::ok(format!("reloaded {}", self.config_path.display()))
                }
                Err(AgentError::Config(e)) => Reply::error(
                    format!("{e}; the previous configuration keeps running"),
                    e.exit_code(),
                ),
                Err(e) => Reply::error(
                    format!(
                        "{}; the previous configuration keeps running",
                        crate::error_chain(&e)
                    ),
                    1,
                ),
            },
        }
    }

    /// A reload as SIGHUP does it: told to the service manager, logged.
    async fn reload_notified(&mut self) -> Result<(), AgentError> {
        tracing::info!("reloading {}", self.config_path.display());
        let _ = crate::notify::notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            crate::dataplane::monotonic_ns() / 1000
        ));
        let r = self.reload().await;
        if let Err(e) = &r {
            tracing::error!(error = %crate::error_chain(e), "reload refused; the previous configuration keeps running");
        }
        // Done either way: the new configuration, or the old one still.
        let _ = crate::notify::notify("READY=1");
        r
    }

    /// The `[[check]]`s as `vipctl status` shows them.
    fn check_statuses(&self) -> Vec<crate::control::CheckStatus> {
        use crate::control::CheckStatus;
        self.config
            .checks
            .iter()
            .map(|c| {
                let (up, reason) = self.checks.get(&c.name).cloned().unwrap_or_default();
                let stats = self
                    .node_stats
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&c.name).copied())
                    .unwrap_or_default();
                CheckStatus {
                    name: c.name.clone(),
                    kind: c.probe.kind().to_string(),
                    up,
                    reason,
                    probes: stats.probes,
                    failures: stats.failures,
                    flaps: stats.flaps,
                    latency_ms: stats.last_latency.as_secs_f64() * 1e3,
                }
            })
            .collect()
    }

    /// The node's state now.
    #[must_use]
    pub fn status(&self) -> crate::control::Status {
        use crate::control::{BackendStatus, ServiceStatus, Status};
        let counters = self
            .dp
            .counters()
            .unwrap_or([0; vip_common::counter::COUNT as usize]);
        let now_ns = crate::dataplane::monotonic_ns();
        let hb = self.dp.heartbeat().unwrap_or_default();
        #[expect(clippy::cast_precision_loss, reason = "ages in ns fit f64 well enough")]
        let heartbeat_age_ms = now_ns.saturating_sub(hb.stamp_ns) as f64 / 1e6;
        let instances = self
            .vrrp
            .iter()
            .flat_map(|v| &v.instances)
            .map(instance_status)
            .collect();
        let checks = self.check_statuses();
        let checked = self
            .backend_stats
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let services = self
            .config
            .services
            .iter()
            .zip(&self.plan.services)
            .map(|(svc, sp)| ServiceStatus {
                vip: svc.vip,
                port: svc.port,
                protocol: svc.protocol.to_string(),
                check: svc.check.as_ref().map(|c| c.probe.kind().to_string()),
                backends: sp
                    .backends
                    .iter()
                    .map(|b| {
                        let stats = self.dp.backend_stats(b.id).unwrap_or_default();
                        let reason = self
                            .steering
                            .down
                            .get(&(service_ident(svc), b.addr))
                            .cloned()
                            .unwrap_or_default();
                        let c = self
                            .checked_services
                            .iter()
                            .position(|i| *i == service_ident(svc))
                            .and_then(|n| checked.get(&(n, b.addr)).copied())
                            .unwrap_or_default();
                        BackendStatus {
                            check_probes: c.probes,
                            check_failures: c.failures,
                            check_flaps: c.flaps,
                            check_latency_ms: c.last_latency.as_secs_f64() * 1e3,
                            address: b.addr,
                            id: b.id,
                            weight: b.weight,
                            up: !b.down,
                            draining: b.draining,
                            in_table: b.in_table(),
                            mac: b.resolved.map(|r| fmt_mac(&r.mac)),
                            reason,
                            packets: stats.packets,
                            bytes: stats.bytes,
                        }
                    })
                    .collect(),
            })
            .collect();
        Status {
            node: self.config.node.name.clone(),
            interface: self.iface.name.clone(),
            xdp_mode: self.mode.as_str().to_owned(),
            pid: std::process::id(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            heartbeat_age_ms,
            dead_time_ms: dead_time(&self.config).as_secs_f64() * 1e3,
            instances,
            checks,
            services,
            counters: vip_common::counter::NAMES
                .iter()
                .zip(counters)
                .map(|(n, v)| ((*n).to_owned(), v))
                .collect(),
            table_rebuilds: self.rebuilds,
            last_rebuild_us: self.last_rebuild_us,
            reloads: self.reloads,
        }
    }

    /// Re-evaluates VRRP priorities and faults after a node check, the link
    /// or backend health changed.
    fn reevaluate(&mut self) {
        let Some(mut v) = self.vrrp.take() else {
            return;
        };
        let down = |c: &str| self.checks.get(c).is_some_and(|(up, _)| !up);
        let no_backends = |vips: &[Ipv4Addr]| no_backends(&self.plan, vips);
        v.reevaluate(
            Instant::now(),
            self.link_up,
            &down,
            &no_backends,
            &mut self.dp,
        );
        self.vrrp = Some(v);
    }

    /// Starts the `[[check]]`s (none: no receiver).
    fn spawn_node_checks(
        &mut self,
    ) -> Result<
        (
            Option<crate::check::runner::NodeChecks>,
            Option<tokio::sync::mpsc::UnboundedReceiver<crate::check::runner::CheckEvent>>,
        ),
        AgentError,
    > {
        self.checks = self
            .config
            .checks
            .iter()
            .map(|c| (c.name.clone(), (true, "starting".to_owned())))
            .collect();
        if self.config.checks.is_empty() {
            return Ok((None, None));
        }
        let (c, rx) = crate::check::runner::NodeChecks::spawn(&self.config.checks)?;
        self.node_stats = c.stats.clone();
        Ok((Some(c), Some(rx)))
    }

    /// Starts the service checks, one task per (service, backend).
    fn spawn_backend_checks(
        &mut self,
    ) -> (
        Option<crate::check::runner::BackendChecks>,
        Option<tokio::sync::mpsc::UnboundedReceiver<crate::check::runner::BackendEvent>>,
    ) {
        self.checked_services = self.config.services.iter().map(service_ident).collect();
        if self.config.services.iter().all(|s| s.check.is_none()) {
            return (None, None);
        }
        let (c, rx) = crate::check::runner::BackendChecks::spawn(&self.config.services);
        self.backend_stats = c.stats.clone();
        (Some(c), Some(rx))
    }

    /// A service check changed a backend's state: in or out of the tables
    /// (its flows then follow `on_backend_down`), and `track_services`.
    async fn backend_event(
        &mut self,
        ev: crate::check::runner::BackendEvent,
    ) -> Result<(), AgentError> {
        let Some(ident) = self.checked_services.get(ev.service).copied() else {
            return Ok(());
        };
        let key = (ident, ev.backend);
        let changed = if ev.up {
            self.steering.down.remove(&key).is_some()
        } else {
            self.steering.down.insert(key, ev.reason.clone()).is_none()
        };
        if !changed {
            return Ok(());
        }
        tracing::info!(
            service = %format!("{}:{}", ident.0, ident.1),
            backend = %ev.backend,
            up = ev.up,
            reason = %ev.reason,
            "backend health changed"
        );
        self.replan().await?;
        self.reevaluate();
        Ok(())
    }

    /// Runs until SIGTERM/SIGINT: heartbeat, MAC refresh, reload on SIGHUP,
    /// VRRP adverts and timers, link and node-check events, the control
    /// socket and metrics. Then a graceful VRRP shutdown, and XDP detached
    /// and pins removed.
    #[expect(
        clippy::too_many_lines,
        reason = "the event loop: one select! over every input"
    )]
    pub async fn run(mut self) -> Result<(), AgentError> {
        use tokio::signal::unix::{SignalKind, signal};
        let sig = |k| {
            signal(k).map_err(|source| AgentError::Io {
                what: "cannot install a signal handler".into(),
                path: PathBuf::new(),
                source,
            })
        };
        let mut term = sig(SignalKind::terminate())?;
        let mut int = sig(SignalKind::interrupt())?;
        let mut hup = sig(SignalKind::hangup())?;
        let mut dead = dead_time(&self.config);
        let mut beat = tokio::time::interval(stamp_period(dead));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refresh = tokio::time::interval(Duration::from_secs(30));
        refresh.tick().await;
        let (call_tx, mut calls) = tokio::sync::mpsc::channel::<crate::control::Call>(16);
        let _control =
            crate::control::Server::start(&self.config.node.control_socket, call_tx.clone())
                .map_err(|e| AgentError::Io {
                    what: e.to_string(),
                    path: self.config.node.control_socket.clone(),
                    source: std::io::Error::other("control socket"),
                })?;
        let _metrics = match self.config.node.metrics {
            Some(addr) => Some(crate::metrics::serve(addr, call_tx.clone()).await.map_err(
                |source| AgentError::Io {
                    what: format!("cannot serve metrics on {addr}"),
                    path: PathBuf::from("[node] metrics"),
                    source,
                },
            )?),
            None => None,
        };
        drop(call_tx);
        if let Err(e) = crate::notify::notify("READY=1") {
            tracing::warn!(error = %e, "cannot notify the service manager ($NOTIFY_SOCKET)");
        }
        let mut sock = None;
        let mut link_events = None;
        let (mut _node_checks, mut check_events) = self.spawn_node_checks()?;
        let (mut _backend_checks, mut backend_events) = self.spawn_backend_checks();
        let mut epoch = self.checks_epoch;
        // Positive weights count from the start (checks start up).
        self.reevaluate();
        loop {
            // VRRP's socket and link watch, once there is VRRP (at start, or
            // added by a reload).
            if sock.is_none()
                && let Some(v) = self.vrrp.as_ref()
            {
                sock = Some(std::sync::Arc::clone(&v.sock));
                link_events = Some(crate::net::watch_link(self.iface.index)?);
            }
            // A reload may change the advert intervals, and so the dead time.
            if dead_time(&self.config) != dead {
                dead = dead_time(&self.config);
                self.dp.stamp(dead)?;
                beat = tokio::time::interval(stamp_period(dead));
                beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tracing::info!(dead_ms = dead.as_millis(), "heartbeat dead time changed");
            }
            if epoch != self.checks_epoch {
                epoch = self.checks_epoch;
                (_node_checks, check_events) = self.spawn_node_checks()?;
                (_backend_checks, backend_events) = self.spawn_backend_checks();
                self.reevaluate();
                tracing::info!("checks restarted with the new configuration");
            }
            let next = self
                .vrrp
                .as_ref()
                .and_then(crate::vrrp::instance::Runtime::poll_timeout);
            tokio::select! {
                r = async {
                    match &sock {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                } => match r {
                    Ok(pkt) => {
                        if let Some(v) = self.vrrp.as_mut() {
                            v.receive(Instant::now(), &pkt, &mut self.dp);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "VRRP receive failed"),
                },
                Some(up) = async {
                    match link_events.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    tracing::info!(iface = %self.iface.name, up, "link state changed");
                    self.link_up = up;
                    self.reevaluate();
                }
                Some(ev) = async {
                    match check_events.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.checks.insert(ev.name.clone(), (ev.up, ev.reason));
                    self.reevaluate();
                }
                Some(ev) = async {
                    match backend_events.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Err(e) = self.backend_event(ev).await {
                        tracing::error!(error = %crate::error_chain(&e), "cannot apply a backend health change");
                    }
                }
                () = async {
                    match next {
                        Some(t) => tokio::time::sleep_until(t.into()).await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some(v) = self.vrrp.as_mut() {
                        v.timeout(Instant::now(), &mut self.dp);
                    }
                }
                Some((command, reply)) = calls.recv() => {
                    let r = self.handle(command).await;
                    let _ = reply.send(r);
                }
                _ = beat.tick() => self.dp.stamp(dead)?,
                _ = refresh.tick() => self.spawn_resolve(BTreeMap::new()),
                Some(found) = self.resolved_rx.recv() => {
                    if let Err(e) = self.resolved(found).await {
                        tracing::warn!(error = %crate::error_chain(&e), "backend refresh failed");
                    }
                }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP");
                    if self.reload_notified().await.is_ok() {
                        self.reevaluate();
                    }
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        tracing::info!("shutting down: detaching XDP and removing pins");
        let _ = crate::notify::notify("STOPPING=1");
        if let Some(v) = self.vrrp.as_mut() {
            v.shutdown(&mut self.dp, dead).await;
        }
        self.dp.detach_and_unpin()?;
        Ok(())
    }
}
