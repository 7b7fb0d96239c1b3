//! The agent: turns a config into the data plane's maps and keeps them true.
//!
//! The core is free of I/O and unit-tested without a kernel: [`plan`] (stable
//! ids, steering, the wanted map contents) and [`apply`] (writing a plan
//! through [`MapStore`] in a safe order). [`status`] builds the snapshots
//! that vipctl, the control socket and `/metrics` show. The rest is the
//! shell: [`Agent`] (this file) owns the data plane, the sockets and the
//! tasks; [`inbox`] turns every input (VRRP packets, link and check events,
//! the control socket, signals, timers) into one stream of
//! [`Event`](inbox::Event)s, and the run loop (`run.rs`) handles them one at
//! a time with calls on the core.

mod apply;
mod front;
pub mod inbox;
mod plan;
mod run;
mod status;

use futures::StreamExt as _;
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

pub use self::{
    apply::{Applied, apply},
    plan::{
        BackendPlan, CapacityError, Ids, Plan, Resolved, ServiceIdent, ServicePlan, Steering,
        dead_time, no_backends, plan, service_checks, service_ident, service_key, stamp_period,
    },
};
use crate::{
    config::{self, Check, Config, ConfigError},
    dataplane::{AttachMode, Dataplane, DataplaneError},
    net::{Iface, Net, NetError, arp_resolve, fmt_mac},
    store::MapStore,
};
use vip_common::VipState;

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
    #[error(transparent)]
    Capacity(#[from] CapacityError),
    #[error("{path}: {what}")]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An ARP answer: the backend, the link asked on, its MAC if it answered.
type ArpAnswer = (Ipv4Addr, Iface, Option<[u8; 6]>);

/// ARP requests in flight at once when resolving backends (each a blocking
/// task of its own; a silent backend holds one for 600 ms).
const ARP_AT_ONCE: usize = 32;

/// Resolves the MACs of every non-local backend of `config` that sits on a
/// directly connected subnet: `known` first, then the kernel's neighbour
/// table, then (with `arp`) our own ARP requests, [`ARP_AT_ONCE`] at a time,
/// which can take 600 ms per silent backend. Unresolved backends are logged
/// and left out.
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
    let mut asks: Vec<(Ipv4Addr, Iface)> = Vec::new();
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
        if let Some(mac) = neighbours.get(&(link.index, addr)) {
            out.insert(
                addr,
                Resolved {
                    ifindex: link.index,
                    mac: *mac,
                    src_mac: link.mac,
                    local: false,
                },
            );
        } else if arp {
            asks.push((addr, link.clone()));
        }
    }
    // What the neighbour table does not know is asked by ARP, at most
    // ARP_AT_ONCE at a time: one after another, 1 000 backends took 25 s.
    let answers: Vec<Result<ArpAnswer, AgentError>> =
        futures::stream::iter(asks.into_iter().map(|(addr, link)| async move {
            let (index, mac, src) = (
                link.index,
                link.mac,
                link.source_for(addr).expect("on link"),
            );
            let answer = tokio::task::spawn_blocking(move || {
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
            })?;
            Ok((addr, link, answer))
        }))
        .buffer_unordered(ARP_AT_ONCE)
        .collect()
        .await;
    for answer in answers {
        let (addr, link, mac) = answer?;
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

/// The VRRP runtime of `config` on `iface` (none without `[[vrrp]]`),
/// not started yet.
fn open_vrrp(
    config: &Config,
    iface: &Iface,
    pacer: &std::sync::Arc<crate::pacer::Pacer>,
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
        pacer,
        Instant::now(),
    )
    .map(Some)
    .map_err(|source| AgentError::Io {
        what: "cannot open the VRRP sockets (needs CAP_NET_RAW)".into(),
        path: PathBuf::from(&iface.name),
        source,
    })
}

/// Whether two lists of tables say the same, table by table, wherever in
/// the file each was written: a reload that only moves a table is no change.
fn same_tables<T>(new: &[T], old: &[T], same: impl Fn(&T, &T) -> bool) -> bool {
    new.len() == old.len() && new.iter().zip(old).all(|(a, b)| same(a, b))
}

