//! Headers the program must not trust: every truncation of every header,
//! and IPv4 and L4 header oddities for a VIP.

use vip_common::{Proto, counter};
use vip_tests::{
    frames::{Ipv4, TCP_ACK, TCP_SYN, icmp_echo, tcp},
    xdp::{
        AMQP, CLIENT, Case, DNS_UDP, LB_MAC, Out, VIP, VIP_VLAN, VLAN, XDP_DROP, XDP_PASS, XDP_TX,
        arp_request, check, client_frame, flow, hex, tagged, tcp_frame, udp_frame, verdict_name,
        with_backend_macs, with_fixture,
    },
};

/// Every truncation of every header: each prefix of each frame gets the
/// verdict and the counter of the layer it breaks off in.
#[test]
fn every_truncation() {
    with_fixture(|fx| {
        let icmp = client_frame(&Ipv4::new(CLIENT, VIP, 1), &icmp_echo(8, 1, 1, b"abcdefgh"));
        // (name, frame, l3 offset, kind)
        let frames: Vec<(&str, Vec<u8>, usize, &str)> = vec![
            ("ARP", arp_request(VIP), 14, "arp"),
            (
                "tagged ARP",
                tagged(VLAN, &arp_request(VIP_VLAN)),
                18,
                "arp",
            ),
            (
                "TCP",
                tcp_frame(VIP, 42000, AMQP, TCP_ACK, b"payload!"),
                14,
                "ip",
            ),
            (
                "tagged TCP",
                tagged(
                    VLAN,
                    &tcp_frame(VIP_VLAN, 42001, AMQP, TCP_ACK, b"payload!"),
                ),
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

/// A frame the program drops and counts as malformed.
fn malformed(what: &'static str, frame: Vec<u8>) -> Case {
    Case {
        what,
        frame,
        out: Out::Same(XDP_DROP),
        counter: counter::DROP_MALFORMED,
    }
}

/// IPv4 header oddities for a VIP: options are steered like any packet;
/// the rest is dropped and counted as malformed, or passed as a fragment.
#[test]
fn malformed_ipv4_and_l4() {
    with_fixture(|fx| {
        let seg = tcp(CLIENT, VIP, 41000, AMQP, TCP_SYN, &[]);
        let base = Ipv4::new(CLIENT, VIP, 6);
        let patched = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = client_frame(&base, &seg);
            f(&mut v);
            v
        };
        let fragment = |frag: u16| {
            client_frame(
                &Ipv4 {
                    frag,
                    ..base.clone()
                },
                &seg,
            )
        };
        let udp_length = |len: u16| {
            let mut v = udp_frame(DNS_UDP, b"abc");
            v[38..40].copy_from_slice(&len.to_be_bytes());
            v
        };
        let with_options = client_frame(
            &Ipv4 {
                options: vec![1, 1, 1, 0],
                ..base.clone()
            },
            &seg,
        );
        let id = fx.expected_backend(flow(CLIENT, 41000, AMQP, Proto::Tcp));
        let cases = vec![
            Case {
                what: "IHL 6 (a 4-byte option): forwarded",
                frame: with_options.clone(),
                out: Out::Bytes(
                    XDP_TX,
                    with_backend_macs(&with_options, fx.backend_mac(id), LB_MAC),
                ),
                counter: counter::FWD_TX,
            },
            malformed("IHL 4", patched(&|v| v[14] = 0x44)),
            malformed("IHL 0", patched(&|v| v[14] = 0x40)),
            malformed("IHL 15 beyond the packet", patched(&|v| v[14] = 0x4f)),
            malformed("version 6 in an IPv4 frame", patched(&|v| v[14] = 0x65)),
            malformed(
                "tot_len larger than the frame",
                patched(&|v| v[16..18].copy_from_slice(&1500u16.to_be_bytes())),
            ),
            malformed(
                "tot_len smaller than the header",
                patched(&|v| v[16..18].copy_from_slice(&19u16.to_be_bytes())),
            ),
            Case {
                what: "first fragment (MF)",
                frame: fragment(0x2000),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_FRAGMENT,
            },
            Case {
                what: "later fragment (offset 185)",
                frame: fragment(185),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_FRAGMENT,
            },
            malformed("TCP data offset 4", patched(&|v| v[34 + 12] = 4 << 4)),
            malformed("TCP data offset 0", patched(&|v| v[34 + 12] = 0)),
            malformed(
                "TCP data offset past the segment",
                patched(&|v| v[34 + 12] = 15 << 4),
            ),
            malformed("UDP length 7", udp_length(7)),
            malformed("UDP length past the datagram", udp_length(200)),
        ];
        for case in &cases {
            check(fx, case);
        }
        // Ethernet padding after the IP packet is allowed (short frames are padded to 60).
        let mut padded = client_frame(&base, &seg);
        padded.extend_from_slice(&[0; 6]);
        let (verdict, _, _) = fx.run(&padded);
        assert_eq!(verdict_name(verdict), "XDP_TX", "padded frame");
    });
}
