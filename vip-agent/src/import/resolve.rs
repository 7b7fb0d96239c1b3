//! Resolving references: instances, notify scripts and services in vip's
//! terms, ready to write.

use super::{
    Converter, Group, HashMap, HashSet, Instance, Ipv4Addr, KA_PRIORITY, KA_VRRP_VERSION, Loc,
    MAX_WEIGHT, Notify, Probe, STATE_KEYWORDS, Script, Server, ServiceOut, VrrpOut, advert_for,
    with_backend_variable,
};
use crate::config::{
    self, BackendConfig, Election, OnBackendDown, Proto, Service, Track, V3Checksum, Vrrp,
};

impl Converter {
    #[expect(
        clippy::too_many_lines,
        reason = "the instance rules (defaults, sync groups, tracks, notify) read best in one place"
    )]
    pub(in crate::import) fn vrrp_out(&mut self) -> Vec<VrrpOut> {
        let instances = std::mem::take(&mut self.instances);
        let groups = std::mem::take(&mut self.groups);
        let names: HashSet<&str> = instances.iter().map(|i| i.name.as_str()).collect();
        let mut group_of: HashMap<&str, &Group> = HashMap::new();
        for g in &groups {
            for (m, at) in &g.members {
                if !names.contains(m.as_str()) {
                    self.note(
                        *at,
                        "group",
                        format!(
                            "ignored: there is no vrrp_instance {m} in sync group {}",
                            g.name
                        ),
                    );
                } else if let Some(other) = group_of.get(m.as_str()) {
                    self.note(
                        *at,
                        "group",
                        format!("ignored: {m} is already in sync group {}", other.name),
                    );
                } else {
                    group_of.insert(m, g);
                }
            }
            if g.members.len() < 2 {
                self.note(
                    g.at,
                    "vrrp_sync_group",
                    "note: a sync group of fewer than two instances changes nothing",
                );
            }
        }
        let scripts: HashMap<&str, &Script> =
            self.scripts.iter().map(|s| (s.name.as_str(), s)).collect();
        let mut out: Vec<VrrpOut> = Vec::new();
        let mut vrids: HashMap<u8, String> = HashMap::new();
        let mut notes: Vec<(Loc, &str, String)> = Vec::new();
        for inst in &instances {
            let Some(vrid) = inst.vrid else {
                notes.push((
                    inst.at,
                    "vrrp_instance",
                    format!(
                        "ignored: {} has no virtual_router_id, so keepalived drops it too",
                        inst.name
                    ),
                ));
                continue;
            };
            if inst.vips.is_empty() {
                notes.push((inst.at, "vrrp_instance", format!("ignored: {} has no IPv4 virtual_ipaddress, and a vip instance needs one to move", inst.name)));
                continue;
            }
            if let Some(other) = vrids.get(&vrid) {
                notes.push((inst.at, "virtual_router_id", format!("ignored: {} uses vrid {vrid} like {other}, and vip runs all instances on one interface", inst.name)));
                continue;
            }
            if out.iter().any(|o| o.vrrp.name == inst.name) {
                notes.push((
                    inst.at,
                    "vrrp_instance",
                    format!("ignored: a second instance named {}", inst.name),
                ));
                continue;
            }
            vrids.insert(vrid, inst.name.clone());
            let version = inst.version.or(self.version).unwrap_or(KA_VRRP_VERSION);
            let advert = advert_for(inst.advert, version, &mut notes);
            let mut vips: Vec<Ipv4Addr> = Vec::new();
            for (v, at) in &inst.vips {
                if vips.contains(v) {
                    notes.push((
                        *at,
                        "virtual_ipaddress",
                        format!("ignored: {v} is listed twice"),
                    ));
                } else {
                    vips.push(*v);
                }
            }
            let mut peers = Vec::new();
            for p in &inst.peers {
                if !peers.contains(p) {
                    peers.push(*p);
                }
            }
            let auth_pass = match &inst.auth_pass {
                Some((p, _)) if version == 2 => Some(p.clone()),
                Some((_, at)) => {
                    notes.push((*at, "authentication", "ignored: VRRP version 3 has no authentication (keepalived ignores it too); \
                                 set vrrp_version 2 on every node to keep it".to_owned()));
                    None
                }
                None => None,
            };
            let group = group_of.get(inst.name.as_str());
            let mut tracks = Vec::new();
            for t in &inst.tracks {
                let Some(script) = scripts.get(t.name.as_str()) else {
                    notes.push((
                        t.at,
                        "track_script",
                        format!(
                            "ignored: there is no vrrp_script {}, so keepalived ignores it too",
                            t.name
                        ),
                    ));
                    continue;
                };
                let mut weight = t.weight.unwrap_or(script.weight);
                if weight != 0 && group.is_some_and(|g| !g.keep_weights) {
                    notes.push((t.at, "track_script", format!(
                        "approximated: in a sync group keepalived sets track weights to 0 (a failing check puts the \
                         group in fault), and so does the import; add sync_group_tracking_weight to the group to keep {weight}"
                    )));
                    weight = 0;
                }
                tracks.push(Track {
                    check: script.name.clone(),
                    weight,
                });
            }
            let notify = Self::notify_out(inst, &mut notes);
            let old_checksum = match inst.old_checksum {
                Some(at) if version == 2 => {
                    notes.push((
                        at,
                        "old_unicast_checksum",
                        "ignored: it concerns VRRP version 3 only".to_owned(),
                    ));
                    false
                }
                Some(_) => true,
                None => false,
            };
            let priority = match (inst.priority, inst.master) {
                (Some(p), _) => p,
                (None, Some(at)) => {
                    notes.push((at, "state", "note: with state MASTER and no priority keepalived uses 255 (address owner), \
                                 and so does the import".to_owned()));
                    255
                }
                (None, None) => KA_PRIORITY,
            };
            let garp = inst.garp.or(&self.garp);
            let defaults = config::Garp::default();
            out.push(VrrpOut {
                vrrp: Vrrp {
                    name: inst.name.clone(),
                    election: Election {
                        vrid,
                        priority,
                        version,
                        advert_interval: advert,
                        preempt: !inst.nopreempt,
                        preempt_delay: inst.preempt_delay.unwrap_or_default(),
                    },
                    unicast_peers: peers,
                    auth_pass,
                    vips,
                    vlans: std::collections::BTreeMap::new(),
                    virtual_mac: inst.virtual_mac,
                    garp: config::Garp {
                        count: garp.count.unwrap_or(defaults.count),
                        interval: garp.interval.unwrap_or(defaults.interval),
                        refresh: garp.refresh.unwrap_or(defaults.refresh),
                    },
                    track: tracks,
                    notify: notify.map(Into::into),
                    track_services: None,
                    sync_group: group.map(|g| g.name.clone()),
                    v3_checksum: if old_checksum {
                        V3Checksum::GroupPseudoHeader
                    } else {
                        V3Checksum::default()
                    },
                    line: 0,
                },
                at: inst.at,
                vips_at: inst.vips[0].1,
            });
        }
        for (at, keyword, message) in notes {
            self.note(at, keyword, message);
        }
        out
    }

    /// vip's one notify script, from keepalived's notify and notify_*.
    pub(in crate::import) fn notify_out(
        inst: &Instance,
        notes: &mut Vec<(Loc, &'static str, String)>,
    ) -> Option<String> {
        const ARGS: &str = "calls it as `SCRIPT <master|backup|fault> <instance>`";
        let simple = |n: &Notify| !n.script.contains(char::is_whitespace);
        let wrapper = |n: &Notify| {
            format!(
                "not supported: vip has one notify script and {ARGS}; write a wrapper that runs {:?} when $1 is {}, \
                 and set notify to it",
                n.script,
                n.keyword.trim_start_matches("notify_")
            )
        };
        let states = &inst.notify_states;
        let same_three = match states {
            [Some(a), Some(b), Some(c)] => {
                a.script == b.script && b.script == c.script && simple(a)
            }
            _ => false,
        };
        if let Some(n) = &inst.notify {
            for s in states.iter().flatten() {
                notes.push((s.at, STATE_KEYWORDS[s.state], wrapper(s)));
            }
            if simple(n) {
                notes.push((n.at, "notify", format!(
                    "approximated: keepalived calls it as `SCRIPT INSTANCE <name> <MASTER|BACKUP|FAULT> <priority>` and vip {ARGS}: \
                     adapt the script to vip's arguments"
                )));
                return Some(n.script.clone());
            }
            notes.push((n.at, "notify", format!(
                "not supported: vip runs notify as a bare path and {ARGS}; put {:?} in a wrapper \
                 script and set notify to it", n.script
            )));
            return None;
        }
        if same_three {
            let n = states[0].as_ref().expect("checked");
            notes.push((n.at, "notify_master", format!(
                "approximated: the same script for master, backup and fault becomes notify; keepalived called it without \
                 arguments and vip {ARGS}"
            )));
            return Some(n.script.clone());
        }
        for s in states.iter().flatten() {
            notes.push((s.at, STATE_KEYWORDS[s.state], wrapper(s)));
        }
        None
    }

    pub(in crate::import) fn services_out(&mut self) -> Vec<ServiceOut> {
        let servers = std::mem::take(&mut self.servers);
        let mut out: Vec<ServiceOut> = Vec::new();
        for s in &servers {
            let protocol = if s.udp { Proto::Udp } else { Proto::Tcp };
            if let Some(first) = out.iter().find(|o| {
                let f = &o.service;
                f.vip == s.vip && f.port == s.port && f.protocol == protocol
            }) {
                let msg = format!(
                    "ignored: {}:{} is already the virtual server at line {}",
                    s.vip, s.port, first.at.line
                );
                self.note(s.at, "virtual_server", msg);
                continue;
            }
            let mut backends: Vec<(Ipv4Addr, u32, Loc)> = Vec::new();
            for r in &s.reals {
                if backends.iter().any(|(a, _, _)| *a == r.addr) {
                    self.note(
                        r.at,
                        "real_server",
                        format!("ignored: {} is listed twice", r.addr),
                    );
                } else {
                    backends.push((r.addr, r.weight, r.at));
                }
            }
            if backends.is_empty() {
                self.note(
                    s.at,
                    "virtual_server",
                    "ignored: it has no IPv4 real_server, and a vip service needs one",
                );
                continue;
            }
            self.scale_weights(&mut backends);
            let check = self.service_check(s);
            let on_backend_down = if self.keep_on_down(s, check.is_some()) {
                OnBackendDown::Keep
            } else if s.udp {
                OnBackendDown::Rehash
            } else {
                OnBackendDown::Reset
            };
            out.push(ServiceOut {
                service: Service {
                    vip: s.vip,
                    port: s.port,
                    protocol,
                    check: check.as_ref().map(Probe::check),
                    on_backend_down,
                    backends: backends
                        .iter()
                        .map(|&(address, weight, _)| BackendConfig { address, weight })
                        .collect(),
                    line: 0,
                },
                at: s.at,
                backends_at: backends.iter().map(|b| b.2).collect(),
                check_off: None,
            });
        }
        out
    }

    /// keepalived's `inhibit_on_failure` sets a failed server's weight to 0,
    /// so its connections go on: vip's `on_backend_down = "keep"`, which is
    /// per service.
    pub(in crate::import) fn keep_on_down(&mut self, s: &Server, checked: bool) -> bool {
        let inhibited = s.reals.iter().filter(|r| r.inhibit).count();
        if inhibited == 0 || !checked {
            return false;
        }
        let message = if inhibited == s.reals.len() {
            "approximated: inhibit_on_failure becomes on_backend_down = \"keep\": a failed backend gets no new flows \
             and keeps the ones it has"
                .to_owned()
        } else {
            format!(
                "approximated: {inhibited} of {} real servers have inhibit_on_failure; vip's on_backend_down is per service, \
                 so every backend keeps its flows when it fails (\"keep\")",
                s.reals.len()
            )
        };
        self.note(s.at, "inhibit_on_failure", message);
        true
    }

    /// LVS weights go to 65535, vip's to 1000: scale down, keeping ratios.
    pub(in crate::import) fn scale_weights(&mut self, backends: &mut [(Ipv4Addr, u32, Loc)]) {
        let max = backends.iter().map(|b| b.1).max().unwrap_or(0);
        if max <= MAX_WEIGHT {
            return;
        }
        for b in backends.iter_mut() {
            let scaled = if b.1 == 0 {
                0
            } else {
                (u64::from(b.1) * u64::from(MAX_WEIGHT)).div_ceil(u64::from(max))
            };
            let scaled = u32::try_from(scaled).unwrap_or(MAX_WEIGHT);
            self.note(
                b.2,
                "real_server",
                format!(
                    "approximated: vip weights go to {MAX_WEIGHT}, so the service's weights were scaled \
                     keeping their ratios: weight {} became {scaled}",
                    b.1
                ),
            );
            b.1 = scaled;
        }
    }

    /// The one check of a service, from its real servers' checkers.
    pub(in crate::import) fn service_check(&mut self, s: &Server) -> Option<Probe> {
        let mut probes: Vec<(Ipv4Addr, Probe, Loc)> = s
            .reals
            .iter()
            .filter_map(|r| r.probe.clone().map(|(p, at)| (r.addr, p, at)))
            .collect();
        if probes.is_empty() {
            return None;
        }
        for r in s.reals.iter().filter(|r| r.probe.is_none()) {
            self.note(
                r.at,
                "real_server",
                "note: it has no check that vip can run, but others in this virtual server do; vip checks every backend of a service alike",
            );
        }
        // MISC_CHECK scripts often name their real server: one command with
        // the backend's address in a variable serves them all.
        let commands: Vec<Option<&String>> =
            probes.iter().map(|(_, p, _)| p.command.as_ref()).collect();
        if commands.iter().all(Option::is_some) && commands.windows(2).any(|w| w[0] != w[1]) {
            let generic: Vec<String> = probes
                .iter()
                .map(|(a, p, _)| {
                    with_backend_variable(p.command.as_deref().unwrap_or_default(), *a)
                })
                .collect();
            if generic.windows(2).all(|w| w[0] == w[1]) {
                let at = probes[0].2;
                self.note(
                    at,
                    "misc_path",
                    format!(
                        "approximated: the real servers' scripts differ only by their address, so the check runs {:?}; \
                         vip sets VIP_BACKEND_ADDRESS (and VIP_BACKEND_PORT) for each backend",
                        generic[0]
                    ),
                );
                for ((_, p, _), c) in probes.iter_mut().zip(generic) {
                    p.command = Some(c);
                }
            }
        }
        let (_, first, first_at) = probes[0].clone();
        for (_, p, at) in probes.iter().skip(1) {
            let diff = first.differences(p);
            if !diff.is_empty() {
                let msg = format!(
                    "ignored: differs from the check at {} ({}); vip has one check per service and uses that one",
                    self.loc(first_at),
                    diff.join(", ")
                );
                self.note(*at, "real_server", msg);
            }
        }
        Some(first)
    }
}
