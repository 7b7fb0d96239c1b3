//! Health-check cost: one vip-agent checking 100 backends every 100 ms, as
//! CPU time of the agent process (user + system, children included) over a
//! measured window, for in-process `tcp` checks and for `exec` checks that
//! fork `/bin/true` per probe (keepalived's `MISC_CHECK` model); then 1 000
//! backends every 100 ms (10 000 probes/s) with `tcp` checks, with the
//! agent's memory. Each beside its floor: the same connects from a bare loop.
//!
//! The 100 backends are 100 addresses (10.99.0.150-249) on the lab's b1,
//! whose `vip-lab-backend` answers on 0.0.0.0:5672; the 1 000 are addresses
//! of 10.98.0.0/22, a second subnet on the lab's segment (b1 and lb1 hold
//! it), in four services of 250 (a service has at most 256). keepalived's own
//! checker needs the kernel's IPVS (`virtual_server` blocks program LVS);
//! when the kernel lacks it, the bench says so instead of a number.
//!
//! Run with `cargo xtask bench` (it builds the release agent); the markdown
//! goes to stdout and is appended to `VIP_BENCH_REPORT` when set.

use vip_tests::kit as common;

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use common::{Agent, config, is_root, lab, wait_for};
use vip_agent::config::ServiceCheck;
use vip_tests::lab::Lab;

const FEW: usize = 100;
const MANY: usize = 1000;
/// Backends per service with [`MANY`] (a service takes at most 256).
const PER_SERVICE: usize = 250;
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

/// `count` backend addresses: [`FEW`] from 10.99.0.150, or up to 1 000 in
/// 10.98.0.0/22 from 10.98.0.10.
fn addresses(count: usize) -> Vec<Ipv4Addr> {
    (0..count)
        .map(|i| {
            if count <= FEW {
                Ipv4Addr::new(10, 99, 0, 150 + u8::try_from(i).expect("FEW < 106"))
            } else {
                let n = u32::from(Ipv4Addr::new(10, 98, 0, 10)) + u32::try_from(i).unwrap();
                Ipv4Addr::from(n)
            }
        })
        .collect()
}

/// A lab whose b1 holds `addrs` (and, for 10.98.0.0/22, lb1 an address of
/// that subnet, so it is directly connected there too).
fn backends_lab(tag: &str, addrs: &[Ipv4Addr]) -> Lab {
    let lab = lab(tag);
    let wide = addrs.iter().any(|a| a.octets()[1] == 98);
    if wide {
        lab.ns("lb1")
            .ip(&["addr", "add", "10.98.3.254/22", "dev", "eth0"])
            .expect("lb1's address on 10.98.0.0/22");
    }
    let prefix = if wide { 22 } else { 24 };
    let lines: Vec<String> = addrs
        .iter()
        .map(|a| format!("addr add {a}/{prefix} dev eth0"))
        .collect();
    lab.ns("b1")
        .ip_batch(&lines)
        .expect("add the backend addresses");
    lab
}

/// What one window of the agent cost.
struct Measured {
    user: f64,
    sys: f64,
    up: usize,
    rss_mib: f64,
}

/// Percent of one core the agent used over [`WINDOW`] with `check` on
/// `count` backends: user and system time; its memory at the end.
fn measure(check: &ServiceCheck, count: usize) -> Measured {
    let addrs = addresses(count);
    let lab = backends_lab("chk", &addrs);
    let names: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let backends: Vec<(&str, u32)> = names.iter().map(|a| (a.as_str(), 1)).collect();
    let mut cfg = config::node(&lab, "lb1", &[]);
    cfg.services = backends
        .chunks(PER_SERVICE)
        .zip(5672..)
        .map(|(chunk, port)| {
            let mut s = config::service(common::VIP, port, chunk);
            s.check = Some(check.clone());
            s
        })
        .collect();
    let agent = Agent::start_config(&lab, "lb1", cfg);
    let pid = agent.child.as_ref().expect("running").id();
    let up = wait_for("every backend checked up", Duration::from_mins(1), || {
        let st = agent.status();
        let n = st
            .services
            .iter()
            .flat_map(|s| &s.backends)
            .filter(|b| b.up && b.in_table)
            .count();
        (n == count).then_some(n)
    });
    std::thread::sleep(Duration::from_secs(2));
    let (t0, (u0, s0)) = (Instant::now(), cpu_ticks(pid));
    std::thread::sleep(WINDOW);
    let (u1, s1) = cpu_ticks(pid);
    let secs = t0.elapsed().as_secs_f64();
    #[expect(clippy::cast_precision_loss, reason = "ticks")]
    let pct = |d: u64| d as f64 / ticks_per_second() / secs * 100.0;
    let rss_mib = f64::from(common::rss_kib(pid).expect("the agent's VmRSS")) / 1024.0;
    drop(agent);
    Measured {
        user: pct(u1 - u0),
        sys: pct(s1 - s0),
        up,
        rss_mib,
    }
}

