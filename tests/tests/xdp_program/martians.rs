//! ARP requests and ICMP echo requests for an active VIP from martian
//! sources get no answer: they are dropped and counted (`drop_martian`).
//! The RFC 5227 probe (an ARP request from 0.0.0.0) is no martian: it is
//! answered, so a host probing for the VIP learns that it is in use.

use std::net::Ipv4Addr;

use vip_common::counter;
use vip_tests::{
    frames::{ETH_P_ARP, ETH_P_IPV4, Ipv4, arp, ethernet, icmp_echo},
    xdp::{
        BROADCAST, CLIENT_MAC, Case, LB_MAC, OTHER, Out, VIP, VIP_INACTIVE, XDP_DROP, XDP_PASS,
        XDP_TX, check, with_fixture,
    },
};

/// A multicast MAC (IPv4 group 224.0.0.1).
const GROUP_MAC: [u8; 6] = [0x01, 0x00, 0x5e, 0, 0, 1];

/// Sender addresses no host can have.
const MARTIANS: [Ipv4Addr; 8] = [
    Ipv4Addr::new(0, 1, 2, 3),
    Ipv4Addr::new(127, 1, 2, 3),
    Ipv4Addr::new(224, 0, 0, 1),
    Ipv4Addr::new(239, 255, 0, 9),
    Ipv4Addr::new(240, 0, 0, 1),
    Ipv4Addr::BROADCAST,
    VIP,
    VIP_INACTIVE,
];

/// An ARP request for `target` with these Ethernet source, sender MAC and
/// sender address.
fn arp_from(eth_src: [u8; 6], sha: [u8; 6], spa: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    ethernet(
        BROADCAST,
        eth_src,
        None,
        ETH_P_ARP,
        &arp(1, sha, spa, [0; 6], target),
    )
}

/// An echo request to `dst` from `src` with this Ethernet source.
fn ping_from(eth_src: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    ethernet(
        LB_MAC,
        eth_src,
        None,
        ETH_P_IPV4,
        &Ipv4::new(src, dst, 1).packet(&icmp_echo(8, 9, 1, b"martian")),
    )
}

fn dropped(what: &'static str, frame: Vec<u8>) -> Case {
    Case {
        what,
        frame,
        out: Out::Same(XDP_DROP),
        counter: counter::DROP_MARTIAN,
    }
}

#[test]
fn martian_sources_get_no_answer() {
    with_fixture(|fx| {
        let mut cases = vec![
            Case {
                what: "ARP probe (sender 0.0.0.0) for the VIP: answered",
                frame: arp_from(CLIENT_MAC, CLIENT_MAC, Ipv4Addr::UNSPECIFIED, VIP),
                out: Out::Bytes(
                    XDP_TX,
                    ethernet(
                        CLIENT_MAC,
                        LB_MAC,
                        None,
                        ETH_P_ARP,
                        &arp(2, LB_MAC, VIP, CLIENT_MAC, Ipv4Addr::UNSPECIFIED),
                    ),
                ),
                counter: counter::ARP_REPLY,
            },
            dropped(
                "ARP request with a multicast sender MAC",
                arp_from(CLIENT_MAC, GROUP_MAC, OTHER, VIP),
            ),
            dropped(
                "ARP request from a broadcast Ethernet source",
                arp_from(BROADCAST, CLIENT_MAC, OTHER, VIP),
            ),
            dropped(
                "ARP probe with a multicast sender MAC",
                arp_from(CLIENT_MAC, GROUP_MAC, Ipv4Addr::UNSPECIFIED, VIP),
            ),
            Case {
                what: "martian ARP request for an inactive VIP: passed as before",
                frame: arp_from(CLIENT_MAC, CLIENT_MAC, Ipv4Addr::BROADCAST, VIP_INACTIVE),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_INACTIVE,
            },
            Case {
                what: "martian ARP request for another address: passed as before",
                frame: arp_from(CLIENT_MAC, CLIENT_MAC, Ipv4Addr::BROADCAST, OTHER),
                out: Out::Same(XDP_PASS),
                counter: counter::PASS_OTHER,
            },
            dropped(
                "echo request from 0.0.0.0",
                ping_from(CLIENT_MAC, Ipv4Addr::UNSPECIFIED, VIP),
            ),
            dropped(
                "echo request from a multicast Ethernet source",
                ping_from(GROUP_MAC, OTHER, VIP),
            ),
        ];
        let what_arp = [
            "ARP request from 0.1.2.3",
            "ARP request from 127.1.2.3",
            "ARP request from 224.0.0.1",
            "ARP request from 239.255.0.9",
            "ARP request from 240.0.0.1",
            "ARP request from 255.255.255.255",
            "(the gratuitous case, skipped)",
            "ARP request from another VIP of ours",
        ];
        let what_ping = [
            "echo request from 0.1.2.3",
            "echo request from 127.1.2.3",
            "echo request from 224.0.0.1",
            "echo request from 239.255.0.9",
            "echo request from 240.0.0.1",
            "echo request from 255.255.255.255",
            "echo request from our own VIP",
            "echo request from another VIP of ours",
        ];
        for ((src, a), p) in MARTIANS.iter().zip(what_arp).zip(what_ping) {
            // An ARP request from the VIP for the VIP itself is gratuitous
            // (another node announcing it: passed, see answers.rs); the
            // other VIP of ours as the sender stands for this case.
            if *src != VIP {
                cases.push(dropped(a, arp_from(CLIENT_MAC, CLIENT_MAC, *src, VIP)));
            }
            cases.push(dropped(p, ping_from(CLIENT_MAC, *src, VIP)));
        }
        for case in &cases {
            check(fx, case);
        }
    });
}
