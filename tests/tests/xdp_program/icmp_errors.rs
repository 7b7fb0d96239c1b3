//! ICMP errors about a VIP flow (destination unreachable, above all
//! fragmentation needed, and time exceeded): a router that cannot deliver a
//! backend's direct reply sends them to the VIP, and the program sends them
//! on to the backend that owns the quoted flow (the flow table's, else the
//! lookup table's pick), so path-MTU discovery works through DSR. Quotes
//! that name no flow of a service are passed, broken quotes dropped, and
//! none of them is ever forwarded.

use std::net::Ipv4Addr;

use vip_common::{Proto, counter};
use vip_tests::{
    frames::{
        ETH_P_IPV4, Ipv4, TCP_ACK, TCP_PSH, TCP_SYN, checksum, ethernet, icmp_echo, tcp, udp,
    },
    xdp::{
        AMQP, AMQPS_LOCAL, BACKENDS, CLIENT, CLIENT_MAC, DNS_UDP, EMPTY, Fixture, LB_MAC, OTHER,
        REMOTE_LINK, REMOTE_MAC, REMOTE_SRC_MAC, VIP, VIP_INACTIVE, XDP_DROP, XDP_PASS,
        XDP_REDIRECT, XDP_TX, flow, hex, tagged, tcp_frame, udp_frame, verdict_name,
        with_backend_macs, with_fixture,
    },
};

/// The router on the path that reports the error (its MAC is the client's:
/// the fixture's frames all arrive from that neighbour).
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

/// The backend's reply `VIP:sport -> CLIENT:dport` as a router quotes it.
fn reply_tcp(sport: u16, dport: u16) -> Vec<u8> {
    let seg = tcp(VIP, CLIENT, sport, dport, TCP_ACK | TCP_PSH, &[0x55; 1400]);
    Ipv4::new(VIP, CLIENT, 6).packet(&seg)
}

/// An ICMP error (`kind`, `code`, the 4 bytes after the checksum) quoting
/// `quote`, from [`ROUTER`] to `dst`.
fn icmp_error_to(dst: Ipv4Addr, kind: u8, code: u8, rest: [u8; 4], quote: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(quote);
    let c = checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    let ip = Ipv4 {
        ttl: 63,
        ..Ipv4::new(ROUTER, dst, 1)
    };
    ethernet(LB_MAC, CLIENT_MAC, None, ETH_P_IPV4, &ip.packet(&m))
}

/// Fragmentation needed (type 3 code 4, next-hop MTU 1280) to the VIP,
/// quoting `quote`.
fn frag_needed(quote: &[u8]) -> Vec<u8> {
    icmp_error_to(VIP, 3, 4, [0, 0, 0x05, 0x00], quote)
}

/// What one ICMP error must give: the verdict, the output (`None`: the
/// frame unchanged), the one verdict counter, and whether it counts as
/// sent to a backend.
struct Want {
    verdict: u32,
    out: Option<Vec<u8>>,
    counter: u32,
    to_backend: bool,
}

fn forwarded(verdict: u32, counter: u32, out: Vec<u8>) -> Want {
    Want {
        verdict,
        out: Some(out),
        counter,
        to_backend: true,
    }
}

fn not_forwarded(verdict: u32, counter: u32) -> Want {
    Want {
        verdict,
        out: None,
        counter,
        to_backend: false,
    }
}

fn expect(fx: &mut Fixture, what: &str, frame: &[u8], want: &Want) {
    let (verdict, out, moved) = fx.run(frame);
    let replay = format!("\n  input  {}\n  output {}", hex(frame), hex(&out));
    assert_eq!(
        verdict_name(verdict),
        verdict_name(want.verdict),
        "{what}: verdict{replay}"
    );
    let want_out = want.out.clone().unwrap_or_else(|| frame.to_vec());
    assert_eq!(hex(&out), hex(&want_out), "{what}: output bytes{replay}");
    let verdicts: Vec<&str> = moved
        .iter()
        .filter(|(i, _)| counter::VERDICTS.contains(&u32::try_from(*i).unwrap()))
        .map(|(i, _)| counter::NAMES[*i])
        .collect();
    assert_eq!(
        verdicts,
        vec![counter::NAMES[want.counter as usize]],
        "{what}: verdict counters {moved:?}"
    );
    let to_backend = moved.contains(&(counter::ICMP_TO_BACKEND as usize, 1));
    assert_eq!(
        to_backend, want.to_backend,
        "{what}: icmp_to_backend {moved:?}"
    );
    for c in [counter::FLOW_NEW, counter::FLOW_HIT, counter::FLOW_MISS] {
        assert!(
            !moved.iter().any(|(i, _)| *i == c as usize),
            "{what}: an ICMP error touches no flow counter {moved:?}"
        );
    }
}

