//! Named network namespaces (`ip netns`) as RAII guards: create one, run `ip`
//! and sysctls in it, and run processes or threads inside it.
//!
//! Processes and threads enter *only* the network namespace (`setns` with
//! `CLONE_NEWNET`), unlike `ip netns exec`, which also gives the command a
//! private mount namespace and remounts `/sys`: here the host's mounts stay
//! visible, so a bpffs mounted under `/run` is shared with everything else.

use std::{
    fs::File,
    io::{self, Write as _},
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::{fs::MetadataExt as _, process::CommandExt as _},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::JoinHandle,
};

use anyhow::{Context as _, Result, bail};

/// Where `ip netns add` bind-mounts named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Serialises `ip netns add` in this process: the first one on a host makes
/// /run/netns a shared mount, and concurrent first calls can stack two mounts.
static CREATE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A named network namespace. Deleted (`ip netns del`) on drop when this guard
/// created it; [`NetNs::open`] and [`NetNs::keep`] give guards that leave it.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    owned: bool,
}

impl NetNs {
    /// Creates the namespace `name` (`ip netns add`); it is deleted when the
    /// guard drops. Fails if it exists already.
    pub fn create(name: &str) -> Result<Self> {
        if Self::exists(name) {
            bail!("network namespace {name} exists already: remove it with `ip netns del {name}`");
        }
        let _serial = CREATE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        run_ip(&["netns", "add", name])
            .with_context(|| format!("cannot create network namespace {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            owned: true,
        })
    }

    /// A guard for the existing namespace `name` that does not delete it.
    pub fn open(name: &str) -> Result<Self> {
        if !Self::exists(name) {
            bail!("network namespace {name} does not exist (no {NETNS_DIR}/{name})");
        }
        Ok(Self {
            name: name.to_owned(),
            owned: false,
        })
    }

    /// Whether `/run/netns/<name>` exists.
    #[must_use]
    pub fn exists(name: &str) -> bool {
        Path::new(NETNS_DIR).join(name).exists()
    }

