//! The vip XDP program. Per frame: Ethernet (one optional 802.1Q tag), then
//! - ARP request for an active VIP: rewritten into the reply in place, `XDP_TX`;
//! - ICMP echo request to an active VIP: rewritten into the reply, `XDP_TX`;
//!   either of these from a martian source (0.0.0.0 but an ARP probe,
//!   broadcast, multicast, a VIP, a group MAC): `XDP_DROP`;
//! - ICMP destination-unreachable or time-exceeded to an active VIP that
//!   quotes a VIP flow (a backend's reply a router could not deliver): sent
//!   on to the flow's backend, so path-MTU discovery works through DSR;
//! - TCP/UDP to a configured (VIP, port): flow table, else the service's live
//!   Maglev half; MACs rewritten; `XDP_TX` (same link), `XDP_REDIRECT` (other
//!   link) or `XDP_PASS` (backend on this node);
//! - any of these for a VIP on another 802.1Q VLAN than the frame's (an
//!   untagged or VID-0 frame is on none): `XDP_PASS` (`vlan_mismatch`);
//! - everything else: `XDP_PASS`.
//!
//! Every frame moves `RX` and exactly one verdict counter. No policy lives here:
//! the agent decides what is active and which backends are in the tables.
#![no_std]
#![no_main]

mod headers;

