//! The peer stack vip replaces, as the lab runs it: keepalived (VRRP only)
//! and `HAProxy` in front of the backends, and [`Vrrp`], one node's member of
//! the lab's VRRP group, from which both vip and keepalived are configured.
//!
//! keepalived runs under the test and bench jobs; `HAProxy` only under the
//! bench's ([`crate::programs`] refuses it elsewhere).

use std::{fmt::Write as _, net::Ipv4Addr, path::PathBuf, process::Child, time::Duration};

use super::{
    DirGuard, VIP,
    process::{self, log_to, signal, tail, terminate},
};
use crate::{lab::Lab, programs};

/// One node's member of the lab's VRRP group: instance `VI_1`, vrid 51, the
/// VIP on eth0, state BACKUP until elected (preempting).
#[derive(Clone, Copy, Debug)]
pub struct Vrrp<'a> {
    /// The address the instance moves: [`VIP`] for the lab's group.
    pub vip: Ipv4Addr,
    /// 2 or 3.
    pub version: u8,
    pub priority: u8,
    pub advert: Duration,
    /// VRRP v2's simple-password authentication.
    pub auth_pass: Option<&'a str>,
}

impl Vrrp<'_> {
    /// VRRP v3 without authentication.
    #[must_use]
    pub fn v3(priority: u8, advert: Duration) -> Self {
        Vrrp {
            vip: VIP,
            version: 3,
            priority,
            advert,
            auth_pass: None,
        }
    }

    /// vip's instance of the group (for an agent's `cfg.vrrp`).
    #[must_use]
    pub fn agent_vrrp(&self) -> vip_agent::config::Vrrp {
        let mut v = super::config::vrrp("VI_1", 51, self.priority, &[self.vip]);
        v.election.version = self.version;
        v.election.advert_interval = self.advert;
        v.auth_pass = self.auth_pass.map(str::to_owned);
        v
    }

    /// keepalived's configuration for the node `router_id`.
    #[must_use]
    pub fn keepalived_conf(&self, router_id: &str) -> String {
        let auth = self.auth_pass.map_or_else(String::new, |p| {
            format!(
                "    authentication {{\n        auth_type PASS\n        auth_pass {p}\n    }}\n"
            )
        });
        // advert_int: seconds, centisecond resolution.
        let cs = self.advert.as_millis() / 10;
        format!(
            "global_defs {{\n    router_id {router_id}\n    vrrp_version {}\n    max_auto_priority\n}}\n\
             vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 51\n    priority {}\n    advert_int {}.{:02}\n{auth}    virtual_ipaddress {{\n        {}/32\n    }}\n}}\n",
            self.version,
            self.priority,
            cs / 100,
            cs % 100,
            self.vip
        )
    }
}

/// keepalived (VRRP only: `-n -P -B -l -D -G`) in a lab node, its files and
/// log in a directory of its own. Stopped on drop: SIGTERM to the parent,
/// SIGKILL after 2 s, and the VRRP child by PID if it outlived its parent.
pub struct Keepalived {
    parent: Child,
    node: String,
    vrrp_pid_file: PathBuf,
    /// The VRRP child's PID and start time, once read.
    vrrp: Option<(u32, u64)>,
    log: PathBuf,
    /// Removed after the processes are gone (fields drop after `drop`).
    _dir: DirGuard,
}

impl Keepalived {
    /// Starts keepalived in `node` of `lab` with `vrrp`; does not wait for
    /// an election.
    pub fn start(lab: &Lab, node: &str, vrrp: &Vrrp) -> Self {
        let dir = DirGuard::for_lab(lab, &format!("keepalived-{node}"));
        let path = dir.0.join("keepalived.conf");
        std::fs::write(&path, vrrp.keepalived_conf(node)).expect("write keepalived.conf");
        let log = dir.0.join("keepalived.log");
        let vrrp_pid_file = dir.0.join("vrrp.pid");
        let mut cmd = programs::command("keepalived").unwrap_or_else(|e| panic!("{e:#}"));
        cmd.args(["-n", "-P", "-B", "-l", "-D", "-G", "-f"])
            .arg(&path)
            .arg("-p")
            .arg(dir.0.join("keepalived.pid"))
            .arg("-r")
            .arg(&vrrp_pid_file)
            .arg("-c")
            .arg(dir.0.join("checkers.pid"))
            .arg("-b")
            .arg(dir.0.join("bfd.pid"));
        log_to(&mut cmd, &log);
        let parent = lab
            .spawn_unmanaged(node, cmd)
            .unwrap_or_else(|e| panic!("cannot start keepalived in {node}: {e:#}"));
        Self {
            parent,
            node: node.to_owned(),
            vrrp_pid_file,
            vrrp: None,
            log,
            _dir: dir,
        }
    }

