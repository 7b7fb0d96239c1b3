//! Types shared by the XDP program (`vip-ebpf`) and the agent (`vip-agent`):
//! map names and sizes, map keys and values, counter indices, and the flow hash.
//!
//! Every map key and value is `#[repr(C)]` and `bytemuck::Pod`, which rejects
//! implicit padding at compile time, so the kernel and user-space layouts can
//! never drift apart. Addresses and ports are kept in network byte order, exactly
//! as they appear on the wire: the XDP side never swaps bytes on the hot path.
#![no_std]
#![allow(
    clippy::pub_underscore_fields,
    reason = "explicit padding fields are public so both sides can build values"
)]
#![allow(
    clippy::inline_always,
    reason = "the XDP program needs these inlined: BPF calls are costly and limited to 5 arguments"
)]

use bytemuck::{Pod, Zeroable};

/// The maps: one table of their names and layouts. The XDP program declares
/// each under its name (a test checks the object against [`maps::SPECS`])
/// with the spec's size; the agent pins them under
/// `<bpffs>/vip/<node name>/<MAP>`, refuses pins of another layout, and
/// vipctl reads them there.
pub mod maps {
    use core::mem::size_of;

    use super::{
        Backend, BackendStats, FlowKey, FlowValue, Heartbeat, LookupHalf, MAX_BACKENDS, MAX_FLOWS,
        MAX_SERVICES, MAX_TX_PORTS, MAX_VIPS, Service, ServiceKey, VipState, counter,
    };

    /// A map's name and layout.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Spec {
        pub name: &'static str,
        pub key_size: u32,
        /// `None`: the kernel's own value layout (a devmap), not checked.
        pub value_size: Option<u32>,
        pub max_entries: u32,
    }

    #[expect(
        clippy::cast_possible_truncation,
        reason = "map keys and values are a few bytes"
    )]
    const fn of<K, V>(name: &'static str, max_entries: u32) -> Spec {
        Spec {
            name,
            key_size: size_of::<K>() as u32,
            value_size: Some(size_of::<V>() as u32),
            max_entries,
        }
    }

    /// VIP address (`u32`, network order) -> [`VipState`].
    pub const VIPS_SPEC: Spec = of::<u32, VipState>("VIPS", MAX_VIPS);
    /// [`ServiceKey`] -> [`Service`].
    pub const SERVICES_SPEC: Spec = of::<ServiceKey, Service>("SERVICES", MAX_SERVICES);
    /// `service id * 2 + half` -> [`LookupHalf`].
    pub const LOOKUP_SPEC: Spec = of::<u32, LookupHalf>("LOOKUP", MAX_SERVICES * 2);
    /// backend id -> [`Backend`].
    pub const BACKENDS_SPEC: Spec = of::<u32, Backend>("BACKENDS", MAX_BACKENDS);
    /// [`FlowKey`] -> [`FlowValue`], LRU.
    pub const FLOWS_SPEC: Spec = of::<FlowKey, FlowValue>("FLOWS", MAX_FLOWS);
    /// per-CPU `u64` counters indexed by [`counter`].
    pub const COUNTERS_SPEC: Spec = of::<u32, u64>("COUNTERS", counter::COUNT);
    /// per-CPU [`BackendStats`] indexed by backend id.
    pub const BACKEND_STATS_SPEC: Spec = of::<u32, BackendStats>("BACKEND_STATS", MAX_BACKENDS);
    /// one [`Heartbeat`] at index 0.
    pub const HEARTBEAT_SPEC: Spec = of::<u32, Heartbeat>("HEARTBEAT", 1);
    /// devmap (hash) keyed by ifindex, for backends behind another link.
    pub const TX_PORTS_SPEC: Spec = Spec {
        value_size: None,
        ..of::<u32, u32>("TX_PORTS", MAX_TX_PORTS)
    };

    /// Every map, in the order vipctl lists them.
    pub const SPECS: [Spec; 9] = [
        VIPS_SPEC,
        SERVICES_SPEC,
        LOOKUP_SPEC,
        BACKENDS_SPEC,
        FLOWS_SPEC,
        COUNTERS_SPEC,
        BACKEND_STATS_SPEC,
        HEARTBEAT_SPEC,
        TX_PORTS_SPEC,
    ];

    pub const VIPS: &str = VIPS_SPEC.name;
    pub const SERVICES: &str = SERVICES_SPEC.name;
    pub const LOOKUP: &str = LOOKUP_SPEC.name;
    pub const BACKENDS: &str = BACKENDS_SPEC.name;
    pub const FLOWS: &str = FLOWS_SPEC.name;
    pub const COUNTERS: &str = COUNTERS_SPEC.name;
    pub const BACKEND_STATS: &str = BACKEND_STATS_SPEC.name;
    pub const HEARTBEAT: &str = HEARTBEAT_SPEC.name;
    pub const TX_PORTS: &str = TX_PORTS_SPEC.name;

    /// Every map's name, in the order of [`SPECS`].
    pub const ALL: [&str; 9] = {
        let mut names = [""; 9];
        let mut i = 0;
        while i < SPECS.len() {
            names[i] = SPECS[i].name;
            i += 1;
        }
        names
    };
}

