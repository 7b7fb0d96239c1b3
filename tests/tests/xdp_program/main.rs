//! The XDP program through `BPF_PROG_TEST_RUN`, on the fixture of
//! `vip_tests::xdp` (provisioned by the agent's own plan and apply): a table
//! of fixtures (input frame, expected verdict, expected output bytes,
//! expected counter) of what the program answers itself ([`answers`]) and
//! what it steers ([`forwarding`]); flows of a down backend under each
//! policy ([`down_backends`]); every truncation point of every header and
//! malformed headers ([`malformed`]); a stale heartbeat ([`heartbeat`]); a
//! seeded random corpus whose counters must add up ([`corpus`]); pins of
//! another map layout ([`pins`]); and VIPs on an 802.1Q VLAN ([`vlan`]).
//!
//! Needs root (`CAP_BPF` + `CAP_NET_ADMIN`); each test runs on a thread that
//! has entered a fresh network namespace.
#![allow(
    clippy::too_many_lines,
    reason = "scenario tests read best as one story"
)]

mod answers;
mod corpus;
mod down_backends;
mod flow_miss;
mod forwarding;
mod heartbeat;
mod icmp_errors;
mod malformed;
mod martians;
mod pins;
mod services;
mod vlan;

use vip_tests::xdp::{check, with_fixture};

/// The table: each case one frame through the same loaded program, in
/// order ARP, forwarding, ICMP, what is no service's; then the flow table
/// the forwarded SYN left.
#[test]
fn fixtures() {
    with_fixture(|fx| {
        let (forwarded, first) = forwarding::cases(fx);
        let tables = [
            answers::arp_cases(),
            forwarded,
            answers::icmp_cases(),
            forwarding::not_steered_cases(),
        ];
        for case in tables.iter().flatten() {
            check(fx, case);
        }
        forwarding::the_flow_table(fx, &first);
    });
}
