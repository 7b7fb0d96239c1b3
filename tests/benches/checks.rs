//! Health-check cost: one vip-agent checking 100 backends every 100 ms, as
//! CPU time of the agent process (user + system, children included) over a
//! measured window, for in-process `tcp` checks and for `exec` checks that
//! fork `/bin/true` per probe (keepalived's `MISC_CHECK` model).
//!
//! The 100 backends are 100 addresses (10.99.0.150-249) on the lab's b1,
//! whose `vip-lab-backend` answers on 0.0.0.0:5672. keepalived's own
//! checker needs the kernel's IPVS (`virtual_server` blocks program LVS);
//! when the kernel lacks it, the bench says so instead of a number.
//!
//! Run with `cargo xtask bench` (it builds the release agent); the markdown
//! goes to stdout and is appended to `VIP_BENCH_REPORT` when set.

use vip_tests::kit as common;

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use common::{Agent, config, is_root, lab, wait_for};
use vip_agent::config::ServiceCheck;
use vip_tests::lab::Lab;

const COUNT: u8 = 100;
const FIRST: u8 = 150;
const INTERVAL_MS: u64 = 100;
const WINDOW: Duration = Duration::from_secs(10);

/// (user, system) time of `pid` with its reaped children, in clock ticks.
fn cpu_ticks(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("agent stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|f| f.parse::<u64>().expect("ticks"))
        .collect();
    // stat(5) fields 14-17: utime, stime, cutime, cstime.
    (f[0] + f[2], f[1] + f[3])
}

fn ticks_per_second() -> f64 {
    // SAFETY: no preconditions.
    #[expect(clippy::cast_precision_loss, reason = "a small constant")]
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    t
}

/// A lab whose b1 has the [`COUNT`] backend addresses from `10.99.0.FIRST`.
fn backends_lab(tag: &str) -> Lab {
    let lab = lab(tag);
    for i in 0..COUNT {
        lab.ns("b1")
            .ip(&[
                "addr",
                "add",
                &format!("10.99.0.{}/24", FIRST + i),
                "dev",
                "eth0",
            ])
            .expect("add a backend address");
    }
    lab
}

/// Percent of one core the agent used over [`WINDOW`] with `check`: user
/// and system time.
fn measure(check: ServiceCheck) -> (f64, f64, usize) {
    let lab = backends_lab("chk");
    let addrs: Vec<String> = (0..COUNT)
        .map(|i| format!("10.99.0.{}", FIRST + i))
        .collect();
    let backends: Vec<(&str, u32)> = addrs.iter().map(|a| (a.as_str(), 1)).collect();
    let mut cfg = config::node(&lab, "lb1", &backends);
    cfg.services[0].check = Some(check);
    let agent = Agent::start_config(&lab, "lb1", cfg);
    let pid = agent.child.as_ref().expect("running").id();
    let up = wait_for("every backend checked up", Duration::from_secs(30), || {
        let st = agent.status();
        let n = st.services[0]
            .backends
            .iter()
            .filter(|b| b.up && b.in_table)
            .count();
        (n == usize::from(COUNT)).then_some(n)
    });
    std::thread::sleep(Duration::from_secs(2));
    let (t0, (u0, s0)) = (Instant::now(), cpu_ticks(pid));
    std::thread::sleep(WINDOW);
    let (u1, s1) = cpu_ticks(pid);
    let secs = t0.elapsed().as_secs_f64();
    #[expect(clippy::cast_precision_loss, reason = "ticks")]
    let pct = |d: u64| d as f64 / ticks_per_second() / secs * 100.0;
    drop(agent);
    (pct(u1 - u0), pct(s1 - s0), up)
}

/// The floor: the same connects (each address every 100 ms, closed with an
/// RST like the agent's) from a bare blocking loop on one thread in lb1's
/// namespace; its user and system time, as % of one core.
fn bare_loop() -> (f64, f64) {
    let lab = backends_lab("chb");
    lab.run_in("lb1", || {
        let usage = || {
            // SAFETY: a plain getrusage into a zeroed struct.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            unsafe { libc::getrusage(libc::RUSAGE_THREAD, &raw mut ru) };
            let us = |t: libc::timeval| {
                #[expect(clippy::cast_precision_loss, reason = "microseconds")]
                let v = t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
                v
            };
            (us(ru.ru_utime), us(ru.ru_stime))
        };
        let addrs: Vec<std::net::SocketAddr> = (0..COUNT)
            .map(|i| std::net::SocketAddr::from(([10, 99, 0, FIRST + i], 5672)))
            .collect();
        let round = |addrs: &[std::net::SocketAddr]| {
            for a in addrs {
                if let Ok(s) = std::net::TcpStream::connect_timeout(a, Duration::from_secs(1)) {
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                }
            }
        };
        round(&addrs);
        let (u0, s0) = usage();
        let t0 = Instant::now();
        let mut next = t0;
        while t0.elapsed() < WINDOW {
            round(&addrs);
            next += Duration::from_millis(INTERVAL_MS);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        let (u1, s1) = usage();
        let secs = t0.elapsed().as_secs_f64() * 1e6;
        ((u1 - u0) / secs * 100.0, (s1 - s0) / secs * 100.0)
    })
}

fn main() {
    vip_tests::programs::set_job(vip_tests::programs::Job::Bench);
    if !is_root() {
        eprintln!(
            "skipping: the checks bench needs root (network namespaces): run `cargo xtask bench`"
        );
        return;
    }
    // Both on the default schedule (1 s timeout, rise and fall 2) but for
    // the interval.
    let every = |mut check: ServiceCheck| {
        check.schedule.interval = Duration::from_millis(INTERVAL_MS);
        check
    };
    let (tcp_user, tcp_sys, n1) = measure(every(config::tcp_check()));
    let (exec_user, exec_sys, n2) = measure(every(config::exec_check("/bin/true")));
    let (bare_user, bare_sys) = bare_loop();
    let ipvs = std::path::Path::new("/proc/net/ip_vs").exists();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n# vip benchmark: health-check cost\n\n{COUNT} backends, one check each every {INTERVAL_MS} ms, {}-second window after all were up; CPU = the agent's user + system time including reaped children, as % of one core.\n",
        WINDOW.as_secs()
    );
    let _ = writeln!(
        md,
        "| checks | backends up | user % | system % | total % of one core |\n|---|---|---|---|---|"
    );
    let _ = writeln!(
        md,
        "| vip `tcp` (in-process, no fork) | {n1} | {tcp_user:.2} | {tcp_sys:.2} | {:.2} |",
        tcp_user + tcp_sys
    );
    let _ = writeln!(
        md,
        "| vip `exec` `/bin/true` (a fork per probe, keepalived MISC_CHECK's model) | {n2} | {exec_user:.2} | {exec_sys:.2} | {:.2} |",
        exec_user + exec_sys
    );
    let _ = writeln!(
        md,
        "| floor: the same connects from a bare blocking loop (no agent) | - | {bare_user:.2} | {bare_sys:.2} | {:.2} |",
        bare_user + bare_sys
    );
    let _ = writeln!(
        md,
        "\nSystem time includes the backend side's kernel TCP work: a veth delivers a packet to the peer namespace's stack inline, in the sender's context, so every SYN and RST the agent sends is also processed for b1 (and through the lab bridge) on the agent's clock. The floor row is that cost alone; the agent's own cost for 100 `tcp` checks every 100 ms is the difference: {:.2} % of one core.",
        tcp_user + tcp_sys - bare_user - bare_sys
    );
    let _ = writeln!(
        md,
        "\nkeepalived MISC_CHECK itself: {}",
        if ipvs {
            "not measured by this bench yet"
        } else {
            "not measurable on this kernel: keepalived's checker programs IPVS (`virtual_server`), and this kernel has no IP_VS (/proc/net/ip_vs is absent, no module loader)"
        }
    );
    vip_tests::publish(&md);
}
