//! Failover gap: vip beside keepalived 2.2.7 + `HAProxy` (the seeds' stack), in
//! one run, under the same VRRP version (v3, multicast, vrid 51, priorities
//! lb1 150 / lb2 100, preempt) and advert interval (10 ms, 100 ms, 1 s), for
//! three faults of the master lb1: kill -9, SIGTERM and link down.
//!
//! Run it with `cargo xtask bench`, which builds the release binaries it
//! starts (a bare `cargo bench` does not rebuild `vip-agent`).
//!
//! Each trial builds a fresh lab and starts fresh daemons, waits until lb1 is
//! master and the client's ARP entry for the VIP names lb1, starts a prober in
//! the client namespace (a non-blocking TCP connect to VIP:5672 started every
//! 1 ms, several in flight, 20 ms connect timeout, then the backend's one-line
//! greeting), waits a random phase in `[0, advert interval)`, injects the
//! fault, waits until the client's ARP entry names lb2 and then 3 × interval
//! + 300 ms, and stops the prober.
//!
//! - **gap**: the longest stretch without a successful probe, from the last
//!   success before the fault to the end of the trial. When service stops at
//!   the fault (SIGTERM, link down) this is the first success after the
//!   fault minus the last one before it; after kill -9 lb1 may keep serving
//!   for a while (keepalived's VIP stays on lb1 and `HAProxy` keeps running;
//!   vip's XDP forwards until its heartbeat is older than `Master_Down`), and
//!   the gap is wherever service actually stopped.
//! - **takeover**: fault to the first successful probe sent while the
//!   client's ARP entry named lb2.
//! - **no recovery**: no success through lb2 after the fault, or the probe
//!   stopped succeeding before the end; counted, left out of the statistics.
//!
//! `VIP_BENCH_TRIALS` sets the trials per cell (default 10), `VIP_BENCH_QUICK=1`
//! runs only 10 ms adverts with 3 trials. The markdown goes to stdout and is
//! appended to `VIP_BENCH_REPORT` when set. Run with `cargo xtask bench`.
#![allow(
    clippy::too_many_lines,
    reason = "scenario benches read best as one story"
)]

use vip_tests::kit as common;

