//! The heartbeat: while the agent's stamp is stale the program is passive.

use vip_agent::dataplane::monotonic_ns;
use vip_common::counter;
use vip_tests::{
    frames::TCP_SYN,
    xdp::{
        AMQP, Case, Out, VIP, XDP_PASS, XDP_TX, arp_reply, arp_request, check, tcp_frame,
        with_fixture,
    },
};

/// A stale heartbeat turns the node passive: no ARP answers, no forwarding.
#[test]
fn stale_heartbeat_passes() {
    with_fixture(|fx| {
        let dead_after = std::time::Duration::from_millis(30);
        // A stamp past the 30 ms dead time, as a stalled agent leaves it.
        // The program reads the coarse clock, up to a tick behind (10 ms at
        // HZ=100, the coarsest), so the stamp is 20 ms past. The agent only
        // ever stamps "now", so this writes the heartbeat directly.
        let stale = monotonic_ns() - 50_000_000;
        fx.dp.stamp_at(stale, dead_after).unwrap();
        check(
            fx,
            &Case {
                what: "ARP with a stale heartbeat",
                frame: arp_request(VIP),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_STALE,
            },
        );
        check(
            fx,
            &Case {
                what: "TCP with a stale heartbeat",
                frame: tcp_frame(VIP, 43000, AMQP, TCP_SYN, &[]),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_STALE,
            },
        );
        // Never stamped (all zero) is stale too.
        fx.dp.stamp_at(0, dead_after).unwrap();
        check(
            fx,
            &Case {
                what: "ARP, never stamped",
                frame: arp_request(VIP),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_STALE,
            },
        );
        // A stamp ahead of the coarse clock (taken since its last tick) is
        // fresh: an agent that just stamped is alive.
        fx.dp
            .stamp_at(monotonic_ns() + 5_000_000, dead_after)
            .unwrap();
        check(
            fx,
            &Case {
                what: "ARP, stamped ahead of the coarse clock",
                frame: arp_request(VIP),
                out: Out::Bytes(XDP_TX, arp_reply()),
                counter: counter::ARP_REPLY,
            },
        );
        // A fresh stamp brings it back.
        fx.dp.stamp(dead_after).unwrap();
        check(
            fx,
            &Case {
                what: "ARP after a fresh stamp",
                frame: arp_request(VIP),
                out: Out::Bytes(XDP_TX, arp_reply()),
                counter: counter::ARP_REPLY,
            },
        );
    });
}
