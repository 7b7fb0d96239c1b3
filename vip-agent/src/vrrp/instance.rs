//! The thin shell around one VRRP instance: turns received datagrams into
//! machine inputs (after the receive checks, each counted) and machine
//! actions into adverts, VIP-table writes, gratuitous ARP and notify hooks.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use vip_common::VipState;

use super::{
    machine::{Action, Incoming, Machine, Params, State},
    packet::{
        AdvertRepr, Auth, ChecksumForm, ChecksumForms, DropReason, Packet, ParseOptions, Version,
        check_ttl,
    },
    sync::Groups,
    transport::{GarpSocket, Received, VRRP_GROUP, VrrpSocket},
};
use crate::{config, pacer::Pacer, store::MapStore};

/// The name `track_services` goes by among an instance's tracked items (a
/// NUL cannot be in a check name a user writes).
const SERVICES_TRACK: &str = "\0services";

/// keepalived's virtual MAC for a VRID: 00:00:5e:00:01:<vrid>.
#[must_use]
pub fn virtual_mac(vrid: u8) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, 0x01, vrid]
}

/// Sources of colliding adverts remembered for rate-limiting their log.
const MAX_COLLIDERS: usize = 64;

/// One configured instance and its machine.
pub struct Instance {
    pub cfg: config::Vrrp,
    pub machine: Machine,
    /// MAC the VIPs are answered with.
    pub mac: [u8; 6],
    pub primary: Ipv4Addr,
    /// Adverts dropped by reason (`DropReason::counter_name`).
    pub dropped: BTreeMap<&'static str, u64>,
    pub sent: u64,
    pub received: u64,
    pub transitions: u64,
    pub since: Instant,
    last_drop_log: Option<Instant>,
    /// When another router's advert on our VRID was last logged, by source.
    collisions: BTreeMap<Ipv4Addr, Instant>,
    /// When the next periodic gratuitous ARP is due (master only).
    refresh_at: Option<Instant>,
    /// Link up and no weight-0 tracked check failing.
    operational: bool,
    /// The notify calls, one at a time and in order.
    notify: crate::scripts::Serial,
    /// Sends this instance's adverts while it is master.
    pacer: Arc<Pacer>,
    /// As backup: when the master's last advert was taken, and the longest
    /// time between two.
    heard: Option<Instant>,
    pub longest_heard_gap: Duration,
}

/// How long one notify call may run before its process group is killed.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

fn version(v: u8) -> Version {
    if v == 2 { Version::V2 } else { Version::V3 }
}

fn auth(cfg: &config::Vrrp) -> Auth {
    match (&cfg.auth_pass, cfg.election.version) {
        (Some(p), 2) => {
            let mut pw = [0u8; 8];
            let n = p.len().min(8);
            pw[..n].copy_from_slice(&p.as_bytes()[..n]);
            Auth::Password(pw)
        }
        _ => Auth::None,
    }
}

fn checksum_form(c: config::V3Checksum) -> ChecksumForm {
    match c {
        config::V3Checksum::PseudoHeader => ChecksumForm::PseudoHeader,
        config::V3Checksum::GroupPseudoHeader => ChecksumForm::PseudoHeaderGroupDst,
        config::V3Checksum::MessageOnly => ChecksumForm::MessageOnly,
    }
}

impl AsMut<Machine> for Instance {
    fn as_mut(&mut self) -> &mut Machine {
        &mut self.machine
    }
}

impl Instance {
    #[must_use]
    pub fn new(
        cfg: config::Vrrp,
        iface_mac: [u8; 6],
        primary: Ipv4Addr,
        pacer: Arc<Pacer>,
        now: Instant,
    ) -> Self {
        let machine = Machine::new(Params {
            election: cfg.election.clone(),
            primary,
            synced: cfg.sync_group.is_some(),
        });
        let mac = if cfg.virtual_mac {
            virtual_mac(cfg.election.vrid)
        } else {
            iface_mac
        };
        Self {
            cfg,
            machine,
            mac,
            primary,
            dropped: BTreeMap::new(),
            collisions: BTreeMap::new(),
            sent: 0,
            received: 0,
            transitions: 0,
            since: now,
            last_drop_log: None,
            refresh_at: None,
            operational: true,
            notify: crate::scripts::Serial::new(NOTIFY_TIMEOUT),
            pacer,
            heard: None,
            longest_heard_gap: Duration::ZERO,
        }
    }