use std::{
    fmt::Write as _,
    net::UdpSocket,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use common::{VIP, is_root, sibling_bin};
use vip_agent::dataplane::{Maps, pin_dir};
use vip_tests::{frames::Rng, lab::Lab, programs};

const BACKENDS: [(&str, u32); 3] = [("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)];
const PROBE_PERIOD: Duration = Duration::from_millis(1);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(20);
const GREETING_TIMEOUT: Duration = Duration::from_millis(50);
/// The last successful probe must be this close to the prober's end.
const TAIL_LIMIT: Duration = Duration::from_millis(200);
/// Successful probes before the fault, at least.
const WARMUP_PROBES: usize = 20;
const SEED: u64 = 0x5eed_fa11_0c0e_0051;
const LB1_LAST: u8 = 0x02;
const LB2_LAST: u8 = 0x03;
/// `ATF_COM` from `<net/if_arp.h>`: a completed entry (not in libc).
const ATF_COM: libc::c_int = 0x02;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stack {
    Vip,
    Peer,
}

impl Stack {
    fn name(self) -> &'static str {
        match self {
            Self::Vip => "vip",
            Self::Peer => "keepalived+HAProxy",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    Kill9,
    Term,
    LinkDown,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Self::Kill9 => "kill -9",
            Self::Term => "SIGTERM",
            Self::LinkDown => "link down",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Outcome {
    gap: Duration,
    takeover: Duration,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn fmt_interval(d: Duration) -> String {
    if d >= Duration::from_secs(1) && d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// keepalived's `advert_int` (seconds, centisecond resolution).
fn advert_int(d: Duration) -> String {
    let cs = d.as_millis() / 10;
    format!("{}.{:02}", cs / 100, cs % 100)
}

/// Polls `f` every `step` until it is true or `limit` passes.
fn poll_until(limit: Duration, step: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(step);
    }
}

fn signal(pid: u32, sig: libc::c_int) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) on a PID this bench started (or read from its pid file
    // and checked against its start time).
    unsafe { libc::kill(pid, sig) == 0 }
}

/// SIGTERM, up to 2 s to exit, then SIGKILL; always reaps.
fn terminate(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child.id(), libc::SIGTERM);
    let gone = poll_until(Duration::from_secs(2), Duration::from_millis(5), || {
        matches!(child.try_wait(), Ok(Some(_)) | Err(_))
    });
    if !gone {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Field 22 of `/proc/PID/stat` (start time in clock ticks), to tell a
/// process from a later one that reused its PID.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The MAC the calling thread's namespace has for the VIP on eth0, if the
/// entry is complete (SIOCGARP: one syscall, cheap enough for every probe).
fn arp_mac(sock: &UdpSocket) -> Option<[u8; 6]> {
    // SAFETY: arpreq is plain old data; all zeroes is valid.
    let mut req: libc::arpreq = unsafe { std::mem::zeroed() };
    let sin = libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET).expect("small"),
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(VIP.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in fits in sockaddr (both 16 bytes); unaligned write.
    unsafe {
        std::ptr::write_unaligned((&raw mut req.arp_pa).cast::<libc::sockaddr_in>(), sin);
    }
    for (d, s) in req.arp_dev.iter_mut().zip(b"eth0") {
        *d = libc::c_char::try_from(*s).expect("ascii");
    }
    // SAFETY: a valid arpreq for SIOCGARP on our own socket.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGARP, &raw mut req) };
    if r != 0 || req.arp_flags & ATF_COM == 0 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(req.arp_ha.sa_data) {
        *m = d.to_ne_bytes()[0];
    }
    Some(mac)
}

fn client_arp_last(lab: &Lab) -> Option<u8> {
    lab.run_in("client", || {
        let sock = UdpSocket::bind("0.0.0.0:0").ok()?;
        arp_mac(&sock).map(|m| m[5])
    })
}

/// Takes `eth0` down in the calling thread's namespace (SIOCSIFFLAGS, the
/// same as `ip link set eth0 down`); returns the instant just before.
fn link_down_now() -> std::io::Result<Instant> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    // SAFETY: ifreq is plain old data; all zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"eth0") {
        *d = libc::c_char::try_from(*s).expect("ascii");
    }
    // SAFETY: a valid ifreq on our own socket.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled in the flags member.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags & !libc::c_short::try_from(libc::IFF_UP).expect("small");
    let at = Instant::now();
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &raw const req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(at)
}

/// One probe in flight: a non-blocking connect to VIP:5672, then the
/// backend's greeting line.
struct Attempt {
    fd: OwnedFd,
    started: Instant,
    /// Whether the client's ARP entry named lb2 when the probe started.
    via_lb2: bool,
    /// When the connect completed.
    connected: Option<Instant>,
}

impl Attempt {
    fn start(via_lb2: bool) -> Option<Self> {
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let addr = libc::sockaddr_in {
            sin_family: libc::sa_family_t::try_from(libc::AF_INET).expect("small"),
            sin_port: 5672u16.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(VIP.octets()),
            },
            sin_zero: [0; 8],
        };
        let len =
            libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>()).expect("small");
        let started = Instant::now();
        // SAFETY: a valid address of `len` bytes.
        let r = unsafe { libc::connect(fd.as_raw_fd(), (&raw const addr).cast(), len) };
        let in_progress =
            r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EINPROGRESS);
        in_progress.then_some(Self {
            fd,
            started,
            via_lb2,
            connected: None,
        })
    }

    /// What `revents` at `now` mean: `Some(true)` greeted, `Some(false)`
    /// failed or timed out, `None` still waiting.
    fn advance(&mut self, revents: libc::c_short, now: Instant) -> Option<bool> {
        let raw = self.fd.as_raw_fd();
        let Some(connected) = self.connected else {
            if revents == 0 {
                return (now - self.started > CONNECT_TIMEOUT).then_some(false);
            }
            let mut err: libc::c_int = 0;
            let mut len =
                libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).expect("small");
            // SAFETY: SO_ERROR into a c_int of `len` bytes.
            let r = unsafe {
                libc::getsockopt(
                    raw,
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&raw mut err).cast(),
                    &raw mut len,
                )
            };
            if r != 0 || err != 0 {
                return Some(false);
            }
            self.connected = Some(now);
            return None;
        };
        if revents == 0 {
            return (now - connected > GREETING_TIMEOUT).then_some(false);
        }
        let mut buf = [0u8; 64];
        // SAFETY: a valid buffer.
        let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
        match usize::try_from(n) {
            Ok(0) => Some(false),
            Ok(n) => buf[..n].contains(&b'\n').then_some(true),
            Err(_) => (std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN))
                .then_some(false),
        }
    }
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    successes: AtomicUsize,
    saw_lb2: AtomicBool,
}

struct ProbeLog {
    /// Successful probes: when the greeting arrived, and whether the
    /// client's ARP entry named lb2 when the probe started.
    ok: Vec<(Instant, bool)>,
    end: Instant,
}

/// The prober thread in the client namespace; stopped and joined on drop.
struct Prober {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<ProbeLog>>,
}

