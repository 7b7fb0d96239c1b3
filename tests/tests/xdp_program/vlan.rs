//! VLAN VIPs: a VIP that names an 802.1Q VLAN (`vips = [{ address, vlan }]`)
//! is answered and forwarded only on that VLAN, and an untagged VIP only
//! untagged (or priority-tagged, VID 0). A frame on another VLAN is passed
//! and counted `vlan_mismatch`; on its own VLAN every answer and forwarded
//! frame keeps the tag (VID and priority) as it came. Stacked tags (Q-in-Q,
//! 802.1ad) are no VIP's: passed as `pass_other`.

use std::net::Ipv4Addr;

use vip_agent::config::OnBackendDown;
use vip_common::{Proto, counter};
use vip_tests::{
    frames::{
        ETH_P_ARP, ETH_P_IPV4, Ipv4, TCP_ACK, TCP_PSH, TCP_RST, TCP_SYN, TcpSegment, arp, checksum,
        ethernet, icmp_echo, tcp, tcp_segment,
    },
    xdp::{
        AMQP, BACKENDS, BROADCAST, CLIENT, CLIENT_MAC, Case, LB_MAC, OTHER, Out, VIP, VIP_VLAN,
        VLAN, XDP_PASS, XDP_TX, arp_request, check, client_frame, flow_to, tagged, tcp_frame,
        with_backend_macs, with_fixture,
    },
};

/// A frame on VLAN `vid` (priority 0).
fn on(vid: u16, frame: &[u8]) -> Vec<u8> {
    tagged(vid, frame)
}

/// The node's ARP reply for `vip` to the client (untagged).
fn arp_reply_for(vip: Ipv4Addr) -> Vec<u8> {
    ethernet(
        CLIENT_MAC,
        LB_MAC,
        None,
        ETH_P_ARP,
        &arp(2, LB_MAC, vip, CLIENT_MAC, CLIENT),
    )
}

/// An echo request from the client to `vip`, and the node's exact reply.
fn ping(vip: Ipv4Addr) -> (Vec<u8>, Vec<u8>) {
    let request = client_frame(
        &Ipv4 {
            ttl: 61,
            ..Ipv4::new(CLIENT, vip, 1)
        },
        &icmp_echo(8, 0x42, 7, b"vlan-ping"),
    );
    let reply = ethernet(
        CLIENT_MAC,
        LB_MAC,
        None,
        ETH_P_IPV4,
        &Ipv4 {
            ttl: 64,
            ..Ipv4::new(vip, CLIENT, 1)
        }
        .packet(&icmp_echo(0, 0x42, 7, b"vlan-ping")),
    );
    (request, reply)
}

/// `frame` with two tags after its MACs: `outer` (TPID `tpid`), then an
/// 802.1Q tag `inner`.
fn stacked(tpid: u16, outer: u16, inner: u16, frame: &[u8]) -> Vec<u8> {
    let once = tagged(inner, frame);
    let mut f = once[..12].to_vec();
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&outer.to_be_bytes());
    f.extend_from_slice(&once[12..]);
    f
}

fn passed(what: &'static str, frame: Vec<u8>, counter: u32) -> Case {
    Case {
        what,
        frame,
        out: Out::Same(XDP_PASS),
        counter,
    }
}

/// ICMP fragmentation-needed from a router (`OTHER`) to `VIP_VLAN`, quoting
/// the backend's reply `VIP_VLAN:AMQP -> CLIENT:cport`.
fn frag_needed(cport: u16) -> Vec<u8> {
    let reply = Ipv4::new(VIP_VLAN, CLIENT, 6).packet(&tcp(
        VIP_VLAN,
        CLIENT,
        AMQP,
        cport,
        TCP_ACK,
        b"a reply too big for the path",
    ));
    let mut m = vec![3, 4, 0, 0, 0, 0, 0x05, 0x78];
    m.extend_from_slice(&reply[..28]);
    let c = checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    client_frame(&Ipv4::new(OTHER, VIP_VLAN, 1), &m)
}

