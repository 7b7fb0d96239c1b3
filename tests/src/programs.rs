//! The one list of external programs that vip's xtask commands may start,
//! each with where it comes from (the Debian package that provides it), and
//! the only way to start one: [`command`].
//!
//! `cargo xtask <job>` installs the Debian packages of its job's programs
//! ([`packages`]) before it runs anything, so a program on this list is there
//! on a new machine. A program that is not on it is refused by [`command`]
//! and by [`crate::netns::NetNs::spawn`] at once, on the developer's own
//! machine, with an error that names this list; and clippy (run by
//! `cargo xtask test`) refuses `std::process::Command::new` anywhere else
//! (`clippy.toml`). A test that starts a new tool therefore fails where it is
//! written, not on the next new machine.
//!
//! To add a program: one [`Program`] line below, with its package and the
//! jobs that start it.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU8, Ordering},
};

use anyhow::{Result, bail};

/// A `cargo xtask` command: what a program is started for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Job {
    /// `cargo xtask build`.
    Build,
    /// `cargo xtask run` (with no arguments, the demo in the lab).
    Run,
    /// `cargo xtask lab up|status|down`.
    Lab,
    /// `cargo xtask test` (and `cargo test`).
    Test,
    /// `cargo xtask bench`.
    Bench,
    /// `cargo xtask fuzz`.
    Fuzz,
    /// `cargo xtask deb` (and `cargo xtask test`, which builds the package
    /// its tests install).
    Deb,
}

impl Job {
    /// Every job.
    pub const ALL: [Job; 7] = [
        Job::Build,
        Job::Run,
        Job::Lab,
        Job::Test,
        Job::Bench,
        Job::Fuzz,
        Job::Deb,
    ];

    /// The command line that runs this job.
    #[must_use]
    pub fn command_line(self) -> &'static str {
        match self {
            Job::Build => "cargo xtask build",
            Job::Run => "cargo xtask run",
            Job::Lab => "cargo xtask lab",
            Job::Test => "cargo xtask test",
            Job::Bench => "cargo xtask bench",
            Job::Fuzz => "cargo xtask fuzz",
            Job::Deb => "cargo xtask deb",
        }
    }

    fn from_u8(v: u8) -> Job {
        Job::ALL
            .into_iter()
            .find(|j| *j as u8 == v)
            .unwrap_or(Job::Test)
    }
}

/// Where a program comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A Debian package that `cargo xtask` installs when it is missing.
    Debian(&'static str),
    /// A package every Debian system has (Essential or required); named so
    /// the list stays checkable, never installed by xtask.
    Base(&'static str),
    /// rustup's toolchain: the README's one precondition.
    Rustup,
    /// A binary this project builds: the workspace's (`cargo xtask build`),
    /// and bpf-linker and cargo-fuzz (built once by xtask).
    Workspace,
}

impl Source {
    /// The Debian package, if the program comes from one.
    #[must_use]
    pub fn package(self) -> Option<&'static str> {
        match self {
            Source::Debian(p) | Source::Base(p) => Some(p),
            Source::Rustup | Source::Workspace => None,
        }
    }
}

/// One program some job may start.
#[derive(Debug)]
pub struct Program {
    /// The name a command uses (looked up on `PATH`), or an absolute path.
    /// A command given as a path matches by its file name too.
    pub name: &'static str,
    pub source: Source,
    /// The jobs that may start it.
    pub jobs: &'static [Job],
    /// Who starts it, for what.
    pub why: &'static str,
}

const ALL: &[Job] = &Job::ALL;
/// Every job but `build`: each runs the lab, and so installs packages first.
const LABS: &[Job] = &[Job::Run, Job::Lab, Job::Test, Job::Bench];
const TESTS: &[Job] = &[Job::Test, Job::Bench];
/// The jobs that install Debian packages: the labs' and `deb` (lintian).
const INSTALLS: &[Job] = &[Job::Run, Job::Lab, Job::Test, Job::Bench, Job::Deb];
/// The jobs that run `RabbitMQ` brokers: the tests, the benches and the demo.
const BROKERS: &[Job] = &[Job::Run, Job::Test, Job::Bench];
/// The jobs that build the Debian package: `cargo xtask test` builds it for
/// the tests that install it.
const PACKAGE: &[Job] = &[Job::Test, Job::Deb];

