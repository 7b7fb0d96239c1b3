//! Writing the TOML, and checking it loads.

use std::{collections::HashSet, path::Path, time::Duration};

use super::{
    ImportError, Imported, Note, Options, host_name,
    lex::{Loc, RawNote},
    model::{Converter, KA_ADVERT, Script},
    validate,
    values::node_name,
};
use crate::config::{
    Config, DEFAULT_BPFFS, Node, OnBackendDown, Service, ServiceCheck, V3Checksum, Vrrp, XdpMode,
    write::{self, Comments, fmt_duration},
};

/// A vip `[[check]]` made from a `vrrp_script`.
pub(in crate::import) struct CheckOut<'a> {
    pub(in crate::import) script: &'a Script,
}

/// A `[[vrrp]]` ready to write, and where it came from.
pub(in crate::import) struct VrrpOut {
    pub(in crate::import) vrrp: Vrrp,
    pub(in crate::import) at: Loc,
    /// The line of the first VIP.
    pub(in crate::import) vips_at: Loc,
}

/// A `[[service]]` ready to write, and where it came from.
pub(in crate::import) struct ServiceOut {
    pub(in crate::import) service: Service,
    pub(in crate::import) at: Loc,
    /// Where each backend came from.
    pub(in crate::import) backends_at: Vec<Loc>,
    /// The check this build refuses, and why: written as a comment only.
    pub(in crate::import) check_off: Option<(ServiceCheck, String)>,
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
            .flat_map(|v| v.vrrp.track.iter().map(|t| t.check.as_str()))
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
        self.script_security_note(!tracked.is_empty(), &vrrp, &services);

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
                .filter(|&i| services[i].service.check.is_some())
                .collect()
        } else if let Some(rest) = key.strip_prefix("service[")
            && let Some((i, field)) = rest.split_once(']')
            && field.starts_with(".check")
            && let Ok(i) = i.parse::<usize>()
            && services.get(i).is_some_and(|s| s.service.check.is_some())
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
            s.check_off = s.service.check.take().map(|c| (c, why.clone()));
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

    /// keepalived checks scripts only with `enable_script_security`; vip
    /// always does (`script_security`, default true).
    fn script_security_note(&mut self, checks: bool, vrrp: &[VrrpOut], services: &[ServiceOut]) {
        let scripts = checks
            || vrrp.iter().any(|v| v.vrrp.notify.is_some())
            || services.iter().any(|s| {
                s.service
                    .check
                    .as_ref()
                    .is_some_and(|c| matches!(c.probe, crate::config::Probe::Exec { .. }))
            });
        // With enable_script_security it maps to the default exactly.
        if !scripts || self.script_security.is_some() {
            return;
        }
        self.notes.push(RawNote {
            at: None,
            keyword: "enable_script_security".to_owned(),
            message: "note: keepalived.conf does not set it, so keepalived runs any script; vip refuses a script \
                      that anyone but root or the agent's user may change (script_security = true, the default): \
                      `vip-agent --check` names such a script, and [node] script_security = false turns the check off"
                .to_owned(),
        });
    }

    /// keepalived adds the VIPs to the interface; vip answers ARP for them
    /// from XDP and forwards [[service]] traffic, adding no address.
    pub(in crate::import) fn local_vips(&mut self, vrrp: &[VrrpOut], services: &[ServiceOut]) {
        for v in vrrp {
            let bare: Vec<String> = v
                .vrrp
                .vips
                .iter()
                .filter(|a| !services.iter().any(|s| s.service.vip == **a))
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

    /// The vip configuration, from config's own types through its writer,
    /// each table and backend commented with the `file:line` it came from.
    pub(in crate::import) fn toml(
        &self,
        path: &Path,
        interface: (&str, Option<Loc>),
        name: (&str, Option<Loc>),
        checks: &[CheckOut<'_>],
        vrrp: &[VrrpOut],
        services: &[ServiceOut],
    ) -> String {
        let mut comments = Comments::default();
        if let Some(at) = interface.1 {
            comments.beside("node.interface", format!("{} (interface)", self.loc(at)));
        }
        if let Some(at) = name.1 {
            comments.beside("node.name", format!("{} (router_id)", self.loc(at)));
        }
        if let Some((_, at)) = &self.script_user {
            comments.beside(
                "node.script_user",
                format!("{} (script_user)", self.loc(*at)),
            );
        }
        for (i, c) in checks.iter().enumerate() {
            let s = c.script;
            comments.above(
                format!("check[{i}]"),
                format!("{}: vrrp_script {}", self.loc(s.at), s.name),
            );
        }
        for (i, v) in vrrp.iter().enumerate() {
            comments.above(
                format!("vrrp[{i}]"),
                format!("{}: vrrp_instance {}", self.loc(v.at), v.vrrp.name),
            );
            if v.vrrp.v3_checksum == V3Checksum::GroupPseudoHeader {
                comments.beside(format!("vrrp[{i}].v3_checksum"), "old_unicast_checksum");
            }
        }
        for (i, s) in services.iter().enumerate() {
            let svc = &s.service;
            comments.above(
                format!("service[{i}]"),
                format!(
                    "{}: virtual_server {} {}",
                    self.loc(s.at),
                    svc.vip,
                    svc.port
                ),
            );
            if svc.on_backend_down == OnBackendDown::Keep {
                comments.beside(
                    format!("service[{i}].on_backend_down"),
                    "inhibit_on_failure",
                );
            }
            if let Some((check, why)) = &s.check_off {
                comments.above(
                    format!("service[{i}].backends"),
                    format!(
                        "Not accepted by this build of vip ({why}):\ncheck = {}",
                        write::service_check(check)
                    ),
                );
            }
            for (j, at) in s.backends_at.iter().enumerate() {
                comments.beside(format!("service[{i}].backends[{j}]"), self.loc(*at));
            }
        }
        let node = Node {
            interface: interface.0.to_owned(),
            name: name.0.to_owned(),
            bpffs: DEFAULT_BPFFS.into(),
            control_socket: format!("/run/vip/{}.sock", name.0).into(),
            metrics: None,
            xdp_mode: XdpMode::default(),
            dead_time: None,
            script_user: self.script_user.as_ref().map(|(u, _)| u.clone()),
            script_security: true,
            flow_table_size: crate::config::DEFAULT_FLOW_TABLE_SIZE,
        };
        let config = Config {
            node,
            checks: checks.iter().map(|c| c.script.check()).collect(),
            vrrp: vrrp.iter().map(|v| v.vrrp.clone()).collect(),
            services: services.iter().map(|s| s.service.clone()).collect(),
        };
        format!(
            "# vip configuration imported from {} by `vipctl import-keepalived`.\n\
             # Review the notes it printed: they list what vip does differently.\n\n{}",
            path.display(),
            write::document(&config, &comments)
        )
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
                fmt_duration(d),
                fmt_duration(rounded)
            ),
        ));
    }
    rounded
}