    /// The parent's PID.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.parent.id()
    }

    /// Whether keepalived has put the lab's VIP on its node's eth0 (it is
    /// master of the lab's group).
    #[must_use]
    pub fn holds(&self, lab: &Lab) -> bool {
        self.holds_addr(lab, VIP)
    }

    /// Whether keepalived has put `vip` on its node's eth0.
    #[must_use]
    pub fn holds_addr(&self, lab: &Lab, vip: Ipv4Addr) -> bool {
        lab.ns(&self.node)
            .ip(&["-4", "addr", "show", "dev", "eth0"])
            .unwrap_or_default()
            .contains(&format!("{vip}/32"))
    }

    /// The VRRP child from the `-r` file, if it is a live child of our
    /// keepalived.
    fn read_vrrp_child(&self) -> Option<(u32, u64)> {
        let pid = std::fs::read_to_string(&self.vrrp_pid_file)
            .ok()?
            .trim()
            .parse::<u32>()
            .ok()?;
        let stat = process::stat(pid)?;
        (stat.ppid == self.parent.id()).then_some((pid, stat.start))
    }

    /// Waits up to 2 s for the VRRP child and keeps its PID, so that a fault
    /// can kill it at once.
    pub fn find_vrrp_child(&mut self) {
        let found = super::poll(Duration::from_secs(2), Duration::from_millis(5), || {
            self.read_vrrp_child()
        });
        assert!(
            found.is_some(),
            "no VRRP child of keepalived (pid {}) in {}; log:\n{}",
            self.parent.id(),
            self.vrrp_pid_file.display(),
            self.log_tail(20)
        );
        self.vrrp = found;
    }

    /// The VRRP child found earlier, if it is still that process.
    #[must_use]
    pub fn vrrp_alive(&self) -> Option<u32> {
        let (pid, start) = self.vrrp?;
        (process::stat(pid).map(|s| s.start) == Some(start)).then_some(pid)
    }

    /// SIGTERM to the parent (its VRRP child sends priority 0 and removes
    /// the VIP), SIGKILL after 2 s; then the VRRP child if it outlived it.
    pub fn stop(&mut self) {
        if self.vrrp.is_none() {
            self.vrrp = self.read_vrrp_child();
        }
        terminate(&mut self.parent);
        if let Some(pid) = self.vrrp_alive() {
            let _ = signal(pid, libc::SIGKILL);
        }
    }

    /// The last `lines` lines of its log.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `HAProxy` in a lab node (`mode tcp`, round robin over the backends),
/// listening on VIP:5672 with a nonlocal bind, so that it answers as soon
/// as keepalived puts the VIP on the node. Stopped on drop.
pub struct Haproxy {
    child: Child,
    _dir: DirGuard,
}

impl Haproxy {
    /// Starts `HAProxy` in `node` (with `net.ipv4.ip_nonlocal_bind` on) for
    /// `backends` and waits up to 3 s until it listens on VIP:5672.
    pub fn start(lab: &Lab, node: &str, backends: &[(&str, u32)]) -> Self {
        Self::start_with(lab, node, backends, "")
    }

    /// [`Haproxy::start`] with `server_options` after each `server` line,
    /// e.g. `check inter 200ms fall 2 rise 2`.
    pub fn start_with(
        lab: &Lab,
        node: &str,
        backends: &[(&str, u32)],
        server_options: &str,
    ) -> Self {
        lab.ns(node)
            .sysctl("net.ipv4.ip_nonlocal_bind", "1")
            .unwrap_or_else(|e| panic!("{e:#}"));
        let mut servers = String::new();
        for (i, (a, _)) in backends.iter().enumerate() {
            let _ = writeln!(servers, "    server b{} {a}:5672 {server_options}", i + 1);
        }
        let cfg = format!(
            "global\n\
             defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 60s\n    timeout server 60s\n\
             frontend amqp\n    bind {VIP}:5672\n    default_backend brokers\n\
             backend brokers\n    balance roundrobin\n{servers}"
        );
        let dir = DirGuard::for_lab(lab, &format!("haproxy-{node}"));
        let path = dir.0.join("haproxy.cfg");
        std::fs::write(&path, cfg).expect("write haproxy.cfg");
        let log = dir.0.join("haproxy.log");
        let mut cmd = programs::command("haproxy").unwrap_or_else(|e| panic!("{e:#}"));
        cmd.arg("-db").arg("-f").arg(&path);
        log_to(&mut cmd, &log);
        let child = lab
            .spawn_unmanaged(node, cmd)
            .unwrap_or_else(|e| panic!("cannot start haproxy in {node}: {e:#}"));
        let mut haproxy = Self { child, _dir: dir };
        // Listening on VIP:5672, or it failed.
        let listening = super::poll(Duration::from_secs(3), Duration::from_millis(5), || {
            if let Ok(Some(st)) = haproxy.child.try_wait() {
                panic!("haproxy in {node} exited with {st}:\n{}", tail(&log, 20));
            }
            lab.ns(node)
                .run("ss", &["-Hltn", "sport = :5672"])
                .is_ok_and(|s| s.contains(&format!("{VIP}:5672")))
                .then_some(())
        });
        assert!(
            listening.is_some(),
            "haproxy in {node} does not listen on {VIP}:5672:\n{}",
            tail(&log, 20)
        );
        haproxy
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}
