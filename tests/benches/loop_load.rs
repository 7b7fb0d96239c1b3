//! Does the master keep its schedule under load? A vip pair at 10 ms
//! adverts; the master, lb1, first idle, then under load: 2 000 connections
//! opened and held on its `/metrics`, about 1 000 scrapes a second, and a
//! reload every 2 s that rebuilds 16 services × 256 backends.
//!
//! Measured per window (idle, then loaded), in the same run:
//! - the longest gap between two adverts from lb1 as lb2's namespace
//!   receives them (a raw socket of the bench's, stamped on receipt), and
//!   lb1's own figure (`longest_advert_gap_ms`, over the whole run);
//! - VRRP transitions on both nodes (the goal: none);
//! - the oldest the heartbeat got (sampled every millisecond from the
//!   pins), beside half the dead time;
//! - scrapes answered, and the reloads done and how long they took.
//!
//! Run with `cargo xtask bench` (it builds the release agent); the markdown
//! goes to stdout and is appended to `VIP_BENCH_REPORT` when set.

use vip_tests::kit as common;

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Agent, Setup, Vrrp, config, is_root, lab, wait_for};
use vip_agent::config::Config;
use vip_tests::lab::Lab;

const ADVERT: Duration = Duration::from_millis(10);
const WINDOW: Duration = Duration::from_secs(10);
const METRICS: &str = "127.0.0.1:9650";
const IDLE_CONNECTIONS: usize = 2000;
const SCRAPERS: u64 = 4;
const SCRAPES_PER_SECOND: u64 = 1000;
const RELOAD_EVERY: Duration = Duration::from_secs(2);
const SERVICES: u16 = 16;
const BACKENDS: u8 = 255;
/// lb1's address on the LAN (the advert source).
const LB1: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

/// 16 services of 256 backends (10.99.16.1/23 is on lb1's eth0, with
/// permanent neighbour entries for them); `weights` alternates between
/// reloads so every table is rebuilt.
fn big(base: &Config, heavy: bool) -> Config {
    let mut cfg = base.clone();
    cfg.services = (0..SERVICES)
        .map(|i| {
            let backends: Vec<(String, u32)> = (0..=BACKENDS)
                .map(|b| {
                    let n = 2 + u16::from(b);
                    let addr = format!("10.99.{}.{}", 16 + n / 256, n % 256);
                    let w = if heavy && b % 2 == 0 { 2 } else { 1 };
                    (addr, w)
                })
                .collect();
            let refs: Vec<(&str, u32)> = backends.iter().map(|(a, w)| (a.as_str(), *w)).collect();
            config::service(common::VIP, 6000 + i, &refs)
        })
        .collect();
    cfg
}

