//! Writing the TOML, and checking it loads.

use std::{collections::HashSet, fmt::Write as _, net::Ipv4Addr, path::Path, time::Duration};

use super::{
    ImportError, Imported, Note, Options, host_name,
    lex::{Loc, RawNote},
    model::{Converter, Garp, KA_ADVERT, Probe, Script},
    validate,
    values::{fmt_dur, node_name, q},
};

/// A vip `[[check]]` made from a `vrrp_script`.
pub(in crate::import) struct CheckOut<'a> {
    pub(in crate::import) script: &'a Script,
}

/// A `[[vrrp]]` ready to write.
pub(in crate::import) struct VrrpOut {
    pub(in crate::import) name: String,
    pub(in crate::import) at: Loc,
    pub(in crate::import) vrid: u8,
    pub(in crate::import) priority: u8,
    pub(in crate::import) version: u8,
    pub(in crate::import) advert: Duration,
    pub(in crate::import) nopreempt: bool,
    pub(in crate::import) preempt_delay: Option<Duration>,
    pub(in crate::import) peers: Vec<Ipv4Addr>,
    pub(in crate::import) auth_pass: Option<String>,
    pub(in crate::import) vips: Vec<Ipv4Addr>,
    /// The line of the first VIP.
    pub(in crate::import) vips_at: Loc,
    pub(in crate::import) virtual_mac: bool,
    pub(in crate::import) garp: Garp,
    pub(in crate::import) tracks: Vec<(String, i32)>,
    pub(in crate::import) notify: Option<String>,
    pub(in crate::import) sync_group: Option<String>,
    pub(in crate::import) old_checksum: bool,
}

/// A `[[service]]` ready to write.
pub(in crate::import) struct ServiceOut {
    pub(in crate::import) at: Loc,
    pub(in crate::import) vip: Ipv4Addr,
    pub(in crate::import) port: u16,
    pub(in crate::import) udp: bool,
    pub(in crate::import) check: Option<Probe>,
    /// Why the check is written as a comment only.
    pub(in crate::import) check_off: Option<String>,
    /// `on_backend_down = "keep"`, from keepalived's `inhibit_on_failure`.
    pub(in crate::import) keep: bool,
    pub(in crate::import) backends: Vec<(Ipv4Addr, u32, Loc)>,
}

impl Converter {
    pub(in crate::import) fn finish(
        mut self,
        path: &Path,
        opts: &Options,
    ) -> Result<Imported, ImportError> {
        let (interface, interface_from) = self.interface(path, opts)?;
        let (name, name_from) = self.name(opts);
        let vrrp = self.vrrp_out();
        let tracked: HashSet<&str> = vrrp
            .iter()
            .flat_map(|v| v.tracks.iter().map(|(c, _)| c.as_str()))
            .collect();
        let unused: Vec<(Loc, String)> = self
            .scripts
            .iter()
            .filter(|s| !tracked.contains(s.name.as_str()))
            .map(|s| (s.at, s.name.clone()))
            .collect();
        for (at, name) in unused {
            self.note(
                at,
                "vrrp_script",
                format!("ignored: no instance tracks {name}, so keepalived never runs it either"),
            );
        }
        let mut services = self.services_out();
        self.local_vips(&vrrp, &services);

        // What `vip-agent --check` refuses in this build is written as a
        // comment, with a note, rather than making the whole file unusable.
        let mut rounds = 0;
        let toml = loop {
            let checks: Vec<CheckOut<'_>> = self
                .scripts
                .iter()
                .filter(|s| tracked.contains(s.name.as_str()))
                .map(|script| CheckOut { script })
                .collect();
            let toml = self.toml(
                path,
                (interface.as_str(), interface_from),
                (name.as_str(), name_from),
                &checks,
                &vrrp,
                &services,
            );
            let Err(e) = validate(&toml) else { break toml };
            rounds += 1;
            if rounds > services.len() + 1 || !self.check_off(&mut services, &e) {
                return Err(ImportError::Invalid {
                    file: path.to_owned(),
                    source: e,
                });
            }
        };
        let mut notes = std::mem::take(&mut self.notes);
        notes.sort_by_key(|n| n.at.map_or(usize::MAX, |a| a.seq));
        let notes = notes
            .into_iter()
            .map(|n| Note {
                file: n
                    .at
                    .map_or_else(|| path.to_owned(), |a| self.files[a.file].clone()),
                line: n.at.map(|a| a.line),
                keyword: n.keyword,
                message: n.message,
            })
            .collect();
        Ok(Imported { toml, notes })
    }