    /// What the pacer has sent for this instance, and the priority-0
    /// adverts the loop sent itself.
    #[must_use]
    pub fn sent(&self) -> crate::pacer::Sent {
        let mut sent = self.pacer.sent(&self.cfg.name);
        sent.adverts += self.sent;
        sent
    }

    /// `Master_Down_Interval` with our own interval and priority: the time a
    /// backup waits, and so the heartbeat dead time.
    #[must_use]
    pub fn master_down(&self) -> Duration {
        self.machine.master_down_interval()
    }

    fn parse_options(&self) -> ParseOptions {
        ParseOptions {
            expect: version(self.cfg.election.version),
            vrid: self.cfg.election.vrid,
            auth: auth(&self.cfg),
            v2_interval_s: (self.cfg.election.version == 2).then(|| {
                u8::try_from(self.cfg.election.advert_interval.as_secs()).unwrap_or(u8::MAX)
            }),
            unicast_peers: self.cfg.unicast_peers.clone(),
            checksum_forms: ChecksumForms::ALL,
            addresses: self.cfg.vips.clone(),
        }
    }

    /// Runs the receive checks on `pkt` in their documented order (the
    /// length check in its place, inside `AdvertRepr::parse`); on success
    /// feeds the machine.
    pub fn receive(&mut self, now: Instant, pkt: &Received) {
        let checked = check_ttl(pkt.ttl).and_then(|()| {
            let packet = Packet::new_unchecked(&pkt.payload[..]);
            AdvertRepr::parse(&packet, pkt.src, pkt.dst, &self.parse_options())
        });
        match checked {
            Ok(adv) => {
                self.received += 1;
                if self.machine.state() == State::Backup && adv.priority > 0 {
                    if let Some(t) = self.heard {
                        self.longest_heard_gap = self.longest_heard_gap.max(now.duration_since(t));
                    }
                    self.heard = Some(now);
                } else {
                    self.heard = None;
                }
                self.machine.handle_advert(
                    now,
                    Incoming {
                        src: pkt.src,
                        priority: adv.priority,
                        interval: Duration::from_millis(u64::from(adv.interval_cs) * 10),
                    },
                );
            }
            Err(DropReason::AddressMismatch) => {
                *self
                    .dropped
                    .entry(DropReason::AddressMismatch.counter_name())
                    .or_default() += 1;
                self.log_collision(now, pkt);
            }
            Err(reason) => {
                *self.dropped.entry(reason.counter_name()).or_default() += 1;
                // At most one log line per second per instance.
                if self
                    .last_drop_log
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
                {
                    self.last_drop_log = Some(now);
                    tracing::warn!(instance = %self.cfg.name, from = %pkt.src, reason = %reason, "VRRP advert dropped");
                }
            }
        }
    }

    /// Logs another router's advert on our VRID once a minute per source
    /// (at most [`MAX_COLLIDERS`] sources remembered).
    fn log_collision(&mut self, now: Instant, pkt: &Received) {
        if self
            .collisions
            .get(&pkt.src)
            .is_some_and(|t| now.duration_since(*t) < Duration::from_mins(1))
        {
            return;
        }
        if self.collisions.len() >= MAX_COLLIDERS {
            self.collisions.clear();
        }
        self.collisions.insert(pkt.src, now);
        let theirs: Vec<String> = Packet::new_checked(&pkt.payload[..])
            .map(|p| p.addresses().map(|a| a.to_string()).collect())
            .unwrap_or_default();
        tracing::warn!(
            instance = %self.cfg.name,
            vrid = self.cfg.election.vrid,
            from = %pkt.src,
            theirs = %theirs.join(","),
            ours = ?self.cfg.vips,
            "VRRP advert for other addresses on our VRID: another VRRP router uses VRID {}; \
             dropped (it never moves this instance). Give one of the two another vrid \
             (keepalived: virtual_router_id)",
            self.cfg.election.vrid
        );
    }