    /// The names of all named namespaces (the entries of `/run/netns`), sorted.
    pub fn list() -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(NETNS_DIR) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot list {NETNS_DIR}")),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {NETNS_DIR}"))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// The namespace's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its bind mount, `/run/netns/<name>` (what `nsenter --net=` takes).
    #[must_use]
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Forgets the guard without deleting the namespace; returns its name.
    #[must_use = "the name is all that is left of the guard"]
    pub fn keep(mut self) -> String {
        self.owned = false;
        std::mem::take(&mut self.name)
    }

    /// Deletes the namespace now, reporting failure (drop only warns).
    pub fn delete(mut self) -> Result<()> {
        self.owned = false;
        delete_named(&self.name)
    }

    /// Runs `ip -n <name> ARGS...` and returns its stdout; fails with the
    /// command and its stderr.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run_ip(&full)
    }

    /// Runs `ip -n <name> -batch -` with `lines` as its commands (one process
    /// for many changes); stops at the first failing line.
    pub fn ip_batch<S: AsRef<str>>(&self, lines: &[S]) -> Result<String> {
        let script = lines.iter().fold(String::new(), |mut s, l| {
            s.push_str(l.as_ref());
            s.push('\n');
            s
        });
        let mut child = crate::programs::command("ip")?
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run `ip` (is iproute2 installed?)")?;
        let write = child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(script.as_bytes());
        let out = child
            .wait_with_output()
            .context("cannot wait for `ip -batch`")?;
        write.context("cannot write commands to `ip -batch`")?;
        if !out.status.success() {
            bail!(
                "`ip -n {} -batch -` failed ({}): {}\ncommands:\n{script}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sets the sysctl `key` (dotted, e.g. `net.ipv4.conf.all.arp_ignore`) to
    /// `value` inside the namespace, from a thread that entered it.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.sysctls(&[(key, value)])
    }

    /// Reads the sysctl `key` inside the namespace (trimmed).
    pub fn read_sysctl(&self, key: &str) -> Result<String> {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        self.try_run_in(|| std::fs::read_to_string(&path))?
            .map(|v| v.trim().to_owned())
            .with_context(|| {
                format!(
                    "cannot read sysctl {key} in network namespace {}",
                    self.name
                )
            })
    }

    /// Sets several sysctls in order, from one thread inside the namespace.
    pub fn sysctls<K: AsRef<str> + Sync, V: AsRef<str> + Sync>(
        &self,
        settings: &[(K, V)],
    ) -> Result<()> {
        self.try_run_in(|| {
            for (key, value) in settings {
                write_sysctl(key.as_ref(), value.as_ref())
                    .with_context(|| format!("in network namespace {}", self.name))?;
            }
            Ok(())
        })?
    }

    /// Starts `cmd` inside the namespace: the child enters only the network
    /// namespace before exec, keeping the host's mounts. A program that is
    /// not on [`crate::programs::PROGRAMS`] for this job is refused.
    pub fn spawn(&self, mut cmd: Command) -> Result<Child> {
        crate::programs::check(cmd.get_program())
            .with_context(|| format!("refusing to start it in network namespace {}", self.name))?;
        let fd = self.open_fd()?;
        let raw = fd.as_raw_fd();
        // SAFETY: the closure only calls setns(2), which is async-signal-safe;
        // `fd` stays open (it is closed only on exec, O_CLOEXEC) until spawn
        // has returned, and is dropped after.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(raw, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {cmd:?} in network namespace {}", self.name));
        drop(fd);
        child
    }

    /// Runs `program ARGS...` inside the namespace to completion and returns
    /// its stdout; fails with the command line and its stderr.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut cmd = crate::programs::command(program)?;
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = self.spawn(cmd)?.wait_with_output().with_context(|| {
            format!(
                "cannot wait for {program} in network namespace {}",
                self.name
            )
        })?;
        if !out.status.success() {
            bail!(
                "`{program} {}` in network namespace {} failed ({}): {}",
                args.join(" "),
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `f` on a fresh thread inside the namespace and returns its result;
    /// sockets it creates live in the namespace. A panic in `f` is resumed
    /// here. Panics if the namespace cannot be entered (see
    /// [`NetNs::try_run_in`]).
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.try_run_in(f).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// [`NetNs::run_in`], failing instead of panicking when the namespace
    /// cannot be entered.
    pub fn try_run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let fd = self.open_fd()?;
        let result = std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name(format!("netns {}", self.name))
                .spawn_scoped(scope, move || {
                    enter(&fd)?;
                    drop(fd);
                    Ok::<T, io::Error>(f())
                })
                .context("cannot start a thread")?;
            match thread.join() {
                Ok(r) => Ok::<io::Result<T>, anyhow::Error>(r),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })?;
        result.with_context(|| format!("cannot enter network namespace {}", self.name))
    }

    /// Starts a thread inside the namespace running `f`. The thread panics if
    /// it cannot enter the namespace (seen as `Err` from `join`).
    pub fn spawn_thread_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<JoinHandle<T>> {
        let fd = self.open_fd()?;
        let name = self.name.clone();
        std::thread::Builder::new()
            .name(format!("netns {name}"))
            .spawn(move || {
                enter(&fd).unwrap_or_else(|e| panic!("cannot enter network namespace {name}: {e}"));
                drop(fd);
                f()
            })
            .context("cannot start a thread")
    }

    /// The PIDs of the processes whose (main thread's) network namespace is
    /// this one, found by comparing `/proc/PID/ns/net` with the bind mount.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let meta = std::fs::metadata(self.path())
            .with_context(|| format!("cannot stat {}", self.path().display()))?;
        let (dev, ino) = (meta.dev(), meta.ino());
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc")
            .context("cannot list /proc")?
            .flatten()
        {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            // Processes that exit meanwhile, or kernel threads, just fail here.
            if let Ok(m) = std::fs::metadata(entry.path().join("ns/net"))
                && m.dev() == dev
                && m.ino() == ino
            {
                pids.push(pid);
            }
        }
        Ok(pids)
    }

    fn open_fd(&self) -> Result<OwnedFd> {
        let file = File::open(self.path())
            .with_context(|| format!("cannot open network namespace {}", self.path().display()))?;
        Ok(OwnedFd::from(file))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if self.owned
            && let Err(e) = delete_named(&self.name)
        {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Deletes the named namespace `name` (`ip netns del`). Processes still in it
/// keep it alive, nameless, until they exit; its veths go with it.
pub fn delete_named(name: &str) -> Result<()> {
    run_ip(&["netns", "del", name])
        .with_context(|| format!("cannot delete network namespace {name}"))?;
    Ok(())
}

/// Moves the calling thread into the network namespace `fd` refers to.
fn enter(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: a valid namespace fd; CLONE_NEWNET affects only this thread.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Writes `/proc/sys/<key with dots as slashes>`; the calling thread's network
/// namespace decides which namespace's `net.*` settings it changes.
fn write_sysctl(key: &str, value: &str) -> Result<()> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    std::fs::write(&path, value)
        .with_context(|| format!("cannot set sysctl {key}={value} ({})", path.display()))
}

/// Runs `ip ARGS...`, returning stdout or an error naming the command and
/// quoting its stderr.
pub(crate) fn run_ip(args: &[&str]) -> Result<String> {
    let out = crate::programs::command("ip")?
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run `ip` (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runner refuses an undeclared program before it enters anything
    /// (no root needed, and no such namespace either).
    #[test]
    fn spawn_refuses_an_undeclared_program() {
        let ns = NetNs {
            name: "vip-none".to_owned(),
            owned: false,
        };
        #[allow(clippy::disallowed_methods, reason = "the refusal under test")]
        let cmd = Command::new("ethtool");
        let err = format!("{:#}", ns.spawn(cmd).unwrap_err());
        assert!(
            err.starts_with("refusing to start it in network namespace vip-none: `ethtool` is not declared in vip_tests::programs::PROGRAMS (tests/src/programs.rs)"),
            "{err}"
        );
        let err = format!("{:#}", ns.run("ethtool", &["-k", "eth0"]).unwrap_err());
        assert!(err.starts_with("`ethtool` is not declared"), "{err}");
    }
}
