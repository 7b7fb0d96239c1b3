//! The XDP program through `BPF_PROG_TEST_RUN`: a table of fixtures (input
//! frame, expected verdict, expected output bytes, expected counter), every
//! truncation point of every header, malformed headers, and a seeded random
//! corpus whose counters must add up.
//!
//! Needs root (`CAP_BPF` + `CAP_NET_ADMIN`). Each test runs on a thread that has
//! entered a fresh network namespace, so the program's ingress device (the
//! namespace's `lo`, ifindex 1) and the veth used for redirects are private.
#![allow(
    clippy::too_many_lines,
    reason = "scenario tests read best as one story"
)]

use std::{fmt::Write as _, net::Ipv4Addr};

use aya::programs::{TestRun as _, TestRunOptions};
use vip_agent::{dataplane::Dataplane, maglev};
use vip_common::{
    BACKEND_DOWN, BACKEND_ENABLED, BACKEND_LOCAL, Backend, FlowKey, LOOKUP_SIZE, NO_BACKEND, Proto,
    SERVICE_REHASH_ON_DOWN, SERVICE_RESET_ON_DOWN, ServiceKey, VipState, counter, flow_hash,
};
use vip_tests::frames::{
    ETH_P_ARP, ETH_P_IPV4, Ipv4, Rng, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TcpSegment, arp,
    ethernet, icmp_echo, tcp, tcp_segment, udp,
};
use vip_tests::kit::is_root;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const VIP_INACTIVE: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 101);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);
const OTHER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 50);
const LB_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x02];
const CLIENT_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x0a];
const BROADCAST: [u8; 6] = [0xff; 6];
const BACKENDS: [(Ipv4Addr, [u8; 6]); 3] = [
    (Ipv4Addr::new(10, 99, 0, 11), [0x02, 0x99, 0, 0, 0, 0x0b]),
    (Ipv4Addr::new(10, 99, 0, 12), [0x02, 0x99, 0, 0, 0, 0x0c]),
    (Ipv4Addr::new(10, 99, 0, 13), [0x02, 0x99, 0, 0, 0, 0x0d]),
];
const AMQP: u16 = 5672;
const AMQPS_LOCAL: u16 = 5671;
const REMOTE_LINK: u16 = 15672;
const EMPTY: u16 = 15692;
const DNS_UDP: u16 = 53;
const LOCAL_ID: u32 = 10;
const REMOTE_ID: u32 = 11;

/// Runs `f` on a thread inside a fresh, private network namespace.
fn in_private_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
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

fn ip(args: &[&str]) {
    let out = vip_tests::programs::command("ip")
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

fn skey(vip: Ipv4Addr, port: u16, proto: Proto) -> ServiceKey {
    ServiceKey::new(vip.octets(), port, proto)
}

struct Fixture {
    dp: Dataplane,
}

impl Fixture {
    /// The program loaded with: VIP active (answers with `LB_MAC`), `VIP_INACTIVE`
    /// present but inactive; services VIP:5672/tcp and VIP:53/udp over three
    /// remote backends, VIP:5671/tcp over a local backend, VIP:15672/tcp over a
    /// backend behind another link (veth `vr0`), VIP:15692/tcp with none.
    fn new() -> Self {
        ip(&["link", "set", "lo", "up"]);
        ip(&["link", "add", "vr0", "type", "veth", "peer", "name", "vr1"]);
        ip(&["link", "set", "vr0", "up"]);
        ip(&["link", "set", "vr1", "up"]);
        let remote_if = ifindex("vr0");
        let mut dp = Dataplane::load(None).expect("load the XDP object");
        dp.set_vip(
            VIP,
            VipState {
                mac: LB_MAC,
                active: 1,
                _pad: 0,
            },
        )
        .unwrap();
        dp.set_vip(
            VIP_INACTIVE,
            VipState {
                mac: LB_MAC,
                active: 0,
                _pad: 0,
            },
        )
        .unwrap();
        let lo = 1;
        let mut entries = Vec::new();
        for (i, (addr, mac)) in BACKENDS.iter().enumerate() {
            let id = u32::try_from(i).unwrap();
            dp.set_backend(
                id,
                &Backend {
                    addr: u32::from_ne_bytes(addr.octets()),
                    ifindex: lo,
                    mac: *mac,
                    src_mac: LB_MAC,
                    flags: BACKEND_ENABLED,
                    service: 0,
                },
            )
            .unwrap();
            entries.push((addr.octets(), id));
        }
        let table = build(&entries);
        dp.switch_table(skey(VIP, AMQP, Proto::Tcp), 0, 0, &table)
            .unwrap();
        dp.switch_table(skey(VIP, DNS_UDP, Proto::Udp), 1, 0, &table)
            .unwrap();
        dp.set_backend(
            LOCAL_ID,
            &Backend {
                addr: u32::from_ne_bytes(Ipv4Addr::new(10, 99, 0, 2).octets()),
                ifindex: lo,
                mac: LB_MAC,
                src_mac: LB_MAC,
                flags: BACKEND_ENABLED | BACKEND_LOCAL,
                service: 2,
            },
        )
        .unwrap();
        dp.switch_table(
            skey(VIP, AMQPS_LOCAL, Proto::Tcp),
            2,
            0,
            &build(&[([10, 99, 0, 2], LOCAL_ID)]),
        )
        .unwrap();
        dp.set_backend(
            REMOTE_ID,
            &Backend {
                addr: u32::from_ne_bytes(Ipv4Addr::new(10, 98, 0, 11).octets()),
                ifindex: remote_if,
                mac: [0x02, 0x98, 0, 0, 0, 0x0b],
                src_mac: [0x02, 0x98, 0, 0, 0, 0x02],
                flags: BACKEND_ENABLED,
                service: 3,
            },
        )
        .unwrap();
        dp.add_tx_port(remote_if).unwrap();
        dp.switch_table(
            skey(VIP, REMOTE_LINK, Proto::Tcp),
            3,
            0,
            &build(&[([10, 98, 0, 11], REMOTE_ID)]),
        )
        .unwrap();
        dp.switch_table(skey(VIP, EMPTY, Proto::Tcp), 4, 0, &build(&[]))
            .unwrap();
        dp.stamp(std::time::Duration::from_hours(1)).unwrap();
        Self { dp }
    }

    /// Runs one frame (repeat 1); returns the verdict, the output frame and
    /// the counters that moved.
    fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>, Vec<(usize, u64)>) {
        self.dp.reset_counters().unwrap();
        let mut out = vec![0u8; frame.len() + 512];
        let r = self
            .dp
            .program()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat: 1,
                ..Default::default()
            })
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

    /// The backend the live table gives this flow.
    fn expected_backend(&self, key: FlowKey, port: u16, proto: Proto) -> u32 {
        let table = self.dp.live_table(&skey(VIP, port, proto)).unwrap();
        table[(flow_hash(&key) % LOOKUP_SIZE) as usize]
    }
}

