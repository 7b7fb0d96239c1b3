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
//! min / median / max are over trials. Run with `cargo xtask bench`.
#![allow(
    clippy::too_many_lines,
    reason = "scenario tests read best as one story"
)]

use std::{fmt::Write as _, net::Ipv4Addr, time::Duration};

use aya::programs::{TestRun as _, TestRunOptions};
use vip_agent::{dataplane::Dataplane, maglev};
use vip_common::{BACKEND_ENABLED, Backend, LOOKUP_SIZE, NO_BACKEND, Proto, ServiceKey, VipState};
use vip_tests::frames::{ETH_P_ARP, ETH_P_IPV4, Ipv4, TCP_ACK, TCP_SYN, arp, ethernet, tcp};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);
const LB_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x02];
const CLIENT_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x0a];
const TRIALS: usize = 7;
const SINGLE_CALLS: u16 = 3000;
const REPEAT: u32 = 100_000;

fn setup() -> Dataplane {
    let mut dp = Dataplane::load(None).expect("load the XDP object (needs root)");
    dp.set_vip(
        VIP,
        VipState {
            mac: LB_MAC,
            active: 1,
            _pad: 0,
        },
    )
    .unwrap();
    let addrs: Vec<[u8; 4]> = (11..=13).map(|i| [10, 99, 0, i]).collect();
    for (i, a) in addrs.iter().enumerate() {
        dp.set_backend(
            u32::try_from(i).unwrap(),
            &Backend {
                addr: u32::from_ne_bytes(*a),
                ifindex: 1,
                mac: [0x02, 0x99, 0, 0, 0, a[3]],
                src_mac: LB_MAC,
                flags: BACKEND_ENABLED,
                service: 0,
            },
        )
        .unwrap();
    }
    let entries: Vec<maglev::Entry<'_>> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| maglev::Entry {
            identity: a,
            weight: 1,
            id: u32::try_from(i).unwrap(),
        })
        .collect();
    let key = ServiceKey::new(VIP.octets(), 5672, Proto::Tcp);
    dp.switch_table(key, 0, 0, &maglev::build(&entries, LOOKUP_SIZE, NO_BACKEND))
        .unwrap();
    dp.stamp(Duration::from_hours(1)).unwrap();
    dp
}

fn syn(sport: u16, dst: Ipv4Addr, flags: u8) -> Vec<u8> {
    let seg = tcp(CLIENT, dst, sport, 5672, flags, &[]);
    ethernet(
        LB_MAC,
        CLIENT_MAC,
        None,
        ETH_P_IPV4,
        &Ipv4::new(CLIENT, dst, 6).packet(&seg),
    )
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
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(&f),
                data_out: Some(&mut out),
                repeat: 1,
                ..Default::default()
            })
            .expect("test run");
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
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat: REPEAT,
                ..Default::default()
            })
            .expect("test run");
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

fn main() {
    vip_tests::programs::set_job(vip_tests::programs::Job::Bench);
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: BPF_PROG_TEST_RUN needs root (run `cargo xtask bench`)");
        return;
    }
    let mut dp = setup();
    let arp_req = ethernet(
        [0xff; 6],
        CLIENT_MAC,
        None,
        ETH_P_ARP,
        &arp(1, CLIENT_MAC, CLIENT, [0; 6], VIP),
    );
    let known = syn(50_000, VIP, TCP_ACK);
    let not_for_us = syn(50_001, Ipv4Addr::new(10, 99, 0, 50), TCP_SYN);
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
            .push(single(&mut dp, Prog::Vip, &mut |_| arp_req.clone(), 3));
        rows[0]
            .pass
            .push(single(&mut dp, Prog::Pass, &mut |_| arp_req.clone(), 2));
        // A fresh source port per call: every call creates a flow. The LRU
        // flow table holds 65 536 entries; ports wrap below that.
        let base = port_base;
        rows[1].vip.push(single(
            &mut dp,
            Prog::Vip,
            &mut |i| {
                syn(
                    u16::try_from((base + u32::from(i)) % 60_000 + 1024).unwrap(),
                    VIP,
                    TCP_SYN,
                )
            },
            3,
        ));
        rows[1].pass.push(single(
            &mut dp,
            Prog::Pass,
            &mut |i| {
                syn(
                    u16::try_from((base + u32::from(i)) % 60_000 + 1024).unwrap(),
                    VIP,
                    TCP_SYN,
                )
            },
            2,
        ));
        port_base += u32::from(SINGLE_CALLS);
        // Seed the known flow, then time it.
        single(&mut dp, Prog::Vip, &mut |_| known.clone(), 3);
        rows[2]
            .vip
            .push(single(&mut dp, Prog::Vip, &mut |_| known.clone(), 3));
        rows[2]
            .pass
            .push(single(&mut dp, Prog::Pass, &mut |_| known.clone(), 2));
        rows[3]
            .vip
            .push(single(&mut dp, Prog::Vip, &mut |_| not_for_us.clone(), 2));
        rows[3]
            .pass
            .push(single(&mut dp, Prog::Pass, &mut |_| not_for_us.clone(), 2));
        rows[4].vip.push(repeated(&mut dp, Prog::Vip, &known, 3));
        rows[4].pass.push(repeated(&mut dp, Prog::Pass, &known, 2));
        rows[5]
            .vip
            .push(repeated(&mut dp, Prog::Vip, &not_for_us, 2));
        rows[5]
            .pass
            .push(repeated(&mut dp, Prog::Pass, &not_for_us, 2));
    }
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