use aya_ebpf::{
    bindings::{
        BPF_F_NO_PREALLOC,
        xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
    },
    helpers::{bpf_ktime_get_coarse_ns, bpf_xdp_adjust_tail},
    macros::{map, xdp},
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use headers::{
    ARP_HTYPE_ETHER, ARP_OP_REPLY, ARP_OP_REQUEST, ArpHdr, ETH_P_8021Q, ETH_P_ARP, ETH_P_IPV4,
    EthHdr, ICMP_DEST_UNREACH, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_TIME_EXCEEDED,
    IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IcmpHdr, Ipv4Hdr, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
    TcpHdr, UdpHdr, VLAN_VID_MASK, VlanHdr, csum_replace, ptr_at, tcp_checksum,
};
use vip_common::{
    BACKEND_DOWN, BACKEND_ENABLED, BACKEND_LOCAL, Backend, BackendStats, FlowKey, FlowValue,
    Heartbeat, LOOKUP_SIZE, LookupHalf, NO_BACKEND, SERVICE_REHASH_ON_DOWN, SERVICE_RESET_ON_DOWN,
    Service, ServiceKey, VipState, counter, flow_hash, maps,
};

// Each map's name is its spec's (`vip_common::maps`; the macro takes only a
// literal, and a test of the agent checks the object against the table).

/// Which VIPs exist, whether this node holds each one now, and its MAC.
#[map(name = "VIPS")]
static VIPS: HashMap<u32, VipState> =
    HashMap::with_max_entries(maps::VIPS_SPEC.max_entries, BPF_F_NO_PREALLOC);

/// (VIP, port, protocol) -> service id and live table half; a write of one
/// value switches the table (no-prealloc: readers keep the old value via RCU).
#[map(name = "SERVICES")]
static SERVICES: HashMap<ServiceKey, Service> =
    HashMap::with_max_entries(maps::SERVICES_SPEC.max_entries, BPF_F_NO_PREALLOC);

/// Two Maglev halves per service: the agent fills the idle one, then flips.
#[map(name = "LOOKUP")]
static LOOKUP: Array<LookupHalf> = Array::with_max_entries(maps::LOOKUP_SPEC.max_entries, 0);

/// Backend id -> address, MACs, egress interface, flags.
#[map(name = "BACKENDS")]
static BACKENDS: Array<Backend> = Array::with_max_entries(maps::BACKENDS_SPEC.max_entries, 0);

/// 5-tuple -> backend, so flows stay put when the backend set changes.
#[map(name = "FLOWS")]
static FLOWS: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(maps::FLOWS_SPEC.max_entries, 0);

/// Verdict and event counters (indices in `vip_common::counter`).
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(maps::COUNTERS_SPEC.max_entries, 0);

/// Packets and bytes forwarded per backend id.
#[map(name = "BACKEND_STATS")]
static BACKEND_STATS: PerCpuArray<BackendStats> =
    PerCpuArray::with_max_entries(maps::BACKEND_STATS_SPEC.max_entries, 0);

/// The agent's liveness stamp: a stale stamp turns this node passive.
#[map(name = "HEARTBEAT")]
static HEARTBEAT: Array<Heartbeat> = Array::with_max_entries(maps::HEARTBEAT_SPEC.max_entries, 0);

/// Interfaces that backends behind another link are reached through.
#[map(name = "TX_PORTS")]
static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(maps::TX_PORTS_SPEC.max_entries, 0);

/// An XDP action and the one verdict counter it moves.
#[derive(Clone, Copy)]
struct Verdict {
    action: u32,
    counter: u32,
}

const fn verdict(action: u32, counter: u32) -> Verdict {
    Verdict { action, counter }
}

const ARP_REPLY: Verdict = verdict(XDP_TX, counter::ARP_REPLY);
const ICMP_REPLY: Verdict = verdict(XDP_TX, counter::ICMP_ECHO_REPLY);
const FWD_TX: Verdict = verdict(XDP_TX, counter::FWD_TX);
const FWD_REDIRECT: Verdict = verdict(XDP_REDIRECT, counter::FWD_REDIRECT);
const PASS_LOCAL: Verdict = verdict(XDP_PASS, counter::PASS_LOCAL);
const PASS_OTHER: Verdict = verdict(XDP_PASS, counter::PASS_OTHER);
const PASS_INACTIVE: Verdict = verdict(XDP_PASS, counter::PASS_INACTIVE);
const PASS_STALE: Verdict = verdict(XDP_PASS, counter::PASS_STALE);
const PASS_FRAGMENT: Verdict = verdict(XDP_PASS, counter::PASS_FRAGMENT);
const PASS_MALFORMED: Verdict = verdict(XDP_PASS, counter::PASS_MALFORMED);
const DROP_MALFORMED: Verdict = verdict(XDP_DROP, counter::DROP_MALFORMED);
const DROP_NO_BACKEND: Verdict = verdict(XDP_DROP, counter::DROP_NO_BACKEND);
const DROP_REDIRECT: Verdict = verdict(XDP_DROP, counter::DROP_REDIRECT);
const TCP_RESET: Verdict = verdict(XDP_TX, counter::TCP_RESET);
const DROP_MARTIAN: Verdict = verdict(XDP_DROP, counter::DROP_MARTIAN);
const PASS_ICMP_OTHER: Verdict = verdict(XDP_PASS, counter::PASS_ICMP_OTHER);
const VLAN_MISMATCH: Verdict = verdict(XDP_PASS, counter::VLAN_MISMATCH);

/// What `forward` decided.
enum Steer {
    Done(Verdict),
    /// The flow's backend is down and the service resets: answer with an RST.
    Reset,
}

#[xdp]
pub fn vip_xdp(ctx: XdpContext) -> u32 {
    count(counter::RX);
    let v = process(&ctx);
    count(v.counter);
    v.action
}

/// The benchmark baseline, and the program that gives a veth peer NAPI.
#[xdp]
pub fn vip_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

/// The forwarding baseline of the benchmarks (`vip_common::programs::MIN_FWD`):
/// backend 0's MACs, `XDP_TX`.
#[xdp]
pub fn vip_min_fwd(ctx: XdpContext) -> u32 {
    let (Some(eth), Some(b)) = (ptr_at::<EthHdr>(&ctx, 0), backend(0)) else {
        return XDP_PASS;
    };
    // SAFETY: bounds-checked by ptr_at.
    let eth = unsafe { &mut *eth };
    set_mac(&mut eth.dst, b.mac);
    set_mac(&mut eth.src, b.src_mac);
    XDP_TX
}

/// The receiving end of the throughput benchmark.
#[xdp]
pub fn vip_drop(_ctx: XdpContext) -> u32 {
    XDP_DROP
}

#[inline(always)]
fn count(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn heartbeat_fresh() -> bool {
    match HEARTBEAT.get(0) {
        // SAFETY: the helper has no preconditions. Coarse: see `Heartbeat`.
        Some(hb) => hb.is_fresh(unsafe { bpf_ktime_get_coarse_ns() }),
        None => false,
    }
}

/// The VIP's state when `addr` is a VIP this node knows.
#[inline(always)]
fn vip_state(addr: u32) -> Option<VipState> {
    // SAFETY: a no-prealloc hash map: the element stays valid under RCU while
    // we run, and it is copied out at once.
    VIPS.get_ptr(&addr).map(|p| unsafe { *p })
}

#[inline(always)]
fn process(ctx: &XdpContext) -> Verdict {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return PASS_MALFORMED;
    };
    let mut l3 = core::mem::size_of::<EthHdr>();
    // SAFETY: bounds-checked by ptr_at.
    let mut ethertype = unsafe { (*eth).ethertype };
    // The VLAN id the frame is on; 0 for an untagged or priority-tagged
    // (VID 0) frame. A second tag (QinQ, or 802.1ad's 0x88a8 outer tag)
    // leaves an ethertype below that is neither ARP nor IPv4: passed as
    // not ours (`pass_other`), since no VIP lives on a stacked VLAN.
    let mut vlan = 0;
    if ethertype == ETH_P_8021Q {
        let Some(tag) = ptr_at::<VlanHdr>(ctx, l3) else {
            return PASS_MALFORMED;
        };
        // SAFETY: bounds-checked by ptr_at.
        let tag = unsafe { &*tag };
        ethertype = tag.ethertype;
        vlan = u16::from_be_bytes(tag.tci) & VLAN_VID_MASK;
        l3 += core::mem::size_of::<VlanHdr>();
    }
    match ethertype {
        ETH_P_ARP => arp(ctx, eth, l3, vlan),
        ETH_P_IPV4 => ipv4(ctx, eth, l3, vlan),
        _ => PASS_OTHER,
    }
}

#[inline(always)]
fn arp(ctx: &XdpContext, eth: *mut EthHdr, off: usize, vlan: u16) -> Verdict {
    let Some(arp) = ptr_at::<ArpHdr>(ctx, off) else {
        return PASS_MALFORMED;
    };
    // SAFETY: bounds-checked by ptr_at; nothing else aliases the frame.
    let (eth, arp) = unsafe { (&mut *eth, &mut *arp) };
    if arp.htype != ARP_HTYPE_ETHER || arp.ptype != ETH_P_IPV4 || arp.hlen != 6 || arp.plen != 4 {
        return PASS_MALFORMED;
    }
    // Gratuitous requests (sender == target) are another node announcing
    // itself: never answer them.
    if arp.op != ARP_OP_REQUEST || arp.spa == arp.tpa {
        return PASS_OTHER;
    }
    let target = arp.tpa;
    let Some(vip) = vip_state(u32::from_ne_bytes(target)) else {
        return PASS_OTHER;
    };
    // Asked on another VLAN than the VIP's: the address there is someone
    // else's. The reply below is written in place, so the tag (VID and
    // priority) stays.
    if vip.vlan != vlan {
        return VLAN_MISMATCH;
    }
    if vip.active == 0 {
        return PASS_INACTIVE;
    }
    if !heartbeat_fresh() {
        return PASS_STALE;
    }
    // 0.0.0.0 is the sender of an RFC 5227 probe, which is answered (the
    // address is in use); any other martian sender is not.
    if martian_mac(eth.src) || martian_mac(arp.sha) || (arp.spa != [0; 4] && martian_ip(arp.spa)) {
        return DROP_MARTIAN;
    }
    set_mac(&mut eth.dst, arp.sha);
    set_mac(&mut eth.src, vip.mac);
    arp.op = ARP_OP_REPLY;
    set_mac(&mut arp.tha, arp.sha);
    arp.tpa = arp.spa;
    set_mac(&mut arp.sha, vip.mac);
    arp.spa = target;
    ARP_REPLY
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, eth: *mut EthHdr, off: usize, vlan: u16) -> Verdict {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, off) else {
        return PASS_MALFORMED;
    };
    // SAFETY: bounds-checked by ptr_at.
    let ip = unsafe { &mut *ip };
    let Some(vip) = vip_state(u32::from_ne_bytes(ip.daddr)) else {
        return PASS_OTHER;
    };
    // Echo, forwarding, ICMP errors and resets alike: only on the VIP's
    // VLAN. Every offset below starts at `off`, past the tag; answers and
    // forwarded frames rewrite only MACs and what follows the tag.
    if vip.vlan != vlan {
        return VLAN_MISMATCH;
    }
    if vip.active == 0 {
        return PASS_INACTIVE;
    }
    if !heartbeat_fresh() {
        return PASS_STALE;
    }
    if ip.ver_ihl >> 4 != 4 {
        return DROP_MALFORMED;
    }
    let hdr_len = usize::from(ip.ver_ihl & 0x0f) * 4;
    let tot_len = usize::from(u16::from_be_bytes(ip.tot_len));
    let avail = ctx.data_end() - ctx.data() - off;
    if hdr_len < 20 || tot_len < hdr_len || tot_len > avail {
        return DROP_MALFORMED;
    }
    // More-fragments or a non-zero offset: no reliable ports to steer by.
    if u16::from_be_bytes(ip.frag_off) & 0x3fff != 0 {
        return PASS_FRAGMENT;
    }
    let l4 = off + hdr_len;
    let l4_len = tot_len - hdr_len;
    match ip.proto {
        IPPROTO_TCP => {
            let Some(tcp) = ptr_at::<TcpHdr>(ctx, l4) else {
                return DROP_MALFORMED;
            };
            // SAFETY: bounds-checked by ptr_at.
            let tcp = unsafe { &*tcp };
            let doff = usize::from(tcp.doff_res >> 4) * 4;
            if doff < 20 || doff > l4_len {
                return DROP_MALFORMED;
            }
            // A SYN without ACK opens a new connection: it is placed by the
            // table even when a stale flow with the same 5-tuple (a reused
            // client port) is still in the LRU.
            let new_conn = tcp.flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
            match forward(ctx, eth, ip, tcp.sport, tcp.dport, IPPROTO_TCP, new_conn) {
                Steer::Done(v) => v,
                Steer::Reset => tcp_reset(ctx, eth, ip, l4, l4_len, doff, vip.mac),
            }
        }
        IPPROTO_UDP => {
            let Some(udp) = ptr_at::<UdpHdr>(ctx, l4) else {
                return DROP_MALFORMED;
            };
            // SAFETY: bounds-checked by ptr_at.
            let udp = unsafe { &*udp };
            let len = usize::from(u16::from_be_bytes(udp.len));
            if len < 8 || len > l4_len {
                return DROP_MALFORMED;
            }
            match forward(ctx, eth, ip, udp.sport, udp.dport, IPPROTO_UDP, false) {
                Steer::Done(v) => v,
                // No RST for UDP: config refuses "reset" for a UDP service.
                Steer::Reset => DROP_NO_BACKEND,
            }
        }
        IPPROTO_ICMP => {
            let Some(icmp) = ptr_at::<IcmpHdr>(ctx, l4) else {
                return DROP_MALFORMED;
            };
            if l4_len < 8 {
                return DROP_MALFORMED;
            }
            // SAFETY: bounds-checked by ptr_at.
            let icmp = unsafe { &mut *icmp };
            if icmp.kind == ICMP_DEST_UNREACH || icmp.kind == ICMP_TIME_EXCEEDED {
                return icmp_error(ctx, eth, ip, l4, l4_len);
            }
            if icmp.kind != ICMP_ECHO_REQUEST || icmp.code != 0 {
                return PASS_OTHER;
            }
            // SAFETY: checked by ptr_at in process().
            let eth = unsafe { &mut *eth };
            if martian_mac(eth.src) || martian_ip(ip.saddr) {
                return DROP_MARTIAN;
            }
            set_mac(&mut eth.dst, eth.src);
            set_mac(&mut eth.src, vip.mac);
            let daddr = ip.daddr;
            ip.daddr = ip.saddr;
            ip.saddr = daddr;
            // Swapping addresses keeps the IP checksum; the TTL is reset like
            // a host's own reply would be.
            let old = u16::from_be_bytes([ip.ttl, ip.proto]);
            ip.ttl = 64;
            ip.check = csum_replace(ip.check, old, u16::from_be_bytes([ip.ttl, ip.proto]));
            icmp.kind = ICMP_ECHO_REPLY;
            icmp.check = csum_replace(
                icmp.check,
                u16::from_be_bytes([ICMP_ECHO_REQUEST, 0]),
                u16::from_be_bytes([ICMP_ECHO_REPLY, 0]),
            );
            ICMP_REPLY
        }
        _ => PASS_OTHER,
    }
}