fn build(entries: &[([u8; 4], u32)]) -> Vec<u32> {
    let e: Vec<maglev::Entry<'_>> = entries
        .iter()
        .map(|(addr, id)| maglev::Entry {
            identity: addr,
            weight: 1,
            id: *id,
        })
        .collect();
    maglev::build(&e, LOOKUP_SIZE, NO_BACKEND)
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn verdict_name(v: u32) -> &'static str {
    match v {
        0 => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "unknown",
    }
}

fn flow(src: Ipv4Addr, sport: u16, dport: u16, proto: Proto) -> FlowKey {
    FlowKey::new(src.octets(), sport, VIP.octets(), dport, proto)
}

fn tcp_frame(
    vlan: Option<u16>,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let seg = tcp(CLIENT, dst, sport, dport, flags, payload);
    ethernet(
        LB_MAC,
        CLIENT_MAC,
        vlan,
        ETH_P_IPV4,
        &Ipv4::new(CLIENT, dst, 6).packet(&seg),
    )
}

fn udp_frame(dport: u16, payload: &[u8]) -> Vec<u8> {
    let seg = udp(CLIENT, VIP, 40000, dport, payload);
    ethernet(
        LB_MAC,
        CLIENT_MAC,
        None,
        ETH_P_IPV4,
        &Ipv4::new(CLIENT, VIP, 17).packet(&seg),
    )
}

fn arp_request(vlan: Option<u16>, target: Ipv4Addr) -> Vec<u8> {
    ethernet(
        BROADCAST,
        CLIENT_MAC,
        vlan,
        ETH_P_ARP,
        &arp(1, CLIENT_MAC, CLIENT, [0; 6], target),
    )
}

fn arp_reply_bytes(vlan: Option<u16>) -> Vec<u8> {
    ethernet(
        CLIENT_MAC,
        LB_MAC,
        vlan,
        ETH_P_ARP,
        &arp(2, LB_MAC, VIP, CLIENT_MAC, CLIENT),
    )
}

fn with_backend_macs(frame: &[u8], dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f
}

/// Expected outcome of one fixture.
enum Out {
    /// Verdict with the frame unchanged.
    Same(u32),
    /// Verdict with these exact bytes.
    Bytes(u32, Vec<u8>),
}

struct Case {
    what: &'static str,
    frame: Vec<u8>,
    out: Out,
    counter: u32,
}

fn check(fx: &mut Fixture, case: &Case) {
    let (verdict, out, moved) = fx.run(&case.frame);
    let (want_verdict, want_bytes) = match &case.out {
        Out::Same(v) => (*v, case.frame.clone()),
        Out::Bytes(v, b) => (*v, b.clone()),
    };
    let replay = format!("\n  input  {}\n  output {}", hex(&case.frame), hex(&out));
    assert_eq!(
        verdict_name(verdict),
        verdict_name(want_verdict),
        "{}: verdict{replay}",
        case.what
    );
    assert_eq!(
        hex(&out),
        hex(&want_bytes),
        "{}: output bytes{replay}",
        case.what
    );
    let verdicts: Vec<usize> = moved
        .iter()
        .filter(|(i, _)| counter::VERDICTS.contains(&u32::try_from(*i).unwrap()))
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(
        verdicts
            .iter()
            .map(|i| counter::NAMES[*i])
            .collect::<Vec<_>>(),
        vec![counter::NAMES[case.counter as usize]],
        "{}: verdict counters{replay}",
        case.what
    );
    assert!(
        moved.contains(&(counter::RX as usize, 1)),
        "{}: rx counter",
        case.what
    );
}

