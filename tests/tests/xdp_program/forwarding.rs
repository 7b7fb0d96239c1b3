//! What the program steers: TCP and UDP to a service's backend (`XDP_TX` on
//! the ingress link, `XDP_REDIRECT` to another, `XDP_PASS` to a backend on
//! this node), a service without backends dropped, and what is no service's
//! passed to the stack; then the flow table the forwarded SYN left.

use std::net::Ipv4Addr;

use vip_common::{NO_BACKEND, Proto, counter};
use vip_tests::{
    frames::{ETH_P_IPV4, Ipv4, TCP_ACK, TCP_PSH, TCP_SYN, ethernet},
    xdp::{
        AMQP, AMQPS_LOCAL, CLIENT, CLIENT_MAC, Case, DNS_UDP, EMPTY, Fixture, LB_MAC, OTHER, Out,
        REMOTE_LINK, REMOTE_MAC, REMOTE_SRC_MAC, VIP, VIP_INACTIVE, XDP_DROP, XDP_PASS,
        XDP_REDIRECT, XDP_TX, flow, tagged, tcp_frame, udp_frame, with_backend_macs,
    },
};

/// The first flow of the table, looked at again after it.
pub struct FirstFlow {
    syn: Vec<u8>,
    data: Vec<u8>,
    /// The backend the table gives it.
    backend: u32,
}

/// The forwarding cases, and the flow whose state [`the_flow_table`] checks.
pub fn cases(fx: &Fixture) -> (Vec<Case>, FirstFlow) {
    let syn = tcp_frame(VIP, 40001, AMQP, TCP_SYN, &[]);
    let id = fx.expected_backend(flow(CLIENT, 40001, AMQP, Proto::Tcp));
    assert_ne!(id, NO_BACKEND);
    let bmac = fx.backend_mac(id);
    let data = tcp_frame(VIP, 40001, AMQP, TCP_ACK | TCP_PSH, b"AMQP\x00\x00\x09\x01");
    // Priority-tagged (PCP 3, VID 0): on no VLAN, like the untagged VIP.
    let tagged_syn = tagged(0x6000, &tcp_frame(VIP, 40002, AMQP, TCP_SYN, &[]));
    let tagged_id = fx.expected_backend(flow(CLIENT, 40002, AMQP, Proto::Tcp));
    let udp_req = udp_frame(DNS_UDP, b"hello");
    let udp_id = fx.expected_backend(flow(CLIENT, 40000, DNS_UDP, Proto::Udp));
    let local = tcp_frame(VIP, 40003, AMQPS_LOCAL, TCP_SYN, &[]);
    let remote = tcp_frame(VIP, 40004, REMOTE_LINK, TCP_SYN, &[]);
    let cases = vec![
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
            what: "priority-tagged TCP SYN: forwarded, tag kept",
            frame: tagged_syn.clone(),
            out: Out::Bytes(
                XDP_TX,
                with_backend_macs(&tagged_syn, fx.backend_mac(tagged_id), LB_MAC),
            ),
            counter: counter::FWD_TX,
        },
        Case {
            what: "UDP to a UDP service",
            frame: udp_req.clone(),
            out: Out::Bytes(
                XDP_TX,
                with_backend_macs(&udp_req, fx.backend_mac(udp_id), LB_MAC),
            ),
            counter: counter::FWD_TX,
        },
        Case {
            what: "TCP to the VIP on a port with no service",
            frame: tcp_frame(VIP, 40005, 22, TCP_SYN, &[]),
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
            frame: tcp_frame(VIP_INACTIVE, 40006, AMQP, TCP_SYN, &[]),
            out: Out::Same(XDP_PASS),
            counter: counter::PASS_INACTIVE,
        },
        Case {
            what: "TCP to another address",
            frame: tcp_frame(OTHER, 40007, AMQP, TCP_SYN, &[]),
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
                with_backend_macs(&remote, REMOTE_MAC, REMOTE_SRC_MAC),
            ),
            counter: counter::FWD_REDIRECT,
        },
        Case {
            what: "service with no backend: drop",
            frame: tcp_frame(VIP, 40008, EMPTY, TCP_SYN, &[]),
            out: Out::Same(XDP_DROP),
            counter: counter::DROP_NO_BACKEND,
        },
    ];
    let first = FirstFlow {
        syn,
        data,
        backend: id,
    };
    (cases, first)
}

/// What is no service's: passed to the stack.
pub fn not_steered_cases() -> Vec<Case> {
    vec![
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
    ]
}

/// After the table: the flow made by the SYN is in the flow table, pointing
/// at its backend; a SYN again (a reused client port) is placed by the
/// table, not by a stale flow.
pub fn the_flow_table(fx: &mut Fixture, first: &FirstFlow) {
    let (verdict, _, moved) = fx.run(&first.data);
    assert_eq!(verdict, XDP_TX);
    assert!(
        moved.contains(&(counter::FLOW_HIT as usize, 1)),
        "data packet hit the flow table: {moved:?}"
    );
    let (verdict, _, moved) = fx.run(&first.syn);
    assert_eq!(verdict, XDP_TX);
    assert!(
        moved.contains(&(counter::FLOW_NEW as usize, 1))
            && !moved.iter().any(|(i, _)| *i == counter::FLOW_HIT as usize),
        "a SYN skips the flow table: {moved:?}"
    );
    let id = first.backend;
    let stats = fx.dp.backend_stats(id).unwrap();
    assert!(stats.packets >= 3, "backend {id} counted {stats:?}");
}
