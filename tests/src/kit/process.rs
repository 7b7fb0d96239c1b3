//! The processes the kit starts: signals by PID, a bounded stop, telling a
//! process from a later one that reused its PID, and the tail of a log.

use std::{
    path::Path,
    process::{Child, Stdio},
    time::Duration,
};

/// kill(2): `sig` to `pid`; whether it was delivered.
#[must_use]
pub fn signal(pid: u32, sig: libc::c_int) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) on a PID the caller started (or read from its pid file
    // and checked against its parent and start time).
    unsafe { libc::kill(pid, sig) == 0 }
}

/// SIGTERM, up to 2 s to exit, then SIGKILL; always reaps.
pub fn terminate(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = signal(child.id(), libc::SIGTERM);
    let gone = super::poll(Duration::from_secs(2), Duration::from_millis(5), || {
        matches!(child.try_wait(), Ok(Some(_)) | Err(_)).then_some(())
    });
    if gone.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// What `/proc/PID/stat` says of a live (not zombie) process.
pub(super) struct Stat {
    pub ppid: u32,
    /// Field 22, the start time in clock ticks: a later process that reuses
    /// the PID has another.
    pub start: u64,
}

pub(super) fn stat(pid: u32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    Some(Stat {
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// `VmRSS` of `pid`, in KiB (`None` once it is gone).
#[must_use]
pub fn rss_kib(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The last `lines` lines of the file at `path` (empty if it cannot be read).
#[must_use]
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A daemon's stdout and stderr to the new file `log`, no stdin.
pub(super) fn log_to(cmd: &mut std::process::Command, log: &Path) {
    let out = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let err = out.try_clone().expect("a second handle on the log");
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
}