#[test]
fn fixtures() {
    if !is_root() {
        eprintln!("skipping: BPF_PROG_TEST_RUN needs root");
        return;
    }
    in_private_netns(|| {
        let mut fx = Fixture::new();
        let syn = tcp_frame(None, VIP, 40001, AMQP, TCP_SYN, &[]);
        let key = flow(CLIENT, 40001, AMQP, Proto::Tcp);
        let id = fx.expected_backend(key, AMQP, Proto::Tcp);
        assert_ne!(id, NO_BACKEND);
        let bmac = BACKENDS[id as usize].1;
        let data = tcp_frame(
            None,
            VIP,
            40001,
            AMQP,
            TCP_ACK | TCP_PSH,
            b"AMQP\x00\x00\x09\x01",
        );
        let tagged_syn = tcp_frame(Some(7), VIP, 40002, AMQP, TCP_SYN, &[]);
        let tagged_id =
            fx.expected_backend(flow(CLIENT, 40002, AMQP, Proto::Tcp), AMQP, Proto::Tcp);
        let udp_req = udp_frame(DNS_UDP, b"hello");
        let udp_id = {
            let k = FlowKey {
                sport: 40000u16.to_be(),
                ..flow(CLIENT, 40000, DNS_UDP, Proto::Udp)
            };
            let table = fx.dp.live_table(&skey(VIP, DNS_UDP, Proto::Udp)).unwrap();
            table[(flow_hash(&k) % LOOKUP_SIZE) as usize]
        };
        let local = tcp_frame(None, VIP, 40003, AMQPS_LOCAL, TCP_SYN, &[]);
        let remote = tcp_frame(None, VIP, 40004, REMOTE_LINK, TCP_SYN, &[]);
        let icmp = ethernet(
            LB_MAC,
            CLIENT_MAC,
            None,
            ETH_P_IPV4,
            &Ipv4 {
                ttl: 61,
                ..Ipv4::new(CLIENT, VIP, 1)
            }
            .packet(&icmp_echo(8, 0x77, 3, b"ping-payload")),
        );
        let icmp_reply = ethernet(
            CLIENT_MAC,
            LB_MAC,
            None,
            ETH_P_IPV4,
            &Ipv4 {
                ttl: 64,
                ..Ipv4::new(VIP, CLIENT, 1)
            }
            .packet(&icmp_echo(0, 0x77, 3, b"ping-payload")),
        );
        let mut hlen8 = arp_request(None, VIP);
        hlen8[18] = 8;
        let mut plen6 = arp_request(None, VIP);
        plen6[19] = 6;
        let cases = vec![
            Case {
                what: "ARP request for an active VIP: exact reply",
                frame: arp_request(None, VIP),
                out: Out::Bytes(XDP_TX, arp_reply_bytes(None)),
                counter: counter::ARP_REPLY,
            },
            Case {
                what: "tagged ARP request: reply keeps the tag",
                frame: arp_request(Some(42), VIP),
                out: Out::Bytes(XDP_TX, arp_reply_bytes(Some(42))),
                counter: counter::ARP_REPLY,
            },
            Case {
                what: "ARP request for an inactive VIP",
                frame: arp_request(None, VIP_INACTIVE),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_INACTIVE,
            },
            Case {
                what: "ARP request for another address",
                frame: arp_request(None, OTHER),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_OTHER,
            },
            Case {
                what: "ARP reply (not a request) for the VIP",
                frame: ethernet(
                    LB_MAC,
                    CLIENT_MAC,
                    None,
                    ETH_P_ARP,
                    &arp(2, CLIENT_MAC, CLIENT, LB_MAC, VIP),
                ),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_OTHER,
            },
            Case {
                what: "gratuitous ARP for the VIP from another node",
                frame: ethernet(
                    BROADCAST,
                    CLIENT_MAC,
                    None,
                    ETH_P_ARP,
                    &arp(1, CLIENT_MAC, VIP, [0; 6], VIP),
                ),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_OTHER,
            },
            Case {
                what: "ARP with hln 8",
                frame: hlen8,
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_MALFORMED,
            },
            Case {
                what: "ARP with pln 6",
                frame: plen6,
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_MALFORMED,
            },
            Case {
                what: "TCP SYN to a service: backend MAC, XDP_TX",
                frame: syn.clone(),
                out: Out::Bytes(XDP_TX, with_backend_macs(&syn, bmac, LB_MAC)),
                counter: counter::FWD_TX,
            },
            Case {
                what: "TCP data on the same flow: same backend",
                frame: data.clone(),
                out: Out::Bytes(XDP_TX, with_backend_macs(&data, bmac, LB_MAC)),
                counter: counter::FWD_TX,
            },
            Case {
                what: "tagged TCP SYN: forwarded, tag kept",
                frame: tagged_syn.clone(),
                out: Out::Bytes(
                    XDP_TX,
                    with_backend_macs(&tagged_syn, BACKENDS[tagged_id as usize].1, LB_MAC),
                ),
                counter: counter::FWD_TX,
            },
            Case {
                what: "UDP to a UDP service",
                frame: udp_req.clone(),
                out: Out::Bytes(
                    XDP_TX,
                    with_backend_macs(&udp_req, BACKENDS[udp_id as usize].1, LB_MAC),
                ),
                counter: counter::FWD_TX,
            },
            Case {
                what: "TCP to the VIP on a port with no service",
                frame: tcp_frame(None, VIP, 40005, 22, TCP_SYN, &[]),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_OTHER,
            },
            Case {
                what: "UDP to the VIP on the TCP service's port",
                frame: udp_frame(AMQP, b"x"),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_OTHER,
            },
            Case {
                what: "TCP to an inactive VIP",
                frame: tcp_frame(None, VIP_INACTIVE, 40006, AMQP, TCP_SYN, &[]),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_INACTIVE,
            },
            Case {
                what: "TCP to another address",
                frame: tcp_frame(None, OTHER, 40007, AMQP, TCP_SYN, &[]),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_OTHER,
            },
            Case {
                what: "local backend: to the stack",
                frame: local.clone(),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_LOCAL,
            },
            Case {
                what: "backend behind another link: XDP_REDIRECT",
                frame: remote.clone(),
                out: Out::Bytes(
                    XDP_REDIRECT,
                    with_backend_macs(
                        &remote,
                        [0x02, 0x98, 0, 0, 0, 0x0b],
                        [0x02, 0x98, 0, 0, 0, 0x02],
                    ),
                ),
                counter: counter::FWD_REDIRECT,
            },
            Case {
                what: "service with no backend: drop",
                frame: tcp_frame(None, VIP, 40008, EMPTY, TCP_SYN, &[]),
                out: Out::Same(XDP_DROP),
                counter: counter::DROP_NO_BACKEND,
            },
            Case {
                what: "ICMP echo request to the VIP: exact reply",
                frame: icmp,
                out: Out::Bytes(XDP_TX, icmp_reply),
                counter: counter::ICMP_ECHO_REPLY,
            },
            Case {
                what: "VRRP advert (protocol 112, multicast)",
                frame: ethernet(
                    [1, 0, 0x5e, 0, 0, 0x12],
                    CLIENT_MAC,
                    None,
                    ETH_P_IPV4,
                    &Ipv4::new(CLIENT, Ipv4Addr::new(224, 0, 0, 18), 112)
                        .packet(&[0x31, 51, 100, 1, 0, 100, 0, 0, 10, 99, 0, 100]),
                ),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_OTHER,
            },
            Case {
                what: "IPv6 ethertype",
                frame: ethernet(LB_MAC, CLIENT_MAC, None, 0x86dd, &[0x60; 40]),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_OTHER,
            },
        ];
        for case in &cases {
            check(&mut fx, case);
        }
        // The flow made by the SYN is in the flow table, pointing at its backend.
        let (verdict, _, moved) = fx.run(&data);
        assert_eq!(verdict, XDP_TX);
        assert!(
            moved.contains(&(counter::FLOW_HIT as usize, 1)),
            "data packet hit the flow table: {moved:?}"
        );
        // A SYN (a reused client port) is placed by the table, not by a stale flow.
        let (verdict, _, moved) = fx.run(&syn);
        assert_eq!(verdict, XDP_TX);
        assert!(
            moved.contains(&(counter::FLOW_NEW as usize, 1))
                && !moved.iter().any(|(i, _)| *i == counter::FLOW_HIT as usize),
            "a SYN skips the flow table: {moved:?}"
        );
        let stats = fx.dp.backend_stats(id).unwrap();
        assert!(stats.packets >= 3, "backend {id} counted {stats:?}");
    });
}