/// Program names inside the object file.
pub mod programs {
    /// The load balancer.
    pub const VIP_XDP: &str = "vip_xdp";
    /// A program that returns `XDP_PASS` and nothing else: the baseline for the
    /// per-packet benchmark, and what gives a veth peer the NAPI it needs to
    /// receive `XDP_TX` frames.
    pub const PASS: &str = "vip_pass";
    /// The least an XDP forwarder can do, the benchmarks' forwarding
    /// baseline: the MACs of backend 0 written into the frame, `XDP_TX`. No
    /// parsing, no state, no counters.
    pub const MIN_FWD: &str = "vip_min_fwd";
    /// Returns `XDP_DROP`: the receiving end of the throughput benchmark
    /// (frames are counted by the veth's own statistics).
    pub const DROP: &str = "vip_drop";
    /// Every program the object holds; the agent loads (verifies) them all.
    pub const ALL: [&str; 4] = [VIP_XDP, PASS, MIN_FWD, DROP];
}

/// Maglev lookup-table size per half: prime, and at least 100 x
/// [`MAX_BACKENDS_PER_SERVICE`] so the table stays balanced within 1 %.
pub const LOOKUP_SIZE: u32 = 65_537;
/// Services ((VIP, port, protocol) triples) per node.
pub const MAX_SERVICES: u32 = 16;
/// Backends per service (bounded by [`LOOKUP_SIZE`] / 100).
pub const MAX_BACKENDS_PER_SERVICE: u32 = 256;
/// Backend ids per node (a backend id names one backend of one service):
/// enough for every service to be full.
pub const MAX_BACKENDS: u32 = MAX_SERVICES * MAX_BACKENDS_PER_SERVICE;
const _: () = assert!(
    MAX_BACKENDS >= MAX_SERVICES * MAX_BACKENDS_PER_SERVICE,
    "a valid config always fits the backend ids (config/validate/service.rs checks no total)"
);
/// VIPs per node.
pub const MAX_VIPS: u32 = 64;
/// Flows tracked per node (LRU: the least recently used is evicted).
pub const MAX_FLOWS: u32 = 65_536;
/// Interfaces a backend can be reached through.
pub const MAX_TX_PORTS: u32 = 64;
/// A lookup-table slot with no backend (the service has no usable backend).
pub const NO_BACKEND: u32 = u32::MAX;

/// A transport protocol vip forwards, by its IP protocol number (the
/// number [`ServiceKey::proto`] and [`FlowKey::proto`] store). In config and
/// vipctl it is spelled `"tcp"` or `"udp"`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "user", serde(rename_all = "lowercase"))]
pub enum Proto {
    #[default]
    Tcp = 6,
    Udp = 17,
}