    /// The advert this instance sends now with `priority`.
    fn advert(&self, priority: u8, dst: Ipv4Addr) -> Result<Vec<u8>, super::packet::EmitError> {
        let interval_cs =
            u16::try_from(self.cfg.election.advert_interval.as_millis() / 10).unwrap_or(u16::MAX);
        AdvertRepr {
            version: version(self.cfg.election.version),
            vrid: self.cfg.election.vrid,
            priority,
            interval_cs,
            addresses: self.cfg.vips.clone(),
            auth: auth(&self.cfg),
        }
        .emit(self.primary, dst, checksum_form(self.cfg.v3_checksum))
    }

    /// Carries out every pending action. VIP-table writes happen here, in the
    /// same step as the advert; GARP bursts and notify hooks run as tasks and
    /// never block the machine.
    pub fn drain_actions(&mut self, garp: &Arc<GarpSocket>, dp: &mut dyn MapStore) {
        self.drain_actions_deferring(garp, dp, false);
    }

    /// As [`Instance::drain_actions`]; with `defer_withdraw`, a `BecomeBackup`
    /// leaves the VIPs active and returns `true` so the caller withdraws them
    /// later (graceful shutdown: make before break).
    fn drain_actions_deferring(
        &mut self,
        garp: &Arc<GarpSocket>,
        dp: &mut dyn MapStore,
        defer_withdraw: bool,
    ) -> bool {
        let mut deferred = false;
        // The pacer sends while the machine is master, and nothing of ours
        // goes out after it is not (a priority-0 advert below least of all).
        let master = self.machine.state() == State::Master;
        if !master {
            self.pacer.silence(&self.cfg.name);
        }
        while let Some(action) = self.machine.poll_action() {
            match action {
                Action::SendAdvert { priority } => {
                    let dsts: Vec<Ipv4Addr> = if self.cfg.unicast_peers.is_empty() {
                        vec![VRRP_GROUP]
                    } else {
                        self.cfg.unicast_peers.clone()
                    };
                    let packets: Vec<(Ipv4Addr, Vec<u8>)> = dsts
                        .into_iter()
                        .filter_map(|dst| match self.advert(priority, dst) {
                            Ok(bytes) => Some((dst, bytes)),
                            Err(e) => {
                                tracing::error!(instance = %self.cfg.name, %dst, error = %e, "cannot build a VRRP advert");
                                None
                            }
                        })
                        .collect();
                    if master && priority > 0 {
                        self.pacer.advertise(
                            &self.cfg.name,
                            packets,
                            self.cfg.election.advert_interval,
                        );
                        continue;
                    }
                    for (dst, bytes) in packets {
                        match self.pacer.send_now(&bytes, dst) {
                            Ok(()) => self.sent += 1,
                            Err(e) => {
                                tracing::warn!(instance = %self.cfg.name, %dst, error = %e, "cannot send VRRP advert");
                            }
                        }
                    }
                }
                Action::BecomeMaster => self.set_vips(dp, true, "master"),
                Action::BecomeBackup if defer_withdraw => deferred = true,
                Action::BecomeBackup => self.set_vips(dp, false, "backup"),
                Action::EnterFault => self.set_vips(dp, false, "fault"),
                Action::SendGarp => self.garp_burst(garp),
                Action::Notify(state) => self.notify(state),
            }
        }
        if self.machine.state() != State::Master {
            self.pacer.silence(&self.cfg.name);
        }
        deferred
    }

    /// Stops this instance as on shutdown: a master sends priority 0; the
    /// VIPs are withdrawn at once.
    fn stop(&mut self, now: Instant, garp: &Arc<GarpSocket>, dp: &mut dyn MapStore) {
        let was_master = self.machine.state() == State::Master;
        self.machine.handle_shutdown(now);
        self.drain_actions(garp, dp);
        if was_master {
            self.set_vips(dp, false, "stopped");
        }
    }