#[inline(always)]
fn forward(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ip: &Ipv4Hdr,
    sport: [u8; 2],
    dport: [u8; 2],
    proto: u8,
    new_conn: bool,
) -> Steer {
    let skey = ServiceKey {
        vip: u32::from_ne_bytes(ip.daddr),
        port: u16::from_ne_bytes(dport),
        proto,
        _pad: 0,
    };
    // SAFETY: no-prealloc hash map, copied out at once (see vip_state).
    let Some(svc) = SERVICES.get_ptr(&skey).map(|p| unsafe { *p }) else {
        return Steer::Done(PASS_OTHER);
    };
    let key = FlowKey {
        src: u32::from_ne_bytes(ip.saddr),
        dst: skey.vip,
        sport: u16::from_ne_bytes(sport),
        dport: skey.port,
        proto,
        _pad0: 0,
        _pad1: 0,
    };

    // SAFETY: LRU entries are copied out at once; a concurrent eviction can
    // at worst hand us a stale backend id, which is validated below.
    let flow = if new_conn {
        None
    } else {
        FLOWS
            .get_ptr(&key)
            .map(|p| unsafe { *p })
            .filter(|f| f.service == svc.id)
    };
    if !new_conn && proto == IPPROTO_TCP && flow.is_none() {
        count(counter::FLOW_MISS);
    }
    let mut kept = None;
    if let Some(flow) = flow
        && let Some(b) = backend(flow.backend)
        && b.flags & BACKEND_ENABLED != 0
    {
        // A flow whose backend is down: reset it, place it anew, or keep it.
        if b.flags & BACKEND_DOWN == 0 || svc.flags & SERVICE_REHASH_ON_DOWN == 0 {
            if b.flags & BACKEND_DOWN != 0 && svc.flags & SERVICE_RESET_ON_DOWN != 0 {
                return Steer::Reset;
            }
            kept = Some((flow.backend, b));
            count(counter::FLOW_HIT);
        }
    }
    let (id, b) = match kept {
        Some(kept) => kept,
        None => {
            let id = table_pick(&svc, &key);
            if id == NO_BACKEND {
                return Steer::Done(DROP_NO_BACKEND);
            }
            let value = FlowValue {
                backend: id,
                service: svc.id,
            };
            // A full LRU evicts the oldest flow; failure here only costs
            // stickiness.
            let _ = FLOWS.insert(&key, &value, 0);
            count(counter::FLOW_NEW);
            let Some(b) = backend(id) else {
                return Steer::Done(DROP_NO_BACKEND);
            };
            (id, b)
        }
    };
    Steer::Done(deliver(ctx, eth, id, b))
}

