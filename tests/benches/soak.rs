//! Soak: a vip pair at 10 ms adverts for 10 minutes (`VIP_SOAK_SECONDS`
//! for another length) while two busy loops hold both cores, and a client
//! connecting through the VIP every 10 ms. Reported: transitions (goal 0),
//! failed connections (goal 0), the longest gap between lb1's adverts as
//! lb2's namespace receives them, and the master agent's CPU.
//!
//! Run with `cargo xtask bench` (it builds the release agent); the markdown
//! goes to stdout and is appended to `VIP_BENCH_REPORT` when set.

use vip_tests::kit as common;

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Agent, Setup, Vrrp, config, is_root, lab, wait_for, who_answers};

const ADVERT: Duration = Duration::from_millis(10);
const CONNECT_EVERY: Duration = Duration::from_millis(10);
const LB1: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

/// (user + system) CPU time of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("agent stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse::<u64>().expect("ticks"))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    f64::from(u32::try_from(ticks).unwrap_or(u32::MAX))
        / f64::from(u32::try_from(hz).unwrap_or(100))
}

/// Two busy loops, one per core, until `stop`.
fn busy_loops(stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    (0..2)
        .map(|_| {
            let stop = Arc::clone(stop);
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..100_000 {
                        x = std::hint::black_box(
                            x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1),
                        );
                    }
                }
            })
        })
        .collect()
}

fn main() {
    if !is_root() {
        eprintln!(
            "skipping: the soak bench needs root (network namespaces): run `cargo xtask bench`"
        );
        return;
    }
    vip_tests::programs::set_job(vip_tests::programs::Job::Bench);
    let length = Duration::from_secs(
        std::env::var("VIP_SOAK_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(600),
    );
    let lab = lab("soak");
    let start = |node: &str, priority| {
        let mut cfg = config::node(
            &lab,
            node,
            &[("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)],
        );
        cfg.vrrp.push(Vrrp::v3(priority, ADVERT).agent_vrrp());
        Agent::start_full(&lab, node, cfg, Setup::logged())
    };
    let lb1 = start("lb1", 150);
    let lb2 = start("lb2", 100);
    wait_for("lb1 master, lb2 backup", Duration::from_secs(5), || {
        (lb1.holds(common::VIP) && !lb2.holds(common::VIP)).then_some(())
    });
    let transitions = |a: &Agent| a.status().instances[0].transitions;
    let before = (transitions(&lb1), transitions(&lb2));
    let pid = lb1.child.as_ref().expect("running").id();

    let stop = Arc::new(AtomicBool::new(false));
    let busy = busy_loops(&stop);
    let adverts = common::hear_adverts(&lab, "lb2", LB1, &stop);
    let cpu0 = (Instant::now(), cpu_seconds(pid));
    // The client: a connection through the VIP every 10 ms, bounded by the
    // run's length.
    let (ok, failed) = lab.run_in("client", || {
        let (mut ok, mut failed) = (0u64, 0u64);
        let t0 = Instant::now();
        let mut next = t0;
        while t0.elapsed() < length {
            match who_answers(Duration::from_secs(1)) {
                Ok(_) => ok += 1,
                Err(_) => failed += 1,
            }
            next += CONNECT_EVERY;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        (ok, failed)
    });
    let cpu = (cpu_seconds(pid) - cpu0.1) / cpu0.0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in busy {
        let _ = t.join();
    }
    let adverts = adverts.join().expect("capture");
    let (heard, longest) = (
        adverts.len(),
        common::longest_gap(&adverts).unwrap_or_default(),
    );
    let after = (transitions(&lb1), transitions(&lb2));

    let mut md = String::new();
    let _ = writeln!(md, "\n## Soak: 10 ms adverts, both cores busy\n");
    let _ = writeln!(
        md,
        "A vip pair for {} s, two busy loops holding both cores, a client connecting through the VIP every {} ms. \
         Goal: 0 transitions and 0 failed connections.\n",
        length.as_secs(),
        CONNECT_EVERY.as_millis()
    );
    let _ = writeln!(
        md,
        "| transitions (lb1, lb2) | connections ok | failed | adverts heard | longest advert gap | master agent CPU |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    let _ = writeln!(
        md,
        "| {}, {} | {ok} | {failed} | {heard} | {:.2} ms | {:.1} % of a core |",
        after.0 - before.0,
        after.1 - before.1,
        longest.as_secs_f64() * 1e3,
        cpu * 100.0
    );
    vip_tests::publish(&md);
    drop(lb1);
    drop(lb2);
}
