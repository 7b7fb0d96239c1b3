//! [`Agent`]: a vip-agent in a lab node with its own bpffs, started and
//! read the way the tests and the benches need.

use std::{
    net::Ipv4Addr,
    os::unix::net::UnixDatagram,
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use super::{
    DirGuard,
    process::{signal, tail},
    sibling_bin,
};
use crate::lab::Lab;
use vip_agent::dataplane::{Maps, pin_dir};

use vip_agent::config::{Config, write::to_toml};

/// How an agent runs beyond its config; kept on restarts.
#[derive(Clone, Debug, Default)]
pub struct Setup {
    /// The agent's log (its stderr, a pipe: no colour) to a file in its
    /// directory instead of ours: [`Agent::log_tail`] reads it, and a failed
    /// start shows it.
    pub log_to_file: bool,
    /// Run the agent with `--log-format journald`, in a mount namespace of
    /// its own where `/run/systemd/journal` is this directory: the test's
    /// datagram socket `socket` in it stands in for journald's.
    pub journal: Option<PathBuf>,
}

impl Setup {
    /// [`Setup::log_to_file`] alone.
    #[must_use]
    pub fn logged() -> Self {
        Self {
            log_to_file: true,
            ..Self::default()
        }
    }
}

/// A vip-agent running in a lab node, with its own bpffs; killed and
/// unmounted on drop.
pub struct Agent {
    pub child: Option<Child>,
    notify: Option<UnixDatagram>,
    /// What [`Agent::cfg`] returns (boxed: a config is large beside the
    /// rest).
    cfg: Box<Config>,
    log: Option<PathBuf>,
    journal: Option<PathBuf>,
    pub node: String,
    /// The config file.
    pub config: PathBuf,
    pub bpffs: PathBuf,
    pub name: String,
    /// Removed after the bpffs is unmounted (fields drop after `drop`).
    dir: DirGuard,
}

impl Agent {
    /// Starts vip-agent in `node` of `lab` with [`config::node`] for `name`
    /// and `backends`, and waits until XDP is attached (its link is pinned)
    /// and the service's table is live.
    ///
    /// [`config::node`]: super::config::node
    pub fn start(lab: &Lab, node: &str, name: &str, backends: &[(&str, u32)]) -> Self {
        Self::start_config(lab, node, super::config::node(lab, name, backends))
    }

    /// Like [`Agent::start`], with `cfg` (usually [`config::node`] edited):
    /// the agent is named and its directory found by `cfg.node.name`.
    ///
    /// [`config::node`]: super::config::node
    pub fn start_config(lab: &Lab, node: &str, cfg: Config) -> Self {
        Self::start_full(lab, node, cfg, Setup::default())
    }

    /// Like [`Agent::start_config`], with [`Setup`].
    pub fn start_full(lab: &Lab, node: &str, cfg: Config, setup: Setup) -> Self {
        let name = cfg.node.name.clone();
        let dir = DirGuard::for_lab(lab, &name);
        let mut agent = Self {
            child: None,
            notify: None,
            log: setup.log_to_file.then(|| dir.0.join("vip-agent.log")),
            journal: setup.journal,
            node: node.to_owned(),
            config: dir.0.join("vip.toml"),
            bpffs: cfg.node.bpffs.clone(),
            name,
            cfg: Box::new(cfg.clone()),
            dir,
        };
        agent.write_config(cfg);
        agent.spawn(lab);
        agent
    }

    /// The config last written (what the agent runs once it has read it).
    #[must_use]
    pub fn cfg(&self) -> &Config {
        &self.cfg
    }

    /// Writes `cfg` as the config file (read at the next start or reload).
    pub fn write_config(&mut self, cfg: Config) {
        std::fs::write(&self.config, to_toml(&cfg)).expect("write config");
        *self.cfg = cfg;
    }

    /// The agent's control socket.
    #[must_use]
    pub fn control_socket(&self) -> PathBuf {
        self.cfg.node.control_socket.clone()
    }

    /// One control-socket request.
    pub fn control(
        &self,
        command: vip_agent::control::Command,
    ) -> Result<vip_agent::control::Reply, vip_agent::control::ClientError> {
        vip_agent::control::request(&self.control_socket(), command, Duration::from_secs(10))
    }

    /// The agent's status through its control socket.
    #[must_use]
    pub fn status(&self) -> vip_agent::control::Status {
        let reply = self
            .control(vip_agent::control::Command::Status)
            .expect("status request");
        assert!(reply.ok, "status refused: {reply:?}");
        *reply.status.expect("status in the reply")
    }

    /// Starts the agent process (again) and waits for its `READY=1`.
    pub fn spawn(&mut self, lab: &Lab) {
        let sock_path = self.dir.0.join("notify.sock");
        let _ = std::fs::remove_file(&sock_path);
        let sock = UnixDatagram::bind(&sock_path).expect("notify socket");
        let mut cmd = crate::programs::command(sibling_bin("vip-agent")).expect("vip-agent");
        cmd.arg("--config")
            .arg(&self.config)
            .env("VIP_LOG", "info,netlink_packet_route=error")
            .env("NOTIFY_SOCKET", &sock_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(log) = &self.log {
            let file = std::fs::File::options()
                .create(true)
                .append(true)
                .open(log)
                .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
            cmd.stderr(file);
        }
        if let Some(journal) = &self.journal {
            cmd.args(["--log-format", "journald"]);
            crate::sys::with_journal_at(&mut cmd, journal).expect("journal mount namespace");
        }
        self.child = Some(
            lab.spawn_unmanaged(&self.node, cmd)
                .expect("spawn vip-agent"),
        );
        self.wait_ready(&sock, Duration::from_secs(20));
        self.notify = Some(sock);
    }

    /// SIGKILL: the agent dies without cleaning up.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL vip-agent");
        child.wait().expect("wait vip-agent");
    }

    #[must_use]
    pub fn pins(&self) -> PathBuf {
        pin_dir(&self.bpffs, &self.name)
    }

    #[must_use]
    pub fn maps(&self) -> Maps {
        Maps::open_pinned(&self.pins()).expect("open pinned maps")
    }

    /// Whether this node's VIP table marks `vip` active (its VRRP instance
    /// is master).
    #[must_use]
    pub fn holds(&self, vip: Ipv4Addr) -> bool {
        self.maps()
            .vips()
            .ok()
            .and_then(|v| v.get(&vip).map(|s| s.active == 1))
            .unwrap_or(false)
    }

    /// The last `lines` lines of the agent's log file (empty unless
    /// [`Setup::log_to_file`]).
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        self.log
            .as_deref()
            .map_or_else(String::new, |log| tail(log, lines))
    }

    fn wait_ready(&mut self, sock: &UnixDatagram, limit: Duration) {
        let deadline = Instant::now() + limit;
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let mut buf = [0u8; 256];
        loop {
            if let Ok(n) = sock.recv(&mut buf)
                && buf[..n].split(|b| *b == b'\n').any(|l| l == b"READY=1")
            {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            let failed = match exited {
                Some(st) => format!("exited early with {st}"),
                None if Instant::now() >= deadline => format!("was not ready within {limit:?}"),
                None => continue,
            };
            let log = self.log_tail(10);
            let log = if log.is_empty() {
                log
            } else {
                format!(":\n{log}")
            };
            panic!("vip-agent in {} {failed}{log}", self.node);
        }
    }

    /// Writes `cfg`, sends SIGHUP and waits until the agent says the reload
    /// is done (`READY=1` after `RELOADING=1`).
    pub fn reload_config(&mut self, cfg: Config) {
        self.write_config(cfg);
        let pid = self.child.as_ref().expect("running").id();
        assert!(signal(pid, libc::SIGHUP), "SIGHUP");
        let sock = self.notify.take().expect("notify socket");
        self.wait_ready(&sock, Duration::from_secs(20));
        self.notify = Some(sock);
    }

    /// [`Agent::reload_config`] with the first service's backends replaced
    /// by `backends` (address, weight).
    pub fn reload(&mut self, backends: &[(&str, u32)]) {
        let mut cfg = self.cfg().clone();
        cfg.services[0].backends = backends
            .iter()
            .map(|(a, w)| super::config::backend(a, *w))
            .collect();
        self.reload_config(cfg);
    }

    /// SIGTERM and wait: a clean shutdown.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = signal(child.id(), libc::SIGTERM);
        child.wait().expect("wait vip-agent")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The bpffs this agent mounted (absent if it never got that far).
        let _ = crate::sys::unmount_lazy(&self.bpffs);
    }
}