    fn set_vips(&mut self, dp: &mut dyn MapStore, active: bool, role: &str) {
        for vip in &self.cfg.vips {
            let state = VipState {
                mac: self.mac,
                active: u8::from(active),
                _pad: 0,
                vlan: self.cfg.vlan(*vip),
            };
            if let Err(e) = dp.set_vip(*vip, state) {
                tracing::error!(instance = %self.cfg.name, %vip, error = %crate::error_chain(&e), "cannot write the VIP table");
            }
        }
        self.transitions += 1;
        self.since = Instant::now();
        let refresh = self.cfg.garp.refresh;
        self.refresh_at = (active && !refresh.is_zero()).then(|| self.since + refresh);
        tracing::info!(
            instance = %self.cfg.name,
            vrid = self.cfg.election.vrid,
            priority = self.machine.priority(),
            vips = ?self.cfg.vips,
            cause = self.machine.cause(),
            "{role}"
        );
    }

    fn garp_burst(&self, garp: &Arc<GarpSocket>) {
        let vips: Vec<(Ipv4Addr, u16)> = self
            .cfg
            .vips
            .iter()
            .map(|v| (*v, self.cfg.vlan(*v)))
            .collect();
        let (garp, mac) = (Arc::clone(garp), self.mac);
        let (count, interval, name) = (
            self.cfg.garp.count,
            self.cfg.garp.interval,
            self.cfg.name.clone(),
        );
        tokio::spawn(async move {
            for i in 0..count {
                if i > 0 {
                    tokio::time::sleep(interval).await;
                }
                for (vip, vlan) in &vips {
                    if let Err(e) = garp.send(mac, *vip, *vlan) {
                        tracing::warn!(instance = %name, %vip, vlan, error = %e, "cannot send gratuitous ARP");
                    }
                }
            }
        });
    }

    fn notify(&mut self, state: State) {
        let Some(script) = self.cfg.notify.clone() else {
            return;
        };
        let word = match state {
            State::Master => "master",
            State::Backup => "backup",
            State::Fault => "fault",
            State::Initialize => return,
        };
        let mut cmd = crate::scripts::command(&script);
        cmd.arg(word).arg(&self.cfg.name);
        let what = format!("{} {word} {}", script.display(), self.cfg.name);
        self.notify.push(cmd, what);
    }
}

/// Every VRRP instance of the node, the shared VRRP socket and the GARP socket.
pub struct Runtime {
    pub sock: Arc<VrrpSocket>,
    garp: Arc<GarpSocket>,
    pub instances: Vec<Instance>,
    groups: Groups,
    /// Adverts for a VRID this node does not run.
    pub unknown_vrid: u64,
    iface_mac: [u8; 6],
    primary: Ipv4Addr,
    pacer: Arc<Pacer>,
}

impl Runtime {
    /// Opens the sockets on `iface` (index `ifindex`, MAC `mac`), sending from
    /// `primary`. Needs `CAP_NET_RAW`.
    pub fn open(
        vrrp: &[config::Vrrp],
        iface: &str,
        ifindex: u32,
        mac: [u8; 6],
        primary: Ipv4Addr,
        pacer: &Arc<Pacer>,
        now: Instant,
    ) -> std::io::Result<Self> {
        // Joined even when every instance is unicast, so that a reload may
        // add a multicast one (the receive checks drop multicast adverts for
        // a unicast instance: their source is not one of its peers).
        let multicast = true;
        let sock = Arc::new(VrrpSocket::open(iface, ifindex, primary, multicast)?);
        pacer.set_wire(Arc::clone(&sock) as Arc<dyn crate::pacer::Wire>);
        Ok(Self {
            sock,
            garp: Arc::new(GarpSocket::open(ifindex)?),
            instances: vrrp
                .iter()
                .map(|c| Instance::new(c.clone(), mac, primary, Arc::clone(pacer), now))
                .collect(),
            groups: Groups::new(vrrp.iter().map(|v| v.sync_group.as_deref())),
            unknown_vrid: 0,
            iface_mac: mac,
            primary,
            pacer: Arc::clone(pacer),
        })
    }

