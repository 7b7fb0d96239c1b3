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

/// Map names. The XDP program declares its maps under these names, the agent
/// pins them under `<bpffs>/vip/<node name>/<MAP>` and vipctl reads them there.
pub mod maps {
    /// VIP address -> [`super::VipState`].
    pub const VIPS: &str = "VIPS";
    /// [`super::ServiceKey`] -> [`super::Service`].
    pub const SERVICES: &str = "SERVICES";
    /// `service id * 2 + half` -> [`super::LookupHalf`].
    pub const LOOKUP: &str = "LOOKUP";
    /// backend id -> [`super::Backend`].
    pub const BACKENDS: &str = "BACKENDS";
    /// [`super::FlowKey`] -> [`super::FlowValue`], LRU.
    pub const FLOWS: &str = "FLOWS";
    /// per-CPU `u64` counters indexed by [`super::counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// per-CPU [`super::BackendStats`] indexed by backend id.
    pub const BACKEND_STATS: &str = "BACKEND_STATS";
    /// one [`super::Heartbeat`] at index 0.
    pub const HEARTBEAT: &str = "HEARTBEAT";
    /// devmap (hash) keyed by ifindex, for backends behind another link.
    pub const TX_PORTS: &str = "TX_PORTS";

    /// Every map, in the order vipctl lists them.
    pub const ALL: [&str; 9] = [
        VIPS,
        SERVICES,
        LOOKUP,
        BACKENDS,
        FLOWS,
        COUNTERS,
        BACKEND_STATS,
        HEARTBEAT,
        TX_PORTS,
    ];
}

/// Program names inside the object file.
pub mod programs {
    /// The load balancer.
    pub const VIP_XDP: &str = "vip_xdp";
    /// A program that returns `XDP_PASS` and nothing else: the baseline for the
    /// per-packet benchmark, and what gives a veth peer the NAPI it needs to
    /// receive `XDP_TX` frames.
    pub const PASS: &str = "vip_pass";
}

/// Maglev lookup-table size per half: prime, and at least 100 x
/// [`MAX_BACKENDS_PER_SERVICE`] so the table stays balanced within 1 %.
pub const LOOKUP_SIZE: u32 = 65_537;
/// Services ((VIP, port, protocol) triples) per node.
pub const MAX_SERVICES: u32 = 16;
/// Backends per service (bounded by [`LOOKUP_SIZE`] / 100).
pub const MAX_BACKENDS_PER_SERVICE: u32 = 256;
/// Backend ids per node (a backend id names one backend of one service).
pub const MAX_BACKENDS: u32 = 1024;
/// VIPs per node.
pub const MAX_VIPS: u32 = 64;
/// Flows tracked per node (LRU: the least recently used is evicted).
pub const MAX_FLOWS: u32 = 65_536;
/// Interfaces a backend can be reached through.
pub const MAX_TX_PORTS: u32 = 64;
/// A lookup-table slot with no backend (the service has no usable backend).
pub const NO_BACKEND: u32 = u32::MAX;

/// IP protocol numbers as stored in [`ServiceKey::proto`] and [`FlowKey::proto`].
pub const PROTO_TCP: u8 = 6;
/// See [`PROTO_TCP`].
pub const PROTO_UDP: u8 = 17;

/// Per-CPU counter indices. Every packet the program sees increments
/// [`counter::RX`] and exactly one verdict counter (`counter::VERDICTS`), so
/// the verdict counters always add up to `RX`.
pub mod counter {
    /// Every packet the program saw.
    pub const RX: u32 = 0;
    /// ARP request for an active VIP answered in place (`XDP_TX`).
    pub const ARP_REPLY: u32 = 1;
    /// ICMP echo request to an active VIP answered in place (`XDP_TX`).
    pub const ICMP_ECHO_REPLY: u32 = 2;
    /// Forwarded to a backend on the receiving link (`XDP_TX`).
    pub const FWD_TX: u32 = 3;
    /// Forwarded to a backend on another link (`XDP_REDIRECT`).
    pub const FWD_REDIRECT: u32 = 4;
    /// For a backend on this node (VIP on `lo`): `XDP_PASS`.
    pub const PASS_LOCAL: u32 = 5;
    /// Not for a VIP, or for a VIP on a port or protocol with no service
    /// (VRRP, management traffic, ...): `XDP_PASS`.
    pub const PASS_OTHER: u32 = 6;
    /// For a VIP this node does not hold now (backup): `XDP_PASS`.
    pub const PASS_INACTIVE: u32 = 7;
    /// For an active VIP while the agent's heartbeat is stale: `XDP_PASS`.
    pub const PASS_STALE: u32 = 8;
    /// IPv4 fragment for a VIP (no ports to steer by): `XDP_PASS`.
    pub const PASS_FRAGMENT: u32 = 9;
    /// Too short or odd to tell whether it is for us: `XDP_PASS`.
    pub const PASS_MALFORMED: u32 = 10;
    /// For a VIP, but malformed (bad IHL, length, TCP data offset,
    /// truncated header): `XDP_DROP`.
    pub const DROP_MALFORMED: u32 = 11;
    /// For a service that has no usable backend: `XDP_DROP`.
    pub const DROP_NO_BACKEND: u32 = 12;
    /// A redirect the kernel refused (device gone): `XDP_DROP`.
    pub const DROP_REDIRECT: u32 = 13;
    /// A TCP segment of a flow whose backend health checks declared down,
    /// answered with an RST in place so the client reconnects at once
    /// ([`crate::SERVICE_RESET_ON_DOWN`]): `XDP_TX`.
    pub const TCP_RESET: u32 = 14;
    /// Not a verdict: a forwarded packet whose flow was in the flow table.
    pub const FLOW_HIT: u32 = 15;
    /// Not a verdict: a forwarded packet that created a flow-table entry.
    pub const FLOW_NEW: u32 = 16;

    /// Size of the counter array.
    pub const COUNT: u32 = 17;
    /// The verdict counters: exactly one moves per packet.
    pub const VERDICTS: core::ops::Range<u32> = ARP_REPLY..FLOW_HIT;

    /// Stable, Prometheus-friendly names, indexed by counter.
    pub const NAMES: [&str; COUNT as usize] = [
        "rx",
        "arp_reply",
        "icmp_echo_reply",
        "fwd_tx",
        "fwd_redirect",
        "pass_local",
        "pass_other",
        "pass_inactive",
        "pass_stale",
        "pass_fragment",
        "pass_malformed",
        "drop_malformed",
        "drop_no_backend",
        "drop_redirect",
        "tcp_reset",
        "flow_hit",
        "flow_new",
    ];
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
}

/// Key of [`maps::SERVICES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct ServiceKey {
    /// VIP, network byte order (`u32::from_ne_bytes(addr.octets())`).
    pub vip: u32,
    /// Destination port, network byte order.
    pub port: u16,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
    pub _pad: u8,
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
    pub _pad: [u8; 3],
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
/// VIPs only while `now - stamp_ns <= dead_after_ns` (`CLOCK_MONOTONIC`, which
/// is what `bpf_ktime_get_ns` reads). All zero (never stamped) means stale.
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
        self.stamp_ns != 0 && now_ns.wrapping_sub(self.stamp_ns) <= self.dead_after_ns
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
