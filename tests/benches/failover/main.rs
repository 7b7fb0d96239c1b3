//! Failover gap: vip beside keepalived 2.2.7 + `HAProxy` (the seeds' stack), in
//! one run, under the same VRRP version (v3, multicast, vrid 51, priorities
//! lb1 150 / lb2 100, preempt) and advert interval (10 ms, 100 ms, 1 s), for
//! three faults of the master lb1: kill -9, SIGTERM and link down.
//!
//! Run it with `cargo xtask bench`, which builds the release binaries it
//! starts (a bare `cargo bench` does not rebuild `vip-agent`).
//!
//! Each trial builds a fresh lab and starts fresh daemons, waits until lb1 is
//! master and the client's ARP entry for the VIP names lb1, starts a prober in
//! the client namespace (a non-blocking TCP connect to VIP:5672 started every
//! 1 ms, several in flight, 20 ms connect timeout, then the backend's one-line
//! greeting), waits a random phase in `[0, advert interval)`, injects the
//! fault, waits until the client's ARP entry names lb2 and then 3 × interval
//! + 300 ms, and stops the prober.
//!
//! - **gap**: the longest stretch without a successful probe, from the last
//!   success before the fault to the end of the trial. When service stops at
//!   the fault (SIGTERM, link down) this is the first success after the
//!   fault minus the last one before it; after kill -9 lb1 may keep serving
//!   for a while (keepalived's VIP stays on lb1 and `HAProxy` keeps running;
//!   vip's XDP forwards until its heartbeat is older than `Master_Down`), and
//!   the gap is wherever service actually stopped.
//! - **takeover**: fault to the first successful probe sent while the
//!   client's ARP entry named lb2.
//! - **no recovery**: no success through lb2 after the fault, or the probe
//!   stopped succeeding before the end; counted, left out of the statistics.
//!
//! `VIP_BENCH_TRIALS` sets the trials per cell (default 10), `VIP_BENCH_QUICK=1`
//! runs only 10 ms adverts with 3 trials. The markdown goes to stdout and is
//! appended to `VIP_BENCH_REPORT` when set. Run with `cargo xtask bench`.
#![allow(
    clippy::too_many_lines,
    reason = "scenario benches read best as one story"
)]

mod probe;

use vip_tests::kit as common;

use std::{
    fmt::Write as _,
    net::UdpSocket,
    os::fd::AsRawFd as _,
    panic::AssertUnwindSafe,
    time::{Duration, Instant},
};

use common::{Agent, Haproxy, Keepalived, Setup, VIP, Vrrp, config, is_root, poll, signal};
use probe::{
    CONNECT_TIMEOUT, GREETING_TIMEOUT, LB1_LAST, Outcome, PROBE_PERIOD, Prober, analyse,
    client_arp_last, ms,
};
use vip_tests::{frames::Rng, lab::Lab, programs};

const BACKENDS: [(&str, u32); 3] = [("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)];
/// Successful probes before the fault, at least.
const WARMUP_PROBES: usize = 20;
const SEED: u64 = 0x5eed_fa11_0c0e_0051;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stack {
    Vip,
    Peer,
}

impl Stack {
    fn name(self) -> &'static str {
        match self {
            Self::Vip => "vip",
            Self::Peer => "keepalived+HAProxy",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    Kill9,
    Term,
    LinkDown,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Self::Kill9 => "kill -9",
            Self::Term => "SIGTERM",
            Self::LinkDown => "link down",
        }
    }
}

fn fmt_interval(d: Duration) -> String {
    if d >= Duration::from_secs(1) && d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Takes `eth0` down in the calling thread's namespace (SIOCSIFFLAGS, the
/// same as `ip link set eth0 down`); returns the instant just before.
fn link_down_now() -> std::io::Result<Instant> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    // SAFETY: ifreq is plain old data; all zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"eth0") {
        *d = libc::c_char::try_from(*s).expect("ascii");
    }
    // SAFETY: a valid ifreq on our own socket.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled in the flags member.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags & !libc::c_short::try_from(libc::IFF_UP).expect("small");
    let at = Instant::now();
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &raw const req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(at)
}

