//! The test kit the netns integration tests and the benches share: starting
//! agents in lab namespaces with a private bpffs, talking to lab backends
//! from the client, and waiting on conditions with deadlines. Behind the
//! `agent` feature (on by default): xtask builds this library without it,
//! before the eBPF toolchain that vip-agent needs exists.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use crate::lab::{Lab, LabOptions, default_backend_bin};
use vip_agent::dataplane::{Maps, pin_dir};

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);

#[must_use]
pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A binary built next to this test's binary (`cargo xtask test` builds them).
pub fn sibling_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is not built: run `cargo xtask test` (it builds the binaries first)",
        bin.display()
    );
    bin
}

#[must_use]
pub fn lab(tag: &str) -> Lab {
    let mut opts = LabOptions::unique(tag);
    opts.backend_bin = default_backend_bin();
    Lab::up(opts).expect("lab up")
}

/// A vip-agent running in a lab node, with its own bpffs; killed and
/// unmounted on drop.
pub struct Agent {
    pub child: Option<Child>,
    notify: Option<std::os::unix::net::UnixDatagram>,
    node_extra: String,
    extra: String,
    pub node: String,
    pub config: PathBuf,
    pub bpffs: PathBuf,
    pub name: String,
    dir: PathBuf,
}

pub use crate::lab::agent_config as config_text;

impl Agent {
    /// Starts vip-agent in `node` of `lab` and waits until XDP is attached
    /// (its link is pinned) and the service's table is live.
    pub fn start(lab: &Lab, node: &str, name: &str, backends: &[(&str, u32)]) -> Self {
        Self::start_with(lab, node, name, backends, "")
    }

    /// Like [`Agent::start`], with `extra` TOML appended to the config
    /// (kept on reloads).
    pub fn start_with(
        lab: &Lab,
        node: &str,
        name: &str,
        backends: &[(&str, u32)],
        extra: &str,
    ) -> Self {
        Self::start_full(lab, node, name, backends, "", extra)
    }

    /// Like [`Agent::start_with`], with `node_extra` lines added to `[node]`
    /// (kept on reloads too).
    pub fn start_full(
        lab: &Lab,
        node: &str,
        name: &str,
        backends: &[(&str, u32)],
        node_extra: &str,
        extra: &str,
    ) -> Self {
        let dir = PathBuf::from(format!("/run/vip-test/{}-{name}", lab.prefix()));
        std::fs::create_dir_all(&dir).expect("test dir");
        let bpffs = dir.join("bpffs");
        let config = dir.join("vip.toml");
        let mut agent = Self {
            child: None,
            notify: None,
            node_extra: node_extra.to_owned(),
            extra: extra.to_owned(),
            node: node.to_owned(),
            config,
            bpffs,
            name: name.to_owned(),
            dir,
        };
        std::fs::write(&agent.config, agent.text(backends)).expect("write config");
        agent.spawn(lab);
        agent
    }

    /// The config file's text for `backends`, with this agent's extras.
    #[must_use]
    pub fn text(&self, backends: &[(&str, u32)]) -> String {
        config_text(&self.name, &self.bpffs, backends).replacen(
            "[node]\n",
            &format!("[node]\n{}", self.node_extra),
            1,
        ) + &self.extra
    }

