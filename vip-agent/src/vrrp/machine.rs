//! The per-instance VRRP state machine (RFC 9568 for v3, RFC 3768 where v2
//! differs), sans-IO: it owns the election, the timers and the order of the
//! actions a transition takes, and nothing else: the shell feeds it parsed
//! adverts, link and priority changes with an explicit `now`, sleeps until
//! [`Machine::poll_timeout`], and executes what [`Machine::poll_action`] yields.
//!
//! | from | input | to | actions, in order |
//! |---|---|---|---|
//! | Initialize | startup (link up), priority 255 | Master | `SendAdvert`, `BecomeMaster`, `SendGarp`, `Notify(Master)` |
//! | Initialize | startup (link up) | Backup | `BecomeBackup`, `Notify(Backup)`; master-down timer |
//! | Backup | master-down timer (`3 × Master_Adver_Interval + Skew_Time`; only `Skew_Time` after a priority-0 advert) | Master | `SendAdvert`, `BecomeMaster`, `SendGarp`, `Notify(Master)` |
//! | Master | advert with higher priority (or equal and greater address) | Backup | `SendAdvert` (own priority), `BecomeBackup`, `Notify(Backup)` |
//! | Master | advert with lower priority, or priority 0 | Master | `SendAdvert` (and `SendGarp` when a competing master appears) |
//! | Backup, Master | link down | Fault | `EnterFault`, `Notify(Fault)` |
//! | Fault | link up | Backup (Master if owner) | as on startup |
//! | any | shutdown | Initialize | from Master: `SendAdvert { priority: 0 }`, `BecomeBackup` |

use std::{
    collections::VecDeque,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

/// The priority of the address owner: master at once, never preempted.
pub const OWNER_PRIORITY: u8 = 255;

/// What an instance's election is configured with: the `[[vrrp]]` keys the
/// machine reads (`config::Vrrp` carries this as its `election`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    /// Virtual router id, 1..=255, unique on the node (the shell filters
    /// adverts on it; kept for logs).
    pub vrid: u8,
    /// Configured base priority, 1..=255 (default 100); 255 means this node
    /// owns the addresses: master at once, never preempted.
    pub priority: u8,
    /// 3 (RFC 9568, default) or 2 (RFC 3768, for old keepalived peers).
    pub version: u8,
    /// Our `Advertisement_Interval` (default 1s). Version 3: a multiple of
    /// 10ms, 10ms..=40.95s; version 2: whole seconds, 1s..=255s.
    pub advert_interval: Duration,
    /// Preempt a lower-priority master (RFC `Preempt_Mode`, default true).
    pub preempt: bool,
    /// How long a preempting takeover waits (keepalived `preempt_delay`,
    /// default 0s); see [`Machine::handle_advert`].
    pub preempt_delay: Duration,
}

/// One instance's configuration, as far as the election is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The configured election.
    pub election: Election,
    /// Our primary address: the tie-break between equal priorities.
    pub primary: Ipv4Addr,
    /// A member of a sync group: master-down does not make it master by
    /// itself, it only [`Machine::wants_master`]; the group decides (see
    /// `vrrp::sync`).
    pub synced: bool,
}

/// A parsed, validated advert of this instance's VRID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    /// The sender's primary address (IP source).
    pub src: Ipv4Addr,
    /// 0 = the sender's master is shutting down.
    pub priority: u8,
    /// The sender's advert interval (v3 `Max Adver Int`, v2 `Adver Int`).
    pub interval: Duration,
}

/// RFC 9568 states, plus Fault (keepalived's: interface down, VIPs withdrawn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Initialize,
    Backup,
    Master,
    Fault,
}

impl State {
    /// The word keepalived users know (`notify` passes master, backup, fault).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initialize => "init",
            Self::Backup => "backup",
            Self::Master => "master",
            Self::Fault => "fault",
        }
    }
}

/// What the shell must do, in the order [`Machine::poll_action`] yields it.
/// A transition's actions are queued together by one input, so the shell
/// executes them in one step before it takes the next input.
#[must_use = "an action the shell drops is a VRRP transition only half made"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send an advert with this priority (0 on shutdown).
    SendAdvert { priority: u8 },
    /// Mark the VIPs active in the VIP table.
    BecomeMaster,
    /// Withdraw the VIPs.
    BecomeBackup,
    /// Withdraw the VIPs (link down).
    EnterFault,
    /// Send the gratuitous-ARP burst (count and spacing are shell config).
    SendGarp,
    /// Run the notify hook for the state entered (never blocking).
    Notify(State),
}

/// The timers; each indexes [`Timers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Master: next periodic advert.
    Advert,
    /// Backup: the master is presumed dead.
    MasterDown,
}

impl Timer {
    const ALL: [Self; 2] = [Self::MasterDown, Self::Advert];

    fn index(self) -> usize {
        match self {
            Self::Advert => 0,
            Self::MasterDown => 1,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Timers([Option<Instant>; 2]);

impl Timers {
    fn set(&mut self, timer: Timer, at: Instant) {
        self.0[timer.index()] = Some(at);
    }

    fn clear(&mut self) {
        self.0 = [None; 2];
    }

    fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }

    /// Disarms and reports `timer` if it is due at `now`.
    fn take_expired(&mut self, timer: Timer, now: Instant) -> bool {
        let slot = &mut self.0[timer.index()];
        if slot.is_some_and(|at| at <= now) {
            *slot = None;
            true
        } else {
            false
        }
    }
}

/// One VRRP instance's election.
#[derive(Debug, Clone)]
pub struct Machine {
    params: Params,
    state: State,
    /// Effective priority: the base moved by tracked checks.
    priority: u8,
    link_up: bool,
    /// The master's interval as learned from its adverts (v3), else ours.
    master_adver_interval: Duration,
    timers: Timers,
    actions: VecDeque<Action>,
    /// Backup: lower-priority adverts count as the master's until then.
    preempt_hold: Option<Instant>,
    /// Master: when we last heard a lower-priority advert.
    last_lower: Option<Instant>,
    /// Synced Backup: master-down expired, waiting for the group.
    wants_master: bool,
    /// Why the last transition happened, for the log line.
    cause: String,
}

impl Machine {
    /// A machine in Initialize with the link assumed up.
    ///
    /// # Panics
    /// On parameters config validation rejects: priority 0, a version other
    /// than 2 or 3, a zero advert interval.
    #[must_use]
    pub fn new(params: Params) -> Self {
        assert!(params.election.priority >= 1, "VRRP priority 0 is reserved");
        assert!(
            matches!(params.election.version, 2 | 3),
            "VRRP version must be 2 or 3"
        );
        assert!(
            !params.election.advert_interval.is_zero(),
            "VRRP advert interval must not be zero"
        );
        Self {
            priority: params.election.priority,
            master_adver_interval: params.election.advert_interval,
            params,
            state: State::Initialize,
            link_up: true,
            timers: Timers::default(),
            actions: VecDeque::new(),
            preempt_hold: None,
            last_lower: None,
            wants_master: false,
            cause: String::new(),
        }
    }

    /// RFC Startup: the owner becomes Master at once, everyone else Backup
    /// with the master-down timer armed (so a `state MASTER` keepalived
    /// peer's habit of starting in Backup is the only behaviour). With the
    /// link down, Fault. Ignored unless in Initialize.
    pub fn handle_startup(&mut self, now: Instant) {
        if self.state != State::Initialize {
            return;
        }
        self.enter_from_down(now);
    }

    /// An advert of our VRID. Ignored in Initialize and Fault, when it is our
    /// own (looped-back multicast), in v2 when its interval differs from ours
    /// (RFC 3768), and in v3 when its interval is zero.
    ///
    /// Backup: priority 0 sets the master-down timer to `Skew_Time`. An advert
    /// that is not lower than our priority, or any advert without preempt,
    /// is the master's: learn its interval (v3) and restart the timer. With
    /// preempt, a lower one is discarded, so the timer runs out and we take
    /// over; but with a `preempt_delay`, the first lower advert starts a hold
    /// of that length, and lower adverts heard before the hold ends still
    /// count as the master's (keepalived). So a preempting takeover comes
    /// `Master_Down_Interval` after the last lower advert heard within
    /// `preempt_delay` of the first one. An advert not lower than ours ends
    /// the hold.
    ///
    /// Master: priority 0 makes us advertise at once. A higher priority, or
    /// an equal one from a greater address, wins: we send one last advert of
    /// our own priority (keepalived's `higher_prio_send_advert`, so the winner
    /// hears that a competing master existed and re-claims the ARP caches),
    /// withdraw and become Backup. A lower one makes us advertise at once
    /// (RFC 9568), plus a GARP burst if none was heard in the last
    /// `Master_Down_Interval`: a new competing master, e.g. after a
    /// partition heals, may have pointed the clients at itself.
    pub fn handle_advert(&mut self, now: Instant, adv: Incoming) {
        if adv.src == self.params.primary {
            return;
        }
        let bad_interval = if self.params.election.version == 2 {
            adv.interval != self.params.election.advert_interval
        } else {
            adv.interval.is_zero()
        };
        if bad_interval {
            return;
        }
        match self.state {
            State::Backup => self.backup_advert(now, adv),
            State::Master => self.master_advert(now, adv),
            State::Initialize | State::Fault => {}
        }
    }

    /// Fires every timer due at `now`: master-down makes a Backup the
    /// Master; the advert timer sends an advert and re-arms.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in Timer::ALL {
            if !self.timers.take_expired(timer, now) {
                continue;
            }
            match (timer, self.state) {
                (Timer::MasterDown, State::Backup) if self.params.synced => {
                    // keepalived's vrrp_sync_can_goto_master: wait for the
                    // group, checking again after another interval.
                    self.wants_master = true;
                    self.timers
                        .set(Timer::MasterDown, now + self.master_down_interval());
                }
                (Timer::MasterDown, State::Backup) => {
                    self.cause =
                        "no advert from a better master within the master-down time".into();
                    self.become_master(now);
                }
                (Timer::Advert, State::Master) => self.send_advert(now),
                _ => {}
            }
        }
    }