/// The stack under test on lb1 and lb2. Field order is drop order:
/// keepalived before `HAProxy`.
enum Daemons {
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

impl Daemons {
    fn start(lab: &Lab, stack: Stack, interval: Duration) -> Self {
        match stack {
            Stack::Vip => {
                // Logs to files in the agents' directories, for the errors.
                let agent = |node: &str, priority: u8| {
                    let mut cfg = config::node(lab, node, &BACKENDS);
                    cfg.vrrp.push(Vrrp::v3(priority, interval).agent_vrrp());
                    let setup = Setup::logged();
                    Agent::start_full(lab, node, cfg, setup)
                };
                let lb1 = agent("lb1", 150);
                let lb2 = agent("lb2", 100);
                Self::Vip { lb1, lb2 }
            }
            Stack::Peer => {
                let ha1 = Haproxy::start(lab, "lb1", &BACKENDS);
                let ha2 = Haproxy::start(lab, "lb2", &BACKENDS);
                let ka1 = Keepalived::start(lab, "lb1", &Vrrp::v3(150, interval));
                let ka2 = Keepalived::start(lab, "lb2", &Vrrp::v3(100, interval));
                Self::Peer {
                    ka1,
                    ka2,
                    _ha1: ha1,
                    _ha2: ha2,
                }
            }
        }
    }

    fn lb1_master(&self, lab: &Lab) -> bool {
        match self {
            Self::Vip { lb1, lb2 } => lb1.holds(VIP) && !lb2.holds(VIP),
            Self::Peer { ka1, ka2, .. } => ka1.holds(lab) && !ka2.holds(lab),
        }
    }

    /// Anything to read before the fault, so the fault itself is quick.
    fn prepare(&mut self) {
        if let Self::Peer { ka1, .. } = self {
            ka1.find_vrrp_child();
        }
    }

    /// Injects the fault on lb1; returns the fault instant, taken just before.
    fn inject(&mut self, lab: &Lab, fault: Fault) -> Result<Instant, String> {
        if fault == Fault::LinkDown {
            return lab
                .run_in("lb1", link_down_now)
                .map_err(|e| format!("link down: {e}"));
        }
        match self {
            Self::Vip { lb1, .. } => {
                let pid = lb1
                    .child
                    .as_ref()
                    .ok_or("vip-agent on lb1 is not running")?
                    .id();
                let at = Instant::now();
                let sig = if fault == Fault::Kill9 {
                    libc::SIGKILL
                } else {
                    libc::SIGTERM
                };
                if !signal(pid, sig) {
                    return Err(format!("cannot signal vip-agent ({sig})"));
                }
                Ok(at)
            }
            Self::Peer { ka1, .. } => {
                let parent = ka1.pid();
                if fault == Fault::Kill9 {
                    // A real crash: the VRRP child, then the parent (SIGKILL of
                    // the parent alone makes the child send priority 0).
                    let child = ka1
                        .vrrp_alive()
                        .ok_or("keepalived's VRRP child is gone before the fault")?;
                    let at = Instant::now();
                    let _ = signal(child, libc::SIGKILL);
                    let _ = signal(parent, libc::SIGKILL);
                    Ok(at)
                } else {
                    let at = Instant::now();
                    if !signal(parent, libc::SIGTERM) {
                        return Err("cannot SIGTERM keepalived".into());
                    }
                    Ok(at)
                }
            }
        }
    }

