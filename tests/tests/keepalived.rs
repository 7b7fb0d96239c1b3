//! Interop with keepalived 2.2.7 (Debian's, installed by `cargo xtask test`)
//! in the same VRRP group: vip on lb1, keepalived on lb2. The right node holds
//! the VIP — seen from the client's ARP entry, from vip's VIP table and from
//! keepalived's `ip addr` — and mastership moves both ways.
#![allow(
    clippy::too_many_lines,
    reason = "scenario tests read best as one story"
)]

use vip_tests::kit as common;

use std::{path::Path, time::Duration};

use common::{Agent, Keepalived, Setup, VIP, Vrrp, config, is_root, lab, wait_for};
use vip_tests::lab::{Lab, format_mac};

fn client_arp_names(lab: &Lab, mac: &str) -> bool {
    lab.ns("client")
        .ip(&["neigh", "show", &VIP.to_string()])
        .unwrap_or_default()
        .contains(mac)
}

/// vip master + keepalived backup, then the reverse, in one group.
fn interop(version: u8, advert: Duration, auth_pass: Option<&str>, limit: Duration) {
    let lab = lab(&format!("ka{version}"));
    let lb1_mac = format_mac(lab.mac("lb1"));
    let lb2_mac = format_mac(lab.mac("lb2"));
    let backends = [("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)];
    // Both stacks' members of the one group, at `priority`.
    let member = |priority: u8| Vrrp {
        vip: VIP,
        version,
        priority,
        advert,
        auth_pass,
    };
    let poke = |lab: &Lab| {
        let _ = lab.run_in("client", || common::who_answers(Duration::from_millis(200)));
    };

    // vip (150) master, keepalived (100) backup.
    let mut cfg = config::node(&lab, "lb1", &backends);
    cfg.vrrp.push(member(150).agent_vrrp());
    let mut vip = Agent::start_config(&lab, "lb1", cfg);
    let ka = Keepalived::start(&lab, "lb2", &member(100));
    wait_for("vip master on lb1", limit, || vip.holds(VIP).then_some(()));
    poke(&lab);
    wait_for("client ARP -> lb1", limit, || {
        client_arp_names(&lab, &lb1_mac).then_some(())
    });
    // Give keepalived time to have seen several adverts, then check it stays backup.
    std::thread::sleep(limit / 2);
    assert!(
        !ka.holds(&lab),
        "keepalived took the VIP while vip was master"
    );
    assert!(
        vip.holds(VIP),
        "vip lost mastership to a lower-priority keepalived"
    );

    // vip stops (priority 0): keepalived takes over.
    assert!(vip.stop().success());
    wait_for("keepalived to hold the VIP", limit, || {
        ka.holds(&lab).then_some(())
    });
    poke(&lab);
    wait_for("client ARP -> lb2 (keepalived)", limit, || {
        client_arp_names(&lab, &lb2_mac).then_some(())
    });

    // vip returns with the higher priority and preempts; keepalived drops the VIP.
    vip.spawn(&lab);
    wait_for("vip master again", limit * 2, || {
        vip.holds(VIP).then_some(())
    });
    wait_for("keepalived to release the VIP", limit, || {
        (!ka.holds(&lab)).then_some(())
    });
    wait_for("client ARP -> lb1 again", limit, || {
        client_arp_names(&lab, &lb1_mac).then_some(())
    });
    drop(vip);
    drop(ka);

    // The reverse: keepalived (150) master, vip (100) backup.
    let mut ka = Keepalived::start(&lab, "lb2", &member(150));
    wait_for("keepalived master", limit * 2, || {
        ka.holds(&lab).then_some(())
    });
    let mut cfg = config::node(&lab, "lb1b", &backends);
    cfg.vrrp.push(member(100).agent_vrrp());
    let vip = Agent::start_config(&lab, "lb1", cfg);
    std::thread::sleep(limit / 2);
    assert!(
        !vip.holds(VIP),
        "vip took the VIP while keepalived was master"
    );
    poke(&lab);
    wait_for("client ARP -> lb2", limit, || {
        client_arp_names(&lab, &lb2_mac).then_some(())
    });
    ka.stop();
    wait_for("vip to take over from keepalived", limit, || {
        vip.holds(VIP).then_some(())
    });
    poke(&lab);
    wait_for("client ARP -> lb1 (vip)", limit, || {
        client_arp_names(&lab, &lb1_mac).then_some(())
    });
    assert!(!ka.holds(&lab));
    assert!(Path::new("/proc").exists());
}

#[test]
fn keepalived_v3_100ms_both_ways() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    interop(3, Duration::from_millis(100), None, Duration::from_secs(3));
}

#[test]
fn keepalived_v2_pass_auth_1s_both_ways() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    interop(
        2,
        Duration::from_secs(1),
        Some("1111"),
        Duration::from_secs(8),
    );
}

