//! [`Fixture`]: the XDP program loaded, its maps written the way the agent
//! writes them: a [`Config`] built through its types, the facts the agent
//! learns at run time (the node's interface, the backends' MACs and links,
//! the VRRP state) and the steering go through [`plan`], and [`apply`] writes the plan into the
//! loaded [`Dataplane`], as the agent's run loop does (the way Katran's tests
//! provision through its LB API rather than by writing maps).

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use vip_agent::{
    agent::{Ids, Plan, Resolved, ServiceIdent, Steering, apply, plan, service_ident},
    config::{BackendConfig, Config, OnBackendDown, Service},
    dataplane::Dataplane,
    net::Iface,
};
use vip_common::{FlowKey, LOOKUP_SIZE, Proto, ServiceKey, VipState, flow_hash};

use crate::kit::config as kit;

use super::{
    AMQP, AMQPS_LOCAL, BACKENDS, DNS_UDP, EMPTY, LB, LB_MAC, REMOTE, REMOTE_LINK, REMOTE_MAC,
    REMOTE_SRC_MAC, UNRESOLVED, VIP, VIP_INACTIVE, VIP_VLAN, VLAN, hex, test_run,
};

/// The program loaded with: [`VIP`] active (answers with [`LB_MAC`]),
/// [`VIP_INACTIVE`] present but inactive (its VRRP instance is backup);
/// services VIP:[`AMQP`]/tcp and VIP:[`DNS_UDP`]/udp over the three
/// [`BACKENDS`] on the ingress link, VIP:[`AMQPS_LOCAL`]/tcp over a backend
/// on this node, VIP:[`REMOTE_LINK`]/tcp over [`REMOTE`] behind another link
/// (veth `vr0`), VIP:[`EMPTY`]/tcp whose one backend has no known MAC (so
/// an empty table); [`VIP_VLAN`] on VLAN [`VLAN`], active (its VRRP
/// instance is master), with `VIP_VLAN`:[`AMQP`]/tcp over the [`BACKENDS`];
/// every service keeps the flows of a down backend
/// (`on_backend_down = "keep"`); a heartbeat an hour long.
pub struct Fixture {
    pub dp: Dataplane,
    /// The node's config (see `config()`); [`Fixture::provision`] writes a
    /// change.
    pub config: Config,
    /// Health verdicts and drains, as the checks and `vipctl` set them;
    /// [`Fixture::provision`] writes a change.
    pub steering: Steering,
    ids: Ids,
    /// The node's interface as the program sees it: ifindex 1 (the
    /// namespace's `lo`, where test runs arrive) with [`LB_MAC`] and the
    /// local backend's address.
    iface: Iface,
    /// The resolved MACs of the backends that are not on this node.
    macs: BTreeMap<Ipv4Addr, Resolved>,
    /// The VIPs of the config's VRRP instances, with their states: `VI_1`
    /// backup, `VI_2` (the VLAN VIP's) master.
    vrrp: BTreeMap<Ipv4Addr, VipState>,
    /// What [`apply`] last wrote.
    plan: Option<Plan>,
}

fn ip(args: &[&str]) {
    let out = crate::programs::command("ip")
        .expect("ip")
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).expect("name");
    // SAFETY: valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name}");
    i
}

/// The fixture's config. Every service keeps the flows of a down backend
/// (a test sets another policy through [`Fixture::service_mut`]); the VRRP
/// instance `VI_1` is backup on this node, `VI_2` (`VIP_VLAN` on VLAN 100) master.
fn config() -> Config {
    let lan: Vec<Ipv4Addr> = BACKENDS.iter().map(|(a, _)| *a).collect();
    let keep = |mut s: Service, backends: &[Ipv4Addr]| {
        s.on_backend_down = OnBackendDown::Keep;
        s.backends = backends
            .iter()
            .map(|a| BackendConfig {
                address: *a,
                weight: 1,
            })
            .collect();
        s
    };
    let mut vrrp = kit::vrrp("VI_1", 51, 100, &[VIP_INACTIVE]);
    vrrp.election.advert_interval = Duration::from_millis(10);
    let mut tagged = kit::vrrp("VI_2", 52, 100, &[VIP_VLAN]);
    tagged.vlans.insert(VIP_VLAN, VLAN);
    Config {
        node: kit::node_defaults("lo", "lb1"),
        vrrp: vec![vrrp, tagged],
        checks: Vec::new(),
        services: vec![
            keep(kit::service(VIP, AMQP, &[]), &lan),
            keep(kit::udp_service(VIP, DNS_UDP, &[]), &lan),
            keep(kit::service(VIP, AMQPS_LOCAL, &[]), &[LB]),
            keep(kit::service(VIP, REMOTE_LINK, &[]), &[REMOTE]),
            keep(kit::service(VIP, EMPTY, &[]), &[UNRESOLVED]),
            keep(kit::service(VIP_VLAN, AMQP, &[]), &lan),
        ],
    }
}

