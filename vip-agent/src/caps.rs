//! The capabilities the agent needs, checked by name at start-up so that a
//! missing one is reported as such instead of as an `EPERM` from deep inside
//! a BPF or netlink call.
//!
//! - `CAP_BPF`: load the XDP program and create, pin and update its maps.
//! - `CAP_NET_ADMIN`: attach XDP to the interface and watch its link.
//! - `CAP_NET_RAW`: VRRP's raw IP-protocol-112 socket, gratuitous ARP and
//!   our own ARP requests (`AF_PACKET`).
//! - `CAP_PERFMON`: lets the verifier accept the program as it is (without
//!   it, `bpf_capable` but not `perfmon_capable` tasks get pointer-arithmetic
//!   restrictions and Spectre sanitation the program does not pass); see
//!   `cargo xtask test`'s privileges test.
//!
//! Pinning needs no further capability when the pin root is already a
//! mounted bpffs the agent's user may write (systemd mounts `/sys/fs/bpf` at
//! boot; the unit creates `/sys/fs/bpf/vip` for the agent). Mounting a bpffs
//! itself would need `CAP_SYS_ADMIN`.

use std::io;

/// A capability by number and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub bit: u32,
    pub name: &'static str,
    pub why: &'static str,
}

/// What the agent needs, in the order they are reported.
pub const NEEDED: [Cap; 4] = [
    Cap {
        bit: 39,
        name: "CAP_BPF",
        why: "load the XDP program and its maps",
    },
    Cap {
        bit: 12,
        name: "CAP_NET_ADMIN",
        why: "attach XDP to the interface",
    },
    Cap {
        bit: 13,
        name: "CAP_NET_RAW",
        why: "VRRP and ARP sockets",
    },
    Cap {
        bit: 38,
        name: "CAP_PERFMON",
        why: "the verifier accepts the program only for perfmon-capable tasks",
    },
];

/// The effective capability set of this process (`CapEff` in
/// `/proc/self/status`).
pub fn effective() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    parse_cap_eff(&status).ok_or_else(|| io::Error::other("no CapEff line in /proc/self/status"))
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// The needed capabilities missing from `effective`.
#[must_use]
pub fn missing(effective: u64) -> Vec<Cap> {
    NEEDED
        .iter()
        .filter(|c| effective & (1 << c.bit) == 0)
        .copied()
        .collect()
}

/// One sentence for the missing capabilities, or `None` when none is.
#[must_use]
pub fn complaint(effective: u64) -> Option<String> {
    let missing = missing(effective);
    if missing.is_empty() {
        return None;
    }
    let list: Vec<String> = missing
        .iter()
        .map(|c| format!("{} ({})", c.name, c.why))
        .collect();
    Some(format!(
        "missing capability {}: run as root, or grant them (systemd: AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_NET_RAW CAP_PERFMON; by hand: setpriv --ambient-caps)",
        list.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_is_parsed_and_missing_ones_named() {
        let status = "Name:\tvip-agent\nCapInh:\t0000000000000000\nCapEff:\t000000c000003000\n";
        let eff = parse_cap_eff(status).unwrap();
        assert_eq!(eff, (1 << 39) | (1 << 38) | (1 << 12) | (1 << 13));
        assert_eq!(complaint(eff), None);
        let without_bpf = eff & !(1 << 39);
        let c = complaint(without_bpf).unwrap();
        assert!(c.starts_with("missing capability CAP_BPF (load"), "{c}");
        assert!(!c.contains("CAP_NET_RAW ("), "{c}");
        assert_eq!(missing(0).len(), 4);
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    }
}
