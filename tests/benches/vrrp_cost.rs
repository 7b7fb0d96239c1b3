//! The agent's own cost as a VRRP router: a pair at 10 ms adverts, idle
//! otherwise (no traffic, no checks), and the CPU and memory of each
//! node's process, master and backup, beside keepalived 2.2's VRRP process
//! (`-P`: the VRRP child, what runs the protocol) in the same run and the
//! same lab. Trials alternate the two stacks; min / median / max over
//! trials.
//!
//! CPU is the process's on-CPU time over the window, summed over its
//! threads from `/proc/PID/task/*/schedstat` (nanoseconds, not clock
//! ticks: 1 % of a core over 15 s is only 15 ticks), as % of one core.
//! Memory is `VmRSS` at the end of the window.
//!
//! Run with `cargo xtask bench` (it builds the release agent); the markdown
//! goes to stdout and is appended to `VIP_BENCH_REPORT` when set.

use vip_tests::kit as common;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    time::{Duration, Instant},
};

use common::{Agent, Keepalived, Vrrp, config, is_root, lab, rss_kib, wait_for};

const ADVERT: Duration = Duration::from_millis(10);
const TRIALS: usize = 3;
const SETTLE: Duration = Duration::from_secs(2);
const WINDOW: Duration = Duration::from_secs(15);

/// Each thread of `pid`: its name, on-CPU nanoseconds and voluntary context
/// switches (its wakeups) so far.
fn threads(pid: u32) -> BTreeMap<String, (u64, u64)> {
    let dir = format!("/proc/{pid}/task");
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for t in std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(Result::ok)
    {
        let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
        let ns: u64 = read("schedstat")
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let wakeups: u64 = read("status")
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let e = out.entry(read("comm").trim().to_owned()).or_default();
        e.0 += ns;
        e.1 += wakeups;
    }
    out
}

/// Per thread over a window: ms on CPU per second, wakeups per second.
type Breakdown = BTreeMap<String, (f64, f64)>;

fn breakdown(
    before: &BTreeMap<String, (u64, u64)>,
    after: &BTreeMap<String, (u64, u64)>,
    secs: f64,
) -> Breakdown {
    after
        .iter()
        .map(|(name, (ns, w))| {
            let (ns0, w0) = before.get(name).copied().unwrap_or_default();
            #[expect(clippy::cast_precision_loss, reason = "counts")]
            let rate = |a: u64, b: u64, scale: f64| a.saturating_sub(b) as f64 * scale / secs;
            (name.clone(), (rate(*ns, ns0, 1e-6), rate(*w, w0, 1.0)))
        })
        .collect()
}

/// One process's cost over one window.
#[derive(Clone)]
struct Cost {
    cpu_pct: f64,
    rss_kib: u32,
    threads: Breakdown,
}

/// The master's and the backup's cost, measured over the same window.
fn measure(master: u32, backup: u32) -> (Cost, Cost) {
    std::thread::sleep(SETTLE);
    let (t0, mt0, bt0) = (Instant::now(), threads(master), threads(backup));
    std::thread::sleep(WINDOW);
    let (mt1, bt1) = (threads(master), threads(backup));
    let secs = t0.elapsed().as_secs_f64();
    let cost = |pid: u32, before, after| {
        let threads = breakdown(before, after, secs);
        Cost {
            // ms on CPU per second, summed, is a tenth of the percentage.
            cpu_pct: threads.values().map(|(ms, _)| ms / 10.0).sum(),
            rss_kib: rss_kib(pid).expect("the process's VmRSS"),
            threads,
        }
    };
    (cost(master, &mt0, &mt1), cost(backup, &bt0, &bt1))
}

fn vip_trial() -> (Cost, Cost) {
    let lab = lab("vcv");
    let agent = |node: &str, priority: u8| {
        let mut cfg = config::node(&lab, node, &[("10.99.0.11", 1)]);
        cfg.vrrp.push(Vrrp::v3(priority, ADVERT).agent_vrrp());
        Agent::start_config(&lab, node, cfg)
    };
    let lb1 = agent("lb1", 150);
    let lb2 = agent("lb2", 100);
    wait_for("lb1 master, lb2 backup", Duration::from_secs(10), || {
        (lb1.status().instances[0].state == "master" && lb2.status().instances[0].state == "backup")
            .then_some(())
    });
    let pid = |a: &Agent| a.child.as_ref().expect("running").id();
    measure(pid(&lb1), pid(&lb2))
}

