//! `flow_miss`: a TCP segment of an established connection whose flow the
//! flow table does not hold (evicted from a full LRU, or older than the
//! table), placed by the lookup table instead. SYNs, UDP and packets for
//! no service are no misses.

use vip_common::{Proto, counter};
use vip_tests::{
    frames::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN},
    xdp::{
        AMQP, CLIENT, DNS_UDP, LB_MAC, VIP, XDP_PASS, XDP_TX, flow, tcp_frame, udp_frame,
        with_backend_macs, with_fixture,
    },
};

fn count(moved: &[(usize, u64)], c: u32) -> u64 {
    moved
        .iter()
        .find(|(i, _)| *i == c as usize)
        .map_or(0, |(_, v)| *v)
}

#[test]
fn non_syn_segments_that_miss_the_flow_table_are_counted() {
    with_fixture(|fx| {
        // Data on a connection the table has never seen: a miss, placed by
        // the lookup table, and recorded.
        let sport = 40400;
        let data = tcp_frame(VIP, sport, AMQP, TCP_ACK | TCP_PSH, b"late");
        let id = fx.expected_backend(flow(CLIENT, sport, AMQP, Proto::Tcp));
        let (verdict, out, moved) = fx.run(&data);
        assert_eq!(verdict, XDP_TX);
        assert_eq!(out, with_backend_macs(&data, fx.backend_mac(id), LB_MAC));
        assert_eq!(count(&moved, counter::FLOW_MISS), 1, "{moved:?}");
        assert_eq!(count(&moved, counter::FLOW_NEW), 1, "{moved:?}");
        // Its next segment hits.
        let (_, _, moved) = fx.run(&data);
        assert_eq!(count(&moved, counter::FLOW_HIT), 1, "{moved:?}");
        assert_eq!(count(&moved, counter::FLOW_MISS), 0, "{moved:?}");

        for (what, flags, port) in [
            ("FIN", TCP_FIN | TCP_ACK, 40401),
            ("RST", TCP_RST, 40402),
            ("bare ACK", TCP_ACK, 40403),
            ("SYN-ACK", TCP_SYN | TCP_ACK, 40404),
        ] {
            let (_, _, moved) = fx.run(&tcp_frame(VIP, port, AMQP, flags, &[]));
            assert_eq!(
                count(&moved, counter::FLOW_MISS),
                1,
                "{what} without a flow: {moved:?}"
            );
        }

        let not_misses = [
            (
                "a SYN opens a flow",
                tcp_frame(VIP, 40405, AMQP, TCP_SYN, &[]),
            ),
            ("UDP's first datagram", udp_frame(DNS_UDP, b"q")),
            (
                "TCP for a port with no service",
                tcp_frame(VIP, 40406, 22, TCP_ACK, &[]),
            ),
        ];
        for (what, frame) in not_misses {
            let (verdict, _, moved) = fx.run(&frame);
            assert!(matches!(verdict, XDP_TX | XDP_PASS), "{what}");
            assert_eq!(count(&moved, counter::FLOW_MISS), 0, "{what}: {moved:?}");
        }
    });
}