/// Another team's keepalived on the same LAN reuses VRID 51 for its own
/// address, at a higher priority, multicast, every 100 ms, next to a vip
/// pair: vip drops its adverts (`address_mismatch`) and keeps serving, as
/// keepalived does (`addr_list_err`).
#[test]
fn a_foreign_keepalived_on_our_vrid_moves_nothing() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let theirs = std::net::Ipv4Addr::new(10, 99, 0, 50);
    let lab = lab("kavrid");
    // b3 hosts the other team's router; the service uses b1 and b2.
    let backends = [("10.99.0.11", 1), ("10.99.0.12", 1)];
    let ours = |priority| Vrrp::v3(priority, Duration::from_millis(100));
    let start = |node: &str, priority| {
        let mut cfg = config::node(&lab, node, &backends);
        cfg.vrrp.push(ours(priority).agent_vrrp());
        Agent::start_full(&lab, node, cfg, Setup::logged())
    };
    let lb1 = start("lb1", 150);
    let lb2 = start("lb2", 100);
    wait_for("lb1 master, lb2 backup", Duration::from_secs(5), || {
        (lb1.holds(VIP) && !lb2.holds(VIP)).then_some(())
    });
    let transitions = |a: &Agent| a.status().instances[0].transitions;
    let before = (transitions(&lb1), transitions(&lb2));

    let foreign = Keepalived::start(
        &lab,
        "b3",
        &Vrrp {
            vip: theirs,
            ..Vrrp::v3(200, Duration::from_millis(100))
        },
    );
    // Their router sees our adverts as foreign too, and serves its address.
    wait_for(
        "the other router to hold its address",
        Duration::from_secs(5),
        || foreign.holds_addr(&lab, theirs).then_some(()),
    );
    let mismatches = |a: &Agent| {
        a.status().instances[0]
            .adverts_dropped
            .get("address_mismatch")
            .copied()
            .unwrap_or(0)
    };
    // 20 of its adverts (2 s) reached both vip nodes and were dropped.
    wait_for(
        "20 foreign adverts dropped on each node",
        Duration::from_secs(10),
        || (mismatches(&lb1) >= 20 && mismatches(&lb2) >= 20).then_some(()),
    );
    assert_eq!(
        (transitions(&lb1), transitions(&lb2)),
        before,
        "a foreign advert moved a vip instance"
    );
    assert!(lb1.holds(VIP) && !lb2.holds(VIP), "the VIP moved");
    assert_eq!(lb1.status().instances[0].state, "master");
    // The VIP is served: 30 connections of 30.
    let answered = lab.run_in("client", || {
        (0..30)
            .filter(|_| common::who_answers(Duration::from_secs(1)).is_ok())
            .count()
    });
    assert_eq!(answered, 30, "connections to the VIP failed");
    let log = lb1.log_tail(200);
    assert!(
        log.contains("another VRRP router uses VRID 51"),
        "the collision is not named in the log:\n{log}"
    );
}