/// Sends the frame to backend `id` (whose entry is `b`): its stats moved,
/// the MACs rewritten towards it, and the verdict that reaches it.
#[inline(always)]
fn deliver(ctx: &XdpContext, eth: *mut EthHdr, id: u32, b: &Backend) -> Verdict {
    if b.flags & BACKEND_ENABLED == 0 {
        return DROP_NO_BACKEND;
    }
    if let Some(stats) = BACKEND_STATS.get_ptr_mut(id) {
        // SAFETY: per-CPU slot.
        unsafe {
            (*stats).packets += 1;
            (*stats).bytes += (ctx.data_end() - ctx.data()) as u64;
        }
    }
    if b.flags & BACKEND_LOCAL != 0 {
        return PASS_LOCAL;
    }
    // SAFETY: checked by ptr_at in process().
    let eth = unsafe { &mut *eth };
    set_mac(&mut eth.dst, b.mac);
    set_mac(&mut eth.src, b.src_mac);
    if b.ifindex == ctx.ingress_ifindex() as u32 {
        return FWD_TX;
    }
    match TX_PORTS.redirect(b.ifindex, 0) {
        Ok(XDP_REDIRECT) => FWD_REDIRECT,
        _ => DROP_REDIRECT,
    }
}

/// An ICMP destination-unreachable or time-exceeded message to an active
/// VIP (RFC 792). With DSR the VIP's flows are answered by the backends, so
/// a router that cannot deliver a backend's reply (fragmentation needed:
/// path-MTU discovery; TTL exceeded) sends its ICMP error to the VIP, which
/// this node's stack does not hold: it is sent on to the backend that owns
/// the quoted flow, as Katran does. The quote is the backend's packet
/// `VIP:port -> client:cport`, so the flow is the reversed tuple: the flow
/// table's entry, else the lookup table's pick for a new flow from that
/// client (the same backend while the backend set is unchanged). No flow is
/// created. A quote that runs past the message, or has no room for the
/// ports, is malformed (dropped); one that names no flow of a service is
/// passed ([`PASS_ICMP_OTHER`]).
#[inline(always)]
fn icmp_error(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ip: &Ipv4Hdr,
    l4: usize,
    l4_len: usize,
) -> Verdict {
    // The ICMP header is 8 bytes; the quoted IPv4 header follows it.
    let quoted = l4 + 8;
    let Some(inner) = ptr_at::<Ipv4Hdr>(ctx, quoted) else {
        return DROP_MALFORMED;
    };
    // SAFETY: bounds-checked by ptr_at.
    let inner = unsafe { &*inner };
    let inner_len = usize::from(inner.ver_ihl & 0x0f) * 4;
    if inner.ver_ihl >> 4 != 4 || inner_len < 20 || 8 + inner_len + 8 > l4_len {
        return DROP_MALFORMED;
    }
    // The first 8 bytes of a TCP or UDP header are both ports first.
    let Some(ports) = ptr_at::<UdpHdr>(ctx, quoted + inner_len) else {
        return DROP_MALFORMED;
    };
    // SAFETY: bounds-checked by ptr_at.
    let ports = unsafe { &*ports };
    if inner.saddr != ip.daddr
        || (inner.proto != IPPROTO_TCP && inner.proto != IPPROTO_UDP)
        || u16::from_be_bytes(inner.frag_off) & 0x1fff != 0
    {
        return PASS_ICMP_OTHER;
    }
    let skey = ServiceKey {
        vip: u32::from_ne_bytes(inner.saddr),
        port: u16::from_ne_bytes(ports.sport),
        proto: inner.proto,
        _pad: 0,
    };
    // SAFETY: no-prealloc hash map, copied out at once (see vip_state).
    let Some(svc) = SERVICES.get_ptr(&skey).map(|p| unsafe { *p }) else {
        return PASS_ICMP_OTHER;
    };
    let key = FlowKey {
        src: u32::from_ne_bytes(inner.daddr),
        dst: skey.vip,
        sport: u16::from_ne_bytes(ports.dport),
        dport: skey.port,
        proto: inner.proto,
        _pad0: 0,
        _pad1: 0,
    };
    let mut id = NO_BACKEND;
    // SAFETY: as in forward(): copied out at once, validated by deliver().
    if let Some(flow) = FLOWS.get_ptr(&key).map(|p| unsafe { *p })
        && flow.service == svc.id
    {
        id = flow.backend;
    }
    if id == NO_BACKEND {
        id = table_pick(&svc, &key);
        if id == NO_BACKEND {
            return DROP_NO_BACKEND;
        }
    }
    let Some(b) = backend(id) else {
        return DROP_NO_BACKEND;
    };
    let v = deliver(ctx, eth, id, b);
    if v.action != XDP_DROP {
        count(counter::ICMP_TO_BACKEND);
    }
    v
}