/// The backend MAC a frame was forwarded to.
fn mac_of(out: &[u8]) -> [u8; 6] {
    out[..6].try_into().unwrap()
}

/// Errors quoting a VIP flow reach the flow's backend: the flow table's
/// entry when there is one (here a drained backend the lookup table no
/// longer gives), else the lookup table's pick, with no flow created; TCP
/// and UDP, frag-needed and time-exceeded, a minimal quote (IPv4 header and
/// 8 bytes) and a long one, quoted IP options, a tag, a backend behind
/// another link, a backend on this node.
#[test]
fn icmp_errors_go_to_the_flows_backend() {
    with_fixture(|fx| {
        let sport = 40300;
        let syn = tcp_frame(VIP, sport, AMQP, TCP_SYN, &[]);
        let (verdict, out, _) = fx.run(&syn);
        assert_eq!(verdict, XDP_TX);
        let mac = mac_of(&out);
        let (addr, _) = *BACKENDS.iter().find(|(_, m)| *m == mac).unwrap();
        let id = fx.backend_id((VIP, AMQP, Proto::Tcp), addr);
        // Drained: out of the lookup table, its flows kept.
        assert!(fx.steering.set_drained(addr, true));
        fx.provision();
        let pick = fx.expected_backend(flow(CLIENT, sport, AMQP, Proto::Tcp));
        assert_ne!(
            pick, id,
            "the lookup table no longer gives the drained backend"
        );

        let quote = reply_tcp(AMQP, sport);
        let minimal = &quote[..28];
        for (what, frame) in [
            ("frag-needed, whole quote", frag_needed(&quote)),
            ("frag-needed, minimal quote", frag_needed(minimal)),
            (
                "time exceeded in transit",
                icmp_error_to(VIP, 11, 0, [0; 4], minimal),
            ),
            (
                "host unreachable",
                icmp_error_to(VIP, 3, 1, [0; 4], minimal),
            ),
        ] {
            let want = forwarded(
                XDP_TX,
                counter::FWD_TX,
                with_backend_macs(&frame, mac, LB_MAC),
            );
            expect(fx, what, &frame, &want);
        }
        // Priority-tagged (VID 0): the untagged VIP's (vlan.rs has VLAN 100).
        let tagged_error = tagged(0x2000, &frag_needed(minimal));
        expect(
            fx,
            "priority-tagged frag-needed",
            &tagged_error,
            &forwarded(
                XDP_TX,
                counter::FWD_TX,
                with_backend_macs(&tagged_error, mac, LB_MAC),
            ),
        );
        // The quoted header with options (IHL 6): the ports follow them.
        let with_options = {
            let seg = tcp(VIP, CLIENT, AMQP, sport, TCP_ACK, &[]);
            let mut ip = Ipv4::new(VIP, CLIENT, 6);
            ip.options = vec![1, 1, 1, 0];
            ip.packet(&seg)[..32].to_vec()
        };
        let frame = frag_needed(&with_options);
        expect(
            fx,
            "quoted IP options",
            &frame,
            &forwarded(
                XDP_TX,
                counter::FWD_TX,
                with_backend_macs(&frame, mac, LB_MAC),
            ),
        );

        // A flow the table does not hold: the pick a new flow from that
        // client gets, and still no flow.
        let other_port = 40301;
        let pick = fx.expected_backend(flow(CLIENT, other_port, AMQP, Proto::Tcp));
        let frame = frag_needed(&reply_tcp(AMQP, other_port)[..28]);
        expect(
            fx,
            "no flow: the lookup table's pick",
            &frame,
            &forwarded(
                XDP_TX,
                counter::FWD_TX,
                with_backend_macs(&frame, fx.backend_mac(pick), LB_MAC),
            ),
        );
        assert!(
            !fx.dp
                .flows()
                .unwrap()
                .iter()
                .any(|(k, _)| *k == flow(CLIENT, other_port, AMQP, Proto::Tcp)),
            "an ICMP error creates no flow"
        );

        // UDP: the datagram's flow.
        let (_, out, _) = fx.run(&udp_frame(DNS_UDP, b"q"));
        let udp_mac = mac_of(&out);
        let quote = Ipv4::new(VIP, CLIENT, 17).packet(&udp(VIP, CLIENT, DNS_UDP, 40000, b"a"));
        let frame = icmp_error_to(VIP, 3, 3, [0; 4], &quote);
        expect(
            fx,
            "UDP port unreachable",
            &frame,
            &forwarded(
                XDP_TX,
                counter::FWD_TX,
                with_backend_macs(&frame, udp_mac, LB_MAC),
            ),
        );

        let frame = frag_needed(&reply_tcp(REMOTE_LINK, 40302)[..28]);
        expect(
            fx,
            "backend behind another link",
            &frame,
            &forwarded(
                XDP_REDIRECT,
                counter::FWD_REDIRECT,
                with_backend_macs(&frame, REMOTE_MAC, REMOTE_SRC_MAC),
            ),
        );
        let frame = frag_needed(&reply_tcp(AMQPS_LOCAL, 40303)[..28]);
        expect(
            fx,
            "backend on this node: to the stack",
            &frame,
            &forwarded(XDP_PASS, counter::PASS_LOCAL, frame.clone()),
        );
    });
}