    /// Turns off the service check that `e` refuses; false if `e` is about
    /// something else.
    pub(in crate::import) fn check_off(
        &mut self,
        services: &mut [ServiceOut],
        e: &crate::config::ConfigError,
    ) -> bool {
        let Some(key) = e.key.as_deref() else {
            return false;
        };
        let which: Vec<usize> = if key == "service.check" {
            // refuse_unsupported: this build checks no service at all.
            (0..services.len())
                .filter(|&i| services[i].check.is_some())
                .collect()
        } else if let Some(rest) = key.strip_prefix("service[")
            && let Some((i, field)) = rest.split_once(']')
            && field.starts_with(".check")
            && let Ok(i) = i.parse::<usize>()
            && services.get(i).is_some_and(|s| s.check.is_some())
        {
            vec![i]
        } else {
            return false;
        };
        if which.is_empty() {
            return false;
        }
        for i in which {
            let s = &mut services[i];
            let why = e.message.clone();
            s.check_off = Some(why.clone());
            let at = s.at;
            self.note(
                at,
                "virtual_server",
                format!(
                    "not supported by this build of vip: the check is written as a comment ({why}); its backends count as always up"
                ),
            );
        }
        true
    }

    pub(in crate::import) fn interface(
        &mut self,
        path: &Path,
        opts: &Options,
    ) -> Result<(String, Option<Loc>), ImportError> {
        let chosen = match &opts.interface {
            Some(i) => (i.clone(), None),
            None => match self.instances.iter().find_map(|i| i.interface.clone()) {
                Some((i, at)) => (i, Some(at)),
                None => {
                    return Err(ImportError::Incomplete {
                        file: path.to_owned(),
                        message: "no vrrp_instance names an interface, and vip needs one ([node] interface, where XDP \
                                  attaches and VRRP runs): pass --iface IF"
                            .to_owned(),
                    });
                }
            },
        };
        let others: Vec<(String, Loc)> = self
            .instances
            .iter()
            .filter_map(|i| i.interface.clone())
            .filter(|(i, _)| *i != chosen.0)
            .collect();
        for (other, at) in others {
            self.note(
                at,
                "interface",
                format!(
                    "not supported: vip runs on one interface per node; this instance is imported onto {}, not {other} \
                     (run a second vip node for {other})",
                    chosen.0
                ),
            );
        }
        Ok(chosen)
    }

    pub(in crate::import) fn name(&mut self, opts: &Options) -> (String, Option<Loc>) {
        if let Some(n) = &opts.name {
            return (node_name(n), None);
        }
        let Some((raw, at)) = self.router_id.clone() else {
            let name = node_name(&host_name());
            self.notes.push(RawNote {
                at: None,
                keyword: "router_id".to_owned(),
                message: format!(
                    "note: there is none, so the node is named {name:?} after this host, as keepalived does; \
                     pass --node NAME for another"
                ),
            });
            return (name, None);
        };
        let name = node_name(&raw);
        if name != raw {
            self.note(
                at,
                "router_id",
                format!(
                    "approximated: a vip node name is 1 to 32 of A-Z a-z 0-9 _ -, so {raw:?} became {name:?}"
                ),
            );
        }
        (name, Some(at))
    }

