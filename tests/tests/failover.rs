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
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Agent, VIP, is_root, lab, wait_for};
use vip_tests::lab::{Lab, format_mac};

const BACKENDS: [(&str, u32); 3] = [("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)];

fn vrrp_section(priority: u8) -> String {
    format!(
        "\n[[vrrp]]\nname = \"VI_1\"\nvrid = 51\npriority = {priority}\nadvert_interval = \"10ms\"\nvips = [\"{VIP}\"]\ngarp = {{ count = 3, interval = \"5ms\" }}\n"
    )
}

/// An agent named after its node, for the lab's three backends.
fn agent(lab: &Lab, node: &str, extra: &str) -> Agent {
    Agent::start_with(lab, node, node, &BACKENDS, extra)
}

fn start(lab: &Lab, node: &str, priority: u8) -> Agent {
    agent(lab, node, &vrrp_section(priority))
}

/// The exec check `broker`, failing while `flag` exists.
fn broker_check(flag: &Path) -> String {
    format!(
        "\n[[check]]\nname = \"broker\"\nkind = \"exec\"\ncommand = \"test ! -e {}\"\ninterval = \"50ms\"\ntimeout = \"1s\"\nrise = 1\nfall = 1\n",
        flag.display()
    )
}

/// lb1 (150) and lb2 (100) configured by `section(priority, flag)`, each
/// node checking its own broker flag in `dir`; returns lb1's, the only one
/// ever raised.
fn flagged_pair(
    lab: &Lab,
    dir: &Path,
    section: impl Fn(u8, &Path) -> String,
) -> (Agent, Agent, PathBuf) {
    let flag = dir.join("broker-down");
    let lb1 = agent(lab, "lb1", &section(150, &flag));
    let lb2 = agent(lab, "lb2", &section(100, &dir.join("lb2-broker-down")));
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
    let section = |prio: u8| {
        format!(
            "\n[[vrrp]]\nname = \"VI_1\"\nvrid = 51\npriority = {prio}\nadvert_interval = \"100ms\"\nvips = [\"{VIP}\"]\nnotify = \"{}\"\ngarp = {{ count = 1, interval = \"10ms\", refresh = \"200ms\" }}\n",
            script.display()
        )
    };
    let lb1 = agent(&lab, "lb1", &section(150));
    let lb2 = agent(&lab, "lb2", &section(100));
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
    let (lb1, lb2, flag) = flagged_pair(&lab, &guard.0, |prio, flag| {
        broker_check(flag)
            + &format!(
                "\n[[vrrp]]\nname = \"VI_1\"\nvrid = 51\npriority = {prio}\nadvert_interval = \"20ms\"\nvips = [\"{VIP}\"]\ntrack = [{{ check = \"broker\", weight = {weight} }}]\n"
            )
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
    let vip2 = std::net::Ipv4Addr::new(10, 99, 0, 101);
    let section = |p1: u8, p2: u8, peer: &str| {
        format!(
            "\n[[vrrp]]\nname = \"VI_1\"\nvrid = 51\npriority = {p1}\nadvert_interval = \"20ms\"\nunicast_peers = [\"{peer}\"]\nvips = [\"{VIP}\"]\n\
             \n[[vrrp]]\nname = \"VI_2\"\nvrid = 52\npriority = {p2}\nadvert_interval = \"20ms\"\nunicast_peers = [\"{peer}\"]\nvips = [\"{vip2}\"]\n"
        )
    };
    let mut lb1 = agent(&lab, "lb1", &section(150, 100, "10.99.0.3"));
    let lb2 = agent(&lab, "lb2", &section(100, 150, "10.99.0.2"));
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
    let vip2 = std::net::Ipv4Addr::new(10, 99, 0, 101);
    let (lb1, lb2, flag) = flagged_pair(&lab, &guard.0, |prio, flag| {
        broker_check(flag)
            + &format!(
                "\n[[vrrp]]\nname = \"VI_1\"\nvrid = 51\npriority = {prio}\nadvert_interval = \"20ms\"\nvips = [\"{VIP}\"]\nsync_group = \"G\"\n\
                 \n[[vrrp]]\nname = \"VI_2\"\nvrid = 52\npriority = {prio}\nadvert_interval = \"20ms\"\nvips = [\"{vip2}\"]\nsync_group = \"G\"\ntrack = [{{ check = \"broker\", weight = -100 }}]\n"
            )
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
    let section = |prio: u8, port: u16| {
        format!(
            "check = {{ kind = \"tcp\", port = {port}, interval = \"50ms\", timeout = \"200ms\", rise = 1, fall = 1 }}\n\
             \n[[vrrp]]\nname = \"VI_1\"\nvrid = 51\npriority = {prio}\nadvert_interval = \"20ms\"\nvips = [\"{VIP}\"]\n\
             track_services = {{ weight = -60 }}\n"
        )
    };
    let lb2 = agent(&lab, "lb2", &section(100, 5672));
    // lb1 starts after lb2 is master, so it preempts only while healthy.
    wait_for("lb2 master alone", Duration::from_secs(5), || {
        lb2.holds(VIP).then_some(())
    });
    let lb1 = agent(&lab, "lb1", &section(150, 5999));
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
    let lb1 = agent(&lab, "lb1", &section(150, 5672));
    wait_for("healthy lb1 preempts", Duration::from_secs(5), || {
        (lb1.holds(VIP) && !lb2.holds(VIP)).then_some(())
    });
    assert_eq!(lb1.status().instances[0].priority, 150);
}
