//! The agent: turns a config into the data plane's maps and keeps them true.
//!
//! `Ids` assigns stable service and backend ids (config order on a fresh
//! start, kept across reloads and restarts so flows stay on their backends);
//! `plan` turns a config into the wanted map contents; `Agent` applies a plan,
//! stamps the heartbeat, re-resolves backend MACs and reloads on SIGHUP.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use vip_common::{
    BACKEND_DRAINING, BACKEND_ENABLED, BACKEND_LOCAL, Backend, LOOKUP_SIZE, MAX_BACKENDS,
    MAX_SERVICES, NO_BACKEND, PROTO_TCP, PROTO_UDP, ServiceKey, VipState,
};

use crate::{
    config::{Config, ConfigError, Protocol},
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
type ServiceIdent = (Ipv4Addr, u16, u8);

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

fn service_ident(s: &crate::config::Service) -> ServiceIdent {
    (s.vip, s.port, proto_num(s.protocol))
}

/// The map key of a service.
#[must_use]
pub fn service_key(vip: Ipv4Addr, port: u16, proto: u8) -> ServiceKey {
    ServiceKey {
        vip: u32::from_ne_bytes(vip.octets()),
        port: port.to_be(),
        proto,
        _pad: 0,
    }
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
    /// `None` while the backend's MAC is unknown: it stays out of the table.
    pub resolved: Option<Resolved>,
}

/// One service as it should appear in the maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePlan {
    pub id: u32,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: u8,
    pub backends: Vec<BackendPlan>,
}

impl ServicePlan {
    #[must_use]
    pub fn key(&self) -> ServiceKey {
        service_key(self.vip, self.port, self.proto)
    }

    /// The Maglev table: backends with weight > 0 and a known MAC.
    #[must_use]
    pub fn table(&self) -> Vec<u32> {
        let identities: Vec<[u8; 4]> = self.backends.iter().map(|b| b.addr.octets()).collect();
        let entries: Vec<maglev::Entry<'_>> = self
            .backends
            .iter()
            .zip(&identities)
            .filter(|(b, _)| b.resolved.is_some())
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
        if b.weight == 0 {
            flags |= BACKEND_DRAINING;
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
                    resolved,
                }
            })
            .collect();
        services.push(ServicePlan {
            id,
            vip: svc.vip,
            port: svc.port,
            proto: proto_num(svc.protocol),
            backends,
        });
    }
    Plan { vips, services }
}

