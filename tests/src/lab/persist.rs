//! A lab that outlives its process: the state file `cargo xtask lab
//! up|down|status` reads, and stopping processes the lab did not start here,
//! by PID and only while the PID is still theirs.

use std::{
    fmt::Write as _,
    io::{self, Read as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{Lab, POLL, STATE_DIR, TERM_GRACE, check_prefix, describe, lab_namespaces};
use crate::netns::{self, NetNs};

impl Lab {
    /// Keeps the lab after this process exits: writes `/run/vip-lab/<prefix>.state`
    /// (namespaces, and PID, start time and command line of each process) and
    /// forgets the guards. Returns the state file. On failure the lab is removed.
    pub fn persist(mut self) -> Result<PathBuf> {
        let path = state_path(&self.prefix);
        let mut text = format!(
            "# vip lab state: written by vip_tests::lab::Lab::persist, read by `cargo xtask lab down|status`\nprefix {}\nbackends {}\n",
            self.prefix, self.backends
        );
        for (node, ns) in &self.namespaces {
            writeln!(text, "ns {node} {}", ns.name()).expect("write to String");
        }
        for (node, ifname, id) in &self.xdp {
            writeln!(text, "xdp {node} {ifname} {id}").expect("write to String");
        }
        for m in self.children().iter() {
            let Some(id) = &m.identity else { continue };
            writeln!(
                text,
                "proc {} {} {} {}",
                m.node,
                m.child.id(),
                id.start_time,
                hex(&id.cmdline)
            )
            .expect("write to String");
        }
        std::fs::create_dir_all(STATE_DIR).with_context(|| format!("cannot create {STATE_DIR}"))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        for (_, ns) in self.namespaces.drain(..) {
            let _name = ns.keep();
        }
        // Dropping a `Child` neither kills nor waits for it.
        self.children().clear();
        Ok(path)
    }

    /// Removes the persistent lab `prefix`: stops the processes its state file
    /// lists (only those whose PID still has the start time and command line
    /// recorded), then everything [`Lab::down_by_prefix`] removes, then the
    /// state file. Succeeds if there was nothing to remove.
    pub fn down_persistent(prefix: &str) -> Result<()> {
        check_prefix(prefix)?;
        let path = state_path(prefix);
        if let Some(state) = read_state(&path)? {
            let procs: Vec<(i32, ProcIdentity)> = state
                .procs
                .iter()
                .filter(|p| ProcIdentity::read(p.pid).as_ref() == Some(&p.identity))
                .filter_map(|p| Some((i32::try_from(p.pid).ok()?, p.identity.clone())))
                .collect();
            terminate_foreign(&procs);
        }
        Self::down_by_prefix(prefix)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", path.display()))
            }
            _ => Ok(()),
        }
    }

    /// Removes every lab namespace named `<prefix>-sw|client|lb1|lb2|bN`
    /// (leftovers of a killed test, say): stops the processes inside them
    /// (SIGTERM, SIGKILL after 2 s, by PID), then deletes them, which deletes
    /// their veths. Returns the names removed.
    pub fn down_by_prefix(prefix: &str) -> Result<Vec<String>> {
        check_prefix(prefix)?;
        let names = lab_namespaces(prefix)?;
        let me = i32::try_from(std::process::id()).expect("pid fits an int");
        let mut procs = Vec::new();
        for name in &names {
            let ns = NetNs::open(name)?;
            for pid in ns.pids()? {
                if pid != me
                    && let Some(id) = ProcIdentity::read(u32::try_from(pid).expect("positive pid"))
                {
                    procs.push((pid, id));
                }
            }
        }
        terminate_foreign(&procs);
        let mut failed = Vec::new();
        for name in &names {
            if let Err(e) = netns::delete_named(name) {
                failed.push(format!("{e:#}"));
            }
        }
        if !failed.is_empty() {
            bail!("{}", failed.join("; "));
        }
        Ok(names)
    }

    /// Describes the persistent lab `prefix` (from its state file, or from
    /// the namespaces found when there is none), like [`Lab::status`].
    pub fn status_persistent(prefix: &str) -> Result<String> {
        check_prefix(prefix)?;
        let path = state_path(prefix);
        let state = read_state(&path)?;
        let nodes: Vec<(String, String)> = if let Some(s) = &state {
            s.namespaces.clone()
        } else {
            lab_namespaces(prefix)?
                .into_iter()
                .map(|name| (name[prefix.len() + 1..].to_owned(), name))
                .collect()
        };
        if nodes.is_empty() {
            return Ok(format!(
                "no lab {prefix} is up (no state file {}, no namespaces {prefix}-*)\n",
                path.display()
            ));
        }
        let procs: Vec<(String, u32, bool)> = state
            .iter()
            .flat_map(|s| &s.procs)
            .map(|p| {
                (
                    p.node.clone(),
                    p.pid,
                    ProcIdentity::read(p.pid).as_ref() == Some(&p.identity),
                )
            })
            .collect();
        Ok(describe(
            prefix,
            state.is_some().then_some(path.as_path()),
            &nodes,
            &procs,
        ))
    }
}

