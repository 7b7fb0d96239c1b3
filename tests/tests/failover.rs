//! VRRP between two vip agents in the netns lab, 10 ms adverts: the master
//! holds the VIP (the client's ARP entry names it), and when it is killed
//! (-9) or stopped (SIGTERM) the backup takes over while a client probes the
//! VIP with TCP connects; the test prints the measured gap.
#![allow(
    clippy::too_many_lines,
    reason = "scenario tests read best as one story"
)]

use vip_tests::kit as common;

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Agent, VIP, config, is_root, lab, wait_for};
use vip_agent::config::{Check, Config, Vrrp};
use vip_tests::lab::{Lab, format_mac};

const BACKENDS: [(&str, u32); 3] = [("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)];

/// The lab's instance `VI_1` (vrid 51) at `priority`, adverts every
/// `advert_ms`.
fn vi_1(priority: u8, advert_ms: u64) -> Vrrp {
    let mut v = config::vrrp("VI_1", 51, priority, &[VIP]);
    v.election.advert_interval = Duration::from_millis(advert_ms);
    v
}

/// The second instance `VI_2` (vrid 52) for `vip2`.
fn vi_2(priority: u8, advert_ms: u64, vip2: Ipv4Addr) -> Vrrp {
    let mut v = config::vrrp("VI_2", 52, priority, &[vip2]);
    v.election.advert_interval = Duration::from_millis(advert_ms);
    v
}

/// The kit's config of the node named after `node`, for the lab's three
/// backends.
fn base(lab: &Lab, node: &str) -> Config {
    config::node(lab, node, &BACKENDS)
}

/// An agent named after its node running `cfg`.
fn agent(lab: &Lab, node: &str, cfg: Config) -> Agent {
    Agent::start_config(lab, node, cfg)
}

fn start(lab: &Lab, node: &str, priority: u8) -> Agent {
    let mut cfg = base(lab, node);
    let mut v = vi_1(priority, 10);
    v.garp.count = 3;
    v.garp.interval = Duration::from_millis(5);
    cfg.vrrp.push(v);
    agent(lab, node, cfg)
}

/// The exec check `broker`, failing while `flag` exists.
fn broker_check(flag: &Path) -> Check {
    let mut c = config::check(
        "broker",
        config::exec(&format!("test ! -e {}", flag.display())),
    );
    c.schedule.interval = Duration::from_millis(50);
    c.schedule.rise = 1;
    c.schedule.fall = 1;
    c
}

/// lb1 (150) and lb2 (100) with the `broker` check of their own flag in
/// `dir` and the instances `instances(priority)`; returns lb1's flag, the
/// only one ever raised.
fn flagged_pair(
    lab: &Lab,
    dir: &Path,
    instances: impl Fn(u8) -> Vec<Vrrp>,
) -> (Agent, Agent, PathBuf) {
    let flag = dir.join("broker-down");
    let pair = |node: &str, priority: u8, flag: &Path| {
        let mut cfg = base(lab, node);
        cfg.checks.push(broker_check(flag));
        cfg.vrrp = instances(priority);
        agent(lab, node, cfg)
    };
    let lb1 = pair("lb1", 150, &flag);
    let lb2 = pair("lb2", 100, &dir.join("lb2-broker-down"));
    (lb1, lb2, flag)
}

fn client_arp(lab: &Lab) -> String {
    lab.ns("client")
        .ip(&["neigh", "show", &VIP.to_string()])
        .unwrap_or_default()
}

/// Probes VIP:5672 from the client every 2 ms (each connect may take 50 ms)
/// until stopped or 30 s pass; returns the instants of successful connects.
fn probe(lab: &Lab, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Instant>> {
    lab.spawn_thread_in("client", move || {
        let mut ok = Vec::new();
        let end = Instant::now() + Duration::from_secs(30);
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            if let Ok(s) = TcpStream::connect_timeout(
                &SocketAddr::from((VIP, 5672)),
                Duration::from_millis(50),
            ) {
                drop(s);
                ok.push(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        ok
    })
}

/// The longest stretch without a successful connect that spans `fault`.
fn gap_around(ok: &[Instant], fault: Instant) -> Duration {
    let before = ok
        .iter()
        .rev()
        .find(|t| **t <= fault)
        .copied()
        .unwrap_or(fault);
    let after = ok
        .iter()
        .find(|t| **t > fault)
        .copied()
        .expect("the probe resumed after the fault");
    after - before
}

/// Waits until lb1 is master, lb2 backup, and the client's ARP entry names lb1.
fn lb1_is_master(lab: &Lab, lb1: &Agent, lb2: &Agent, lb1_mac: &str) {
    wait_for("lb1 master, lb2 backup", Duration::from_secs(5), || {
        (lb1.holds(VIP) && !lb2.holds(VIP)).then_some(())
    });
    let _ = lab.run_in("client", || common::who_answers(Duration::from_secs(1)));
    wait_for(
        "the client's ARP entry to name lb1",
        Duration::from_secs(2),
        || client_arp(lab).contains(lb1_mac).then_some(()),
    );
}

/// Injects `fault` while the client probes; waits until lb2 is master and the
/// client's ARP entry names it; prints and bounds the gap the client saw.
fn failover(lab: &Lab, what: &str, lb2: &Agent, lb2_mac: &str, fault: impl FnOnce()) {
    let stop = Arc::new(AtomicBool::new(false));
    let prober = probe(lab, Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(300));
    let at = Instant::now();
    fault();
    wait_for("lb2 to become master", Duration::from_secs(3), || {
        lb2.holds(VIP).then_some(())
    });
    let took_over = at.elapsed();
    wait_for(
        "the client's ARP entry to name lb2",
        Duration::from_secs(2),
        || client_arp(lab).contains(lb2_mac).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let ok = prober.join().expect("prober");
    let gap = gap_around(&ok, at);
    eprintln!(
        "{what}: lb2 master after {took_over:?}; client gap {gap:?} ({} probes answered)",
        ok.len()
    );
    assert!(
        gap < Duration::from_secs(2),
        "{what}: the probe resumed through lb2"
    );
}

#[test]
fn backup_takes_over_on_kill_sigterm_and_link_down() {
    if !is_root() {
        eprintln!("skipping: netns tests need root");
        return;
    }
    let lab = lab("vrrp");
    let lb1_mac = format_mac(lab.mac("lb1"));
    let lb2_mac = format_mac(lab.mac("lb2"));
    let mut lb1 = start(&lab, "lb1", 150);
    let lb2 = start(&lab, "lb2", 100);

    // Election: lb1 (150) becomes master, lb2 stays backup.
    lb1_is_master(&lab, &lb1, &lb2, &lb1_mac);
    failover(&lab, "kill -9", &lb2, &lb2_mac, || lb1.kill9());

    // lb1 comes back and preempts (higher priority); then SIGTERM it.
    lb1.spawn(&lab);
    lb1_is_master(&lab, &lb1, &lb2, &lb1_mac);
    failover(&lab, "SIGTERM", &lb2, &lb2_mac, || {
        let st = lb1.stop();
        assert!(st.success(), "clean exit: {st}");
    });

    // lb1 again; then its link goes down: Fault (VIPs withdrawn), lb2 takes over.
    lb1.spawn(&lab);
    lb1_is_master(&lab, &lb1, &lb2, &lb1_mac);
    failover(&lab, "link down", &lb2, &lb2_mac, || {
        lab.ns("lb1")
            .ip(&["link", "set", "eth0", "down"])
            .expect("link down");
    });
    wait_for(
        "lb1 to withdraw the VIP (fault)",
        Duration::from_secs(2),
        || (!lb1.holds(VIP)).then_some(()),
    );

    // Link back: lb1 leaves Fault, hears lb2, preempts with its higher priority.
    lab.ns("lb1")
        .ip(&["link", "set", "eth0", "up"])
        .expect("link up");
    wait_for(
        "lb1 master after its link is back",
        Duration::from_secs(5),
        || (lb1.holds(VIP) && !lb2.holds(VIP)).then_some(()),
    );
}

/// The master repeats a gratuitous ARP every `garp.refresh`, which repairs a
/// client whose ARP entry names the wrong node (the classic stale entry after
/// a split); and the notify hook runs with `<state> <instance>`.
#[test]
fn garp_refresh_repairs_a_stale_entry_and_notify_runs() {
    if !is_root() {
        eprintln!("skipping: netns tests need root");
        return;
    }
    let lab = lab("garp");
    let lb1_mac = format_mac(lab.mac("lb1"));
    let lb2_mac = format_mac(lab.mac("lb2"));
    let guard = common::DirGuard::for_lab(&lab, "notify");
    let dir = guard.0.clone();
    let script = dir.join("notify.sh");
    let log = dir.join("notify.log");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$1 $2\" >> {}\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let start = |node: &str, prio: u8| {
        let mut cfg = base(&lab, node);
        let mut v = vi_1(prio, 100);
        v.notify = Some(script.clone());
        v.garp.count = 1;
        v.garp.interval = Duration::from_millis(10);
        v.garp.refresh = Duration::from_millis(200);
        cfg.vrrp.push(v);
        agent(&lab, node, cfg)
    };
    let lb1 = start("lb1", 150);
    let lb2 = start("lb2", 100);
    wait_for("lb1 master, lb2 backup", Duration::from_secs(5), || {
        (lb1.holds(VIP) && !lb2.holds(VIP)).then_some(())
    });
    let _ = lab.run_in("client", || common::who_answers(Duration::from_secs(1)));
    wait_for("client ARP -> lb1", Duration::from_secs(2), || {
        client_arp(&lab).contains(&lb1_mac).then_some(())
    });

    // Poison the client's entry with lb2's MAC; the periodic GARP repairs it
    // (Linux lets an ARP override an entry once it is older than locktime, 1 s).
    lab.ns("client")
        .ip(&[
            "neigh",
            "replace",
            &VIP.to_string(),
            "lladdr",
            &lb2_mac,
            "dev",
            "eth0",
            "nud",
            "reachable",
        ])
        .unwrap();
    assert!(client_arp(&lab).contains(&lb2_mac));
    wait_for(
        "the refresh GARP to repair the entry",
        Duration::from_secs(4),
        || client_arp(&lab).contains(&lb1_mac).then_some(()),
    );

    let text = wait_for("the notify hooks", Duration::from_secs(2), || {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        (t.contains("master VI_1") && t.contains("backup VI_1")).then_some(t)
    });
    eprintln!("notify log:\n{text}");
    drop(lb1);
    drop(lb2);
}

/// keepalived's `track_script` + `weight`: while lb1's exec check fails its
/// priority drops by 60 (150 -> 90), below lb2's 100, and lb2 takes over;
/// when the check passes again lb1 takes the VIP back.
#[test]
fn a_failing_tracked_check_moves_mastership() {
    tracked_check_moves_mastership(-60);
}

/// keepalived's weight 0: while the check fails the instance is in Fault
/// (VIPs withdrawn whatever the priority), and lb2 takes over.
#[test]
fn a_failing_weight_zero_check_means_fault() {
    tracked_check_moves_mastership(0);
}

/// lb1 (150) tracks an exec check with `weight`, lb2 (100) is backup: raising
/// lb1's failure flag hands the VIP to lb2, clearing it brings it back.
fn tracked_check_moves_mastership(weight: i32) {
    if !is_root() {
        eprintln!("skipping: netns tests need root");
        return;
    }
    let lab = lab("trk");
    let guard = common::DirGuard::for_lab(&lab, "track");
    let (lb1, lb2, flag) = flagged_pair(&lab, &guard.0, |prio| {
        let mut v = vi_1(prio, 20);
        v.track.push(config::track("broker", weight));
        vec![v]
    });
    wait_for("lb1 master, lb2 backup", Duration::from_secs(5), || {
        (lb1.holds(VIP) && !lb2.holds(VIP)).then_some(())
    });

    std::fs::write(&flag, b"").unwrap();
    wait_for(
        "lb2 master while lb1's check fails",
        Duration::from_secs(5),
        || (lb2.holds(VIP) && !lb1.holds(VIP)).then_some(()),
    );
    std::fs::remove_file(&flag).unwrap();
    wait_for(
        "lb1 master again once its check passes",
        Duration::from_secs(5),
        || (lb1.holds(VIP) && !lb2.holds(VIP)).then_some(()),
    );
    drop(lb1);
    drop(lb2);
}

/// Unicast VRRP (`unicast_peers`, keepalived's `unicast_peer`) and two
/// instances backing each other up (active-active): lb1 is master of `VI_1`,
/// lb2 of `VI_2`; killing lb1 moves `VI_1` to lb2 while `VI_2` stays there.
#[test]
fn unicast_active_active_instances() {
    if !is_root() {
        eprintln!("skipping: netns tests need root");
        return;
    }
    let lab = lab("uni");
    let vip2 = Ipv4Addr::new(10, 99, 0, 101);
    let start = |node: &str, p1: u8, p2: u8, peer: Ipv4Addr| {
        let mut cfg = base(&lab, node);
        cfg.vrrp = vec![vi_1(p1, 20), vi_2(p2, 20, vip2)];
        for v in &mut cfg.vrrp {
            v.unicast_peers = vec![peer];
        }
        agent(&lab, node, cfg)
    };
    let mut lb1 = start("lb1", 150, 100, Ipv4Addr::new(10, 99, 0, 3));
    let lb2 = start("lb2", 100, 150, Ipv4Addr::new(10, 99, 0, 2));
    wait_for(
        "lb1 master of VI_1 and lb2 of VI_2",
        Duration::from_secs(5),
        || (lb1.holds(VIP) && !lb2.holds(VIP) && lb2.holds(vip2) && !lb1.holds(vip2)).then_some(()),
    );
    lb1.kill9();
    wait_for("lb2 master of both", Duration::from_secs(5), || {
        (lb2.holds(VIP) && lb2.holds(vip2)).then_some(())
    });
}

/// A sync group (keepalived `vrrp_sync_group`): lb1 is master of `VI_1` and
/// `VI_2`; only `VI_2` tracks lb1's broker check, yet when it fails both
/// instances move to lb2 together (the group goes to Fault), and both come
/// back when it passes. Client ARP for both VIPs follows.
#[test]
fn a_sync_group_moves_together() {
    if !is_root() {
        eprintln!("skipping: netns tests need root");
        return;
    }
    let lab = lab("syn");
    let guard = common::DirGuard::for_lab(&lab, "sync");
    let vip2 = Ipv4Addr::new(10, 99, 0, 101);
    let (lb1, lb2, flag) = flagged_pair(&lab, &guard.0, |prio| {
        let mut instances = vec![vi_1(prio, 20), vi_2(prio, 20, vip2)];
        for v in &mut instances {
            v.sync_group = Some("G".to_owned());
        }
        instances[1].track.push(config::track("broker", -100));
        instances
    });
    let on = |a: &Agent| a.holds(VIP) && a.holds(vip2);
    let off = |a: &Agent| !a.holds(VIP) && !a.holds(vip2);
    wait_for("lb1 master of both", Duration::from_secs(5), || {
        (on(&lb1) && off(&lb2)).then_some(())
    });
    // The client learns both VIPs (from lb1) so that GARP has entries to move.
    lab.run_in("client", || {
        for (n, v) in [VIP, vip2].into_iter().enumerate() {
            common::ping(
                v,
                0x5100 + u16::try_from(n).unwrap(),
                Duration::from_secs(2),
            )
            .expect("ping VIP");
        }
    });
    std::fs::write(&flag, b"").unwrap();
    wait_for("both on lb2", Duration::from_secs(5), || {
        (on(&lb2) && off(&lb1)).then_some(())
    });
    let states: Vec<String> = lb1
        .status()
        .instances
        .iter()
        .map(|i| i.state.clone())
        .collect();
    assert_eq!(states, ["fault", "fault"], "the whole group is in Fault");
    let mac2 = format_mac(lab.mac("lb2"));
    wait_for(
        "client ARP for both VIPs names lb2",
        Duration::from_secs(5),
        || {
            let arp = lab.ns("client").ip(&["neigh", "show"]).unwrap_or_default();
            [VIP, vip2]
                .iter()
                .all(|v| {
                    arp.lines()
                        .any(|l| l.starts_with(&format!("{v} ")) && l.contains(&mac2))
                })
                .then_some(())
        },
    );
    std::fs::remove_file(&flag).unwrap();
    wait_for("both back on lb1", Duration::from_secs(5), || {
        (on(&lb1) && off(&lb2)).then_some(())
    });
}

/// `track_services`: when every backend of lb1's services fails its check
/// (lb1 probes a port nothing listens on; lb2 probes the real one), lb1's
/// priority drops by the weight and lb2 takes over; with weight 0 lb1 goes
/// to Fault.
#[test]
fn an_instance_that_lost_its_backends_steps_down() {
    if !is_root() {
        eprintln!("skipping: netns tests need root");
        return;
    }
    let lab = lab("tsv");
    let start = |node: &str, prio: u8, port: u16| {
        let mut cfg = base(&lab, node);
        let mut check = config::tcp_check();
        check.port = Some(port);
        check.schedule.interval = Duration::from_millis(50);
        check.schedule.timeout = Duration::from_millis(200);
        check.schedule.rise = 1;
        check.schedule.fall = 1;
        cfg.services[0].check = Some(check);
        let mut v = vi_1(prio, 20);
        v.track_services = Some(-60);
        cfg.vrrp.push(v);
        agent(&lab, node, cfg)
    };
    let lb2 = start("lb2", 100, 5672);
    // lb1 starts after lb2 is master, so it preempts only while healthy.
    wait_for("lb2 master alone", Duration::from_secs(5), || {
        lb2.holds(VIP).then_some(())
    });
    let lb1 = start("lb1", 150, 5999);
    wait_for("lb1's backends all down", Duration::from_secs(5), || {
        lb1.status().services[0]
            .backends
            .iter()
            .all(|b| !b.up)
            .then_some(())
    });
    let st = lb1.status();
    assert_eq!(st.instances[0].priority, 90, "150 - 60");
    assert_eq!(st.instances[0].state, "backup");
    assert!(lb2.holds(VIP) && !lb1.holds(VIP));
    // The same with the healthy port: lb1 preempts.
    let mut lb1 = lb1;
    lb1.stop();
    drop(lb1);
    let lb1 = start("lb1", 150, 5672);
    wait_for("healthy lb1 preempts", Duration::from_secs(5), || {
        (lb1.holds(VIP) && !lb2.holds(VIP)).then_some(())
    });
    assert_eq!(lb1.status().instances[0].priority, 150);
}