impl Prober {
    fn start(lab: &Lab) -> Self {
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let handle = lab.spawn_thread_in("client", move || {
            let mut ok = Vec::with_capacity(16_384);
            let arp = UdpSocket::bind("0.0.0.0:0").expect("a socket for SIOCGARP");
            let deadline = Instant::now() + Duration::from_mins(1);
            let mut inflight: Vec<Attempt> = Vec::new();
            let mut pfds: Vec<libc::pollfd> = Vec::new();
            let mut next = Instant::now();
            // A probe starts every PROBE_PERIOD whatever the others do, so
            // one waiting out its connect timeout does not blind the prober.
            while !s.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let now = Instant::now();
                if now >= next {
                    let via_lb2 = arp_mac(&arp).is_some_and(|m| m[5] == LB2_LAST);
                    if via_lb2 {
                        s.saw_lb2.store(true, Ordering::Relaxed);
                    }
                    inflight.extend(Attempt::start(via_lb2));
                    next += PROBE_PERIOD;
                    if next < now {
                        next = now + PROBE_PERIOD;
                    }
                }
                pfds.clear();
                pfds.extend(inflight.iter().map(|a| libc::pollfd {
                    fd: a.fd.as_raw_fd(),
                    events: if a.connected.is_some() {
                        libc::POLLIN
                    } else {
                        libc::POLLOUT
                    },
                    revents: 0,
                }));
                let wait = next.saturating_duration_since(Instant::now());
                let ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::c_long::from(wait.subsec_nanos()),
                };
                let nfds = libc::nfds_t::try_from(pfds.len()).expect("small");
                // SAFETY: `pfds` holds `nfds` valid entries; no signal mask.
                unsafe { libc::ppoll(pfds.as_mut_ptr(), nfds, &raw const ts, std::ptr::null()) };
                let now = Instant::now();
                // Backwards, so swap_remove only moves entries already seen.
                for i in (0..inflight.len()).rev() {
                    match inflight[i].advance(pfds[i].revents, now) {
                        Some(true) => {
                            ok.push((now, inflight[i].via_lb2));
                            s.successes.fetch_add(1, Ordering::Relaxed);
                            inflight.swap_remove(i);
                        }
                        Some(false) => {
                            inflight.swap_remove(i);
                        }
                        None => {}
                    }
                }
            }
            ProbeLog {
                ok,
                end: Instant::now(),
            }
        });
        Self {
            shared,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Result<ProbeLog, String> {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("running")
            .join()
            .map_err(|_| "the prober panicked".to_owned())
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn analyse(log: &ProbeLog, fault: Instant) -> Result<Outcome, String> {
    let before = log
        .ok
        .iter()
        .rev()
        .find(|(t, _)| *t <= fault)
        .ok_or("no successful probe before the fault")?
        .0;
    let after: Vec<&(Instant, bool)> = log.ok.iter().filter(|(t, _)| *t > fault).collect();
    let first_lb2 = after
        .iter()
        .find(|(_, lb2)| *lb2)
        .ok_or("no recovery: no successful probe through lb2 after the fault")?
        .0;
    let last = after.last().expect("one at least").0;
    let tail = log.end.saturating_duration_since(last);
    if tail > TAIL_LIMIT {
        return Err(format!(
            "no recovery: no successful probe in the last {:.0} ms",
            ms(tail)
        ));
    }
    let mut gap = Duration::ZERO;
    let mut prev = before;
    for (t, _) in &after {
        gap = gap.max(*t - prev);
        prev = *t;
    }
    Ok(Outcome {
        gap,
        takeover: first_lb2 - fault,
    })
}

/// A per-trial directory under /run, removed on drop.
struct TrialDir(PathBuf);

impl TrialDir {
    fn new(prefix: &str) -> Result<Self, String> {
        let dir = PathBuf::from(format!("/run/vip-bench/{prefix}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TrialDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// keepalived (VRRP only) in a lab node, run as PEERS.md says; stopped on
/// drop (SIGTERM to the parent, SIGKILL after 2 s, and the VRRP child by PID
/// if it outlived its parent).
struct Keepalived {
    parent: Child,
    vrrp_pid_file: PathBuf,
    /// The VRRP child's PID and start time, once read.
    vrrp: Option<(u32, u64)>,
    log: PathBuf,
}

impl Keepalived {
    fn start(
        lab: &Lab,
        node: &str,
        dir: &Path,
        priority: u8,
        interval: Duration,
    ) -> Result<Self, String> {
        let conf = format!(
            "global_defs {{\n    router_id {node}\n    vrrp_version 3\n    max_auto_priority\n}}\n\
             vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 51\n    priority {priority}\n    advert_int {}\n    virtual_ipaddress {{\n        {VIP}/32\n    }}\n}}\n",
            advert_int(interval)
        );
        let path = dir.join(format!("keepalived-{node}.conf"));
        std::fs::write(&path, conf).map_err(|e| format!("{}: {e}", path.display()))?;
        let log = dir.join(format!("keepalived-{node}.log"));
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let vrrp_pid_file = dir.join(format!("vrrp-{node}.pid"));
        let mut cmd = programs::command("keepalived").map_err(|e| format!("{e:#}"))?;
        cmd.args(["-n", "-P", "-B", "-l", "-D", "-G", "-f"])
            .arg(&path)
            .arg("-p")
            .arg(dir.join(format!("keepalived-{node}.pid")))
            .arg("-r")
            .arg(&vrrp_pid_file)
            .arg("-c")
            .arg(dir.join(format!("checkers-{node}.pid")))
            .arg("-b")
            .arg(dir.join(format!("bfd-{node}.pid")))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let parent = lab
            .spawn_unmanaged(node, cmd)
            .map_err(|e| format!("cannot start keepalived in {node}: {e:#}"))?;
        Ok(Self {
            parent,
            vrrp_pid_file,
            vrrp: None,
            log,
        })
    }

    /// Reads the VRRP child's PID from the `-r` file and checks that it is a
    /// live child of our keepalived.
    fn find_vrrp_child(&mut self) -> Result<(), String> {
        let found = poll_until(Duration::from_secs(2), Duration::from_millis(5), || {
            let Some(pid) = std::fs::read_to_string(&self.vrrp_pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            else {
                return false;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let parent_pid = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if parent_pid != Some(self.parent.id()) {
                return false;
            }
            self.vrrp = start_time(pid).map(|t| (pid, t));
            self.vrrp.is_some()
        });
        if found {
            Ok(())
        } else {
            Err(format!(
                "no VRRP child of keepalived (pid {}) in {}; log:\n{}",
                self.parent.id(),
                self.vrrp_pid_file.display(),
                tail(&self.log, 20)
            ))
        }
    }

    /// Whether the VRRP child read earlier is still that process.
    fn vrrp_alive(&self) -> Option<u32> {
        let (pid, t) = self.vrrp?;
        (start_time(pid) == Some(t)).then_some(pid)
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        terminate(&mut self.parent);
        if let Some(pid) = self.vrrp_alive() {
            signal(pid, libc::SIGKILL);
        }
    }
}

/// A process we own (`HAProxy`); stopped on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        terminate(&mut self.0);
    }
}

fn haproxy(lab: &Lab, node: &str, dir: &Path) -> Result<Daemon, String> {
    let mut servers = String::new();
    for (i, (a, _)) in BACKENDS.iter().enumerate() {
        let _ = writeln!(servers, "    server b{} {a}:5672", i + 1);
    }
    let cfg = format!(
        "global\n\
         defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 60s\n    timeout server 60s\n\
         frontend amqp\n    bind {VIP}:5672\n    default_backend brokers\n\
         backend brokers\n    balance roundrobin\n{servers}"
    );
    let path = dir.join(format!("haproxy-{node}.cfg"));
    std::fs::write(&path, cfg).map_err(|e| format!("{}: {e}", path.display()))?;
    let log = dir.join(format!("haproxy-{node}.log"));
    let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = programs::command("haproxy").map_err(|e| format!("{e:#}"))?;
    cmd.arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let mut child = lab
        .spawn_unmanaged(node, cmd)
        .map_err(|e| format!("cannot start haproxy in {node}: {e:#}"))?;
    // Listening on VIP:5672 (nonlocal bind), or it failed.
    let listening = poll_until(Duration::from_secs(3), Duration::from_millis(5), || {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return true;
        }
        lab.ns(node)
            .run("ss", &["-Hltn", "sport = :5672"])
            .is_ok_and(|s| s.contains(&format!("{VIP}:5672")))
    });
    if let Ok(Some(st)) = child.try_wait() {
        return Err(format!(
            "haproxy in {node} exited with {st}:\n{}",
            tail(&log, 20)
        ));
    }
    let daemon = Daemon(child);
    if !listening {
        return Err(format!(
            "haproxy in {node} does not listen on {VIP}:5672:\n{}",
            tail(&log, 20)
        ));
    }
    Ok(daemon)
}

fn vrrp_section(priority: u8, interval: Duration) -> String {
    format!(
        "\n[[vrrp]]\nname = \"VI_1\"\nvrid = 51\nversion = 3\npriority = {priority}\nadvert_interval = \"{}ms\"\nvips = [\"{VIP}\"]\n",
        interval.as_millis()
    )
}

/// vip-agent in a lab node with its own bpffs and its log in the trial
/// directory (like the tests' `Agent`, which logs to our stderr); killed and
/// its bpffs unmounted on drop.
struct VipAgent {
    child: Option<Child>,
    bpffs: PathBuf,
    name: String,
    log: PathBuf,
}

impl VipAgent {
    fn start(lab: &Lab, node: &str, dir: &Path, extra: &str) -> Result<Self, String> {
        let bpffs = dir.join(format!("bpffs-{node}"));
        let config = dir.join(format!("vip-{node}.toml"));
        std::fs::write(
            &config,
            vip_tests::lab::agent_config(node, &bpffs, &BACKENDS) + extra,
        )
        .map_err(|e| format!("{}: {e}", config.display()))?;
        let sock_path = dir.join(format!("notify-{node}.sock"));
        let sock = std::os::unix::net::UnixDatagram::bind(&sock_path)
            .map_err(|e| format!("{}: {e}", sock_path.display()))?;
        let log = dir.join(format!("vip-{node}.log"));
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = programs::command(sibling_bin("vip-agent")).map_err(|e| format!("{e:#}"))?;
        cmd.arg("--config")
            .arg(&config)
            .env("VIP_LOG", "info,netlink_packet_route=error")
            .env("NO_COLOR", "1")
            .env("NOTIFY_SOCKET", &sock_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out);
        let child = lab
            .spawn_unmanaged(node, cmd)
            .map_err(|e| format!("cannot start vip-agent in {node}: {e:#}"))?;
        let mut agent = Self {
            child: Some(child),
            bpffs,
            name: node.to_owned(),
            log,
        };
        // READY=1 on the notify socket, within 20 s.
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 256];
        loop {
            if let Ok(n) = sock.recv(&mut buf)
                && buf[..n].split(|b| *b == b'\n').any(|l| l == b"READY=1")
            {
                return Ok(agent);
            }
            if let Some(st) = agent
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "vip-agent in {node} exited with {st}:\n{}",
                    tail(&agent.log, 10)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "vip-agent in {node} was not ready within 20 s:\n{}",
                    tail(&agent.log, 10)
                ));
            }
        }
    }

    /// Whether the agent's VIP table marks the VIP active.
    fn active(&self) -> bool {
        Maps::open_pinned(&pin_dir(&self.bpffs, &self.name))
            .ok()
            .and_then(|m| m.vips().ok())
            .and_then(|v| v.get(&VIP).map(|s| s.active == 1))
            .unwrap_or(false)
    }
}

impl Drop for VipAgent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Ok(c) = std::ffi::CString::new(self.bpffs.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid C string; unmounting the bpffs this agent mounted.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

fn holds_vip(lab: &Lab, node: &str) -> bool {
    lab.ns(node)
        .ip(&["-4", "addr", "show", "dev", "eth0"])
        .unwrap_or_default()
        .contains(&format!("{VIP}/32"))
}

/// Field order is drop order: keepalived before `HAProxy`.
enum Daemons {
    Vip {
        lb1: VipAgent,
        lb2: VipAgent,
    },
    Peer {
        ka1: Keepalived,
        ka2: Keepalived,
        _ha1: Daemon,
        _ha2: Daemon,
    },
}

impl Daemons {
    fn start(lab: &Lab, dir: &Path, stack: Stack, interval: Duration) -> Result<Self, String> {
        match stack {
            Stack::Vip => {
                let lb1 = VipAgent::start(lab, "lb1", dir, &vrrp_section(150, interval))?;
                let lb2 = VipAgent::start(lab, "lb2", dir, &vrrp_section(100, interval))?;
                Ok(Self::Vip { lb1, lb2 })
            }
            Stack::Peer => {
                for node in ["lb1", "lb2"] {
                    lab.ns(node)
                        .sysctl("net.ipv4.ip_nonlocal_bind", "1")
                        .map_err(|e| format!("{e:#}"))?;
                }
                let ha1 = haproxy(lab, "lb1", dir)?;
                let ha2 = haproxy(lab, "lb2", dir)?;
                let ka1 = Keepalived::start(lab, "lb1", dir, 150, interval)?;
                let ka2 = Keepalived::start(lab, "lb2", dir, 100, interval)?;
                Ok(Self::Peer {
                    ka1,
                    ka2,
                    _ha1: ha1,
                    _ha2: ha2,
                })
            }
        }
    }

    fn lb1_master(&self, lab: &Lab) -> bool {
        match self {
            Self::Vip { lb1, lb2 } => lb1.active() && !lb2.active(),
            Self::Peer { .. } => holds_vip(lab, "lb1") && !holds_vip(lab, "lb2"),
        }
    }

    /// Anything to read before the fault, so the fault itself is quick.
    fn prepare(&mut self) -> Result<(), String> {
        if let Self::Peer { ka1, .. } = self {
            ka1.find_vrrp_child()?;
        }
        Ok(())
    }

    /// Injects the fault on lb1; returns the fault instant, taken just before.
    fn inject(&mut self, lab: &Lab, fault: Fault) -> Result<Instant, String> {
        if fault == Fault::LinkDown {
            return lab
                .run_in("lb1", link_down_now)
                .map_err(|e| format!("link down: {e}"));
        }
        match self {
            Self::Vip { lb1, .. } => {
                let pid = lb1
                    .child
                    .as_ref()
                    .ok_or("vip-agent on lb1 is not running")?
                    .id();
                let at = Instant::now();
                let sig = if fault == Fault::Kill9 {
                    libc::SIGKILL
                } else {
                    libc::SIGTERM
                };
                if !signal(pid, sig) {
                    return Err(format!("cannot signal vip-agent ({sig})"));
                }
                Ok(at)
            }
            Self::Peer { ka1, .. } => {
                let parent = ka1.parent.id();
                if fault == Fault::Kill9 {
                    // A real crash: the VRRP child, then the parent (SIGKILL of
                    // the parent alone makes the child send priority 0).
                    let child = ka1
                        .vrrp_alive()
                        .ok_or("keepalived's VRRP child is gone before the fault")?;
                    let at = Instant::now();
                    signal(child, libc::SIGKILL);
                    signal(parent, libc::SIGKILL);
                    Ok(at)
                } else {
                    let at = Instant::now();
                    if !signal(parent, libc::SIGTERM) {
                        return Err("cannot SIGTERM keepalived".into());
                    }
                    Ok(at)
                }
            }
        }
    }

    fn logs(&self) -> String {
        match self {
            Self::Vip { lb1, lb2 } => format!(
                "\nvip lb1:\n{}\nvip lb2:\n{}",
                tail(&lb1.log, 10),
                tail(&lb2.log, 10)
            ),
            Self::Peer { ka1, ka2, .. } => format!(
                "\nkeepalived lb1:\n{}\nkeepalived lb2:\n{}",
                tail(&ka1.log, 10),
                tail(&ka2.log, 10)
            ),
        }
    }
}

fn trial(
    stack: Stack,
    interval: Duration,
    fault: Fault,
    phase: Duration,
) -> Result<Outcome, String> {
    let lab = common::lab(match stack {
        Stack::Vip => "fov",
        Stack::Peer => "fok",
    });
    let dir = TrialDir::new(lab.prefix())?;
    let mut daemons = Daemons::start(&lab, &dir.0, stack, interval)?;

    // Election: lb1 becomes master after its Master_Down_Interval.
    let limit = interval * 5 + Duration::from_secs(3);
    if !poll_until(limit, Duration::from_millis(5), || daemons.lb1_master(&lab)) {
        return Err(format!(
            "lb1 was not the only master within {limit:?}{}",
            daemons.logs()
        ));
    }
    daemons.prepare()?;
    // One connect, then the client's ARP entry must name lb1.
    let ready = poll_until(Duration::from_secs(3), Duration::from_millis(10), || {
        lab.run_in("client", || common::who_answers(Duration::from_millis(200)))
            .is_ok()
            && client_arp_last(&lab) == Some(LB1_LAST)
    });
    if !ready {
        return Err(format!(
            "the client does not reach the VIP through lb1 (ARP: {:?}){}",
            client_arp_last(&lab),
            daemons.logs()
        ));
    }

    let prober = Prober::start(&lab);
    let warm = poll_until(Duration::from_secs(3), Duration::from_millis(1), || {
        prober.shared.successes.load(Ordering::Relaxed) >= WARMUP_PROBES
    });
    if !warm {
        return Err("the probe does not succeed before the fault".into());
    }
    std::thread::sleep(phase);
    let fault_at = daemons.inject(&lab, fault)?;
    let limit = interval * 5 + Duration::from_secs(2);
    let moved = poll_until(limit, Duration::from_millis(1), || {
        prober.shared.saw_lb2.load(Ordering::Relaxed)
    });
    if !moved {
        return Err(format!(
            "no recovery: the client's ARP entry did not name lb2 within {limit:?}"
        ));
    }
    std::thread::sleep(interval * 3 + Duration::from_millis(300));
    let log = prober.finish()?;
    analyse(&log, fault_at)
}

fn run_trial(
    stack: Stack,
    interval: Duration,
    fault: Fault,
    phase: Duration,
) -> Result<Outcome, String> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| trial(stack, interval, fault, phase))) {
        Ok(r) => r,
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .map_or_else(|| "panicked".to_owned(), |m| format!("panicked: {m}"))),
    }
}