/// Rewrites a TCP segment into the RST a host without the connection sends
/// back (RFC 9293 §3.10.7.1), in place: addresses and ports swapped, the
/// segment cut to a bare 20-byte header, `XDP_TX`. The client's stack then
/// fails the connection at once and the AMQP client reconnects through the
/// VIP, instead of retransmitting into a dead backend until its heartbeat
/// or a TCP timeout gives up. An RST is never answered (dropped).
#[inline(always)]
fn tcp_reset(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ip: &mut Ipv4Hdr,
    l4: usize,
    l4_len: usize,
    doff: usize,
    mac: [u8; 6],
) -> Verdict {
    let Some(tcp) = ptr_at::<TcpHdr>(ctx, l4) else {
        return DROP_MALFORMED;
    };
    // SAFETY: bounds-checked by ptr_at.
    let tcp = unsafe { &mut *tcp };
    if tcp.flags & TCP_RST != 0 {
        return DROP_NO_BACKEND;
    }
    // With ACK: <SEQ=SEG.ACK><CTL=RST>. Without: <SEQ=0><ACK=SEG.SEQ+SEG.LEN>
    // <CTL=RST,ACK>, SYN and FIN each counting one.
    if tcp.flags & TCP_ACK != 0 {
        tcp.seq = tcp.ack;
        tcp.ack = [0; 4];
        tcp.flags = TCP_RST;
    } else {
        let mut len = (l4_len - doff) as u32;
        if tcp.flags & TCP_SYN != 0 {
            len += 1;
        }
        if tcp.flags & TCP_FIN != 0 {
            len += 1;
        }
        tcp.ack = u32::from_be_bytes(tcp.seq).wrapping_add(len).to_be_bytes();
        tcp.seq = [0; 4];
        tcp.flags = TCP_RST | TCP_ACK;
    }
    let sport = tcp.sport;
    tcp.sport = tcp.dport;
    tcp.dport = sport;
    tcp.doff_res = 5 << 4;
    tcp.window = [0; 2];
    tcp.urg = [0; 2];

    // SAFETY: checked by ptr_at in process().
    let eth = unsafe { &mut *eth };
    set_mac(&mut eth.dst, eth.src);
    set_mac(&mut eth.src, mac);
    let daddr = ip.daddr;
    ip.daddr = ip.saddr;
    ip.saddr = daddr;
    // IP options, if any, stay; only the total length and the TTL change.
    let hdr_len = usize::from(ip.ver_ihl & 0x0f) * 4;
    let old_len = u16::from_be_bytes(ip.tot_len);
    let new_len = (hdr_len + 20) as u16;
    ip.tot_len = new_len.to_be_bytes();
    ip.check = csum_replace(ip.check, old_len, new_len);
    let old = u16::from_be_bytes([ip.ttl, ip.proto]);
    ip.ttl = 64;
    ip.check = csum_replace(ip.check, old, u16::from_be_bytes([ip.ttl, ip.proto]));
    tcp.check = [0; 2];
    tcp.check = tcp_checksum(ip.saddr, ip.daddr, tcp);

    // Cut everything after the new header (payload, TCP options, and any
    // Ethernet padding).
    let keep = (l4 + 20) as i64;
    let len = ctx.data_end() - ctx.data();
    // SAFETY: a read of a local. Volatile so that LLVM cannot fold the
    // subtraction below into arithmetic on `data_end`, which the verifier
    // refuses ("pointer arithmetic on pkt_end prohibited").
    let have = unsafe { core::ptr::read_volatile(&len) } as i64;
    // SAFETY: shrinking only; the helper validates the new length.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, (keep - have) as i32) } != 0 {
        return DROP_MALFORMED;
    }
    TCP_RESET
}