    /// keepalived adds the VIPs to the interface; vip answers ARP for them
    /// from XDP and forwards [[service]] traffic, adding no address.
    pub(in crate::import) fn local_vips(&mut self, vrrp: &[VrrpOut], services: &[ServiceOut]) {
        for v in vrrp {
            let bare: Vec<String> = v
                .vips
                .iter()
                .filter(|a| !services.iter().any(|s| s.vip == **a))
                .map(ToString::to_string)
                .collect();
            if !bare.is_empty() {
                self.note(
                    v.vips_at,
                    "virtual_ipaddress",
                    format!(
                        "note: vip answers ARP for {} but adds no address to an interface and has no [[service]] for it; \
                         if a local daemon (haproxy, nginx) serves it, add the address to lo on each node",
                        bare.join(", ")
                    ),
                );
            }
        }
    }

    pub(in crate::import) fn toml(
        &self,
        path: &Path,
        interface: (&str, Option<Loc>),
        name: (&str, Option<Loc>),
        checks: &[CheckOut<'_>],
        vrrp: &[VrrpOut],
        services: &[ServiceOut],
    ) -> String {
        let mut t = String::new();
        let from = |at: Option<Loc>, what: &str| {
            at.map_or_else(String::new, |at| format!("  # {} ({what})", self.loc(at)))
        };
        let _ = writeln!(
            t,
            "# vip configuration imported from {} by `vipctl import-keepalived`.\n\
             # Review the notes it printed: they list what vip does differently.\n",
            path.display()
        );
        let _ = writeln!(t, "[node]");
        let _ = writeln!(
            t,
            "interface = {}{}",
            q(interface.0),
            from(interface.1, "interface")
        );
        let _ = writeln!(t, "name = {}{}", q(name.0), from(name.1, "router_id"));
        for c in checks {
            let s = c.script;
            let _ = writeln!(t, "\n[[check]]");
            let _ = writeln!(t, "# {}: vrrp_script {}", self.loc(s.at), s.name);
            let _ = writeln!(t, "name = {}", q(&s.name));
            let _ = writeln!(t, "kind = \"exec\"");
            let _ = writeln!(
                t,
                "command = {}",
                q(s.command.as_deref().unwrap_or_default())
            );
            let _ = writeln!(t, "interval = {}", q(&fmt_dur(s.interval)));
            let _ = writeln!(
                t,
                "timeout = {}",
                q(&fmt_dur(s.timeout.unwrap_or(s.interval)))
            );
            let _ = writeln!(t, "rise = {}", s.rise);
            let _ = writeln!(t, "fall = {}", s.fall);
        }
        for v in vrrp {
            self.vrrp_toml(&mut t, v);
        }
        for s in services {
            self.service_toml(&mut t, s);
        }
        t
    }

    pub(in crate::import) fn vrrp_toml(&self, t: &mut String, v: &VrrpOut) {
        let list = |a: &[Ipv4Addr]| {
            a.iter()
                .map(|a| q(&a.to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(t, "\n[[vrrp]]");
        let _ = writeln!(t, "# {}: vrrp_instance {}", self.loc(v.at), v.name);
        let _ = writeln!(t, "name = {}", q(&v.name));
        let _ = writeln!(t, "vrid = {}", v.vrid);
        let _ = writeln!(t, "priority = {}", v.priority);
        let _ = writeln!(t, "version = {}", v.version);
        let _ = writeln!(t, "advert_interval = {}", q(&fmt_dur(v.advert)));
        if v.nopreempt {
            let _ = writeln!(t, "preempt = false");
        }
        if let Some(d) = v.preempt_delay {
            let _ = writeln!(t, "preempt_delay = {}", q(&fmt_dur(d)));
        }
        if !v.peers.is_empty() {
            let _ = writeln!(t, "unicast_peers = [{}]", list(&v.peers));
        }
        if let Some(p) = &v.auth_pass {
            let _ = writeln!(t, "auth_pass = {}", q(p));
        }
        let _ = writeln!(t, "vips = [{}]", list(&v.vips));
        if v.virtual_mac {
            let _ = writeln!(t, "virtual_mac = true");
        }
        let mut garp = Vec::new();
        if let Some(c) = v.garp.count {
            garp.push(format!("count = {c}"));
        }
        if let Some(i) = v.garp.interval {
            garp.push(format!("interval = {}", q(&fmt_dur(i))));
        }
        if let Some(r) = v.garp.refresh {
            garp.push(format!("refresh = {}", q(&fmt_dur(r))));
        }
        if !garp.is_empty() {
            let _ = writeln!(t, "garp = {{ {} }}", garp.join(", "));
        }
        if !v.tracks.is_empty() {
            let tracks: Vec<String> = v
                .tracks
                .iter()
                .map(|(c, w)| format!("{{ check = {}, weight = {w} }}", q(c)))
                .collect();
            let _ = writeln!(t, "track = [{}]", tracks.join(", "));
        }
        if let Some(n) = &v.notify {
            let _ = writeln!(t, "notify = {}", q(n));
        }
        if let Some(g) = &v.sync_group {
            let _ = writeln!(t, "sync_group = {}", q(g));
        }
        if v.old_checksum {
            let _ = writeln!(
                t,
                "v3_checksum = \"group-pseudo-header\"  # old_unicast_checksum"
            );
        }
    }

    pub(in crate::import) fn service_toml(&self, t: &mut String, s: &ServiceOut) {
        let _ = writeln!(t, "\n[[service]]");
        let _ = writeln!(
            t,
            "# {}: virtual_server {} {}",
            self.loc(s.at),
            s.vip,
            s.port
        );
        let _ = writeln!(t, "vip = {}", q(&s.vip.to_string()));
        let _ = writeln!(t, "port = {}", s.port);
        let _ = writeln!(
            t,
            "protocol = {}",
            if s.udp { "\"udp\"" } else { "\"tcp\"" }
        );
        if s.keep {
            let _ = writeln!(t, "on_backend_down = \"keep\"  # inhibit_on_failure");
        }
        if let Some(c) = &s.check {
            match &s.check_off {
                None => {
                    let _ = writeln!(t, "check = {{ {} }}", c.toml());
                }
                Some(why) => {
                    let _ = writeln!(t, "# Not accepted by this build of vip ({why}):");
                    let _ = writeln!(t, "# check = {{ {} }}", c.toml());
                }
            }
        }
        let _ = writeln!(t, "backends = [");
        for (a, w, at) in &s.backends {
            let _ = writeln!(
                t,
                "  {{ address = {}, weight = {w} }},  # {}",
                q(&a.to_string()),
                self.loc(*at)
            );
        }
        let _ = writeln!(t, "]");
    }
}

/// The advert interval vip can send for `version`, rounded the way
/// keepalived rounds it (with a note when that changes it).
pub(in crate::import) fn advert_for(
    given: Option<(Duration, Loc)>,
    version: u8,
    notes: &mut Vec<(Loc, &'static str, String)>,
) -> Duration {
    let Some((d, at)) = given else {
        return KA_ADVERT;
    };
    let (unit, max) = if version == 2 {
        (Duration::from_secs(1), Duration::from_secs(255))
    } else {
        (Duration::from_millis(10), Duration::from_millis(40_950))
    };
    let units = (d.as_nanos() + unit.as_nanos() / 2) / unit.as_nanos();
    let rounded = unit
        .checked_mul(u32::try_from(units).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .clamp(unit, max);
    if rounded != d {
        notes.push((
            at,
            "advert_int",
            format!(
                "approximated: VRRP version {version} sends {}; {} became {} (keepalived rounds it the same way)",
                if version == 2 { "whole seconds from 1s to 255s" } else { "multiples of 10ms up to 40.95s" },
                fmt_dur(d),
                fmt_dur(rounded)
            ),
        ));
    }
    rounded
}
