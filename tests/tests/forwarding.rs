//! The data plane in the netns lab, with real kernels on both ends: a client
//! reaches the VIP through XDP on lb1 and the backends answer it directly.
#![allow(
    clippy::too_many_lines,
    reason = "scenario tests read best as one story"
)]

use vip_tests::kit as common;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use common::{Agent, VIP, ask, is_root, lab, wait_for, who_answers};
use vip_agent::agent::service_key;
use vip_common::{NO_BACKEND, Proto, counter};

const LB1_MAC: &str = "02:99:00:00:00:02";

fn key() -> vip_common::ServiceKey {
    service_key(VIP, 5672, Proto::Tcp)
}

/// The client's neighbour entry for the VIP (after traffic) is lb1's MAC, and
/// thousands of connections are each answered by a backend, split by weight.
#[test]
fn arp_resolves_to_lb1_and_connections_split_by_weight() {
    if !is_root() {
        eprintln!("skipping: netns tests need root");
        return;
    }
    let lab = lab("fwd");
    let agent = Agent::start(
        &lab,
        "lb1",
        "lb1",
        &[("10.99.0.11", 1), ("10.99.0.12", 2), ("10.99.0.13", 1)],
    );

    let n = 4000;
    let started = Instant::now();
    let (counts, failures) = lab.run_in("client", move || {
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        let mut failures = Vec::new();
        for i in 0..n {
            match who_answers(Duration::from_secs(2)) {
                Ok((who, _)) => *counts.entry(who).or_default() += 1,
                Err(e) => failures.push(format!("connection {i}: {e}")),
            }
        }
        (counts, failures)
    });
    eprintln!("{n} connections in {:?}: {counts:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {n} connections failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    let total: u32 = counts.values().sum();
    assert_eq!(total, n);
    for (name, weight) in [("b1", 1.0), ("b2", 2.0), ("b3", 1.0)] {
        let want = f64::from(n) * weight / 4.0;
        let got = f64::from(counts.get(name).copied().unwrap_or(0));
        assert!(
            (got - want).abs() <= 0.10 * want,
            "{name}: {got} connections, expected {want} ± 10 % (weights 1:2:1): {counts:?}"
        );
    }

    let neigh = lab
        .ns("client")
        .ip(&["neigh", "show", &VIP.to_string()])
        .expect("ip neigh");
    assert!(
        neigh.contains(LB1_MAC),
        "the client's ARP entry for the VIP is not lb1's MAC: {neigh:?}"
    );

    let rtt = lab
        .run_in("client", || {
            common::ping(VIP, 0x5151, Duration::from_secs(2))
        })
        .expect("ping the VIP");
    eprintln!("ping VIP: {rtt:?}");

    let c = agent.maps().counters().expect("counters");
    assert_eq!(
        c[counter::ICMP_ECHO_REPLY as usize],
        1,
        "XDP answered the ping: {c:?}"
    );
    assert!(
        c[counter::ARP_REPLY as usize] >= 1,
        "XDP answered ARP: {c:?}"
    );
    // SYN, ACK and FIN at least for every connection went through XDP.
    assert!(
        c[counter::FWD_TX as usize] >= 3 * u64::from(n),
        "forwarded packets: {c:?}"
    );
    assert_eq!(c[counter::DROP_NO_BACKEND as usize], 0);
    assert_eq!(c[counter::DROP_MALFORMED as usize], 0);
}

/// What the client saw in one step: open connections still on their own
/// backend, connections lost, and where new connections landed.
#[derive(Debug, Default)]
struct Step {
    kept: BTreeMap<String, u32>,
    lost: Vec<String>,
    new: BTreeMap<String, u32>,
}

/// Flows stay on their backend while backends are removed, drained and added;
/// new connections avoid a removed or drained backend and reach an added one.
#[test]
fn flows_stay_put_when_backends_change() {
    if !is_root() {
        eprintln!("skipping: netns tests need root");
        return;
    }
    let lab = lab("flow");
    let all = [("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)];
    let mut agent = Agent::start(&lab, "lb1", "lb1", &all);
    let id_of = |last: u8| -> u32 {
        let backends = agent.maps().backends().expect("backends");
        let i = backends
            .iter()
            .position(|b| b.addr == u32::from_ne_bytes([10, 99, 0, last]))
            .expect("backend in map");
        u32::try_from(i).unwrap()
    };
    let (b2_id, b3_id) = (id_of(12), id_of(13));

    // The client side lives on one thread inside the client namespace; the
    // test thread drives the agent between steps.
    let (to_client, steps) = std::sync::mpsc::channel::<&'static str>();
    let (to_test, results) = std::sync::mpsc::channel::<Result<Step, String>>();
    let client = lab.spawn_thread_in("client", move || {
        let mut open = Vec::new();
        for _ in 0..60 {
            let (who, s) = who_answers(Duration::from_secs(2)).expect("connect");
            open.push((who, s));
        }
        let by_backend = |open: &[(String, std::net::TcpStream)]| {
            let mut m: BTreeMap<String, u32> = BTreeMap::new();
            for (w, _) in open {
                *m.entry(w.clone()).or_default() += 1;
            }
            m
        };
        to_test
            .send(Ok(Step {
                kept: by_backend(&open),
                ..Step::default()
            }))
            .unwrap();
        while let Ok(step) = steps.recv() {
            let mut lost = Vec::new();
            // Every connection not on a removed backend still reaches its own backend.
            let mut kept = Vec::new();
            for (who, mut s) in open {
                match ask(&mut s, step) {
                    Ok(now) if now == who => kept.push((who, s)),
                    Ok(now) => {
                        let _ = to_test.send(Err(format!(
                            "{step}: a connection moved from {who} to {now}"
                        )));
                        return;
                    }
                    Err(e) => lost.push(format!("{who}: {}", e.kind())),
                }
            }
            open = kept;
            // New connections.
            let mut fresh: BTreeMap<String, u32> = BTreeMap::new();
            for _ in 0..300 {
                match who_answers(Duration::from_secs(2)) {
                    Ok((w, _)) => *fresh.entry(w).or_default() += 1,
                    Err(e) => {
                        let _ = to_test.send(Err(format!("{step}: new connection failed: {e}")));
                        return;
                    }
                }
            }
            to_test
                .send(Ok(Step {
                    kept: by_backend(&open),
                    lost,
                    new: fresh,
                }))
                .unwrap();
        }
    });
    let initial = results
        .recv_timeout(Duration::from_secs(30))
        .expect("client")
        .expect("initial");
    eprintln!("initial: {initial:?}");
    for b in ["b1", "b2", "b3"] {
        assert!(
            initial.kept.contains_key(b),
            "60 connections reached every backend: {initial:?}"
        );
    }

    // Each step waits until the table in the pinned map shows the change.
    let mut step =
        |name: &'static str, backends: &[(&str, u32)], has_b2: bool, has_b3: bool| -> Step {
            agent.reload(backends);
            wait_for("the reloaded table", Duration::from_secs(10), || {
                let table = agent.maps().live_table(&key()).ok()?;
                (table.contains(&b2_id) == has_b2
                    && table.contains(&b3_id) == has_b3
                    && !table.contains(&NO_BACKEND))
                .then_some(())
            });
            to_client.send(name).unwrap();
            let r = results
                .recv_timeout(Duration::from_mins(1))
                .expect("client step")
                .unwrap_or_else(|e| panic!("{e}"));
            eprintln!("{name}: {r:?}");
            r
        };

    // Remove b3: b1/b2 connections stay, b3's are lost (reset by whoever gets
    // its packets now), new connections never reach b3.
    let r = step("remove-b3", &all[..2], true, false);
    assert!(
        r.kept.contains_key("b1") && r.kept.contains_key("b2"),
        "{r:?}"
    );
    assert!(
        !r.new.contains_key("b3"),
        "a new connection reached removed b3: {r:?}"
    );
    assert!(
        r.lost.iter().all(|l| l.starts_with("b3:")),
        "only b3's connections are lost: {r:?}"
    );

    // Drain b2 (weight 0): its connections stay, new ones avoid it.
    let r = step(
        "drain-b2",
        &[("10.99.0.11", 1), ("10.99.0.12", 0)],
        false,
        false,
    );
    assert!(
        r.kept.contains_key("b2"),
        "drained b2 keeps its connections: {r:?}"
    );
    assert!(
        !r.new.contains_key("b2"),
        "a new connection reached drained b2: {r:?}"
    );
    assert!(r.lost.is_empty(), "nothing lost while draining: {r:?}");

    // Add b3 back and undrain b2: everything kept, new connections reach b3.
    let r = step("add-b3", &all, true, true);
    assert!(r.lost.is_empty(), "nothing lost when adding: {r:?}");
    assert!(
        r.new.contains_key("b3"),
        "new connections reach the added b3: {r:?}"
    );

    drop(to_client);
    client.join().expect("client thread");
}

/// Two agents with the same services pin byte-identical lookup tables.
#[test]
fn two_nodes_build_identical_tables() {
    if !is_root() {
        eprintln!("skipping: netns tests need root");
        return;
    }
    let lab = lab("tbl");
    let backends = [("10.99.0.11", 1), ("10.99.0.12", 3), ("10.99.0.13", 2)];
    let a = Agent::start(&lab, "lb1", "lb1", &backends);
    let b = Agent::start(&lab, "lb2", "lb2", &backends);
    let ta = a.maps().live_table(&key()).expect("lb1 table");
    let tb = b.maps().live_table(&key()).expect("lb2 table");
    assert_eq!(ta.len(), usize::try_from(vip_common::LOOKUP_SIZE).unwrap());
    assert!(!ta.contains(&NO_BACKEND), "every slot filled");
    let same = ta == tb;
    let diff = ta.iter().zip(&tb).filter(|(x, y)| x != y).count();
    assert!(
        same,
        "{diff} of {} slots differ between lb1 and lb2",
        ta.len()
    );
    // Same ids for the same backends (the tables name backends by id).
    let ids = |agent: &Agent| -> Vec<(u32, [u8; 6], u32, u32)> {
        agent
            .maps()
            .backends()
            .unwrap()
            .iter()
            .map(|x| (x.addr, x.mac, x.flags, x.service))
            .collect()
    };
    assert_eq!(ids(&a), ids(&b), "backend entries differ");
}

/// kill -9: XDP stays attached and keeps forwarding open connections until
/// the heartbeat is older than the dead time, then the node turns passive.
/// A restarted agent adopts the pinned link and maps: the open connections
/// are still on their backends. SIGTERM then detaches XDP and removes the pins.
#[test]
fn crash_keeps_forwarding_restart_adopts_sigterm_cleans_up() {
    if !is_root() {
        eprintln!("skipping: netns tests need root");
        return;
    }
    let lab = lab("life");
    let mut agent = Agent::start(
        &lab,
        "lb1",
        "lb1",
        &[("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)],
    );
    let (to_client, steps) = std::sync::mpsc::channel::<&'static str>();
    let (to_test, results) = std::sync::mpsc::channel::<Result<usize, String>>();
    let client = lab.spawn_thread_in("client", move || {
        let mut open: Vec<_> = (0..30)
            .map(|_| who_answers(Duration::from_secs(2)).expect("connect"))
            .collect();
        to_test.send(Ok(open.len())).unwrap();
        while let Ok(step) = steps.recv() {
            let mut same = 0;
            for (who, s) in &mut open {
                match ask(s, step) {
                    Ok(now) if now == *who => same += 1,
                    Ok(now) => {
                        let _ = to_test.send(Err(format!("{step}: moved from {who} to {now}")));
                        return;
                    }
                    Err(e) => {
                        let _ = to_test.send(Err(format!("{step}: {who}: {e}")));
                        return;
                    }
                }
            }
            to_test.send(Ok(same)).unwrap();
        }
    });
    assert_eq!(
        results.recv_timeout(Duration::from_secs(30)).unwrap(),
        Ok(30)
    );

    // Crash: the agent goes, XDP stays and still forwards (dead time 1 s).
    agent.kill9();
    let killed = Instant::now();
    assert!(
        agent.pins().join("link").exists(),
        "the link pin survives a crash"
    );
    to_client.send("after-crash").unwrap();
    assert_eq!(
        results.recv_timeout(Duration::from_secs(10)).unwrap(),
        Ok(30),
        "open connections kept working after kill -9"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(1),
        "the check ran within the dead time"
    );

    // Past the dead time the program stops acting for the VIP. It reads the
    // coarse clock, up to a tick behind (10 ms at HZ=100, the coarsest), so
    // the probe waits 20 ms past the dead time.
    let maps = agent.maps();
    let hb = maps.heartbeat().unwrap();
    let tick = 20_000_000;
    wait_for("a stale heartbeat", Duration::from_secs(3), || {
        (vip_agent::dataplane::monotonic_ns() > hb.stamp_ns + hb.dead_after_ns + tick).then_some(())
    });
    let before = maps.counters().unwrap()[counter::PASS_STALE as usize];
    let probe = lab.run_in("client", || {
        who_answers(Duration::from_millis(300)).map(|(w, _)| w)
    });
    assert!(
        probe.is_err(),
        "a new connection was answered while the heartbeat was stale: {probe:?}"
    );
    let after = maps.counters().unwrap()[counter::PASS_STALE as usize];
    assert!(
        after > before,
        "the SYN was passed as stale ({before} -> {after})"
    );
    drop(maps);

    // Restart: adopts the pins; the open connections are still where they were.
    agent.spawn(&lab);
    to_client.send("after-restart").unwrap();
    assert_eq!(
        results.recv_timeout(Duration::from_secs(10)).unwrap(),
        Ok(30),
        "open connections survive a restart"
    );

    // SIGTERM: clean shutdown, nothing left behind.
    let st = agent.stop();
    assert!(st.success(), "clean exit: {st}");
    assert!(
        !agent.pins().exists(),
        "pins removed on SIGTERM: {:?}",
        std::fs::read_dir(agent.pins()).map(std::iter::Iterator::count)
    );
    let link = lab.ns("lb1").ip(&["-d", "link", "show", "eth0"]).unwrap();
    assert!(
        !link.contains("prog/xdp"),
        "XDP detached on SIGTERM: {link}"
    );
    drop(to_client);
    client.join().unwrap();
}

/// A node with nothing to do (no VRRP, no checks, no traffic, no operator)
/// keeps its heartbeat fresh and so keeps forwarding: its run loop checks
/// in with the pacer on its own, well before the pacer's deadline. (It once
/// did not: an idle static node stopped forwarding 4 s after start.)
#[test]
fn an_idle_static_node_keeps_its_heartbeat_and_forwards() {
    if !is_root() {
        eprintln!("skipping: netns tests need root");
        return;
    }
    let lab = lab("idle");
    let cfg = common::config::node(&lab, "lb1", &[("10.99.0.11", 1)]);
    let dead = vip_agent::agent::dead_time(&cfg);
    let agent = Agent::start_full(&lab, "lb1", cfg, common::Setup::logged());
    let maps = agent.maps();
    // Nothing happens for longer than the pacer's deadline plus the dead
    // time; the heartbeat, read from the pins (not through the agent, which
    // a request would wake), is sampled all along.
    let idle = vip_agent::pacer::LOOP_DEADLINE + dead + Duration::from_secs(1);
    let started = Instant::now();
    let mut oldest = Duration::ZERO;
    while started.elapsed() < idle {
        let hb = maps.heartbeat().expect("the heartbeat");
        let age =
            Duration::from_nanos(vip_agent::dataplane::monotonic_ns().saturating_sub(hb.stamp_ns));
        oldest = oldest.max(age);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        oldest < dead / 2,
        "the heartbeat got {oldest:?} old (dead after {dead:?}):\n{}",
        agent.log_tail(20)
    );
    let (name, _) = lab
        .run_in("client", || who_answers(Duration::from_secs(2)))
        .expect("a connection through the VIP");
    assert_eq!(name, "b1");
    assert!(
        !agent.log_tail(200).contains("has not checked in"),
        "{}",
        agent.log_tail(20)
    );
}
