//! Operating a node: the control socket (status, drain, undrain, reload),
//! Prometheus metrics scraped while the test sends traffic, reloads that
//! leave VRRP alone, and what an operator sees once the agent is dead.
#![allow(
    clippy::too_many_lines,
    reason = "scenario tests read best as one story"
)]

use vip_tests::kit as common;

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use common::{Agent, VIP, ask, config, is_root, lab, wait_for, who_answers};
use vip_agent::{
    config::{Config, Vrrp, write::to_toml},
    control::{Command, Status},
};
use vip_tests::lab::Lab;

const BACKENDS: [(&str, u32); 3] = [("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)];

/// The lab's instance `VI_1` (vrid 51) at `priority`, 10 ms adverts.
fn vrrp(priority: u8) -> Vrrp {
    let mut v = config::vrrp("VI_1", 51, priority, &[VIP]);
    v.election.advert_interval = Duration::from_millis(10);
    v
}

/// The kit's config of `node` (named after it) with `instances`.
fn with_vrrp(lab: &Lab, node: &str, instances: Vec<Vrrp>) -> Config {
    let mut cfg = config::node(lab, node, &BACKENDS);
    cfg.vrrp = instances;
    cfg
}

/// `GET /metrics` from lb1's loopback, where the agent serves.
fn scrape(lab: &Lab) -> BTreeMap<String, f64> {
    common::scrape(lab, "lb1", 9650)
}

fn sum(samples: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

fn transitions(status: &Status) -> u64 {
    status.instances.iter().map(|i| i.transitions).sum()
}

#[test]
fn control_socket_metrics_and_reload_without_a_vrrp_flap() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let lab = lab("ops");
    // 50 ms adverts: what this test proves is that a reload restarts no
    // instance (at any interval a restart is a transition). Whether the
    // loop keeps a 10 ms schedule while it works, with the whole suite on
    // two cores, is a measure of its own (the bench), not this test's.
    let slow = |priority| {
        let mut v = vrrp(priority);
        v.election.advert_interval = Duration::from_millis(50);
        v
    };
    // lb1 tracks a node check (always passing) whose interval a reload
    // changes below.
    let mut cfg = with_vrrp(&lab, "lb1", vec![slow(150)]);
    cfg.node.metrics = Some(([127, 0, 0, 1], 9650).into());
    cfg.vrrp[0].track.push(config::track("alive", -60));
    let mut alive = config::check("alive", config::exec("true"));
    alive.schedule.interval = Duration::from_millis(50);
    cfg.checks.push(alive);
    let mut lb1 = Agent::start_config(&lab, "lb1", cfg);
    let mut lb2 = Agent::start_config(&lab, "lb2", with_vrrp(&lab, "lb2", vec![slow(100)]));
    wait_for("lb1 to be master", Duration::from_secs(5), || {
        (lb1.holds(VIP) && !lb2.holds(VIP)).then_some(())
    });

    // Status: role, VIPs, backends.
    let status = lb1.status();
    assert_eq!(
        (status.node.as_str(), status.interface.as_str()),
        ("lb1", "eth0")
    );
    let vi = &status.instances[0];
    assert_eq!(
        (
            vi.name.as_str(),
            vi.state.as_str(),
            vi.priority,
            vi.vips.clone()
        ),
        ("VI_1", "master", 150, vec![VIP])
    );
    assert!(vi.adverts_sent > 0);
    let backends = &status.services[0].backends;
    assert_eq!(
        backends
            .iter()
            .map(|b| b.address.to_string())
            .collect::<Vec<_>>(),
        ["10.99.0.11", "10.99.0.12", "10.99.0.13"]
    );
    assert!(
        backends
            .iter()
            .all(|b| b.up && b.in_table && !b.draining && b.mac.is_some())
    );
    assert_eq!(lb2.status().instances[0].state, "backup");
    let flaps_before = (transitions(&lb1.status()), transitions(&lb2.status()));

    // Metrics rise with traffic the test sends.
    let before = scrape(&lab);
    assert!(
        (before["vip_vrrp_state{instance=VI_1,state=master,vrid=51}"] - 1.0).abs() < f64::EPSILON,
        "lb1 exports master"
    );
    let mut held = lab.run_in("client", || {
        for _ in 0..40 {
            let (_, mut s) = who_answers(Duration::from_secs(2)).expect("connect via the VIP");
            ask(&mut s, "ping").expect("echo");
        }
        who_answers(Duration::from_secs(2)).expect("a held connection")
    });
    let fwd = |m: &BTreeMap<String, f64>| m["vip_packets_total{verdict=fwd_tx}"];
    // Each connection: SYN, ACK, data, ACKs and FIN: at least 4 packets.
    // A scrape may show a status up to `STATUS_MAX_AGE` old.
    let after = common::poll(Duration::from_secs(2), Duration::from_millis(20), || {
        let m = scrape(&lab);
        (fwd(&m) - fwd(&before) >= 160.0).then_some(m)
    })
    .unwrap_or_else(|| scrape(&lab));
    let delta = fwd(&after) - fwd(&before);
    assert!(delta >= 160.0, "fwd_tx rose by {delta}");
    println!(
        "fwd_tx rose by {delta} over 41 connections; held on {}",
        held.0
    );
    let per_backend =
        sum(&after, "vip_backend_packets_total") - sum(&before, "vip_backend_packets_total");
    assert!(
        (per_backend - delta).abs() < f64::EPSILON,
        "per-backend packets ({per_backend}) and fwd_tx ({delta}) must agree"
    );
    assert!(sum(&after, "vip_backend_bytes_total") > sum(&before, "vip_backend_bytes_total"));
    assert!(after["vip_heartbeat_age_seconds{}"] < after["vip_heartbeat_dead_time_seconds{}"]);
    let probes = |m: &BTreeMap<String, f64>| m["vip_check_probes_total{check=alive,kind=exec}"];
    assert!(
        probes(&before) >= 1.0,
        "the node check has probed: {before:?}"
    );
    wait_for(
        "the node check's probe counter to rise",
        Duration::from_secs(2),
        || (probes(&scrape(&lab)) > probes(&before)).then_some(()),
    );
    assert!(after["vip_check_latency_seconds{check=alive,kind=exec}"] > 0.0);

    // Drain the held connection's backend: it keeps that connection, new
    // ones avoid it; undrain brings it back.
    let held_on = held.0.clone();
    let addr: Ipv4Addr = format!("10.99.0.1{}", &held_on[1..]).parse().unwrap();
    let reply = lb1.control(Command::Drain { address: addr }).unwrap();
    assert!(reply.ok, "{reply:?}");
    let b = lb1.status().services[0]
        .backends
        .iter()
        .find(|b| b.address == addr)
        .cloned()
        .unwrap();
    assert!(b.draining && !b.in_table && b.up, "{b:?}");
    lab.run_in("client", || {
        for _ in 0..30 {
            let (who, _) = who_answers(Duration::from_secs(2)).expect("connect");
            assert_ne!(
                who, held_on,
                "a new connection landed on the drained backend"
            );
        }
        assert_eq!(ask(&mut held.1, "still").unwrap(), held_on);
    });
    let reply = lb1.control(Command::Undrain { address: addr }).unwrap();
    assert!(reply.ok, "{reply:?}");
    assert!(lb1.status().services[0].backends.iter().all(|b| b.in_table));
    let reply = lb1
        .control(Command::Drain {
            address: Ipv4Addr::new(10, 99, 0, 99),
        })
        .unwrap();
    assert_eq!(reply.exit_code, Some(2), "{reply:?}");
    assert!(reply.error.unwrap().contains("not a backend"));

    // An invalid config is refused with its key and line; the old one runs on.
    let good = std::fs::read_to_string(&lb1.config).unwrap();
    std::fs::write(&lb1.config, good.replace("vrid = 51", "vrid = 300")).unwrap();
    let reply = lb1.control(Command::Reload).unwrap();
    assert!(!reply.ok);
    assert_eq!(reply.exit_code, Some(2));
    let err = reply.error.unwrap();
    let line = good.lines().position(|l| l == "vrid = 51").unwrap() + 1;
    assert!(
        err.contains(&format!("vip.toml:{line}: vrrp[0].vrid")),
        "{err}"
    );
    assert!(err.contains("keeps running"), "{err}");
    lab.run_in("client", || {
        assert_eq!(ask(&mut held.1, "after-bad-reload").unwrap(), held_on);
    });

    // Valid reloads that remove and re-add a backend: tables change, VRRP
    // does not, the held connection survives.
    std::fs::write(&lb1.config, &good).unwrap();
    let two = &BACKENDS[..2];
    // Remove a backend and change the check's interval in one reload.
    let mut removed = lb1.cfg().clone();
    removed.services[0].backends.truncate(2);
    removed.checks[0].schedule.interval = Duration::from_millis(80);
    assert!(to_toml(&removed).contains("interval = \"80ms\""));
    let good_cfg = lb1.cfg().clone();
    lb1.write_config(removed);
    let reply = lb1.control(Command::Reload).unwrap();
    assert!(reply.ok, "{reply:?}");
    lb2.reload(two);
    assert_eq!(lb1.status().services[0].backends.len(), 2);
    lb1.write_config(good_cfg);
    assert!(lb1.control(Command::Reload).unwrap().ok);
    lb2.reload(&BACKENDS);
    let s1 = lb1.status();
    assert_eq!(s1.reloads, 2);
    assert_eq!(s1.services[0].backends.len(), 3);
    // The re-added backend's MAC is resolved in the background, then it
    // has slots again.
    wait_for("b3 back in the table", Duration::from_secs(5), || {
        lb1.status().services[0]
            .backends
            .iter()
            .all(|b| b.in_table)
            .then_some(())
    });
    lab.run_in("client", || {
        if held_on != "b3" {
            assert_eq!(ask(&mut held.1, "after-reloads").unwrap(), held_on);
        }
    });
    assert_eq!(
        (transitions(&lb1.status()), transitions(&lb2.status())),
        flaps_before,
        "a reload moved VRRP"
    );
    assert_eq!(lb1.status().instances[0].state, "master");

    // Killed: the socket says so.
    let mut lb1 = lb1;
    lb1.kill9();
    let e = lb1.control(Command::Status).unwrap_err();
    assert!(e.to_string().contains("not running"), "{e}");
}

/// Runs vipctl on `agent`'s pins and socket; returns exit code, stdout, stderr.
fn vipctl(agent: &Agent, args: &[&str]) -> (i32, String, String) {
    let out = vip_tests::programs::command(common::sibling_bin("vipctl"))
        .expect("vipctl")
        .arg("--bpffs")
        .arg(&agent.bpffs)
        .args(["--node", &agent.name])
        .arg("--socket")
        .arg(agent.control_socket())
        .args(args)
        .output()
        .expect("run vipctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn vipctl_json(agent: &Agent, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = vipctl(agent, &all);
    assert_eq!(code, 0, "vipctl {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("vipctl {args:?}: {e}: {out}"))
}

/// Every vipctl verb with `--json` against a running node, checked against
/// what the test did; then the agent is killed and the map verbs still
/// answer while the agent verbs say it is not running.
#[test]
fn vipctl_verbs_against_a_lab_node_and_after_its_death() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let lab = lab("ctl");
    let mut lb1 = Agent::start_config(&lab, "lb1", with_vrrp(&lab, "lb1", vec![vrrp(150)]));
    wait_for("lb1 master", Duration::from_secs(5), || {
        lb1.holds(VIP).then_some(())
    });
    let (who, stream) = lab.run_in("client", || {
        who_answers(Duration::from_secs(2)).expect("a connection through the VIP")
    });
    let client = stream.local_addr().unwrap().to_string();
    let backend = format!("10.99.0.1{}", &who[1..]);

    let st = vipctl_json(&lb1, &["status"]);
    assert_eq!(st["node"], "lb1");
    assert_eq!(st["instances"][0]["name"], "VI_1");
    assert_eq!(st["instances"][0]["state"], "master");
    assert_eq!(st["instances"][0]["priority"], 150);
    assert_eq!(st["instances"][0]["vips"][0], VIP.to_string());
    assert_eq!(st["services"][0]["backends"].as_array().unwrap().len(), 3);
    let (code, text, _) = vipctl(&lb1, &["status"]);
    assert_eq!(code, 0);
    assert!(text.contains("VI_1") && text.contains("master"), "{text}");

    let vips = vipctl_json(&lb1, &["vips"]);
    assert_eq!(vips[0]["vip"], VIP.to_string());
    assert_eq!(
        (vips[0]["active"].as_bool(), vips[0]["answering"].as_bool()),
        (Some(true), Some(true))
    );

    let backends = vipctl_json(&lb1, &["backends"]);
    let addrs: Vec<&str> = backends
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["address"].as_str().unwrap())
        .collect();
    assert_eq!(addrs, ["10.99.0.11", "10.99.0.12", "10.99.0.13"]);
    let ours = backends
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == backend.as_str())
        .unwrap();
    assert!(ours["packets"].as_u64().unwrap() >= 2, "{ours}");

    let flows = vipctl_json(&lb1, &["flows"]);
    let flow = flows
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["client"] == client.as_str())
        .unwrap_or_else(|| panic!("our flow {client} in {flows}"));
    assert_eq!(flow["backend"], backend.as_str());
    assert_eq!(flow["vip"], format!("{VIP}:5672"));

    let table = vipctl_json(&lb1, &["table", "10.99.0.100:5672"]);
    let rows = table["backends"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let slots: u64 = rows.iter().map(|r| r["slots"].as_u64().unwrap()).sum();
    assert_eq!(slots, 65537);
    let stats = vipctl_json(&lb1, &["stats"]);
    assert!(
        stats["counters"]["fwd_tx"].as_u64().unwrap() >= 2,
        "{stats}"
    );

    // drain / undrain through vipctl; a drain of a stranger is a usage error.
    let r = vipctl_json(&lb1, &["drain", &backend]);
    assert_eq!(r["ok"], true);
    let st = vipctl_json(&lb1, &["status"]);
    let b = st["services"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == backend.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (b["draining"].as_bool(), b["in_table"].as_bool()),
        (Some(true), Some(false))
    );
    let table = vipctl_json(&lb1, &["table", "10.99.0.100:5672"]);
    assert_eq!(table["backends"].as_array().unwrap().len(), 2, "{table}");
    assert_eq!(vipctl_json(&lb1, &["undrain", &backend])["ok"], true);
    let (code, _, err) = vipctl(&lb1, &["drain", "10.99.0.77"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a backend"), "{err}");

    // reload: a bad config exits 2 naming the key; a good one exits 0.
    let good = std::fs::read_to_string(&lb1.config).unwrap();
    std::fs::write(&lb1.config, good.replace("priority = 150", "priority = 0")).unwrap();
    let (code, _, err) = vipctl(&lb1, &["reload"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("vrrp[0].priority"), "{err}");
    std::fs::write(&lb1.config, &good).unwrap();
    let (code, out, err) = vipctl(&lb1, &["reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("reloaded"), "{out}");

    let (code, out, _) = vipctl(&lb1, &["stats", "--watch", "--count", "1"]);
    assert_eq!(code, 0);
    assert!(out.contains("packets/s") && out.contains(&backend), "{out}");

    // Dead agent: the pinned maps still answer, the socket verbs say why not.
    lb1.kill9();
    let backends = vipctl_json(&lb1, &["backends"]);
    assert_eq!(backends.as_array().unwrap().len(), 3);
    let flows = vipctl_json(&lb1, &["flows"]);
    assert!(
        flows
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["client"] == client.as_str())
    );
    assert!(
        vipctl_json(&lb1, &["stats"])["counters"]["rx"]
            .as_u64()
            .unwrap()
            > 0
    );
    let (code, _, err) = vipctl(&lb1, &["status"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the agent is not running"), "{err}");
    drop(stream);
}

/// A reload that changes one VRRP instance restarts that instance alone:
/// lb1 masters `VI_1` and `VI_2`; lowering `VI_2`'s priority hands it to
/// lb2, while `VI_1` keeps its role on both nodes (no transition).
#[test]
fn a_changed_instance_restarts_alone() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let lab = lab("rl2");
    let vip2 = Ipv4Addr::new(10, 99, 0, 101);
    let two = |node: &str, p1: u8, p2: u8| {
        let mut second = config::vrrp("VI_2", 52, p2, &[vip2]);
        second.election.advert_interval = Duration::from_millis(10);
        Agent::start_config(&lab, node, with_vrrp(&lab, node, vec![vrrp(p1), second]))
    };
    let mut lb1 = two("lb1", 150, 150);
    let lb2 = two("lb2", 100, 100);
    wait_for("lb1 master of both", Duration::from_secs(5), || {
        (lb1.holds(VIP) && lb1.holds(vip2) && !lb2.holds(VIP) && !lb2.holds(vip2)).then_some(())
    });
    let vi1 = |a: &Agent| {
        let st = a.status();
        let i = st
            .instances
            .iter()
            .find(|i| i.name == "VI_1")
            .cloned()
            .unwrap();
        (i.state, i.transitions)
    };
    let (before1, before2) = (vi1(&lb1), vi1(&lb2));
    let mut changed = lb1.cfg().clone();
    assert_eq!(changed.vrrp[1].election.priority, 150);
    changed.vrrp[1].election.priority = 50;
    lb1.write_config(changed);
    let reply = lb1.control(Command::Reload).unwrap();
    assert!(reply.ok, "{reply:?}");
    wait_for("VI_2 on lb2", Duration::from_secs(5), || {
        (lb2.holds(vip2) && !lb1.holds(vip2)).then_some(())
    });
    let st = lb1.status();
    let i2 = st.instances.iter().find(|i| i.name == "VI_2").unwrap();
    assert_eq!((i2.state.as_str(), i2.priority), ("backup", 50));
    assert_eq!(vi1(&lb1), before1, "VI_1 on lb1 untouched");
    assert_eq!(vi1(&lb2), before2, "VI_1 on lb2 untouched");
    assert!(lb1.holds(VIP) && !lb2.holds(VIP));
}

/// A node that ran without VRRP (owning the VIP statically) gets `[[vrrp]]`
/// by a reload: VRRP starts there, hears lb2's adverts, and the node gives
/// the VIP up to the better master.
#[test]
fn vrrp_added_by_a_reload_starts() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let lab = lab("rl3");
    let lb2 = Agent::start_config(&lab, "lb2", with_vrrp(&lab, "lb2", vec![vrrp(200)]));
    let mut lb1 = Agent::start(&lab, "lb1", "lb1", &BACKENDS);
    wait_for("lb2 master", Duration::from_secs(5), || {
        lb2.holds(VIP).then_some(())
    });
    assert!(lb1.holds(VIP), "static: lb1 owns the VIP");
    assert!(lb1.status().instances.is_empty());
    let mut added = lb1.cfg().clone();
    added.vrrp.push(vrrp(100));
    lb1.write_config(added);
    let reply = lb1.control(Command::Reload).unwrap();
    assert!(reply.ok, "{reply:?}");
    let st = wait_for("lb1 backup, hearing lb2", Duration::from_secs(5), || {
        let st = lb1.status();
        let i = st.instances.first()?;
        (i.state == "backup" && i.adverts_received > 0).then_some(st)
    });
    assert_eq!(st.instances[0].priority, 100);
    assert!(!lb1.holds(VIP) && lb2.holds(VIP));
}