/// Writes a MAC address byte by byte. A plain `dst = src` of a 6-byte array
/// compiles to a call of the BPF `memmove` routine, a loop: a tenth of a
/// forwarded packet's time, for two MACs. Volatile so that LLVM cannot merge
/// the stores back into that call.
#[inline(always)]
fn set_mac(dst: &mut [u8; 6], src: [u8; 6]) {
    let p = dst.as_mut_ptr();
    for (i, b) in src.into_iter().enumerate() {
        // SAFETY: i < 6, within `dst`.
        unsafe { core::ptr::write_volatile(p.add(i), b) };
    }
}

/// A source MAC no host sends from: multicast or broadcast (the group bit).
#[inline(always)]
fn martian_mac(mac: [u8; 6]) -> bool {
    mac[0] & 1 != 0
}

/// A source address no host sends from: 0.0.0.0/8, 127.0.0.0/8, multicast,
/// reserved and broadcast (224.0.0.0 and above), or one of this node's VIPs
/// (active or not: another node answering from our VIP is no client).
#[inline(always)]
fn martian_ip(addr: [u8; 4]) -> bool {
    addr[0] == 0
        || addr[0] == 127
        || addr[0] >= 224
        || vip_state(u32::from_ne_bytes(addr)).is_some()
}

/// The backend id the live lookup-table half gives this flow, or `NO_BACKEND`.
#[inline(always)]
fn table_pick(svc: &Service, key: &FlowKey) -> u32 {
    let Some(half) = LOOKUP.get_ptr(svc.id * 2 + (svc.live_half & 1)) else {
        return NO_BACKEND;
    };
    let size = svc.table_size;
    if size == 0 {
        return NO_BACKEND;
    }
    let slot = flow_hash(key) % size;
    if slot >= LOOKUP_SIZE {
        return NO_BACKEND;
    }
    // SAFETY: array map value, valid while we run; index bounded above.
    unsafe { *(*half).slots.as_ptr().add(slot as usize) }
}

/// Backend `id`'s entry, read in place (an array map's values live as long
/// as the map).
#[inline(always)]
fn backend(id: u32) -> Option<&'static Backend> {
    BACKENDS.get(id)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never run.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