/// ARP, ICMP echo, forwarding and ICMP errors for the VLAN-100 VIP: tagged
/// on VLAN 100 they are answered or forwarded with the tag intact; untagged,
/// priority-tagged or on VLAN 200 they are passed (`vlan_mismatch`), and so
/// is the untagged VIP asked on VLAN 100; stacked tags are passed.
#[test]
fn a_vlan_vip_is_answered_and_forwarded_only_on_its_vlan() {
    with_fixture(|fx| {
        let sport = 41000;
        let syn = tcp_frame(VIP_VLAN, sport, AMQP, TCP_SYN, &[]);
        let data = tcp_frame(
            VIP_VLAN,
            sport,
            AMQP,
            TCP_ACK | TCP_PSH,
            b"AMQP\x00\x00\x09\x01",
        );
        let id = fx.expected_backend(flow_to(CLIENT, sport, VIP_VLAN, AMQP, Proto::Tcp));
        let bmac = fx.backend_mac(id);
        assert!(BACKENDS.iter().any(|(_, m)| *m == bmac));
        let (request, reply) = ping(VIP_VLAN);
        let (untagged_ping, _) = ping(VIP);
        // PCP 5, DEI 0, VID 100.
        let pcp5 = 0xa000 | VLAN;
        let cases = vec![
            Case {
                what: "ARP request on VLAN 100 for the VLAN-100 VIP: reply on VLAN 100",
                frame: on(VLAN, &arp_request(VIP_VLAN)),
                out: Out::Bytes(XDP_TX, on(VLAN, &arp_reply_for(VIP_VLAN))),
                counter: counter::ARP_REPLY,
            },
            Case {
                what: "ARP request on VLAN 100 with priority 5: the reply keeps VID and priority",
                frame: tagged(pcp5, &arp_request(VIP_VLAN)),
                out: Out::Bytes(XDP_TX, tagged(pcp5, &arp_reply_for(VIP_VLAN))),
                counter: counter::ARP_REPLY,
            },
            passed(
                "untagged ARP request for the VLAN-100 VIP",
                arp_request(VIP_VLAN),
                counter::VLAN_MISMATCH,
            ),
            passed(
                "priority-tagged (VID 0) ARP request for the VLAN-100 VIP",
                tagged(0xa000, &arp_request(VIP_VLAN)),
                counter::VLAN_MISMATCH,
            ),
            passed(
                "ARP request on VLAN 200 for the VLAN-100 VIP",
                on(200, &arp_request(VIP_VLAN)),
                counter::VLAN_MISMATCH,
            ),
            passed(
                "ARP request on VLAN 100 for the untagged VIP",
                on(VLAN, &arp_request(VIP)),
                counter::VLAN_MISMATCH,
            ),
            Case {
                what: "TCP SYN on VLAN 100 to the VLAN VIP's service: backend MAC, tag kept",
                frame: on(VLAN, &syn),
                out: Out::Bytes(XDP_TX, with_backend_macs(&on(VLAN, &syn), bmac, LB_MAC)),
                counter: counter::FWD_TX,
            },
            Case {
                what: "TCP data on VLAN 100, same flow: same backend, payload and tag as sent",
                frame: on(VLAN, &data),
                out: Out::Bytes(XDP_TX, with_backend_macs(&on(VLAN, &data), bmac, LB_MAC)),
                counter: counter::FWD_TX,
            },
            passed(
                "untagged TCP SYN to the VLAN VIP's service",
                syn.clone(),
                counter::VLAN_MISMATCH,
            ),
            passed(
                "TCP SYN on VLAN 200 to the VLAN VIP's service",
                on(200, &syn),
                counter::VLAN_MISMATCH,
            ),
            passed(
                "TCP SYN on VLAN 100 to the untagged VIP's service",
                on(VLAN, &tcp_frame(VIP, sport, AMQP, TCP_SYN, &[])),
                counter::VLAN_MISMATCH,
            ),
            Case {
                what: "echo request on VLAN 100 to the VLAN VIP: exact reply on VLAN 100",
                frame: on(VLAN, &request),
                out: Out::Bytes(XDP_TX, on(VLAN, &reply)),
                counter: counter::ICMP_ECHO_REPLY,
            },
            passed(
                "untagged echo request to the VLAN VIP",
                request.clone(),
                counter::VLAN_MISMATCH,
            ),
            passed(
                "echo request on VLAN 100 to the untagged VIP",
                on(VLAN, &untagged_ping),
                counter::VLAN_MISMATCH,
            ),
            Case {
                what: "frag-needed on VLAN 100 quoting the VLAN VIP's flow: to its backend, tag kept",
                frame: on(VLAN, &frag_needed(sport)),
                out: Out::Bytes(
                    XDP_TX,
                    with_backend_macs(&on(VLAN, &frag_needed(sport)), bmac, LB_MAC),
                ),
                counter: counter::FWD_TX,
            },
            passed(
                "untagged frag-needed quoting the VLAN VIP's flow",
                frag_needed(sport),
                counter::VLAN_MISMATCH,
            ),
            passed(
                "QinQ (802.1ad outer tag 0x88a8, inner VLAN 100) ARP for the VLAN VIP",
                stacked(0x88a8, 7, VLAN, &arp_request(VIP_VLAN)),
                counter::PASS_OTHER,
            ),
            passed(
                "two 802.1Q tags (outer VLAN 100) ARP for the VLAN VIP",
                stacked(0x8100, VLAN, VLAN, &arp_request(VIP_VLAN)),
                counter::PASS_OTHER,
            ),
            passed(
                "gratuitous ARP on VLAN 100 for the VLAN VIP from another node",
                on(
                    VLAN,
                    &ethernet(
                        BROADCAST,
                        CLIENT_MAC,
                        None,
                        ETH_P_ARP,
                        &arp(1, CLIENT_MAC, VIP_VLAN, [0; 6], VIP_VLAN),
                    ),
                ),
                counter::PASS_OTHER,
            ),
        ];
        for case in &cases {
            check(fx, case);
        }
        // The ICMP error went to the flow's backend as an event too.
        let (_, _, moved) = fx.run(&on(VLAN, &frag_needed(sport)));
        assert!(
            moved.contains(&(counter::ICMP_TO_BACKEND as usize, 1)),
            "{moved:?}"
        );
    });
}

