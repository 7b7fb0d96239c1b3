//! `vipctl import-keepalived` on the sample keepalived.conf files of
//! `tests/keepalived/`: the TOML holds the expected values and passes
//! `vip-agent --check`, each keyword vip cannot carry over is reported with
//! its file and line, and unreadable or broken files exit 2 (no root needed).
#![allow(
    clippy::disallowed_methods,
    reason = "starts only this crate's own binaries (CARGO_BIN_EXE_*), no external program"
)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Runs vipctl; returns the exit code, stdout and stderr.
fn vipctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vipctl"))
        .args(args)
        .output()
        .expect("run vipctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keepalived")
}

/// A scratch directory removed on drop, even when the test panics.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("vip-import-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The result of importing one sample.
struct Imported {
    path: PathBuf,
    toml: String,
    value: toml::Value,
    stderr: String,
}

impl Imported {
    /// Asserts that `keyword` is reported at `line` of `file` (the sample
    /// itself unless given) with `needle` in the message.
    #[track_caller]
    fn reports_in(&self, file: &Path, line: usize, keyword: &str, needle: &str) {
        let prefix = format!("{}:{line}: {keyword}: ", file.display());
        assert!(
            self.stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(needle)),
            "expected {prefix:?} ... {needle:?} in:\n{}",
            self.stderr
        );
    }

    #[track_caller]
    fn reports(&self, line: usize, keyword: &str, needle: &str) {
        self.reports_in(&self.path, line, keyword, needle);
    }

    /// `service[i].check`, also when this build's `vip-agent --check`
    /// refused service checks and the importer wrote it as a comment
    /// (`# check = { ... }`, which it then reports).
    fn service_check(&self, i: usize) -> toml::Value {
        if let Some(c) = self.value["service"][i].get("check") {
            return c.clone();
        }
        let section = self
            .toml
            .split("\n[[service]]")
            .nth(i + 1)
            .expect("the service section");
        let line = section
            .lines()
            .find_map(|l| l.strip_prefix("# check = "))
            .unwrap_or_else(|| panic!("service[{i}] has no check in:\n{}", self.toml));
        let table: toml::Value =
            toml::from_str(&format!("check = {line}")).expect("the commented check is TOML");
        assert!(
            self.stderr.contains("the check is written as a comment"),
            "a commented check is reported:\n{}",
            self.stderr
        );
        table["check"].clone()
    }
}

/// Imports `tests/keepalived/<name>`, expecting success, and runs
/// `vip-agent --check` on the result.
fn import(name: &str) -> Imported {
    let path = samples().join(name);
    let (code, toml, stderr) = vipctl(&["import-keepalived", path.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "stderr:\n{stderr}");
    let value: toml::Value = toml::from_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));

    let dir = Scratch::new(name);
    let out = dir.write("vip.toml", &toml);
    let check = Command::new(env!("CARGO_BIN_EXE_vip-agent"))
        .arg("--config")
        .arg(&out)
        .arg("--check")
        .output()
        .expect("run vip-agent");
    assert!(
        check.status.success(),
        "vip-agent --check refused the import of {name}: {}\n{toml}",
        String::from_utf8_lossy(&check.stderr)
    );
    Imported {
        path,
        toml,
        value,
        stderr,
    }
}

fn strs(v: &toml::Value) -> Vec<&str> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|s| s.as_str().expect("a string"))
        .collect()
}