    /// The VIP-table state every instance's VIPs should have now.
    #[must_use]
    pub fn vip_states(&self) -> BTreeMap<Ipv4Addr, VipState> {
        let mut out = BTreeMap::new();
        for i in &self.instances {
            let active = u8::from(i.machine.state() == State::Master);
            for vip in &i.cfg.vips {
                out.insert(
                    *vip,
                    VipState {
                        mac: i.mac,
                        active,
                        _pad: 0,
                        vlan: i.cfg.vlan(*vip),
                    },
                );
            }
        }
        out
    }

    fn states(&self) -> Vec<State> {
        self.instances.iter().map(|i| i.machine.state()).collect()
    }

    /// Applies the sync-group rules to what the last input did (`before`:
    /// the states before it), then carries out every instance's actions.
    fn settle_and_drain(&mut self, now: Instant, before: &[State], dp: &mut dyn MapStore) {
        self.groups.settle(now, &mut self.instances, before);
        self.drain(dp);
    }

    fn drain(&mut self, dp: &mut dyn MapStore) {
        for i in &mut self.instances {
            i.drain_actions(&self.garp, dp);
        }
    }

    /// Starts every machine (an address owner becomes master at once).
    pub fn startup(&mut self, now: Instant, dp: &mut dyn MapStore) {
        let before = self.states();
        for i in &mut self.instances {
            i.machine.handle_startup(now);
        }
        self.settle_and_drain(now, &before, dp);
    }

    /// Applies a reloaded `[[vrrp]]` list: an unchanged instance keeps its
    /// machine, role and counters; a changed one is stopped as on shutdown
    /// (priority 0 if master, VIPs withdrawn) and starts afresh; a removed
    /// one stops; a new one starts. Returns how many were restarted, stopped
    /// and started.
    pub fn reconfigure(
        &mut self,
        now: Instant,
        vrrp: &[config::Vrrp],
        dp: &mut dyn MapStore,
    ) -> (usize, usize, usize) {
        let was: Vec<config::Vrrp> = self.instances.iter().map(|i| i.cfg.clone()).collect();
        let changes = InstanceChanges::between(&was, vrrp);
        let mut old = std::mem::take(&mut self.instances);
        let mut next = Vec::with_capacity(vrrp.len());
        let take = |old: &mut Vec<Instance>, name: &str| {
            let pos = old
                .iter()
                .position(|i| i.cfg.name == name)
                .expect("in the old set");
            old.remove(pos)
        };
        for cfg in vrrp {
            if changes.kept.contains(&cfg.name) {
                next.push(take(&mut old, &cfg.name));
                continue;
            }
            if changes.restarted.contains(&cfg.name) {
                let mut gone = take(&mut old, &cfg.name);
                gone.stop(now, &self.garp, dp);
                tracing::info!(instance = %cfg.name, "instance changed: restarting it");
            } else {
                tracing::info!(instance = %cfg.name, "instance added");
            }
            let mut fresh = Instance::new(
                cfg.clone(),
                self.iface_mac,
                self.primary,
                Arc::clone(&self.pacer),
                now,
            );
            fresh.machine.handle_startup(now);
            next.push(fresh);
        }
        let stopped = old.len();
        for mut gone in old {
            tracing::info!(instance = %gone.cfg.name, "instance removed");
            gone.stop(now, &self.garp, dp);
        }
        self.instances = next;
        self.groups = Groups::new(self.instances.iter().map(|i| i.cfg.sync_group.as_deref()));
        self.drain(dp);
        (changes.restarted.len(), stopped, changes.started.len())
    }

    /// Hands a received datagram to the instance with its VRID.
    pub fn receive(&mut self, now: Instant, pkt: &Received, dp: &mut dyn MapStore) {
        let vrid = pkt.payload.get(1).copied();
        let before = self.states();
        match self
            .instances
            .iter_mut()
            .find(|i| Some(i.cfg.election.vrid) == vrid)
        {
            Some(i) => i.receive(now, pkt),
            None => self.unknown_vrid += 1,
        }
        self.settle_and_drain(now, &before, dp);
    }

