//! The `RabbitMQ` workload through two stacks, side by side: a vip pair, and
//! keepalived 2.2.7 + `HAProxy` (each LB node running both, as in the
//! failover bench, with `HAProxy` checking the brokers as vip does: every
//! 200 ms, fall 2, and shutting down the sessions of a broker marked down).
//! Both in front of the same kind of three-node quorum cluster, 10 ms
//! adverts, 250 persistent messages/s with publisher confirms and a consumer
//! with manual acks (`vip_tests::workload`). Faults, one after another: the
//! LB master's VRRP daemon kill -9, then a kill -9 of the broker holding the
//! most client connections. Reported
//! per fault and stack: reconnects, the longest publish stall, and over the
//! run: lost and duplicates.
//!
//! Run with `cargo xtask bench`; the markdown goes to stdout and is
//! appended to `VIP_BENCH_REPORT` when set.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use vip_tests::{
    broker::{BrokerOptions, Cluster, start_cluster},
    kit::{Agent, Haproxy, Keepalived, VIP, Vrrp, config, is_root, wait_for},
    lab::{Lab, LabOptions},
    programs,
    workload::{self, LoadOptions, Report, Workload},
};

const BACKENDS: [(&str, u32); 3] = [("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)];
const BROKERS: [&str; 3] = ["b1", "b2", "b3"];
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);
const LB2: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);
const RATE: u32 = 250;
const ADVERT: Duration = Duration::from_millis(10);
const FAULTS: [&str; 2] = ["LB master kill -9", "broker kill -9"];

/// One stack on lb1 and lb2. Field order is drop order.
enum Stack {
    Vip {
        lb1: Agent,
        lb2: Agent,
    },
    Peer {
        ka1: Keepalived,
        ka2: Keepalived,
        _ha1: Haproxy,
        _ha2: Haproxy,
    },
}

impl Stack {
    fn start(lab: &Lab, vip: bool) -> Self {
        if vip {
            let agent = |node: &str, priority: u8| {
                let mut cfg = config::node(lab, node, &BACKENDS);
                cfg.vrrp.push(Vrrp::v3(priority, ADVERT).agent_vrrp());
                let mut amqp = config::amqp_check();
                amqp.schedule.interval = Duration::from_millis(200);
                amqp.schedule.timeout = Duration::from_millis(300);
                cfg.services[0].check = Some(amqp);
                Agent::start_config(lab, node, cfg)
            };
            Self::Vip {
                lb1: agent("lb1", 150),
                lb2: agent("lb2", 100),
            }
        } else {
            let checked = "check inter 200ms fall 2 rise 2 on-marked-down shutdown-sessions";
            let ha1 = Haproxy::start_with(lab, "lb1", &BACKENDS, checked);
            let ha2 = Haproxy::start_with(lab, "lb2", &BACKENDS, checked);
            Self::Peer {
                ka1: Keepalived::start(lab, "lb1", &Vrrp::v3(150, ADVERT)),
                ka2: Keepalived::start(lab, "lb2", &Vrrp::v3(100, ADVERT)),
                _ha1: ha1,
                _ha2: ha2,
            }
        }
    }

    fn holds(&self, lab: &Lab, lb1: bool) -> bool {
        match (self, lb1) {
            (Self::Vip { lb1, .. }, true) => lb1.holds(VIP),
            (Self::Vip { lb2, .. }, false) => lb2.holds(VIP),
            (Self::Peer { ka1, .. }, true) => ka1.holds(lab),
            (Self::Peer { ka2, .. }, false) => ka2.holds(lab),
        }
    }

    /// A crash of lb1's VRRP daemon (keepalived: its VRRP child, then the
    /// parent, as the failover bench does).
    fn kill_lb1(&mut self) {
        match self {
            Self::Vip { lb1, .. } => lb1.kill9(),
            Self::Peer { ka1, .. } => {
                ka1.find_vrrp_child();
                if let Some(child) = ka1.vrrp_alive() {
                    let _ = vip_tests::kit::signal(child, libc::SIGKILL);
                }
                let _ = vip_tests::kit::signal(ka1.pid(), libc::SIGKILL);
            }
        }
    }
}

/// Figures of one stack: a window per fault, and the whole run.
struct Run {
    faults: Vec<Report>,
    whole: Report,
    formed_in: Duration,
}