/// Stops processes that are not our children (a persisted lab's, or found in
/// a lab namespace): SIGTERM, then SIGKILL after 2 s; each only while its
/// PID still has the identity recorded. Waits up to 1 s more for them to go.
pub(super) fn terminate_foreign(procs: &[(i32, ProcIdentity)]) {
    let alive = |(pid, id): &&(i32, ProcIdentity)| {
        u32::try_from(*pid)
            .ok()
            .and_then(ProcIdentity::read)
            .as_ref()
            == Some(id)
    };
    let signal = |sig| {
        for (pid, _) in procs.iter().filter(alive) {
            // SAFETY: kill(2) on a PID whose start time and command line are
            // those of the process we mean.
            unsafe { libc::kill(*pid, sig) };
        }
    };
    let wait = |limit: Duration| {
        let deadline = Instant::now() + limit;
        while procs.iter().any(|p| alive(&p)) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
    };
    signal(libc::SIGTERM);
    wait(TERM_GRACE);
    signal(libc::SIGKILL);
    wait(Duration::from_secs(1));
}

/// What tells a PID's process apart from a later one with the same PID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ProcIdentity {
    /// Field 22 of `/proc/PID/stat`, clock ticks after boot.
    pub(super) start_time: u64,
    /// `/proc/PID/cmdline` (empty for a zombie).
    pub(super) cmdline: Vec<u8>,
}

impl ProcIdentity {
    /// `None` if there is no such process or it is a zombie.
    pub(super) fn read(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses: fields follow the last ')'.
        let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            return None;
        }
        let start_time = fields.get(19)?.parse().ok()?;
        let mut cmdline = Vec::new();
        std::fs::File::open(format!("/proc/{pid}/cmdline"))
            .ok()?
            .read_to_end(&mut cmdline)
            .ok()?;
        Some(Self {
            start_time,
            cmdline,
        })
    }
}

pub(super) fn state_path(prefix: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{prefix}.state"))
}

pub(super) struct StateProc {
    pub(super) node: String,
    pub(super) pid: u32,
    pub(super) identity: ProcIdentity,
}

pub(super) struct State {
    pub(super) namespaces: Vec<(String, String)>,
    pub(super) procs: Vec<StateProc>,
}

pub(super) fn read_state(path: &Path) -> Result<Option<State>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut state = State {
        namespaces: Vec::new(),
        procs: Vec::new(),
    };
    for (i, line) in text.lines().enumerate() {
        let bad = || format!("{}:{}: unreadable line {line:?}", path.display(), i + 1);
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["ns", node, name] => state
                .namespaces
                .push(((*node).to_owned(), (*name).to_owned())),
            ["proc", node, pid, start, cmd] => state.procs.push(StateProc {
                node: (*node).to_owned(),
                pid: pid.parse().with_context(bad)?,
                identity: ProcIdentity {
                    start_time: start.parse().with_context(bad)?,
                    cmdline: unhex(cmd).with_context(bad)?,
                },
            }),
            _ => {}
        }
    }
    Ok(Some(state))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        write!(s, "{b:02x}").expect("write to String");
        s
    })
}

pub(super) fn unhex(s: &str) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        bail!("not hex: {s:?}");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).context("bad hex"))
        .collect()
}
