//! Walking the statements: globals and the converter's helpers.

use super::{
    Converter, Duration, Garp, HashSet, IpAddr, Ipv4Addr, Loc, MAX_GARP_COUNT, PathBuf, RawNote,
    Stmt, parse_secs,
};

impl Converter {
    pub(in crate::import) fn new(files: Vec<PathBuf>, notes: Vec<RawNote>) -> Self {
        Self {
            files,
            notes,
            said: HashSet::new(),
            router_id: None,
            script_user: None,
            script_security: None,
            version: None,
            garp: Garp::default(),
            scripts: Vec::new(),
            instances: Vec::new(),
            groups: Vec::new(),
            servers: Vec::new(),
        }
    }

    pub(in crate::import) fn loc(&self, at: Loc) -> String {
        format!("{}:{}", self.files[at.file].display(), at.line)
    }

    pub(in crate::import) fn note(&mut self, at: Loc, keyword: &str, message: impl Into<String>) {
        self.notes.push(RawNote {
            at: Some(at),
            keyword: keyword.to_owned(),
            message: message.into(),
        });
    }

    pub(in crate::import) fn note_once(
        &mut self,
        what: &'static str,
        at: Loc,
        keyword: &str,
        message: &str,
    ) {
        if self.said.insert(what) {
            self.note(at, keyword, message);
        }
    }

    pub(in crate::import) fn ignored(&mut self, s: &Stmt, why: &str) {
        self.note(s.at, s.key(), format!("ignored: {why}"));
    }

    pub(in crate::import) fn unknown(&mut self, s: &Stmt) {
        self.ignored(
            s,
            "vip has no equivalent (or the keyword is unknown to keepalived 2.2)",
        );
    }

    /// The first argument, or a note that it is missing.
    pub(in crate::import) fn value(&mut self, s: &Stmt) -> Option<String> {
        let v = s.arg(0).map(str::to_owned);
        if v.is_none() {
            self.ignored(s, "it needs a value");
        }
        v
    }