/// A flow on VLAN 100 whose backend is down, under "reset": the RST goes
/// back on VLAN 100, cut right after the TCP header that follows the tag.
#[test]
fn a_reset_on_a_vlan_keeps_the_tag() {
    with_fixture(|fx| {
        let sport = 41500;
        let data = on(
            VLAN,
            &tcp_frame(VIP_VLAN, sport, AMQP, TCP_ACK | TCP_PSH, b"hello"),
        );
        let (verdict, out, _) = fx.run(&data);
        assert_eq!(verdict, XDP_TX);
        let (addr, _) = *BACKENDS
            .iter()
            .find(|(_, mac)| out[..6] == mac[..])
            .expect("forwarded to a backend");
        let svc = (VIP_VLAN, AMQP, Proto::Tcp);
        fx.steering
            .set_down((svc, addr), false, "connection refused");
        fx.service_on_mut(VIP_VLAN, AMQP, Proto::Tcp)
            .on_backend_down = OnBackendDown::Reset;
        fx.provision();
        let seg = tcp_segment(&TcpSegment {
            src: VIP_VLAN,
            dst: CLIENT,
            sport: AMQP,
            dport: sport,
            seq: 2000,
            ack: 0,
            flags: TCP_RST,
            window: 0,
            payload: &[],
        });
        let rst = on(
            VLAN,
            &ethernet(
                CLIENT_MAC,
                LB_MAC,
                None,
                ETH_P_IPV4,
                &Ipv4::new(VIP_VLAN, CLIENT, 6).packet(&seg),
            ),
        );
        check(
            fx,
            &Case {
                what: "reset on VLAN 100: <SEQ=SEG.ACK><CTL=RST> on VLAN 100",
                frame: data.clone(),
                out: Out::Bytes(XDP_TX, rst),
                counter: counter::TCP_RESET,
            },
        );
        check(
            fx,
            &passed(
                "the same segment untagged: not the VLAN VIP's, no RST",
                data[..12].iter().chain(&data[16..]).copied().collect(),
                counter::VLAN_MISMATCH,
            ),
        );
    });
}