    fn logs(&self) -> String {
        match self {
            Self::Vip { lb1, lb2 } => format!(
                "\nvip lb1:\n{}\nvip lb2:\n{}",
                lb1.log_tail(10),
                lb2.log_tail(10)
            ),
            Self::Peer { ka1, ka2, .. } => format!(
                "\nkeepalived lb1:\n{}\nkeepalived lb2:\n{}",
                ka1.log_tail(10),
                ka2.log_tail(10)
            ),
        }
    }
}

fn trial(
    stack: Stack,
    interval: Duration,
    fault: Fault,
    phase: Duration,
) -> Result<Outcome, String> {
    let lab = common::lab(match stack {
        Stack::Vip => "fov",
        Stack::Peer => "fok",
    });
    let mut daemons = Daemons::start(&lab, stack, interval);

    // Election: lb1 becomes master after its Master_Down_Interval.
    let limit = interval * 5 + Duration::from_secs(3);
    let elected = poll(limit, Duration::from_millis(5), || {
        daemons.lb1_master(&lab).then_some(())
    });
    if elected.is_none() {
        return Err(format!(
            "lb1 was not the only master within {limit:?}{}",
            daemons.logs()
        ));
    }
    daemons.prepare();
    // One connect, then the client's ARP entry must name lb1.
    let ready = poll(Duration::from_secs(3), Duration::from_millis(10), || {
        (lab.run_in("client", || common::who_answers(Duration::from_millis(200)))
            .is_ok()
            && client_arp_last(&lab) == Some(LB1_LAST))
        .then_some(())
    });
    if ready.is_none() {
        return Err(format!(
            "the client does not reach the VIP through lb1 (ARP: {:?}){}",
            client_arp_last(&lab),
            daemons.logs()
        ));
    }

    let prober = Prober::start(&lab);
    let warm = poll(Duration::from_secs(3), Duration::from_millis(1), || {
        (prober.successes() >= WARMUP_PROBES).then_some(())
    });
    if warm.is_none() {
        return Err("the probe does not succeed before the fault".into());
    }
    std::thread::sleep(phase);
    let fault_at = daemons.inject(&lab, fault)?;
    let limit = interval * 5 + Duration::from_secs(2);
    let moved = poll(limit, Duration::from_millis(1), || {
        prober.saw_lb2().then_some(())
    });
    if moved.is_none() {
        return Err(format!(
            "no recovery: the client's ARP entry did not name lb2 within {limit:?}"
        ));
    }
    std::thread::sleep(interval * 3 + Duration::from_millis(300));
    let log = prober.finish()?;
    analyse(&log, fault_at)
}

fn run_trial(
    stack: Stack,
    interval: Duration,
    fault: Fault,
    phase: Duration,
) -> Result<Outcome, String> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| trial(stack, interval, fault, phase))) {
        Ok(r) => r,
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .map_or_else(|| "panicked".to_owned(), |m| format!("panicked: {m}"))),
    }
}

#[derive(Default)]
struct Results {
    ok: Vec<Outcome>,
    errors: Vec<String>,
}

struct Cell {
    interval: Duration,
    fault: Fault,
    vip: Results,
    peer: Results,
}

/// min, median, max in ms.
fn stats(v: &[Duration]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut s: Vec<f64> = v.iter().map(|d| ms(*d)).collect();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        f64::midpoint(s[n / 2 - 1], s[n / 2])
    };
    Some((s[0], med, s[n - 1]))
}

fn fmt_stats(s: Option<(f64, f64, f64)>) -> String {
    s.map_or_else(
        || "-".to_owned(),
        |(a, b, c)| format!("{a:.1} / {b:.1} / {c:.1}"),
    )
}

fn ratio(a: Option<(f64, f64, f64)>, b: Option<(f64, f64, f64)>) -> String {
    match (a, b) {
        (Some((_, a, _)), Some((_, b, _))) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".to_owned(),
    }
}

fn version_line(program: &str, arg: &str) -> String {
    programs::command(program)
        .and_then(|mut c| Ok(c.arg(arg).output()?))
        .map(|o| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            text.lines().next().unwrap_or_default().trim().to_owned()
        })
        .unwrap_or_default()
}

