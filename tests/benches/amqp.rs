//! The `RabbitMQ` workload through two stacks, side by side: a vip pair, and
//! keepalived 2.2.7 + `HAProxy` (each LB node running both, as in the
//! failover bench, with `HAProxy` checking the brokers as vip does: every
//! 200 ms, fall 2, and shutting down the sessions of a broker marked down).
//! Both in front of the same kind of three-node quorum cluster, 10 ms
//! adverts, 250 persistent messages/s with publisher confirms and a consumer
//! with manual acks (`vip_tests::workload`). Faults, one after another (see
//! [`FAULTS`]): the LB master's VRRP daemon kill -9, SIGTERM and link down,
//! each followed by the old master taking the VIP back; then a kill -9, a
//! short hang and a drain of the broker holding the most client
//! connections. Reported per fault and stack over [`TRIALS`] runs:
//! reconnects and the longest publish stall; over each run: lost and
//! duplicates.
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
const LB1: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const LB2: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);
const RATE: u32 = 250;
const ADVERT: Duration = Duration::from_millis(10);
/// Runs of each stack; the table shows the range over them.
const TRIALS: usize = 2;
/// The longest a broker is kept frozen: below the 7.5 s after which Erlang
/// may declare it down (`net_ticktime` 10 s in the lab), which would
/// partition the cluster (see `tests/tests/rabbitmq_cluster.rs`).
const HANG: Duration = Duration::from_secs(2);
/// The faults, in the order each run injects them. The old master comes
/// back after each LB fault and takes the VIP again (preemption, or its
/// link back): a failover of its own.
const FAULTS: [&str; 9] = [
    "LB master kill -9",
    "old master back (after kill -9)",
    "LB master SIGTERM",
    "old master back (after SIGTERM)",
    "LB master link down",
    "old master's link back",
    "broker kill -9",
    "broker SIGSTOP (2 s)",
    "broker drain",
];

