//! Per-packet cost of the XDP program through `BPF_PROG_TEST_RUN`, beside a
//! trivial `XDP_PASS` program measured in the same run.
//!
//! Two methods, both reported:
//! - **single**: `repeat = 1` per call, a fresh input each call, and the
//!   kernel's own per-run duration (ns) — the only honest way to time paths
//!   that rewrite the frame (ARP reply: a repeated run would see its own reply)
//!   or that change state (new flow: a repeated run would hit the flow). The
//!   kernel's timer overhead is in every figure, baseline included.
//! - **repeat**: `repeat = 100 000` on one frame, the kernel's mean — only for
//!   paths whose output takes the same path again (known flow, not for us,
//!   and a SYN: a SYN is always placed by the table and written to the flow
//!   table, so each repeat does a new flow's work on a warm cache, the entry
//!   replacing the last repeat's).
//!
//! Then a profile: `perf record` (the `cpu-clock` software event: a VM has
//! no hardware counters, so no `bpftool prog profile`) samples the one CPU
//! that runs the known-flow and the SYN repeats, and the report lists where
//! their time goes, the program's own code and each kernel function it
//! calls, as shares of the measured ns per packet.
//!
//! Each figure is the median of its calls; a trial measures every path, and
//! min / median / max are over trials. The program and its maps are the XDP
//! tests' fixture ([`vip_tests::xdp::Fixture`], provisioned by the agent's
//! plan and apply), in a private network namespace. Run with
//! `cargo xtask bench`.
#![allow(
    clippy::too_many_lines,
    reason = "scenario tests read best as one story"
)]

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    process::Stdio,
    time::{Duration, Instant},
};

use vip_agent::dataplane::Dataplane;
use vip_tests::{
    frames::{TCP_ACK, TCP_SYN},
    plot::{Bar, Tone},
    programs::command,
    xdp::{
        AMQP, Fixture, OTHER, VIP, XDP_PASS, XDP_TX, arp_request, in_private_netns, tcp_frame,
        test_run,
    },
};

const TRIALS: usize = 7;
const SINGLE_CALLS: u16 = 3000;
const REPEAT: u32 = 100_000;

/// A TCP segment from the client to `dst`:[`AMQP`] (a service on [`VIP`]).
fn syn(sport: u16, dst: Ipv4Addr, flags: u8) -> Vec<u8> {
    tcp_frame(dst, sport, AMQP, flags, &[])
}

#[derive(Clone, Copy, PartialEq)]
enum Prog {
    Vip,
    Pass,
}

/// Median kernel-reported ns per run over `frames` (one call each).
fn single(
    dp: &mut Dataplane,
    prog: Prog,
    frames: &mut dyn FnMut(u16) -> Vec<u8>,
    expect: u32,
) -> f64 {
    let mut ns: Vec<u128> = Vec::with_capacity(usize::from(SINGLE_CALLS));
    let mut out = vec![0u8; 256];
    for i in 0..SINGLE_CALLS {
        let f = frames(i);
        let p = match prog {
            Prog::Vip => dp.program(),
            Prog::Pass => dp.pass_program(),
        };
        let r = test_run(p, &f, &mut out, 1).expect("test run");
        assert_eq!(r.return_value, expect, "unexpected verdict while timing");
        ns.push(r.duration.as_nanos());
    }
    ns.sort_unstable();
    #[expect(clippy::cast_precision_loss, reason = "nanoseconds")]
    let m = ns[ns.len() / 2] as f64;
    m
}