/// A flow whose backend health checks declared down, under each
/// `on_backend_down` policy: "reset" answers its TCP segments with the exact
/// RST a host without the connection would send, "rehash" places it anew,
/// "keep" leaves it where it is; a SYN always goes through the table.
#[test]
fn flows_of_a_down_backend() {
    if !is_root() {
        eprintln!("skipping: BPF_PROG_TEST_RUN needs root");
        return;
    }
    in_private_netns(|| {
        let mut fx = Fixture::new();
        let sport = 40100;
        let data = tcp_frame(None, VIP, sport, AMQP, TCP_ACK | TCP_PSH, b"hello");
        let (verdict, out, _) = fx.run(&data);
        assert_eq!(verdict, XDP_TX);
        let down = BACKENDS
            .iter()
            .position(|(_, mac)| out[..6] == mac[..])
            .expect("forwarded to a backend");
        let down_id = u32::try_from(down).unwrap();
        // A second flow on the same backend, for "keep" and "rehash" below.
        let sport2 = (40200..42000)
            .find(|p| {
                fx.expected_backend(flow(CLIENT, *p, AMQP, Proto::Tcp), AMQP, Proto::Tcp) == down_id
            })
            .unwrap();
        let data2 = tcp_frame(None, VIP, sport2, AMQP, TCP_ACK, b"x");
        let (_, out, _) = fx.run(&data2);
        assert_eq!(out[..6], BACKENDS[down].1[..]);
        // Health checks take it down: out of the table, flagged down.
        let (addr, mac) = BACKENDS[down];
        fx.dp
            .set_backend(
                down_id,
                &Backend {
                    addr: u32::from_ne_bytes(addr.octets()),
                    ifindex: 1,
                    mac,
                    src_mac: LB_MAC,
                    flags: BACKEND_ENABLED | BACKEND_DOWN,
                    service: 0,
                },
            )
            .unwrap();
        let others: Vec<([u8; 4], u32)> = BACKENDS
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != down)
            .map(|(i, (a, _))| (a.octets(), u32::try_from(i).unwrap()))
            .collect();
        let table = build(&others);
        let policy = |fx: &mut Fixture, flags: u32| {
            fx.dp
                .switch_table(skey(VIP, AMQP, Proto::Tcp), 0, flags, &table)
                .unwrap();
        };
        let rst = |seq: u32, ack: u32, flags: u8, pad: usize| {
            let seg = tcp_segment(&TcpSegment {
                src: VIP,
                dst: CLIENT,
                sport: AMQP,
                dport: sport,
                seq,
                ack,
                flags,
                window: 0,
                payload: &[],
            });
            let mut f = ethernet(
                CLIENT_MAC,
                LB_MAC,
                None,
                ETH_P_IPV4,
                &Ipv4::new(VIP, CLIENT, 6).packet(&seg),
            );
            f.truncate(f.len() - pad);
            f
        };
        let fin_no_ack = tcp_segment(&TcpSegment {
            src: CLIENT,
            dst: VIP,
            sport,
            dport: AMQP,
            seq: 7000,
            ack: 0,
            flags: TCP_FIN,
            window: 512,
            payload: b"bye",
        });
        let fin_no_ack = ethernet(
            LB_MAC,
            CLIENT_MAC,
            None,
            ETH_P_IPV4,
            &Ipv4::new(CLIENT, VIP, 6).packet(&fin_no_ack),
        );
        // Ethernet padding after a short segment is cut too.
        let mut padded = tcp_frame(None, VIP, sport, AMQP, TCP_ACK, &[]);
        padded.extend_from_slice(&[0; 6]);

        policy(&mut fx, SERVICE_RESET_ON_DOWN);
        let table_pick =
            fx.expected_backend(flow(CLIENT, sport, AMQP, Proto::Tcp), AMQP, Proto::Tcp);
        assert_ne!(table_pick, down_id);
        let syn = tcp_frame(None, VIP, sport, AMQP, TCP_SYN, &[]);
        for case in [
            Case {
                what: "reset: data with ACK gets <SEQ=SEG.ACK><CTL=RST>",
                frame: data.clone(),
                out: Out::Bytes(XDP_TX, rst(2000, 0, TCP_RST, 0)),
                counter: counter::TCP_RESET,
            },
            Case {
                what: "reset: FIN+3 bytes without ACK gets RST,ACK acking 7004",
                frame: fin_no_ack,
                out: Out::Bytes(XDP_TX, rst(0, 7004, TCP_RST | TCP_ACK, 0)),
                counter: counter::TCP_RESET,
            },
            Case {
                what: "reset: padding trimmed",
                frame: padded,
                out: Out::Bytes(XDP_TX, rst(2000, 0, TCP_RST, 0)),
                counter: counter::TCP_RESET,
            },
            Case {
                what: "reset: an RST is never answered",
                frame: tcp_frame(None, VIP, sport, AMQP, TCP_RST | TCP_ACK, &[]),
                out: Out::Same(XDP_DROP),
                counter: counter::DROP_NO_BACKEND,
            },
        ] {
            check(&mut fx, &case);
        }
        // The RST does not touch the flow: every later segment gets one too,
        // until a SYN (the client reconnecting on the same port) is placed
        // by the table on a live backend.
        let (verdict, out, _) = fx.run(&data);
        assert_eq!((verdict, out), (XDP_TX, rst(2000, 0, TCP_RST, 0)));
        let (verdict, out, _) = fx.run(&syn);
        assert_eq!(verdict, XDP_TX);
        assert_eq!(
            out[..6],
            BACKENDS[table_pick as usize].1[..],
            "SYN to the table's pick"
        );
        let (_, out, moved) = fx.run(&data);
        assert_eq!(out[..6], BACKENDS[table_pick as usize].1[..]);
        assert!(
            moved.contains(&(counter::FLOW_HIT as usize, 1)),
            "{moved:?}"
        );

        // The second flow under "keep", then "rehash".
        policy(&mut fx, 0);
        check(
            &mut fx,
            &Case {
                what: "keep: still forwarded to the down backend",
                frame: data2.clone(),
                out: Out::Bytes(XDP_TX, with_backend_macs(&data2, mac, LB_MAC)),
                counter: counter::FWD_TX,
            },
        );
        policy(&mut fx, SERVICE_REHASH_ON_DOWN);
        let pick2 = fx.expected_backend(flow(CLIENT, sport2, AMQP, Proto::Tcp), AMQP, Proto::Tcp);
        let (verdict, out, moved) = fx.run(&data2);
        assert_eq!(verdict, XDP_TX);
        assert_eq!(
            out,
            with_backend_macs(&data2, BACKENDS[pick2 as usize].1, LB_MAC)
        );
        assert!(
            moved.contains(&(counter::FLOW_NEW as usize, 1)),
            "re-placed: {moved:?}"
        );
        let (_, _, moved) = fx.run(&data2);
        assert!(
            moved.contains(&(counter::FLOW_HIT as usize, 1)),
            "then sticks: {moved:?}"
        );
    });
}