fn report(cells: &[Cell], trials: usize, quick: bool, took: Duration) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n# vip benchmark: VRRP failover gap, vip vs keepalived + HAProxy\n"
    );
    let _ = writeln!(
        md,
        "Machine: {}. Peer: {}, {}. XDP: native on veth (netns lab). {trials} trials per cell{}, one run, {:.1} min.\n",
        vip_tests::machine_summary(),
        version_line("keepalived", "--version"),
        version_line("haproxy", "-v"),
        if quick {
            " (VIP_BENCH_QUICK: 10 ms adverts only)"
        } else {
            ""
        },
        took.as_secs_f64() / 60.0
    );
    let _ = writeln!(
        md,
        "Method: VRRPv3, multicast, vrid 51, lb1 priority 150 (master), lb2 100, preempt; both stacks with the same advert interval. \
         vip: vip-agent on lb1 and lb2 (XDP, DSR to b1..b3). Peer: keepalived 2.2.7 (`-n -P -B -l -D -G`, `advert_int` = the interval, \
         `virtual_ipaddress` {VIP}/32) plus HAProxy (`mode tcp`, `balance roundrobin`, b1..b3, nonlocal bind) on each LB. \
         Each trial: fresh lab and daemons; wait until lb1 is master and the client's ARP entry names lb1; a prober in the client \
         namespace starts a non-blocking TCP connect to {VIP}:5672 every {} ms, whatever the earlier ones do (each gives up after a {} ms connect timeout, \
         or {} ms more without the backend's greeting line; a probe succeeds when the greeting arrives); \
         after {WARMUP_PROBES} successes it waits a random phase in [0, interval) (xorshift, seed {SEED:#x}), takes CLOCK_MONOTONIC \
         and injects the fault on lb1; it waits until the client's ARP entry names lb2, then 3 × interval + 300 ms, and stops the prober.\n",
        PROBE_PERIOD.as_millis(),
        CONNECT_TIMEOUT.as_millis(),
        GREETING_TIMEOUT.as_millis()
    );
    let _ = writeln!(
        md,
        "Faults: **kill -9** = SIGKILL vip-agent / SIGKILL keepalived's VRRP child then its parent (a real crash; SIGKILL of the \
         parent alone makes the child send priority 0). **SIGTERM** = SIGTERM vip-agent / the keepalived parent. **link down** = \
         lb1's eth0 down (SIOCSIFFLAGS, as `ip link set eth0 down`). HAProxy keeps running in every case.\n"
    );
    let _ = writeln!(
        md,
        "**gap** = the longest stretch without a successful probe from the last success before the fault to the end of the trial \
         (for SIGTERM and link down: first success after the fault minus last before it). After kill -9 lb1 may keep serving \
         for a while (keepalived leaves the VIP on lb1 and HAProxy runs on; vip's XDP forwards until its heartbeat is 4.5 advert \
         intervals old), so the gap is wherever service actually stopped; **takeover** = fault to the first success sent while the \
         client's ARP entry named lb2. Probes overlap, so the resolution is the {} ms probe period, not the connect timeout. \
         **failures** = trials without recovery (no success through lb2, or none at the end) or that could not be set up; \
         they are left out of the statistics and listed below.\n",
        PROBE_PERIOD.as_millis()
    );
    let _ = writeln!(
        md,
        "The gap measures new connections only. HAProxy resets every established connection on failover (lb2 has no socket \
         for them: the client gets an RST); vip does not (both nodes build the same Maglev table and the backends answer \
         directly, so an established connection keeps working through the new master).\n"
    );
    let _ = writeln!(
        md,
        "| advert | fault | vip gap ms (min / med / max) | keepalived+HAProxy gap ms (min / med / max) | ratio vip/peer (medians) | failures vip / peer |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for c in cells {
        let v = stats(&c.vip.ok.iter().map(|o| o.gap).collect::<Vec<_>>());
        let p = stats(&c.peer.ok.iter().map(|o| o.gap).collect::<Vec<_>>());
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} / {} |",
            fmt_interval(c.interval),
            c.fault.name(),
            fmt_stats(v),
            fmt_stats(p),
            ratio(v, p),
            c.vip.errors.len(),
            c.peer.errors.len()
        );
    }
    let _ = writeln!(
        md,
        "\nTakeover (fault to the first answer through lb2), same trials:\n\n\
         | advert | fault | vip ms (min / med / max) | keepalived+HAProxy ms (min / med / max) | ratio vip/peer (medians) |\n|---|---|---|---|---|"
    );
    for c in cells {
        let v = stats(&c.vip.ok.iter().map(|o| o.takeover).collect::<Vec<_>>());
        let p = stats(&c.peer.ok.iter().map(|o| o.takeover).collect::<Vec<_>>());
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            fmt_interval(c.interval),
            c.fault.name(),
            fmt_stats(v),
            fmt_stats(p),
            ratio(v, p)
        );
    }
    let failures: Vec<String> = cells
        .iter()
        .flat_map(|c| {
            [(Stack::Vip, &c.vip), (Stack::Peer, &c.peer)]
                .into_iter()
                .flat_map(move |(s, r)| {
                    r.errors.iter().map(move |e| {
                        let lines: Vec<&str> =
                            e.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
                        let first = match lines.as_slice() {
                            [] => String::new(),
                            [one] => (*one).to_owned(),
                            [one, .., last] => format!("{one} … {last}"),
                        };
                        format!(
                            "- {} {} {}: {first}",
                            fmt_interval(c.interval),
                            c.fault.name(),
                            s.name()
                        )
                    })
                })
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(md, "\nFailures:\n\n{}", failures.join("\n"));
    }
    md.push_str(&plot_gaps(cells));
    md
}