/// Kernel mean ns per run with `repeat` runs of one frame (median of 5 calls).
fn repeated(dp: &mut Dataplane, prog: Prog, frame: &[u8], expect: u32) -> f64 {
    let mut v = Vec::new();
    let mut out = vec![0u8; 256];
    for _ in 0..5 {
        let p = match prog {
            Prog::Vip => dp.program(),
            Prog::Pass => dp.pass_program(),
        };
        let r = test_run(p, frame, &mut out, REPEAT).expect("test run");
        assert_eq!(r.return_value, expect, "unexpected verdict while timing");
        v.push(r.duration.as_secs_f64() * 1e9);
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Row {
    path: &'static str,
    method: &'static str,
    vip: Vec<f64>,
    pass: Vec<f64>,
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (s[0], s[s.len() / 2], s[s.len() - 1])
}

/// Every path, [`TRIALS`] times.
fn measure(dp: &mut Dataplane) -> Vec<Row> {
    let arp_req = arp_request(VIP);
    let known = syn(50_000, VIP, TCP_ACK);
    let not_for_us = syn(50_001, OTHER, TCP_SYN);
    let mut rows = vec![
        Row {
            path: "ARP reply",
            method: "single",
            vip: vec![],
            pass: vec![],
        },
        Row {
            path: "new flow (SYN, Maglev pick, flow insert)",
            method: "single",
            vip: vec![],
            pass: vec![],
        },
        Row {
            path: "known flow",
            method: "single",
            vip: vec![],
            pass: vec![],
        },
        Row {
            path: "not for us (pass)",
            method: "single",
            vip: vec![],
            pass: vec![],
        },
        Row {
            path: "known flow",
            method: "repeat",
            vip: vec![],
            pass: vec![],
        },
        Row {
            path: "not for us (pass)",
            method: "repeat",
            vip: vec![],
            pass: vec![],
        },
        Row {
            path: "SYN (Maglev pick, flow written)",
            method: "repeat",
            vip: vec![],
            pass: vec![],
        },
    ];
    let new_conn = syn(50_002, VIP, TCP_SYN);
    let mut port_base: u32 = 1000;
    for _ in 0..TRIALS {
        rows[0]
            .vip
            .push(single(dp, Prog::Vip, &mut |_| arp_req.clone(), XDP_TX));
        rows[0]
            .pass
            .push(single(dp, Prog::Pass, &mut |_| arp_req.clone(), XDP_PASS));
        // A fresh source port per call: every call creates a flow. The LRU
        // flow table holds 65 536 entries; ports wrap below that.
        let base = port_base;
        rows[1].vip.push(single(
            dp,
            Prog::Vip,
            &mut |i| {
                syn(
                    u16::try_from((base + u32::from(i)) % 60_000 + 1024).unwrap(),
                    VIP,
                    TCP_SYN,
                )
            },
            XDP_TX,
        ));
        rows[1].pass.push(single(
            dp,
            Prog::Pass,
            &mut |i| {
                syn(
                    u16::try_from((base + u32::from(i)) % 60_000 + 1024).unwrap(),
                    VIP,
                    TCP_SYN,
                )
            },
            XDP_PASS,
        ));
        port_base += u32::from(SINGLE_CALLS);
        // Seed the known flow, then time it.
        single(dp, Prog::Vip, &mut |_| known.clone(), XDP_TX);
        rows[2]
            .vip
            .push(single(dp, Prog::Vip, &mut |_| known.clone(), XDP_TX));
        rows[2]
            .pass
            .push(single(dp, Prog::Pass, &mut |_| known.clone(), XDP_PASS));
        rows[3]
            .vip
            .push(single(dp, Prog::Vip, &mut |_| not_for_us.clone(), XDP_PASS));
        rows[3].pass.push(single(
            dp,
            Prog::Pass,
            &mut |_| not_for_us.clone(),
            XDP_PASS,
        ));
        rows[4].vip.push(repeated(dp, Prog::Vip, &known, XDP_TX));
        rows[4]
            .pass
            .push(repeated(dp, Prog::Pass, &known, XDP_PASS));
        rows[5]
            .vip
            .push(repeated(dp, Prog::Vip, &not_for_us, XDP_PASS));
        rows[5]
            .pass
            .push(repeated(dp, Prog::Pass, &not_for_us, XDP_PASS));
        rows[6].vip.push(repeated(dp, Prog::Vip, &new_conn, XDP_TX));
        rows[6]
            .pass
            .push(repeated(dp, Prog::Pass, &new_conn, XDP_PASS));
    }
    rows
}

/// One profiled path: the share of each symbol in the samples of the CPU
/// that ran it.
struct Profile {
    path: &'static str,
    ns: f64,
    samples: u64,
    /// (symbol, share of the samples), largest first.
    top: Vec<(String, f64)>,
}

/// How long each profile records.
const PROFILE_FOR: Duration = Duration::from_secs(2);

/// Runs `frame` through the program in repeat mode on the last CPU while
/// `perf record` samples that CPU, and reads where the time went.
fn profile(dp: &mut Dataplane, path: &'static str, frame: &[u8], ns: f64) -> Profile {
    let cpu = std::thread::available_parallelism().map_or(0, |n| n.get() - 1);
    vip_tests::xdp::pin_to_cpu(cpu);
    let data = std::env::temp_dir().join(format!("vip-xdp-profile-{}.data", std::process::id()));
    let mut rec = command("perf")
        .expect("perf is declared for the bench")
        .args(["record", "-q", "-e", "cpu-clock", "-F", "20000", "-C"])
        .arg(cpu.to_string())
        .arg("-o")
        .arg(&data)
        .args(["--", "sleep"])
        .arg(PROFILE_FOR.as_secs().to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("start perf record");
    // Bounded: perf stops by itself after PROFILE_FOR; the loop stops when
    // it has, or at twice that.
    let deadline = Instant::now() + PROFILE_FOR * 2;
    let mut out = vec![0u8; 256];
    while rec.try_wait().expect("perf record").is_none() && Instant::now() < deadline {
        test_run(dp.program(), frame, &mut out, REPEAT).expect("test run");
    }
    let status = rec.wait().expect("perf record");
    assert!(status.success(), "perf record failed: {status}");
    let report = command("perf")
        .expect("perf is declared for the bench")
        .args([
            "report",
            "--stdio",
            "-q",
            "--sort",
            "sym",
            "-F",
            "sample,sym",
            "-i",
        ])
        .arg(&data)
        .output()
        .expect("perf report");
    let _ = std::fs::remove_file(&data);
    assert!(report.status.success(), "perf report failed");
    let text = String::from_utf8_lossy(&report.stdout);
    let mut rows: Vec<(String, u64)> = text
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let n: u64 = w.next()?.parse().ok()?;
            let _kind = w.next()?;
            Some((w.collect::<Vec<_>>().join(" "), n))
        })
        // The CPU's idle loop is not the program's time.
        .filter(|(sym, _)| !sym.contains("safe_halt") && !sym.contains("idle"))
        .collect();
    let samples: u64 = rows.iter().map(|r| r.1).sum();
    assert!(samples > 1000, "perf took {samples} samples of CPU {cpu}");
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    #[expect(clippy::cast_precision_loss, reason = "sample counts")]
    let top = rows
        .into_iter()
        .take(8)
        .map(|(sym, n)| (program_name(&sym), n as f64 / samples as f64))
        .collect();
    Profile {
        path,
        ns,
        samples,
        top,
    }
}

/// `bpf_prog_<tag>_vip_xdp` is the program's own JIT-ed code.
fn program_name(sym: &str) -> String {
    if sym.starts_with("bpf_prog_") && sym.ends_with("_vip_xdp") {
        "vip_xdp (the program's own code)".into()
    } else {
        sym.to_owned()
    }
}

fn main() {
    vip_tests::programs::set_job(vip_tests::programs::Job::Bench);
    if !vip_tests::kit::is_root() {
        eprintln!("skipping: BPF_PROG_TEST_RUN needs root (run `cargo xtask bench`)");
        return;
    }
    // A private network namespace for the fixture's links; the program
    // sees test runs arrive on its `lo`.
    let (rows, profiles) = in_private_netns(|| {
        let mut fx = Fixture::up();
        let rows = measure(&mut fx.dp);
        let med = |i: usize| stats(&rows[i].vip).1;
        let known = syn(50_000, VIP, TCP_ACK);
        let new_conn = syn(50_003, VIP, TCP_SYN);
        let profiles = vec![
            profile(&mut fx.dp, "known flow", &known, med(4)),
            profile(&mut fx.dp, "SYN", &new_conn, med(6)),
        ];
        (rows, profiles)
    });
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# vip benchmark: XDP per-packet cost (BPF_PROG_TEST_RUN)\n"
    );
    let _ = writeln!(
        md,
        "Machine: {}; program run by BPF_PROG_TEST_RUN (no device, so no XDP mode applies).",
        vip_tests::machine_summary()
    );
    let _ = writeln!(
        md,
        "Baseline: `vip_pass` (returns XDP_PASS), same frames, same run. `single` = median of {SINGLE_CALLS} calls with repeat 1 (kernel-timed, includes the kernel's timer overhead); `repeat` = kernel mean over {REPEAT} repeats. min / median / max over {TRIALS} trials.\n"
    );
    let _ = writeln!(
        md,
        "| path | method | vip ns (min / med / max) | XDP_PASS ns (min / med / max) | ratio (medians) | extra ns |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for r in &rows {
        let (a0, a1, a2) = stats(&r.vip);
        let (b0, b1, b2) = stats(&r.pass);
        let _ = writeln!(
            md,
            "| {} | {} | {a0:.1} / {a1:.1} / {a2:.1} | {b0:.1} / {b1:.1} / {b2:.1} | {:.2} | {:.1} |",
            r.path,
            r.method,
            a1 / b1,
            a1 - b1
        );
    }
    let mut bars = Vec::new();
    for r in &rows {
        for (who, v, tone) in [
            ("vip", &r.vip, Tone::Vip),
            ("XDP_PASS", &r.pass, Tone::Baseline),
        ] {
            let (min, med, max) = stats(v);
            bars.push(Bar {
                label: format!("{}, {}: {who}", r.path, r.method),
                tone,
                min,
                med,
                max,
            });
        }
    }
    md.push_str(&vip_tests::plot::bars(
        "xdp-per-packet.svg",
        "XDP per-packet cost (BPF_PROG_TEST_RUN)",
        "ns per packet (bar: median; whisker: min to max)",
        &bars,
    ));
    let _ = writeln!(
        md,
        "\nWhere the time goes (repeat mode, `perf record -e cpu-clock` on the CPU that runs it, {} s each; share of its non-idle samples, and that share of the measured ns per packet; the kernel's test-run loop is in it too):\n",
        PROFILE_FOR.as_secs()
    );
    for p in &profiles {
        let _ = writeln!(
            md,
            "| {} ({:.1} ns, {} samples) | share | ns |",
            p.path, p.ns, p.samples
        );
        let _ = writeln!(md, "|---|---|---|");
        for (sym, share) in &p.top {
            let _ = writeln!(
                md,
                "| {sym} | {:.1} % | {:.1} |",
                share * 100.0,
                share * p.ns
            );
        }
        let _ = writeln!(md);
    }
    println!("{md}");
    if let Some(path) = std::env::var_os("VIP_BENCH_REPORT") {
        std::fs::write(&path, &md).expect("write the report");
    }
}
