//! Describing a lab: namespaces, interfaces, addresses, XDP, processes.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::Result;

use super::{Lab, ProcIdentity, SUBNET, VIP};
use crate::netns::NetNs;

impl Lab {
    /// A description of the lab: namespaces, interfaces, addresses, MACs,
    /// XDP attachments and whether its processes run.
    #[must_use]
    pub fn status(&self) -> String {
        let nodes: Vec<(String, String)> = self
            .namespaces
            .iter()
            .map(|(n, ns)| (n.clone(), ns.name().to_owned()))
            .collect();
        let procs: Vec<(String, u32, bool)> = self
            .children()
            .iter_mut()
            .map(|m| {
                (
                    m.node.clone(),
                    m.child.id(),
                    matches!(m.child.try_wait(), Ok(None)),
                )
            })
            .collect();
        describe(&self.prefix, None, &nodes, &procs)
    }
}

/// One interface as `ip -o -d link` and `ip -o -4 addr` show it.
#[derive(Default)]
pub(super) struct IfaceInfo {
    pub(super) state: String,
    pub(super) mac: String,
    pub(super) addrs: Vec<String>,
    pub(super) xdp: Option<String>,
}

pub(super) fn interfaces(ns: &NetNs) -> Result<BTreeMap<String, IfaceInfo>> {
    let mut out: BTreeMap<String, IfaceInfo> = BTreeMap::new();
    for line in ns.ip(&["-o", "-d", "link", "show"])?.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        let Some(name) = t.get(1).map(|n| {
            n.trim_end_matches(':')
                .split('@')
                .next()
                .unwrap_or_default()
        }) else {
            continue;
        };
        let after = |key: &str| {
            t.iter()
                .position(|x| *x == key)
                .and_then(|i| t.get(i + 1))
                .map(|s| (*s).to_owned())
        };
        let info = out.entry(name.to_owned()).or_default();
        info.state = after("state").unwrap_or_default();
        info.mac = after("link/ether").unwrap_or_default();
        // "mtu 1500 xdp ..." names the mode; "prog/xdp id 42" the program.
        let mode = t
            .iter()
            .position(|x| *x == "mtu")
            .and_then(|i| t.get(i + 2))
            .filter(|m| m.starts_with("xdp"));
        let prog = t
            .iter()
            .position(|x| x.starts_with("prog/xdp"))
            .and_then(|i| t.get(i + 2));
        if let Some(mode) = mode {
            let mode = match *mode {
                "xdp" => "native",
                "xdpgeneric" => "generic",
                "xdpoffload" => "offload",
                other => other,
            };
            info.xdp = Some(match prog {
                Some(id) => format!("xdp {mode} prog {id}"),
                None => format!("xdp {mode}"),
            });
        }
    }
    for line in ns.ip(&["-o", "-4", "addr", "show"])?.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if let (Some(name), Some(i)) = (t.get(1), t.iter().position(|x| *x == "inet"))
            && let Some(addr) = t.get(i + 1)
        {
            out.entry((*name).to_owned())
                .or_default()
                .addrs
                .push((*addr).to_owned());
        }
    }
    Ok(out)
}

pub(super) fn describe(
    prefix: &str,
    state_file: Option<&Path>,
    nodes: &[(String, String)],
    procs: &[(String, u32, bool)],
) -> String {
    let mut s = format!("lab {prefix}: VIP {VIP}, subnet {SUBNET}/24");
    if let Some(p) = state_file {
        write!(s, ", state file {}", p.display()).expect("write to String");
    }
    s.push('\n');
    for (node, name) in nodes {
        write!(s, "  {node:<7} {name}").expect("write to String");
        let Ok(ns) = NetNs::open(name) else {
            s.push_str(": MISSING\n");
            continue;
        };
        match interfaces(&ns) {
            Ok(ifaces) => {
                s.push('\n');
                for (ifname, i) in &ifaces {
                    if ifname == "lo" && i.addrs.iter().all(|a| a.starts_with("127.")) {
                        continue;
                    }
                    write!(s, "    {ifname:<10} {:<7}", i.state).expect("write to String");
                    if !i.mac.is_empty() {
                        write!(s, " {}", i.mac).expect("write to String");
                    }
                    for a in &i.addrs {
                        write!(s, " {a}").expect("write to String");
                    }
                    if let Some(x) = &i.xdp {
                        write!(s, " [{x}]").expect("write to String");
                    }
                    s.push('\n');
                }
            }
            Err(e) => writeln!(s, ": cannot list interfaces: {e:#}").expect("write to String"),
        }
        for pid in ns.pids().unwrap_or_default() {
            let cmdline = u32::try_from(pid)
                .ok()
                .and_then(ProcIdentity::read)
                .map(|id| String::from_utf8_lossy(&id.cmdline).replace('\0', " "));
            if let Some(cmdline) = cmdline {
                writeln!(s, "    pid {pid:<8} {}", cmdline.trim_end()).expect("write to String");
            }
        }
    }
    if !procs.is_empty() {
        s.push_str("  started by the lab:");
        for (node, pid, alive) in procs {
            write!(
                s,
                " {node} pid {pid} {};",
                if *alive { "running" } else { "GONE" }
            )
            .expect("write to String");
        }
        s.push('\n');
    }
    s
}