fn keepalived_trial() -> (Cost, Cost) {
    let lab = lab("vck");
    let mut lb1 = Keepalived::start(&lab, "lb1", &Vrrp::v3(150, ADVERT));
    let mut lb2 = Keepalived::start(&lab, "lb2", &Vrrp::v3(100, ADVERT));
    lb1.find_vrrp_child();
    lb2.find_vrrp_child();
    wait_for("keepalived on lb1 master", Duration::from_secs(10), || {
        (lb1.holds(&lab) && !lb2.holds(&lab)).then_some(())
    });
    let (m, b) = (
        lb1.vrrp_alive().expect("lb1's VRRP child"),
        lb2.vrrp_alive().expect("lb2's VRRP child"),
    );
    let costs = measure(m, b);
    assert!(
        lb1.holds(&lab) && !lb2.holds(&lab),
        "keepalived's roles changed during the window"
    );
    costs
}

/// `min / median / max` of `values` with `fmt`.
fn spread(mut values: Vec<f64>, fmt: impl Fn(f64) -> String) -> String {
    values.sort_by(f64::total_cmp);
    format!(
        "{} / {} / {}",
        fmt(values[0]),
        fmt(values[values.len() / 2]),
        fmt(values[values.len() - 1])
    )
}

fn main() {
    vip_tests::programs::set_job(vip_tests::programs::Job::Bench);
    if !is_root() {
        eprintln!(
            "skipping: the VRRP cost bench needs root (network namespaces): run `cargo xtask bench`"
        );
        return;
    }
    let (mut vip, mut ka) = (Vec::new(), Vec::new());
    for _ in 0..TRIALS {
        vip.push(vip_trial());
        ka.push(keepalived_trial());
    }
    let cpu = |runs: &[(Cost, Cost)], master: bool| {
        spread(
            runs.iter()
                .map(|r| if master { &r.0 } else { &r.1 }.cpu_pct)
                .collect(),
            |v| format!("{v:.2}"),
        )
    };
    let rss = |runs: &[(Cost, Cost)], master: bool| {
        spread(
            runs.iter()
                .map(|r| if master { &r.0 } else { &r.1 }.rss_kib)
                .map(|kib| f64::from(kib) / 1024.0)
                .collect(),
            |v| format!("{v:.1}"),
        )
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n# vip benchmark: the agent's own cost as a VRRP router\n\n\
         A pair at {} ms adverts (version 3), no traffic, no checks; {TRIALS} trials per stack, \
         alternating, each a {}-second window after {} s settled. CPU: on-CPU time of every \
         thread of the process (schedstat), % of one core, min / median / max. Memory: VmRSS, MiB.\n",
        ADVERT.as_millis(),
        WINDOW.as_secs(),
        SETTLE.as_secs()
    );
    let _ = writeln!(
        md,
        "| role | vip-agent CPU % | keepalived VRRP process CPU % | vip-agent RSS | keepalived VRRP RSS |\n|---|---|---|---|---|"
    );
    for (role, master) in [("master", true), ("backup", false)] {
        let _ = writeln!(
            md,
            "| {role} | {} | {} | {} | {} |",
            cpu(&vip, master),
            cpu(&ka, master),
            rss(&vip, master),
            rss(&ka, master)
        );
    }
    let _ = writeln!(
        md,
        "\nThe agent's figure is the whole process: VRRP, the XDP heartbeat stamp \
         (with each advert a master sends; on a backup, with each advert its loop receives, and every dead time / 2, here 22.5 ms, from the pacer), the link watch and the control socket; \
         keepalived's VRRP process does VRRP alone (its parent, idle, is not counted).\n\n\
         Where the agent's time goes, per thread (the last trial; ms on CPU per second, \
         wakeups per second):\n\n\
         | thread | master ms/s | master wakeups/s | backup ms/s | backup wakeups/s |\n|---|---|---|---|---|"
    );
    let (m, b) = vip.last().expect("a trial");
    for (name, (ms, w)) in &m.threads {
        let (bms, bw) = b.threads.get(name).copied().unwrap_or_default();
        if *ms + bms < 0.01 {
            continue;
        }
        let _ = writeln!(md, "| {name} | {ms:.2} | {w:.0} | {bms:.2} | {bw:.0} |");
    }
    let _ = writeln!(
        md,
        "\nvip-pacer sends the master's adverts and stamps the heartbeat; vip-agent is the \
         run loop (receiving adverts, checking in with the pacer once a second when idle). Each \
         wakeup costs some tens of microseconds on this VM, so the cost follows the wakeups: a \
         master wakes once per advert, as keepalived does; a backup's loop wakes for each \
         advert received (keepalived too) and its pacer once per stamp period, which \
         keepalived does not have."
    );
    vip_tests::publish(&md);
}
