//! Forwarding throughput on one core: the kernel as the traffic generator
//! (`BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`), the lab's kind of
//! link (a veth pair) as the wire.
//!
//! In live-frames mode the kernel runs the program over `repeat` frames built
//! from one input, as if they arrived on the veth `vr0`, and carries out each
//! verdict for real: `XDP_TX` sends the frame out of `vr0` to its peer `vr1`,
//! whose own XDP program drops it (`vip_drop`), and `XDP_PASS` hands it to
//! the stack, which builds an skb for it and drops it at the IP layer as
//! another host's (its destination MAC is not `vr0`'s). The call's wall time is the whole cost of the frames
//! on this core: the program, the transmit, and the receiving end.
//!
//! Three programs, the same frames, interleaved in each trial:
//! - **vip**: the load balancer (`vip_xdp`), provisioned by the agent's plan
//!   ([`Fixture`]); the flow table holds [`FLOWS`] established flows to a
//!   service whose backend is behind `vr0`, and each call sends frames of one
//!   of them (the calls go round the flows), so every frame is a known flow:
//!   the VIP, service and flow lookups, the MAC rewrite, the counters,
//!   `XDP_TX`;
//! - **minimal forwarder** (`vip_min_fwd`): backend 0's MACs written, `XDP_TX`
//!   — the least a forwarder does;
//! - **`XDP_PASS`** (`vip_pass`): every frame to the stack.
//!
//! The goal: vip forwards at least 80 % of the minimal forwarder's rate.
//! Run with `cargo xtask bench`.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use vip_common::counter;
use vip_tests::plot::{Bar, Tone, bars as bars_plot};
use vip_tests::{
    frames::{TCP_ACK, TCP_SYN},
    xdp::{Fixture, REMOTE_LINK, VIP, XDP_TX, in_private_netns, tcp_frame},
};

/// Established flows in the table.
const FLOWS: u16 = 10_000;
/// Frames per call.
const REPEAT: u32 = 50_000;
/// Calls per program and trial (each on another flow).
const CALLS: u16 = 40;
const TRIALS: usize = 5;
/// Frames the kernel builds and sends per batch.
const BATCH: u32 = 64;

#[derive(Clone, Copy, PartialEq)]
enum Prog {
    Vip,
    MinFwd,
    Pass,
}

impl Prog {
    const ALL: [Self; 3] = [Self::Vip, Self::MinFwd, Self::Pass];

    fn name(self) -> &'static str {
        match self {
            Self::Vip => "vip (known flow, XDP_TX)",
            Self::MinFwd => "minimal forwarder (MAC rewrite, XDP_TX)",
            Self::Pass => "XDP_PASS (to the stack)",
        }
    }

    fn program(self, fx: &mut Fixture) -> &mut Xdp {
        match self {
            Self::Vip => fx.dp.program(),
            Self::MinFwd => fx.dp.min_fwd_program(),
            Self::Pass => fx.dp.pass_program(),
        }
    }
}

/// The frame of flow `i`: client port `20 000 + i` to the service on
/// [`VIP`]:[`REMOTE_LINK`], whose backend is reached through `vr0`.
fn frame(i: u16, flags: u8) -> Vec<u8> {
    tcp_frame(VIP, 20_000 + i, REMOTE_LINK, flags, &[0; 18])
}

/// `struct xdp_md` for a frame of `len` bytes arriving on `ifindex`.
fn xdp_md(len: usize, ifindex: u32) -> Vec<u8> {
    let len = u32::try_from(len).expect("a small frame");
    // data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
    [0, len, 0, ifindex, 0, 0]
        .iter()
        .flat_map(|v: &u32| v.to_ne_bytes())
        .collect()
}

/// Sends [`CALLS`] x [`REPEAT`] live frames through `prog`; returns frames
/// per second (wall time of the calls).
fn live(fx: &mut Fixture, prog: Prog, ifindex: u32, first_flow: u16) -> f64 {
    let before = fx.dp.counters().expect("counters")[counter::FWD_TX as usize];
    let mut busy = Duration::ZERO;
    for c in 0..CALLS {
        let f = frame((first_flow + c * 250) % FLOWS, TCP_ACK);
        let ctx = xdp_md(f.len(), ifindex);
        let p = prog.program(fx);
        let t0 = Instant::now();
        p.test_run(TestRunOptions {
            data_in: Some(&f),
            ctx_in: Some(&ctx),
            repeat: REPEAT,
            attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
            ..Default::default()
        })
        .expect("live-frames test run");
        busy += t0.elapsed();
    }
    let frames = u64::from(CALLS) * u64::from(REPEAT);
    if prog == Prog::Vip {
        // Every frame went the known-flow way and out of vr0.
        let after = fx.dp.counters().expect("counters")[counter::FWD_TX as usize];
        assert_eq!(after - before, frames, "vip's fwd_tx counter");
    }
    #[expect(clippy::cast_precision_loss, reason = "frame counts")]
    let rate = frames as f64 / busy.as_secs_f64();
    rate
}

fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).expect("name");
    // SAFETY: a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name}");
    i
}

/// Per program, Mpps of each trial.
fn measure() -> Vec<(Prog, Vec<f64>)> {
    let mut fx = Fixture::up();
    let vr0 = ifindex("vr0");
    // The receiving end drops in XDP, and gives vr0's transmits a NAPI to
    // land in (a veth takes XDP frames only when its peer has XDP).
    fx.dp
        .drop_program()
        .attach("vr1", XdpMode::Driver)
        .expect("attach vip_drop to vr1");
    // The flows, placed by the program itself: one SYN each.
    for i in 0..FLOWS {
        let f = frame(i, TCP_SYN);
        let ctx = xdp_md(f.len(), vr0);
        let r = fx
            .dp
            .program()
            .test_run(TestRunOptions {
                data_in: Some(&f),
                ctx_in: Some(&ctx),
                repeat: 1,
                ..Default::default()
            })
            .expect("test run");
        assert_eq!(
            r.return_value, XDP_TX,
            "flow {i} placed and sent out of vr0"
        );
    }
    vip_tests::xdp::pin_to_cpu(std::thread::available_parallelism().map_or(0, |n| n.get() - 1));
    let mut rates: Vec<(Prog, Vec<f64>)> = Prog::ALL.iter().map(|p| (*p, Vec::new())).collect();
    for t in 0..TRIALS {
        for (prog, v) in &mut rates {
            let first = u16::try_from(t).expect("few trials");
            v.push(live(&mut fx, *prog, vr0, first) / 1e6);
        }
    }
    rates
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (s[0], s[s.len() / 2], s[s.len() - 1])
}

fn main() {
    vip_tests::programs::set_job(vip_tests::programs::Job::Bench);
    if !vip_tests::kit::is_root() {
        eprintln!("skipping: live-frames test runs need root (run `cargo xtask bench`)");
        return;
    }
    let rates = in_private_netns(measure);
    let median = |p: Prog| stats(&rates.iter().find(|r| r.0 == p).expect("measured").1).1;
    let fwd = median(Prog::MinFwd);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n# vip benchmark: forwarding throughput on one core (XDP live frames)\n\n\
         Machine: {}. `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES` as the traffic \
         generator, on veth `vr0` (native XDP), its peer `vr1` dropping in XDP; the bench \
         thread pinned to one CPU, where the kernel also runs the peer's receive. \
         {FLOWS} established flows in vip's table; {TRIALS} trials, each {CALLS} calls x \
         {REPEAT} 64-byte-class frames (72 bytes: a TCP segment with 18 bytes of payload) per \
         program, one flow per call, batches of {BATCH}. Mpps = frames / wall time of the \
         calls; min / median / max over trials.\n",
        vip_tests::machine_summary()
    );
    let _ = writeln!(
        md,
        "| program | Mpps (min / med / max) | of the minimal forwarder (medians) |\n|---|---|---|"
    );
    for (prog, v) in &rates {
        let (a, b, c) = stats(v);
        let _ = writeln!(
            md,
            "| {} | {a:.2} / {b:.2} / {c:.2} | {:.0} % |",
            prog.name(),
            b / fwd * 100.0
        );
    }
    let share = median(Prog::Vip) / fwd;
    let _ = writeln!(
        md,
        "\nGoal: vip at least 80 % of the minimal forwarder: {} ({:.0} %).",
        if share >= 0.8 { "met" } else { "missed" },
        share * 100.0
    );
    let bars: Vec<Bar> = rates
        .iter()
        .map(|(prog, v)| {
            let (min, med, max) = stats(v);
            Bar {
                label: prog.name().to_owned(),
                tone: if *prog == Prog::Vip {
                    Tone::Vip
                } else {
                    Tone::Baseline
                },
                min,
                med,
                max,
            }
        })
        .collect();
    md.push_str(&bars_plot(
        "throughput.svg",
        "Forwarding on one core, XDP live frames over veth",
        "Mpps (bar: median; whisker: min to max)",
        &bars,
    ));
    vip_tests::publish(&md);
}