/// IPv4 header oddities for a VIP: options are steered like any packet;
/// the rest is dropped and counted as malformed, or passed as a fragment.
#[test]
fn malformed_ipv4_and_l4() {
    if !is_root() {
        eprintln!("skipping: BPF_PROG_TEST_RUN needs root");
        return;
    }
    in_private_netns(|| {
        let mut fx = Fixture::new();
        let seg = tcp(CLIENT, VIP, 41000, AMQP, TCP_SYN, &[]);
        let base = Ipv4::new(CLIENT, VIP, 6);
        let frame = |ipv4: &Ipv4, seg: &[u8]| {
            ethernet(LB_MAC, CLIENT_MAC, None, ETH_P_IPV4, &ipv4.packet(seg))
        };
        let patched = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = frame(&base, &seg);
            f(&mut v);
            v
        };
        let with_options = frame(
            &Ipv4 {
                options: vec![1, 1, 1, 0],
                ..base.clone()
            },
            &seg,
        );
        let id = fx.expected_backend(flow(CLIENT, 41000, AMQP, Proto::Tcp), AMQP, Proto::Tcp);
        let cases = vec![
            Case {
                what: "IHL 6 (a 4-byte option): forwarded",
                frame: with_options.clone(),
                out: Out::Bytes(
                    XDP_TX,
                    with_backend_macs(&with_options, BACKENDS[id as usize].1, LB_MAC),
                ),
                counter: counter::FWD_TX,
            },
            Case {
                what: "IHL 4",
                frame: patched(&|v| v[14] = 0x44),
                out: Out::Same(XDP_DROP),
                counter: counter::DROP_MALFORMED,
            },
            Case {
                what: "IHL 0",
                frame: patched(&|v| v[14] = 0x40),
                out: Out::Same(XDP_DROP),
                counter: counter::DROP_MALFORMED,
            },
            Case {
                what: "IHL 15 beyond the packet",
                frame: patched(&|v| v[14] = 0x4f),
                out: Out::Same(XDP_DROP),
                counter: counter::DROP_MALFORMED,
            },
            Case {
                what: "version 6 in an IPv4 frame",
                frame: patched(&|v| v[14] = 0x65),
                out: Out::Same(XDP_DROP),
                counter: counter::DROP_MALFORMED,
            },
            Case {
                what: "tot_len larger than the frame",
                frame: patched(&|v| v[16..18].copy_from_slice(&1500u16.to_be_bytes())),
                out: Out::Same(XDP_DROP),
                counter: counter::DROP_MALFORMED,
            },
            Case {
                what: "tot_len smaller than the header",
                frame: patched(&|v| v[16..18].copy_from_slice(&19u16.to_be_bytes())),
                out: Out::Same(XDP_DROP),
                counter: counter::DROP_MALFORMED,
            },
            Case {
                what: "first fragment (MF)",
                frame: frame(
                    &Ipv4 {
                        frag: 0x2000,
                        ..base.clone()
                    },
                    &seg,
                ),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_FRAGMENT,
            },
            Case {
                what: "later fragment (offset 185)",
                frame: frame(
                    &Ipv4 {
                        frag: 185,
                        ..base.clone()
                    },
                    &seg,
                ),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_FRAGMENT,
            },
            Case {
                what: "TCP data offset 4",
                frame: patched(&|v| v[34 + 12] = 4 << 4),
                out: Out::Same(XDP_DROP),
                counter: counter::DROP_MALFORMED,
            },
            Case {
                what: "TCP data offset 0",
                frame: patched(&|v| v[34 + 12] = 0),
                out: Out::Same(XDP_DROP),
                counter: counter::DROP_MALFORMED,
            },
            Case {
                what: "TCP data offset past the segment",
                frame: patched(&|v| v[34 + 12] = 15 << 4),
                out: Out::Same(XDP_DROP),
                counter: counter::DROP_MALFORMED,
            },
            Case {
                what: "UDP length 7",
                frame: {
                    let mut v = udp_frame(DNS_UDP, b"abc");
                    v[38..40].copy_from_slice(&7u16.to_be_bytes());
                    v
                },
                out: Out::Same(XDP_DROP),
                counter: counter::DROP_MALFORMED,
            },
            Case {
                what: "UDP length past the datagram",
                frame: {
                    let mut v = udp_frame(DNS_UDP, b"abc");
                    v[38..40].copy_from_slice(&200u16.to_be_bytes());
                    v
                },
                out: Out::Same(XDP_DROP),
                counter: counter::DROP_MALFORMED,
            },
        ];
        for case in &cases {
            check(&mut fx, case);
        }
        // Ethernet padding after the IP packet is allowed (short frames are padded to 60).
        let mut padded = frame(&base, &seg);
        padded.extend_from_slice(&[0; 6]);
        let (verdict, _, _) = fx.run(&padded);
        assert_eq!(verdict_name(verdict), "XDP_TX", "padded frame");
    });
}

