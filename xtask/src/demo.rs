//! `cargo xtask run` (the live demo) and `cargo xtask lab up|down|status`.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use vip_tests::lab::{
    Lab, LabOptions, PERSISTENT_PREFIX, STATE_DIR, VIP, agent_config as config, format_mac,
};

/// A vip-agent child; `SIGTERMed` (clean shutdown) when dropped.
struct AgentProc(Option<Child>, PathBuf);

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

fn show(title: &str, text: &str) {
    println!("\n== {title}");
    for line in text.lines() {
        println!("   {line}");
    }
}

fn vipctl(bins: &Path, bpffs: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(bins.join("vipctl"))
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

/// The live demo: lab up, agent on lb1, traffic, tables and counters, a drain
/// that keeps open connections, a clean shutdown; the lab is removed at the end.
#[expect(
    clippy::too_many_lines,
    reason = "a linear script; each step prints its result"
)]
pub fn run(bins: &Path) -> Result<()> {
    let t0 = Instant::now();
    let mut opts = LabOptions::unique("demo");
    opts.backend_bin = bins.join("vip-lab-backend");
    let lab = Lab::up(opts).context("bring up the lab")?;
    println!(
        "lab {} up in {:?}: client 10.99.0.10, lb1 10.99.0.2 (MAC {}), lb2 10.99.0.3, backends b1..b3 10.99.0.11-13, VIP {VIP}",
        lab.prefix(),
        lab.setup_time(),
        format_mac(lab.mac("lb1"))
    );
    let dir = PathBuf::from(format!("/run/vip-demo/{}", lab.prefix()));
    std::fs::create_dir_all(&dir)?;
    let bpffs = dir.join("bpffs");
    let cfg = dir.join("lb1.toml");
    let backends = [("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)];
    std::fs::write(&cfg, config("lb1", &bpffs, &backends))?;
    show("lb1's configuration", &std::fs::read_to_string(&cfg)?);
    let mut cmd = Command::new(bins.join("vip-agent"));
    cmd.arg("--config").arg(&cfg).stdout(Stdio::null());
    let child = lab.spawn_unmanaged("lb1", cmd)?;
    let mut agent = AgentProc(Some(child), bpffs.clone());
    let link = bpffs.join("vip/lb1/link");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !link.exists() {
        if let Some(st) = agent.0.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            bail!("vip-agent exited with {st}");
        }
        if Instant::now() > deadline {
            bail!("vip-agent did not attach XDP within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "\nvip-agent is up on lb1 (XDP attached, maps pinned under {})",
        link.parent().unwrap().display()
    );

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
        "vipctl table 10.99.0.100:5672",
        &vipctl(bins, &bpffs, &["table", "10.99.0.100:5672"])?,
    );
    show("vipctl backends", &vipctl(bins, &bpffs, &["backends"])?);

    // Drain b2: its open connections keep working, new ones avoid it.
    std::fs::write(
        &cfg,
        config(
            "lb1",
            &bpffs,
            &[("10.99.0.11", 1), ("10.99.0.12", 0), ("10.99.0.13", 1)],
        ),
    )?;
    let pid = i32::try_from(agent.0.as_ref().expect("running").id())?;
    // SAFETY: signalling our own child by PID.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let drained = Instant::now();
    let deadline = drained + Duration::from_secs(5);
    loop {
        let t = vipctl(bins, &bpffs, &["table", "10.99.0.100:5672", "--json"])?;
        if !t.contains("10.99.0.12") {
            break;
        }
        if Instant::now() > deadline {
            bail!("the drain did not reach the table within 5 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let answers = lab.run_in("client", move || {
        let mut r = Vec::new();
        for s in &mut open {
            let _ = s.write_all(b"still there?\n");
            let mut reply = String::new();
            let ok = BufReader::new(s.try_clone().expect("clone"))
                .read_line(&mut reply)
                .is_ok();
            r.push(if ok {
                reply.trim().to_owned()
            } else {
                "lost".into()
            });
        }
        r
    });
    let (after, failed_after, _) = lab.run_in("client", || connect_many(300));
    show(
        &format!(
            "SIGHUP with b2 at weight 0 (drain): new table seen by vipctl after {:?}",
            drained.elapsed()
        ),
        &format!(
            "open connections asked again: {answers:?}\n300 new connections: {after:?}, failed: {failed_after}"
        ),
    );
    show("vipctl stats", &vipctl(bins, &bpffs, &["stats"])?);
    drop(agent);
    println!(
        "\nvip-agent stopped cleanly (SIGTERM: XDP detached, pins removed). Demo took {:?}.",
        t0.elapsed()
    );
    println!(
        "VRRP failover arrives with the VRRP issue; this demo then adds lb2 and measures the gap."
    );
    let _ = std::fs::remove_dir_all(&dir);
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
    println!("lab {PERSISTENT_PREFIX} removed");
    Ok(())
}

pub fn lab_status() -> Result<()> {
    println!("{}", Lab::status_persistent(PERSISTENT_PREFIX)?);
    Ok(())
}
