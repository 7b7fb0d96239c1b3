//! Planning, free of I/O: stable ids for services and backends ([`Ids`]),
//! the operator's and the health checks' steering ([`Steering`]), and
//! [`plan`], which turns a config, the node's interfaces, known MACs and VRRP
//! state into the wanted contents of every map. [`super::apply`] writes a
//! plan; the tests below need no kernel.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    time::Duration,
};

use vip_common::{
    BACKEND_DOWN, BACKEND_DRAINING, BACKEND_ENABLED, BACKEND_LOCAL, Backend, LOOKUP_SIZE,
    MAX_BACKENDS, MAX_SERVICES, NO_BACKEND, SERVICE_REHASH_ON_DOWN, SERVICE_RESET_ON_DOWN,
    ServiceKey, VipState,
};

use crate::{
    config::{Config, OnBackendDown, Proto},
    dataplane::DataplaneError,
    maglev,
    net::Iface,
    store::MapStore,
};

/// More services or backends than the maps hold.
#[derive(Debug, thiserror::Error)]
#[error("too many {what}: at most {max}")]
pub struct CapacityError {
    pub what: &'static str,
    pub max: u32,
}

/// Where an id-keyed thing lives: a service by (VIP, port, protocol), a
/// backend by (service id, address).
pub type ServiceIdent = (Ipv4Addr, u16, Proto);

/// Runtime changes to the configured backend set: backends an operator
/// drained (`vipctl drain`), and backends health checks declared down, with
/// the reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Steering {
    pub drained: BTreeSet<Ipv4Addr>,
    pub down: BTreeMap<(ServiceIdent, Ipv4Addr), String>,
}

impl Steering {
    /// Drains (`true`) or undrains every backend at `addr`: it keeps its
    /// flows but takes no new ones. Returns whether that changed anything.
    pub fn set_drained(&mut self, addr: Ipv4Addr, drain: bool) -> bool {
        if drain {
            self.drained.insert(addr)
        } else {
            self.drained.remove(&addr)
        }
    }

    /// Records a health verdict on `backend` of `service` (`reason` while
    /// down). Returns whether the state changed.
    pub fn set_down(&mut self, key: (ServiceIdent, Ipv4Addr), up: bool, reason: &str) -> bool {
        if up {
            self.down.remove(&key).is_some()
        } else {
            self.down.insert(key, reason.to_owned()).is_none()
        }
    }

    /// Forgets the verdicts of backends `config` no longer has.
    pub fn retain_configured(&mut self, config: &Config) {
        let idents: BTreeSet<(ServiceIdent, Ipv4Addr)> = config
            .services
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| (service_ident(s), b.address)))
            .collect();
        self.down.retain(|k, _| idents.contains(k));
    }
}

/// Stable ids for services and backends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ids {
    services: BTreeMap<ServiceIdent, u32>,
    backends: BTreeMap<(u32, Ipv4Addr), u32>,
}