/// Quotes the program must not trust: every cut of the quote short of the
/// IPv4 header and 8 bytes, a bad version or IHL, and a quote that claims
/// options it does not carry are dropped as malformed; a quote of another
/// protocol (our own echo replies), from another address than the VIP the
/// error is addressed to, from a port with no service, or of a non-first
/// fragment is passed; an error for an inactive VIP is passed as before;
/// a service without backends drops. None is forwarded.
#[test]
fn icmp_errors_that_quote_no_flow() {
    with_fixture(|fx| {
        let sport = 40310;
        let quote = reply_tcp(AMQP, sport);
        for len in 0..28 {
            expect(
                fx,
                &format!("quote cut to {len} bytes"),
                &frag_needed(&quote[..len]),
                &not_forwarded(XDP_DROP, counter::DROP_MALFORMED),
            );
        }
        let mut bad_version = quote[..28].to_vec();
        bad_version[0] = 0x65;
        let mut short_ihl = quote[..28].to_vec();
        short_ihl[0] = 0x44;
        let mut claims_options = quote[..28].to_vec();
        claims_options[0] = 0x46;
        for (what, q) in [
            ("quoted version 6", bad_version),
            ("quoted IHL 4", short_ihl),
            ("quoted IHL 6 without the bytes", claims_options),
        ] {
            expect(
                fx,
                what,
                &frag_needed(&q),
                &not_forwarded(XDP_DROP, counter::DROP_MALFORMED),
            );
        }

        let echo_reply = Ipv4::new(VIP, CLIENT, 1).packet(&icmp_echo(0, 7, 1, b"ping"));
        let from_other =
            Ipv4::new(OTHER, CLIENT, 6).packet(&tcp(OTHER, CLIENT, AMQP, sport, TCP_ACK, &[]));
        let from_inactive = Ipv4::new(VIP_INACTIVE, CLIENT, 6).packet(&tcp(
            VIP_INACTIVE,
            CLIENT,
            AMQP,
            sport,
            TCP_ACK,
            &[],
        ));
        let no_service = reply_tcp(22, sport);
        let fragment = {
            let mut ip = Ipv4::new(VIP, CLIENT, 6);
            ip.frag = 185; // offset 1480
            ip.packet(&[0x55; 8])
        };
        for (what, q) in [
            ("quoted ICMP echo reply", echo_reply),
            ("quoted source is another address", from_other),
            ("quoted source is another VIP", from_inactive),
            ("quoted port has no service", no_service),
            ("quoted non-first fragment", fragment),
        ] {
            expect(
                fx,
                what,
                &frag_needed(&q[..28]),
                &not_forwarded(XDP_PASS, counter::PASS_ICMP_OTHER),
            );
        }

        expect(
            fx,
            "frag-needed to an inactive VIP",
            &icmp_error_to(VIP_INACTIVE, 3, 4, [0, 0, 5, 0], &quote[..28]),
            &not_forwarded(XDP_PASS, counter::PASS_INACTIVE),
        );
        expect(
            fx,
            "redirect (type 5) is no error to steer",
            &icmp_error_to(VIP, 5, 1, [10, 99, 0, 1], &quote[..28]),
            &not_forwarded(XDP_PASS, counter::PASS_OTHER),
        );
        expect(
            fx,
            "quoted service has no backend",
            &frag_needed(&reply_tcp(EMPTY, sport)[..28]),
            &not_forwarded(XDP_DROP, counter::DROP_NO_BACKEND),
        );
    });
}