#[test]
fn unicast_pass_auth_and_track_script() {
    let i = import("a-unicast-auth-track.conf");
    let v = &i.value;
    assert_eq!(v["node"]["interface"].as_str(), Some("eth0"));
    assert_eq!(v["node"]["name"].as_str(), Some("lb1"));

    let c = &v["check"][0];
    assert_eq!(c["name"].as_str(), Some("chk_haproxy"));
    assert_eq!(c["kind"].as_str(), Some("exec"));
    assert_eq!(c["command"].as_str(), Some("/usr/bin/killall -0 haproxy"));
    assert_eq!(c["interval"].as_str(), Some("1s"));
    assert_eq!(c["timeout"].as_str(), Some("2s"));
    assert_eq!(
        (c["rise"].as_integer(), c["fall"].as_integer()),
        (Some(2), Some(3))
    );

    let r = &v["vrrp"][0];
    assert_eq!(r["name"].as_str(), Some("VI_1"));
    assert_eq!(r["vrid"].as_integer(), Some(51));
    assert_eq!(r["priority"].as_integer(), Some(150));
    assert_eq!(
        r["version"].as_integer(),
        Some(2),
        "keepalived's default version"
    );
    assert_eq!(r["advert_interval"].as_str(), Some("1s"));
    assert_eq!(r["auth_pass"].as_str(), Some("s3cret"));
    assert_eq!(strs(&r["unicast_peers"]), ["10.99.0.3"]);
    assert_eq!(strs(&r["vips"]), ["10.99.0.100"]);
    assert_eq!(r["garp"]["refresh"].as_str(), Some("60s"));
    assert_eq!(r["track"][0]["check"].as_str(), Some("chk_haproxy"));
    assert_eq!(r["track"][0]["weight"].as_integer(), Some(-60));
    assert!(
        r.get("notify").is_none(),
        "three different notify_* need a wrapper"
    );

    i.reports(6, "notification_email", "ignored");
    i.reports(10, "smtp_server", "ignored");
    // Both map exactly: no note.
    assert_eq!(v["node"]["script_user"].as_str(), Some("root"));
    assert!(v["node"].get("script_security").is_none(), "the default");
    assert!(
        !i.stderr.contains("script_user") && !i.stderr.contains("enable_script_security"),
        "{}",
        i.stderr
    );
    i.reports(27, "state", "no initial state");
    i.reports(32, "unicast_src_ip", "10.99.0.2");
    i.reports(41, "virtual_ipaddress", "label eth0:vip");
    i.reports(46, "track_interface", "not supported");
    i.reports(49, "notify_master", "wrapper");
    i.reports(50, "notify_backup", "wrapper");
    i.reports(51, "notify_fault", "wrapper");
    assert_eq!(
        i.stderr.matches(": state: ").count(),
        1,
        "the state note comes once"
    );
}

#[test]
fn lvs_dr_for_rabbitmq_with_tcp_and_http_checks() {
    let i = import("b-lvs-rabbitmq.conf");
    let v = &i.value;
    let r = &v["vrrp"][0];
    assert_eq!(r["name"].as_str(), Some("VI_RABBIT"));
    assert_eq!(r["preempt"].as_bool(), Some(false), "nopreempt");
    assert_eq!(r["notify"].as_str(), Some("/etc/keepalived/notify.sh"));
    // Scripts, and no enable_script_security: vip checks them anyway.
    assert!(
        i.stderr.lines().any(
            |l| l.ends_with("[node] script_security = false turns the check off")
                && l.contains(": enable_script_security: note: keepalived.conf does not set it")
        ),
        "{}",
        i.stderr
    );

    let amqp = &v["service"][0];
    assert_eq!(amqp["vip"].as_str(), Some("10.99.0.100"));
    assert_eq!(amqp["port"].as_integer(), Some(5672));
    assert_eq!(amqp["protocol"].as_str(), Some("tcp"));
    assert_eq!(
        amqp["on_backend_down"].as_str(),
        Some("keep"),
        "inhibit_on_failure"
    );
    let backends: Vec<(&str, i64)> = amqp["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap(),
                b["weight"].as_integer().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        backends,
        [("10.99.0.11", 100), ("10.99.0.12", 100), ("10.99.0.13", 50)]
    );
    let c = i.service_check(0);
    assert_eq!(c["kind"].as_str(), Some("tcp"));
    assert_eq!(c["interval"].as_str(), Some("2s"), "delay_loop");
    assert_eq!(c["timeout"].as_str(), Some("1s"), "connect_timeout");
    assert_eq!(c["rise"].as_integer(), Some(1));
    assert_eq!(
        c["fall"].as_integer(),
        Some(3),
        "retry 2: down after 3 failures"
    );
    assert!(c.get("port").is_none(), "connect_port is the service port");

    let mgmt = &v["service"][1];
    assert_eq!(mgmt["port"].as_integer(), Some(15672));
    assert_eq!(mgmt["backends"].as_array().unwrap().len(), 3);
    let c = i.service_check(1);
    assert_eq!(c["kind"].as_str(), Some("http"));
    assert_eq!(c["path"].as_str(), Some("/api/health/checks/alarms"));
    assert_eq!(c["expect_status"].as_integer(), Some(200));
    assert_eq!(c["interval"].as_str(), Some("5s"));
    assert_eq!(c["timeout"].as_str(), Some("2s"));
    assert_eq!(
        c["fall"].as_integer(),
        Some(2),
        "keepalived's default retry 1"
    );

    i.reports(6, "lvs_flush", "ignored");
    i.reports(10, "state", "no initial state");
    i.reports(19, "notify", "adapt the script");
    i.reports(22, "inhibit_on_failure", "on_backend_down = \"keep\"");
    i.reports(24, "lb_algo", "wlc");
    i.reports(26, "persistence_timeout", "approximated");
    i.reports(36, "delay_before_retry", "ignored");
    i.reports(61, "lb_algo", "rr");
    i.reports(64, "sorry_server", "not supported");
    i.reports(71, "digest", "not supported");
}