/// Writes `plan` into the maps, replacing `old` (the plan last applied).
/// Backends first, then each table switch, then removals, so no packet ever
/// meets a table slot naming a backend that is not written yet.
pub fn apply(dp: &mut Dataplane, old: Option<&Plan>, plan: &Plan) -> Result<(), DataplaneError> {
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
            dp.switch_table(svc.key(), svc.id, 0, &svc.table())?;
            tracing::info!(
                service = %format!("{}:{}", svc.vip, svc.port),
                backends = svc.backends.iter().filter(|b| b.resolved.is_some() && b.weight > 0).count(),
                took_us = t0.elapsed().as_micros(),
                "lookup table switched"
            );
        }
    }
    for (vip, state) in &plan.vips {
        dp.set_vip(*vip, *state)?;
    }
    prune(dp, plan)?;
    Ok(())
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
/// directly connected subnet: the kernel's neighbour table first, then our
/// own ARP requests. Unresolved backends are logged and left out.
pub async fn resolve_backends(
    net: &Net,
    config: &Config,
    iface: &Iface,
    all: &[Iface],
    known: &BTreeMap<Ipv4Addr, Resolved>,
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

/// Parts of the config this build cannot run yet: refused with their line,
/// never silently ignored.
pub fn refuse_unsupported(config: &Config, path: &Path) -> Result<(), ConfigError> {
    let refuse = |line: usize, key: &str, what: &str| ConfigError {
        path: path.to_owned(),
        line: Some(line),
        key: Some(key.to_owned()),
        message: format!(
            "{what} is not available in this version of vip yet; remove it to run a node that owns its VIPs statically"
        ),
    };
    if let Some(c) = config
        .checks
        .iter()
        .find(|c| c.kind != crate::config::CheckKind::Exec)
    {
        return Err(refuse(
            c.line,
            "check.kind",
            &format!("a {} node check (only exec is)", c.kind),
        ));
    }
    if let Some(s) = config.services.iter().find(|s| s.check.is_some()) {
        return Err(refuse(s.line, "service.check", "health checking"));
    }
    Ok(())
}

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
        let macs = resolve_backends(&net, &config, &iface, &all, &BTreeMap::new()).await?;
        let mut vrrp = if config.vrrp.is_empty() {
            None
        } else {
            let primary = iface.addrs.first().map(|(a, _)| *a).ok_or_else(|| AgentError::Io {
                what: "VRRP needs an IPv4 address on the interface (its primary address is the advert source)".into(),
                path: PathBuf::from(&iface.name),
                source: std::io::Error::other("no IPv4 address"),
            })?;
            let rt = crate::vrrp::instance::Runtime::open(
                &config.vrrp,
                &iface.name,
                iface.index,
                iface.mac,
                primary,
                Instant::now(),
            )
            .map_err(|source| AgentError::Io {
                what: "cannot open the VRRP sockets (needs CAP_NET_RAW)".into(),
                path: PathBuf::from(&iface.name),
                source,
            })?;
            Some(rt)
        };
        let vrrp_vips = vrrp
            .as_ref()
            .map(crate::vrrp::instance::Runtime::vip_states)
            .unwrap_or_default();
        let plan = plan(&config, &ids, &iface, &all, &macs, &vrrp_vips);
        // Stamp before attaching so the first packets are served.
        dp.stamp(dead_time(&config))?;
        apply(&mut dp, None, &plan)?;
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
        })
    }

    /// Re-reads the config; on success applies only what changed.
    pub async fn reload(&mut self) -> Result<(), AgentError> {
        let config = Config::load(&self.config_path)?;
        refuse_unsupported(&config, &self.config_path)?;
        if config.node != self.config.node {
            tracing::warn!("[node] changed; those settings apply on restart only");
        }
        let all = self.net.interfaces().await?;
        let mut ids = self.ids.clone();
        ids.assign(&config)?;
        let macs = resolve_backends(&self.net, &config, &self.iface, &all, &self.macs).await?;
        if config.vrrp != self.config.vrrp {
            tracing::warn!(
                "[[vrrp]] changed; VRRP settings apply on restart only (instances keep their role)"
            );
        }
        let vrrp_vips = self
            .vrrp
            .as_ref()
            .map(crate::vrrp::instance::Runtime::vip_states)
            .unwrap_or_default();
        let plan = plan(&config, &ids, &self.iface, &all, &macs, &vrrp_vips);
        apply(&mut self.dp, Some(&self.plan), &plan)?;
        self.config = config;
        self.ids = ids;
        self.macs = macs;
        self.plan = plan;
        tracing::info!(
            services = self.plan.services.len(),
            "configuration reloaded"
        );
        Ok(())
    }

    /// Re-resolves backend MACs; rewrites the maps if any changed.
    pub async fn refresh(&mut self) -> Result<(), AgentError> {
        let all = self.net.interfaces().await?;
        let macs =
            resolve_backends(&self.net, &self.config, &self.iface, &all, &BTreeMap::new()).await?;
        if macs != self.macs {
            let vrrp_vips = self
                .vrrp
                .as_ref()
                .map(crate::vrrp::instance::Runtime::vip_states)
                .unwrap_or_default();
            let plan = plan(
                &self.config,
                &self.ids,
                &self.iface,
                &all,
                &macs,
                &vrrp_vips,
            );
            apply(&mut self.dp, Some(&self.plan), &plan)?;
            tracing::info!("backend link-layer addresses changed; maps rewritten");
            self.macs = macs;
            self.plan = plan;
        }
        Ok(())
    }

    /// Runs until SIGTERM/SIGINT: heartbeat, MAC refresh, reload on SIGHUP,
    /// VRRP adverts and timers, link and node-check events. Then a graceful
    /// VRRP shutdown, and XDP detached and pins removed.
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
        let dead = dead_time(&self.config);
        let mut beat = tokio::time::interval(stamp_period(dead));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refresh = tokio::time::interval(Duration::from_secs(30));
        refresh.tick().await;
        if let Err(e) = crate::notify::notify("READY=1") {
            tracing::warn!(error = %e, "cannot notify the service manager ($NOTIFY_SOCKET)");
        }
        let sock = self.vrrp.as_ref().map(|v| std::sync::Arc::clone(&v.sock));
        let mut link_events = match &self.vrrp {
            Some(_) => Some(crate::net::watch_link(self.iface.index)?),
            None => None,
        };
        let mut link_up = true;
        let mut check_down: BTreeSet<String> = BTreeSet::new();
        let (_checks, mut check_events) = if self.config.checks.is_empty() {
            (None, None)
        } else {
            let (c, rx) = crate::health::NodeChecks::spawn(&self.config.checks).map_err(|e| {
                AgentError::Io {
                    what: format!("cannot start the node checks: {e}"),
                    path: self.config_path.clone(),
                    source: std::io::Error::other(e.to_string()),
                }
            })?;
            (Some(c), Some(rx))
        };
        // Positive weights count from the start (checks start up).
        if let Some(v) = self.vrrp.as_mut() {
            v.reevaluate(
                Instant::now(),
                link_up,
                &|c| check_down.contains(c),
                &mut self.dp,
            );
        }
        loop {
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
                    link_up = up;
                    if let Some(v) = self.vrrp.as_mut() {
                        v.reevaluate(Instant::now(), link_up, &|c| check_down.contains(c), &mut self.dp);
                    }
                }
                Some(ev) = async {
                    match check_events.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if ev.up {
                        check_down.remove(&ev.name);
                    } else {
                        check_down.insert(ev.name.clone());
                    }
                    if let Some(v) = self.vrrp.as_mut() {
                        v.reevaluate(Instant::now(), link_up, &|c| check_down.contains(c), &mut self.dp);
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
                _ = beat.tick() => self.dp.stamp(dead)?,
                _ = refresh.tick() => {
                    if let Err(e) = self.refresh().await {
                        tracing::warn!(error = %crate::error_chain(&e), "backend refresh failed");
                    }
                }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading {}", self.config_path.display());
                    let _ = crate::notify::notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", crate::dataplane::monotonic_ns() / 1000));
                    if let Err(e) = self.reload().await {
                        tracing::error!(error = %crate::error_chain(&e), "reload refused; the previous configuration keeps running");
                    }
                    // Done either way: the new configuration, or the old one still.
                    let _ = crate::notify::notify("READY=1");
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