impl Proto {
    /// The IP protocol number.
    #[must_use]
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// The protocol of an IP protocol number, if vip forwards it.
    #[must_use]
    pub const fn from_number(n: u8) -> Option<Self> {
        match n {
            PROTO_TCP => Some(Self::Tcp),
            PROTO_UDP => Some(Self::Udp),
            _ => None,
        }
    }

    /// `"tcp"` or `"udp"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

impl core::fmt::Display for Proto {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// [`Proto::Tcp`]'s number, for matching on an IP header's protocol field.
pub const PROTO_TCP: u8 = Proto::Tcp as u8;
/// [`Proto::Udp`]'s number.
pub const PROTO_UDP: u8 = Proto::Udp as u8;

/// Per-CPU counter indices. Every packet the program sees increments
/// [`counter::RX`] and exactly one verdict counter (`counter::VERDICTS`), so
/// the verdict counters always add up to `RX`.
/// Declares the counters in order: each index constant with its doc, and
/// [`counter::COUNT`] and [`counter::NAMES`] from the same list, so an index
/// and its name cannot drift apart.
macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident = $text:literal,)*) => {
        counters!(@index 0; $($(#[$doc])* $name,)*);
        /// Size of the counter array.
        #[expect(clippy::cast_possible_truncation, reason = "a few counters")]
        pub const COUNT: u32 = NAMES.len() as u32;
        /// Stable, Prometheus-friendly names, indexed by counter.
        pub const NAMES: [&str; [$($text),*].len()] = [$($text),*];
    };
    (@index $n:expr; $(#[$doc:meta])* $name:ident, $($rest:tt)*) => {
        $(#[$doc])*
        pub const $name: u32 = $n;
        counters!(@index $n + 1; $($rest)*);
    };
    (@index $n:expr;) => {};
}

pub mod counter {
    counters! {
        /// Every packet the program saw.
        RX = "rx",
        /// ARP request for an active VIP answered in place (`XDP_TX`).
        ARP_REPLY = "arp_reply",
        /// ICMP echo request to an active VIP answered in place (`XDP_TX`).
        ICMP_ECHO_REPLY = "icmp_echo_reply",
        /// Forwarded to a backend on the receiving link (`XDP_TX`).
        FWD_TX = "fwd_tx",
        /// Forwarded to a backend on another link (`XDP_REDIRECT`).
        FWD_REDIRECT = "fwd_redirect",
        /// For a backend on this node (VIP on `lo`): `XDP_PASS`.
        PASS_LOCAL = "pass_local",
        /// Not for a VIP, or for a VIP on a port or protocol with no service
        /// (VRRP, management traffic, ...): `XDP_PASS`.
        PASS_OTHER = "pass_other",
        /// For a VIP this node does not hold now (backup): `XDP_PASS`.
        PASS_INACTIVE = "pass_inactive",
        /// For an active VIP while the agent's heartbeat is stale: `XDP_PASS`.
        PASS_STALE = "pass_stale",
        /// IPv4 fragment for a VIP (no ports to steer by): `XDP_PASS`.
        PASS_FRAGMENT = "pass_fragment",
        /// Too short or odd to tell whether it is for us: `XDP_PASS`.
        PASS_MALFORMED = "pass_malformed",
        /// For a VIP, but malformed (bad IHL, length, TCP data offset,
        /// truncated header): `XDP_DROP`.
        DROP_MALFORMED = "drop_malformed",
        /// For a service that has no usable backend: `XDP_DROP`.
        DROP_NO_BACKEND = "drop_no_backend",
        /// A redirect the kernel refused (device gone): `XDP_DROP`.
        DROP_REDIRECT = "drop_redirect",
        /// A TCP segment of a flow whose backend health checks declared down,
        /// answered with an RST in place so the client reconnects at once
        /// ([`crate::SERVICE_RESET_ON_DOWN`]): `XDP_TX`.
        TCP_RESET = "tcp_reset",
        /// An ARP request or ICMP echo request for an active VIP from a
        /// source no host can have: 0.0.0.0/8 (except the RFC 5227 probe,
        /// an ARP request from 0.0.0.0, which is answered), 127.0.0.0/8,
        /// multicast, reserved or broadcast (224.0.0.0 and above), a VIP of
        /// this node, or a multicast or broadcast sender MAC. Not answered:
        /// `XDP_DROP` (this node's stack does not hold the VIP either).
        DROP_MARTIAN = "drop_martian",
        /// An ICMP destination-unreachable or time-exceeded message to an
        /// active VIP that quotes no flow of a service: the quoted packet
        /// is not from that VIP, not TCP or UDP, a non-first fragment, or
        /// from a port with no service. `XDP_PASS`, as before vip steered
        /// such messages.
        PASS_ICMP_OTHER = "pass_icmp_other",
        /// An ARP request or IPv4 packet for a VIP that arrived on another
        /// VLAN than the VIP's (`[[vrrp]] vips = [{ address, vlan }]`; an
        /// untagged or VID-0 frame is on no VLAN): not for us, `XDP_PASS`.
        VLAN_MISMATCH = "vlan_mismatch",
        /// Not a verdict: a forwarded packet whose flow was in the flow table.
        FLOW_HIT = "flow_hit",
        /// Not a verdict: a forwarded packet that created a flow-table entry.
        FLOW_NEW = "flow_new",
        /// Not a verdict: a TCP segment of an established connection (no
        /// SYN, or SYN with ACK) for a service whose flow was not in the
        /// flow table, so the lookup table placed it. The symptom of a flow
        /// table too small for the load (LRU evictions, see `[node]
        /// flow_table_size`) or of connections older than the table.
        FLOW_MISS = "flow_miss",
        /// Not a verdict: an ICMP destination-unreachable (fragmentation
        /// needed, ...) or time-exceeded message about a VIP flow (a
        /// backend's direct reply that a router could not deliver), sent on
        /// to the backend that owns the flow, so path-MTU discovery works
        /// through DSR. Its verdict is the forwarding one (`fwd_tx`, ...).
        ICMP_TO_BACKEND = "icmp_to_backend",
    }

    /// The verdict counters: exactly one moves per packet.
    pub const VERDICTS: core::ops::Range<u32> = ARP_REPLY..FLOW_HIT;
}

/// Value of [`maps::VIPS`]: whether this node answers for the VIP now, and
/// with which MAC.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct VipState {
    /// MAC that ARP replies and forwarded frames carry as source.
    pub mac: [u8; 6],
    /// 1: this node holds the VIP (answers ARP and ICMP echo, forwards).
    pub active: u8,
    pub _pad: u8,
    /// The 802.1Q VLAN id (1..=4094) the VIP is answered and forwarded on,
    /// host order; 0: untagged (or priority-tagged, VID 0) frames only. A
    /// frame on another VLAN is not for this VIP
    /// ([`counter::VLAN_MISMATCH`]).
    pub vlan: u16,
}

/// Key of [`maps::SERVICES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct ServiceKey {
    /// VIP, network byte order (`u32::from_ne_bytes(addr.octets())`).
    pub vip: u32,
    /// Destination port, network byte order.
    pub port: u16,
    /// A [`Proto`]'s number.
    pub proto: u8,
    pub _pad: u8,
}

impl ServiceKey {
    /// The key of the service at `vip` (its address bytes), `port` (host
    /// order) and `proto`.
    #[must_use]
    pub const fn new(vip: [u8; 4], port: u16, proto: Proto) -> Self {
        Self {
            vip: u32::from_ne_bytes(vip),
            port: port.to_be(),
            proto: proto.number(),
            _pad: 0,
        }
    }
}

/// Value of [`maps::SERVICES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Service {
    /// Index of the service: its lookup-table halves are `id * 2` and `id * 2 + 1`.
    pub id: u32,
    /// 0 or 1: which half the program reads. The agent fills the other half,
    /// then replaces this value: that write is the atomic table switch.
    pub live_half: u32,
    /// Slots in use per half (equals [`LOOKUP_SIZE`]); read from the map so the
    /// bounds check on the slot index survives optimisation.
    pub table_size: u32,
    /// `SERVICE_*` flags.
    pub flags: u32,
}

/// One half of a service's Maglev lookup table: backend id per slot.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LookupHalf {
    pub slots: [u32; LOOKUP_SIZE as usize],
}