/// Every external program a job may start.
pub const PROGRAMS: &[Program] = &[
    // The toolchain and xtask's own steps.
    Program {
        name: "cargo",
        source: Source::Rustup,
        jobs: ALL,
        why: "xtask builds, tests and benches",
    },
    Program {
        name: "rustc",
        source: Source::Rustup,
        jobs: ALL,
        why: "xtask finds the nightly's sysroot and LLVM",
    },
    Program {
        name: "rustup",
        source: Source::Rustup,
        jobs: ALL,
        why: "xtask adds rust-src (nightly), clippy and rustfmt when missing",
    },
    Program {
        name: "bpf-linker",
        source: Source::Workspace,
        jobs: ALL,
        why: "xtask builds it once against the nightly's LLVM, then checks it runs",
    },
    Program {
        name: "cargo-fuzz",
        source: Source::Workspace,
        jobs: &[Job::Test, Job::Fuzz],
        why: "xtask installs it once from crates.io, then checks its version; `cargo +nightly fuzz` runs the fuzz targets",
    },
    Program {
        name: "cargo-deb",
        source: Source::Workspace,
        jobs: PACKAGE,
        why: "xtask installs it once from crates.io, then checks its version; it builds the .deb",
    },
    Program {
        name: "vip-docs",
        source: Source::Workspace,
        jobs: PACKAGE,
        why: "xtask writes the man pages and completions the package holds",
    },
    Program {
        name: "lintian",
        source: Source::Debian("lintian"),
        jobs: PACKAGE,
        why: "xtask checks the package against Debian policy (no errors allowed)",
    },
    Program {
        name: "dpkg-deb",
        source: Source::Base("dpkg"),
        jobs: PACKAGE,
        why: "the package tests list and unpack the .deb",
    },
    Program {
        name: "man",
        source: Source::Debian("man-db"),
        jobs: &[Job::Test],
        why: "the package test renders each installed man page (man -l)",
    },
    Program {
        name: "bash",
        source: Source::Base("bash"),
        jobs: &[Job::Test],
        why: "the package test loads the bash completions",
    },
    Program {
        name: "apt-get",
        source: Source::Base("apt"),
        jobs: INSTALLS,
        why: "xtask installs the packages on this list",
    },
    Program {
        name: "dpkg-query",
        source: Source::Base("dpkg"),
        jobs: INSTALLS,
        why: "xtask asks which packages are installed; a test checks this list's packages",
    },
    Program {
        name: "systemctl",
        source: Source::Base("systemd"),
        jobs: INSTALLS,
        why: "xtask disables the units a fresh install enabled (only on a systemd host)",
    },
    // The lab.
    Program {
        name: "ip",
        source: Source::Debian("iproute2"),
        jobs: LABS,
        why: "namespaces, veths, addresses, routes (NetNs, Lab)",
    },
    Program {
        name: "ping",
        source: Source::Debian("iputils-ping"),
        jobs: &[Job::Run],
        why: "the demo pings the VIP (echo answered by XDP)",
    },
    Program {
        name: "vip-agent",
        source: Source::Workspace,
        jobs: &[Job::Run, Job::Test, Job::Bench],
        why: "the agent under test, the demo's nodes",
    },
    Program {
        name: "vipctl",
        source: Source::Workspace,
        jobs: &[Job::Run, Job::Test, Job::Bench],
        why: "the demo and the operations tests",
    },
    Program {
        name: "vip-lab-backend",
        source: Source::Workspace,
        jobs: LABS,
        why: "the lab's backends",
    },
    // The tests and the benches.
    Program {
        name: "nstat",
        source: Source::Debian("iproute2"),
        jobs: TESTS,
        why: "listen-queue overflow counters of a backend",
    },
    Program {
        name: "ss",
        source: Source::Debian("iproute2"),
        jobs: TESTS,
        why: "the failover bench waits for HAProxy's listener",
    },
    Program {
        name: "sleep",
        source: Source::Base("coreutils"),
        jobs: TESTS,
        why: "a process to start in a namespace and stop",
    },
    Program {
        name: "false",
        source: Source::Base("coreutils"),
        jobs: &[Job::Test],
        why: "a lab backend that dies at once",
    },
    Program {
        name: "setpriv",
        source: Source::Base("util-linux"),
        jobs: TESTS,
        why: "runs the agent as nobody with ambient capabilities",
    },
    Program {
        name: "sh",
        source: Source::Base("dash"),
        jobs: TESTS,
        why: "the agent runs exec checks and notify scripts with it",
    },
    Program {
        name: "keepalived",
        source: Source::Debian("keepalived"),
        jobs: TESTS,
        why: "VRRP interop peer; the failover bench's peer stack",
    },
    Program {
        name: "/usr/lib/rabbitmq/bin/rabbitmq-server",
        source: Source::Debian("rabbitmq-server"),
        jobs: BROKERS,
        why: "real brokers in the lab's backend namespaces (vip_tests::broker)",
    },
    Program {
        name: "/usr/lib/rabbitmq/bin/rabbitmqctl",
        source: Source::Debian("rabbitmq-server"),
        jobs: BROKERS,
        why: "broker status, alarms and stop (vip_tests::broker)",
    },
    Program {
        name: "/usr/lib/rabbitmq/bin/rabbitmq-upgrade",
        source: Source::Debian("rabbitmq-server"),
        jobs: BROKERS,
        why: "maintenance mode: drain and revive a cluster member (vip_tests::broker)",
    },
    Program {
        name: "haproxy",
        source: Source::Debian("haproxy"),
        jobs: &[Job::Bench],
        why: "the failover bench's peer stack (keepalived + HAProxy)",
    },
    Program {
        name: "perf",
        source: Source::Debian("linux-perf"),
        jobs: &[Job::Bench],
        why: "the XDP bench's profile: where a packet's time goes",
    },
    Program {
        name: "wrk",
        source: Source::Debian("wrk"),
        jobs: &[Job::Bench],
        why: "the conns bench's client: new TCP connections per second (`Connection: close`)",
    },
    Program {
        // /usr/sbin/nginx; Debian 12's nginx-light is nginx plus a module.
        name: "nginx",
        source: Source::Debian("nginx"),
        jobs: &[Job::Bench],
        why: "the conns bench's backend, in a lab namespace with its own config",
    },
];