    /// The earliest timer of any machine.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        // The pacer sends masters' adverts; the loop wakes for elections
        // and the periodic gratuitous ARP only.
        self.instances
            .iter()
            .flat_map(|i| [i.machine.poll_timeout_paced(), i.refresh_at])
            .flatten()
            .min()
    }

    /// Fires expired timers, and the periodic gratuitous ARP of masters.
    pub fn timeout(&mut self, now: Instant, dp: &mut dyn MapStore) {
        let before = self.states();
        for i in &mut self.instances {
            i.machine.handle_timeout(now);
            if let Some(at) = i.refresh_at
                && at <= now
            {
                i.refresh_at = Some(now + i.cfg.garp.refresh);
                for vip in &i.cfg.vips {
                    if let Err(e) = self.garp.send(i.mac, *vip, i.cfg.vlan(*vip)) {
                        tracing::warn!(instance = %i.cfg.name, %vip, error = %e, "cannot send gratuitous ARP");
                    }
                }
            }
        }
        self.settle_and_drain(now, &before, dp);
    }

    /// Re-evaluates every instance after a tracked check changed or the link
    /// did: priority from the checks' weights (keepalived `track_script`),
    /// and Fault while the link is down or a weight-0 check fails. A member
    /// of a sync group ignores weights, as in keepalived: any failing tracked
    /// check puts it, and so its whole group, in Fault (see `vrrp::sync`).
    pub fn reevaluate(
        &mut self,
        now: Instant,
        link_up: bool,
        down: &dyn Fn(&str) -> bool,
        no_backends: &dyn Fn(&[Ipv4Addr]) -> bool,
        dp: &mut dyn MapStore,
    ) {
        let before = self.states();
        // `track_services` is one more tracked item, failing while every
        // service on the instance's VIPs has lost its backends.
        let tracks: Vec<Vec<config::Track>> = self
            .instances
            .iter()
            .map(|i| {
                let mut t = i.cfg.track.clone();
                if let Some(weight) = i.cfg.track_services {
                    t.push(config::Track {
                        check: SERVICES_TRACK.to_owned(),
                        weight,
                    });
                }
                t
            })
            .collect();
        let failing = |i: &Instance, c: &str| {
            if c == SERVICES_TRACK {
                no_backends(&i.cfg.vips)
            } else {
                down(c)
            }
        };
        let own: Vec<bool> = self
            .instances
            .iter()
            .zip(&tracks)
            .map(|(i, track)| {
                let down = |c: &str| failing(i, c);
                let fault_check = if i.cfg.sync_group.is_some() {
                    track.iter().any(|t| down(&t.check))
                } else {
                    crate::health::tracked_fault(track, &down)
                };
                link_up && !fault_check
            })
            .collect();
        for (n, i) in self.instances.iter_mut().enumerate() {
            let operational = self.groups.operational(n, &own);
            if operational != i.operational {
                i.operational = operational;
                i.machine.handle_link(now, operational);
            }
            if i.cfg.sync_group.is_some() {
                continue;
            }
            let p = crate::health::effective_priority(
                i.cfg.election.priority,
                &tracks[n],
                &|c: &str| failing(i, c),
            );
            if p != i.machine.priority() {
                tracing::info!(instance = %i.cfg.name, from = i.machine.priority(), to = p, "priority changed by tracked checks");
                i.machine.handle_priority(now, p);
            }
        }
        self.settle_and_drain(now, &before, dp);
    }

    /// Graceful shutdown: a master sends priority 0, and keeps forwarding
    /// until the new master's first advert arrives (it has sent its GARP by
    /// then) or one `Master_Down_Interval` passes; then it withdraws its VIPs.
    /// Both nodes forward through identical tables meanwhile, so clients
    /// see no gap while their ARP entries move. Heartbeat stamps keep XDP
    /// acting for that long.
    pub async fn shutdown(&mut self, dp: &mut dyn MapStore, dead_after: Duration) {
        let now = Instant::now();
        let mut waiting = Vec::new();
        for (n, i) in self.instances.iter_mut().enumerate() {
            i.machine.handle_shutdown(now);
            if i.drain_actions_deferring(&self.garp, dp, true) {
                waiting.push(n);
            }
        }
        let limit = waiting
            .iter()
            .map(|n| self.instances[*n].master_down())
            .max()
            .unwrap_or_default();
        let deadline = tokio::time::Instant::now() + limit;
        while !waiting.is_empty() {
            let _ = dp.stamp(dead_after);
            let tick = tokio::time::sleep(Duration::from_millis(5).min(dead_after / 2));
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                () = tick => {}
                r = self.sock.recv() => {
                    let Ok(pkt) = r else { continue };
                    let vrid = pkt.payload.get(1).copied();
                    let priority = pkt.payload.get(2).copied().unwrap_or(0);
                    waiting.retain(|n| {
                        let i = &self.instances[*n];
                        !(Some(i.cfg.election.vrid) == vrid && priority > 0 && pkt.src != i.primary)
                    });
                }
            }
        }
        for i in &mut self.instances {
            if i.machine.state() != State::Master {
                i.set_vips(dp, false, "stopped");
            }
        }
    }
}
/// What a reload does to the VRRP instances, by name: an instance whose
/// configuration is unchanged keeps running (role, timers and counters
/// untouched); one whose configuration changed is stopped (a master sends
/// priority 0) and started afresh; new ones start, missing ones stop.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InstanceChanges {
    pub kept: Vec<String>,
    pub restarted: Vec<String>,
    pub started: Vec<String>,
    pub stopped: Vec<String>,
}

