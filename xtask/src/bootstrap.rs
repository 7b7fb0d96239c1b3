//! Installs what building and testing need, once, and finds it again later:
//! the nightly's `rust-src`, bpf-linker built against the LLVM that ships
//! inside the nightly toolchain, clippy and rustfmt, cargo-fuzz, and the
//! Debian packages of a job's programs (`vip_tests::programs::packages`).

use std::{
    ffi::OsString,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use vip_tests::programs::command;

/// The bpf-linker release this project builds.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The cargo-fuzz release `cargo xtask fuzz` runs (TOOLCHAIN.md: verified
/// with this nightly).
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// The cargo-deb release `cargo xtask deb` builds the package with (reads
/// `[package.metadata.deb]` of vip-agent/Cargo.toml).
const CARGO_DEB_VERSION: &str = "3.8.0";

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo"),
        PathBuf::from,
    )
}

/// `$CARGO_HOME/vip-bpf-linker`: bpf-linker and the LLVM links it runs with.
/// Kept outside `target/` so `cargo clean` does not cost a rebuild.
pub fn linker_home() -> PathBuf {
    cargo_home().join("vip-bpf-linker")
}

/// `$CARGO_HOME/vip-cargo-fuzz`: the cargo-fuzz xtask installed, its own
/// pinned release whatever else is on `PATH`.
pub fn cargo_fuzz_home() -> PathBuf {
    cargo_home().join("vip-cargo-fuzz")
}

/// `$CARGO_HOME/vip-cargo-deb`: the cargo-deb xtask installed.
pub fn cargo_deb_home() -> PathBuf {
    cargo_home().join("vip-cargo-deb")
}

/// `PATH` with bpf-linker's directory first.
pub fn path_with_linker() -> OsString {
    path_with(&[linker_home().join("bin")])
}

/// `PATH` with `dirs` first.
pub fn path_with(dirs: &[PathBuf]) -> OsString {
    let mut paths = dirs.to_vec();
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).expect("PATH entries have no ':'")
}

/// The nightly toolchain (the fuzz targets need it, as the XDP build does)
/// and cargo-fuzz [`CARGO_FUZZ_VERSION`] in [`cargo_fuzz_home`], installed
/// from crates.io when missing or of another version.
pub fn cargo_fuzz() -> Result<()> {
    output(command("rustc")?.args(["+nightly", "--version"])).context(
        "the fuzz targets need the nightly toolchain (rustup toolchain install nightly)",
    )?;
    cargo_tool("cargo-fuzz", CARGO_FUZZ_VERSION, &cargo_fuzz_home())
}

/// cargo-deb [`CARGO_DEB_VERSION`] in [`cargo_deb_home`], installed from
/// crates.io when missing or of another version; returns its path.
pub fn cargo_deb() -> Result<PathBuf> {
    let home = cargo_deb_home();
    cargo_tool("cargo-deb", CARGO_DEB_VERSION, &home)?;
    Ok(home.join("bin/cargo-deb"))
}