impl Fixture {
    /// Sets up the links in the current (private) network namespace, loads
    /// the program and provisions it (see [`Fixture`]).
    #[must_use]
    pub fn up() -> Self {
        ip(&["link", "set", "lo", "up"]);
        ip(&["link", "add", "vr0", "type", "veth", "peer", "name", "vr1"]);
        ip(&["link", "set", "vr0", "up"]);
        ip(&["link", "set", "vr1", "up"]);
        let lo = 1;
        let remote_if = ifindex("vr0");
        let mut macs: BTreeMap<Ipv4Addr, Resolved> = BACKENDS
            .iter()
            .map(|(addr, mac)| {
                let on_lan = Resolved {
                    ifindex: lo,
                    mac: *mac,
                    src_mac: LB_MAC,
                    local: false,
                };
                (*addr, on_lan)
            })
            .collect();
        macs.insert(
            REMOTE,
            Resolved {
                ifindex: remote_if,
                mac: REMOTE_MAC,
                src_mac: REMOTE_SRC_MAC,
                local: false,
            },
        );
        let config = config();
        // What the VRRP instances write (`Runtime::vip_states`).
        let state = |vip: Ipv4Addr, active: u8| VipState {
            mac: LB_MAC,
            active,
            _pad: 0,
            vlan: config.vlan_of(vip),
        };
        let vrrp = BTreeMap::from([
            (VIP_INACTIVE, state(VIP_INACTIVE, 0)),
            (VIP_VLAN, state(VIP_VLAN, 1)),
        ]);
        let mut fx = Self {
            dp: Dataplane::load(None, vip_agent::config::DEFAULT_FLOW_TABLE_SIZE)
                .expect("load the XDP object"),
            config,
            steering: Steering::default(),
            ids: Ids::default(),
            iface: Iface {
                index: lo,
                name: "lo".into(),
                mac: LB_MAC,
                addrs: vec![(LB, 24)],
            },
            macs,
            vrrp,
            plan: None,
        };
        fx.provision();
        fx.dp.stamp(Duration::from_hours(1)).unwrap();
        fx
    }

    /// Plans [`Fixture::config`] and [`Fixture::steering`] and applies the
    /// plan over the one applied before, as the agent does on every change.
    pub fn provision(&mut self) {
        self.ids.assign(&self.config).expect("within the limits");
        let plan = plan(
            &self.config,
            &self.ids,
            &self.iface,
            std::slice::from_ref(&self.iface),
            &self.macs,
            &self.vrrp,
            &self.steering,
        );
        apply(&mut self.dp, self.plan.as_ref(), &plan).expect("apply the plan");
        self.plan = Some(plan);
    }

    /// The configured service on VIP:`port` over `proto`.
    pub fn service_mut(&mut self, port: u16, proto: Proto) -> &mut Service {
        self.service_on_mut(VIP, port, proto)
    }

    /// The configured service on `vip`:`port` over `proto`.
    pub fn service_on_mut(&mut self, vip: Ipv4Addr, port: u16, proto: Proto) -> &mut Service {
        self.config
            .services
            .iter_mut()
            .find(|s| service_ident(s) == (vip, port, proto))
            .unwrap_or_else(|| panic!("no service on {vip}:{port}/{proto}"))
    }

    /// The id the agent gave backend `addr` of `service`.
    #[must_use]
    pub fn backend_id(&self, service: ServiceIdent, addr: Ipv4Addr) -> u32 {
        let sid = self.ids.service(&service).expect("a configured service");
        self.ids.backend(sid, addr).expect("a configured backend")
    }

    /// The MAC the plan gave backend `id`: a frame forwarded to it carries it.
    #[must_use]
    pub fn backend_mac(&self, id: u32) -> [u8; 6] {
        self.plan
            .iter()
            .flat_map(|p| &p.services)
            .flat_map(|s| &s.backends)
            .find(|b| b.id == id)
            .and_then(|b| b.resolved)
            .unwrap_or_else(|| panic!("no resolved backend {id}"))
            .mac
    }

    /// Runs one frame (repeat 1); returns the verdict, the output frame and
    /// the counters that moved.
    pub fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>, Vec<(usize, u64)>) {
        self.dp.reset_counters().unwrap();
        let mut out = vec![0u8; frame.len() + 512];
        let r = test_run(self.dp.program(), frame, &mut out, 1)
            .unwrap_or_else(|e| panic!("test run failed for frame {}: {e}", hex(frame)));
        out.truncate(r.data_size_out as usize);
        let counters = self.dp.counters().unwrap();
        let moved = counters
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0)
            .map(|(i, v)| (i, *v))
            .collect();
        (r.return_value, out, moved)
    }

    /// The backend the live table of the flow's service gives this flow.
    #[must_use]
    pub fn expected_backend(&self, key: FlowKey) -> u32 {
        let proto = Proto::from_number(key.proto).expect("a flow of TCP or UDP");
        let service = ServiceKey::new(key.dst.to_ne_bytes(), u16::from_be(key.dport), proto);
        let table = self.dp.live_table(&service).unwrap();
        table[(flow_hash(&key) % LOOKUP_SIZE) as usize]
    }
}