#[test]
fn two_instances_backing_each_other_up() {
    let i = import("c-active-active.conf");
    let v = &i.value;
    let one = &v["vrrp"][0];
    let two = &v["vrrp"][1];
    assert_eq!(
        (one["name"].as_str(), two["name"].as_str()),
        (Some("VI_1"), Some("VI_2"))
    );
    assert_eq!(
        (one["vrid"].as_integer(), two["vrid"].as_integer()),
        (Some(51), Some(52))
    );
    assert_eq!(
        (one["priority"].as_integer(), two["priority"].as_integer()),
        (Some(150), Some(100))
    );
    for r in [one, two] {
        assert_eq!(r["version"].as_integer(), Some(3), "vrrp_version 3");
        assert_eq!(r["advert_interval"].as_str(), Some("50ms"));
        assert_eq!(strs(&r["unicast_peers"]), ["10.99.0.3"]);
        assert_eq!(r["garp"]["count"].as_integer(), Some(3));
        assert_eq!(r["notify"].as_str(), Some("/usr/local/sbin/vip-notify.sh"));
        assert!(r.get("auth_pass").is_none());
    }
    assert_eq!(strs(&one["vips"]), ["10.99.0.100"]);
    assert_eq!(strs(&two["vips"]), ["10.99.0.101"]);
    assert!(one.get("virtual_mac").is_none());
    assert_eq!(two["virtual_mac"].as_bool(), Some(true));
    assert_eq!(two["preempt_delay"].as_str(), Some("5s"));
    assert!(v.get("service").is_none() && v.get("check").is_none());

    i.reports(9, "vrrp_garp_master_delay", "second burst");
    i.reports(10, "max_auto_priority", "ignored");
    i.reports(41, "use_vmac", "no macvlan");
    i.reports(42, "vmac_xmit_base", "ignored");
}

#[test]
fn sync_group_with_an_included_misc_checked_service() {
    let i = import("d-sync-group.conf");
    let v = &i.value;
    assert_eq!(v["node"]["name"].as_str(), Some("lb1-example-com"));
    for r in v["vrrp"].as_array().unwrap() {
        assert_eq!(r["sync_group"].as_str(), Some("VG_1"));
    }
    assert_eq!(
        v["vrrp"][0]["track"][0]["check"].as_str(),
        Some("chk_local")
    );
    assert_eq!(
        v["vrrp"][0]["track"][0]["weight"].as_integer(),
        Some(0),
        "keepalived zeroes track weights in a sync group"
    );
    assert_eq!(
        v["check"][0]["command"].as_str(),
        Some("/usr/local/bin/check-local")
    );

    let s = &v["service"][0];
    assert_eq!(s["vip"].as_str(), Some("10.99.0.101"));
    assert_eq!(s["port"].as_integer(), Some(5672));
    let c = i.service_check(0);
    assert_eq!(c["kind"].as_str(), Some("exec"));
    assert_eq!(
        c["command"].as_str(),
        Some("/usr/local/bin/check-amqp ${VIP_BACKEND_ADDRESS} 5672")
    );
    assert_eq!(c["timeout"].as_str(), Some("2s"), "misc_timeout");
    assert_eq!(c["interval"].as_str(), Some("3s"));
    assert_eq!(
        c["fall"].as_integer(),
        Some(1),
        "MISC_CHECK retries 0 times"
    );

    i.reports(5, "router_id", "lb1-example-com");
    i.reports(19, "notify_master", "per instance");
    i.reports(32, "track_script", "sync_group_tracking_weight");
    let included = samples().join("d-sync-group.d/10-amqp.conf");
    i.reports_in(&included, 5, "lb_algo", "mh");
    i.reports_in(&included, 10, "misc_path", "VIP_BACKEND_ADDRESS");
}

