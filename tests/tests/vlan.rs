//! A VLAN VIP in the netns lab, on a direct veth between lb1 and a `peer`
//! node (the lab's bridge moves 802.1Q tags into packet metadata, where
//! XDP cannot see them; on a direct link a tag sent in the frame reaches
//! XDP as sent). The peer sends raw tagged ARP requests and reads what
//! comes back with the tags the kernel reports: the agent's tagged
//! gratuitous ARP when it becomes master, XDP's tagged reply on the VIP's
//! VLAN, and nothing for an untagged request or one on another VLAN (lb1's
//! kernel does not hold the VIP either), which `vlan_mismatch` counts.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use vip_common::counter;
use vip_tests::{
    frames::{ETH_P_ARP, arp, ethernet},
    kit::{Agent, Setup, config, is_root, wait_for},
    lab::{Lab, LabOptions, direct_mac},
    sys::{PacketReceiver, PacketSender},
    xdp::{hex, tagged},
};

/// lb1's end of the direct link, and its address.
const TRUNK: &str = "trunk0";
const LB1: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 2);
/// The peer's address on the link.
const PEER: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// The VIP, on VLAN [`VLAN`].
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 100);
const VLAN: u16 = 100;
/// How long a frame may take to come back (milliseconds on veth).
const ANSWER_LIMIT: Duration = Duration::from_secs(2);
/// How long the agent may take to become master (its master-down interval
/// is 3 x 100 ms and a skew).
const MASTER_LIMIT: Duration = Duration::from_secs(5);
/// Frames read while waiting for one, at most (adverts arrive every 100 ms).
const MAX_FRAMES: usize = 500;

/// The first frame from `rx` that `want` accepts before `limit`, or what
/// else came.
fn first(
    rx: &PacketReceiver,
    limit: Duration,
    want: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    for _ in 0..MAX_FRAMES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match rx.recv(left).expect("receive") {
            Some(f) if want(&f) => return Ok(f),
            Some(f) => seen.push(hex(&f[..f.len().min(48)])),
            None => break,
        }
    }
    Err(format!(
        "after {limit:?}, {} other frames: {seen:?}",
        seen.len()
    ))
}

/// An ARP reply or request for the VIP (tagged or not) from lb1.
fn about_vip_from_lb1(f: &[u8]) -> bool {
    let lb1 = direct_mac(LB1);
    let arp_at = if f.len() >= 16 && f[12..14] == [0x81, 0x00] {
        18
    } else {
        14
    };
    f.len() >= arp_at + 28
        && f[6..12] == lb1
        && f[arp_at - 2..arp_at] == [0x08, 0x06]
        && (f[arp_at + 14..arp_at + 18] == VIP.octets()
            || f[arp_at + 24..arp_at + 28] == VIP.octets())
}

fn counters(agent: &Agent) -> [u64; counter::COUNT as usize] {
    agent.maps().counters().expect("read the counters")
}

#[test]
fn a_vlan_vip_answers_and_announces_only_on_its_vlan() {
    if !is_root() {
        eprintln!("skipping: the netns lab needs root");
        return;
    }
    let mut opts = LabOptions::unique("vlan");
    opts.backends = 1;
    opts.start_backends = false;
    let mut lab = Lab::up(opts).expect("lab up");
    lab.add_direct_peer("lb1", TRUNK, LB1, PEER)
        .expect("the direct link");
    let (rx, tx) = lab.run_in("peer", || {
        (
            PacketReceiver::open("eth0").expect("receive on eth0"),
            PacketSender::open("eth0").expect("send on eth0"),
        )
    });
    let stripping = lab.run_in("lb1", || vip_agent::net::rx_vlan_stripping(TRUNK));

    let mut cfg = config::node(&lab, "lb1", &[]);
    cfg.node.interface = TRUNK.to_owned();
    cfg.services.clear();
    let mut vrrp = config::vrrp("VI_1", 51, 200, &[VIP]);
    vrrp.vlans.insert(VIP, VLAN);
    vrrp.election.advert_interval = Duration::from_millis(100);
    cfg.vrrp.push(vrrp);
    let agent = Agent::start_full(&lab, "lb1", cfg, Setup::logged());

    // Becoming master, the agent announces the VIP on its VLAN.
    let lb1 = direct_mac(LB1);
    let garp = first(&rx, MASTER_LIMIT, about_vip_from_lb1)
        .unwrap_or_else(|e| panic!("no gratuitous ARP for the VIP: {e}\n{}", agent.log_tail(30)));
    assert_eq!(
        hex(&garp[..garp.len().min(46)]),
        hex(&tagged(
            VLAN,
            &ethernet(
                [0xff; 6],
                lb1,
                None,
                ETH_P_ARP,
                &arp(1, lb1, VIP, [0; 6], VIP)
            )
        )),
        "the gratuitous ARP is tagged with VLAN {VLAN}"
    );
    wait_for("lb1 to be master", MASTER_LIMIT, || {
        (agent.status().instances[0].state == "master").then_some(())
    });
    assert_eq!(agent.status().instances[0].vlans.get(&VIP), Some(&VLAN));

    // The warning about rx VLAN stripping, exactly when the device does it.
    let warned = agent
        .log_tail(200)
        .contains(&format!("ethtool -K {TRUNK} rxvlan off"));
    // veth reports rx-vlan-offload on (it passes a tag that arrives as
    // metadata on as metadata), though a tag sent in the frame stays there.
    match stripping {
        Ok(on) => assert_eq!(
            warned,
            on,
            "warned iff rx-vlan-offload is on ({on})\n{}",
            agent.log_tail(30)
        ),
        Err(e) => panic!("cannot read rx-vlan-offload of {TRUNK}: {e}"),
    }

    let peer = direct_mac(PEER);
    let request = ethernet(
        [0xff; 6],
        peer,
        None,
        ETH_P_ARP,
        &arp(1, peer, PEER, [0; 6], VIP),
    );
    let reply = ethernet(peer, lb1, None, ETH_P_ARP, &arp(2, lb1, VIP, peer, PEER));
    let is_reply = |f: &[u8]| about_vip_from_lb1(f) && f[..6] == peer;

    // On the VIP's VLAN: XDP's reply, on the same VLAN.
    let before = counters(&agent);
    tx.send(&tagged(VLAN, &request))
        .expect("send the tagged request");
    let got = first(&rx, ANSWER_LIMIT, is_reply)
        .unwrap_or_else(|e| panic!("no reply to the tagged ARP request: {e}"));
    assert_eq!(
        hex(&got[..got.len().min(46)]),
        hex(&tagged(VLAN, &reply)),
        "tagged reply"
    );
    let after = counters(&agent);
    assert_eq!(
        after[counter::ARP_REPLY as usize] - before[counter::ARP_REPLY as usize],
        1,
        "answered by XDP"
    );

    // Untagged, and on VLAN 200: no answer from XDP, nor from lb1's stack.
    for (what, frame) in [
        ("untagged", request.clone()),
        ("on VLAN 200", tagged(200, &request)),
    ] {
        let before = counters(&agent)[counter::VLAN_MISMATCH as usize];
        tx.send(&frame).expect("send the request");
        if let Ok(f) = first(&rx, Duration::from_millis(500), is_reply) {
            panic!("an ARP request {what} was answered: {}", hex(&f));
        }
        let now = counters(&agent)[counter::VLAN_MISMATCH as usize];
        assert_eq!(now - before, 1, "{what}: vlan_mismatch counts it");
    }
    drop(agent);
}