impl Ids {
    /// Ids found in pinned maps (an agent restarting over a running data plane).
    pub fn from_dataplane(dp: &impl MapStore) -> Result<Self, DataplaneError> {
        let mut ids = Self::default();
        for (key, svc) in dp.services()?.into_values() {
            // A protocol no config can name: no configured service reuses
            // its id, and pruning removes it.
            let Some(proto) = Proto::from_number(key.proto) else {
                continue;
            };
            ids.services.insert(
                (
                    Ipv4Addr::from(key.vip.to_ne_bytes()),
                    u16::from_be(key.port),
                    proto,
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

    /// Gives each key of `wanted` that `ids` lacks the lowest free id below
    /// `max`, in order: one pass over the ids in use, however many are new.
    fn allocate<K: Ord + Copy>(
        ids: &mut BTreeMap<K, u32>,
        wanted: &[K],
        max: u32,
        what: &'static str,
    ) -> Result<(), CapacityError> {
        let mut used: BTreeSet<u32> = ids.values().copied().collect();
        let mut next = 0;
        for key in wanted {
            if ids.contains_key(key) {
                continue;
            }
            // Every id below `next` is in use.
            while used.contains(&next) {
                next += 1;
            }
            if next >= max {
                return Err(CapacityError { what, max });
            }
            used.insert(next);
            ids.insert(*key, next);
        }
        Ok(())
    }

    /// Keeps the ids of what `config` still has, drops the rest, and gives
    /// new things the lowest free ids (so a fresh start numbers in config order).
    pub fn assign(&mut self, config: &Config) -> Result<(), CapacityError> {
        let wanted: Vec<ServiceIdent> = config.services.iter().map(service_ident).collect();
        self.services.retain(|k, _| wanted.contains(k));
        Self::allocate(&mut self.services, &wanted, MAX_SERVICES, "services")?;
        let mut wanted_backends = Vec::new();
        for svc in &config.services {
            let sid = self.services[&service_ident(svc)];
            for b in &svc.backends {
                wanted_backends.push((sid, b.address));
            }
        }
        let keep: BTreeSet<(u32, Ipv4Addr)> = wanted_backends.iter().copied().collect();
        self.backends.retain(|k, _| keep.contains(k));
        Self::allocate(
            &mut self.backends,
            &wanted_backends,
            MAX_BACKENDS,
            "backends",
        )
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

/// The identity of a configured service.
#[must_use]
pub fn service_ident(s: &crate::config::Service) -> ServiceIdent {
    (s.vip, s.port, s.protocol)
}

/// The map key of a service.
#[must_use]
pub fn service_key(vip: Ipv4Addr, port: u16, proto: Proto) -> ServiceKey {
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
    pub proto: Proto,
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

    /// The map value of `b` (which must be resolved).
    #[must_use]
    pub fn map_backend(&self, b: &BackendPlan) -> Backend {
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
            vlan: config.vlan_of(svc.vip),
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
            proto: svc.protocol,
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

/// Whether every service on one of `vips` has lost all its backends (down
/// or unreachable); false when no service uses them.
#[must_use]
pub fn no_backends(plan: &Plan, vips: &[Ipv4Addr]) -> bool {
    let mut services = plan
        .services
        .iter()
        .filter(|s| vips.contains(&s.vip))
        .peekable();
    services.peek().is_some()
        && services.all(|s| s.backends.iter().all(|b| b.down || b.resolved.is_none()))
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
        .map(|v| v.election.advert_interval * 9 / 2)
        .max()
        .unwrap_or(Duration::from_secs(1))
}

/// How often the pacer stamps the heartbeat for a dead time, whatever else
/// it does: half of it (22.5 ms at 10 ms adverts), so a stamp may come a
/// period late before XDP goes passive. The pacer also stamps on each of its
/// wakeups (a master at 10 ms adverts: with each advert), and the run loop on
/// each of its passes a quarter period after the last stamp (a backup: with
/// each advert received), so the heartbeat is fresh while either thread runs.
#[must_use]
pub fn stamp_period(dead: Duration) -> Duration {
    (dead / 2).clamp(Duration::from_millis(1), Duration::from_millis(250))
}

/// What the backend checks of a config are: per service, its identity,
/// check and backend addresses (a reload restarts the checks when they differ).
#[must_use]
pub fn service_checks(
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{BackendConfig, Node, Service, XdpMode};

    pub(crate) const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
    const MAC: [u8; 6] = [2, 0x99, 0, 0, 0, 2];

    fn backend(last: u8, weight: u32) -> BackendConfig {
        BackendConfig {
            address: Ipv4Addr::new(10, 99, 0, last),
            weight,
        }
    }

    fn service(port: u16, backends: Vec<BackendConfig>) -> Service {
        Service {
            vip: VIP,
            port,
            protocol: Proto::Tcp,
            check: None,
            on_backend_down: OnBackendDown::Reset,
            backends,
            line: 1,
        }
    }

    pub(crate) fn config(services: Vec<Service>) -> Config {
        Config {
            node: Node {
                interface: "eth0".into(),
                name: "lb1".into(),
                bpffs: "/sys/fs/bpf".into(),
                control_socket: "/run/vip/lb1.sock".into(),
                metrics: None,
                xdp_mode: XdpMode::Auto,
                dead_time: None,
                script_user: None,
                script_security: true,
                flow_table_size: crate::config::DEFAULT_FLOW_TABLE_SIZE,
            },
            vrrp: Vec::new(),
            checks: Vec::new(),
            services,
        }
    }

    /// lb1's eth0 on 10.99.0.0/24, and `lo` holding 10.99.0.14 (a backend
    /// on this node).
    pub(crate) fn interfaces() -> (Iface, Vec<Iface>) {
        let eth0 = Iface {
            index: 2,
            name: "eth0".into(),
            mac: MAC,
            addrs: vec![(Ipv4Addr::new(10, 99, 0, 2), 24)],
        };
        let lo = Iface {
            index: 1,
            name: "lo".into(),
            mac: [0; 6],
            addrs: vec![(Ipv4Addr::new(10, 99, 0, 14), 32)],
        };
        (eth0.clone(), vec![lo, eth0])
    }

    /// MACs for backends .11 to .13.
    pub(crate) fn macs() -> BTreeMap<Ipv4Addr, Resolved> {
        (11..=13)
            .map(|last| {
                (
                    Ipv4Addr::new(10, 99, 0, last),
                    Resolved {
                        ifindex: 2,
                        mac: [2, 0x99, 0, 0, 0, last],
                        src_mac: MAC,
                        local: false,
                    },
                )
            })
            .collect()
    }

    pub(crate) fn plan_of(config: &Config, steering: &Steering) -> Plan {
        let mut ids = Ids::default();
        ids.assign(config).expect("within the limits");
        let (iface, all) = interfaces();
        plan(
            config,
            &ids,
            &iface,
            &all,
            &macs(),
            &BTreeMap::new(),
            steering,
        )
    }

    pub(crate) fn three_backends() -> Config {
        config(vec![service(
            5672,
            vec![backend(11, 1), backend(12, 1), backend(13, 1)],
        )])
    }

    #[test]
    fn ids_follow_config_order_and_stay_across_a_reload() {
        let mut cfg = config(vec![
            service(5672, vec![backend(11, 1), backend(12, 1)]),
            service(15672, vec![backend(11, 1)]),
        ]);
        let mut ids = Ids::default();
        ids.assign(&cfg).unwrap();
        let amqp = (VIP, 5672, Proto::Tcp);
        let http = (VIP, 15672, Proto::Tcp);
        assert_eq!((ids.service(&amqp), ids.service(&http)), (Some(0), Some(1)));
        let b = |ids: &Ids, svc: u32, last: u8| ids.backend(svc, Ipv4Addr::new(10, 99, 0, last));
        assert_eq!(
            (b(&ids, 0, 11), b(&ids, 0, 12), b(&ids, 1, 11)),
            (Some(0), Some(1), Some(2))
        );
        // The first service goes and a backend is added: the others keep
        // their ids, the new one takes the lowest free.
        cfg.services.remove(0);
        cfg.services[0].backends.push(backend(13, 1));
        ids.assign(&cfg).unwrap();
        assert_eq!((ids.service(&amqp), ids.service(&http)), (None, Some(1)));
        assert_eq!((b(&ids, 1, 11), b(&ids, 1, 13)), (Some(2), Some(0)));
    }

    #[test]
    fn every_service_full_fits_the_backend_ids() {
        let full = |first: u32| -> Vec<Service> {
            (0..MAX_SERVICES)
                .map(|s| {
                    let backends = (0..vip_common::MAX_BACKENDS_PER_SERVICE)
                        .map(|b| BackendConfig {
                            address: Ipv4Addr::from(
                                first + s * vip_common::MAX_BACKENDS_PER_SERVICE + b,
                            ),
                            weight: 1,
                        })
                        .collect();
                    service(u16::try_from(5000 + s).unwrap(), backends)
                })
                .collect()
        };
        let mut ids = Ids::default();
        ids.assign(&config(full(0x0a10_0000))).unwrap();
        let mut seen: Vec<u32> = ids.backends.values().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..MAX_BACKENDS).collect::<Vec<_>>());
        // Every backend replaced at once: the old ids are freed first, so
        // the new ones fit.
        ids.assign(&config(full(0x0a20_0000))).unwrap();
        assert_eq!(ids.backends.len(), MAX_BACKENDS as usize);
        assert_eq!(ids.backend(0, Ipv4Addr::from(0x0a20_0000)), Some(0));
    }

    #[test]
    fn more_services_than_the_maps_hold_are_refused() {
        let services = (0..=MAX_SERVICES)
            .map(|n| service(u16::try_from(1000 + n).unwrap(), vec![]))
            .collect();
        let err = Ids::default().assign(&config(services)).unwrap_err();
        assert_eq!(err.to_string(), "too many services: at most 16");
    }

    #[test]
    fn the_plan_takes_resolved_live_backends_into_the_table() {
        let mut cfg = three_backends();
        // .14 is on this node (lo); .15 has no MAC; .13 has weight 0.
        cfg.services[0].backends[2].weight = 0;
        cfg.services[0].backends.push(backend(14, 1));
        cfg.services[0].backends.push(backend(15, 1));
        let p = plan_of(&cfg, &Steering::default());
        assert_eq!(
            p.vips[&VIP],
            VipState {
                mac: MAC,
                active: 1,
                _pad: 0,
                vlan: 0,
            },
            "a VIP without VRRP is owned statically"
        );
        let svc = &p.services[0];
        let shown: Vec<(u8, bool, bool, Option<bool>)> = svc
            .backends
            .iter()
            .map(|b| {
                (
                    b.addr.octets()[3],
                    b.in_table(),
                    b.draining,
                    b.resolved.map(|r| r.local),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                (11, true, false, Some(false)),
                (12, true, false, Some(false)),
                (13, false, true, Some(false)),
                (14, true, false, Some(true)),
                (15, false, false, None),
            ]
        );
        let table = svc.table();
        assert_eq!(table.len(), LOOKUP_SIZE as usize);
        let used: BTreeSet<u32> = table.iter().copied().collect();
        assert_eq!(used, BTreeSet::from([0, 1, 3]), "ids of .11, .12 and .14");
        assert_eq!(svc.flags, SERVICE_RESET_ON_DOWN);
    }

    #[test]
    fn a_vrrp_backup_keeps_its_vip_inactive() {
        let cfg = three_backends();
        let mut ids = Ids::default();
        ids.assign(&cfg).unwrap();
        let (iface, all) = interfaces();
        let backup = BTreeMap::from([(
            VIP,
            VipState {
                mac: MAC,
                active: 0,
                _pad: 0,
                vlan: 0,
            },
        )]);
        let p = plan(
            &cfg,
            &ids,
            &iface,
            &all,
            &macs(),
            &backup,
            &Steering::default(),
        );
        assert_eq!(p.vips[&VIP].active, 0);
    }

    #[test]
    fn drain_and_undrain_move_a_backend_out_of_the_table_and_back() {
        let cfg = three_backends();
        let mut steering = Steering::default();
        let b12 = Ipv4Addr::new(10, 99, 0, 12);
        assert!(steering.set_drained(b12, true));
        assert!(!steering.set_drained(b12, true), "already drained");
        let drained = plan_of(&cfg, &steering);
        let b = &drained.services[0].backends[1];
        assert!(b.draining && !b.in_table() && !b.down);
        let flags = drained.services[0].map_backend(b).flags;
        assert_eq!(flags, BACKEND_ENABLED | BACKEND_DRAINING, "keeps its flows");
        assert!(!drained.services[0].table().contains(&1));
        assert!(steering.set_drained(b12, false));
        let back = plan_of(&cfg, &steering);
        assert_eq!(back, plan_of(&cfg, &Steering::default()));
        assert!(back.services[0].table().contains(&1));
    }

    #[test]
    fn a_down_backend_leaves_the_table_until_it_is_up() {
        let cfg = three_backends();
        let mut steering = Steering::default();
        let key = ((VIP, 5672, Proto::Tcp), Ipv4Addr::new(10, 99, 0, 11));
        assert!(steering.set_down(key, false, "connection refused"));
        assert!(!steering.set_down(key, false, "timed out"), "already down");
        let p = plan_of(&cfg, &steering);
        let b = &p.services[0].backends[0];
        assert!(b.down && !b.in_table());
        assert_eq!(
            p.services[0].map_backend(b).flags,
            BACKEND_ENABLED | BACKEND_DOWN
        );
        assert!(!no_backends(&p, &[VIP]), "two are left");
        // A reload without that backend forgets the verdict.
        let mut smaller = cfg.clone();
        smaller.services[0].backends.remove(0);
        steering.retain_configured(&smaller);
        assert!(steering.down.is_empty());
    }

    #[test]
    fn no_backends_only_when_every_one_is_down_or_unreachable() {
        let cfg = three_backends();
        let mut steering = Steering::default();
        for last in 11..=13 {
            steering.set_down(
                ((VIP, 5672, Proto::Tcp), Ipv4Addr::new(10, 99, 0, last)),
                false,
                "refused",
            );
        }
        let p = plan_of(&cfg, &steering);
        assert!(no_backends(&p, &[VIP]));
        assert!(
            !no_backends(&p, &[Ipv4Addr::new(10, 99, 0, 200)]),
            "a VIP without services"
        );
    }

    #[test]
    fn the_dead_time_follows_the_slowest_advert() {
        assert_eq!(dead_time(&three_backends()), Duration::from_secs(1));
        assert_eq!(
            stamp_period(Duration::from_millis(45)),
            Duration::from_micros(22_500)
        );
        assert_eq!(
            stamp_period(Duration::from_secs(9)),
            Duration::from_millis(250)
        );
    }
}