    /// The agent's control socket.
    #[must_use]
    pub fn control_socket(&self) -> PathBuf {
        crate::lab::control_socket(&self.name, &self.bpffs)
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
        let sock_path = self.dir.join("notify.sock");
        let _ = std::fs::remove_file(&sock_path);
        let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("notify socket");
        let mut cmd = crate::programs::command(sibling_bin("vip-agent")).expect("vip-agent");
        cmd.arg("--config")
            .arg(&self.config)
            .env("VIP_LOG", "info,netlink_packet_route=error")
            .env("NOTIFY_SOCKET", &sock_path)
            .stdout(Stdio::null());
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

    fn wait_ready(&mut self, sock: &std::os::unix::net::UnixDatagram, limit: Duration) {
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
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("vip-agent exited early with {st}");
            }
            assert!(
                Instant::now() < deadline,
                "vip-agent was not ready within {limit:?}"
            );
        }
    }

    /// Rewrites the config, sends SIGHUP and waits until the agent says the
    /// reload is done (`READY=1` after `RELOADING=1`).
    pub fn reload(&mut self, backends: &[(&str, u32)]) {
        std::fs::write(&self.config, self.text(backends)).expect("write config");
        let pid = i32::try_from(self.child.as_ref().expect("running").id()).expect("pid");
        // SAFETY: signalling our own child by PID.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0, "SIGHUP");
        let sock = self.notify.take().expect("notify socket");
        self.wait_ready(&sock, Duration::from_secs(20));
        self.notify = Some(sock);
    }

    /// SIGTERM and wait: a clean shutdown.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = i32::try_from(child.id()).expect("pid");
        // SAFETY: signalling our own child by PID.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        child.wait().expect("wait vip-agent")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Ok(c) = std::ffi::CString::new(self.bpffs.as_os_str().as_encoded_bytes()) {
            // SAFETY: valid C string; unmounting a bpffs this test mounted.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Connects to VIP:5672 and returns the backend's greeting ("b1"...), or an error.
pub fn who_answers(timeout: Duration) -> std::io::Result<(String, TcpStream)> {
    let addr = SocketAddr::from((VIP, 5672));
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed before greeting",
        ));
    }
    Ok((line.trim_end().to_owned(), stream))
}

/// Asks an open connection who it is talking to: sends "LINE", expects
/// "<backend> LINE".
pub fn ask(stream: &mut TcpStream, line: &str) -> std::io::Result<String> {
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut reply)?;
    if reply.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    let reply = reply.trim_end();
    let (who, echoed) = reply.split_once(' ').unwrap_or((reply, ""));
    assert_eq!(echoed, line, "backend echoed something else: {reply:?}");
    Ok(who.to_owned())
}

/// Polls `f` until it returns `Some`, or panics with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends one ICMP echo request to `dst` from a raw socket and waits for the
/// matching reply; returns the round trip. Root only.
pub fn ping(dst: Ipv4Addr, ident: u16, timeout: Duration) -> std::io::Result<Duration> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fd we own.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let request = crate::frames::icmp_echo(8, ident, 1, b"vip-ping");
    let addr = libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET).expect("small"),
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst.octets()),
        },
        sin_zero: [0; 8],
    };
    let start = Instant::now();
    let len = u32::try_from(std::mem::size_of::<libc::sockaddr_in>()).expect("small");
    // SAFETY: valid buffer and address.
    if unsafe {
        libc::sendto(
            raw,
            request.as_ptr().cast(),
            request.len(),
            0,
            (&raw const addr).cast(),
            len,
        )
    } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    while start.elapsed() < timeout {
        let mut pfd = libc::pollfd {
            fd: raw,
            events: libc::POLLIN,
            revents: 0,
        };
        let left = i32::try_from(timeout.saturating_sub(start.elapsed()).as_millis().max(1))
            .unwrap_or(1000);
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&raw mut pfd, 1, left) } <= 0 {
            continue;
        }
        let mut buf = [0u8; 256];
        // SAFETY: valid buffer.
        let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(n) = usize::try_from(n) else { continue };
        // Raw ICMP sockets get the IP header too.
        let ihl = usize::from(buf[0] & 0x0f) * 4;
        if n >= ihl + 8
            && buf[12..16] == dst.octets()
            && buf[ihl] == 0
            && buf[ihl + 4..ihl + 6] == ident.to_be_bytes()
        {
            assert_eq!(
                crate::frames::checksum(&buf[ihl..n]),
                0,
                "echo reply checksum"
            );
            assert_eq!(
                crate::frames::checksum(&buf[..ihl]),
                0,
                "IP header checksum"
            );
            return Ok(start.elapsed());
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no echo reply",
    ))
}

/// A directory removed on drop, even when the test panics.
pub struct DirGuard(pub PathBuf);

impl DirGuard {
    #[must_use]
    pub fn new(path: PathBuf) -> Self {
        std::fs::create_dir_all(&path).expect("create test dir");
        Self(path)
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
