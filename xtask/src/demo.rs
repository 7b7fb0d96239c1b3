//! `cargo xtask run --quick` (the plain-TCP demo) and `cargo xtask lab
//! up|down|status`; the `RabbitMQ` demo is `cluster_demo`.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use vip_tests::lab::{
    Lab, LabOptions, PERSISTENT_PREFIX, STATE_DIR, VIP, agent_config as config, format_mac,
};

/// A vip-agent child; `SIGTERMed` (clean shutdown) when dropped.
pub(crate) struct AgentProc(pub(crate) Option<Child>, PathBuf);

impl Drop for AgentProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            if let Ok(pid) = i32::try_from(c.id()) {
                // SAFETY: signalling our own child by PID.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let _ = c.wait();
        }
        if let Ok(c) = std::ffi::CString::new(self.1.as_os_str().as_encoded_bytes()) {
            // SAFETY: unmounting the bpffs this demo made.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

fn connect_many(n: u32) -> (BTreeMap<String, u32>, u32, Vec<TcpStream>) {
    let mut counts = BTreeMap::new();
    let mut failed = 0;
    let mut keep = Vec::new();
    for i in 0..n {
        let answer =
            TcpStream::connect_timeout(&SocketAddr::from((VIP, 5672)), Duration::from_secs(2))
                .and_then(|s| {
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    let mut line = String::new();
                    BufReader::new(s.try_clone()?).read_line(&mut line)?;
                    Ok((line.trim().to_owned(), s))
                });
        match answer {
            Ok((who, s)) => {
                *counts.entry(who).or_default() += 1;
                if i < 6 {
                    keep.push(s);
                }
            }
            Err(_) => failed += 1,
        }
    }
    (counts, failed, keep)
}

pub(crate) fn show(title: &str, text: &str) {
    println!("\n== {title}");
    for line in text.lines() {
        println!("   {line}");
    }
}

pub(crate) fn vipctl(bins: &Path, bpffs: &Path, args: &[&str]) -> Result<String> {
    let out = vip_tests::programs::command(bins.join("vipctl"))?
        .arg("--bpffs")
        .arg(bpffs)
        .args(args)
        .output()
        .context("run vipctl")?;
    if !out.status.success() {
        bail!("vipctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts vip-agent on `node` with `cfg` and waits until its XDP link is pinned.
pub(crate) fn start_agent(
    lab: &Lab,
    bins: &Path,
    node: &str,
    cfg: &Path,
    bpffs: &Path,
) -> Result<AgentProc> {
    let mut cmd = vip_tests::programs::command(bins.join("vip-agent"))?;
    cmd.arg("--config").arg(cfg).stdout(Stdio::null());
    let child = lab.spawn_unmanaged(node, cmd)?;
    let mut agent = AgentProc(Some(child), bpffs.to_owned());
    let link = bpffs.join(format!("vip/{node}/link"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !link.exists() {
        if let Some(st) = agent.0.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            bail!("vip-agent on {node} exited with {st}");
        }
        if Instant::now() > deadline {
            bail!("vip-agent on {node} did not attach XDP within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(agent)
}

pub(crate) fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// The quick demo (`cargo xtask run --quick`, no `RabbitMQ` needed): two
/// load balancers running VRRP with 10 ms adverts in front of three plain
/// TCP backends; traffic, tables, counters; then the master's
/// agent is killed (-9) while a client probes and holds connections open,
/// and the measured gap is printed. The lab is removed at the end.
#[expect(
    clippy::too_many_lines,
    reason = "a linear script; each step prints its result"
)]
pub fn run(bins: &Path) -> Result<()> {
    let t0 = Instant::now();
    let mut opts = LabOptions::unique("demo");
    opts.backend_bin = bins.join("vip-lab-backend");
    let lab = Lab::up(opts).context("bring up the lab")?;
    let (lb1_mac, lb2_mac) = (format_mac(lab.mac("lb1")), format_mac(lab.mac("lb2")));
    println!(
        "lab {} up in {:?}: client 10.99.0.10, lb1 10.99.0.2 ({lb1_mac}), lb2 10.99.0.3 ({lb2_mac}), backends b1..b3 10.99.0.11-13, VIP {VIP}",
        lab.prefix(),
        lab.setup_time(),
    );
    let dir = PathBuf::from(format!("/run/vip-demo/{}", lab.prefix()));
    std::fs::create_dir_all(&dir)?;
    let backends = [("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)];
    let mut agents = Vec::new();
    for (node, prio) in [("lb1", 150), ("lb2", 100)] {
        let bpffs = dir.join(format!("{node}-bpffs"));
        let cfg = dir.join(format!("{node}.toml"));
        let vrrp = format!(
            "\n[[vrrp]]\nname = \"VI_1\"\nvrid = 51\npriority = {prio}\nadvert_interval = \"10ms\"\nvips = [\"{VIP}\"]\n"
        );
        std::fs::write(&cfg, config(node, &bpffs, &backends) + &vrrp)?;
        if node == "lb1" {
            show(
                "lb1's configuration (lb2's differs only in name, pins and priority 100)",
                &std::fs::read_to_string(&cfg)?,
            );
        }
        agents.push((start_agent(&lab, bins, node, &cfg, &bpffs)?, bpffs));
    }
    let (lb1_pins, lb2_pins) = (agents[0].1.clone(), agents[1].1.clone());
    wait_until("lb1 to win the election", Duration::from_secs(5), || {
        vipctl(bins, &lb1_pins, &["vips"]).is_ok_and(|o| o.contains("master"))
            && vipctl(bins, &lb2_pins, &["vips"]).is_ok_and(|o| o.contains("backup"))
    })?;
    let status = |pins: &Path, node: &str| {
        let sock = vip_tests::lab::control_socket(node, pins);
        vipctl(
            bins,
            pins,
            &["--socket", &sock.display().to_string(), "status"],
        )
    };
    show("vipctl status on lb1", &status(&lb1_pins, "lb1")?);
    show("vipctl status on lb2", &status(&lb2_pins, "lb2")?);

    let (counts, failed, mut open) = lab.run_in("client", || connect_many(600));
    show(
        "600 connections from the client to VIP:5672 (who answered)",
        &format!("{counts:?}, failed: {failed}"),
    );
    let neigh = lab.ns("client").ip(&["neigh", "show", &VIP.to_string()])?;
    show(
        "the client's ARP entry for the VIP (answered by XDP on lb1)",
        &neigh,
    );
    let ping = lab
        .ns("client")
        .run(
            "ping",
            &["-c", "3", "-i", "0.2", "-W", "1", &VIP.to_string()],
        )
        .unwrap_or_else(|e| format!("{e:#}"));
    let ping: Vec<&str> = ping
        .lines()
        .filter(|l| l.contains("bytes from") || l.contains("packet loss") || l.contains("failed"))
        .collect();
    show(
        "ping the VIP from the client (echo answered by XDP on lb1)",
        &ping.join("\n"),
    );
    show(
        "vipctl table 10.99.0.100:5672 (lb2 builds the same table)",
        &vipctl(bins, &lb1_pins, &["table", "10.99.0.100:5672"])?,
    );
    show(
        "vipctl backends on lb1",
        &vipctl(bins, &lb1_pins, &["backends"])?,
    );

    // Failover: kill -9 lb1's agent while a client probes every 2 ms and six
    // connections stay open.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_probe = std::sync::Arc::clone(&stop);
    let prober = lab.spawn_thread_in("client", move || {
        let mut ok = Vec::new();
        let end = Instant::now() + Duration::from_secs(20);
        while !stop_probe.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
            if TcpStream::connect_timeout(&SocketAddr::from((VIP, 5672)), Duration::from_millis(50))
                .is_ok()
            {
                ok.push(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        ok
    });
    std::thread::sleep(Duration::from_millis(300));
    let fault = Instant::now();
    if let Some(mut c) = agents[0].0.0.take() {
        c.kill()?;
        c.wait()?;
    }
    wait_until(
        "the client's ARP entry to name lb2",
        Duration::from_secs(5),
        || {
            lab.ns("client")
                .ip(&["neigh", "show", &VIP.to_string()])
                .is_ok_and(|n| n.contains(&lb2_mac))
        },
    )?;
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ok = prober
        .join()
        .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?;
    let before = ok.iter().rev().find(|t| **t <= fault).copied();
    let after = ok.iter().find(|t| **t > fault).copied();
    let gap = match (before, after) {
        (Some(b), Some(a)) => format!("{:.1} ms", (a - b).as_secs_f64() * 1e3),
        _ => "unmeasured (the probe did not resume)".into(),
    };
    let answers = lab.run_in("client", move || {
        let mut r = Vec::new();
        for s in &mut open {
            let _ = s.write_all(b"still there?\n");
            let mut reply = String::new();
            let ok = BufReader::new(s.try_clone().expect("clone"))
                .read_line(&mut reply)
                .is_ok_and(|n| n > 0);
            r.push(if ok {
                reply.trim().to_owned()
            } else {
                "lost".into()
            });
        }
        r
    });
    show(
        "kill -9 of lb1's agent while the client probes VIP:5672 every 2 ms",
        &format!(
            "longest gap between answered connects: {gap} ({} connects answered)\n\
             connections opened through lb1 before the kill, asked again through lb2: {answers:?}",
            ok.len()
        ),
    );
    show("vipctl status on lb2", &status(&lb2_pins, "lb2")?);
    show(
        "vipctl vips on lb1 (its agent is dead: pins remain, heartbeat stale)",
        &vipctl(bins, &lb1_pins, &["vips"])?,
    );
    show("vipctl stats on lb2", &vipctl(bins, &lb2_pins, &["stats"])?);
    drop(agents);
    println!(
        "\nagents stopped, lab removed. Demo took {:?}.",
        t0.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = dir.parent().map(std::fs::remove_dir);
    Ok(())
}

pub fn lab_up(bins: &Path) -> Result<()> {
    let mut opts = LabOptions::persistent();
    opts.backend_bin = bins.join("vip-lab-backend");
    // The backends outlive this command: they must not hold its terminal or pipe.
    opts.log_dir = Some(PathBuf::from(STATE_DIR).join("logs"));
    let lab = Lab::up(opts)?;
    let status = lab.status();
    let bpffs = PathBuf::from(STATE_DIR).join("bpffs");
    let cfg = PathBuf::from(STATE_DIR).join("lb1.toml");
    std::fs::create_dir_all(STATE_DIR)?;
    std::fs::write(
        &cfg,
        config(
            "lb1",
            &bpffs,
            &[("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)],
        ),
    )?;
    lab.persist()?;
    println!("{status}");
    println!(
        "\nRun an agent on lb1 (a sample config is in {}):",
        cfg.display()
    );
    println!(
        "  nsenter --net=/run/netns/{PERSISTENT_PREFIX}-lb1 {} --config {}",
        bins.join("vip-agent").display(),
        cfg.display()
    );
    println!(
        "then from the client: nsenter --net=/run/netns/{PERSISTENT_PREFIX}-client bash -c 'exec 3<>/dev/tcp/{VIP}/5672; head -1 <&3'"
    );
    println!(
        "and inspect it: {} --bpffs {} stats",
        bins.join("vipctl").display(),
        bpffs.display()
    );
    println!("Remove it all with: cargo xtask lab down");
    Ok(())
}

pub fn lab_down() -> Result<()> {
    Lab::down_persistent(PERSISTENT_PREFIX)?;
    let bpffs = PathBuf::from(STATE_DIR).join("bpffs");
    if let Ok(c) = std::ffi::CString::new(bpffs.as_os_str().as_encoded_bytes()) {
        // SAFETY: unmounting the lab's bpffs if an agent mounted one.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    // What `lab up` wrote beside the lab's state file.
    let state = PathBuf::from(STATE_DIR);
    let _ = std::fs::remove_dir(&bpffs);
    let _ = std::fs::remove_dir_all(state.join("logs"));
    let _ = std::fs::remove_file(state.join("lb1.toml"));
    let _ = std::fs::remove_dir(&state);
    println!("lab {PERSISTENT_PREFIX} removed");
    Ok(())
}

pub fn lab_status() -> Result<()> {
    println!("{}", Lab::status_persistent(PERSISTENT_PREFIX)?);
    Ok(())
}
