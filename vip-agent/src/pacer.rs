//! The node's promises on a thread of their own: the periodic adverts of
//! every VRRP instance that is master, and the XDP heartbeat.
//!
//! Both are deadlines other machines hold us to. A backup takes over when a
//! master's adverts stop for `Master_Down_Interval` (about 3 intervals: 30
//! ms at 10 ms adverts), and XDP stops acting when the heartbeat is older
//! than the dead time. The run loop cannot promise that: it is one thread
//! that also builds lookup tables (tens of milliseconds at 1 000 backends),
//! parses configuration, answers the control socket and reads the maps for
//! scrapes. So the loop decides and the pacer keeps time:
//!
//! - the loop hands the pacer the bytes of an instance's advert when the
//!   instance becomes master or its advert changes (`advertise`), and takes
//!   them back the moment it is master no more (`silence`), before it sends
//!   anything else, such as a priority-0 advert;
//! - the pacer's thread sends each advert every interval from the time it
//!   was handed over, and stamps the heartbeat on every wakeup, waking for
//!   a stamp alone a stamp period after its last (a master at short
//!   intervals wakes once per advert, and for nothing else);
//! - the loop checks in on every pass (`alive`), and stamps the heartbeat
//!   then when the last stamp is a quarter period old (a backup's loop,
//!   woken by each advert it receives, keeps it fresh). When it has not for
//!   [`LOOP_DEADLINE`], the pacer sends and stamps nothing more: a hung
//!   agent fails over as a dead one does, only later.
//!
//! Why a thread and not a task: a task shares the loop's runtime, and any
//! step that runs long (or a flood of ready tasks) delays it; the operating
//! system schedules a thread that sleeps between its sends ahead of busy
//! ones. Why not the whole VRRP machine on that thread: its inputs (tracked
//! checks, link state, reloads) and outputs (VIP-table writes, notify,
//! gratuitous ARP) are the loop's; only the sending is periodic.

use std::{
    collections::BTreeMap,
    io,
    net::Ipv4Addr,
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

/// How long the loop may go without checking in before the pacer stops:
/// longer than any step the loop takes (a reload that rebuilds every
/// table), short enough that a hung agent gives its VIPs up.
pub const LOOP_DEADLINE: Duration = Duration::from_secs(3);

/// Where adverts go: the VRRP socket (a fake in tests).
pub trait Wire: Send + Sync {
    /// Sends one advert to `dst`.
    fn send(&self, advert: &[u8], dst: Ipv4Addr) -> io::Result<()>;
}

impl Wire for crate::vrrp::transport::VrrpSocket {
    fn send(&self, advert: &[u8], dst: Ipv4Addr) -> io::Result<()> {
        crate::vrrp::transport::VrrpSocket::send(self, advert, dst)
    }
}

/// The heartbeat the pacer stamps (the map's own handle; a fake in tests).
pub trait Beat: Send {
    fn stamp(&mut self) -> Result<(), String>;
}

/// What the pacer has sent for one instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Adverts sent (one per destination and interval).
    pub adverts: u64,
    /// The longest time between two consecutive sends while master.
    pub longest_gap: Duration,
}

struct Advert {
    /// One datagram per destination (a v3 checksum covers the destination).
    packets: Vec<(Ipv4Addr, Vec<u8>)>,
    interval: Duration,
    next: Instant,
    last: Option<Instant>,
}

struct Heartbeat {
    beat: Box<dyn Beat>,
    period: Duration,
    /// When the pacer's thread stamps next if it wakes for nothing else.
    next: Instant,
    /// The last stamp, by either thread.
    last: Option<Instant>,
}

impl Heartbeat {
    fn stamp(&mut self, now: Instant) {
        if let Err(e) = self.beat.stamp() {
            tracing::error!(error = %e, "cannot stamp the heartbeat");
        }
        self.last = Some(now);
    }
}