/// Every trial's gap, per advert interval and fault, vip beside its peer.
fn plot_gaps(cells: &[Cell]) -> String {
    use vip_tests::plot::{Series, Strip, Tone, strips};
    let series = |stack: Stack, r: &Results, tone| Series {
        name: stack.name().to_owned(),
        tone,
        values: r.ok.iter().map(|o| ms(o.gap)).collect(),
    };
    let rows: Vec<Strip> = cells
        .iter()
        .map(|c| Strip {
            label: format!("{} adverts, {}", fmt_interval(c.interval), c.fault.name()),
            series: vec![
                series(Stack::Vip, &c.vip, Tone::Vip),
                series(Stack::Peer, &c.peer, Tone::Peer),
            ],
        })
        .collect();
    strips(
        "failover-gaps.svg",
        "Failover gap per trial, vip vs keepalived + HAProxy (tick: median)",
        "gap, ms (log scale)",
        &rows,
    )
}

fn main() {
    if !is_root() {
        eprintln!(
            "skipping: the failover bench needs root (network namespaces): run `cargo xtask bench`"
        );
        return;
    }
    programs::set_job(programs::Job::Bench);
    for peer in ["keepalived", "haproxy"] {
        if let Err(e) = programs::check(peer.as_ref()) {
            eprintln!("failover bench: {e:#}");
            std::process::exit(1);
        }
    }
    let quick = std::env::var("VIP_BENCH_QUICK").is_ok_and(|v| v == "1");
    let trials = std::env::var("VIP_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(if quick { 3 } else { 10 });
    let intervals: &[Duration] = if quick {
        &[Duration::from_millis(10)]
    } else {
        &[
            Duration::from_millis(10),
            Duration::from_millis(100),
            Duration::from_secs(1),
        ]
    };
    let total = intervals.len() * 3 * trials * 2;
    let mut rng = Rng::new(SEED);
    let started = Instant::now();
    let mut done = 0;
    let mut cells = Vec::new();
    for &interval in intervals {
        for fault in [Fault::Kill9, Fault::Term, Fault::LinkDown] {
            let mut cell = Cell {
                interval,
                fault,
                vip: Results::default(),
                peer: Results::default(),
            };
            for _ in 0..trials {
                // Alternate the stacks so both see the same machine noise.
                for stack in [Stack::Vip, Stack::Peer] {
                    let us = u64::try_from(interval.as_micros()).expect("small");
                    let phase = Duration::from_micros(rng.below(us));
                    let r = run_trial(stack, interval, fault, phase);
                    done += 1;
                    match &r {
                        Ok(o) => eprintln!(
                            "[{done}/{total} {:.0}s] {} {} {}: gap {:.1} ms, takeover {:.1} ms",
                            started.elapsed().as_secs_f64(),
                            fmt_interval(interval),
                            fault.name(),
                            stack.name(),
                            ms(o.gap),
                            ms(o.takeover)
                        ),
                        Err(e) => eprintln!(
                            "[{done}/{total} {:.0}s] {} {} {}: FAILED: {e}",
                            started.elapsed().as_secs_f64(),
                            fmt_interval(interval),
                            fault.name(),
                            stack.name()
                        ),
                    }
                    let results = match stack {
                        Stack::Vip => &mut cell.vip,
                        Stack::Peer => &mut cell.peer,
                    };
                    match r {
                        Ok(o) => results.ok.push(o),
                        Err(e) => results.errors.push(e),
                    }
                }
            }
            cells.push(cell);
        }
    }
    let md = report(&cells, trials, quick, started.elapsed());
    vip_tests::publish(&md);
}
