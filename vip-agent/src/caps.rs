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

/// Who a script runs as, when it is not the agent's own user: set in the
/// child before exec (`setgroups`, `setresgid`, `setresuid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchTo {
    pub uid: u32,
    pub gid: u32,
}

/// Makes the child of `cmd` give up every capability before it runs the
/// program, and become `switch`'s user when one is given: scripts (exec
/// checks, notify) never hold the agent's privileges. In the child, between
/// fork and exec:
///
/// - the bounding set is emptied when the agent may do so (`CAP_SETPCAP`,
///   as root has): otherwise a root agent's script would regain every
///   capability on exec;
/// - with `switch`, the supplementary groups become the user's one group,
///   then the real, effective and saved gid and uid change (this needs
///   `CAP_SETGID` and `CAP_SETUID`, which `scripts::resolve` checks first);
/// - the ambient set is cleared, so nothing is inherited across exec;
/// - the effective, permitted and inheritable sets are emptied;
/// - `no_new_privs` is set: no setuid binary or file capability can raise
///   them again.
pub fn without_privileges(cmd: &mut tokio::process::Command, switch: Option<SwitchTo>) {
    // SAFETY: `drop_all` runs in the forked child before exec and makes
    // only raw syscalls (prctl, setgroups, setres[ug]id, capset): no
    // allocation, no locks.
    unsafe {
        cmd.pre_exec(move || drop_all(switch));
    }
}

/// `capset(2)`'s header and one of its two data words (version 3).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

impl CapHeader {
    /// Version 3, about the calling thread.
    const THIS_THREAD: Self = Self {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
}

impl CapData {
    const EMPTY: Self = Self {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    };
}
/// May change the process's group ids.
pub const CAP_SETGID: u32 = 6;
/// May change the process's user ids.
pub const CAP_SETUID: u32 = 7;
/// May shrink the bounding set.
const CAP_SETPCAP: u32 = 8;
/// The highest capability number a kernel may know (the data words hold 64).
const LAST_CAP: libc::c_ulong = 63;

fn drop_all(switch: Option<SwitchTo>) -> io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // Only with CAP_SETPCAP; numbers past the kernel's last are EINVAL.
    // SAFETY (all below): plain prctl/capset calls on this thread with
    // valid arguments and pointers to live locals.
    if effective_bits_now().is_some_and(|eff| eff & (1 << CAP_SETPCAP) != 0) {
        for cap in 0..=LAST_CAP {
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        }
    }
    if let Some(to) = switch {
        let groups = [to.gid];
        check(unsafe { libc::setgroups(1, groups.as_ptr()) })?;
        check(unsafe { libc::setresgid(to.gid, to.gid, to.gid) })?;
        check(unsafe { libc::setresuid(to.uid, to.uid, to.uid) })?;
    }
    check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    })?;
    let header = CapHeader::THIS_THREAD;
    let data = [CapData::EMPTY; 2];
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
}

/// This thread's effective capabilities by `capget(2)` (no allocation, so
/// it may run between fork and exec).
fn effective_bits_now() -> Option<u64> {
    let mut header = CapHeader::THIS_THREAD;
    let mut data = [CapData::EMPTY; 2];
    // SAFETY: valid pointers to live locals of the layout capget expects.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) };
    (rc == 0).then(|| u64::from(data[0].effective) | (u64::from(data[1].effective) << 32))
}

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