// SAFETY: a `#[repr(C)]` array of `u32`: no padding, every bit pattern valid.
unsafe impl Zeroable for LookupHalf {}
// SAFETY: as above.
unsafe impl Pod for LookupHalf {}

/// The backend answers through this node's lookup table (set for every
/// configured backend; cleared when it is removed).
pub const BACKEND_ENABLED: u32 = 1;
/// The backend runs on this node (VIP on `lo`): hand its packets to the stack.
pub const BACKEND_LOCAL: u32 = 1 << 1;
/// Draining: keeps its flows, takes no new ones (it is absent from the table).
pub const BACKEND_DRAINING: u32 = 1 << 2;
/// Health checks declared it down: absent from the table; packets of its
/// flows follow the service's `SERVICE_*_ON_DOWN` policy.
pub const BACKEND_DOWN: u32 = 1 << 3;

/// `Service::flags`: a TCP segment of a flow whose backend is down is
/// answered with an RST (`on_backend_down = "reset"`).
pub const SERVICE_RESET_ON_DOWN: u32 = 1;
/// `Service::flags`: a flow whose backend is down is placed anew by the table
/// (`on_backend_down = "rehash"`). Neither flag: the flow keeps its backend
/// (`"keep"`).
pub const SERVICE_REHASH_ON_DOWN: u32 = 1 << 1;