/// The cargo subcommand `name` at `version` in `home/bin`, installed with
/// `cargo install --locked` unless `name --version` says that version.
fn cargo_tool(name: &str, version: &str, home: &Path) -> Result<()> {
    let bin = home.join("bin").join(name);
    let want = format!("{name} {version}");
    let installed = |bin: &Path| -> Result<bool> {
        Ok(bin.exists()
            && command(bin)?.arg("--version").output().is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == want
            }))
    };
    if installed(&bin)? {
        return Ok(());
    }
    eprintln!(
        "xtask: installing {name} {version} from crates.io into {} (a minute or two, once)",
        home.display()
    );
    let mut c = command(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))?;
    c.args([
        "install",
        name,
        "--version",
        version,
        "--locked",
        "--force",
        "--root",
    ])
    .arg(home);
    crate::status(c)?;
    if !installed(&bin)? {
        bail!("{} does not say `{want}` after its install", bin.display());
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Nightly with `rust-src`, and a working bpf-linker for its LLVM.
pub fn ebpf_toolchain() -> Result<()> {
    let sysroot = output(command("rustc")?.args(["+nightly", "--print", "sysroot"]))
        .context("the nightly toolchain is needed to build the XDP program (rustup toolchain install nightly)")?;
    let sysroot = PathBuf::from(sysroot.trim());
    if !sysroot.join("lib/rustlib/src/rust/library/core").exists() {
        eprintln!("xtask: adding rust-src to the nightly toolchain");
        let mut c = command("rustup")?;
        c.args(["component", "add", "rust-src", "--toolchain", "nightly"]);
        crate::status(c)?;
    }
    let llvm_major = llvm_major()?;
    let home = linker_home();
    let linker = home.join("bin/bpf-linker");
    let stamp = home.join(format!("llvm-{llvm_major}"));
    if linker.exists()
        && stamp.exists()
        && command(&linker)?
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {llvm_major} (about a minute, once)"
    );
    let lib = home.join("llvm/lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    let so = find_libllvm(&sysroot.join("lib"))?;
    let so_name = so.file_name().expect("a file").to_owned();
    // bpf-linker's build looks for libLLVM.so; the binary it makes needs the
    // versioned soname at run time (RUNPATH points here): link both names.
    for name in [OsString::from("libLLVM.so"), so_name] {
        let link = lib.join(&name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&so, &link)
            .with_context(|| format!("cannot link {} to {}", link.display(), so.display()))?;
    }
    let mut c = command(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))?;
    c.args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--locked",
        "--force",
        "--root",
    ])
    .arg(&home)
    .args(["--no-default-features", "--features"])
    .arg(format!("llvm-{llvm_major}"))
    .env("LLVM_PREFIX", home.join("llvm"));
    crate::status(c)?;
    output(command(&linker)?.arg("--version"))
        .context("the freshly built bpf-linker does not run")?;
    std::fs::write(&stamp, b"").with_context(|| format!("cannot write {}", stamp.display()))?;
    Ok(())
}

/// clippy and rustfmt for the toolchain that builds the workspace (rustup
/// adds them when missing; rustup's minimal profile has neither).
pub fn lint_components() -> Result<()> {
    for (component, tool) in [("clippy", "clippy"), ("rustfmt", "fmt")] {
        let mut probe = crate::cargo()?;
        probe.args([tool, "--version"]);
        if probe.output().is_ok_and(|o| o.status.success()) {
            continue;
        }
        eprintln!("xtask: adding {component} to the toolchain");
        let mut c = command("rustup")?;
        c.current_dir(crate::root())
            .args(["component", "add", component]);
        crate::status(c)?;
    }
    Ok(())
}

fn llvm_major() -> Result<u32> {
    let vv = output(command("rustc")?.args(["+nightly", "-vV"]))?;
    let version = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("`rustc +nightly -vV` does not name its LLVM version")?;
    version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("cannot parse LLVM version {version:?}"))
}

/// The nightly's `libLLVM` shared library (its file name varies by release).
fn find_libllvm(dir: &Path) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM") && n.contains(".so"))
        })
        .collect();
    // Prefer the versioned soname (libLLVM.so.22.1-rust-...), the name the
    // linked binary records.
    found.sort_by_key(|p| !p.to_string_lossy().contains("libLLVM.so."));
    found.into_iter().next().with_context(|| {
        format!(
            "no libLLVM*.so in {}: is the nightly toolchain complete?",
            dir.display()
        )
    })
}

