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
//!   paths whose output takes the same path again (known flow, not for us).
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

use std::{fmt::Write as _, net::Ipv4Addr};

use vip_agent::dataplane::Dataplane;
use vip_tests::{
    frames::{TCP_ACK, TCP_SYN},
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
    ];
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
    }
    rows
}

fn main() {
    vip_tests::programs::set_job(vip_tests::programs::Job::Bench);
    if !vip_tests::kit::is_root() {
        eprintln!("skipping: BPF_PROG_TEST_RUN needs root (run `cargo xtask bench`)");
        return;
    }
    // A private network namespace for the fixture's links; the program
    // sees test runs arrive on its `lo`.
    let rows = in_private_netns(|| measure(&mut Fixture::up().dp));
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
    println!("{md}");
    if let Some(path) = std::env::var_os("VIP_BENCH_REPORT") {
        std::fs::write(&path, &md).expect("write the report");
    }
}