/// lb1 gets an address on 10.99.16.0/23 and permanent neighbours for the
/// backends `big` names, so their MACs resolve without ARP.
fn neighbours(lab: &Lab) {
    let dir = std::env::temp_dir().join(format!("vip-bench-loop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let batch = dir.join("neigh.batch");
    let mut text = String::from("addr add 10.99.16.1/23 dev eth0\n");
    for b in 0..=u16::from(BACKENDS) {
        let n = 2 + b;
        let _ = writeln!(
            text,
            "neigh replace 10.99.{}.{} lladdr 02:16:00:00:{:02x}:{:02x} dev eth0 nud permanent",
            16 + n / 256,
            n % 256,
            n / 256,
            n % 256
        );
    }
    std::fs::write(&batch, text).unwrap();
    lab.ns("lb1")
        .ip(&["-batch", batch.to_str().unwrap()])
        .expect("neighbours");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The heartbeat's age, sampled every millisecond, as (time, age).
fn sample_heartbeat(
    agent: &Agent,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(Instant, Duration)>> {
    let maps = agent.maps();
    let stop = Arc::clone(stop);
    std::thread::spawn(move || {
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Ok(hb) = maps.heartbeat() {
                let now = vip_agent::dataplane::monotonic_ns();
                out.push((
                    Instant::now(),
                    Duration::from_nanos(now.saturating_sub(hb.stamp_ns)),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        out
    })
}

/// Scrapes answered and failed while `run` is set.
#[derive(Default)]
struct Scrapes {
    ok: AtomicU64,
    failed: AtomicU64,
}

fn scrape(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /metrics HTTP/1.1\r\nHost: lb1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got.starts_with(b"HTTP/1.1 200 OK")
}

/// Holds `IDLE_CONNECTIONS` to /metrics and scrapes at
/// `SCRAPES_PER_SECOND` from lb1's namespace until `run` is cleared.
fn load(
    lab: &Lab,
    run: &Arc<AtomicBool>,
    scrapes: &Arc<Scrapes>,
) -> Vec<std::thread::JoinHandle<()>> {
    let addr: SocketAddr = METRICS.parse().unwrap();
    let mut threads = Vec::new();
    let held = Arc::new(Mutex::new(Vec::new()));
    {
        let (run, held) = (Arc::clone(run), Arc::clone(&held));
        threads.push(lab.spawn_thread_in("lb1", move || {
            for _ in 0..IDLE_CONNECTIONS {
                if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                    held.lock().unwrap().push(s);
                }
            }
            while run.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            held.lock().unwrap().clear();
        }));
    }
    for _ in 0..SCRAPERS {
        let (run, scrapes) = (Arc::clone(run), Arc::clone(scrapes));
        threads.push(lab.spawn_thread_in("lb1", move || {
            let period = Duration::from_secs(SCRAPERS) / u32::try_from(SCRAPES_PER_SECOND).unwrap();
            let mut next = Instant::now();
            while run.load(Ordering::Relaxed) {
                let counter = if scrape(addr) {
                    &scrapes.ok
                } else {
                    &scrapes.failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
                next += period;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                } else {
                    next = Instant::now();
                }
            }
        }));
    }
    threads
}

/// The longest gap between consecutive times within `[from, to)`.
fn longest(times: &[Instant], from: Instant, to: Instant) -> Option<Duration> {
    let w: Vec<Instant> = times
        .iter()
        .copied()
        .filter(|t| *t >= from && *t < to)
        .collect();
    common::longest_gap(&w)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What one run measured.
struct Measured {
    /// Adverts from lb1 as lb2 received them.
    adverts: Vec<Instant>,
    /// The heartbeat's age, sampled.
    beats: Vec<(Instant, Duration)>,
    /// Idle, then loaded.
    windows: [(Instant, Instant); 2],
    dead: Duration,
    /// On lb1 and lb2 during the run.
    transitions: (u64, u64),
    /// lb1's own figure, ms.
    own_gap: f64,
    /// Answered, failed.
    scrapes: (u64, u64),
    reloads: Vec<Duration>,
}

/// The markdown section for `m`.
fn report(m: &Measured) -> String {
    let (adverts, beats, dead) = (&m.adverts, &m.beats, m.dead);
    let oldest = |from: Instant, to: Instant| {
        beats
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, age)| *age)
            .max()
            .unwrap_or_default()
    };
    let fmt =
        |d: Option<Duration>| d.map_or("no adverts".to_owned(), |d| format!("{:.2} ms", ms(d)));
    let count =
        |from: Instant, to: Instant| adverts.iter().filter(|t| **t >= from && **t < to).count();
    let (answered, failed) = m.scrapes;
    let [(idle_from, load_from), (_, load_to)] = m.windows;
    let secs = (load_to - load_from).as_secs_f64();
    let reload_max = m.reloads.iter().max().copied().unwrap_or_default();

    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## The master's schedule under load (10 ms adverts)\n"
    );
    let _ = writeln!(
        md,
        "lb1 master, lb2 backup, {} s idle then {} s loaded: {IDLE_CONNECTIONS} connections opened and held on lb1's /metrics, \
         {SCRAPERS} scrapers at {SCRAPES_PER_SECOND}/s in all, and a reload every {} s that rebuilds {SERVICES} services × {} backends. \
         Gaps are between adverts from lb1 as lb2's namespace receives them. Goal: ≤ 15 ms, 0 transitions, heartbeat age below half the dead time.\n",
        WINDOW.as_secs(),
        WINDOW.as_secs(),
        RELOAD_EVERY.as_secs(),
        u16::from(BACKENDS) + 1
    );
    let _ = writeln!(
        md,
        "| window | adverts heard | longest gap | oldest heartbeat (dead time {:.0} ms) |",
        ms(dead)
    );
    let _ = writeln!(md, "|---|---|---|---|");
    let _ = writeln!(
        md,
        "| idle | {} | {} | {:.2} ms |",
        count(idle_from, load_from),
        fmt(longest(adverts, idle_from, load_from)),
        ms(oldest(idle_from, load_from))
    );
    let _ = writeln!(
        md,
        "| loaded | {} | {} | {:.2} ms |",
        count(load_from, load_to),
        fmt(longest(adverts, load_from, load_to)),
        ms(oldest(load_from, load_to))
    );
    let _ = writeln!(
        md,
        "\nlb1's own longest gap between two adverts it sent (whole run): {:.2} ms. \
         Transitions during the run: lb1 {}, lb2 {}. \
         Scrapes answered: {answered} ({:.0}/s), refused or failed: {failed}. \
         Reloads: {} (longest {:.0} ms).",
        m.own_gap,
        m.transitions.0,
        m.transitions.1,
        f64::from(u32::try_from(answered).unwrap_or(u32::MAX)) / secs,
        m.reloads.len(),
        ms(reload_max)
    );
    md
}

fn main() {
    if !is_root() {
        eprintln!(
            "skipping: the loop bench needs root (network namespaces): run `cargo xtask bench`"
        );
        return;
    }
    vip_tests::programs::set_job(vip_tests::programs::Job::Bench);
    // Room for the held connections.
    let limit = libc::rlimit {
        rlim_cur: 8192,
        rlim_max: 8192,
    };
    // SAFETY: setrlimit with a valid pointer to a live struct.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) };

    let lab = lab("loop");
    neighbours(&lab);
    let start = |node: &str, priority| {
        let mut cfg = config::node(&lab, node, &[("10.99.0.11", 1)]);
        cfg.vrrp.push(Vrrp::v3(priority, ADVERT).agent_vrrp());
        if node == "lb1" {
            cfg.node.metrics = Some(METRICS.parse().unwrap());
        }
        Agent::start_full(&lab, node, cfg, Setup::logged())
    };
    let mut lb1 = start("lb1", 150);
    let lb2 = start("lb2", 100);
    wait_for("lb1 master, lb2 backup", Duration::from_secs(5), || {
        (lb1.holds(common::VIP) && !lb2.holds(common::VIP)).then_some(())
    });
    let base = big(lb1.cfg(), false);
    lb1.reload_config(base.clone());
    let dead = vip_agent::agent::dead_time(&base);
    let transitions = |a: &Agent| a.status().instances[0].transitions;
    let before = (transitions(&lb1), transitions(&lb2));

    let stop = Arc::new(AtomicBool::new(false));
    let adverts = common::hear_adverts(&lab, "lb2", LB1, &stop);
    let beats = sample_heartbeat(&lb1, &stop);

    let idle_from = Instant::now();
    std::thread::sleep(WINDOW);
    let load_from = Instant::now();
    let run = Arc::new(AtomicBool::new(true));
    let scrapes = Arc::new(Scrapes::default());
    let loaders = load(&lab, &run, &scrapes);
    let mut reloads = Vec::new();
    let mut heavy = true;
    let rebuilds = |a: &Agent| a.status().table_rebuilds;
    while load_from.elapsed() < WINDOW {
        let before = rebuilds(&lb1);
        let t = Instant::now();
        lb1.reload_config(big(&base, heavy));
        reloads.push(t.elapsed());
        // A reload the agent refused would also end in READY=1: check that
        // this one switched every table.
        let switched = rebuilds(&lb1) - before;
        assert_eq!(
            switched,
            u64::from(SERVICES),
            "the reload switched {switched} tables, not {SERVICES}; lb1's log:\n{}",
            lb1.log_tail(15)
        );
        heavy = !heavy;
        if let Some(rest) = RELOAD_EVERY.checked_sub(t.elapsed()) {
            std::thread::sleep(rest.min(WINDOW.saturating_sub(load_from.elapsed())));
        }
    }
    let load_to = Instant::now();
    run.store(false, Ordering::Relaxed);
    for t in loaders {
        let _ = t.join();
    }
    stop.store(true, Ordering::Relaxed);
    let adverts = adverts.join().expect("capture");
    let beats = beats.join().expect("heartbeat sampler");
    let after = (transitions(&lb1), transitions(&lb2));
    let own_gap = lb1.status().instances[0].longest_advert_gap_ms;

    let md = report(&Measured {
        adverts,
        beats,
        windows: [(idle_from, load_from), (load_from, load_to)],
        dead,
        transitions: (after.0 - before.0, after.1 - before.1),
        own_gap,
        scrapes: (
            scrapes.ok.load(Ordering::Relaxed),
            scrapes.failed.load(Ordering::Relaxed),
        ),
        reloads,
    });
    vip_tests::publish(&md);
    drop(lb1);
    drop(lb2);
}