/// Installs the Debian packages that are missing (`apt-get update` first).
///
/// No daemon starts in the root namespace: the tests run keepalived, `HAProxy`
/// and `RabbitMQ` themselves, inside lab namespaces. During the install a
/// `/usr/sbin/policy-rc.d` that exits 101 (unless one exists already, as in
/// Docker images) makes the maintainer scripts skip starting services; on a
/// systemd host the units in [`QUIET_UNITS`] that this install brought are
/// disabled afterwards, so they do not start at boot either.
pub fn apt_packages(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    // Units of packages not installed yet: a unit someone enabled before is
    // left alone.
    let fresh_units: Vec<&str> = QUIET_UNITS
        .iter()
        .filter(|(pkg, _)| !dpkg_installed(pkg))
        .flat_map(|(_, units)| units.iter().copied())
        .collect();
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    let mut update = command("apt-get")?;
    update.args(["update", "-q"]);
    crate::status(update)?;
    {
        let _no_services = NoServiceStart::install()?;
        let mut install = command("apt-get")?;
        install
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive");
        crate::status(install)?;
    }
    if Path::new("/run/systemd/system").exists() {
        let installed: Vec<&str> = fresh_units
            .iter()
            .copied()
            .filter(|u| {
                command("systemctl").is_ok_and(|mut c| {
                    c.args(["cat", u])
                        .output()
                        .is_ok_and(|o| o.status.success())
                })
            })
            .collect();
        if !installed.is_empty() {
            eprintln!(
                "xtask: disabling {} (the tests start their own daemons in lab namespaces)",
                installed.join(" ")
            );
            let mut c = command("systemctl")?;
            c.args(["disable", "--now", "--quiet"]).args(&installed);
            crate::status(c)?;
        }
    }
    warn_about_root_daemons();
    Ok(())
}

/// systemd units that installing these packages enables, disabled again after
/// a fresh install: `rabbitmq-server`'s broker, the Erlang port mapper of
/// `erlang-base` (socket-activated on 4369 in the root namespace), nginx
/// (`nginx-common` ships its unit; the conns bench runs its own nginx) and
/// `HAProxy` (the benches run their own).
pub const QUIET_UNITS: &[(&str, &[&str])] = &[
    ("rabbitmq-server", &["rabbitmq-server.service"]),
    ("erlang-base", &["epmd.socket", "epmd.service"]),
    ("nginx-common", &["nginx.service"]),
    ("haproxy", &["haproxy.service"]),
];

fn dpkg_installed(pkg: &str) -> bool {
    command("dpkg-query").is_ok_and(|mut c| {
        c.args(["-W", "-f=${Status}", pkg])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
    })
}

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
const POLICY_RC_D_DENY: &str =
    "#!/bin/sh\n# written by `cargo xtask` for one apt-get install: start no services\nexit 101\n";

/// A `/usr/sbin/policy-rc.d` that denies every service start (exit 101), put
/// in place for an install and removed on drop. An existing one is kept and
/// left as it is.
struct NoServiceStart {
    created: bool,
}

impl NoServiceStart {
    fn install() -> Result<Self> {
        if Path::new(POLICY_RC_D).exists() {
            return Ok(Self { created: false });
        }
        std::fs::write(POLICY_RC_D, POLICY_RC_D_DENY)
            .with_context(|| format!("cannot write {POLICY_RC_D}"))?;
        std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {POLICY_RC_D} executable"))?;
        Ok(Self { created: true })
    }
}

impl Drop for NoServiceStart {
    fn drop(&mut self) {
        // Only our own file: someone may have replaced it meanwhile.
        if self.created
            && std::fs::read_to_string(POLICY_RC_D).is_ok_and(|s| s == POLICY_RC_D_DENY)
            && let Err(e) = std::fs::remove_file(POLICY_RC_D)
        {
            eprintln!("xtask: warning: cannot remove {POLICY_RC_D}: {e}");
        }
    }
}

/// Warns about `RabbitMQ` (`beam.smp`) or `epmd` processes in our own (the
/// root) network namespace: the tests expect none there. They are not ours
/// to stop, so this only names them.
fn warn_about_root_daemons() {
    let Ok(own) = std::fs::read_link("/proc/self/ns/net") else {
        return;
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let found: Vec<String> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| {
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let comm = comm.trim();
            let daemon = comm == "epmd" || comm.starts_with("beam");
            (daemon && std::fs::read_link(e.path().join("ns/net")).ok()? == own)
                .then(|| format!("{comm} (pid {})", e.file_name().to_string_lossy()))
        })
        .collect();
    if !found.is_empty() {
        eprintln!(
            "xtask: warning: {} run(s) in the root network namespace; the tests start their own brokers in lab namespaces",
            found.join(", ")
        );
    }
}
