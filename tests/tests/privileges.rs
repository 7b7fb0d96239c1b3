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

use common::{DirGuard, VIP, config, is_root, lab, sibling_bin, wait_for, who_answers};
use vip_agent::{
    caps::NEEDED,
    config::{Config, write::to_toml},
};

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

/// A script that records who ran it, and with which privileges, in
/// `<dir>/out/<first argument>.rec` (`out` is nobody's): its uid and gid,
/// then its `Cap*` and `NoNewPrivs` lines from `/proc/self/status`.
/// Root-owned, mode 0755.
fn recorder(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let script = dir.join("record.sh");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    chown_nobody(&out);
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh
out={}/$1.rec
{{ echo \"Uid: $(id -u)\"; echo \"Gid: $(id -g)\"; \
             grep -E '^(Cap(Inh|Prm|Eff|Amb|Bnd)|NoNewPrivs):' /proc/self/status; }} > \"$out.tmp\" && mv \"$out.tmp\" \"$out\"\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// `cfg` plus a node exec check and a notify script, both the recorder:
/// the check records `check.rec`, the notify call `master.rec`.
fn with_recorder(mut cfg: Config, script: &Path) -> Config {
    cfg.checks.push(config::check(
        "recorder",
        config::exec(&format!("{} check", script.display())),
    ));
    let mut v = config::vrrp("VI_1", 51, 100, &[VIP]);
    v.election.advert_interval = Duration::from_millis(100);
    v.track.push(config::track("recorder", 0));
    v.notify = Some(script.to_owned());
    cfg.vrrp.push(v);
    cfg
}

/// The `name value` lines a recorder run wrote, waited for.
fn record(dir: &Path, name: &str) -> Vec<(String, String)> {
    let path = dir.join("out").join(format!("{name}.rec"));
    let text = wait_for(
        &format!("{}", path.display()),
        Duration::from_secs(10),
        || std::fs::read_to_string(&path).ok(),
    );
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// Asserts a recorder run was `uid` with no capability, `no_new_privs` set,
/// and `bounding` as its bounding set.
#[track_caller]
fn assert_unprivileged(seen: &[(String, String)], uid: u32, bounding: u64) {
    let get = |k: &str| {
        seen.iter()
            .find(|(n, _)| n == k)
            .map_or_else(|| panic!("no {k} in {seen:?}"), |(_, v)| v.clone())
    };
    assert_eq!(get("Uid"), uid.to_string(), "{seen:?}");
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(get(set), "0000000000000000", "{set}: {seen:?}");
    }
    assert_eq!(get("CapBnd"), format!("{bounding:016x}"), "{seen:?}");
    assert_eq!(get("NoNewPrivs"), "1", "{seen:?}");
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
    let script = recorder(&dir.0);
    std::fs::write(
        &config,
        to_toml(&with_recorder(
            config::at(
                "lb1",
                &bpffs.0,
                &[("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)],
            ),
            &script,
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
    // Its exec check and notify script run as its own user and hold none
    // of them (nor can they regain one: no_new_privs). The agent may not
    // shrink its bounding set (no CAP_SETPCAP), so theirs is the agent's.
    assert_unprivileged(&record(&dir.0, "check"), NOBODY, want);
    assert_unprivileged(&record(&dir.0, "master"), NOBODY, want);
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

#[test]
fn a_root_agent_runs_its_scripts_as_script_user_without_capabilities() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let lab = lab("scruser");
    let dir = DirGuard::for_lab(&lab, "scripts");
    let script = recorder(&dir.0);
    let mut cfg = with_recorder(config::node(&lab, "lb1", &[("10.99.0.11", 1)]), &script);
    cfg.node.script_user = Some(vip_agent::config::ScriptUser::parse("nobody").unwrap());
    let agent = common::Agent::start_config(&lab, "lb1", cfg);
    // Root's script: no capability and an empty bounding set, as nobody.
    assert_unprivileged(&record(&dir.0, "check"), NOBODY, 0);
    assert_unprivileged(&record(&dir.0, "master"), NOBODY, 0);
    drop(agent);
}