    /// Tracked checks moved the priority. Clamped to 1..=254; the owner's
    /// 255 never moves (keepalived ignores weights for an address owner). A
    /// Master advertises the new priority at once, so a preempting backup
    /// stops counting its adverts right away. A Backup's running master-down
    /// timer keeps the skew it was armed with; the new one applies from the
    /// next advert (RFC: `Skew_Time` is recomputed when the timer is set).
    pub fn handle_priority(&mut self, now: Instant, effective_priority: u8) {
        if self.is_owner() {
            return;
        }
        let priority = effective_priority.clamp(1, OWNER_PRIORITY - 1);
        if priority == self.priority {
            return;
        }
        self.priority = priority;
        if self.state == State::Master {
            self.send_advert(now);
        }
    }

    /// The VRRP interface went down (Fault: withdraw, stop every timer) or
    /// came back (as on startup). Remembered in Initialize for the startup.
    pub fn handle_link(&mut self, now: Instant, up: bool) {
        if up == self.link_up {
            return;
        }
        self.link_up = up;
        match (up, self.state) {
            (false, State::Backup | State::Master) => {
                self.cause = "not operational (link down, or a failing tracked check)".into();
                self.enter_fault();
            }
            (true, State::Fault) => self.enter_from_down(now),
            _ => {}
        }
    }

    /// RFC Shutdown: a Master sends priority 0 (so a backup takes over after
    /// only `Skew_Time`) and withdraws; every state ends in Initialize with
    /// no timer. [`Machine::handle_startup`] starts it again.
    pub fn handle_shutdown(&mut self, _now: Instant) {
        if self.state == State::Master {
            self.actions.push_back(Action::SendAdvert { priority: 0 });
            self.actions.push_back(Action::BecomeBackup);
        }
        self.state = State::Initialize;
        self.wants_master = false;
        self.timers.clear();
        self.preempt_hold = None;
        self.last_lower = None;
    }

    /// Sync group: every member wants to be master, so this Backup becomes
    /// Master now. Ignored in other states.
    pub fn handle_sync_master(&mut self, now: Instant) {
        if self.state == State::Backup {
            self.cause = "sync group: every member may be master".into();
            self.become_master(now);
        }
    }

    /// Sync group: a member lost mastership, so this Master falls back too,
    /// sending priority 0 so that the peer's member takes over after
    /// `Skew_Time` rather than `Master_Down_Interval`. Ignored in other states.
    pub fn handle_sync_backup(&mut self, now: Instant) {
        if self.state == State::Master {
            self.actions.push_back(Action::SendAdvert { priority: 0 });
            self.master_adver_interval = self.params.election.advert_interval;
            self.cause = "sync group: a member fell back".into();
            self.enter_backup(now);
        }
    }

    /// A synced Backup whose master-down time has passed: it would be master
    /// if its group agreed.
    #[must_use]
    pub fn wants_master(&self) -> bool {
        self.state == State::Backup && self.wants_master
    }

    /// Why the last transition happened (for logs).
    #[must_use]
    pub fn cause(&self) -> &str {
        &self.cause
    }

    /// When [`Machine::handle_timeout`] must next be called, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// [`Machine::poll_timeout`] for a runtime whose pacer sends the
    /// master's periodic adverts: the advert timer left out, since its
    /// `SendAdvert` hands the pacer the packets it already has. A master's
    /// loop then sleeps through its adverts (one wakeup each at 10 ms
    /// intervals, for nothing) instead of waking for each. Its advert timer
    /// fires, as a no-op, at the next call of [`Machine::handle_timeout`].
    #[must_use]
    pub fn poll_timeout_paced(&self) -> Option<Instant> {
        if self.state == State::Master {
            self.timers.0[Timer::MasterDown.index()]
        } else {
            self.timers.next()
        }
    }

    /// The next action to execute, in order.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    #[must_use]
    pub fn state(&self) -> State {
        self.state
    }

    /// The effective priority (what our adverts carry).
    #[must_use]
    pub fn priority(&self) -> u8 {
        self.priority
    }

