//! Tables at scale: the agent's own plan and apply code, writing the real
//! XDP program's maps (loaded in a private network namespace), for 16
//! services of 256 backends, the most a node takes.
//!
//! Measured, each over [`TRIALS`] trials, min / median / max:
//! - per table: the Maglev build (65 537 slots) and the switch (the idle
//!   half written, then the service flipped to it in one map update), each
//!   timed alone;
//! - the whole set: a reload that changes every service's weights, as the
//!   agent does it (plan, then apply: backends, 16 switches, VIPs, prune);
//! - the maps' memory, as the kernel charges it (`memlock` in each map's
//!   fdinfo).
//!
//! After each switch the live half is read back and compared with the
//! table built: what a packet sees is the whole new table or the whole old
//! one, never a mix. (Katran, for comparison, rewrites its one ring in
//! place, position by position.)
//!
//! Run with `cargo xtask bench`; the markdown goes to stdout and is appended
//! to `VIP_BENCH_REPORT` when set.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use vip_agent::{
    agent::{Ids, Plan, Resolved, Steering, apply, plan},
    config::Config,
    dataplane::Dataplane,
    net::Iface,
    store::MapStore as _,
};
use vip_common::maps::SPECS;
use vip_tests::{kit, xdp::in_private_netns};

const TRIALS: usize = 5;
const SERVICES: u16 = 16;
const BACKENDS: u16 = 256;
const MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x02];

/// 16 services on 10.99.0.100, ports 5672.., of 256 backends each in
/// 10.99.16.0/20; `heavy` doubles every other weight, so that each reload
/// changes every table.
fn config(heavy: bool) -> Config {
    let mut cfg = kit::config::at("lb1", std::path::Path::new("/nonexistent"), &[]);
    cfg.node.interface = "lo".into();
    cfg.services = (0..SERVICES)
        .map(|s| {
            let addrs: Vec<String> = (0..BACKENDS)
                .map(|b| {
                    let n = s * BACKENDS + b;
                    format!("10.99.{}.{}", 16 + n / 256, n % 256)
                })
                .collect();
            let backends: Vec<(&str, u32)> = addrs
                .iter()
                .enumerate()
                .map(|(i, a)| (a.as_str(), if heavy && i % 2 == 0 { 2 } else { 1 }))
                .collect();
            kit::config::service(kit::VIP, 5672 + s, &backends)
        })
        .collect();
    cfg
}

/// Every backend resolved on `lo`.
fn macs(cfg: &Config) -> BTreeMap<Ipv4Addr, Resolved> {
    cfg.services
        .iter()
        .flat_map(|s| &s.backends)
        .map(|b| {
            (
                b.address,
                Resolved {
                    ifindex: 1,
                    mac: [0x02, 0x99, 1, 0, 0, 1],
                    src_mac: MAC,
                    local: false,
                },
            )
        })
        .collect()
}

fn iface() -> Iface {
    Iface {
        index: 1,
        name: "lo".into(),
        mac: MAC,
        addrs: vec![(Ipv4Addr::new(10, 99, 0, 2), 16)],
    }
}

fn planned(cfg: &Config, ids: &mut Ids) -> Plan {
    ids.assign(cfg).expect("within the limits");
    let iface = iface();
    plan(
        cfg,
        ids,
        &iface,
        std::slice::from_ref(&iface),
        &macs(cfg),
        &BTreeMap::new(),
        &Steering::default(),
    )
}

/// One map's kernel accounting, from `/proc/self/fdinfo`.
struct MapInfo {
    name: &'static str,
    max_entries: u32,
    memlock: u64,
}

/// The memory of every map the program uses (matched to its spec by key
/// size, value size and entries).
fn maps_memory() -> Vec<MapInfo> {
    let mut out = Vec::new();
    for fd in std::fs::read_dir("/proc/self/fdinfo").expect("fdinfo") {
        let Ok(text) = std::fs::read_to_string(fd.expect("fd").path()) else {
            continue;
        };
        let field = |name: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        };
        let (Some(key), Some(value), Some(entries), Some(memlock)) = (
            field("key_size:"),
            field("value_size:"),
            field("max_entries:"),
            field("memlock:"),
        ) else {
            continue;
        };
        let spec = SPECS.iter().find(|s| {
            u64::from(s.key_size) == key
                && u64::from(s.max_entries) == entries
                && s.value_size.is_none_or(|v| u64::from(v) == value)
        });
        if let Some(spec) = spec
            && !out.iter().any(|m: &MapInfo| m.name == spec.name)
        {
            out.push(MapInfo {
                name: spec.name,
                max_entries: spec.max_entries,
                memlock,
            });
        }
    }
    out
}

/// Microseconds.
fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One trial's times, in microseconds.
#[expect(clippy::struct_field_names, reason = "each a time in microseconds")]
struct Trial {
    build_us: Vec<f64>,
    switch_us: Vec<f64>,
    reload_us: f64,
    first_us: f64,
}