/// The Debian packages `job` installs when missing (sorted, no repeats).
#[must_use]
pub fn packages(job: Job) -> Vec<&'static str> {
    let mut pkgs: Vec<&str> = PROGRAMS
        .iter()
        .filter(|p| p.jobs.contains(&job))
        .filter_map(|p| match p.source {
            Source::Debian(pkg) => Some(pkg),
            _ => None,
        })
        .collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    pkgs
}

static JOB: AtomicU8 = AtomicU8::new(Job::Test as u8);

/// Declares which job this process runs (the default is [`Job::Test`]: the
/// test harness). Benches and xtask call it first thing.
pub fn set_job(job: Job) {
    JOB.store(job as u8, Ordering::Relaxed);
}

/// The job this process runs.
#[must_use]
pub fn job() -> Job {
    Job::from_u8(JOB.load(Ordering::Relaxed))
}

/// The entry for `program`: by name, or a path by its file name.
#[must_use]
pub fn lookup(program: &OsStr) -> Option<&'static Program> {
    let file_name = Path::new(program).file_name();
    PROGRAMS
        .iter()
        .find(|p| OsStr::new(p.name) == program)
        .or_else(|| {
            PROGRAMS
                .iter()
                .find(|p| file_name.is_some_and(|f| f == OsStr::new(p.name)))
        })
}

/// Refuses `program` unless this job may start it and, for a packaged
/// program, it is installed; the errors name the list and what to do.
pub fn check(program: &OsStr) -> Result<&'static Program> {
    let shown = program.to_string_lossy();
    let job = job();
    let Some(entry) = lookup(program) else {
        bail!(
            "`{shown}` is not declared in vip_tests::programs::PROGRAMS (tests/src/programs.rs), \
             the list of programs vip's xtask commands may start: add it there with the Debian \
             package that provides it, so that `{}` installs it on a new machine",
            job.command_line()
        );
    };
    if !entry.jobs.contains(&job) {
        let declared: Vec<&str> = entry.jobs.iter().map(|j| j.command_line()).collect();
        bail!(
            "`{shown}` is declared in vip_tests::programs::PROGRAMS (tests/src/programs.rs) for {} \
             only, not for `{}`: add Job::{job:?} to its entry so that this job installs it",
            declared.join(", "),
            job.command_line()
        );
    }
    if let Some(pkg) = entry.source.package()
        && find(program).is_none()
    {
        bail!(
            "`{shown}` is not installed: `{}` installs it (Debian package {pkg}), \
             or `apt-get install {pkg}`",
            job.command_line()
        );
    }
    Ok(entry)
}

/// Where `program` is: itself if it is a path, else the first executable of
/// that name on `PATH`.
#[must_use]
pub fn find(program: &OsStr) -> Option<PathBuf> {
    let is_exe = |p: &Path| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let path = Path::new(program);
    if path.components().count() > 1 {
        return is_exe(path).then(|| path.to_owned());
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(program))
        .find(|p| is_exe(p))
}