    #[must_use]
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// `3 × Master_Adver_Interval + Skew_Time`.
    #[must_use]
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_interval * 3 + self.skew_time()
    }

    /// v3: `(256 − Priority) × Master_Adver_Interval / 256`; v2:
    /// `(256 − Priority) / 256` seconds.
    #[must_use]
    pub fn skew_time(&self) -> Duration {
        let unit = if self.params.election.version == 2 {
            Duration::from_secs(1)
        } else {
            self.master_adver_interval
        };
        unit * (256 - u32::from(self.priority)) / 256
    }

    fn is_owner(&self) -> bool {
        self.params.election.priority == OWNER_PRIORITY
    }

    /// From Initialize or Fault: as RFC Startup.
    fn enter_from_down(&mut self, now: Instant) {
        self.master_adver_interval = self.params.election.advert_interval;
        if !self.link_up {
            self.cause = "starting while not operational".into();
            self.enter_fault();
        } else if self.is_owner() {
            self.cause = "address owner (priority 255)".into();
            self.become_master(now);
        } else {
            self.cause = "starting: waiting to hear a master".into();
            self.enter_backup(now);
        }
    }

    fn backup_advert(&mut self, now: Instant, adv: Incoming) {
        if adv.priority == 0 {
            self.timers.set(Timer::MasterDown, now + self.skew_time());
            return;
        }
        let lower = adv.priority < self.priority;
        if !lower {
            self.preempt_hold = None;
        }
        if !self.params.election.preempt || !lower || self.holding(now) {
            self.wants_master = false;
            if self.params.election.version == 3 {
                self.master_adver_interval = adv.interval;
            }
            self.timers
                .set(Timer::MasterDown, now + self.master_down_interval());
        }
    }

    /// Whether a preempt hold (started now if need be) still runs.
    fn holding(&mut self, now: Instant) -> bool {
        if self.params.election.preempt_delay.is_zero() {
            return false;
        }
        let until = *self
            .preempt_hold
            .get_or_insert(now + self.params.election.preempt_delay);
        now < until
    }

    fn master_advert(&mut self, now: Instant, adv: Incoming) {
        if adv.priority == 0 {
            self.send_advert(now);
            return;
        }
        let wins = adv.priority > self.priority
            || (adv.priority == self.priority && adv.src > self.params.primary);
        if wins {
            self.actions.push_back(Action::SendAdvert {
                priority: self.priority,
            });
            if self.params.election.version == 3 {
                self.master_adver_interval = adv.interval;
            }
            self.cause = format!(
                "advert from {} with priority {} beats ours ({})",
                adv.src, adv.priority, self.priority
            );
            self.enter_backup(now);
        } else {
            self.send_advert(now);
            let mdi = self.master_down_interval();
            if self.last_lower.is_none_or(|at| now >= at + mdi) {
                self.actions.push_back(Action::SendGarp);
            }
            self.last_lower = Some(now);
        }
    }

    fn send_advert(&mut self, now: Instant) {
        self.actions.push_back(Action::SendAdvert {
            priority: self.priority,
        });
        self.timers
            .set(Timer::Advert, now + self.params.election.advert_interval);
    }

    fn become_master(&mut self, now: Instant) {
        self.state = State::Master;
        self.wants_master = false;
        self.master_adver_interval = self.params.election.advert_interval;
        self.timers.clear();
        self.preempt_hold = None;
        self.last_lower = None;
        self.send_advert(now);
        self.actions.push_back(Action::BecomeMaster);
        self.actions.push_back(Action::SendGarp);
        self.actions.push_back(Action::Notify(State::Master));
    }

    /// Enters Backup; the caller has set the interval to learn from.
    fn enter_backup(&mut self, now: Instant) {
        self.state = State::Backup;
        self.wants_master = false;
        self.timers.clear();
        self.preempt_hold = None;
        self.last_lower = None;
        self.timers
            .set(Timer::MasterDown, now + self.master_down_interval());
        self.actions.push_back(Action::BecomeBackup);
        self.actions.push_back(Action::Notify(State::Backup));
    }

    fn enter_fault(&mut self) {
        self.state = State::Fault;
        self.wants_master = false;
        self.timers.clear();
        self.preempt_hold = None;
        self.last_lower = None;
        self.actions.push_back(Action::EnterFault);
        self.actions.push_back(Action::Notify(State::Fault));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One-way delay of every simulated link unless a test changes it.
    const D: Duration = Duration::from_micros(100);
    const MS10: Duration = Duration::from_millis(10);
    /// `Master_Down_Interval` at 10ms adverts for priorities 100, 150, 200.
    const MDI_100: Duration = Duration::from_nanos(36_093_750);
    const MDI_150: Duration = Duration::from_nanos(34_140_625);
    const MDI_200: Duration = Duration::from_nanos(32_187_500);

    fn ns(n: u64) -> Duration {
        Duration::from_nanos(n)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Node `i`'s primary address: 10.99.0.2, .3, .4 (greater with `i`).
    fn addr(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, 0, 2 + u8::try_from(i).unwrap())
    }

    fn params(i: usize, priority: u8) -> Params {
        Params {
            election: Election {
                vrid: 51,
                priority,
                version: 3,
                advert_interval: MS10,
                preempt: true,
                preempt_delay: Duration::ZERO,
            },
            primary: addr(i),
            synced: false,
        }
    }

    /// `p` with its election changed by `f`.
    fn with(mut p: Params, f: impl FnOnce(&mut Election)) -> Params {
        f(&mut p.election);
        p
    }

    fn adv(src: Ipv4Addr, priority: u8, interval: Duration) -> Incoming {
        Incoming {
            src,
            priority,
            interval,
        }
    }

    fn drain(m: &mut Machine) -> Vec<Action> {
        std::iter::from_fn(|| m.poll_action()).collect()
    }

    fn took_over(priority: u8) -> [Action; 4] {
        [
            Action::SendAdvert { priority },
            Action::BecomeMaster,
            Action::SendGarp,
            Action::Notify(State::Master),
        ]
    }

    const TO_BACKUP: [Action; 2] = [Action::BecomeBackup, Action::Notify(State::Backup)];
    const TO_FAULT: [Action; 2] = [Action::EnterFault, Action::Notify(State::Fault)];

    /// A non-owner machine of priority 100 made master at `t0 + MDI_100`.
    fn master_100(t0: Instant) -> Machine {
        let mut m = Machine::new(params(0, 100));
        m.handle_startup(t0);
        m.handle_timeout(t0 + MDI_100);
        assert_eq!(m.state(), State::Master);
        drop(drain(&mut m));
        m
    }

    #[test]
    fn each_transition_says_why() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(0, 100));
        m.handle_startup(t0);
        assert_eq!(m.cause(), "starting: waiting to hear a master");
        m.handle_timeout(t0 + MDI_100);
        assert!(m.cause().contains("master-down"), "{}", m.cause());
        m.handle_advert(t0 + ms(50), adv(addr(1), 200, MS10));
        assert_eq!(
            m.cause(),
            "advert from 10.99.0.3 with priority 200 beats ours (100)"
        );
        m.handle_link(t0 + ms(60), false);
        assert!(m.cause().starts_with("not operational"), "{}", m.cause());
    }

    #[test]
    fn timer_values_follow_the_rfc_formulas() {
        let m = |priority, version, interval| {
            Machine::new(with(params(0, priority), |e| {
                e.version = version;
                e.advert_interval = interval;
            }))
        };
        let cases = [
            (100, 3, MS10, ns(6_093_750), MDI_100),
            (150, 3, MS10, ns(4_140_625), MDI_150),
            (200, 3, MS10, ns(2_187_500), MDI_200),
            (255, 3, MS10, ns(39_062), ns(30_039_062)),
            (1, 3, ms(1000), ns(996_093_750), ns(3_996_093_750)),
            // v2: skew in seconds whatever the interval
            (100, 2, ms(1000), ns(609_375_000), ns(3_609_375_000)),
            (100, 2, ms(3000), ns(609_375_000), ns(9_609_375_000)),
        ];
        for (priority, version, interval, skew, mdi) in cases {
            let m = m(priority, version, interval);
            assert_eq!(m.skew_time(), skew, "skew, prio {priority} v{version}");
            assert_eq!(
                m.master_down_interval(),
                mdi,
                "mdi, prio {priority} v{version}"
            );
        }
    }

    #[test]
    fn startup_enters_backup_and_master_down_makes_master() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(0, 100));
        assert_eq!((m.state(), m.poll_timeout()), (State::Initialize, None));
        m.handle_startup(t0);
        assert_eq!(drain(&mut m), TO_BACKUP);
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.poll_timeout(), Some(t0 + MDI_100));
        m.handle_timeout(t0 + ns(36_093_749));
        assert_eq!(drain(&mut m), []);
        assert_eq!(m.state(), State::Backup);
        m.handle_timeout(t0 + MDI_100);
        assert_eq!(drain(&mut m), took_over(100));
        assert_eq!(m.state(), State::Master);
        assert_eq!(m.poll_timeout(), Some(t0 + MDI_100 + MS10));
        // Periodic adverts, re-armed from the firing.
        m.handle_timeout(t0 + MDI_100 + MS10 + ns(7));
        assert_eq!(drain(&mut m), [Action::SendAdvert { priority: 100 }]);
        assert_eq!(m.poll_timeout(), Some(t0 + MDI_100 + 2 * MS10 + ns(7)));
        // A second startup is ignored.
        m.handle_startup(t0);
        assert_eq!((drain(&mut m), m.state()), (vec![], State::Master));
    }

    #[test]
    fn owner_is_master_at_startup_and_keeps_its_priority() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(0, OWNER_PRIORITY));
        m.handle_startup(t0);
        assert_eq!(drain(&mut m), took_over(255));
        assert_eq!(
            (m.state(), m.poll_timeout()),
            (State::Master, Some(t0 + MS10))
        );
        // With a pacer sending its adverts, a master has nothing to wake for.
        assert_eq!(m.poll_timeout_paced(), None);
        m.handle_priority(t0, 100);
        assert_eq!((m.priority(), drain(&mut m)), (255, vec![]));
        // Nothing but another owner with a greater address can win.
        m.handle_advert(t0 + ms(1), adv(addr(1), 254, MS10));
        assert_eq!(
            drain(&mut m),
            [Action::SendAdvert { priority: 255 }, Action::SendGarp]
        );
        m.handle_advert(t0 + ms(2), adv(addr(1), 255, MS10));
        assert_eq!(
            drain(&mut m),
            [
                Action::SendAdvert { priority: 255 },
                Action::BecomeBackup,
                Action::Notify(State::Backup)
            ]
        );
        // Link flap: straight back to Master, no master-down wait.
        m.handle_link(t0 + ms(3), false);
        assert_eq!(drain(&mut m), TO_FAULT);
        m.handle_link(t0 + ms(4), true);
        assert_eq!(drain(&mut m), took_over(255));
        assert_eq!(m.poll_timeout(), Some(t0 + ms(14)));
        // A backup waits for its master-down timer, paced or not.
        let mut b = Machine::new(params(0, 100));
        b.handle_startup(t0);
        drop(drain(&mut b));
        assert_eq!(b.state(), State::Backup);
        assert!(b.poll_timeout().is_some());
        assert_eq!(b.poll_timeout_paced(), b.poll_timeout());
    }

    #[test]
    fn backup_handles_adverts_per_preempt_mode() {
        let t0 = Instant::now();
        let other = addr(1);
        let mut m = Machine::new(params(0, 100));
        m.handle_startup(t0);
        drop(drain(&mut m));
        // Lower priority with preempt: discarded, timer untouched.
        m.handle_advert(t0 + ms(5), adv(other, 99, MS10));
        assert_eq!(m.poll_timeout(), Some(t0 + MDI_100));
        // Equal and higher: the master's; the interval is learned (v3).
        m.handle_advert(t0 + ms(6), adv(other, 100, MS10));
        assert_eq!(m.poll_timeout(), Some(t0 + ms(6) + MDI_100));
        m.handle_advert(t0 + ms(7), adv(other, 150, ms(20)));
        assert_eq!(m.master_down_interval(), ns(72_187_500));
        assert_eq!(m.poll_timeout(), Some(t0 + ms(7) + ns(72_187_500)));
        // Priority 0: only the skew (computed with the learned interval).
        m.handle_advert(t0 + ms(8), adv(other, 0, ms(20)));
        assert_eq!(m.poll_timeout(), Some(t0 + ms(8) + ns(12_187_500)));
        assert_eq!(drain(&mut m), []);
        assert_eq!(m.state(), State::Backup);

        // Without preempt a lower priority master is still the master.
        let mut m = Machine::new(with(params(0, 100), |e| e.preempt = false));
        m.handle_startup(t0);
        m.handle_advert(t0 + ms(5), adv(other, 1, MS10));
        assert_eq!(m.poll_timeout(), Some(t0 + ms(5) + MDI_100));
    }

    #[test]
    fn preempt_delay_counts_lower_adverts_until_it_ends() {
        let t0 = Instant::now();
        let other = addr(1);
        let mut m = Machine::new(with(params(0, 100), |e| e.preempt_delay = ms(25)));
        m.handle_startup(t0);
        // First lower advert at 5ms starts the hold: accepted until 30ms.
        for at in [5, 15, 25] {
            m.handle_advert(t0 + ms(at), adv(other, 50, MS10));
            assert_eq!(
                m.poll_timeout(),
                Some(t0 + ms(at) + MDI_100),
                "advert at {at}ms"
            );
        }
        m.handle_advert(t0 + ms(30), adv(other, 50, MS10));
        assert_eq!(m.poll_timeout(), Some(t0 + ms(25) + MDI_100));
        // A higher advert ends the hold; the next lower one starts a new one.
        m.handle_advert(t0 + ms(31), adv(other, 200, MS10));
        m.handle_advert(t0 + ms(40), adv(other, 50, MS10));
        assert_eq!(m.poll_timeout(), Some(t0 + ms(40) + MDI_100));
        m.handle_advert(t0 + ms(65), adv(other, 50, MS10));
        assert_eq!(m.poll_timeout(), Some(t0 + ms(40) + MDI_100));
        m.handle_timeout(t0 + ms(40) + MDI_100);
        assert_eq!(drain(&mut m)[2..], took_over(100)[..]);
    }

    #[test]
    fn v2_discards_a_foreign_interval_and_never_learns() {
        let t0 = Instant::now();
        let other = addr(1);
        let mut m = Machine::new(with(params(0, 100), |e| {
            e.version = 2;
            e.advert_interval = ms(1000);
        }));
        m.handle_startup(t0);
        let mdi = ns(3_609_375_000);
        assert_eq!(m.poll_timeout(), Some(t0 + mdi));
        m.handle_advert(t0 + ms(1000), adv(other, 150, ms(2000)));
        assert_eq!(m.poll_timeout(), Some(t0 + mdi));
        m.handle_advert(t0 + ms(1000), adv(other, 0, ms(2000)));
        assert_eq!(m.poll_timeout(), Some(t0 + mdi));
        m.handle_advert(t0 + ms(1000), adv(other, 150, ms(1000)));
        assert_eq!(m.poll_timeout(), Some(t0 + ms(1000) + mdi));
        assert_eq!(m.master_down_interval(), mdi);
        // A master ignores a mismatched higher advert too.
        m.handle_timeout(t0 + ms(1000) + mdi);
        drop(drain(&mut m));
        m.handle_advert(t0 + ms(5000), adv(other, 200, ms(2000)));
        assert_eq!((m.state(), drain(&mut m)), (State::Master, vec![]));
    }

    #[test]
    fn own_and_zero_interval_adverts_are_ignored() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(0, 100));
        m.handle_startup(t0);
        m.handle_advert(t0 + ms(1), adv(addr(0), 0, MS10));
        m.handle_advert(t0 + ms(1), adv(addr(1), 200, Duration::ZERO));
        assert_eq!(m.poll_timeout(), Some(t0 + MDI_100));
        let mut m = master_100(t0);
        m.handle_advert(t0 + ms(40), adv(addr(0), 200, MS10));
        assert_eq!((m.state(), drain(&mut m)), (State::Master, vec![]));
    }

    #[test]
    fn master_answers_each_kind_of_advert() {
        let t0 = Instant::now();
        let t1 = t0 + MDI_100;
        let lower_addr = Ipv4Addr::new(10, 99, 0, 1);
        let mut m = master_100(t0);
        let advert = Action::SendAdvert { priority: 100 };
        // Priority 0: advertise at once, re-arm.
        m.handle_advert(t1 + ms(1), adv(addr(1), 0, MS10));
        assert_eq!(drain(&mut m), [advert]);
        assert_eq!(m.poll_timeout(), Some(t1 + ms(11)));
        // Lower: advertise at once, GARP on the first of an episode only.
        m.handle_advert(t1 + ms(2), adv(addr(1), 50, MS10));
        assert_eq!(drain(&mut m), [advert, Action::SendGarp]);
        assert_eq!(m.poll_timeout(), Some(t1 + ms(12)));
        m.handle_advert(t1 + ms(3), adv(addr(1), 50, MS10));
        assert_eq!(drain(&mut m), [advert]);
        // Equal priority from a lower address is lower.
        m.handle_advert(t1 + ms(4), adv(lower_addr, 100, MS10));
        assert_eq!(drain(&mut m), [advert]);
        m.handle_advert(t1 + ms(4) + ns(36_093_749), adv(lower_addr, 100, MS10));
        assert_eq!(drain(&mut m), [advert]);
        m.handle_advert(t1 + ms(5) + 2 * MDI_100, adv(lower_addr, 100, MS10));
        assert_eq!(drain(&mut m), [advert, Action::SendGarp]);
        assert_eq!(m.state(), State::Master);
        // Equal priority from a greater address wins; so does a higher one.
        let t2 = t1 + ms(200);
        m.handle_advert(t2, adv(addr(1), 100, ms(20)));
        assert_eq!(
            drain(&mut m),
            [advert, Action::BecomeBackup, Action::Notify(State::Backup)]
        );
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.poll_timeout(), Some(t2 + ns(72_187_500)));
        let mut m = master_100(t0);
        m.handle_advert(t2, adv(lower_addr, 101, MS10));
        assert_eq!(drain(&mut m)[1..], TO_BACKUP);
        assert_eq!(m.poll_timeout(), Some(t2 + MDI_100));
    }

    #[test]
    fn priority_changes_are_clamped_and_advertised_by_a_master() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(0, 100));
        m.handle_priority(t0, 0);
        assert_eq!(m.priority(), 1);
        m.handle_priority(t0, 255);
        assert_eq!(m.priority(), 254);
        m.handle_priority(t0, 200);
        assert_eq!(drain(&mut m), []);
        m.handle_startup(t0);
        assert_eq!(m.poll_timeout(), Some(t0 + MDI_200));
        let mut m = master_100(t0);
        let t1 = t0 + MDI_100 + ms(3);
        m.handle_priority(t1, 40);
        assert_eq!(drain(&mut m), [Action::SendAdvert { priority: 40 }]);
        assert_eq!(m.poll_timeout(), Some(t1 + MS10));
        m.handle_priority(t1 + ms(1), 40);
        assert_eq!(drain(&mut m), []);
        // A 50 now wins against this master.
        m.handle_advert(t1 + ms(2), adv(addr(1), 50, MS10));
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn link_down_is_fault_and_up_restarts_as_backup() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(0, 100));
        m.handle_link(t0, false);
        assert_eq!(drain(&mut m), []);
        m.handle_startup(t0);
        assert_eq!(drain(&mut m), TO_FAULT);
        assert_eq!((m.state(), m.poll_timeout()), (State::Fault, None));
        m.handle_advert(t0 + ms(1), adv(addr(1), 0, MS10));
        m.handle_timeout(t0 + ms(100));
        m.handle_link(t0 + ms(2), false);
        assert_eq!((m.state(), drain(&mut m)), (State::Fault, vec![]));
        m.handle_link(t0 + ms(3), true);
        assert_eq!(drain(&mut m), TO_BACKUP);
        assert_eq!(m.poll_timeout(), Some(t0 + ms(3) + MDI_100));
        m.handle_timeout(t0 + ms(3) + MDI_100);
        drop(drain(&mut m));
        m.handle_link(t0 + ms(50), false);
        assert_eq!(drain(&mut m), TO_FAULT);
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn shutdown_sends_priority_zero_only_from_master() {
        let t0 = Instant::now();
        let mut m = master_100(t0);
        m.handle_shutdown(t0 + ms(50));
        assert_eq!(
            drain(&mut m),
            [Action::SendAdvert { priority: 0 }, Action::BecomeBackup]
        );
        assert_eq!((m.state(), m.poll_timeout()), (State::Initialize, None));
        m.handle_advert(t0 + ms(51), adv(addr(1), 0, MS10));
        m.handle_timeout(t0 + ms(100));
        assert_eq!(drain(&mut m), []);
        m.handle_startup(t0 + ms(60));
        assert_eq!(drain(&mut m), TO_BACKUP);
        m.handle_shutdown(t0 + ms(70));
        assert_eq!(drain(&mut m), []);
        assert_eq!((m.state(), m.poll_timeout()), (State::Initialize, None));
    }

    // ---- the simulated network ----

    struct Node {
        params: Params,
        m: Machine,
        /// Driven by the simulator (false before start, after a crash or a
        /// shutdown).
        running: bool,
        link: bool,
        /// Every action, stamped with the virtual time since `t0`.
        log: Vec<(Duration, Action)>,
        /// Every advert delivered: time, sender, priority.
        rx: Vec<(Duration, usize, u8)>,
    }

    struct Packet {
        at: Instant,
        seq: u64,
        from: usize,
        to: usize,
        adv: Incoming,
    }

    struct Sim {
        t0: Instant,
        now: Instant,
        nodes: Vec<Node>,
        /// Per direction `[from][to]`.
        delay: Vec<Vec<Duration>>,
        cut: Vec<Vec<bool>>,
        wire: Vec<Packet>,
        seq: u64,
        dual_since: Option<Duration>,
        /// Closed windows with two or more masters.
        dual: Vec<(Duration, Duration)>,
    }

    impl Sim {
        fn new(params: Vec<Params>) -> Self {
            let n = params.len();
            let t0 = Instant::now();
            Self {
                t0,
                now: t0,
                nodes: params
                    .into_iter()
                    .map(|p| Node {
                        m: Machine::new(p.clone()),
                        params: p,
                        running: false,
                        link: true,
                        log: Vec::new(),
                        rx: Vec::new(),
                    })
                    .collect(),
                delay: vec![vec![D; n]; n],
                cut: vec![vec![false; n]; n],
                wire: Vec::new(),
                seq: 0,
                dual_since: None,
                dual: Vec::new(),
            }
        }

        fn with(priorities: &[u8]) -> Self {
            Self::new(
                priorities
                    .iter()
                    .enumerate()
                    .map(|(i, &p)| params(i, p))
                    .collect(),
            )
        }

        fn elapsed(&self) -> Duration {
            self.now - self.t0
        }

        fn start_all(&mut self) {
            for i in 0..self.nodes.len() {
                self.start(i);
            }
        }

        /// Starts node `i`; after a crash, as a fresh process.
        fn start(&mut self, i: usize) {
            let now = self.now;
            let node = &mut self.nodes[i];
            if node.running {
                return;
            }
            if node.m.state() != State::Initialize {
                node.m = Machine::new(node.params.clone());
            }
            node.running = true;
            node.m.handle_link(now, node.link);
            node.m.handle_startup(now);
            self.settle(i);
        }

        /// kill -9: silent at once (adverts already on the wire still land).
        fn crash(&mut self, i: usize) {
            self.nodes[i].running = false;
            self.observe();
        }

        fn shutdown(&mut self, i: usize) {
            if self.nodes[i].running {
                self.nodes[i].m.handle_shutdown(self.now);
                self.settle(i);
                self.nodes[i].running = false;
                self.observe();
            }
        }

        fn set_link(&mut self, i: usize, up: bool) {
            self.nodes[i].link = up;
            if self.nodes[i].running {
                self.nodes[i].m.handle_link(self.now, up);
                self.settle(i);
            }
        }

        fn set_priority(&mut self, i: usize, priority: u8) {
            if self.nodes[i].running {
                self.nodes[i].m.handle_priority(self.now, priority);
                self.settle(i);
            }
        }

        fn partition(&mut self, a: usize, b: usize, cut: bool) {
            self.cut[a][b] = cut;
            self.cut[b][a] = cut;
        }

        /// Executes node `i`'s actions: logs them and puts adverts on the
        /// wire; then checks the node's invariants.
        fn settle(&mut self, i: usize) {
            let at = self.elapsed();
            while let Some(action) = self.nodes[i].m.poll_action() {
                self.nodes[i].log.push((at, action));
                let Action::SendAdvert { priority } = action else {
                    continue;
                };
                assert!(self.nodes[i].link, "node {i} sent with its link down");
                let p = &self.nodes[i].params;
                let adv = adv(p.primary, priority, p.election.advert_interval);
                for to in 0..self.nodes.len() {
                    if to != i && !self.cut[i][to] {
                        self.seq += 1;
                        self.wire.push(Packet {
                            at: self.now + self.delay[i][to],
                            seq: self.seq,
                            from: i,
                            to,
                            adv,
                        });
                    }
                }
            }
            self.check(i);
            self.observe();
        }

        /// Timers match the state, and the VIPs are held (by the action
        /// log) exactly while the state is Master.
        fn check(&self, i: usize) {
            let node = &self.nodes[i];
            let state = node.m.state();
            let timer = node.m.poll_timeout();
            match state {
                State::Master | State::Backup => assert!(
                    timer.is_some_and(|t| t > self.now),
                    "node {i} {state:?} at {:?} has timer {timer:?}",
                    self.elapsed()
                ),
                State::Initialize | State::Fault => assert_eq!(timer, None, "node {i} {state:?}"),
            }
            let holds = node.log.iter().rev().find_map(|(_, a)| match a {
                Action::BecomeMaster => Some(true),
                Action::BecomeBackup | Action::EnterFault => Some(false),
                _ => None,
            });
            assert_eq!(state == State::Master, holds == Some(true), "node {i}");
        }

        fn masters(&self) -> Vec<usize> {
            (0..self.nodes.len())
                .filter(|&i| self.nodes[i].running && self.nodes[i].m.state() == State::Master)
                .collect()
        }

        fn observe(&mut self) {
            let t = self.elapsed();
            match (self.masters().len() >= 2, self.dual_since) {
                (true, None) => self.dual_since = Some(t),
                (false, Some(since)) => {
                    self.dual.push((since, t));
                    self.dual_since = None;
                }
                _ => {}
            }
        }

        /// Delivers adverts and fires timers in time order up to `end`
        /// (since `t0`); at equal times adverts go first.
        fn run_until(&mut self, end: Duration) {
            let end = self.t0 + end;
            assert!(end >= self.now, "time goes forward");
            let mut steps = 0_u32;
            loop {
                let packet = self.wire.iter().map(|p| p.at).min();
                let timer = self
                    .nodes
                    .iter()
                    .filter(|n| n.running)
                    .filter_map(|n| n.m.poll_timeout())
                    .min();
                let Some(next) = packet.into_iter().chain(timer).min() else {
                    break;
                };
                if next > end {
                    break;
                }
                steps += 1;
                assert!(steps < 1_000_000, "runaway simulation");
                self.now = next;
                while let Some(k) = (0..self.wire.len())
                    .filter(|&k| self.wire[k].at <= next)
                    .min_by_key(|&k| (self.wire[k].at, self.wire[k].seq))
                {
                    let p = self.wire.swap_remove(k);
                    let at = self.elapsed();
                    let to = &mut self.nodes[p.to];
                    if to.running && to.link {
                        to.rx.push((at, p.from, p.adv.priority));
                        to.m.handle_advert(next, p.adv);
                        self.settle(p.to);
                    }
                }
                for i in 0..self.nodes.len() {
                    let node = &mut self.nodes[i];
                    if node.running && node.m.poll_timeout().is_some_and(|t| t <= next) {
                        node.m.handle_timeout(next);
                        self.settle(i);
                    }
                }
            }
            self.now = end;
            self.observe();
        }

        /// When node `i` emitted `action`.
        fn times(&self, i: usize, action: Action) -> Vec<Duration> {
            let log = &self.nodes[i].log;
            log.iter()
                .filter(|(_, a)| *a == action)
                .map(|(t, _)| *t)
                .collect()
        }

        fn actions_at(&self, i: usize, at: Duration) -> Vec<Action> {
            let log = &self.nodes[i].log;
            log.iter()
                .filter(|(t, _)| *t == at)
                .map(|(_, a)| *a)
                .collect()
        }

        /// The last advert node `i` received from `from` before `before`.
        fn last_rx(&self, i: usize, from: usize, before: Duration) -> Duration {
            let mut rx = self.nodes[i].rx.iter().rev();
            rx.find(|(t, f, _)| *f == from && *t < before)
                .map(|(t, ..)| *t)
                .expect("an advert was received")
        }
    }

    /// Node 0 (priority 150, .2) and node 1 (100, .3) started together and
    /// run to 500ms: node 0 is master from 34.140625ms, advertising at
    /// 34.140625 + 10k ms.
    fn pair() -> Sim {
        let mut sim = Sim::with(&[150, 100]);
        sim.start_all();
        sim.run_until(ms(500));
        assert_eq!(sim.masters(), [0]);
        sim
    }

    #[test]
    fn election_of_two_the_higher_priority_wins_at_its_master_down() {
        let sim = pair();
        assert_eq!(sim.actions_at(0, Duration::ZERO), TO_BACKUP);
        assert_eq!(sim.actions_at(1, Duration::ZERO), TO_BACKUP);
        assert_eq!(sim.times(0, Action::BecomeMaster), [MDI_150]);
        assert_eq!(sim.actions_at(0, MDI_150), took_over(150));
        assert_eq!(sim.times(1, Action::BecomeMaster), []);
        let adverts = sim.times(0, Action::SendAdvert { priority: 150 });
        assert_eq!(adverts.len(), 47);
        assert!(adverts.windows(2).all(|w| w[0] + MS10 == w[1]));
        // The backup's deadline is always MDI after the last advert.
        let last = sim.last_rx(1, 0, ms(500));
        assert_eq!(last, ns(494_240_625));
        assert_eq!(sim.nodes[1].m.poll_timeout(), Some(sim.t0 + last + MDI_100));
        assert_eq!(sim.dual, []);
    }

    #[test]
    fn election_of_three() {
        let mut sim = Sim::with(&[100, 200, 150]);
        sim.start_all();
        sim.run_until(ms(300));
        assert_eq!(sim.masters(), [1]);
        assert_eq!(sim.times(1, Action::BecomeMaster), [MDI_200]);
        assert_eq!(sim.times(0, Action::BecomeMaster), []);
        assert_eq!(sim.times(2, Action::BecomeMaster), []);
        assert_eq!(sim.dual, []);
    }

    #[test]
    fn equal_priorities_the_greater_address_wins() {
        for n in [2, 3] {
            let mut sim = Sim::with(&vec![100; n]);
            sim.start_all();
            sim.run_until(ms(300));
            let winner = n - 1;
            assert_eq!(sim.masters(), [winner], "{n} nodes");
            // All time out together; the losers yield on the first advert.
            for i in 0..n {
                assert_eq!(sim.times(i, Action::BecomeMaster), [MDI_100], "node {i}");
            }
            for i in 0..winner {
                assert_eq!(
                    sim.times(i, Action::BecomeBackup),
                    [Duration::ZERO, MDI_100 + D]
                );
                assert!(sim.actions_at(i, MDI_100 + D).ends_with(&TO_BACKUP));
            }
            assert_eq!(sim.dual, [(MDI_100, MDI_100 + D)], "{n} nodes");
        }
        // Started 20ms apart, the first keeps it: equal is no preemption.
        let mut sim = Sim::with(&[100, 100]);
        sim.start(0);
        sim.run_until(ms(20));
        sim.start(1);
        sim.run_until(ms(500));
        assert_eq!(sim.masters(), [0]);
        assert_eq!(sim.times(1, Action::BecomeMaster), []);
    }

    #[test]
    fn killed_master_backup_takes_over_at_master_down_interval() {
        let mut sim = pair();
        sim.run_until(ms(503));
        sim.crash(0);
        sim.run_until(ms(700));
        let last = sim.last_rx(1, 0, ms(700));
        assert_eq!(last, ns(494_240_625));
        assert_eq!(sim.times(1, Action::BecomeMaster), [last + MDI_100]);
        assert_eq!(last + MDI_100, ns(530_334_375));
        assert_eq!(sim.actions_at(1, ns(530_334_375)), took_over(100));

        // Three nodes: the next priority takes over, the third stays.
        let mut sim = Sim::with(&[200, 150, 100]);
        sim.start_all();
        sim.run_until(ms(503));
        sim.crash(0);
        sim.run_until(ms(800));
        let last = sim.last_rx(1, 0, ms(800));
        assert_eq!(sim.times(1, Action::BecomeMaster), [last + MDI_150]);
        assert_eq!(sim.times(2, Action::BecomeMaster), []);
        assert_eq!(sim.masters(), [1]);
    }

    #[test]
    fn backup_uses_the_masters_advert_interval() {
        // Node 0 advertises every 20ms, node 1 every 10ms.
        let mut sim = Sim::new(vec![
            with(params(0, 150), |e| e.advert_interval = ms(20)),
            params(1, 100),
        ]);
        sim.start_all();
        sim.run_until(ms(500));
        // Node 1's own MDI is shorter: it is master first, until node 0's.
        assert_eq!(sim.times(1, Action::BecomeMaster), [MDI_100]);
        assert_eq!(sim.times(0, Action::BecomeMaster), [ns(68_281_250)]);
        assert_eq!(sim.masters(), [0]);
        sim.crash(0);
        sim.run_until(ms(800));
        let last = sim.last_rx(1, 0, ms(800));
        assert_eq!(
            sim.times(1, Action::BecomeMaster)[1..],
            [last + ns(72_187_500)]
        );
    }

    #[test]
    fn v2_takeover_uses_the_configured_interval_and_skew_in_seconds() {
        let v2 = |i, priority| {
            with(params(i, priority), |e| {
                e.version = 2;
                e.advert_interval = ms(1000);
            })
        };
        let mut sim = Sim::new(vec![v2(0, 150), v2(1, 100)]);
        sim.start_all();
        sim.run_until(ms(10_500));
        assert_eq!(sim.times(0, Action::BecomeMaster), [ns(3_414_062_500)]);
        sim.crash(0);
        sim.run_until(ms(20_000));
        let last = sim.last_rx(1, 0, ms(20_000));
        assert_eq!(last, ns(10_414_162_500));
        assert_eq!(
            sim.times(1, Action::BecomeMaster),
            [last + ns(3_609_375_000)]
        );
    }

    #[test]
    fn graceful_shutdown_backup_takes_over_after_skew() {
        let mut sim = pair();
        sim.run_until(ms(503));
        sim.shutdown(0);
        assert_eq!(
            sim.actions_at(0, ms(503)),
            [Action::SendAdvert { priority: 0 }, Action::BecomeBackup]
        );
        assert_eq!(sim.nodes[0].m.state(), State::Initialize);
        assert_eq!(sim.nodes[0].m.poll_timeout(), None);
        sim.run_until(ms(600));
        assert_eq!(sim.nodes[1].rx.last(), Some(&(ms(503) + D, 0, 0)));
        let skew = ns(6_093_750);
        assert_eq!(sim.times(1, Action::BecomeMaster), [ms(503) + D + skew]);
        assert_eq!(sim.masters(), [1]);
        assert_eq!(sim.dual, []);
    }

    /// [`pair`], node 0 killed at 503ms (node 1 master from 530.334375ms)
    /// and, with `p`, restarted at 700ms.
    fn returning_master(p: Params) -> Sim {
        let mut sim = Sim::new(vec![p, params(1, 100)]);
        sim.start_all();
        sim.run_until(ms(503));
        sim.crash(0);
        sim.run_until(ms(700));
        assert_eq!(sim.times(1, Action::BecomeMaster), [ns(530_334_375)]);
        sim.start(0);
        assert_eq!(sim.actions_at(0, ms(700)), TO_BACKUP);
        sim
    }

    #[test]
    fn preempt_the_returning_master_takes_back_at_its_master_down() {
        let mut sim = returning_master(params(0, 150));
        sim.run_until(ms(1500));
        let back = ms(700) + MDI_150;
        assert_eq!(sim.times(0, Action::BecomeMaster), [MDI_150, back]);
        assert_eq!(sim.actions_at(0, back), took_over(150));
        assert_eq!(
            sim.actions_at(1, back + D),
            [
                Action::SendAdvert { priority: 100 },
                Action::BecomeBackup,
                Action::Notify(State::Backup)
            ]
        );
        assert_eq!(sim.masters(), [0]);
        assert_eq!(sim.dual, [(back, back + D)]);
    }

    #[test]
    fn nopreempt_the_returning_master_stays_backup() {
        let mut sim = returning_master(with(params(0, 150), |e| e.preempt = false));
        sim.run_until(ms(2000));
        assert_eq!(sim.times(0, Action::BecomeMaster), [MDI_150]);
        assert_eq!(sim.times(1, Action::BecomeBackup), [Duration::ZERO]);
        assert_eq!(sim.masters(), [1]);
        let last = sim.last_rx(0, 1, ms(2000));
        assert_eq!(sim.nodes[0].m.poll_timeout(), Some(sim.t0 + last + MDI_150));
    }

    #[test]
    fn preempt_delay_postpones_the_preempting_takeover() {
        let delayed = with(params(0, 150), |e| e.preempt_delay = ms(100));
        let mut sim = returning_master(delayed.clone());
        sim.run_until(ms(1500));
        let first = sim.nodes[0]
            .rx
            .iter()
            .find(|(t, ..)| *t > ms(700))
            .unwrap()
            .0;
        assert_eq!(first, ns(700_434_375));
        // Node 1's adverts before first + 100ms still count; the one at
        // exactly +100ms does not, so the takeover is MDI after +90ms.
        let back = first + ms(90) + MDI_150;
        assert_eq!(back, ns(824_575_000));
        assert_eq!(sim.times(0, Action::BecomeMaster), [MDI_150, back]);
        assert!(back >= first + ms(100));
        assert_eq!(sim.masters(), [0]);

        // The delay never delays a failover: the lower master dies mid-hold.
        let mut sim = returning_master(delayed);
        sim.run_until(ms(750));
        sim.crash(1);
        sim.run_until(ms(1500));
        let last = sim.last_rx(0, 1, ms(1500));
        assert_eq!(last, ns(740_434_375));
        assert_eq!(
            sim.times(0, Action::BecomeMaster),
            [MDI_150, last + MDI_150]
        );
    }

    /// Partition at 503ms, heal at `heal`; returns the healed simulation.
    fn partition_and_heal(heal: Duration) -> Sim {
        let mut sim = pair();
        sim.run_until(ms(503));
        sim.partition(0, 1, true);
        sim.run_until(heal);
        assert_eq!(sim.masters(), [0, 1]);
        assert_eq!(sim.times(1, Action::BecomeMaster), [ns(530_334_375)]);
        sim.partition(0, 1, false);
        sim.run_until(ms(1000));
        assert_eq!(sim.masters(), [0]);
        sim
    }

    #[test]
    fn partition_then_heal_leaves_one_master_which_sends_the_last_garp() {
        // Healed at 605ms: node 1's advert (sent 610.334375) lands first.
        // Healed at 612ms: node 0's advert (sent 614.140625) lands first
        // and node 1's parting advert tells node 0.
        for (heal, garp, yielded) in [
            (ms(605), ns(610_434_375), ns(610_534_375)),
            (ms(612), ns(614_340_625), ns(614_240_625)),
        ] {
            let sim = partition_and_heal(heal);
            let garps = sim.times(0, Action::SendGarp);
            assert_eq!(garps, [MDI_150, garp], "heal at {heal:?}");
            assert_eq!(
                sim.times(1, Action::BecomeBackup),
                [Duration::ZERO, yielded]
            );
            assert_eq!(sim.times(1, Action::SendGarp), [ns(530_334_375)]);
            assert_eq!(sim.dual, [(ns(530_334_375), yielded)]);
            assert!(yielded < heal + MS10 + D);
        }
    }

    #[test]
    fn flapping_links_end_with_one_master() {
        // The master's link flaps every 7ms, ten times.
        let mut sim = pair();
        for k in 0..10 {
            sim.run_until(ms(503 + 14 * k));
            sim.set_link(0, false);
            sim.run_until(ms(510 + 14 * k));
            sim.set_link(0, true);
        }
        sim.run_until(ms(1000));
        let downs: Vec<_> = (0..10).map(|k| ms(503 + 14 * k)).collect();
        assert_eq!(sim.times(0, Action::EnterFault), downs);
        assert_eq!(sim.times(0, Action::Notify(State::Fault)), downs);
        assert_eq!(sim.times(0, Action::Notify(State::Backup)).len(), 11);
        assert_eq!(sim.times(1, Action::BecomeMaster), [ns(530_334_375)]);
        let back = ms(636) + MDI_150;
        assert_eq!(sim.times(0, Action::BecomeMaster), [MDI_150, back]);
        assert_eq!(
            sim.times(1, Action::BecomeBackup),
            [Duration::ZERO, back + D]
        );
        assert_eq!(sim.masters(), [0]);

        // The backup's link flaps: the master never notices.
        let mut sim = pair();
        for k in 0..10 {
            sim.run_until(ms(503 + 14 * k));
            sim.set_link(1, false);
            sim.run_until(ms(510 + 14 * k));
            sim.set_link(1, true);
        }
        sim.run_until(ms(1000));
        assert_eq!(sim.times(1, Action::EnterFault).len(), 10);
        assert_eq!(sim.times(1, Action::BecomeMaster), []);
        assert_eq!(sim.times(0, Action::BecomeMaster), [MDI_150]);
        assert_eq!(sim.masters(), [0]);
        assert_eq!(sim.dual, []);
    }

    #[test]
    fn a_failed_track_lets_the_backup_preempt_and_recovery_takes_back() {
        let mut sim = pair();
        sim.run_until(ms(503));
        sim.set_priority(0, 90);
        assert_eq!(
            sim.actions_at(0, ms(503)),
            [Action::SendAdvert { priority: 90 }]
        );
        sim.run_until(ms(700));
        assert_eq!(
            sim.nodes[1].rx.iter().find(|r| r.2 == 90).unwrap().0,
            ms(503) + D
        );
        // The backup's last accepted advert is the 150 one at 494.240625.
        let takeover = ns(494_240_625) + MDI_100;
        assert_eq!(sim.times(1, Action::BecomeMaster), [takeover]);
        assert_eq!(
            sim.actions_at(0, takeover + D),
            [
                Action::SendAdvert { priority: 90 },
                Action::BecomeBackup,
                Action::Notify(State::Backup)
            ]
        );
        assert_eq!(sim.masters(), [1]);
        // The check recovers: node 0 preempts when its timer runs out.
        sim.set_priority(0, 150);
        sim.run_until(ms(1000));
        // Node 1 re-armed its adverts when it heard node 0's parting one.
        let last = sim.last_rx(0, 1, ms(700));
        assert_eq!(last, takeover + 3 * D + 16 * MS10);
        assert_eq!(last, ns(690_634_375));
        // The timer was armed at priority 90: 30ms + 166 × 10ms / 256.
        let mdi_90 = ns(36_484_375);
        assert_eq!(sim.times(0, Action::BecomeMaster), [MDI_150, last + mdi_90]);
        assert_eq!(sim.masters(), [0]);
    }

    #[test]
    fn the_owner_takes_over_at_once() {
        let mut sim = Sim::with(&[255, 100]);
        sim.start(1);
        sim.run_until(ms(200));
        assert_eq!(sim.masters(), [1]);
        sim.start(0);
        assert_eq!(sim.actions_at(0, ms(200)), took_over(255));
        sim.run_until(ms(400));
        assert_eq!(
            sim.times(1, Action::BecomeBackup),
            [Duration::ZERO, ms(200) + D]
        );
        assert_eq!(sim.masters(), [0]);
        assert_eq!(sim.dual, [(ms(200), ms(200) + D)]);
    }

    // ---- the property ----

    #[derive(Debug, Clone)]
    struct Spec {
        priority: u8,
        preempt: bool,
        preempt_delay_ms: u64,
        interval_ms: u64,
    }

    #[derive(Debug, Clone)]
    enum Event {
        Cut(usize, usize, bool),
        /// Per mille of the sender's advert interval.
        Delay(usize, usize, u32),
        Priority(usize, u8),
        Link(usize, bool),
        Crash(usize),
        Start(usize),
        Shutdown(usize),
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (
            prop_oneof![Just(100_u8), 1_u8..=254],
            any::<bool>(),
            prop_oneof![Just(0_u64), 1_u64..=50],
            prop::sample::select(vec![10_u64, 20, 30]),
        )
            .prop_map(|(priority, preempt, preempt_delay_ms, interval_ms)| Spec {
                priority,
                preempt,
                preempt_delay_ms,
                interval_ms,
            })
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0..3_usize, 0..3_usize, any::<bool>()).prop_map(|(a, b, on)| Event::Cut(a, b, on)),
            (0..3_usize, 0..3_usize, 0_u32..=1000).prop_map(|(a, b, p)| Event::Delay(a, b, p)),
            (0..3_usize, 1_u8..=254).prop_map(|(i, p)| Event::Priority(i, p)),
            (0..3_usize, any::<bool>()).prop_map(|(i, up)| Event::Link(i, up)),
            (0..3_usize).prop_map(Event::Crash),
            (0..3_usize).prop_map(Event::Start),
            (0..3_usize).prop_map(Event::Shutdown),
        ]
    }

    fn apply(sim: &mut Sim, event: &Event) {
        let n = sim.nodes.len();
        match *event {
            Event::Cut(a, b, on) => sim.cut[a % n][b % n] = on,
            Event::Delay(a, b, per_mille) => {
                sim.delay[a % n][b % n] =
                    sim.nodes[a % n].params.election.advert_interval * per_mille / 1000;
            }
            Event::Priority(i, p) => sim.set_priority(i % n, p),
            Event::Link(i, up) => sim.set_link(i % n, up),
            Event::Crash(i) => sim.crash(i % n),
            Event::Start(i) => sim.start(i % n),
            Event::Shutdown(i) => sim.shutdown(i % n),
        }
    }

    /// Runs the disruptions, heals everything (links, partitions, stopped
    /// nodes; delays stay, at most one interval), runs 3s more and checks
    /// every window with two masters that reaches past the heal.
    fn disrupt_and_heal(specs: &[Spec], events: &[(u64, Event)]) -> Result<(), TestCaseError> {
        let all = specs.iter().enumerate().map(|(i, s)| {
            with(params(i, s.priority), |e| {
                e.advert_interval = ms(s.interval_ms);
                e.preempt = s.preempt;
                e.preempt_delay = ms(s.preempt_delay_ms);
            })
        });
        let mut sim = Sim::new(all.collect());
        sim.start_all();
        let mut t = Duration::ZERO;
        for (gap, event) in events {
            t += ms(*gap);
            sim.run_until(t);
            apply(&mut sim, event);
        }
        let n = sim.nodes.len();
        for a in 0..n {
            for b in 0..n {
                sim.cut[a][b] = false;
            }
            sim.set_link(a, true);
        }
        sim.start_all();
        let healed = t;
        sim.run_until(healed + ms(3000));
        let max_interval = specs.iter().map(|s| ms(s.interval_ms)).max().unwrap();
        let max_delay = sim.delay.iter().flatten().max().copied().unwrap();
        // A loser yields on the winner's next advert (or, when the loser's
        // advert lands first, on the winner's immediate answer).
        let bound = max_interval + max_delay;
        for &(since, until) in &sim.dual {
            if until > healed {
                let len = until
                    .checked_sub(since.max(healed))
                    .expect("a window ends after it starts");
                prop_assert!(
                    len <= bound,
                    "two masters for {len:?} from {since:?} (healed at {healed:?}, bound {bound:?})"
                );
            }
        }
        prop_assert_eq!(sim.dual_since, None);
        let masters = sim.masters();
        prop_assert_eq!(masters.len(), 1, "masters at the end: {:?}", masters);
        let master = &sim.nodes[masters[0]].m;
        for node in &sim.nodes {
            let m = &node.m;
            prop_assert!(m.state() == State::Master || m.state() == State::Backup);
            prop_assert!(
                m.state() == State::Master
                    || !node.params.election.preempt
                    || m.priority() <= master.priority(),
                "a preempting backup of priority {} under a master of {}",
                m.priority(),
                master.priority()
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn never_two_masters_for_long_once_adverts_flow(
            specs in prop::collection::vec(spec(), 2..=3),
            events in prop::collection::vec((0_u64..=80, event()), 0..=25),
        ) {
            disrupt_and_heal(&specs, &events)?;
        }
    }
}