fn trial(dp: &mut Dataplane) -> Trial {
    let mut ids = Ids::default();
    // The first provisioning: every backend and table written anew.
    let t0 = Instant::now();
    let first = planned(&config(false), &mut ids);
    apply(dp, None, &first).expect("apply");
    let first_us = us(t0.elapsed());

    // Each table alone: build, then switch; the live half read back.
    let (mut build_us, mut switch_us) = (Vec::new(), Vec::new());
    let heavy = planned(&config(true), &mut ids);
    for svc in &heavy.services {
        let t = Instant::now();
        let table = svc.table();
        build_us.push(us(t.elapsed()));
        let t = Instant::now();
        dp.switch_table(svc.key(), svc.id, svc.flags, &table)
            .expect("switch");
        switch_us.push(us(t.elapsed()));
        assert!(
            dp.live_table(&svc.key()).expect("live table") == table,
            "service {}: the live half is not the table just built",
            svc.port
        );
    }

    // The whole set, as a reload does it: plan, then apply over the old plan.
    let t0 = Instant::now();
    let light = planned(&config(false), &mut ids);
    let applied = apply(dp, Some(&heavy), &light).expect("apply");
    let reload_us = us(t0.elapsed());
    assert_eq!(
        applied.switched,
        u64::from(SERVICES),
        "every table switched"
    );
    Trial {
        build_us,
        switch_us,
        reload_us,
        first_us,
    }
}

fn spread(mut v: Vec<f64>, scale: f64) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "{:.2} / {:.2} / {:.2}",
        v[0] * scale,
        v[v.len() / 2] * scale,
        v[v.len() - 1] * scale
    )
}

fn main() {
    vip_tests::programs::set_job(vip_tests::programs::Job::Bench);
    if !kit::is_root() {
        eprintln!("skipping: the tables bench needs root (BPF maps): run `cargo xtask bench`");
        return;
    }
    let (trials, maps) = in_private_netns(|| {
        let mut dp = Dataplane::load(None, vip_agent::config::DEFAULT_FLOW_TABLE_SIZE)
            .expect("load the XDP object");
        let trials: Vec<Trial> = (0..TRIALS).map(|_| trial(&mut dp)).collect();
        (trials, maps_memory())
    });
    let all = |f: fn(&Trial) -> &Vec<f64>| -> Vec<f64> {
        trials.iter().flat_map(|t| f(t).iter().copied()).collect()
    };
    let per_table_total: Vec<f64> = trials
        .iter()
        .flat_map(|t| t.build_us.iter().zip(&t.switch_us).map(|(b, s)| b + s))
        .collect();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n# vip benchmark: tables at scale\n\n{SERVICES} services × {BACKENDS} backends, \
         Maglev tables of {} slots, the real program's maps in a private namespace, through \
         the agent's own plan and apply; {TRIALS} trials, min / median / max. Goal: build + \
         switch < 5 ms per table, atomic.\n",
        vip_common::LOOKUP_SIZE
    );
    let _ = writeln!(md, "| step | ms |\n|---|---|");
    let _ = writeln!(
        md,
        "| one table: Maglev build | {} |",
        spread(all(|t| &t.build_us), 1e-3)
    );
    let _ = writeln!(
        md,
        "| one table: switch (idle half written, service flipped in one update) | {} |",
        spread(all(|t| &t.switch_us), 1e-3)
    );
    let _ = writeln!(
        md,
        "| one table: build + switch | {} |",
        spread(per_table_total, 1e-3)
    );
    let _ = writeln!(
        md,
        "| reload of the whole set (plan + apply, {SERVICES} switches) | {} |",
        spread(trials.iter().map(|t| t.reload_us).collect(), 1e-3)
    );
    let _ = writeln!(
        md,
        "| first provisioning ({} backends and {SERVICES} tables written) | {} |",
        SERVICES * BACKENDS,
        spread(trials.iter().map(|t| t.first_us).collect(), 1e-3)
    );
    let total: u64 = maps.iter().map(|m| m.memlock).sum();
    #[expect(clippy::cast_precision_loss, reason = "bytes")]
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let _ = writeln!(
        md,
        "\nThe maps' memory (kernel `memlock`): {:.1} MiB in all.\n\n| map | entries | MiB |\n|---|---|---|",
        mib(total)
    );
    for m in &maps {
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} |",
            m.name,
            m.max_entries,
            mib(m.memlock)
        );
    }
    let _ = writeln!(
        md,
        "\nOne service of 1 000 backends is not measured: a service takes at most {} \
         (`MAX_BACKENDS_PER_SERVICE`), so that a {}-slot table keeps every backend within 1 % \
         of its share; 1 000 would need tables of about 100 003 slots or more.",
        vip_common::MAX_BACKENDS_PER_SERVICE,
        vip_common::LOOKUP_SIZE
    );
    vip_tests::publish(&md);
}