/// A [`Command`] for `program`, which must be on the list for this job and
/// installed ([`check`]).
pub fn command(program: impl AsRef<OsStr>) -> Result<Command> {
    let program = program.as_ref();
    check(program)?;
    #[allow(clippy::disallowed_methods)] // the one place that may
    Ok(Command::new(program))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undeclared_program_is_refused_with_the_list_named() {
        let err = command("ethtool").unwrap_err().to_string();
        assert!(err.starts_with("`ethtool` is not declared"), "{err}");
        assert!(
            err.contains("vip_tests::programs::PROGRAMS (tests/src/programs.rs)"),
            "{err}"
        );
        assert!(err.contains("`cargo xtask test` installs it"), "{err}");
        // A path is refused the same way.
        let err = command("/usr/sbin/ethtool").unwrap_err().to_string();
        assert!(
            err.starts_with("`/usr/sbin/ethtool` is not declared"),
            "{err}"
        );
    }

    #[test]
    fn a_program_of_another_job_is_refused() {
        // Only the bench installs HAProxy: a test may not start it.
        assert_eq!(job(), Job::Test);
        let err = command("haproxy").unwrap_err().to_string();
        assert!(
            err.contains("for cargo xtask bench only, not for `cargo xtask test`"),
            "{err}"
        );
        assert!(err.contains("add Job::Test to its entry"), "{err}");
    }

    #[test]
    fn a_declared_program_gives_a_command() {
        let cmd = command("sleep").expect("sleep is declared for tests");
        assert_eq!(cmd.get_program(), "sleep");
        // Workspace binaries match by file name wherever they were built.
        assert_eq!(
            lookup(OsStr::new("/x/target/debug/vip-agent")).map(|p| p.name),
            Some("vip-agent")
        );
        assert!(lookup(OsStr::new("/usr/lib/rabbitmq/bin/rabbitmqctl")).is_some());
    }

    #[test]
    fn each_job_installs_its_packages_and_no_base_ones() {
        assert_eq!(
            packages(Job::Test),
            [
                "iproute2",
                "keepalived",
                "lintian",
                "man-db",
                "rabbitmq-server"
            ]
        );
        assert_eq!(packages(Job::Deb), ["lintian"]);
        assert_eq!(
            packages(Job::Bench),
            [
                "haproxy",
                "iproute2",
                "keepalived",
                "linux-perf",
                "nginx",
                "rabbitmq-server",
                "wrk"
            ]
        );
        assert_eq!(
            packages(Job::Run),
            ["iproute2", "iputils-ping", "rabbitmq-server"]
        );
        assert_eq!(packages(Job::Lab), ["iproute2"]);
        assert!(packages(Job::Build).is_empty());
        assert!(packages(Job::Fuzz).is_empty());
    }

    /// The README's "Two commands" section names the packages each job
    /// installs, as this list has them.
    #[test]
    fn the_readme_names_each_jobs_packages() {
        let readme = include_str!("../../README.md");
        for job in [Job::Run, Job::Test, Job::Bench] {
            let prefix = format!("- `{}`: `", job.command_line());
            let line = readme
                .lines()
                .map(str::trim)
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("README has no line \"{prefix}...\""));
            assert_eq!(
                line.trim_end_matches('`'),
                packages(job).join(" "),
                "README's packages for `{}`",
                job.command_line()
            );
        }
    }

    /// The list tells the truth on this machine: every program the test job
    /// may start that comes from a package is installed (`cargo xtask test`
    /// installed it), and dpkg says that package provides it.
    #[test]
    fn every_test_program_is_installed_from_the_package_named() {
        if !Path::new("/var/lib/dpkg/status").exists() {
            eprintln!("skipping: not a Debian system (no dpkg)");
            return;
        }
        for p in PROGRAMS.iter().filter(|p| p.jobs.contains(&Job::Test)) {
            let Some(pkg) = p.source.package() else {
                continue;
            };
            let Some(path) = find(OsStr::new(p.name)) else {
                // xtask installs Debian packages; a base one may be absent
                // where it is not used (systemctl off systemd).
                assert!(
                    !matches!(p.source, Source::Debian(_)),
                    "{} is not installed (package {pkg})",
                    p.name
                );
                continue;
            };
            let owner = owning_package(&path)
                .unwrap_or_else(|| panic!("dpkg knows no package with {}", path.display()));
            eprintln!("{}: {} from {owner}", p.name, path.display());
            assert_eq!(
                owner,
                pkg,
                "{} comes from {owner}, not {pkg}",
                path.display()
            );
        }
    }

    /// The package dpkg records for `path`: tried as found, resolved through
    /// symlinks, and with /usr added or taken away (merged /usr: Debian 12
    /// records /bin/ip, the path is /usr/bin/ip).
    fn owning_package(path: &Path) -> Option<String> {
        let resolved = std::fs::canonicalize(path).ok();
        let mut tries = vec![path.to_owned()];
        tries.extend(resolved);
        for t in tries.clone() {
            match t.strip_prefix("/usr") {
                Ok(rest) => tries.push(Path::new("/").join(rest)),
                Err(_) => tries.push(Path::new("/usr").join(t.strip_prefix("/").ok()?)),
            }
        }
        tries.iter().find_map(|t| {
            let out = command("dpkg-query").ok()?.arg("-S").arg(t).output().ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            // "iproute2: /bin/ip"; a diversion line reads "diversion by ...".
            text.lines()
                .filter(|l| !l.starts_with("diversion"))
                .find_map(|l| {
                    l.split_once(": ")
                        .map(|(p, _)| p.split(':').next().unwrap_or(p).to_owned())
                })
                .filter(|_| out.status.success())
        })
    }
}
