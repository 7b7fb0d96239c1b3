//! Flows of a backend that health checks declared down, under each
//! `on_backend_down` policy, provisioned as the agent does: the verdict
//! goes into the steering, the policy into the service's config, and plan
//! and apply write both.

use vip_agent::config::OnBackendDown;
use vip_common::{Proto, counter};
use vip_tests::{
    frames::{
        ETH_P_IPV4, Ipv4, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TcpSegment, ethernet,
        tcp_segment,
    },
    xdp::{
        AMQP, BACKENDS, CLIENT, CLIENT_MAC, Case, Fixture, LB_MAC, Out, VIP, XDP_DROP, XDP_TX,
        check, client_frame, flow, tcp_frame, with_backend_macs, with_fixture,
    },
};

/// A flow whose backend health checks declared down, under each
/// `on_backend_down` policy: "reset" answers its TCP segments with the exact
/// RST a host without the connection would send, "rehash" places it anew,
/// "keep" leaves it where it is; a SYN always goes through the table.
#[test]
fn flows_of_a_down_backend() {
    with_fixture(|fx| {
        let sport = 40100;
        let data = tcp_frame(VIP, sport, AMQP, TCP_ACK | TCP_PSH, b"hello");
        let (verdict, out, _) = fx.run(&data);
        assert_eq!(verdict, XDP_TX);
        let (addr, mac) = *BACKENDS
            .iter()
            .find(|(_, mac)| out[..6] == mac[..])
            .expect("forwarded to a backend");
        let amqp = (VIP, AMQP, Proto::Tcp);
        let down_id = fx.backend_id(amqp, addr);
        // A second flow on the same backend, for "keep" and "rehash" below.
        let sport2 = (40200..42000)
            .find(|p| fx.expected_backend(flow(CLIENT, *p, AMQP, Proto::Tcp)) == down_id)
            .unwrap();
        let data2 = tcp_frame(VIP, sport2, AMQP, TCP_ACK, b"x");
        let (_, out, _) = fx.run(&data2);
        assert_eq!(out[..6], mac[..]);
        // Health checks take it down: out of the table, flagged down (written
        // with the policy below).
        fx.steering
            .set_down((amqp, addr), false, "connection refused");
        let policy = |fx: &mut Fixture, policy: OnBackendDown| {
            fx.service_mut(AMQP, Proto::Tcp).on_backend_down = policy;
            fx.provision();
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
        let fin_no_ack = client_frame(&Ipv4::new(CLIENT, VIP, 6), &fin_no_ack);
        // Ethernet padding after a short segment is cut too.
        let mut padded = tcp_frame(VIP, sport, AMQP, TCP_ACK, &[]);
        padded.extend_from_slice(&[0; 6]);

        policy(fx, OnBackendDown::Reset);
        let table_pick = fx.expected_backend(flow(CLIENT, sport, AMQP, Proto::Tcp));
        assert_ne!(table_pick, down_id);
        let syn = tcp_frame(VIP, sport, AMQP, TCP_SYN, &[]);
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
                frame: tcp_frame(VIP, sport, AMQP, TCP_RST | TCP_ACK, &[]),
                out: Out::Same(XDP_DROP),
                counter: counter::DROP_NO_BACKEND,
            },
        ] {
            check(fx, &case);
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
            fx.backend_mac(table_pick)[..],
            "SYN to the table's pick"
        );
        let (_, out, moved) = fx.run(&data);
        assert_eq!(out[..6], fx.backend_mac(table_pick)[..]);
        assert!(
            moved.contains(&(counter::FLOW_HIT as usize, 1)),
            "{moved:?}"
        );

        // The second flow under "keep", then "rehash".
        policy(fx, OnBackendDown::Keep);
        check(
            fx,
            &Case {
                what: "keep: still forwarded to the down backend",
                frame: data2.clone(),
                out: Out::Bytes(XDP_TX, with_backend_macs(&data2, mac, LB_MAC)),
                counter: counter::FWD_TX,
            },
        );
        policy(fx, OnBackendDown::Rehash);
        let pick2 = fx.expected_backend(flow(CLIENT, sport2, AMQP, Proto::Tcp));
        let (verdict, out, moved) = fx.run(&data2);
        assert_eq!(verdict, XDP_TX);
        assert_eq!(
            out,
            with_backend_macs(&data2, fx.backend_mac(pick2), LB_MAC)
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
