//! The client's prober and what its log says. A non-blocking TCP connect to
//! VIP:5672 starts every [`PROBE_PERIOD`], several in flight, each with a
//! [`CONNECT_TIMEOUT`] and then a [`GREETING_TIMEOUT`] for the backend's
//! one-line greeting; a probe succeeds when the greeting arrives, and it is
//! marked with whether the client's ARP entry for the VIP named lb2 when it
//! started. [`analyse`] turns the successes into the gap and the takeover.

use std::{
    net::UdpSocket,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use vip_tests::{kit::VIP, lab::Lab};

pub const PROBE_PERIOD: Duration = Duration::from_millis(1);
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(20);
pub const GREETING_TIMEOUT: Duration = Duration::from_millis(50);
/// The last successful probe must be this close to the prober's end.
const TAIL_LIMIT: Duration = Duration::from_millis(200);
/// The last byte of lb1's and lb2's MACs.
pub const LB1_LAST: u8 = 0x02;
const LB2_LAST: u8 = 0x03;
/// `ATF_COM` from `<net/if_arp.h>`: a completed entry (not in libc).
const ATF_COM: libc::c_int = 0x02;

#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    pub gap: Duration,
    pub takeover: Duration,
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
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

pub fn client_arp_last(lab: &Lab) -> Option<u8> {
    lab.run_in("client", || {
        let sock = UdpSocket::bind("0.0.0.0:0").ok()?;
        arp_mac(&sock).map(|m| m[5])
    })
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

pub struct ProbeLog {
    /// Successful probes: when the greeting arrived, and whether the
    /// client's ARP entry named lb2 when the probe started.
    ok: Vec<(Instant, bool)>,
    end: Instant,
}

/// The prober thread in the client namespace; stopped and joined on drop.
pub struct Prober {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<ProbeLog>>,
}

impl Prober {
    pub fn start(lab: &Lab) -> Self {
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

    /// Successful probes so far.
    pub fn successes(&self) -> usize {
        self.shared.successes.load(Ordering::Relaxed)
    }

    /// Whether a probe has started while the client's ARP entry named lb2.
    pub fn saw_lb2(&self) -> bool {
        self.shared.saw_lb2.load(Ordering::Relaxed)
    }

    pub fn finish(mut self) -> Result<ProbeLog, String> {
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

pub fn analyse(log: &ProbeLog, fault: Instant) -> Result<Outcome, String> {
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