#[derive(Default)]
struct Results {
    ok: Vec<Outcome>,
    errors: Vec<String>,
}

struct Cell {
    interval: Duration,
    fault: Fault,
    vip: Results,
    peer: Results,
}

/// min, median, max in ms.
fn stats(v: &[Duration]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut s: Vec<f64> = v.iter().map(|d| ms(*d)).collect();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        f64::midpoint(s[n / 2 - 1], s[n / 2])
    };
    Some((s[0], med, s[n - 1]))
}

fn fmt_stats(s: Option<(f64, f64, f64)>) -> String {
    s.map_or_else(
        || "-".to_owned(),
        |(a, b, c)| format!("{a:.1} / {b:.1} / {c:.1}"),
    )
}

fn ratio(a: Option<(f64, f64, f64)>, b: Option<(f64, f64, f64)>) -> String {
    match (a, b) {
        (Some((_, a, _)), Some((_, b, _))) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".to_owned(),
    }
}

fn version_line(program: &str, arg: &str) -> String {
    programs::command(program)
        .and_then(|mut c| Ok(c.arg(arg).output()?))
        .map(|o| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            text.lines().next().unwrap_or_default().trim().to_owned()
        })
        .unwrap_or_default()
}

fn report(cells: &[Cell], trials: usize, quick: bool, took: Duration) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n# vip benchmark: VRRP failover gap, vip vs keepalived + HAProxy\n"
    );
    let _ = writeln!(
        md,
        "Machine: {}. Peer: {}, {}. XDP: native on veth (netns lab). {trials} trials per cell{}, one run, {:.1} min.\n",
        vip_tests::machine_summary(),
        version_line("keepalived", "--version"),
        version_line("haproxy", "-v"),
        if quick {
            " (VIP_BENCH_QUICK: 10 ms adverts only)"
        } else {
            ""
        },
        took.as_secs_f64() / 60.0
    );
    let _ = writeln!(
        md,
        "Method: VRRPv3, multicast, vrid 51, lb1 priority 150 (master), lb2 100, preempt; both stacks with the same advert interval. \
         vip: vip-agent on lb1 and lb2 (XDP, DSR to b1..b3). Peer: keepalived 2.2.7 (`-n -P -B -l -D -G`, `advert_int` = the interval, \
         `virtual_ipaddress` {VIP}/32) plus HAProxy (`mode tcp`, `balance roundrobin`, b1..b3, nonlocal bind) on each LB. \
         Each trial: fresh lab and daemons; wait until lb1 is master and the client's ARP entry names lb1; a prober in the client \
         namespace starts a non-blocking TCP connect to {VIP}:5672 every {} ms, whatever the earlier ones do (each gives up after a {} ms connect timeout, \
         or {} ms more without the backend's greeting line; a probe succeeds when the greeting arrives); \
         after {WARMUP_PROBES} successes it waits a random phase in [0, interval) (xorshift, seed {SEED:#x}), takes CLOCK_MONOTONIC \
         and injects the fault on lb1; it waits until the client's ARP entry names lb2, then 3 × interval + 300 ms, and stops the prober.\n",
        PROBE_PERIOD.as_millis(),
        CONNECT_TIMEOUT.as_millis(),
        GREETING_TIMEOUT.as_millis()
    );
    let _ = writeln!(
        md,
        "Faults: **kill -9** = SIGKILL vip-agent / SIGKILL keepalived's VRRP child then its parent (a real crash; SIGKILL of the \
         parent alone makes the child send priority 0). **SIGTERM** = SIGTERM vip-agent / the keepalived parent. **link down** = \
         lb1's eth0 down (SIOCSIFFLAGS, as `ip link set eth0 down`). HAProxy keeps running in every case.\n"
    );
    let _ = writeln!(
        md,
        "**gap** = the longest stretch without a successful probe from the last success before the fault to the end of the trial \
         (for SIGTERM and link down: first success after the fault minus last before it). After kill -9 lb1 may keep serving \
         for a while (keepalived leaves the VIP on lb1 and HAProxy runs on; vip's XDP forwards until its heartbeat is 4.5 advert \
         intervals old), so the gap is wherever service actually stopped; **takeover** = fault to the first success sent while the \
         client's ARP entry named lb2. Probes overlap, so the resolution is the {} ms probe period, not the connect timeout. \
         **failures** = trials without recovery (no success through lb2, or none at the end) or that could not be set up; \
         they are left out of the statistics and listed below.\n",
        PROBE_PERIOD.as_millis()
    );
    let _ = writeln!(
        md,
        "The gap measures new connections only. HAProxy resets every established connection on failover (lb2 has no socket \
         for them: the client gets an RST); vip does not (both nodes build the same Maglev table and the backends answer \
         directly, so an established connection keeps working through the new master).\n"
    );
    let _ = writeln!(
        md,
        "| advert | fault | vip gap ms (min / med / max) | keepalived+HAProxy gap ms (min / med / max) | ratio vip/peer (medians) | failures vip / peer |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for c in cells {
        let v = stats(&c.vip.ok.iter().map(|o| o.gap).collect::<Vec<_>>());
        let p = stats(&c.peer.ok.iter().map(|o| o.gap).collect::<Vec<_>>());
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} / {} |",
            fmt_interval(c.interval),
            c.fault.name(),
            fmt_stats(v),
            fmt_stats(p),
            ratio(v, p),
            c.vip.errors.len(),
            c.peer.errors.len()
        );
    }
    let _ = writeln!(
        md,
        "\nTakeover (fault to the first answer through lb2), same trials:\n\n\
         | advert | fault | vip ms (min / med / max) | keepalived+HAProxy ms (min / med / max) | ratio vip/peer (medians) |\n|---|---|---|---|---|"
    );
    for c in cells {
        let v = stats(&c.vip.ok.iter().map(|o| o.takeover).collect::<Vec<_>>());
        let p = stats(&c.peer.ok.iter().map(|o| o.takeover).collect::<Vec<_>>());
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            fmt_interval(c.interval),
            c.fault.name(),
            fmt_stats(v),
            fmt_stats(p),
            ratio(v, p)
        );
    }
    let failures: Vec<String> = cells
        .iter()
        .flat_map(|c| {
            [(Stack::Vip, &c.vip), (Stack::Peer, &c.peer)]
                .into_iter()
                .flat_map(move |(s, r)| {
                    r.errors.iter().map(move |e| {
                        let lines: Vec<&str> =
                            e.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
                        let first = match lines.as_slice() {
                            [] => String::new(),
                            [one] => (*one).to_owned(),
                            [one, .., last] => format!("{one} … {last}"),
                        };
                        format!(
                            "- {} {} {}: {first}",
                            fmt_interval(c.interval),
                            c.fault.name(),
                            s.name()
                        )
                    })
                })
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(md, "\nFailures:\n\n{}", failures.join("\n"));
    }
    md
}