/// Value of [`maps::BACKENDS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Backend {
    /// Backend address, network byte order.
    pub addr: u32,
    /// Interface the backend is reached through.
    pub ifindex: u32,
    /// Backend MAC: destination of forwarded frames.
    pub mac: [u8; 6],
    /// MAC of `ifindex`: source of forwarded frames.
    pub src_mac: [u8; 6],
    /// `BACKEND_*` flags.
    pub flags: u32,
    /// Id of the service this backend belongs to.
    pub service: u32,
}

/// Key of [`maps::FLOWS`]: the 5-tuple, addresses and ports in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FlowKey {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    // Two fields, not `[u8; 3]`: the XDP program zeroes them with two
    // stores, where a 3-byte array costs it a call to `memset`.
    pub _pad0: u8,
    pub _pad1: u16,
}

impl FlowKey {
    /// The flow `src:sport -> dst:dport` over `proto` (addresses as their
    /// bytes, ports in host order).
    #[must_use]
    pub const fn new(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, proto: Proto) -> Self {
        Self {
            src: u32::from_ne_bytes(src),
            dst: u32::from_ne_bytes(dst),
            sport: sport.to_be(),
            dport: dport.to_be(),
            proto: proto.number(),
            _pad0: 0,
            _pad1: 0,
        }
    }
}

/// Value of [`maps::FLOWS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FlowValue {
    /// Backend id the flow is pinned to.
    pub backend: u32,
    /// Service id the flow belongs to.
    pub service: u32,
}

/// Per-CPU value of [`maps::BACKEND_STATS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BackendStats {
    pub packets: u64,
    pub bytes: u64,
}

/// Value of [`maps::HEARTBEAT`]: the dead-man switch. The program acts for
/// VIPs only while `now - stamp_ns <= dead_after_ns`. The agent stamps
/// `CLOCK_MONOTONIC`; the program reads its coarse form
/// (`bpf_ktime_get_coarse_ns`, the same clock as of the last tick: no
/// clock-source read, which cost a fifth of a forwarded packet's time on a
/// VM), so "now" may be up to a tick (4 ms at `HZ=250`) behind the stamp
/// (fresh) or behind the truth (the switch trips up to a tick late). All
/// zero (never stamped) means stale.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Heartbeat {
    pub stamp_ns: u64,
    pub dead_after_ns: u64,
}