/// Every truncation of every header: each prefix of each frame gets the
/// verdict and the counter of the layer it breaks off in.
#[test]
fn every_truncation() {
    if !is_root() {
        eprintln!("skipping: BPF_PROG_TEST_RUN needs root");
        return;
    }
    in_private_netns(|| {
        let mut fx = Fixture::new();
        let icmp = ethernet(
            LB_MAC,
            CLIENT_MAC,
            None,
            ETH_P_IPV4,
            &Ipv4::new(CLIENT, VIP, 1).packet(&icmp_echo(8, 1, 1, b"abcdefgh")),
        );
        // (name, frame, l3 offset, kind)
        let frames: Vec<(&str, Vec<u8>, usize, &str)> = vec![
            ("ARP", arp_request(None, VIP), 14, "arp"),
            ("tagged ARP", arp_request(Some(5), VIP), 18, "arp"),
            (
                "TCP",
                tcp_frame(None, VIP, 42000, AMQP, TCP_ACK, b"payload!"),
                14,
                "ip",
            ),
            (
                "tagged TCP",
                tcp_frame(Some(5), VIP, 42001, AMQP, TCP_ACK, b"payload!"),
                18,
                "ip",
            ),
            ("UDP", udp_frame(DNS_UDP, b"query"), 14, "ip"),
            ("ICMP", icmp, 14, "ip"),
        ];
        let mut runs = 0;
        for (name, full, l3, kind) in &frames {
            // The kernel refuses XDP test frames shorter than an Ethernet header.
            for len in 14..full.len() {
                let cut = &full[..len];
                let (verdict, out, moved) = fx.run(cut);
                let want = if len < *l3
                    || (*kind == "arp" && len < l3 + 28)
                    || (*kind == "ip" && len < l3 + 20)
                {
                    (XDP_PASS, counter::PASS_MALFORMED)
                } else {
                    // The IPv4 header is whole, but tot_len runs past the frame.
                    (XDP_DROP, counter::DROP_MALFORMED)
                };
                let ctx = format!("{name} cut to {len} of {} bytes: {}", full.len(), hex(cut));
                assert_eq!(verdict_name(verdict), verdict_name(want.0), "{ctx}");
                assert_eq!(out, cut, "{ctx}: frame must be unchanged");
                let verdicts: Vec<_> = moved
                    .iter()
                    .filter(|(i, _)| counter::VERDICTS.contains(&u32::try_from(*i).unwrap()))
                    .collect();
                assert_eq!(
                    verdicts,
                    vec![&(want.1 as usize, 1)],
                    "{ctx}: counters {moved:?}"
                );
                runs += 1;
            }
        }
        let want: usize = frames.iter().map(|(_, f, _, _)| f.len() - 14).sum();
        assert_eq!(runs, want, "every cut of every frame ran");
    });
}