struct State {
    wire: Option<Arc<dyn Wire>>,
    adverts: BTreeMap<String, Advert>,
    sent: BTreeMap<String, Sent>,
    heartbeat: Option<Heartbeat>,
    /// The loop's last check-in.
    seen: Instant,
    /// The pacer stopped for lack of check-ins, and said so.
    stalled: bool,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    deadline: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The pacer and its thread, which ends when this is dropped.
pub struct Pacer {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pacer {
    /// Starts the pacer's thread, with nothing to send yet.
    pub fn start() -> io::Result<Self> {
        Self::with_deadline(LOOP_DEADLINE)
    }

    /// [`Pacer::start`] with another loop deadline (tests).
    pub fn with_deadline(deadline: Duration) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                wire: None,
                adverts: BTreeMap::new(),
                sent: BTreeMap::new(),
                heartbeat: None,
                seen: Instant::now(),
                stalled: false,
                stop: false,
            }),
            wake: Condvar::new(),
            deadline,
        });
        let thread = std::thread::Builder::new()
            .name("vip-pacer".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || run(&shared)
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// The socket adverts go out on (set when VRRP starts).
    pub fn set_wire(&self, wire: Arc<dyn Wire>) {
        self.shared.lock().wire = Some(wire);
    }

    /// Stamps `beat` every `period` from now on, the first stamp at once.
    pub fn set_heartbeat(&self, beat: Box<dyn Beat>, period: Duration) {
        self.shared.lock().heartbeat = Some(Heartbeat {
            beat,
            period,
            next: Instant::now(),
            last: None,
        });
        self.shared.wake.notify_one();
    }

    /// The loop is alive: called on every pass. It stamps the heartbeat
    /// too when the last stamp is a quarter of a period old: a loop that
    /// wakes often (a backup's, for each advert it receives) keeps the
    /// heartbeat fresh by itself, and the pacer's own stamps, every period,
    /// only cover a loop that is busy or idle.
    pub fn alive(&self) {
        let mut s = self.shared.lock();
        let now = Instant::now();
        s.seen = now;
        if let Some(h) = s.heartbeat.as_mut()
            && h.last.is_none_or(|t| now >= t + h.period / 4)
        {
            h.stamp(now);
        }
        if s.stalled {
            s.stalled = false;
            tracing::warn!("the run loop is back: adverts and heartbeat resume");
            drop(s);
            self.shared.wake.notify_one();
        }
    }

    /// Sends `packets` (destination, datagram) every `interval` for
    /// `instance` from now on. The same packets again change nothing (the
    /// schedule goes on); other packets go out at once and restart it.
    pub fn advertise(&self, instance: &str, packets: Vec<(Ipv4Addr, Vec<u8>)>, interval: Duration) {
        let mut s = self.shared.lock();
        if let Some(a) = s.adverts.get(instance)
            && a.packets == packets
            && a.interval == interval
        {
            return;
        }
        let last = s.adverts.get(instance).and_then(|a| a.last);
        s.adverts.insert(
            instance.to_owned(),
            Advert {
                packets,
                interval,
                next: Instant::now(),
                last,
            },
        );
        drop(s);
        self.shared.wake.notify_one();
    }

    /// Stops sending for `instance`; nothing of it goes out after this
    /// returns.
    pub fn silence(&self, instance: &str) {
        self.shared.lock().adverts.remove(instance);
    }

    /// Whether the pacer sends for `instance` now.
    #[must_use]
    pub fn advertising(&self, instance: &str) -> bool {
        self.shared.lock().adverts.contains_key(instance)
    }

    /// What the pacer has sent for `instance`.
    #[must_use]
    pub fn sent(&self, instance: &str) -> Sent {
        self.shared
            .lock()
            .sent
            .get(instance)
            .copied()
            .unwrap_or_default()
    }

    /// Sends one datagram now, from the caller (a priority-0 advert).
    pub fn send_now(&self, advert: &[u8], dst: Ipv4Addr) -> io::Result<()> {
        let wire = self.shared.lock().wire.clone();
        match wire {
            Some(w) => w.send(advert, dst),
            None => Err(io::Error::other("no VRRP socket")),
        }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The pacer's thread: sends what is due, then sleeps until the next due
/// time or a change.
fn run(shared: &Shared) {
    let mut s = shared.lock();
    while !s.stop {
        let now = Instant::now();
        if now.duration_since(s.seen) >= shared.deadline {
            if !s.stalled {
                s.stalled = true;
                tracing::error!(
                    deadline_ms = shared.deadline.as_millis(),
                    "the run loop has not checked in: no more adverts or heartbeat stamps until it does"
                );
            }
            s = shared
                .wake
                .wait_while(s, |s| s.stalled && !s.stop)
                .unwrap_or_else(PoisonError::into_inner);
            continue;
        }
        let due = send_due(&mut s, now);
        let wait = due.map_or(shared.deadline, |t| t.saturating_duration_since(now));
        // Wake for a due time, a change, or the loop's deadline.
        let wait = wait.min(shared.deadline.saturating_sub(now.duration_since(s.seen)));
        s = shared
            .wake
            .wait_timeout(s, wait)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// The most an advert is sent after its interval, to break phase lock
/// (and never more than a tenth of the interval).
pub const JITTER: Duration = Duration::from_millis(1);

/// A pseudo-random delay in `0..=min(JITTER, interval / 10)`.
fn jitter(interval: Duration) -> Duration {
    use std::sync::atomic::{AtomicU64, Ordering};
    // xorshift64: cheap, and good enough to spread send times.
    static STATE: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let mut x = STATE.load(Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    let max = JITTER.min(interval / 10);
    let max_ns = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(x % (max_ns + 1))
}

/// Sends every advert and stamp due at `now`; returns the next due time.
fn send_due(s: &mut State, now: Instant) -> Option<Instant> {
    let mut next: Option<Instant> = None;
    let mut earliest = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
    let State {
        wire,
        adverts,
        sent,
        heartbeat,
        ..
    } = s;
    for (name, a) in adverts.iter_mut() {
        if a.next <= now {
            if let Some(w) = wire {
                for (dst, bytes) in &a.packets {
                    match w.send(bytes, *dst) {
                        Ok(()) => sent.entry(name.clone()).or_default().adverts += 1,
                        Err(e) => {
                            tracing::warn!(instance = %name, %dst, error = %e, "cannot send VRRP advert");
                        }
                    }
                }
            }
            let stat = sent.entry(name.clone()).or_default();
            if let Some(last) = a.last {
                stat.longest_gap = stat.longest_gap.max(now.duration_since(last));
            }
            a.last = Some(now);
            // An interval from this send (RFC 9568's Adver_Timer), never a
            // burst to catch up, plus up to [`JITTER`]: another router's
            // adverts at the same interval must not stay in phase with
            // ours. keepalived 2.2 all but stops sending while foreign
            // adverts of its own interval keep arriving just before its
            // timer fires (seen with a VRID collision in the lab).
            a.next = now + a.interval + jitter(a.interval);
        }
        earliest(a.next);
    }
    if let Some(h) = heartbeat {
        // Every wakeup stamps (an advert's, on a master: one wakeup serves
        // both); the pacer wakes for a stamp of its own a period after its
        // last one, whatever the loop stamped meanwhile.
        h.stamp(now);
        h.next = now + h.period;
        earliest(h.next);
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every send with its time.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(Instant, Ipv4Addr, Vec<u8>)>>);

    impl Wire for Recorder {
        fn send(&self, advert: &[u8], dst: Ipv4Addr) -> io::Result<()> {
            self.0
                .lock()
                .unwrap()
                .push((Instant::now(), dst, advert.to_vec()));
            Ok(())
        }
    }

    impl Recorder {
        fn times(&self, bytes: &[u8]) -> Vec<Instant> {
            let sent = self.0.lock().unwrap();
            sent.iter()
                .filter(|(_, _, b)| b == bytes)
                .map(|(t, _, _)| *t)
                .collect()
        }
    }

    struct Stamps(Arc<Mutex<Vec<Instant>>>);

    impl Beat for Stamps {
        fn stamp(&mut self) -> Result<(), String> {
            self.0.lock().unwrap().push(Instant::now());
            Ok(())
        }
    }

    const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
    const MS: Duration = Duration::from_millis(1);

    /// The loop stands still (this thread sleeps, checking in as a busy
    /// loop would between long steps); adverts and stamps keep their
    /// schedule anyway.
    #[test]
    fn adverts_and_stamps_keep_their_schedule_while_the_loop_is_busy() {
        let pacer = Pacer::start().unwrap();
        let wire = Arc::new(Recorder::default());
        pacer.set_wire(Arc::clone(&wire) as Arc<dyn Wire>);
        let stamps = Arc::new(Mutex::new(Vec::new()));
        pacer.set_heartbeat(Box::new(Stamps(Arc::clone(&stamps))), 5 * MS);
        let t0 = Instant::now();
        pacer.advertise("VI_1", vec![(GROUP, b"a".to_vec())], 10 * MS);
        // The same advert again (the loop's own advert timer) keeps the
        // schedule: no extra send.
        for _ in 0..20 {
            std::thread::sleep(10 * MS);
            pacer.advertise("VI_1", vec![(GROUP, b"a".to_vec())], 10 * MS);
        }
        std::thread::sleep(100 * MS); // a long step
        pacer.alive();
        std::thread::sleep(100 * MS);
        let elapsed = t0.elapsed();
        let sent = wire.times(b"a");
        let want = u64::try_from(elapsed.as_millis() / 10).unwrap();
        let n = u64::try_from(sent.len()).unwrap();
        assert!(n + 3 >= want && n <= want + 1, "{n} adverts in {elapsed:?}");
        let gaps: Vec<Duration> = sent.windows(2).map(|w| w[1] - w[0]).collect();
        let longest = gaps.iter().max().copied().unwrap();
        // Generous for a loaded CI machine; the bench measures the tail.
        assert!(longest < 40 * MS, "longest gap {longest:?}");
        assert_eq!(pacer.sent("VI_1").adverts, n);
        // Its own measure (taken as it wakes) is the wire's within a hair.
        let own = pacer.sent("VI_1").longest_gap;
        assert!(own.abs_diff(longest) < MS, "{own:?} vs {longest:?}");
        let stamps = u64::try_from(stamps.lock().unwrap().len()).unwrap();
        let want = u64::try_from(elapsed.as_millis() / 5).unwrap();
        assert!(stamps + 6 >= want, "{stamps} stamps in {elapsed:?}");
    }

    /// A master's stamps ride on its adverts: at 10 ms adverts and the
    /// stamp period of a 45 ms dead time (11.25 ms), every stamp is taken
    /// with an advert, none later than its period, and the pacer wakes for
    /// nothing else.
    #[test]
    fn a_masters_stamps_ride_on_its_adverts() {
        let pacer = Pacer::start().unwrap();
        let wire = Arc::new(Recorder::default());
        pacer.set_wire(Arc::clone(&wire) as Arc<dyn Wire>);
        pacer.advertise("VI_1", vec![(GROUP, b"a".to_vec())], 10 * MS);
        std::thread::sleep(5 * MS);
        let stamps = Arc::new(Mutex::new(Vec::new()));
        let period = crate::agent::stamp_period(45 * MS);
        pacer.set_heartbeat(Box::new(Stamps(Arc::clone(&stamps))), period);
        std::thread::sleep(300 * MS);
        drop(pacer);
        let sent = wire.times(b"a");
        let stamps = stamps.lock().unwrap().clone();
        // The first stamp is taken at once, between two adverts.
        let with_advert = stamps[1..]
            .iter()
            .filter(|t| {
                sent.iter()
                    .any(|s| s.max(t).duration_since(*s.min(t)) < MS / 2)
            })
            .count();
        assert!(stamps.len() >= 20, "{} stamps in 300 ms", stamps.len());
        // A loaded machine may delay an advert past a stamp's due time.
        assert!(
            with_advert + 2 >= stamps.len() - 1,
            "{with_advert} of {} stamps with an advert",
            stamps.len() - 1
        );
        let longest = stamps.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(longest < period + 10 * MS, "longest stamp gap {longest:?}");
    }

    /// A backup's loop, woken by each advert it receives, stamps the
    /// heartbeat itself; the pacer still stamps once a period, so either
    /// thread alone keeps it fresh.
    #[test]
    fn a_loop_that_wakes_often_stamps_and_the_pacer_still_covers() {
        struct Named(Arc<Mutex<Vec<(Instant, String)>>>);
        impl Beat for Named {
            fn stamp(&mut self) -> Result<(), String> {
                let who = std::thread::current().name().unwrap_or("?").to_owned();
                self.0.lock().unwrap().push((Instant::now(), who));
                Ok(())
            }
        }
        let pacer = Pacer::start().unwrap();
        let stamps = Arc::new(Mutex::new(Vec::new()));
        let period = crate::agent::stamp_period(45 * MS);
        pacer.set_heartbeat(Box::new(Named(Arc::clone(&stamps))), period);
        let t0 = Instant::now();
        while t0.elapsed() < 300 * MS {
            std::thread::sleep(10 * MS);
            pacer.alive();
        }
        drop(pacer);
        let stamps = stamps.lock().unwrap().clone();
        let by = |name: &str| stamps.iter().filter(|(_, w)| w == name).count();
        let (pacer_n, loop_n) = (by("vip-pacer"), stamps.len() - by("vip-pacer"));
        // 300 ms: one pacer stamp per 22.5 ms period, one loop stamp per
        // 10 ms pass (a pass comes after a quarter period).
        assert!((10..=16).contains(&pacer_n), "{pacer_n} pacer stamps");
        assert!(loop_n >= 20, "{loop_n} loop stamps");
        let longest = stamps.windows(2).map(|w| w[1].0 - w[0].0).max().unwrap();
        assert!(longest < period, "longest stamp gap {longest:?}");
    }

    #[test]
    fn a_new_advert_goes_out_at_once_and_silence_is_immediate() {
        let pacer = Pacer::start().unwrap();
        let wire = Arc::new(Recorder::default());
        pacer.set_wire(Arc::clone(&wire) as Arc<dyn Wire>);
        pacer.advertise(
            "VI_1",
            vec![(GROUP, b"p100".to_vec())],
            Duration::from_secs(1),
        );
        let deadline = Instant::now() + Duration::from_secs(2);
        while wire.times(b"p100").is_empty() {
            assert!(Instant::now() < deadline, "the first advert never went out");
            std::thread::sleep(MS);
        }
        // A priority change: new bytes, sent at once, not a second later.
        let changed = Instant::now();
        pacer.advertise(
            "VI_1",
            vec![(GROUP, b"p50".to_vec())],
            Duration::from_secs(1),
        );
        while wire.times(b"p50").is_empty() {
            assert!(
                changed.elapsed() < Duration::from_millis(500),
                "not at once"
            );
            std::thread::sleep(MS);
        }
        pacer.silence("VI_1");
        assert!(!pacer.advertising("VI_1"));
        let count = wire.0.lock().unwrap().len();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(wire.0.lock().unwrap().len(), count, "nothing after silence");
    }

    #[test]
    fn without_check_ins_the_pacer_stops_and_resumes_with_the_loop() {
        let pacer = Pacer::with_deadline(100 * MS).unwrap();
        let wire = Arc::new(Recorder::default());
        pacer.set_wire(Arc::clone(&wire) as Arc<dyn Wire>);
        pacer.alive();
        pacer.advertise("VI_1", vec![(GROUP, b"a".to_vec())], 10 * MS);
        std::thread::sleep(300 * MS);
        let sent = wire.times(b"a");
        let last = *sent.last().unwrap();
        let first = sent[0];
        // About 100 ms of adverts, then none.
        assert!(last - first < 120 * MS, "sent for {:?}", last - first);
        assert!(sent.len() >= 5 && sent.len() <= 12, "{}", sent.len());
        pacer.alive();
        let back = Instant::now();
        while wire.times(b"a").len() == sent.len() {
            assert!(back.elapsed() < 500 * MS, "not resumed");
            std::thread::sleep(MS);
        }
    }
}