impl Heartbeat {
    /// Whether the agent's stamp is fresh at `now_ns`.
    #[inline(always)]
    #[must_use]
    pub fn is_fresh(&self, now_ns: u64) -> bool {
        self.stamp_ns != 0 && now_ns.saturating_sub(self.stamp_ns) <= self.dead_after_ns
    }
}

/// murmur3's 32-bit finaliser.
#[inline(always)]
const fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The hash that picks a lookup-table slot for a new flow. Every node computes
/// the same value for the same packet, so a flow lands on the same backend
/// whichever node is master.
#[inline(always)]
#[must_use]
pub const fn flow_hash(key: &FlowKey) -> u32 {
    let mut h = 0x9e37_79b9_u32;
    h = fmix32(h ^ key.src);
    h = fmix32(h ^ key.dst);
    h = fmix32(h ^ ((key.sport as u32) << 16 | key.dport as u32));
    fmix32(h ^ key.proto as u32)
}

#[cfg(feature = "user")]
mod user {
    // SAFETY (all): `#[repr(C)]`, `bytemuck::Pod` (no padding, any bit pattern valid).
    unsafe impl aya::Pod for super::VipState {}
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::Service {}
    unsafe impl aya::Pod for super::LookupHalf {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowValue {}
    unsafe impl aya::Pod for super::BackendStats {}
    unsafe impl aya::Pod for super::Heartbeat {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_is_fresh_up_to_its_dead_time_and_ahead_of_the_coarse_clock() {
        let hb = Heartbeat {
            stamp_ns: 1_000_000_000,
            dead_after_ns: 45_000_000,
        };
        assert!(hb.is_fresh(1_000_000_000));
        assert!(hb.is_fresh(1_045_000_000));
        assert!(!hb.is_fresh(1_045_000_001));
        // The coarse clock lags the agent's stamp by up to a tick.
        assert!(hb.is_fresh(996_000_000));
        assert!(!Heartbeat::default().is_fresh(1));
    }

    #[test]
    fn a_proto_is_its_ip_protocol_number_and_its_config_name() {
        for (p, n, name) in [(Proto::Tcp, 6, "tcp"), (Proto::Udp, 17, "udp")] {
            assert_eq!(p.number(), n);
            assert_eq!(Proto::from_number(n), Some(p));
            assert_eq!(p.name(), name);
        }
        assert_eq!(Proto::from_number(1), None, "ICMP is not forwarded");
        let key = ServiceKey::new([10, 99, 0, 100], 5672, Proto::Udp);
        assert_eq!((key.proto, key.port), (17, 5672u16.to_be()));
    }

    #[test]
    fn verdicts_and_events_are_apart() {
        for c in [
            counter::DROP_MARTIAN,
            counter::PASS_ICMP_OTHER,
            counter::VLAN_MISMATCH,
        ] {
            assert!(
                counter::VERDICTS.contains(&c),
                "{}",
                counter::NAMES[c as usize]
            );
        }
        for c in [
            counter::RX,
            counter::FLOW_HIT,
            counter::FLOW_NEW,
            counter::FLOW_MISS,
            counter::ICMP_TO_BACKEND,
        ] {
            assert!(
                !counter::VERDICTS.contains(&c),
                "{}",
                counter::NAMES[c as usize]
            );
        }
        assert_eq!(counter::NAMES[counter::FLOW_MISS as usize], "flow_miss");
        assert_eq!(
            counter::NAMES[counter::VLAN_MISMATCH as usize],
            "vlan_mismatch"
        );
        assert_eq!(counter::COUNT as usize, counter::NAMES.len());
    }
}
