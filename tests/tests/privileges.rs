//! The agent as a service runs it: an unprivileged user holding only the
//! capabilities `vip_agent::caps::NEEDED` names (set with `setpriv`), on a
//! bpffs mounted for it beforehand. It forwards; without `CAP_BPF` it exits 1
//! naming the capability; the systemd unit in the repository grants exactly
//! that list.

use vip_tests::kit as common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use common::{DirGuard, config, is_root, lab, sibling_bin, wait_for, who_answers};
use vip_agent::{caps::NEEDED, config::write::to_toml};

const NOBODY: u32 = 65534;

/// `setpriv` to user nobody with exactly `caps` (names without `CAP_`,
/// lower case, as setpriv spells them), running vip-agent on `config`.
fn as_nobody(caps: &[&str], config: &Path) -> Command {
    let list: String = caps
        .iter()
        .map(|c| format!(",+{c}"))
        .collect::<Vec<_>>()
        .concat();
    let mut cmd = vip_tests::programs::command("setpriv").expect("setpriv");
    cmd.arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg(format!("--inh-caps=-all{list}"))
        .arg(format!("--ambient-caps=-all{list}"))
        .arg(format!("--bounding-set=-all{list}"))
        .arg(sibling_bin("vip-agent"))
        .arg("--config")
        .arg(config)
        .env("VIP_LOG", "info,netlink_packet_route=error")
        .stdout(Stdio::null());
    cmd
}

/// A bpffs mounted at `dir` (by root, as systemd mounts /sys/fs/bpf);
/// unmounted on drop.
struct Bpffs(PathBuf);

impl Bpffs {
    fn mount(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        vip_tests::sys::mount_bpffs(&dir).expect("mount a bpffs");
        Self(dir)
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = vip_tests::sys::unmount_lazy(&self.0);
    }
}

fn chown_nobody(path: &Path) {
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

fn cap_eff(pid: u32) -> (u32, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    (
        field("Uid:").parse().unwrap(),
        u64::from_str_radix(&field("CapEff:"), 16).unwrap(),
    )
}

#[test]
fn runs_unprivileged_with_only_the_named_capabilities() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let lab = lab("caps");
    let dir = DirGuard::new(PathBuf::from(format!(
        "/run/vip-test/{}-caps",
        lab.prefix()
    )));
    chown_nobody(&dir.0);
    let bpffs = Bpffs::mount(dir.0.join("bpffs"));
    chown_nobody(&bpffs.0);
    let config = dir.0.join("vip.toml");
    std::fs::write(
        &config,
        to_toml(&config::at(
            "lb1",
            &bpffs.0,
            &[("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)],
        )),
    )
    .unwrap();

    // Without CAP_BPF: exit 1, and the message names it.
    let out = lab
        .spawn_unmanaged("lb1", {
            let mut c = as_nobody(&["net_admin", "net_raw", "perfmon"], &config);
            c.stderr(Stdio::piped());
            c
        })
        .unwrap()
        .wait_with_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{:?}: {stderr}", out.status);
    assert!(stderr.contains("missing capability CAP_BPF"), "{stderr}");

    // With exactly the needed ones: it forwards.
    let names: Vec<String> = NEEDED
        .iter()
        .map(|c| c.name.trim_start_matches("CAP_").to_lowercase())
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let pid = lab.spawn("lb1", as_nobody(&names, &config)).unwrap();
    let answered = wait_for("an answer through the VIP", Duration::from_secs(10), || {
        lab.run_in("client", || who_answers(Duration::from_millis(300)).ok())
    });
    assert!(answered.0.starts_with('b'), "{answered:?}");
    let want: u64 = NEEDED.iter().map(|c| 1u64 << c.bit).sum();
    assert_eq!(
        cap_eff(pid),
        (NOBODY, want),
        "uid and effective capabilities"
    );
    let pins = bpffs.0.join("vip").join("lb1");
    assert!(
        pins.join(vip_agent::dataplane::LINK_PIN).exists(),
        "link pinned"
    );
    let st = lab.stop(pid).unwrap();
    assert!(st.success(), "SIGTERM: {st}");
    assert!(!pins.exists(), "pins removed on SIGTERM");

    // The systemd unit grants exactly these.
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../vip-agent/systemd/vip-agent.service"),
    )
    .unwrap();
    let want: Vec<&str> = NEEDED.iter().map(|c| c.name).collect();
    for key in ["AmbientCapabilities=", "CapabilityBoundingSet="] {
        let line = unit
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} in the unit"));
        assert_eq!(line.split_whitespace().collect::<Vec<_>>(), want, "{key}");
    }
    assert!(unit.lines().any(|l| l == "User=vip"));
    assert!(unit.lines().any(|l| l == "Type=notify"));
    assert!(unit.lines().any(|l| l == "Restart=on-failure"));
    drop(bpffs);
}