/// The floor: the same connects (each address every 100 ms, closed with an
/// RST like the agent's) from a bare blocking loop on one thread in lb1's
/// namespace; its user and system time, as % of one core, and the rounds
/// per second it kept up (10 when it kept the schedule).
fn bare_loop(count: usize) -> (f64, f64, f64) {
    let addrs = addresses(count);
    let lab = backends_lab("chb", &addrs);
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
        let addrs: Vec<std::net::SocketAddr> = addrs
            .iter()
            .map(|a| std::net::SocketAddr::from((*a, 5672)))
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
        let mut rounds = 0u32;
        while t0.elapsed() < WINDOW {
            round(&addrs);
            rounds += 1;
            next += Duration::from_millis(INTERVAL_MS);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        let (u1, s1) = usage();
        let secs = t0.elapsed().as_secs_f64();
        (
            (u1 - u0) / secs / 1e6 * 100.0,
            (s1 - s0) / secs / 1e6 * 100.0,
            f64::from(rounds) / secs,
        )
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
    let tcp = every(config::tcp_check());
    let few_tcp = measure(&tcp, FEW);
    let few_exec = measure(&every(config::exec_check("/bin/true")), FEW);
    let few_bare = bare_loop(FEW);
    let many_tcp = measure(&tcp, MANY);
    let many_bare = bare_loop(MANY);
    let ipvs = std::path::Path::new("/proc/net/ip_vs").exists();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n# vip benchmark: health-check cost\n\nOne check per backend every {INTERVAL_MS} ms, {}-second window after all were up; CPU = the agent's user + system time including reaped children, as % of one core; memory = the agent's VmRSS at the end.\n",
        WINDOW.as_secs()
    );
    let _ = writeln!(
        md,
        "| checks | backends up | user % | system % | total % of one core | agent RSS MiB |\n|---|---|---|---|---|---|"
    );
    let row = |md: &mut String, what: &str, m: &Measured| {
        let _ = writeln!(
            md,
            "| {what} | {} | {:.2} | {:.2} | {:.2} | {:.1} |",
            m.up,
            m.user,
            m.sys,
            m.user + m.sys,
            m.rss_mib
        );
    };
    let floor = |md: &mut String, what: &str, (u, s, rounds): (f64, f64, f64)| {
        let _ = writeln!(
            md,
            "| floor: {what} (no agent; {rounds:.1} rounds/s of the 10 due) | - | {u:.2} | {s:.2} | {:.2} | - |",
            u + s
        );
    };
    row(
        &mut md,
        &format!("vip `tcp` × {FEW} (in-process, no fork)"),
        &few_tcp,
    );
    row(
        &mut md,
        &format!(
            "vip `exec` `/bin/true` × {FEW} (a fork per probe, keepalived MISC_CHECK's model)"
        ),
        &few_exec,
    );
    floor(
        &mut md,
        &format!("the same {FEW} connects from a bare blocking loop"),
        few_bare,
    );
    row(
        &mut md,
        &format!(
            "vip `tcp` × {MANY} ({} services of {PER_SERVICE}; {} probes/s)",
            MANY / PER_SERVICE,
            MANY * 10
        ),
        &many_tcp,
    );
    floor(
        &mut md,
        &format!("the same {MANY} connects from a bare blocking loop"),
        many_bare,
    );
    let _ = writeln!(
        md,
        "\nSystem time includes the backend side's kernel TCP work: a veth delivers a packet to the peer namespace's stack inline, in the sender's context, so every SYN and RST the agent sends is also processed for b1 (and through the lab bridge) on the agent's clock. The floor rows are that cost alone; the agent's own cost over the floor: {:.2} % of one core for {FEW} `tcp` checks, {:.2} % for {MANY}.",
        few_tcp.user + few_tcp.sys - few_bare.0 - few_bare.1,
        many_tcp.user + many_tcp.sys - many_bare.0 - many_bare.1
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
