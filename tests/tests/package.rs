//! The Debian package as a user gets it: `cargo xtask test` builds it
//! (`cargo xtask deb`, lintian included) and names it in `VIP_DEB`. These
//! tests read its control data, unpack it into a scratch root and run what
//! it installs from there: the programs, the shipped example through
//! `--check`, every man page through `man -l`, the bash completions.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Output,
};

use vip_tests::{kit::DirGuard, programs};

/// What the package must install (directories aside).
const FILES: &[&str] = &[
    "./usr/sbin/vip-agent",
    "./usr/bin/vipctl",
    "./usr/lib/systemd/system/vip-agent.service",
    "./etc/vip/vip.toml",
    "./usr/share/man/man8/vip-agent.8.gz",
    "./usr/share/man/man8/vipctl.8.gz",
    "./usr/share/man/man5/vip.toml.5.gz",
    "./usr/share/bash-completion/completions/vip-agent",
    "./usr/share/bash-completion/completions/vipctl",
    "./usr/share/zsh/vendor-completions/_vip-agent",
    "./usr/share/zsh/vendor-completions/_vipctl",
    "./usr/share/fish/vendor_completions.d/vip-agent.fish",
    "./usr/share/fish/vendor_completions.d/vipctl.fish",
    "./usr/share/doc/vip/grafana/vip.json",
    "./usr/share/doc/vip/keepalived/b-lvs-rabbitmq.conf",
    "./usr/share/doc/vip/README.md",
    "./usr/share/doc/vip/copyright",
    "./usr/share/doc/vip/changelog.Debian.gz",
];

/// The package `cargo xtask test` built: `VIP_DEB`, else the newest
/// target/debian/vip_*.deb (after a `cargo xtask deb`).
fn deb() -> PathBuf {
    if let Some(p) = std::env::var_os("VIP_DEB") {
        return PathBuf::from(p);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian");
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vip_"))
                && p.extension().is_some_and(|e| e == "deb")
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!(
                "no package in {}: run `cargo xtask test` (it builds one) or `cargo xtask deb`",
                dir.display()
            )
        })
}

