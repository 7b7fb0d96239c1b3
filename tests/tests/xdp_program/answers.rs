//! What the program answers itself, for an active VIP: ARP requests (and
//! what it leaves to the stack: other ARP) and ICMP echo requests.

use vip_common::counter;
use vip_tests::{
    frames::{ETH_P_ARP, ETH_P_IPV4, Ipv4, arp, ethernet, icmp_echo},
    xdp::{
        BROADCAST, CLIENT, CLIENT_MAC, Case, LB_MAC, OTHER, Out, VIP, VIP_INACTIVE, XDP_PASS,
        XDP_TX, arp_reply, arp_request, client_frame, tagged,
    },
};

/// ARP: the exact reply for an active VIP, with or without a tag; passed
/// for the rest.
pub fn arp_cases() -> Vec<Case> {
    let mut hlen8 = arp_request(VIP);
    hlen8[18] = 8;
    let mut plen6 = arp_request(VIP);
    plen6[19] = 6;
    vec![
        Case {
            what: "ARP request for an active VIP: exact reply",
            frame: arp_request(VIP),
            out: Out::Bytes(XDP_TX, arp_reply()),
            counter: counter::ARP_REPLY,
        },
        Case {
            what: "priority-tagged (PCP 5, VID 0) ARP request for an untagged VIP: reply keeps the tag",
            frame: tagged(0xa000, &arp_request(VIP)),
            out: Out::Bytes(XDP_TX, tagged(0xa000, &arp_reply())),
            counter: counter::ARP_REPLY,
        },
        Case {
            what: "ARP request for an inactive VIP",
            frame: arp_request(VIP_INACTIVE),
            out: Out::Same(XDP_PASS),
            counter: counter::PASS_INACTIVE,
        },
        Case {
            what: "ARP request for another address",
            frame: arp_request(OTHER),
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
    ]
}

/// ICMP: the exact echo reply for an echo request to the VIP.
pub fn icmp_cases() -> Vec<Case> {
    let icmp = client_frame(
        &Ipv4 {
            ttl: 61,
            ..Ipv4::new(CLIENT, VIP, 1)
        },
        &icmp_echo(8, 0x77, 3, b"ping-payload"),
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
    vec![Case {
        what: "ICMP echo request to the VIP: exact reply",
        frame: icmp,
        out: Out::Bytes(XDP_TX, icmp_reply),
        counter: counter::ICMP_ECHO_REPLY,
    }]
}