#[test]
fn a_missing_file_exits_2() {
    let (code, out, err) = vipctl(&["import-keepalived", "/nonexistent/keepalived.conf"]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "no TOML: {out}");
    assert!(
        err.contains("/nonexistent/keepalived.conf: cannot read") && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn an_unclosed_brace_exits_2_with_its_line() {
    let dir = Scratch::new("unclosed");
    let path = dir.write(
        "keepalived.conf",
        "global_defs {\n    router_id lb1\n}\n\nvrrp_instance VI_1 {\n    interface eth0\n    virtual_ipaddress {\n        10.99.0.100\n}\n",
    );
    let (code, out, err) = vipctl(&["import-keepalived", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "no TOML: {out}");
    assert!(
        err.contains(&format!("{}:5: ", path.display())) && err.contains("never closed"),
        "{err}"
    );

    let extra = dir.write("extra.conf", "global_defs {\n}\n}\n");
    let (code, _, err) = vipctl(&["import-keepalived", extra.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{}:3: ", extra.display())), "{err}");
}

#[test]
fn an_include_whose_braces_explode_exits_2_with_its_line() {
    let dir = Scratch::new("braces");
    // 26 groups of two: 67 million patterns if expanded.
    let path = dir.write(
        "keepalived.conf",
        &format!(
            "global_defs {{\n    router_id lb1\n}}\ninclude {}.conf\n",
            "{a,b}".repeat(26)
        ),
    );
    let (code, out, err) = vipctl(&["import-keepalived", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "no TOML: {out}");
    assert!(
        err.contains(&format!("{}:4: ", path.display())) && err.contains("more than 4096 patterns"),
        "{err}"
    );
}

#[test]
fn includes_of_too_many_files_exit_2_with_the_line() {
    let dir = Scratch::new("many");
    for n in 0..1100 {
        dir.write(&format!("part-{n:04}.conf"), "# empty\n");
    }
    let path = dir.write(
        "keepalived.conf",
        "global_defs {\n    router_id lb1\n}\ninclude part-*.conf\n",
    );
    let (code, out, err) = vipctl(&["import-keepalived", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "no TOML: {out}");
    assert!(
        err.contains(&format!("{}:4: ", path.display())) && err.contains("more than 1024 files"),
        "{err}"
    );
}

#[test]
fn an_included_file_past_16_mib_exits_2_with_the_line() {
    let dir = Scratch::new("huge");
    let huge = dir.write("huge.conf", &"#\n".repeat(8 << 20 | 1));
    let path = dir.write(
        "keepalived.conf",
        "global_defs {\n    router_id lb1\n}\ninclude huge.conf\n",
    );
    let (code, _, err) = vipctl(&["import-keepalived", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("{}:4: ", path.display()))
            && err.contains(&huge.display().to_string())
            && err.contains("larger than 16 MiB"),
        "{err}"
    );
}

#[test]
fn without_an_interface_it_exits_2_unless_given_one() {
    let dir = Scratch::new("noiface");
    let path = dir.write(
        "keepalived.conf",
        "virtual_server 10.99.0.100 80 {\n    lb_kind DR\n    real_server 10.99.0.11 80 {\n    }\n}\n",
    );
    let (code, out, err) = vipctl(&["import-keepalived", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty() && err.contains("--iface"), "{err}");

    let (code, out, err) = vipctl(&[
        "--node",
        "edge1",
        "import-keepalived",
        path.to_str().unwrap(),
        "--iface",
        "ens3",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: toml::Value = toml::from_str(&out).unwrap();
    assert_eq!(v["node"]["interface"].as_str(), Some("ens3"));
    assert_eq!(v["node"]["name"].as_str(), Some("edge1"));
    assert_eq!(
        v["service"][0]["backends"][0]["address"].as_str(),
        Some("10.99.0.11")
    );
}
