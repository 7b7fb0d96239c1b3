//! `vrrp_script`, `vrrp_instance` and `vrrp_sync_group`.

use super::{
    Converter, Duration, Garp, Group, Instance, Loc, MAX_AUTH_PASS, Notify, STATE_KEYWORDS, Script,
    Stmt, Track,
};

impl Converter {
    pub(in crate::import) fn vrrp_script(&mut self, s: &Stmt) {
        let Some(name) = self.value(s) else { return };
        let mut script = Script {
            name,
            at: s.at,
            command: None,
            interval: Duration::from_secs(1),
            timeout: None,
            weight: 0,
            rise: 1,
            fall: 1,
        };
        for d in s.block() {
            match d.key() {
                "script" => {
                    script.command = Some(d.args().join(" ")).filter(|c| !c.is_empty());
                }
                "interval" => {
                    if let Some(v) = self.secs(d).filter(|v| !v.is_zero()) {
                        script.interval = v;
                    }
                }
                "timeout" => script.timeout = self.secs(d).filter(|v| !v.is_zero()),
                "weight" => {
                    script.weight = self.int(d, -253..=253).unwrap_or(0);
                    if d.arg(1) == Some("reverse") {
                        self.note(
                            d.at,
                            "reverse",
                            "not supported: vip applies a weight while the check fails (negative) or passes (positive); \
                             the weight is kept without reverse",
                        );
                    }
                }
                "rise" => script.rise = self.int(d, 1..=i64::from(u32::MAX)).unwrap_or(1),
                "fall" => script.fall = self.int(d, 1..=i64::from(u32::MAX)).unwrap_or(1),
                "user" => self.ignored(d, "vip runs the script as the agent's own user"),
                "init_fail" => self.ignored(
                    d,
                    "vip starts every check as passing, so a restart does not lower the priority",
                ),
                _ => self.unknown(d),
            }
        }
        if script.command.is_none() {
            self.note(
                s.at,
                s.key(),
                format!(
                    "ignored: {} has no script, so keepalived drops it too",
                    script.name
                ),
            );
            return;
        }
        self.scripts.push(script);
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one arm per vrrp_instance keyword reads best as one table"
    )]
    pub(in crate::import) fn vrrp_instance(&mut self, s: &Stmt) {
        let Some(name) = self.value(s) else { return };
        let mut inst = Instance {
            name,
            at: s.at,
            interface: None,
            vrid: None,
            priority: None,
            version: None,
            advert: None,
            nopreempt: false,
            preempt_delay: None,
            auth_pass: None,
            peers: Vec::new(),
            vips: Vec::new(),
            virtual_mac: false,
            garp: Garp::default(),
            tracks: Vec::new(),
            notify: None,
            notify_states: [None, None, None],
            old_checksum: None,
            master: None,
        };
        for d in s.block() {
            match d.key() {
                "state" => {
                    inst.master = (d.arg(0) == Some("MASTER")).then_some(d.at);
                    self.note_once(
                        "state",
                        d.at,
                        "state",
                        "note: vip has no initial state; the election decides by priority (the highest becomes master, \
                         and with preempt it takes over again when it comes back)",
                    );
                }
                "interface" => {
                    if let Some(v) = self.value(d) {
                        inst.interface = Some((v, d.at));
                    }
                }
                "virtual_router_id" => inst.vrid = self.int(d, 1..=255),
                "priority" => inst.priority = self.int(d, 1..=255),
                "version" => inst.version = self.int(d, 2..=3),
                "advert_int" => {
                    if let Some(v) = self.secs(d).filter(|v| !v.is_zero()) {
                        inst.advert = Some((v, d.at));
                    }
                }
                "nopreempt" => inst.nopreempt = true,
                "preempt" => inst.nopreempt = false,
                "preempt_delay" => inst.preempt_delay = self.secs(d),
                "authentication" => self.authentication(d, &mut inst),
                "unicast_src_ip" | "mcast_src_ip" => {
                    let v = d.arg(0).unwrap_or_default().to_owned();
                    self.note(
                        d.at,
                        d.key(),
                        format!(
                            "ignored: vip sends adverts from the primary address of [node] interface; make sure that is {v}"
                        ),
                    );
                }
                "unicast_peer" => self.unicast_peers(d, &mut inst),
                "virtual_ipaddress" | "virtual_ipaddress_excluded" => self.vips(d, &mut inst),
                "track_script" => {
                    for t in d.block() {
                        let weight = match t.arg(0) {
                            Some("weight") => t.arg(1).and_then(|w| w.parse::<i32>().ok()),
                            _ => None,
                        };
                        if t.args().iter().any(|a| a == "reverse") {
                            self.note(
                                t.at,
                                "reverse",
                                "not supported: vip applies a weight while the check fails (negative) or passes (positive); \
                                 the weight is kept without reverse",
                            );
                        }
                        inst.tracks.push(Track {
                            name: t.key().to_owned(),
                            weight,
                            at: t.at,
                        });
                    }
                }
                "track_interface" => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip watches only [node] interface (down means fault); to follow another link, \
                     write a vrrp_script such as `ip link show IF | grep -q 'state UP'` and track it",
                ),
                "track_file" | "track_process" | "track_bfd" | "track_src_ip" => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip tracks exec checks only; write a vrrp_script that tests the same thing and track it",
                ),
                "notify" | "notify_master" | "notify_backup" | "notify_fault" => {
                    self.notify_keyword(d, &mut inst);
                }
                "notify_stop" | "notify_deleted" | "notify_master_rx_lower_pri" => self.ignored(
                    d,
                    "vip's notify script is called for master, backup and fault only",
                ),
                "use_vmac" => {
                    inst.virtual_mac = true;
                    if !d.args().is_empty() {
                        self.ignored(
                            d,
                            "vip creates no macvlan: it answers for the VIPs with 00:00:5e:00:01:<vrid> on [node] interface; \
                             the interface name and MAC given here are not used",
                        );
                    }
                }
                "vmac_xmit_base" | "use_vmac_addr" | "use_ipvlan" => self.ignored(
                    d,
                    "vip creates no macvlan; virtual_mac = true answers with the virtual MAC on [node] interface",
                ),
                "garp_master_repeat" => inst.garp.count = self.garp_count(d),
                "garp_master_refresh" => inst.garp.refresh = self.secs(d),
                "garp_master_delay"
                | "garp_master_refresh_repeat"
                | "garp_lower_prio_delay"
                | "garp_lower_prio_repeat" => self.garp_second_burst(d),
                "old_unicast_checksum" => inst.old_checksum = Some(d.at),
                "dont_track_primary" => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip always goes to fault while [node] interface is down",
                ),
                "smtp_alert" => self.ignored(
                    d,
                    "vip sends no e-mail; a [[vrrp]] notify script can alert on state changes",
                ),
                "accept" | "no_accept" | "strict_mode" => self.ignored(
                    d,
                    "vip never adds the VIPs to an interface, so it has no accept mode",
                ),
                "virtual_routes" | "virtual_rules" => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip changes no routes or rules on a transition; a notify script can",
                ),
                "native_ipv6" => self.note(d.at, d.key(), "not supported: vip is IPv4 only"),
                _ => self.unknown(d),
            }
        }
        self.instances.push(inst);
    }

    pub(in crate::import) fn authentication(&mut self, s: &Stmt, inst: &mut Instance) {
        let mut kind: Option<(String, Loc)> = None;
        let mut pass: Option<(String, Loc)> = None;
        for d in s.block() {
            match d.key() {
                "auth_type" => kind = self.value(d).map(|v| (v, d.at)),
                "auth_pass" => pass = self.value(d).map(|v| (v, d.at)),
                _ => self.unknown(d),
            }
        }
        match (kind, pass) {
            (Some((k, _)), Some((mut p, at))) if k == "PASS" => {
                if p.len() > MAX_AUTH_PASS {
                    let mut end = MAX_AUTH_PASS;
                    while !p.is_char_boundary(end) {
                        end -= 1;
                    }
                    p.truncate(end);
                    self.note(
                        at,
                        "auth_pass",
                        format!("approximated: keepalived sends only the first {MAX_AUTH_PASS} bytes, {p:?}, and so does vip"),
                    );
                }
                inst.auth_pass = Some((p, at));
            }
            (Some((k, at)), _) if k == "AH" => self.note(
                at,
                "auth_type",
                "not supported: vip has no IPsec AH authentication; remove authentication on every node, or use auth_type PASS",
            ),
            (Some((k, at)), _) if k != "PASS" => {
                self.note(at, "auth_type", format!("ignored: {k:?} is neither PASS nor AH"));
            }
            (_, pass) => self.note(
                pass.map_or(s.at, |(_, at)| at),
                s.key(),
                "ignored: it needs both auth_type PASS and auth_pass",
            ),
        }
    }

    pub(in crate::import) fn unicast_peers(&mut self, s: &Stmt, inst: &mut Instance) {
        for p in s.block() {
            if let Some(a) = self.ipv4(p.at, s.key(), p.key()) {
                inst.peers.push(a);
            }
            if !p.args().is_empty() {
                self.note(
                    p.at,
                    "unicast_peer",
                    format!(
                        "ignored: {}: vip checks that adverts come from a peer, with TTL 255",
                        p.args().join(" ")
                    ),
                );
            }
        }
    }

    pub(in crate::import) fn vips(&mut self, s: &Stmt, inst: &mut Instance) {
        for v in s.block() {
            let (addr, prefix) = v.key().split_once('/').unwrap_or((v.key(), "32"));
            let Some(a) = self.ipv4(v.at, s.key(), addr) else {
                continue;
            };
            inst.vips.push((a, v.at));
            if prefix != "32" {
                self.note_once(
                    "prefix",
                    v.at,
                    s.key(),
                    &format!(
                        "note: vip adds no address to an interface (XDP answers ARP for the VIP), so the /{prefix} \
                         has no effect"
                    ),
                );
            }
            let mut options: Vec<&str> = v.args().iter().map(String::as_str).collect();
            if let Some(i) = options.iter().position(|o| *o == "dev") {
                let dev = options.get(i + 1).copied().unwrap_or_default();
                if inst.interface.as_ref().is_some_and(|(ifc, _)| ifc != dev) {
                    self.note(
                        v.at,
                        "dev",
                        format!("not supported: vip answers for VIPs on [node] interface only, not on {dev}"),
                    );
                }
                options.drain(i..(i + 2).min(options.len()));
            }
            if !options.is_empty() {
                self.note(
                    v.at,
                    s.key(),
                    format!(
                        "ignored: {}: vip adds no address to an interface, so address options do not apply",
                        options.join(" ")
                    ),
                );
            }
        }
    }

    pub(in crate::import) fn notify_keyword(&mut self, d: &Stmt, inst: &mut Instance) {
        let Some(script) = self.value(d) else { return };
        if d.args().len() > 1 {
            self.ignored(
                d,
                &format!(
                    "the user {} is not used: vip runs the script as the agent's own user",
                    d.args()[1..].join(" ")
                ),
            );
        }
        let state = STATE_KEYWORDS.iter().position(|k| *k == d.key());
        let n = Notify {
            keyword: d.key().to_owned(),
            script,
            at: d.at,
            state: state.unwrap_or_default(),
        };
        match state {
            None => inst.notify = Some(n),
            Some(i) => inst.notify_states[i] = Some(n),
        }
    }

    pub(in crate::import) fn sync_group(&mut self, s: &Stmt) {
        let Some(name) = self.value(s) else { return };
        let mut group = Group {
            name,
            at: s.at,
            members: Vec::new(),
            keep_weights: false,
        };
        for d in s.block() {
            match d.key() {
                "group" => {
                    for m in d.block() {
                        group
                            .members
                            .extend(m.words.iter().map(|w| (w.clone(), m.at)));
                    }
                }
                "sync_group_tracking_weight" => group.keep_weights = true,
                "global_tracking" => self.ignored(d, "deprecated in keepalived; vip keeps the members' own tracks"),
                "notify" | "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" => {
                    self.note(
                        d.at,
                        d.key(),
                        "not supported: vip notifies per instance; set notify on the member instances",
                    );
                }
                "track_script" | "track_interface" | "track_file" | "track_process"
                | "track_bfd" => self.note(
                    d.at,
                    d.key(),
                    "not supported on a sync group: track the vrrp_script from a member instance (one in fault takes the group with it)",
                ),
                "smtp_alert" => self.ignored(d, "vip sends no e-mail"),
                _ => self.unknown(d),
            }
        }
        self.groups.push(group);
    }

    // --- LVS.
}