fn main() {
    if !is_root() {
        eprintln!(
            "skipping: the failover bench needs root (network namespaces): run `cargo xtask bench`"
        );
        return;
    }
    programs::set_job(programs::Job::Bench);
    for peer in ["keepalived", "haproxy"] {
        if let Err(e) = programs::check(peer.as_ref()) {
            eprintln!("failover bench: {e:#}");
            std::process::exit(1);
        }
    }
    let quick = std::env::var("VIP_BENCH_QUICK").is_ok_and(|v| v == "1");
    let trials = std::env::var("VIP_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(if quick { 3 } else { 10 });
    let intervals: &[Duration] = if quick {
        &[Duration::from_millis(10)]
    } else {
        &[
            Duration::from_millis(10),
            Duration::from_millis(100),
            Duration::from_secs(1),
        ]
    };
    let total = intervals.len() * 3 * trials * 2;
    let mut rng = Rng::new(SEED);
    let started = Instant::now();
    let mut done = 0;
    let mut cells = Vec::new();
    for &interval in intervals {
        for fault in [Fault::Kill9, Fault::Term, Fault::LinkDown] {
            let mut cell = Cell {
                interval,
                fault,
                vip: Results::default(),
                peer: Results::default(),
            };
            for _ in 0..trials {
                // Alternate the stacks so both see the same machine noise.
                for stack in [Stack::Vip, Stack::Peer] {
                    let us = u64::try_from(interval.as_micros()).expect("small");
                    let phase = Duration::from_micros(rng.below(us));
                    let r = run_trial(stack, interval, fault, phase);
                    done += 1;
                    match &r {
                        Ok(o) => eprintln!(
                            "[{done}/{total} {:.0}s] {} {} {}: gap {:.1} ms, takeover {:.1} ms",
                            started.elapsed().as_secs_f64(),
                            fmt_interval(interval),
                            fault.name(),
                            stack.name(),
                            ms(o.gap),
                            ms(o.takeover)
                        ),
                        Err(e) => eprintln!(
                            "[{done}/{total} {:.0}s] {} {} {}: FAILED: {e}",
                            started.elapsed().as_secs_f64(),
                            fmt_interval(interval),
                            fault.name(),
                            stack.name()
                        ),
                    }
                    let results = match stack {
                        Stack::Vip => &mut cell.vip,
                        Stack::Peer => &mut cell.peer,
                    };
                    match r {
                        Ok(o) => results.ok.push(o),
                        Err(e) => results.errors.push(e),
                    }
                }
            }
            cells.push(cell);
        }
    }
    // The trials' directories are gone; their parent too, if empty.
    let _ = std::fs::remove_dir("/run/vip-bench");
    let md = report(&cells, trials, quick, started.elapsed());
    println!("{md}");
    if let Some(path) = std::env::var_os("VIP_BENCH_REPORT") {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open the report");
        f.write_all(md.as_bytes()).expect("append to the report");
    }
}
