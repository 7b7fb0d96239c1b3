//! `virtual_server`, `real_server` and their checkers.

use super::{
    Converter, Ipv4Addr, KA_CONNECT_TIMEOUT, KA_DELAY_LOOP, Probe, Real, Server, Stmt, Timing,
    flag, is_literal,
};

impl Converter {
    /// Handles the checker options shared by virtual servers, real servers
    /// and checkers; false if `d` is not one.
    pub(in crate::import) fn timing(&mut self, d: &Stmt, t: &mut Timing) -> bool {
        match d.key() {
            "connect_timeout" => {
                t.connect_timeout = self.secs(d).filter(|v| !v.is_zero()).or(t.connect_timeout);
            }
            "retry" | "nb_get_retry" => {
                t.retry = self.int(d, 0..=i64::from(u32::MAX - 1)).or(t.retry);
            }
            "delay_loop" => t.delay_loop = self.secs(d).filter(|v| !v.is_zero()).or(t.delay_loop),
            "delay_before_retry" => self.ignored(
                d,
                "vip probes every interval (delay_loop) and marks a backend down after `fall` failures in a row; \
                 there is no separate retry delay",
            ),
            "warmup" => self.ignored(d, "vip spreads checks with a small random jitter of its own"),
            "alpha" => self.ignored(d, "vip starts each backend as up until its check fails"),
            "log_all_failures" => self.ignored(d, "vip logs state changes"),
            _ => return false,
        }
        true
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one arm per virtual_server keyword reads best as one table"
    )]
    pub(in crate::import) fn virtual_server(&mut self, s: &Stmt) {
        let (Some(first), port) = (s.arg(0), s.arg(1)) else {
            self.ignored(s, "it needs an address and a port");
            return;
        };
        if first == "fwmark" || first == "group" {
            self.note(
                s.at,
                s.key(),
                format!(
                    "not supported: vip balances an address and a port, not a {first}; left out"
                ),
            );
            return;
        }
        let Some(vip) = self.ipv4(s.at, s.key(), first) else {
            return;
        };
        let Some(port) = port.and_then(|p| p.parse::<u16>().ok()).filter(|p| *p != 0) else {
            self.note(
                s.at,
                s.key(),
                "not supported: vip balances one port per service, and this virtual server has none; left out",
            );
            return;
        };
        let mut server = Server {
            vip,
            port,
            udp: false,
            at: s.at,
            reals: Vec::new(),
        };
        let mut timing = Timing::default();
        let mut kind_given = false;
        let mut inhibit = false;
        // Real servers last: they inherit the options whatever their order.
        let (reals, options): (Vec<&Stmt>, Vec<&Stmt>) =
            s.block().iter().partition(|d| d.key() == "real_server");
        for d in options {
            if self.timing(d, &mut timing) {
                continue;
            }
            match d.key() {
                "lb_algo" | "lvs_sched" => {
                    let algo = d.arg(0).unwrap_or_default();
                    self.note(
                        d.at,
                        d.key(),
                        format!(
                            "approximated: vip always spreads flows with Maglev consistent hashing weighted by the backends' weights; \
                             {algo} becomes that{}",
                            if matches!(algo, "lc" | "wlc" | "lblc" | "lblcr" | "sed" | "nq" | "twos") {
                                " (it counts no connections)"
                            } else {
                                ""
                            }
                        ),
                    );
                }
                "lb_kind" | "lvs_method" => {
                    kind_given = true;
                    let how = d.arg(0).unwrap_or_default();
                    if how != "DR" {
                        self.note(
                            d.at,
                            d.key(),
                            format!(
                                "not supported: vip forwards by direct routing (DR) only, not {how}; the service is imported as DR, \
                                 so each backend needs the VIP on lo with arp_ignore=1 and arp_announce=2, and answers clients directly"
                            ),
                        );
                    }
                }
                "protocol" => match d.arg(0) {
                    Some("TCP") => server.udp = false,
                    Some("UDP") => server.udp = true,
                    other => {
                        self.note(
                            d.at,
                            d.key(),
                            format!(
                                "not supported: vip balances TCP and UDP, not {}; left out",
                                other.unwrap_or("nothing")
                            ),
                        );
                        return;
                    }
                },
                "persistence_timeout" | "persistence_granularity" | "persistence_engine" => {
                    self.note(
                        d.at,
                        d.key(),
                        "approximated: vip keeps every connection on its backend for the connection's life (flow table) \
                         but has no client persistence across connections",
                    );
                }
                "inhibit_on_failure" => inhibit = flag(d),
                "sorry_server" | "sorry_server_inhibit" | "sorry_server_lvs_method" => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip has no sorry server; while every backend is down a [[vrrp]] track_services weight can move the VIP",
                ),
                "quorum" | "hysteresis" | "quorum_up" | "quorum_down" => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip has no quorum; [[vrrp]] track_services = { weight = N } reacts when a service has no healthy backend",
                ),
                "virtualhost" => self.ignored(d, "vip's HTTP check sends no Host of its own choosing"),
                "ha_suspend" | "omega" | "smtp_alert" | "snmp_name" | "ops"
                | "ip_family" | "flag-1" | "flag-2" | "flag-3" | "sh-port" | "sh-fallback"
                | "mh-port" | "mh-fallback" => self.ignored(d, "vip has no equivalent"),
                _ => self.unknown(d),
            }
        }
        if !kind_given {
            self.note(
                s.at,
                s.key(),
                "note: no lb_kind, and keepalived's default is NAT; vip forwards by direct routing (DR) only, so each backend \
                 needs the VIP on lo with arp_ignore=1 and arp_announce=2",
            );
        }
        for r in reals {
            if let Some(real) = self.real_server(r, port, &timing, inhibit) {
                server.reals.push(real);
            }
        }
        self.servers.push(server);
    }

    pub(in crate::import) fn real_server(
        &mut self,
        s: &Stmt,
        port: u16,
        timing: &Timing,
        inhibit: bool,
    ) -> Option<Real> {
        let addr = self.ipv4(s.at, s.key(), s.arg(0).unwrap_or_default())?;
        if let Some(p) = s.arg(1)
            && p.parse::<u16>().ok() != Some(port)
        {
            self.note(
                s.at,
                s.key(),
                format!(
                    "not supported: direct routing cannot change the port; the backend gets port {port}, not {p}"
                ),
            );
        }
        let mut real = Real {
            addr,
            at: s.at,
            weight: 1,
            inhibit,
            probe: None,
        };
        let mut timing = timing.clone();
        let (checkers, options): (Vec<&Stmt>, Vec<&Stmt>) = s
            .block()
            .iter()
            .partition(|d| d.key().ends_with("_CHECK") || d.key().ends_with("_GET"));
        for d in options {
            if self.timing(d, &mut timing) {
                continue;
            }
            match d.key() {
                "weight" => real.weight = self.int(d, 0..=65535).unwrap_or(1),
                "inhibit_on_failure" => real.inhibit = flag(d),
                "lb_kind" | "lvs_method" if d.arg(0) != Some("DR") => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip forwards by direct routing (DR) only; this backend is imported as DR",
                ),
                "lb_kind" | "lvs_method" => {}
                "notify_up" | "notify_down" => self.ignored(
                    d,
                    "vip runs no script when a backend changes state; it logs it and shows it in `vipctl backends`",
                ),
                "uthreshold" | "lthreshold" => {
                    self.ignored(d, "vip counts no connections per backend");
                }
                "virtualhost" => self.ignored(d, "vip's HTTP check sends no Host of its own choosing"),
                "smtp_alert" | "snmp_name" => self.ignored(d, "vip has no equivalent"),
                _ => self.unknown(d),
            }
        }
        for (n, c) in checkers.into_iter().enumerate() {
            let probe = self.checker(c, addr, port, &timing);
            if n == 0 {
                real.probe = probe.map(|p| (p, c.at));
            } else if probe.is_some() {
                let first = real
                    .probe
                    .as_ref()
                    .map_or(String::new(), |(_, at)| format!(" (line {})", at.line));
                self.note(
                    c.at,
                    c.key(),
                    format!("ignored: vip runs one check per backend and uses this server's first{first}"),
                );
            }
        }
        Some(real)
    }

    /// A checker in vip's terms, or `None` (with a note) if vip cannot run it.
    pub(in crate::import) fn checker(
        &mut self,
        c: &Stmt,
        addr: Ipv4Addr,
        port: u16,
        timing: &Timing,
    ) -> Option<Probe> {
        let (kind, retries) = match c.key() {
            "TCP_CHECK" => ("tcp", 1),
            "HTTP_GET" => ("http", 1),
            "MISC_CHECK" => ("exec", 0),
            "SSL_GET" | "SMTP_CHECK" => {
                self.note(
                    c.at,
                    c.key(),
                    "approximated: vip has no TLS or SMTP check; a TCP connect to the same port stands in",
                );
                ("tcp", 1)
            }
            other => {
                self.note(
                    c.at,
                    other,
                    "not supported: vip checks with tcp, http, amqp or exec; left out (a MISC_CHECK script can do it)",
                );
                return None;
            }
        };
        let mut timing = timing.clone();
        let mut probe = Probe {
            kind,
            interval: KA_DELAY_LOOP,
            timeout: KA_CONNECT_TIMEOUT,
            fall: 1,
            port: None,
            path: None,
            expect_status: None,
            expect_body: None,
            command: None,
        };
        let mut misc_timeout = None;
        let mut urls = 0;
        for d in c.block() {
            if self.timing(d, &mut timing) {
                continue;
            }
            match d.key() {
                "connect_port" => probe.port = self.int(d, 1..=65535),
                "connect_ip" => self.ignored(d, &format!("vip probes the backend's own address, {addr}")),
                "bindto" | "bind_port" | "bind_if" | "fwmark" => self.ignored(
                    d,
                    "vip probes from the node's own address, chosen by the kernel",
                ),
                "url" if kind != "http" => {
                    self.ignored(d, "the TCP connect that stands in for this check fetches no url");
                }
                "url" => {
                    urls += 1;
                    if urls == 1 {
                        self.url(d, &mut probe);
                    } else {
                        self.ignored(d, "vip checks one path per service: the first url");
                    }
                }
                "misc_path" if kind == "exec" => {
                    probe.command = Some(d.args().join(" ")).filter(|c| !c.is_empty());
                }
                "misc_timeout" if kind == "exec" => {
                    misc_timeout = self.secs(d).filter(|v| !v.is_zero());
                }
                "misc_dynamic" => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip sets no weight from the exit status; 0 is up, anything else down",
                ),
                "user" => self.ignored(d, "vip runs the script as the agent's own user"),
                "http_protocol" | "fast_recovery" | "enable_sni" | "helo_name" | "virtualhost" => {
                    self.ignored(d, "vip's check has no such option");
                }
                _ => self.unknown(d),
            }
        }
        probe.interval = timing.delay_loop.unwrap_or(KA_DELAY_LOOP);
        probe.timeout = if kind == "exec" {
            // keepalived lets a script run up to delay_loop without misc_timeout.
            misc_timeout.unwrap_or(probe.interval)
        } else {
            timing.connect_timeout.unwrap_or(KA_CONNECT_TIMEOUT)
        };
        // keepalived marks a server down after a failure and `retry` more.
        probe.fall = timing.retry.unwrap_or(retries) + 1;
        if probe.port == Some(port) {
            probe.port = None;
        }
        if kind == "http" {
            probe.path.get_or_insert_with(|| "/".to_owned());
            probe.expect_status.get_or_insert(200);
        }
        if kind == "exec" && probe.command.is_none() {
            self.note(
                c.at,
                c.key(),
                "ignored: it has no misc_path, so keepalived drops it too",
            );
            return None;
        }
        Some(probe)
    }

    pub(in crate::import) fn url(&mut self, s: &Stmt, probe: &mut Probe) {
        let mut status_given = false;
        for d in s.block() {
            match d.key() {
                "path" => {
                    if let Some(p) = self.value(d) {
                        probe.path = Some(if p.starts_with('/') { p } else { format!("/{p}") });
                    }
                }
                "status_code" => {
                    status_given = true;
                    let codes = d.args().join(" ");
                    match codes.parse::<u16>() {
                        Ok(c) if (100..=599).contains(&c) => probe.expect_status = Some(c),
                        _ => {
                            let first = codes
                                .split(|c: char| !c.is_ascii_digit())
                                .find_map(|c| c.parse::<u16>().ok())
                                .filter(|c| (100..=599).contains(c))
                                .unwrap_or(200);
                            probe.expect_status = Some(first);
                            self.note(
                                d.at,
                                d.key(),
                                format!("approximated: vip expects one status, not {codes}; it expects {first}"),
                            );
                        }
                    }
                }
                "digest" => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip does not hash the body; the check passes on the expected status alone",
                ),
                "regex" if is_literal(d.arg(0).unwrap_or_default()) => {
                    probe.expect_body = d.arg(0).map(str::to_owned).filter(|b| !b.is_empty());
                }
                "regex" | "regex_no_match" | "regex_options" | "regex_stack"
                | "regex_min_offset" | "regex_max_offset" => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip looks for a fixed string in the body (expect_body), not a regular expression; \
                     the check passes on the expected status alone",
                ),
                "virtualhost" => self.ignored(d, "vip's HTTP check sends no Host of its own choosing"),
                _ => self.unknown(d),
            }
        }
        if !status_given {
            self.note(
                s.at,
                "status_code",
                "approximated: keepalived accepts any 2xx status by default; vip expects 200 (set expect_status for another)",
            );
        }
    }
}