/// A stale heartbeat turns the node passive: no ARP answers, no forwarding.
#[test]
fn stale_heartbeat_passes() {
    if !is_root() {
        eprintln!("skipping: BPF_PROG_TEST_RUN needs root");
        return;
    }
    in_private_netns(|| {
        let mut fx = Fixture::new();
        let dead_after = std::time::Duration::from_millis(30);
        let stale = vip_agent::dataplane::monotonic_ns() - 31_000_000;
        fx.dp.stamp_at(stale, dead_after).unwrap();
        check(
            &mut fx,
            &Case {
                what: "ARP with a stale heartbeat",
                frame: arp_request(None, VIP),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_STALE,
            },
        );
        check(
            &mut fx,
            &Case {
                what: "TCP with a stale heartbeat",
                frame: tcp_frame(None, VIP, 43000, AMQP, TCP_SYN, &[]),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_STALE,
            },
        );
        // Never stamped (all zero) is stale too.
        fx.dp.stamp_at(0, dead_after).unwrap();
        check(
            &mut fx,
            &Case {
                what: "ARP, never stamped",
                frame: arp_request(None, VIP),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_STALE,
            },
        );
        // A fresh stamp brings it back.
        fx.dp.stamp(dead_after).unwrap();
        check(
            &mut fx,
            &Case {
                what: "ARP after a fresh stamp",
                frame: arp_request(None, VIP),
                out: Out::Bytes(XDP_TX, arp_reply_bytes(None)),
                counter: counter::ARP_REPLY,
            },
        );
    });
}