fn window_after(load: &Workload, from: Instant) -> Report {
    load.wait_flowing(u64::from(RATE), Duration::from_mins(1))
        .unwrap_or_else(|e| panic!("{e:#}"));
    std::thread::sleep(Duration::from_millis(500));
    load.window(from, Instant::now())
}

fn run(vip: bool) -> Run {
    let name = if vip { "vip" } else { "keepalived + HAProxy" };
    let mut opts = LabOptions::unique(if vip { "bqv" } else { "bqp" });
    opts.start_backends = false;
    let lab = Lab::up(opts).expect("lab up");
    let mut cluster: Cluster =
        start_cluster(&lab, &BROKERS, &BrokerOptions::default()).expect("the cluster forms");
    let mut stack = Stack::start(&lab, vip);
    wait_for("lb1 master", Duration::from_secs(5), || {
        (stack.holds(&lab, true) && !stack.holds(&lab, false)).then_some(())
    });
    let mut opts = LoadOptions::new(SocketAddr::from((VIP, 5672)));
    opts.rate = RATE;
    let load = workload::start(&lab, "client", opts, Duration::from_secs(30))
        .expect("the workload starts");
    load.wait_flowing(u64::from(RATE), Duration::from_secs(10))
        .expect("flowing");
    let mut faults = Vec::new();

    let from = Instant::now();
    stack.kill_lb1();
    wait_for("lb2 master", Duration::from_secs(5), || {
        stack.holds(&lab, false).then_some(())
    });
    faults.push(window_after(&load, from));

    // The clients' connections reach the brokers from the client (vip:
    // direct server return) or from the master LB (HAProxy proxies them).
    let from_addr = if vip { CLIENT } else { LB2 };
    let victim = BROKERS
        .iter()
        .copied()
        .max_by_key(|b| cluster.broker(b).connections_from(from_addr).unwrap_or(0))
        .expect("brokers");
    let from = Instant::now();
    cluster.broker_mut(victim).kill9().expect("kill -9");
    faults.push(window_after(&load, from));

    for (fault, r) in FAULTS.iter().zip(&faults) {
        eprintln!("{name}, {fault}: {}", r.line());
    }
    let whole = load.finish(Duration::from_secs(30)).expect("finish");
    eprintln!("{name}, whole run: {}", whole.line());
    Run {
        faults,
        whole,
        formed_in: cluster.formed_in(),
    }
}

fn cell(r: &Report) -> String {
    format!(
        "{} / {:.0} ms",
        r.reconnects(),
        r.longest_publish_stall.as_secs_f64() * 1e3
    )
}

fn main() {
    if !is_root() {
        eprintln!(
            "skipping: the AMQP bench needs root (network namespaces): run `cargo xtask bench`"
        );
        return;
    }
    programs::set_job(programs::Job::Bench);
    let started = Instant::now();
    let vip = run(true);
    let peer = run(false);
    let mut md = String::from(
        "## RabbitMQ quorum cluster through an LB failover and a broker crash\n\n\
         250 persistent messages/s with publisher confirms, a consumer with manual acks, \
         10 ms adverts, checks every 200 ms (fall 2). Each cell: reconnects / longest \
         publish stall.\n\n| fault | vip | keepalived + HAProxy |\n|---|---|---|\n",
    );
    for (i, fault) in FAULTS.iter().enumerate() {
        let _ = writeln!(
            md,
            "| {fault} | {} | {} |",
            cell(&vip.faults[i]),
            cell(&peer.faults[i])
        );
    }
    for (what, f) in [
        (
            "lost (confirmed, never consumed)",
            (|r: &Report| r.lost) as fn(&Report) -> u64,
        ),
        ("duplicates", |r: &Report| r.duplicates),
        ("reconnects, whole run", Report::reconnects),
        ("confirmed", |r: &Report| r.confirmed),
    ] {
        let _ = writeln!(md, "| {what} | {} | {} |", f(&vip.whole), f(&peer.whole));
    }
    md.push_str(
        "\n\"lost\" counts confirmed messages not delivered within 30 s of the \
         publisher's stop. Through HAProxy these are most likely held unacked by the \
         consumer's old connection, which the old master's HAProxy keeps open to its \
         broker after the VIP moved (the broker lets it go at its heartbeat timeout, \
         60 s); with vip the client's own connection moves with the VIP.\n",
    );
    let _ = writeln!(
        md,
        "\nClusters formed in {:.1} s and {:.1} s; the bench took {:.0} s.",
        vip.formed_in.as_secs_f64(),
        peer.formed_in.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    vip_tests::publish(&md);
}