/// One stack on lb1 and lb2. Field order is drop order.
enum Stack {
    Vip {
        lb1: Agent,
        lb2: Agent,
    },
    Peer {
        /// `None` between a SIGTERM and the restart.
        ka1: Option<Keepalived>,
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
                ka1: Some(Keepalived::start(lab, "lb1", &Vrrp::v3(150, ADVERT))),
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
            (Self::Peer { ka1, .. }, true) => ka1.as_ref().is_some_and(|k| k.holds(lab)),
            (Self::Peer { ka2, .. }, false) => ka2.holds(lab),
        }
    }

    /// A crash of lb1's VRRP daemon (keepalived: its VRRP child, then the
    /// parent, as the failover bench does).
    fn kill_lb1(&mut self) {
        match self {
            Self::Vip { lb1, .. } => lb1.kill9(),
            Self::Peer { ka1, .. } => {
                let ka1 = ka1.as_mut().expect("keepalived runs on lb1");
                ka1.find_vrrp_child();
                if let Some(child) = ka1.vrrp_alive() {
                    let _ = vip_tests::kit::signal(child, libc::SIGKILL);
                }
                let _ = vip_tests::kit::signal(ka1.pid(), libc::SIGKILL);
            }
        }
    }

    /// A clean stop of lb1's VRRP daemon (SIGTERM: priority 0 adverts).
    fn term_lb1(&mut self) {
        match self {
            Self::Vip { lb1, .. } => {
                let st = lb1.stop();
                assert!(st.success(), "clean exit: {st}");
            }
            Self::Peer { ka1, .. } => {
                if let Some(mut k) = ka1.take() {
                    k.stop();
                }
            }
        }
    }

    /// Starts lb1's VRRP daemon again (after a crash or a stop).
    fn restart_lb1(&mut self, lab: &Lab) {
        match self {
            Self::Vip { lb1, .. } => lb1.spawn(lab),
            Self::Peer { ka1, .. } => {
                // The old one's files go first: the new one uses the same
                // directory.
                *ka1 = None;
                *ka1 = Some(Keepalived::start(lab, "lb1", &Vrrp::v3(150, ADVERT)));
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

/// Injects an LB fault with `fault`, waits until lb1 (`lb1_master`) or lb2
/// holds the VIP, and returns the window. (A crashed keepalived leaves the
/// VIP on lb1: only lb2's taking it is waited for.)
fn lb_fault(
    lab: &Lab,
    stack: &mut Stack,
    load: &Workload,
    lb1_master: bool,
    fault: impl FnOnce(&mut Stack),
) -> Report {
    let from = Instant::now();
    fault(stack);
    wait_for(
        if lb1_master {
            "lb1 master"
        } else {
            "lb2 master"
        },
        Duration::from_secs(5),
        || (stack.holds(lab, lb1_master) && !(lb1_master && stack.holds(lab, false))).then_some(()),
    );
    window_after(load, from)
}

/// The broker holding most of the clients' connections. They reach the
/// brokers from the client (vip: direct server return) or from the master
/// LB (`HAProxy` proxies them).
fn busiest(cluster: &Cluster, lab: &Lab, stack: &Stack, vip: bool) -> &'static str {
    let from_addr = if vip {
        CLIENT
    } else if stack.holds(lab, true) {
        LB1
    } else {
        LB2
    };
    BROKERS
        .iter()
        .copied()
        .max_by_key(|b| cluster.broker(b).connections_from(from_addr).unwrap_or(0))
        .expect("brokers")
}

fn run(vip: bool, trial: usize) -> Run {
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
    let link = |up: bool| {
        let state = if up { "up" } else { "down" };
        lab.ns("lb1")
            .ip(&["link", "set", "eth0", state])
            .expect("lb1's link");
    };
    let mut faults = vec![
        lb_fault(&lab, &mut stack, &load, false, Stack::kill_lb1),
        lb_fault(&lab, &mut stack, &load, true, |s| s.restart_lb1(&lab)),
        lb_fault(&lab, &mut stack, &load, false, Stack::term_lb1),
        lb_fault(&lab, &mut stack, &load, true, |s| s.restart_lb1(&lab)),
        lb_fault(&lab, &mut stack, &load, false, |_| link(false)),
        lb_fault(&lab, &mut stack, &load, true, |_| link(true)),
    ];

    let victim = busiest(&cluster, &lab, &stack, vip);
    let from = Instant::now();
    cluster.broker_mut(victim).kill9().expect("kill -9");
    faults.push(window_after(&load, from));
    cluster
        .broker_mut(victim)
        .start_again()
        .expect("the broker restarts");
    cluster
        .wait_formed(3, Duration::from_mins(1))
        .expect("three running nodes");

    // A hang shorter than Erlang's failure detector, of a broker that
    // leads no queue (a hung leader stalls the queue whatever the LB does).
    let victim = busiest(&cluster, &lab, &stack, vip);
    let other = BROKERS.iter().find(|b| **b != victim).expect("another");
    cluster
        .move_leader("vip-load", cluster.broker(other).nodename())
        .expect("the leader moves off the victim");
    let from = Instant::now();
    cluster.broker(victim).freeze(true).expect("SIGSTOP");
    let _ = load.wait_confirmed(u64::from(RATE), HANG);
    cluster.broker(victim).freeze(false).expect("SIGCONT");
    faults.push(window_after(&load, from));
    cluster
        .wait_formed(3, Duration::from_mins(1))
        .expect("three running nodes");

    let victim = busiest(&cluster, &lab, &stack, vip);
    let from = Instant::now();
    cluster
        .broker(victim)
        .rabbitmq_upgrade(&["drain"])
        .expect("drain");
    faults.push(window_after(&load, from));

    for (fault, r) in FAULTS.iter().zip(&faults) {
        eprintln!("{name} (trial {trial}), {fault}: {}", r.line());
    }
    let whole = load.finish(Duration::from_secs(30)).expect("finish");
    eprintln!("{name} (trial {trial}), whole run: {}", whole.line());
    Run {
        faults,
        whole,
        formed_in: cluster.formed_in(),
    }
}

/// `a–b` for a range over the trials, `a` when they agree.
fn range(values: &[u64]) -> String {
    let lo = values.iter().min().expect("a trial");
    let hi = values.iter().max().expect("a trial");
    if lo == hi {
        format!("{lo}")
    } else {
        format!("{lo}–{hi}")
    }
}

/// Reconnects / longest publish stall, each as a range over the trials.
fn cell(runs: &[Run], fault: usize) -> String {
    let reconnects: Vec<u64> = runs.iter().map(|r| r.faults[fault].reconnects()).collect();
    let stalls: Vec<u64> = runs
        .iter()
        .map(|r| {
            u64::try_from(r.faults[fault].longest_publish_stall.as_millis()).unwrap_or(u64::MAX)
        })
        .collect();
    format!("{} / {} ms", range(&reconnects), range(&stalls))
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
    let vip: Vec<Run> = (1..=TRIALS).map(|t| run(true, t)).collect();
    let peer: Vec<Run> = (1..=TRIALS).map(|t| run(false, t)).collect();
    let mut md = format!(
        "## RabbitMQ quorum cluster through LB and broker faults\n\n\
         250 persistent messages/s with publisher confirms, a consumer with manual acks, \
         10 ms adverts, checks every 200 ms (fall 2), {TRIALS} runs of each stack. Each \
         cell: reconnects / longest publish stall, the range over the runs.\n\n\
         | fault | vip | keepalived + HAProxy |\n|---|---|---|\n",
    );
    for (i, fault) in FAULTS.iter().enumerate() {
        let _ = writeln!(md, "| {fault} | {} | {} |", cell(&vip, i), cell(&peer, i));
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
        let of = |runs: &[Run]| range(&runs.iter().map(|r| f(&r.whole)).collect::<Vec<_>>());
        let _ = writeln!(md, "| {what} | {} | {} |", of(&vip), of(&peer));
    }
    md.push_str(
        "\n\"lost\" counts confirmed messages not delivered within 30 s of the \
         publisher's stop.",
    );
    if peer.iter().any(|r| r.whole.lost > 0) {
        md.push_str(
            " Through HAProxy these are most likely held unacked by the consumer's old \
             connection, which the old master's HAProxy keeps open to its broker after the \
             VIP moved (the broker lets it go at its heartbeat timeout, 60 s); with vip the \
             client's own connection moves with the VIP.",
        );
    }
    md.push_str(
        " HAProxy's `check` is a TCP connect, which a hung broker's kernel still \
         answers: it does not see a SIGSTOP; vip's AMQP check does.\n",
    );
    let formed = |runs: &[Run]| {
        runs.iter()
            .map(|r| format!("{:.1}", r.formed_in.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        md,
        "\nClusters formed in {} s (vip runs) and {} s (keepalived + HAProxy runs); the \
         bench took {:.0} s.",
        formed(&vip),
        formed(&peer),
        started.elapsed().as_secs_f64()
    );
    vip_tests::publish(&md);
}
