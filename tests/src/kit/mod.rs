//! The test kit the netns integration tests and the benches share: starting
//! agents in lab namespaces with a private bpffs ([`Agent`]) and the peer
//! stack beside them ([`Keepalived`], [`Haproxy`]), talking to lab backends
//! from the client, directories removed on drop, and waiting on conditions
//! with deadlines. Behind the `agent` feature (on by default): xtask builds
//! this library without it, before the eBPF toolchain that vip-agent needs
//! exists.

mod agent;
pub mod config;
mod peers;
mod process;

pub use agent::{Agent, Setup};
pub use peers::{Haproxy, Keepalived, Vrrp};
pub use process::{rss_kib, signal};

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::lab::{Lab, LabOptions, default_backend_bin};

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

/// Polls `f` every `step` until it returns `Some`, or gives up (`None`)
/// once `limit` has passed.
pub fn poll<T>(limit: Duration, step: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(step);
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll(limit, Duration::from_millis(10), f)
        .unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
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

/// `/run/vip-test/<lab prefix>-<what>`: where the kit keeps `what` (an
/// agent's files are in the directory of its name).
#[must_use]
pub fn agent_dir(lab: &Lab, what: &str) -> PathBuf {
    PathBuf::from(format!("/run/vip-test/{}-{what}", lab.prefix()))
}

/// A directory removed on drop, even when the test panics.
pub struct DirGuard(pub PathBuf);

impl DirGuard {
    #[must_use]
    pub fn new(path: PathBuf) -> Self {
        std::fs::create_dir_all(&path).expect("create test dir");
        Self(path)
    }

    /// [`agent_dir`]: a directory of this lab's.
    #[must_use]
    pub fn for_lab(lab: &Lab, what: &str) -> Self {
        Self::new(agent_dir(lab, what))
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// When each VRRP advert from `from` with a priority above 0 reached
/// `node`'s namespace (a raw socket of the caller's, stamped on receipt),
/// until `stop` is set.
pub fn hear_adverts(
    lab: &Lab,
    node: &str,
    from: Ipv4Addr,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Instant>> {
    let stop = Arc::clone(stop);
    lab.spawn_thread_in(node, move || {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112))).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut seen = Vec::new();
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(n) = s.recv(&mut buf) {
                let at = Instant::now();
                // SAFETY: recv initialised the first n bytes.
                let b: Vec<u8> = buf[..n]
                    .iter()
                    .map(|x| unsafe { x.assume_init() })
                    .collect();
                let ihl = usize::from(b[0] & 0x0f) * 4;
                if n > ihl + 2
                    && Ipv4Addr::new(b[12], b[13], b[14], b[15]) == from
                    && b[ihl + 2] > 0
                {
                    seen.push(at);
                }
            }
        }
        seen
    })
}

/// The longest time between two consecutive `times`.
#[must_use]
pub fn longest_gap(times: &[Instant]) -> Option<Duration> {
    times.windows(2).map(|p| p[1] - p[0]).max()
}

/// The body of `GET /metrics` from `node`'s loopback, port `port` (where
/// its agent serves `[node] metrics`), checked to be `OpenMetrics` text.
#[must_use]
pub fn metrics_text(lab: &Lab, node: &str, port: u16) -> String {
    use std::io::{Read as _, Write as _};
    let text = lab.run_in(node, || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: vip\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Type: application/openmetrics-text"),
        "{head}"
    );
    body.to_owned()
}

/// [`metrics_text`]'s samples keyed `name{label=value,...}`, labels sorted.
#[must_use]
pub fn scrape(lab: &Lab, node: &str, port: u16) -> std::collections::BTreeMap<String, f64> {
    let body = metrics_text(lab, node, port);
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    assert!(parsed.samples.len() > 20, "{body}");
    parsed
        .samples
        .into_iter()
        .map(|s| {
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                other => panic!("unexpected sample {other:?}"),
            };
            (format!("{}{{{}}}", s.metric, labels.join(",")), value)
        })
        .collect()
}
