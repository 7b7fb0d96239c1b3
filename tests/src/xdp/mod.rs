//! The harness of the XDP program's tests (`tests/tests/xdp_program/`) and
//! its benchmark (`tests/benches/xdp.rs`), through `BPF_PROG_TEST_RUN`:
//! [`Fixture`], the program loaded in a private network namespace and
//! provisioned by the agent's own plan and apply; the addresses, MACs and
//! ports it serves; frames from its client; [`test_run`]; and the table
//! runner ([`Case`], [`check`]).
//!
//! Needs root (`CAP_BPF` + `CAP_NET_ADMIN`). A fixture lives on a thread that
//! has entered a fresh network namespace ([`in_private_netns`]), so the
//! program's ingress device (the namespace's `lo`, ifindex 1) and the veth
//! used for redirects are private.

mod case;
mod fixture;

use std::{fmt::Write as _, net::Ipv4Addr};

use aya::{
    TestRunResult,
    programs::{ProgramError, TestRun as _, TestRunOptions, Xdp},
};
use vip_common::{FlowKey, Proto};

pub use self::{
    case::{Case, Out, check},
    fixture::Fixture,
};
use crate::frames::{ETH_P_8021Q, ETH_P_ARP, ETH_P_IPV4, Ipv4, arp, ethernet, tcp, udp};

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// The VIP the fixture's services are on; active on this node.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
/// A VIP of a VRRP instance that is backup on this node.
pub const VIP_INACTIVE: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 101);
/// A VIP on 802.1Q VLAN [`VLAN`], of a VRRP instance that is master on this
/// node, with a service on [`AMQP`] over [`BACKENDS`].
pub const VIP_VLAN: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 102);
/// The VLAN id of [`VIP_VLAN`].
pub const VLAN: u16 = 100;
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);
/// An address on the LAN that is no VIP.
pub const OTHER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 50);
/// The node's address, and the local backend of [`AMQPS_LOCAL`].
pub const LB: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
pub const LB_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x02];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x0a];
pub const BROADCAST: [u8; 6] = [0xff; 6];
/// The backends of [`AMQP`] and [`DNS_UDP`], on the ingress link.
pub const BACKENDS: [(Ipv4Addr, [u8; 6]); 3] = [
    (Ipv4Addr::new(10, 99, 0, 11), [0x02, 0x99, 0, 0, 0, 0x0b]),
    (Ipv4Addr::new(10, 99, 0, 12), [0x02, 0x99, 0, 0, 0, 0x0c]),
    (Ipv4Addr::new(10, 99, 0, 13), [0x02, 0x99, 0, 0, 0, 0x0d]),
];
/// The backend of [`REMOTE_LINK`], behind veth `vr0`.
pub const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 11);
pub const REMOTE_MAC: [u8; 6] = [0x02, 0x98, 0, 0, 0, 0x0b];
/// The node's MAC on the link of [`REMOTE`].
pub const REMOTE_SRC_MAC: [u8; 6] = [0x02, 0x98, 0, 0, 0, 0x02];

/// The backend of [`EMPTY`], whose MAC the agent has not resolved.
pub const UNRESOLVED: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 14);

/// VIP:5672/tcp over [`BACKENDS`].
pub const AMQP: u16 = 5672;
/// VIP:5671/tcp over a backend on this node.
pub const AMQPS_LOCAL: u16 = 5671;
/// VIP:15672/tcp over [`REMOTE`].
pub const REMOTE_LINK: u16 = 15672;
/// VIP:15692/tcp, whose one backend ([`UNRESOLVED`]) has no known MAC: its
/// table is empty.
pub const EMPTY: u16 = 15692;
/// VIP:53/udp over [`BACKENDS`].
pub const DNS_UDP: u16 = 53;

/// Runs `f` on a thread inside a fresh, private network namespace.
pub fn in_private_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: only this thread changes namespace.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            );
            f()
        })
        .join()
        .expect("test thread panicked")
    })
}

/// Runs `f` on a fresh [`Fixture`] in a private network namespace; without
/// root, says so and returns without running it.
pub fn with_fixture(f: impl FnOnce(&mut Fixture) + Send) {
    if !crate::kit::is_root() {
        eprintln!("skipping: BPF_PROG_TEST_RUN needs root");
        return;
    }
    in_private_netns(|| f(&mut Fixture::up()));
}

/// One `BPF_PROG_TEST_RUN` of `prog` on `frame`, `repeat` times; the output
/// frame is the first `data_size_out` bytes of `out`.
pub fn test_run(
    prog: &Xdp,
    frame: &[u8],
    out: &mut [u8],
    repeat: u32,
) -> Result<TestRunResult, ProgramError> {
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(out),
        repeat,
        ..Default::default()
    })
}

#[must_use]
pub fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

#[must_use]
pub fn verdict_name(v: u32) -> &'static str {
    match v {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "unknown",
    }
}

/// The flow `src:sport -> VIP:dport`.
#[must_use]
pub fn flow(src: Ipv4Addr, sport: u16, dport: u16, proto: Proto) -> FlowKey {
    FlowKey::new(src.octets(), sport, VIP.octets(), dport, proto)
}

/// The flow `src:sport -> vip:dport`.
#[must_use]
pub fn flow_to(src: Ipv4Addr, sport: u16, vip: Ipv4Addr, dport: u16, proto: Proto) -> FlowKey {
    FlowKey::new(src.octets(), sport, vip.octets(), dport, proto)
}

/// `ipv4` carrying `l4`, from the client to the node's MAC.
#[must_use]
pub fn client_frame(ipv4: &Ipv4, l4: &[u8]) -> Vec<u8> {
    ethernet(LB_MAC, CLIENT_MAC, None, ETH_P_IPV4, &ipv4.packet(l4))
}

/// A TCP segment from `CLIENT:sport` to `dst:dport` (see [`crate::frames::tcp`]).
#[must_use]
pub fn tcp_frame(dst: Ipv4Addr, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let seg = tcp(CLIENT, dst, sport, dport, flags, payload);
    client_frame(&Ipv4::new(CLIENT, dst, 6), &seg)
}

/// A UDP datagram from `CLIENT:40000` to `VIP:dport`.
#[must_use]
pub fn udp_frame(dport: u16, payload: &[u8]) -> Vec<u8> {
    let seg = udp(CLIENT, VIP, 40000, dport, payload);
    client_frame(&Ipv4::new(CLIENT, VIP, 17), &seg)
}

/// The client's broadcast ARP request for `target`.
#[must_use]
pub fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    ethernet(
        BROADCAST,
        CLIENT_MAC,
        None,
        ETH_P_ARP,
        &arp(1, CLIENT_MAC, CLIENT, [0; 6], target),
    )
}

/// The node's ARP reply to [`arp_request`]`(VIP)`.
#[must_use]
pub fn arp_reply() -> Vec<u8> {
    ethernet(
        CLIENT_MAC,
        LB_MAC,
        None,
        ETH_P_ARP,
        &arp(2, LB_MAC, VIP, CLIENT_MAC, CLIENT),
    )
}

/// `frame` with an 802.1Q tag (TCI `tci`) after its MAC addresses.
#[must_use]
pub fn tagged(tci: u16, frame: &[u8]) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
    f.extend_from_slice(&tci.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

/// `frame` as forwarded: these destination and source MACs, the rest as is.
#[must_use]
pub fn with_backend_macs(frame: &[u8], dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f
}

/// Pins the calling thread to `cpu` (benches that time one CPU's work).
///
/// # Panics
/// When the kernel refuses.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity
    // act on it and on this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set),
            0,
            "pin to CPU {cpu}"
        );
    }
}