impl InstanceChanges {
    /// The changes from `old` to `new` (names are unique in each).
    #[must_use]
    pub fn between(old: &[config::Vrrp], new: &[config::Vrrp]) -> Self {
        let mut changes = Self::default();
        for cfg in new {
            match old.iter().find(|o| o.name == cfg.name) {
                Some(o) if o.same_as(cfg) => changes.kept.push(cfg.name.clone()),
                Some(_) => changes.restarted.push(cfg.name.clone()),
                None => changes.started.push(cfg.name.clone()),
            }
        }
        changes.stopped = old
            .iter()
            .filter(|o| new.iter().all(|n| n.name != o.name))
            .map(|o| o.name.clone())
            .collect();
        changes
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Three instances, `VI_1` to `VI_3`.
    fn instances() -> Vec<config::Vrrp> {
        let text = "[node]\ninterface = \"eth0\"\nname = \"lb1\"\n\n\
                    [[vrrp]]\nname = \"VI_1\"\nvrid = 51\nvips = [\"10.99.0.100\"]\n\n\
                    [[vrrp]]\nname = \"VI_2\"\nvrid = 52\nvips = [\"10.99.0.101\"]\n\n\
                    [[vrrp]]\nname = \"VI_3\"\nvrid = 53\nvips = [\"10.99.0.102\"]\n";
        config::Config::parse(text, Path::new("test.toml"))
            .expect("valid")
            .vrrp
    }

    const OURS: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
    const PEER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);
    const OTHER_TEAM: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 50);

    /// A v3 advert for VRID 51 from `src` at `priority` listing `vips`, as
    /// the socket hands it over.
    fn advert(src: Ipv4Addr, priority: u8, vips: Vec<Ipv4Addr>) -> Received {
        let payload = AdvertRepr {
            version: Version::V3,
            vrid: 51,
            priority,
            interval_cs: 100,
            addresses: vips,
            auth: Auth::None,
        }
        .emit(src, VRRP_GROUP, ChecksumForm::PseudoHeader)
        .unwrap();
        Received {
            src,
            dst: VRRP_GROUP,
            ttl: 255,
            payload,
        }
    }

    /// `VI_1` (VRID 51, priority 100, VIP .100) after it took over as master.
    fn master(t0: Instant) -> Instance {
        let mut i = Instance::new(
            instances().remove(0),
            [2, 0, 0, 0, 0, 2],
            Ipv4Addr::new(10, 99, 0, 2),
            Arc::new(Pacer::start().unwrap()),
            t0,
        );
        i.machine.handle_startup(t0);
        let down = i.machine.poll_timeout().expect("master-down timer");
        i.machine.handle_timeout(down);
        assert_eq!(i.machine.state(), State::Master);
        i
    }

    #[test]
    fn another_routers_advert_on_our_vrid_is_counted_and_never_yielded_to() {
        let t0 = Instant::now();
        let mut i = master(t0);
        let at = t0 + Duration::from_secs(5);
        // Another team's keepalived: VRID 51, priority 200, its own VIP.
        for n in 0..3 {
            i.receive(
                at + Duration::from_millis(n * 100),
                &advert(OTHER_TEAM, 200, vec![OTHER_TEAM]),
            );
        }
        assert_eq!(
            i.machine.state(),
            State::Master,
            "a foreign advert moved the instance"
        );
        assert_eq!(i.dropped.get("address_mismatch"), Some(&3));
        assert_eq!(i.received, 0);
        // Our own VIP plus another is not ours either.
        i.receive(at, &advert(OTHER_TEAM, 200, vec![OURS, OTHER_TEAM]));
        assert_eq!(i.dropped.get("address_mismatch"), Some(&4));
        assert_eq!(i.machine.state(), State::Master);
        // Our peer with a higher priority is followed.
        i.receive(at + Duration::from_secs(1), &advert(PEER, 200, vec![OURS]));
        assert_eq!(i.received, 1);
        assert_eq!(
            i.machine.state(),
            State::Backup,
            "the real peer is yielded to"
        );
    }

    #[test]
    fn receive_runs_the_ttl_check_before_the_codecs() {
        let t0 = Instant::now();
        let mut i = master(t0);
        let mut pkt = advert(PEER, 200, vec![OTHER_TEAM]);
        pkt.ttl = 64;
        i.receive(t0, &pkt);
        assert_eq!(i.dropped.get("ttl"), Some(&1));
        assert_eq!(i.dropped.get("address_mismatch"), None);
        assert_eq!(i.machine.state(), State::Master);
    }

    #[test]
    fn receive_counts_each_drop_by_the_first_check_it_fails() {
        let t0 = Instant::now();
        let mut i = master(t0);
        // A short message of another version fails the version check,
        // which runs before the length check (packet's module docs).
        let mut pkt = advert(PEER, 200, vec![OURS]);
        pkt.payload[0] = 0x41;
        pkt.payload.truncate(4);
        i.receive(t0, &pkt);
        // Of our version, the same length is a length drop.
        pkt.payload[0] = 0x31;
        i.receive(t0, &pkt);
        assert_eq!(i.dropped.get("version"), Some(&1));
        assert_eq!(i.dropped.get("length"), Some(&1));
        assert_eq!(i.received, 0);
    }

    #[test]
    fn an_instance_that_only_moved_in_the_file_is_kept() {
        let old = instances();
        let mut new = old.clone();
        for v in &mut new {
            v.line += 7;
        }
        let changes = InstanceChanges::between(&old, &new);
        assert_eq!(changes.kept, ["VI_1", "VI_2", "VI_3"]);
        assert!(changes.restarted.is_empty() && changes.started.is_empty());
    }

    #[test]
    fn a_reload_restarts_only_the_instances_whose_config_changed() {
        let old = instances();
        let mut new = old.clone();
        new[1].election.priority = 150;
        new.remove(2);
        let mut vi4 = old[0].clone();
        vi4.name = "VI_4".into();
        vi4.election.vrid = 54;
        new.push(vi4);
        let changes = InstanceChanges::between(&old, &new);
        assert_eq!(
            changes,
            InstanceChanges {
                kept: vec!["VI_1".into()],
                restarted: vec!["VI_2".into()],
                started: vec!["VI_4".into()],
                stopped: vec!["VI_3".into()],
            }
        );
        let same = InstanceChanges::between(&old, &old);
        assert_eq!(same.kept.len(), 3);
        assert!(same.restarted.is_empty() && same.started.is_empty() && same.stopped.is_empty());
    }
}
