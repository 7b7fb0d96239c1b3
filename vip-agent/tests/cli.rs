//! The binaries' contract: exit codes and messages for bad input (no root needed).
#![allow(
    clippy::disallowed_methods,
    reason = "starts only this crate's own binaries (CARGO_BIN_EXE_*), no external program"
)]

use std::process::Command;

fn agent(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vip-agent"))
        .args(args)
        .output()
        .expect("run vip-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vip-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const GOOD: &str = r#"[node]
interface = "eth0"
name = "lb1"

[[service]]
vip = "10.99.0.100"
port = 5672
backends = [{ address = "10.99.0.11" }, { address = "10.99.0.12", weight = 2 }]
"#;

#[test]
fn check_accepts_a_valid_config() {
    let p = write("good.toml", GOOD);
    let (code, out, err) = agent(&["--config", p.to_str().unwrap(), "--check"]);
    assert_eq!(code, 0, "stdout {out} stderr {err}");
    assert!(out.contains("OK") && out.contains("1 service"), "{out}");
}

#[test]
fn bad_value_exits_2_naming_key_and_line() {
    let p = write("bad-addr.toml", &GOOD.replace("10.99.0.12", "10.99.0.300"));
    let (code, _, err) = agent(&["--config", p.to_str().unwrap(), "--check"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad-addr.toml:8:"), "line 8 named: {err}");
    assert!(err.contains("address"), "key named: {err}");
    assert!(err.contains("10.99.0.300"), "value named: {err}");
}

#[test]
fn unknown_key_exits_2_naming_key_and_line() {
    let p = write(
        "unknown.toml",
        &GOOD.replace("name = \"lb1\"", "name = \"lb1\"\nintreface = \"eth1\""),
    );
    let (code, _, err) = agent(&["--config", p.to_str().unwrap(), "--check"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unknown.toml:4:") && err.contains("intreface"),
        "{err}"
    );
}

const VLAN: &str = r#"[node]
interface = "eth0"
name = "lb1"

[[vrrp]]
name = "VI_1"
vrid = 51
vips = ["10.99.0.100",
  { address = "10.99.0.101", vlan = 100 }]
"#;

#[test]
fn a_vlan_vip_is_accepted_and_a_bad_vlan_exits_2_naming_key_and_line() {
    let p = write("vlan.toml", VLAN);
    let (code, out, err) = agent(&["--config", p.to_str().unwrap(), "--check"]);
    assert_eq!(code, 0, "stdout {out} stderr {err}");
    assert!(out.contains("OK"), "{out}");
    for (name, vlan, said) in [
        (
            "vlan0.toml",
            "0",
            "0 is out of range: an 802.1Q VLAN id must be 1..=4094",
        ),
        ("vlan4095.toml", "4095", "4095 is out of range"),
        (
            "vlanx.toml",
            "\"x\"",
            "invalid type: string \"x\", expected an integer",
        ),
    ] {
        let p = write(name, &VLAN.replace("vlan = 100", &format!("vlan = {vlan}")));
        let (code, _, err) = agent(&["--config", p.to_str().unwrap(), "--check"]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(&format!("{name}:9: vrrp[0].vips[1].vlan: {said}")),
            "file, line 9, key and reason named: {err}"
        );
    }
}

#[test]
fn missing_file_exits_2() {
    let (code, _, err) = agent(&["--config", "/nonexistent/vip.toml", "--check"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/vip.toml"), "{err}");
}

#[test]
fn vrrp_with_exec_track_is_accepted_and_other_check_kinds_refused_with_their_line() {
    let vrrp = "\n[[vrrp]]\nname = \"VI_1\"\nvrid = 51\nvips = [\"10.99.0.100\"]\n";
    let checks = "\n[[check]]\nname = \"broker\"\nkind = \"exec\"\ncommand = \"/bin/true\"\n";
    let tracked = format!("{GOOD}{checks}{vrrp}track = [{{ check = \"broker\", weight = -60 }}]\n");
    let p = write("track.toml", &tracked);
    let (code, out, err) = agent(&["--config", p.to_str().unwrap(), "--check"]);
    assert_eq!(code, 0, "{out} {err}");
    let tcp = tracked.replace("kind = \"exec\"\ncommand = \"/bin/true\"", "kind = \"tcp\"");
    let p = write("tcp-check.toml", &tcp);
    let (code, _, err) = agent(&["--config", p.to_str().unwrap(), "--check"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("tcp-check.toml:10:") && err.contains("tcp"),
        "{err}"
    );
}

#[test]
fn usage_error_exits_2() {
    let (code, _, err) = agent(&["--bogus"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn missing_interface_is_a_runtime_error_naming_it() {
    let p = write("noiface.toml", &GOOD.replace("eth0", "nosuchif0"));
    let (code, _, err) = agent(&["--config", p.to_str().unwrap()]);
    // Without root this fails earlier on privileges; either way it names the cause.
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("nosuchif0") || err.contains("CAP_BPF"),
        "{err}"
    );
}

/// A config whose `[[check]]` runs `script` and whose instance notifies
/// `notify`, with `node_extra` added to `[node]`.
fn with_scripts(script: &std::path::Path, notify: &std::path::Path, node_extra: &str) -> String {
    format!(
        "[node]\ninterface = \"eth0\"\nname = \"lb1\"\n{node_extra}\n\
         [[check]]\nname = \"broker\"\nkind = \"exec\"\ncommand = \"{} --quiet\"\n\n\
         [[vrrp]]\nname = \"VI_1\"\nvrid = 51\nvips = [\"10.99.0.100\"]\ntrack = [{{ check = \"broker\" }}]\nnotify = \"{}\"\n",
        script.display(),
        notify.display()
    )
}

fn chmod(p: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn check_refuses_a_script_others_may_change_naming_key_and_line() {
    let safe = write("safe.sh", "#!/bin/sh\n");
    chmod(&safe, 0o755);
    let open = write("open.sh", "#!/bin/sh\n");
    chmod(&open, 0o777);

    let p = write("scripts-ok.toml", &with_scripts(&safe, &safe, ""));
    let (code, out, err) = agent(&["--config", p.to_str().unwrap(), "--check"]);
    assert_eq!(code, 0, "stdout {out} stderr {err}");
    assert!(out.contains("scripts run as "), "{out}");

    // The exec check's program: line 8 (`command = ...`).
    let p = write("scripts-check.toml", &with_scripts(&open, &safe, ""));
    let (code, _, err) = agent(&["--config", p.to_str().unwrap(), "--check"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("scripts-check.toml:8: check[0].command: "),
        "{err}"
    );
    assert!(err.contains("open.sh is writable by everyone"), "{err}");

    // The notify script: line 15.
    let p = write("scripts-notify.toml", &with_scripts(&safe, &open, ""));
    let (code, _, err) = agent(&["--config", p.to_str().unwrap(), "--check"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("scripts-notify.toml:15: vrrp[0].notify: "),
        "{err}"
    );

    // Turned off, as keepalived without enable_script_security.
    let p = write(
        "scripts-off.toml",
        &with_scripts(&open, &open, "script_security = false"),
    );
    let (code, out, err) = agent(&["--config", p.to_str().unwrap(), "--check"]);
    assert_eq!(code, 0, "stdout {out} stderr {err}");
}

#[test]
fn check_refuses_a_script_user_this_machine_lacks() {
    let safe = write("safe-user.sh", "#!/bin/sh\n");
    chmod(&safe, 0o755);
    let p = write(
        "script-user.toml",
        &with_scripts(&safe, &safe, "script_user = \"no-such-user-vip\""),
    );
    let (code, _, err) = agent(&["--config", p.to_str().unwrap(), "--check"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("script-user.toml:4: node.script_user: there is no user \"no-such-user-vip\""),
        "{err}"
    );
    let p = write(
        "script-user-bad.toml",
        &with_scripts(&safe, &safe, "script_user = \"a:b:c\""),
    );
    let (code, _, err) = agent(&["--config", p.to_str().unwrap(), "--check"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(":4: node.script_user: \"a:b:c\" is not a user"),
        "{err}"
    );
}