/// A seeded corpus of 12 000 frames (random bytes, and valid frames with
/// random bytes flipped or cut): no run fails, every verdict is one the
/// program may give, output never grows, and the counters add up.
#[test]
fn random_corpus() {
    if !is_root() {
        eprintln!("skipping: BPF_PROG_TEST_RUN needs root");
        return;
    }
    in_private_netns(|| {
        let mut fx = Fixture::new();
        fx.dp.reset_counters().unwrap();
        let seeds = [
            arp_request(None, VIP),
            arp_request(Some(9), VIP),
            tcp_frame(None, VIP, 44000, AMQP, TCP_SYN, &[]),
            tcp_frame(Some(3), VIP, 44001, AMQP, TCP_ACK, b"data"),
            udp_frame(DNS_UDP, b"q"),
            ethernet(
                LB_MAC,
                CLIENT_MAC,
                None,
                ETH_P_IPV4,
                &Ipv4::new(CLIENT, VIP, 1).packet(&icmp_echo(8, 1, 1, b"x")),
            ),
        ];
        let mut rng = Rng::new(0x5eed_0001);
        let n = 12_000u64;
        let mut verdicts = [0u64; 5];
        for i in 0..n {
            let frame = if rng.below(3) == 0 {
                let len = 14 + usize::try_from(rng.below(100)).unwrap();
                let mut f: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
                // Steer a third of them into the interesting ethertypes.
                if rng.below(3) == 0 {
                    let et: [u8; 2] = [[0x08, 0x00], [0x08, 0x06], [0x81, 0x00]]
                        [usize::try_from(rng.below(3)).unwrap()];
                    f[12..14].copy_from_slice(&et);
                }
                f
            } else {
                let mut f = seeds[usize::try_from(rng.below(seeds.len() as u64)).unwrap()].clone();
                for _ in 0..=rng.below(4) {
                    let at = usize::try_from(rng.below(f.len() as u64)).unwrap();
                    f[at] = rng.byte();
                }
                if rng.below(2) == 0 {
                    let keep = 14 + usize::try_from(rng.below((f.len() - 13) as u64)).unwrap();
                    f.truncate(keep);
                }
                f
            };
            let mut out = vec![0u8; frame.len() + 512];
            let r = fx
                .dp
                .program()
                .test_run(TestRunOptions {
                    data_in: Some(&frame),
                    data_out: Some(&mut out),
                    repeat: 1,
                    ..Default::default()
                })
                .unwrap_or_else(|e| panic!("frame {i} failed: {e}: {}", hex(&frame)));
            assert!(
                matches!(r.return_value, XDP_DROP | XDP_PASS | XDP_TX | XDP_REDIRECT),
                "frame {i}: verdict {} for {}",
                r.return_value,
                hex(&frame)
            );
            assert_eq!(
                r.data_size_out as usize,
                frame.len(),
                "frame {i}: size changed"
            );
            verdicts[r.return_value as usize] += 1;
        }
        let c = fx.dp.counters().unwrap();
        let sum: u64 = counter::VERDICTS.map(|i| c[i as usize]).sum();
        assert_eq!(c[counter::RX as usize], n, "rx counts every frame");
        assert_eq!(sum, n, "verdict counters add up to rx: {c:?}");
        let tx = c[counter::ARP_REPLY as usize]
            + c[counter::ICMP_ECHO_REPLY as usize]
            + c[counter::FWD_TX as usize];
        assert_eq!(
            tx, verdicts[XDP_TX as usize],
            "XDP_TX verdicts match their counters"
        );
        let drops = c[counter::DROP_MALFORMED as usize]
            + c[counter::DROP_NO_BACKEND as usize]
            + c[counter::DROP_REDIRECT as usize];
        assert_eq!(
            drops, verdicts[XDP_DROP as usize],
            "XDP_DROP verdicts match their counters"
        );
        eprintln!("corpus verdicts (aborted, drop, pass, tx, redirect): {verdicts:?}");
        assert!(
            verdicts[XDP_TX as usize] > 100 && verdicts[XDP_DROP as usize] > 100,
            "the corpus reaches the deep paths"
        );
    });
}

/// `union bpf_attr` for `BPF_MAP_CREATE` (the fields used).
#[repr(C)]
struct Create {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}
/// `union bpf_attr` for `BPF_OBJ_PIN`.
#[repr(C)]
struct Pin {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// Pins left by a build with another map layout (here a 16-entry COUNTERS,
/// as before the `tcp_reset` counter) are refused with a message that says
/// what differs and what to do, instead of being mis-read.
#[test]
fn pins_of_another_layout_are_refused() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let dir = std::env::temp_dir().join(format!("vip-pins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    vip_tests::sys::mount_bpffs(&dir).expect("mount a bpffs");
    let pins = dir.join("vip").join("old");
    std::fs::create_dir_all(&pins).unwrap();
    // BPF_MAP_CREATE a per-CPU array of 16 u64 and BPF_OBJ_PIN it as COUNTERS.
    let create = Create {
        map_type: 6,
        key_size: 4,
        value_size: 8,
        max_entries: 16,
        map_flags: 0,
    };
    // SAFETY: a valid attr of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0,
            (&raw const create).cast::<u8>(),
            std::mem::size_of::<Create>(),
        )
    };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let path = std::ffi::CString::new(pins.join("COUNTERS").to_str().unwrap()).unwrap();
    let pin = Pin {
        pathname: path.as_ptr() as u64,
        bpf_fd: u32::try_from(fd).unwrap(),
        file_flags: 0,
    };
    // SAFETY: as above; `path` outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            6,
            (&raw const pin).cast::<u8>(),
            std::mem::size_of::<Pin>(),
        )
    };
    assert_eq!(rc, 0, "BPF_OBJ_PIN: {}", std::io::Error::last_os_error());
    // SAFETY: our fd.
    unsafe { libc::close(i32::try_from(fd).unwrap()) };
    let loaded = Dataplane::load(Some(&pins)).map(drop);
    let _ = vip_tests::sys::unmount_lazy(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let err = loaded
        .expect_err("pins of another layout were adopted")
        .to_string();
    assert!(err.contains("COUNTERS"), "{err}");
    assert!(
        err.contains("4-byte keys, 8-byte values and 16 entries")
            && err.contains(&format!("and {} entries", counter::COUNT)),
        "{err}"
    );
    assert!(err.contains("SIGTERM"), "{err}");
}