    /// The first argument as an integer in `range`.
    pub(in crate::import) fn int<T: TryFrom<i64>>(
        &mut self,
        s: &Stmt,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<T> {
        let v = self.value(s)?;
        let n = v
            .parse::<i64>()
            .ok()
            .filter(|n| range.contains(n))
            .and_then(|n| T::try_from(n).ok());
        if n.is_none() {
            self.ignored(
                s,
                &format!(
                    "{v:?} is not a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            );
        }
        n
    }

    /// The first argument as seconds.
    pub(in crate::import) fn secs(&mut self, s: &Stmt) -> Option<Duration> {
        let v = self.value(s)?;
        let d = parse_secs(&v);
        if d.is_none() {
            self.ignored(s, &format!("{v:?} is not a number of seconds"));
        }
        d
    }

    /// `text` as an IPv4 address; `keyword` names the statement, or the
    /// block of the entry, in the note if it is not one.
    pub(in crate::import) fn ipv4(
        &mut self,
        at: Loc,
        keyword: &str,
        text: &str,
    ) -> Option<Ipv4Addr> {
        match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => Some(a),
            Ok(IpAddr::V6(_)) => {
                self.note(
                    at,
                    keyword,
                    format!("not supported: {text} is IPv6 and vip is IPv4 only; left out"),
                );
                None
            }
            Err(_) => {
                self.note(
                    at,
                    keyword,
                    format!("ignored: {text:?} is not an IP address"),
                );
                None
            }
        }
    }

    // --- The top level.

    pub(in crate::import) fn walk(&mut self, stmts: &[Stmt]) {
        for s in stmts {
            let needs_block = matches!(
                s.key(),
                "global_defs"
                    | "vrrp_script"
                    | "vrrp_instance"
                    | "vrrp_sync_group"
                    | "virtual_server"
            );
            if needs_block && s.block.is_none() {
                self.ignored(s, "it needs a { } block");
                continue;
            }
            match s.key() {
                "global_defs" => self.global_defs(s),
                "vrrp_script" => self.vrrp_script(s),
                "vrrp_instance" => self.vrrp_instance(s),
                "vrrp_sync_group" => self.sync_group(s),
                "virtual_server" => self.virtual_server(s),
                "virtual_server_group" => self.note(
                    s.at,
                    s.key(),
                    "not supported: vip has no virtual server groups; write one virtual_server per address and port",
                ),
                "vrrp_track_process" | "vrrp_track_file" | "track_file" => self.note(
                    s.at,
                    s.key(),
                    "not supported: vip tracks exec checks only; write a vrrp_script that tests the same thing",
                ),
                "bfd_instance" => self.note(
                    s.at,
                    s.key(),
                    "not supported: vip has no BFD; VRRP adverts detect a dead peer (shorten advert_int for speed)",
                ),
                "static_ipaddress" | "static_routes" | "static_rules" => self.note(
                    s.at,
                    s.key(),
                    "not supported: vip manages no static addresses, routes or rules; configure them in the OS",
                ),
                "garp_group" => self.note(
                    s.at,
                    s.key(),
                    "not supported: garp = { count, interval } is set per [[vrrp]] instance",
                ),
                "net_namespace" | "net_namespace_ipvs" | "instance" | "use_pid_dir"
                | "linkbeat_use_polling" | "child_wait_time" | "linkbeat_interfaces"
                | "interface_up_down_delays" | "SSL" | "track_group" => {
                    self.ignored(s, "vip has no equivalent");
                }
                _ => self.unknown(s),
            }
        }
    }

    /// `script_user USER [GROUP]` becomes `script_user = "USER[:GROUP]"`.
    fn script_user(&mut self, d: &Stmt) {
        let Some(user) = self.value(d) else { return };
        let text = match d.arg(1) {
            Some(group) => format!("{user}:{group}"),
            None => user,
        };
        match crate::config::ScriptUser::parse(&text) {
            Ok(u) => self.script_user = Some((u, d.at)),
            Err(e) => self.ignored(d, &e),
        }
    }

    pub(in crate::import) fn global_defs(&mut self, s: &Stmt) {
        for d in s.block() {
            match d.key() {
                "router_id" => {
                    if let Some(v) = self.value(d) {
                        self.router_id = Some((v, d.at));
                    }
                }
                "vrrp_version" => self.version = self.int(d, 2..=3),
                "vrrp_garp_master_repeat" => self.garp.count = self.garp_count(d),
                "vrrp_garp_master_refresh" => self.garp.refresh = self.secs(d),
                "vrrp_garp_interval" => self.garp.interval = self.secs(d),
                "vrrp_min_garp" => {
                    if !matches!(d.arg(0), Some("false" | "off" | "no")) {
                        self.garp.count = Some(1);
                    }
                }
                "vrrp_garp_master_delay"
                | "vrrp_garp_master_refresh_repeat"
                | "vrrp_garp_lower_prio_delay"
                | "vrrp_garp_lower_prio_repeat" => self.garp_second_burst(d),
                "notification_email" | "notification_email_from" | "smtp_server"
                | "smtp_connect_timeout" | "smtp_helo_name" | "smtp_alert"
                | "smtp_alert_vrrp" | "smtp_alert_checker" | "no_email_faults"
                | "email_faults" => self.ignored(
                    d,
                    "vip sends no e-mail; a [[vrrp]] notify script can alert on state changes",
                ),
                "enable_script_security" => self.script_security = Some(d.at),
                "script_user" => self.script_user(d),
                "max_auto_priority" | "vrrp_priority" | "checker_priority" | "bfd_priority"
                | "vrrp_rt_priority" | "checker_rt_priority" | "bfd_rt_priority"
                | "vrrp_no_swap" | "checker_no_swap" | "bfd_no_swap" | "vrrp_cpu_affinity"
                | "checker_cpu_affinity" | "bfd_cpu_affinity" | "vrrp_rlimit_rttime"
                | "checker_rlimit_rttime" => self.ignored(
                    d,
                    "vip does not change its own scheduling; set it in the service manager (systemd CPUSchedulingPolicy=)",
                ),
                "vrrp_mcast_group4" => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip multicasts adverts to 224.0.0.18 only; use unicast_peer for anything else",
                ),
                "lvs_sync_daemon" => self.ignored(
                    d,
                    "vip does not copy connections between nodes; both nodes' Maglev tables send a flow to the same backend when their backends match",
                ),
                "lvs_id" => self.ignored(d, "vip names the node with [node] name (from router_id)"),
                "vrrp_strict" => self.ignored(
                    d,
                    "vip has no strict mode; it never adds the VIPs to an interface, so there is no accept mode to turn off",
                ),
                _ => self.ignored(d, "vip has no equivalent global setting"),
            }
        }
    }

    pub(in crate::import) fn garp_count(&mut self, d: &Stmt) -> Option<u32> {
        let n: u32 = self.int(d, 0..=i64::from(u32::MAX))?;
        if n > MAX_GARP_COUNT {
            self.note(
                d.at,
                d.key(),
                format!("approximated: vip sends at most {MAX_GARP_COUNT} gratuitous ARPs per transition; {n} became {MAX_GARP_COUNT}"),
            );
        }
        Some(n.min(MAX_GARP_COUNT))
    }

    pub(in crate::import) fn garp_second_burst(&mut self, d: &Stmt) {
        self.ignored(
            d,
            "vip sends one burst of gratuitous ARPs on becoming master (garp.count, garp.interval) and then one per VIP every garp.refresh; there is no delayed second burst",
        );
    }
}
