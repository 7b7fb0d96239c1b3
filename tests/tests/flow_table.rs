//! The XDP flow table in the netns lab: `[node] flow_table_size` sizes it,
//! and floods of twice its size move no held connection: a SYN flood
//! evicts only itself, and a flood that does evict held entries has their
//! next segments counted as `flow_miss` and placed again on the same
//! backend while the backend set is unchanged.
#![allow(
    clippy::too_many_lines,
    reason = "scenario tests read best as one story"
)]

use std::{
    net::{Ipv4Addr, TcpStream},
    time::{Duration, Instant},
};

use vip_agent::dataplane::{Dataplane, DataplaneError};
use vip_common::{FlowKey, Proto, counter, maps};
use vip_tests::{
    frames::{ETH_P_IPV4, Ipv4, TCP_ACK, TCP_SYN, ethernet, tcp},
    kit::{self as common, Agent, VIP, ask, is_root, lab, wait_for, who_answers},
    lab::node_addr,
    sys::PacketSender,
};

const BACKENDS: [(&str, u32); 3] = [("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)];

/// An agent with `flow_table_size = 1024` pins a flow table of 1024
/// entries and forwards through it; a data plane loaded over those pins
/// with another size is refused with the key named, so a changed size
/// never silently reuses the old table.
#[test]
fn the_flow_table_has_the_configured_size() {
    if !is_root() {
        eprintln!("skipping: netns tests need root");
        return;
    }
    let lab = lab("ftsz");
    let mut cfg = common::config::node(&lab, "lb1", &BACKENDS);
    cfg.node.flow_table_size = 1024;
    let agent = Agent::start_config(&lab, "lb1", cfg);
    let flows = agent.pins().join(maps::FLOWS);
    let info = aya::maps::MapInfo::from_pin(&flows).expect("the pinned flow table");
    assert_eq!(info.max_entries(), 1024, "{}", flows.display());

    let (who, _) = lab
        .run_in("client", || who_answers(Duration::from_secs(2)))
        .expect("a connection through the VIP");
    assert!(who.starts_with('b'), "{who}");
    assert!(
        !agent.maps().flows().expect("flows").is_empty(),
        "the connection is in the flow table"
    );

    match Dataplane::load(Some(&agent.pins()), 2048) {
        Err(e @ DataplaneError::FlowTableSize { .. }) => {
            let shown = e.to_string();
            assert!(
                shown.contains("has 1024 entries") && shown.contains("flow_table_size is 2048"),
                "{shown}"
            );
        }
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("a data plane of another flow-table size adopted the pins"),
    }
}

/// Each held connection still talks to the backend that greeted it.
fn held_keep_their_backend(held: &mut [(String, TcpStream)], when: &str) {
    for (i, (who, s)) in held.iter_mut().enumerate() {
        let now = ask(s, "still there?")
            .unwrap_or_else(|e| panic!("held connection {i} ({who}) {when}: {e}"));
        assert_eq!(
            &now, who,
            "held connection {i} moved to another backend {when}"
        );
    }
}

/// The flow table of the flood test.
const SMALL_TABLE: u32 = 1024;
/// Connections held across the flood.
const HELD: usize = 16;
/// SYNs in the flood: twice the table.
const FLOOD: u32 = 2 * SMALL_TABLE;
/// Frames sent between two pauses of [`FLOOD_PAUSE`], so the veth rings
/// (256 frames) never overflow and every SYN reaches XDP.
const FLOOD_BATCH: u32 = 32;
const FLOOD_PAUSE: Duration = Duration::from_millis(1);
/// Floods at most, each of [`FLOOD`] SYNs.
const FLOOD_ROUNDS: u32 = 8;
/// The most one flood may take to send.
const FLOOD_LIMIT: Duration = Duration::from_secs(20);

/// A spoofed client of the flood: 10.96.0.0/16 (routed nowhere in the
/// lab: the backends' SYN-ACKs to it go nowhere), port 1024 and up.
fn spoofed(i: u32) -> (Ipv4Addr, u16) {
    let [_, _, hi, lo] = i.to_be_bytes();
    (
        Ipv4Addr::new(10, 96, hi, lo),
        u16::try_from(1024 + i % 60_000).expect("a port"),
    )
}

/// With a 1024-entry flow table, 16 connections are held through the VIP
/// while 2048 SYNs from 2048 spoofed clients (twice the table) go through
/// XDP: every SYN creates a flow, none is a flow miss, and the held
/// connections keep their entries (a SYN is placed without a lookup, so
/// the flood's entries are never marked used and the kernel's LRU evicts
/// them first) and their backends. Then floods of clients that complete
/// their handshakes (SYN, ACK) evict held entries; each evicted held
/// connection's next segment is a flow miss, placed by the lookup table on
/// the same backend (the backend set is unchanged), so every held
/// connection still talks to its backend; new connections still succeed.
#[test]
fn a_syn_flood_of_twice_the_table_moves_no_held_connection() {
    if !is_root() {
        eprintln!("skipping: netns tests need root");
        return;
    }
    let lab = lab("synf");
    let mut cfg = common::config::node(&lab, "lb1", &BACKENDS);
    cfg.node.flow_table_size = SMALL_TABLE;
    let agent = Agent::start_config(&lab, "lb1", cfg);
    let client = node_addr("client").expect("lab node");

    let mut held: Vec<(String, TcpStream)> = lab.run_in("client", || {
        (0..HELD)
            .map(|i| {
                who_answers(Duration::from_secs(2))
                    .unwrap_or_else(|e| panic!("held connection {i}: {e}"))
            })
            .collect()
    });
    let keys: Vec<FlowKey> = held
        .iter()
        .map(|(_, s)| {
            let port = s.local_addr().expect("local address").port();
            FlowKey::new(client.octets(), port, VIP.octets(), 5672, Proto::Tcp)
        })
        .collect();
    let in_table = |keys: &[FlowKey]| -> usize {
        let flows = agent.maps().flows().expect("flows");
        keys.iter()
            .filter(|k| flows.iter().any(|(f, _)| f == *k))
            .count()
    };
    assert_eq!(
        in_table(&keys),
        HELD,
        "the held connections are in the table"
    );
    for (i, (who, s)) in held.iter_mut().enumerate() {
        let now = ask(s, "before").unwrap_or_else(|e| panic!("held {i} before: {e}"));
        assert_eq!(&now, who, "held {i} before the flood");
    }
    let before = agent.maps().counters().expect("counters");

    let (lb1, src_mac) = (lab.mac("lb1"), lab.mac("client"));
    // One flood of FLOOD spoofed clients, `round * FLOOD` and up: a SYN
    // each, and with `ack` an ACK after it, as a client completing its
    // handshake sends.
    let flood = |round: u32, ack: bool| {
        lab.run_in("client", move || {
            let tx = PacketSender::open("eth0").expect("AF_PACKET on eth0");
            let started = Instant::now();
            for i in 0..FLOOD {
                assert!(
                    started.elapsed() < FLOOD_LIMIT,
                    "the flood took longer than {FLOOD_LIMIT:?} ({i} sent)"
                );
                let (src, sport) = spoofed(round * FLOOD + i);
                let flags: &[u8] = if ack { &[TCP_SYN, TCP_ACK] } else { &[TCP_SYN] };
                for f in flags {
                    let seg = tcp(src, VIP, sport, 5672, *f, &[]);
                    let frame = ethernet(
                        lb1,
                        src_mac,
                        None,
                        ETH_P_IPV4,
                        &Ipv4::new(src, VIP, 6).packet(&seg),
                    );
                    tx.send(&frame).expect("send a segment");
                }
                if (i + 1).is_multiple_of(FLOOD_BATCH) {
                    std::thread::sleep(FLOOD_PAUSE);
                }
            }
            started.elapsed()
        })
    };
    let moved = |c: &[u64], i: u32| c[i as usize] - before[i as usize];

    // The SYN flood of twice the table.
    let took = flood(0, false);
    let after = wait_for(
        "XDP to place every SYN of the flood",
        Duration::from_secs(5),
        || {
            let c = agent.maps().counters().expect("counters");
            (moved(&c, counter::FLOW_NEW) >= u64::from(FLOOD)).then_some(c)
        },
    );
    let flows = agent.maps().flows().expect("flows").len();
    let kept = in_table(&keys);
    eprintln!(
        "SYN flood: {FLOOD} SYNs in {took:?}; flow_new +{}, {flows} flows in the table, {kept} of {HELD} held connections in it",
        moved(&after, counter::FLOW_NEW)
    );
    assert!(
        flows <= SMALL_TABLE as usize,
        "the table holds at most {SMALL_TABLE} flows: {flows}"
    );
    assert_eq!(
        moved(&after, counter::FLOW_MISS),
        0,
        "SYNs are no flow misses"
    );
    // A SYN is placed without a flow lookup, so the flood's entries are
    // never referenced, and the kernel's LRU evicts unreferenced entries
    // before the ones in use: the flood evicts only itself.
    assert_eq!(kept, HELD, "a SYN flood evicted a flow in use");
    held_keep_their_backend(&mut held, "after the SYN flood");
    let at = agent.maps().counters().expect("counters");
    assert_eq!(
        at[counter::FLOW_MISS as usize],
        after[counter::FLOW_MISS as usize],
        "the held connections hit the table"
    );

    // Clients that complete their handshakes (SYN, then ACK: a lookup
    // that marks the entry used) do compete with the held connections:
    // floods of them, at most FLOOD_ROUNDS, until the LRU has evicted a
    // held connection, whose next segment is then a flow miss placed on
    // the same backend by the lookup table.
    let mut kept = HELD;
    let mut rounds = 0;
    while rounds < FLOOD_ROUNDS && kept == HELD {
        rounds += 1;
        let took = flood(rounds, true);
        let want = u64::from(FLOOD) * u64::from(rounds + 1);
        wait_for(
            "XDP to place every client of the flood",
            Duration::from_secs(5),
            || {
                let c = agent.maps().counters().expect("counters");
                (moved(&c, counter::FLOW_NEW) >= want).then_some(())
            },
        );
        kept = in_table(&keys);
        eprintln!(
            "handshake flood {rounds}: {FLOOD} clients in {took:?}; {kept} of {HELD} held connections in the table"
        );
    }
    assert!(
        kept < HELD,
        "{rounds} floods of {FLOOD} clients into {SMALL_TABLE} entries evicted no held connection: the re-placement was not tested"
    );
    let before_ask = agent.maps().counters().expect("counters");
    held_keep_their_backend(&mut held, "after the handshake floods");
    let end = agent.maps().counters().expect("counters");
    let misses = end[counter::FLOW_MISS as usize] - before_ask[counter::FLOW_MISS as usize];
    assert!(
        misses >= (HELD - kept) as u64,
        "each evicted held connection's next segment is a flow miss: {misses} for {} evicted",
        HELD - kept
    );
    assert_eq!(
        in_table(&keys),
        HELD,
        "the held connections are placed again"
    );
    assert_eq!(end[counter::DROP_NO_BACKEND as usize], 0);

    let (who, _) = lab
        .run_in("client", || who_answers(Duration::from_secs(2)))
        .expect("a new connection after the flood");
    assert!(who.starts_with('b'), "{who}");
}