/// Runs `program args` to completion; panics with its output unless it
/// exits 0.
fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&std::ffi::OsStr]) -> Output {
    let program = program.as_ref();
    let out = programs::command(program)
        .expect("a declared program")
        .args(args)
        .env("MANWIDTH", "100")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.to_string_lossy()));
    assert!(
        out.status.success(),
        "{} {args:?}: {}\nstdout:\n{}\nstderr:\n{}",
        program.to_string_lossy(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The package unpacked into a fresh directory (removed on drop).
fn unpacked(tag: &str) -> DirGuard {
    let dir =
        DirGuard::new(std::env::temp_dir().join(format!("vip-deb-{tag}-{}", std::process::id())));
    run(
        "dpkg-deb",
        &["-x".as_ref(), deb().as_os_str(), dir.0.as_os_str()],
    );
    dir
}

#[test]
fn the_package_lists_every_file_it_must_install() {
    let list = text(&run("dpkg-deb", &["-c".as_ref(), deb().as_os_str()]).stdout);
    let files: BTreeSet<&str> = list
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    for f in FILES {
        assert!(files.contains(f), "{f} is not in the package:\n{list}");
    }
    for (path, mode) in [
        ("./usr/sbin/vip-agent", "-rwxr-xr-x"),
        ("./usr/bin/vipctl", "-rwxr-xr-x"),
    ] {
        assert!(
            list.lines()
                .any(|l| l.starts_with(mode) && l.ends_with(path)),
            "{path} is not {mode}:\n{list}"
        );
    }
    let control = text(&run("dpkg-deb", &["-f".as_ref(), deb().as_os_str()]).stdout);
    assert!(control.contains("Package: vip\n"), "{control}");
    assert!(
        control.contains(&format!("Version: {}-1\n", env!("CARGO_PKG_VERSION"))),
        "{control}"
    );
    let depends = control
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("no Depends: {control}"));
    assert!(depends.split(", ").any(|d| d == "adduser"), "{depends}");
    assert!(depends.contains("libc6"), "{depends}");
}

#[test]
fn the_example_is_a_conffile_and_postinst_makes_the_user() {
    let dir =
        DirGuard::new(std::env::temp_dir().join(format!("vip-deb-ctl-{}", std::process::id())));
    run(
        "dpkg-deb",
        &["-e".as_ref(), deb().as_os_str(), dir.0.as_os_str()],
    );
    let conffiles = std::fs::read_to_string(dir.0.join("conffiles")).expect("conffiles");
    assert_eq!(conffiles.lines().collect::<Vec<_>>(), ["/etc/vip/vip.toml"]);
    let postinst = std::fs::read_to_string(dir.0.join("postinst")).expect("postinst");
    assert!(
        postinst
            .contains("adduser --system --group --no-create-home --home /nonexistent --quiet vip"),
        "{postinst}"
    );
    assert!(
        !postinst.contains("#DEBHELPER#"),
        "the token was not replaced:\n{postinst}"
    );
    // cargo-deb's systemd snippet: the unit is known to systemd, not enabled.
    assert!(postinst.contains("vip-agent.service"), "{postinst}");
    assert!(!postinst.contains("deb-systemd-invoke start"), "{postinst}");
}

#[test]
fn the_installed_programs_run_from_a_scratch_root() {
    let root = unpacked("run");
    let r = &root.0;
    let help = text(&run(r.join("usr/bin/vipctl"), &["--help".as_ref()]).stdout);
    for verb in ["status", "backends", "drain", "import-keepalived"] {
        assert!(help.contains(verb), "{help}");
    }
    let example = r.join("etc/vip/vip.toml");
    let check = run(
        r.join("usr/sbin/vip-agent"),
        &["--config".as_ref(), example.as_os_str(), "--check".as_ref()],
    );
    let said = text(&check.stdout);
    assert!(
        said.starts_with(&format!(
            "{}: OK (1 service(s), node lb1 on eth0",
            example.display()
        )),
        "{said}"
    );
    // The unit runs what the package installed, logging to the journal.
    let unit = std::fs::read_to_string(r.join("usr/lib/systemd/system/vip-agent.service")).unwrap();
    assert!(
        unit.lines().any(|l| l
            == "ExecStart=/usr/sbin/vip-agent --config /etc/vip/vip.toml --log-format journald"),
        "{unit}"
    );
    // The importer's samples convert with the installed vipctl.
    let sample = r.join("usr/share/doc/vip/keepalived/b-lvs-rabbitmq.conf");
    let toml = text(
        &run(
            r.join("usr/bin/vipctl"),
            &["import-keepalived".as_ref(), sample.as_os_str()],
        )
        .stdout,
    );
    assert!(toml.contains("[[service]]"), "{toml}");
}

#[test]
fn each_man_page_renders_and_the_completions_load() {
    let root = unpacked("man");
    let r = &root.0;
    let pages = [
        (
            "usr/share/man/man8/vip-agent.8.gz",
            &["--config", "--log-format", "journald", "vip.toml(5)"][..],
        ),
        (
            "usr/share/man/man8/vipctl.8.gz",
            &["import-keepalived", "--watch", "drain", "vip-agent(8)"][..],
        ),
        (
            "usr/share/man/man5/vip.toml.5.gz",
            &[
                "flow_table_size",
                "track_services",
                "on_backend_down",
                "advert_interval = \"10ms\"",
            ][..],
        ),
    ];
    for (page, needles) in pages {
        let path = r.join(page);
        let out = run(
            "man",
            &[
                "-l".as_ref(),
                "-P".as_ref(),
                "cat".as_ref(),
                path.as_os_str(),
            ],
        );
        let shown = text(&out.stdout);
        let warnings = text(&out.stderr);
        assert!(
            warnings.trim().is_empty(),
            "{page}: man warned:\n{warnings}"
        );
        for n in needles {
            assert!(shown.contains(n), "{page} does not show {n:?}:\n{shown}");
        }
    }
    for program in ["vipctl", "vip-agent"] {
        let file = r
            .join("usr/share/bash-completion/completions")
            .join(program);
        let script = format!("source {} && complete -p {program}", file.display());
        let out = text(&run("bash", &["-c".as_ref(), script.as_ref()]).stdout);
        assert!(out.contains(program), "{program}: {out}");
    }
}
