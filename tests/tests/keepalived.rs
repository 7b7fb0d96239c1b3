//! Interop with keepalived 2.2.7 (Debian's, installed by `cargo xtask test`)
//! in the same VRRP group: vip on lb1, keepalived on lb2. The right node holds
//! the VIP — seen from the client's ARP entry, from vip's VIP table and from
//! keepalived's `ip addr` — and mastership moves both ways.
#![allow(
    clippy::too_many_lines,
    reason = "scenario tests read best as one story"
)]

use vip_tests::kit as common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use common::{Agent, VIP, is_root, lab, wait_for};
use vip_tests::{
    lab::{Lab, format_mac},
    programs,
};

/// keepalived in lb2's network namespace, VRRP only; SIGTERM on drop.
struct Keepalived {
    child: Option<Child>,
    dir: PathBuf,
}

impl Keepalived {
    fn start(lab: &Lab, version: u8, priority: u8, advert: &str, auth: Option<&str>) -> Self {
        let dir = PathBuf::from(format!("/run/vip-test/{}-keepalived", lab.prefix()));
        std::fs::create_dir_all(&dir).unwrap();
        let auth = auth.map_or_else(String::new, |p| {
            format!(
                "    authentication {{\n        auth_type PASS\n        auth_pass {p}\n    }}\n"
            )
        });
        let conf = format!(
            "global_defs {{\n    router_id lb2\n    vrrp_version {version}\n    max_auto_priority\n}}\n\
             vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 51\n    priority {priority}\n    advert_int {advert}\n{auth}    virtual_ipaddress {{\n        {VIP}/32\n    }}\n}}\n"
        );
        let path = dir.join("keepalived.conf");
        std::fs::write(&path, conf).unwrap();
        let mut cmd = programs::command("keepalived").expect("keepalived");
        cmd.args(["-n", "-P", "-l", "-D", "-f"])
            .arg(&path)
            .arg("-p")
            .arg(dir.join("keepalived.pid"))
            .arg("-r")
            .arg(dir.join("vrrp.pid"))
            .arg("-c")
            .arg(dir.join("checkers.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = lab.spawn_unmanaged("lb2", cmd).expect("start keepalived");
        Self {
            child: Some(child),
            dir,
        }
    }

    /// SIGTERM the parent (its VRRP child sends priority 0 and removes the VIP).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child by PID.
            unsafe { libc::kill(i32::try_from(c.id()).unwrap(), libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn keepalived_holds_vip(lab: &Lab) -> bool {
    lab.ns("lb2")
        .ip(&["-4", "addr", "show", "dev", "eth0"])
        .unwrap_or_default()
        .contains(&format!("{VIP}/32"))
}

fn client_arp_names(lab: &Lab, mac: &str) -> bool {
    lab.ns("client")
        .ip(&["neigh", "show", &VIP.to_string()])
        .unwrap_or_default()
        .contains(mac)
}

fn vrrp(version: u8, priority: u8, interval: &str, auth: Option<&str>) -> String {
    let auth = auth.map_or_else(String::new, |p| format!("auth_pass = \"{p}\"\n"));
    format!(
        "\n[[vrrp]]\nname = \"VI_1\"\nvrid = 51\nversion = {version}\npriority = {priority}\nadvert_interval = \"{interval}\"\n{auth}vips = [\"{VIP}\"]\n"
    )
}

/// vip master + keepalived backup, then the reverse, in one group.
fn interop(version: u8, interval: &str, ka_advert: &str, auth: Option<&str>, limit: Duration) {
    let lab = lab(&format!("ka{version}"));
    let lb1_mac = format_mac(lab.mac("lb1"));
    let lb2_mac = format_mac(lab.mac("lb2"));
    let backends = [("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)];
    let poke = |lab: &Lab| {
        let _ = lab.run_in("client", || common::who_answers(Duration::from_millis(200)));
    };

    // vip (150) master, keepalived (100) backup.
    let mut vip = Agent::start_with(
        &lab,
        "lb1",
        "lb1",
        &backends,
        &vrrp(version, 150, interval, auth),
    );
    let mut ka = Keepalived::start(&lab, version, 100, ka_advert, auth);
    wait_for("vip master on lb1", limit, || vip.holds(VIP).then_some(()));
    poke(&lab);
    wait_for("client ARP -> lb1", limit, || {
        client_arp_names(&lab, &lb1_mac).then_some(())
    });
    // Give keepalived time to have seen several adverts, then check it stays backup.
    std::thread::sleep(limit / 2);
    assert!(
        !keepalived_holds_vip(&lab),
        "keepalived took the VIP while vip was master"
    );
    assert!(
        vip.holds(VIP),
        "vip lost mastership to a lower-priority keepalived"
    );

    // vip stops (priority 0): keepalived takes over.
    assert!(vip.stop().success());
    wait_for("keepalived to hold the VIP", limit, || {
        keepalived_holds_vip(&lab).then_some(())
    });
    poke(&lab);
    wait_for("client ARP -> lb2 (keepalived)", limit, || {
        client_arp_names(&lab, &lb2_mac).then_some(())
    });

    // vip returns with the higher priority and preempts; keepalived drops the VIP.
    vip.spawn(&lab);
    wait_for("vip master again", limit * 2, || {
        vip.holds(VIP).then_some(())
    });
    wait_for("keepalived to release the VIP", limit, || {
        (!keepalived_holds_vip(&lab)).then_some(())
    });
    wait_for("client ARP -> lb1 again", limit, || {
        client_arp_names(&lab, &lb1_mac).then_some(())
    });
    drop(vip);
    ka.stop();

    // The reverse: keepalived (150) master, vip (100) backup.
    let mut ka = Keepalived::start(&lab, version, 150, ka_advert, auth);
    wait_for("keepalived master", limit * 2, || {
        keepalived_holds_vip(&lab).then_some(())
    });
    let vip = Agent::start_with(
        &lab,
        "lb1",
        "lb1b",
        &backends,
        &vrrp(version, 100, interval, auth),
    );
    std::thread::sleep(limit / 2);
    assert!(
        !vip.holds(VIP),
        "vip took the VIP while keepalived was master"
    );
    poke(&lab);
    wait_for("client ARP -> lb2", limit, || {
        client_arp_names(&lab, &lb2_mac).then_some(())
    });
    ka.stop();
    wait_for("vip to take over from keepalived", limit, || {
        vip.holds(VIP).then_some(())
    });
    poke(&lab);
    wait_for("client ARP -> lb1 (vip)", limit, || {
        client_arp_names(&lab, &lb1_mac).then_some(())
    });
    assert!(!keepalived_holds_vip(&lab));
    assert!(Path::new("/proc").exists());
}

#[test]
fn keepalived_v3_100ms_both_ways() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    interop(3, "100ms", "0.1", None, Duration::from_secs(3));
}

#[test]
fn keepalived_v2_pass_auth_1s_both_ways() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    interop(2, "1s", "1", Some("1111"), Duration::from_secs(8));
}