/// What a background resolution found: the backend addresses it looked
/// at, and the MACs of those that answered.
pub type Resolution = (BTreeSet<Ipv4Addr>, BTreeMap<Ipv4Addr, Resolved>);

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
    /// Closed while `link_up` is false: the network probes pause (see
    /// [`crate::check::runner`]).
    link_gate: crate::check::runner::LinkGate,
    /// Backend MACs resolved in the background (ARP must never stall the
    /// VRRP loop): the addresses a job covered, and what it found.
    resolved_tx: tokio::sync::mpsc::UnboundedSender<Resolution>,
    /// Taken by the run loop, which forwards it to its inbox.
    resolved_rx: Option<tokio::sync::mpsc::UnboundedReceiver<Resolution>>,
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
    /// Sends master adverts and stamps the heartbeat on its own thread.
    pacer: std::sync::Arc<crate::pacer::Pacer>,
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
        let vlan_vips: Vec<(std::net::Ipv4Addr, u16)> = config
            .vrrp
            .iter()
            .flat_map(|v| v.vlans.iter().map(|(a, id)| (*a, *id)))
            .collect();
        crate::net::warn_if_vlan_stripped(&iface.name, &vlan_vips);
        crate::bpffs::ensure_mounted(&config.node.bpffs)?;
        let pins = crate::dataplane::pin_dir(&config.node.bpffs, &config.node.name);
        let adopting = pins.join(crate::dataplane::LINK_PIN).exists();
        let mut dp = Dataplane::load(Some(&pins), config.node.flow_table_size)?;
        let mut ids = if adopting {
            Ids::from_dataplane(&dp)?
        } else {
            Ids::default()
        };
        ids.assign(&config)?;
        let macs = resolve_backends(&net, &config, &iface, &all, &BTreeMap::new(), true).await?;
        let pacer =
            std::sync::Arc::new(
                crate::pacer::Pacer::start().map_err(|source| AgentError::Io {
                    what: "cannot start the pacer thread".into(),
                    path: PathBuf::new(),
                    source,
                })?,
            );
        let mut vrrp = open_vrrp(&config, &iface, &pacer)?;
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
        // Stamp before attaching so the first packets are served; the pacer
        // stamps from then on.
        let dead = dead_time(&config);
        dp.stamp(dead)?;
        pacer.set_heartbeat(Box::new(dp.stamper(dead)?), stamp_period(dead));
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
            link_gate: crate::check::runner::LinkGate::new(true),
            resolved_tx,
            resolved_rx: Some(resolved_rx),
            resolving: None,
            checks_epoch: 0,
            checked_services: Vec::new(),
            node_stats: crate::check::runner::Stats::default(),
            backend_stats: crate::check::runner::Stats::default(),
            started: Instant::now(),
            reloads: 0,
            rebuilds: applied.switched,
            last_rebuild_us: applied.last_us,
            pacer,
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
        // Who scripts run as is a [node] setting: kept until a restart.
        let (mut config, _scripts) = Config::load(&self.config_path)?;
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
        let vrrp_changed = !same_tables(&config.vrrp, &self.config.vrrp, config::Vrrp::same_as);
        if vrrp_changed {
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
                let mut v = open_vrrp(&config, &self.iface, &self.pacer)?;
                if let Some(v) = v.as_mut() {
                    v.startup(Instant::now(), &mut self.dp);
                    tracing::info!("[[vrrp]] added: VRRP started");
                }
                self.vrrp = v;
            }
        }
        // Health verdicts of backends that are gone are forgotten.
        self.steering.retain_configured(&config);
        let checks_changed = !same_tables(&config.checks, &self.config.checks, Check::same_as)
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
        let changed = self.steering.set_drained(addr, drain);
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
        let (c, rx) =
            crate::check::runner::NodeChecks::spawn(&self.config.checks, &self.link_gate)?;
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
        let (c, rx) =
            crate::check::runner::BackendChecks::spawn(&self.config.services, &self.link_gate);
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
        let changed = self.steering.set_down(key, ev.up, &ev.reason);
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
}
