//! `vipctl import-keepalived`: turns a keepalived.conf into the equivalent vip
//! TOML and lists whatever has no equivalent as `FILE:LINE: keyword: what to
//! do`, so nothing is dropped silently.
//!
//! Three steps, each tested alone. [`Lexer`] reads the file and its includes
//! line by line the way keepalived 2.2 does (comments, quotes, `@id`
//! conditional lines, `$NAME=value` parameters, braces split off words) into
//! words that know their file and line; [`build`] groups them into statements
//! and `{ }` blocks; [`Converter`] walks the blocks, keeps what vip can
//! express, notes the rest, and writes the TOML. The TOML is then put through
//! the agent's own parser ([`crate::config::Config::parse`]), exactly what
//! `vip-agent --check` runs, so what is printed always loads.

use std::{
    collections::{HashMap, HashSet},
    fmt, io,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::Duration,
};

// The files of the importer; the names they share are imported below once.
mod ast;
mod convert;
mod convert_lvs;
mod convert_vrrp;
mod emit;
mod glob;
mod lex;
mod model;
mod resolve;
mod values;

use self::{
    ast::{Stmt, build},
    emit::{ServiceOut, VrrpOut, advert_for},
    lex::{Lexer, Loc, RawNote, Tok},
    model::{
        Converter, Garp, Group, Instance, KA_CONNECT_TIMEOUT, KA_DELAY_LOOP, KA_PRIORITY,
        KA_VRRP_VERSION, Notify, Probe, Real, STATE_KEYWORDS, Script, Server, Timing, Track, flag,
    },
    values::{is_literal, parse_secs, with_backend_variable},
};
use crate::config::{MAX_AUTH_PASS, MAX_GARP_COUNT, MAX_WEIGHT};

/// What the caller adds to, or overrides in, the keepalived file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `[node] interface` instead of the instances' `interface` (needed when
    /// no `vrrp_instance` names one).
    pub interface: Option<String>,
    /// `[node] name` instead of `router_id` (or the host name).
    pub name: Option<String>,
    /// keepalived's config id (`keepalived -i ID`) that `@ID` lines are
    /// compared with; default the host name up to its first dot, as keepalived.
    pub config_id: Option<String>,
}

/// The TOML, which passes `vip-agent --check`, and what it could not carry over.
#[derive(Debug, Clone)]
pub struct Imported {
    pub toml: String,
    /// In the order of the keepalived text (includes where they are included).
    pub notes: Vec<Note>,
}

/// Something in the keepalived file that vip does not do, or does differently.
///
/// Displays as `FILE:LINE: keyword: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub file: PathBuf,
    /// 1-based; `None` for what concerns the file as a whole.
    pub line: Option<usize>,
    pub keyword: String,
    /// Why, and what to do about it.
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}: {}", self.keyword, self.message)
    }
}

/// Why no TOML could be produced.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{}: cannot read the keepalived configuration", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}:{line}: cannot read {}, named by this include", file.display(), path.display())]
    Include {
        file: PathBuf,
        line: usize,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The text is not valid keepalived syntax (or uses syntax the importer
    /// cannot expand).
    #[error("{}:{line}: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        message: String,
    },
    /// Something vip needs that the file does not say.
    #[error("{}: {message}", file.display())]
    Incomplete { file: PathBuf, message: String },
    /// The TOML would not load (a vip limit, or a bug in the importer).
    #[error(
        "{}: the imported configuration does not pass vip's checks; fix the keepalived file, or import what passes and edit the TOML by hand",
        file.display()
    )]
    Invalid {
        file: PathBuf,
        #[source]
        source: crate::config::ConfigError,
    },
}

impl ImportError {
    /// The process exit code: 2, "usage or configuration error".
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        2
    }
}

/// Reads `path` (and what it includes) and converts it.
///
/// Fails when a file cannot be read, the syntax is broken (with the file and
/// line), the file gives no interface and `opts` none either, or the result
/// would not pass `vip-agent --check`.
pub fn import(path: &Path, opts: &Options) -> Result<Imported, ImportError> {
    let config_id = opts
        .config_id
        .clone()
        .unwrap_or_else(|| host_name().split('.').next().unwrap_or_default().to_owned());
    let mut lexer = Lexer::new(config_id);
    lexer.read(path, None)?;
    let Lexer {
        files, toks, notes, ..
    } = lexer;
    let stmts = build(toks, &files)?;
    let mut conv = Converter::new(files, notes);
    conv.walk(&stmts);
    conv.finish(path, opts)
}

/// The host name, as keepalived's default `router_id` and config id.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// What `vip-agent --check` runs on a file.
fn validate(toml: &str) -> Result<(), crate::config::ConfigError> {
    let path = Path::new("imported.toml");
    crate::config::Config::parse(toml, path).map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::{
        glob::{expand_braces, fnmatch},
        lex::{decomment, split_words},
        values::node_name,
        *,
    };

    /// A scratch directory removed on drop, even when the test panics.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("vip-import-{}-{n}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Lexes and builds `text` as file `x.conf`.
    fn parse_text(text: &str) -> Result<Vec<Stmt>, ImportError> {
        let dir = Scratch::new("parse");
        let path = dir.write("x.conf", text);
        let mut lexer = Lexer::new("lb1".to_owned());
        lexer.read(&path, None)?;
        build(lexer.toks, &lexer.files)
    }

    fn shape(stmts: &[Stmt]) -> String {
        stmts
            .iter()
            .map(|s| {
                let mut out = format!("{}@{}", s.words.join(" "), s.at.line);
                if let Some(b) = &s.block {
                    let _ = write!(out, "{{{}}}", shape(b));
                }
                out
            })
            .collect::<Vec<_>>()
            .join(";")
    }

    fn syntax_line(e: &ImportError) -> usize {
        match e {
            ImportError::Syntax { line, .. } => *line,
            other => panic!("expected a syntax error, got {other}"),
        }
    }

    fn import_text(text: &str, opts: &Options) -> Result<Imported, ImportError> {
        let dir = Scratch::new("import");
        let path = dir.write("keepalived.conf", text);
        import(&path, opts)
    }

    fn notes_text(i: &Imported) -> String {
        i.notes.iter().map(|n| n.to_string() + "\n").collect()
    }

    #[test]
    fn comments_start_anywhere_outside_double_quotes() {
        assert_eq!(decomment("  priority 100 # the master"), "priority 100");
        assert_eq!(decomment("! a whole comment"), "");
        assert_eq!(decomment("auth_pass se!cret"), "auth_pass se");
        assert_eq!(
            decomment("script \"/bin/x # y\" # z"),
            "script \"/bin/x # y\""
        );
        assert_eq!(decomment("auth_pass a\\#b"), "auth_pass a#b");
    }

    #[test]
    fn words_quotes_and_braces() {
        let w = |s: &str| Tok::Word(s.to_owned());
        assert_eq!(
            split_words("script \"/bin/check -x {a}\" weight -2").unwrap(),
            [w("script"), w("/bin/check -x {a}"), w("weight"), w("-2")]
        );
        assert_eq!(
            split_words("group{VI_1 VI_2}").unwrap(),
            [w("group"), Tok::Open, w("VI_1"), w("VI_2"), Tok::Close]
        );
        assert_eq!(split_words("x \"\"").unwrap(), [w("x"), w("")]);
        assert!(
            split_words("script \"/bin/x")
                .unwrap_err()
                .contains("not closed")
        );
    }

    #[test]
    fn nested_blocks_on_one_or_many_lines() {
        let stmts = parse_text(
            "vrrp_instance VI_1 {\n  virtual_ipaddress {\n    10.0.0.1/24 dev eth0\n  }\n  authentication { auth_type PASS }\n}\n\
             vrrp_sync_group G\n{\n  group { VI_1\n VI_2 }\n}\n",
        )
        .unwrap();
        assert_eq!(
            shape(&stmts),
            "vrrp_instance VI_1@1{virtual_ipaddress@2{10.0.0.1/24 dev eth0@3};authentication@5{auth_type PASS@5}};\
             vrrp_sync_group G@7{group@9{VI_1@9;VI_2@10}}"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = parse_text("global_defs {\n  router_id x\n}\nvrrp_instance VI_1 {\n  priority 1\n")
            .unwrap_err();
        assert_eq!(syntax_line(&e), 4, "{e}");
        assert!(
            e.to_string()
                .contains("x.conf:4: the block of vrrp_instance opened here is never closed"),
            "{e}"
        );
        let e = parse_text("a {\n}\n}\n").unwrap_err();
        assert_eq!(syntax_line(&e), 3, "{e}");
        assert!(e.to_string().contains("closes no block"), "{e}");
        let e = parse_text("a { }\n{\n}\n").unwrap_err();
        assert_eq!(syntax_line(&e), 2, "{e}");
        let e = parse_text("a\nscript \"/bin/x\n").unwrap_err();
        assert_eq!(syntax_line(&e), 2, "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn include_globs_relative_to_the_including_file() {
        let dir = Scratch::new("include");
        let main = dir.write(
            "etc/keepalived.conf",
            "global_defs {\n  router_id lb1\n}\ninclude conf.d/*.conf\ninclude \"other/{b,a}.inc\"\n",
        );
        dir.write(
            "etc/conf.d/20-second.conf",
            "# second\nvrrp_script b {\n}\n",
        );
        dir.write("etc/conf.d/10-first.conf", "vrrp_script a {\n}\n");
        dir.write("etc/conf.d/.hidden.conf", "hidden 1\n");
        dir.write("etc/conf.d/notes.txt", "txt 1\n");
        dir.write("etc/other/a.inc", "from_a 1\n");
        dir.write("etc/other/b.inc", "include ../conf.d/1*.conf\n");
        let mut lexer = Lexer::new("lb1".to_owned());
        lexer.read(&main, None).unwrap();
        let stmts = build(lexer.toks, &lexer.files).unwrap();
        let found: Vec<(String, String, usize)> = stmts
            .iter()
            .map(|s| {
                let file = lexer.files[s.at.file].strip_prefix(&dir.0).unwrap();
                (s.words.join(" "), file.display().to_string(), s.at.line)
            })
            .collect();
        let want = [
            ("global_defs", "etc/keepalived.conf", 1),
            ("vrrp_script a", "etc/conf.d/10-first.conf", 1),
            ("vrrp_script b", "etc/conf.d/20-second.conf", 2),
            ("vrrp_script a", "etc/other/../conf.d/10-first.conf", 1),
            ("from_a 1", "etc/other/a.inc", 1),
        ];
        let want: Vec<(String, String, usize)> = want
            .iter()
            .map(|(w, f, l)| ((*w).to_owned(), (*f).to_owned(), *l))
            .collect();
        assert_eq!(found, want);
    }

    #[test]
    fn errors_in_included_files_name_that_file_and_line() {
        let dir = Scratch::new("include-error");
        let main = dir.write("main.conf", "global_defs {\n}\ninclude part.conf\n");
        dir.write("part.conf", "x 1\nvrrp_instance VI_1 {\n  priority 100\n");
        let e = import(&main, &Options::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("part.conf:2: the block of vrrp_instance opened here is never closed"),
            "{e}"
        );
        // Blocks span files: the included '}' closes the instance.
        dir.write("closing.conf", "priority 100\n}\n");
        let main = dir.write(
            "split.conf",
            "vrrp_instance VI_1 {\n  include closing.conf\n}\n",
        );
        let e = import(&main, &Options::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("split.conf:3: this '}' closes no block"),
            "{e}"
        );
        let e = import(
            &dir.write("loop.conf", "include loop.conf\n"),
            &Options::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("loop.conf:1: ") && e.to_string().contains("includes itself"),
            "{e}"
        );
        let e = import(
            &dir.write("missing.conf", "x 1\ninclude nope.conf\n"),
            &Options::default(),
        )
        .unwrap_err();
        assert!(matches!(e, ImportError::Include { line: 2, .. }), "{e}");
        let e = import(&dir.0.join("absent.conf"), &Options::default()).unwrap_err();
        assert!(matches!(e, ImportError::Read { .. }), "{e}");
    }

    #[test]
    fn conditionals_and_parameters() {
        let stmts = parse_text(
            "@lb1 router_id one\n@lb2 router_id two\n@^lb2 a b\n$P=150\n$NAME=VI_${N}\n$N=7\nvrrp_instance $NAME {\n priority $P\n x ${_HASH}y $UNDEFINED\n}\n",
        )
        .unwrap();
        assert_eq!(
            shape(&stmts),
            "router_id one@1;a b@3;vrrp_instance VI_7@7{priority 150@8;x #y $UNDEFINED@9}"
        );
        let e = parse_text("$A=$A x\nuse $A\n").unwrap_err();
        assert!(e.to_string().contains("keeps expanding"), "{e}");
        let e = parse_text("$A= \\\n x\n").unwrap_err();
        assert_eq!(syntax_line(&e), 1);
    }

    #[test]
    fn globbing() {
        assert!(fnmatch("*.conf", "a.conf"));
        assert!(!fnmatch("*.conf", "a.conf.bak"));
        assert!(fnmatch("1?-*.conf", "10-x.conf"));
        assert!(fnmatch("[0-9]*", "5a"));
        assert!(!fnmatch("[!0-9]*", "5a"));
        assert!(fnmatch("[]x]", "]"));
        assert!(fnmatch("a[", "a["));
        assert!(fnmatch("a\\*b", "a*b") && !fnmatch("a\\*b", "axb"));
        assert!(fnmatch("*a*b*", "xxaxxbxx") && !fnmatch("*a*b*", "xxbxxaxx"));
        assert!(fnmatch("*", "") && !fnmatch("?", ""));
        let expand = |s| expand_braces(s, 16).expect("few");
        assert_eq!(expand("a{b,c{d,e}}f"), ["abf", "acdf", "acef"]);
        assert_eq!(expand("{,x}y"), ["y", "xy"]);
        assert_eq!(expand("a{b}c"), ["a{b}c"]);
        assert_eq!(expand_braces("{a,b}{c,d}", 4).map(|v| v.len()), Some(4));
        assert_eq!(expand_braces("{a,b}{c,d}{e,f}", 4), None, "8 > 4");
        // 26 groups would be 67 million patterns: refused after the first 4096.
        let hostile = "{a,b}".repeat(26);
        assert_eq!(expand_braces(&hostile, glob::MAX_EXPANSIONS), None);
    }

    /// `include` with 28 `*` (its input is in the import fuzz corpus)
    /// matched each name by trying every split at every `*`, which never
    /// ended.
    #[test]
    fn many_stars_match_in_time() {
        let started = std::time::Instant::now();
        let stars = "*".repeat(64);
        assert!(!fnmatch(
            &format!("{stars}z"),
            "keepalived.conf.with.a.long.name"
        ));
        assert!(fnmatch(
            &format!("{stars}e"),
            "keepalived.conf.with.a.long.name"
        ));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    mod fnmatch_as_before {
        use proptest::prelude::*;

        use super::super::glob::{bracket, fnmatch};

        /// The recursive matcher the importer had: slow with many `*`,
        /// the reference for what matches.
        fn reference(p: &[char], n: &[char]) -> bool {
            match p.first() {
                None => n.is_empty(),
                Some('*') => (0..=n.len()).any(|i| reference(&p[1..], &n[i..])),
                Some('?') => !n.is_empty() && reference(&p[1..], &n[1..]),
                Some('[') => match (n.first(), bracket(&p[1..], n.first().copied())) {
                    (Some(_), Some((true, used))) => reference(&p[1 + used..], &n[1..]),
                    (_, Some((false, _))) | (None, Some(_)) => false,
                    (_, None) => n.first() == Some(&'[') && reference(&p[1..], &n[1..]),
                },
                Some('\\') if p.len() > 1 => {
                    n.first() == Some(&p[1]) && reference(&p[2..], &n[1..])
                }
                Some(c) => n.first() == Some(c) && reference(&p[1..], &n[1..]),
            }
        }

        proptest! {
            #[test]
            fn matches_what_the_recursive_matcher_matched(
                p in "[ab*?\\[\\]!^\\\\-]{0,10}",
                n in "[ab\\[\\]*?\\\\-]{0,10}",
            ) {
                let (pc, nc): (Vec<char>, Vec<char>) = (p.chars().collect(), n.chars().collect());
                prop_assert_eq!(fnmatch(&p, &n), reference(&pc, &nc), "{:?} on {:?}", p, n);
            }
        }
    }

    #[test]
    fn values() {
        assert_eq!(
            parse_secs("2.71828"),
            Some(Duration::from_micros(2_718_280))
        );
        assert_eq!(parse_secs("0.05"), Some(Duration::from_millis(50)));
        assert_eq!(parse_secs("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_secs("-1"), None);
        assert_eq!(parse_secs("."), None);
        assert_eq!(node_name("lb1.example.com"), "lb1-example-com");
        assert_eq!(node_name("LB_1"), "LB_1");
        assert_eq!(node_name("..."), "vip");
        assert_eq!(node_name(&"x".repeat(40)).len(), 32);
        let a = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(
            with_backend_variable("/bin/c 10.0.0.1 10.0.0.11 x10.0.0.1 10.0.0.1:80", a),
            "/bin/c ${VIP_BACKEND_ADDRESS} 10.0.0.11 x${VIP_BACKEND_ADDRESS} ${VIP_BACKEND_ADDRESS}:80"
        );
    }

    #[test]
    fn advert_intervals_round_like_keepalived() {
        let at = Loc {
            file: 0,
            line: 1,
            seq: 1,
        };
        let mut notes = Vec::new();
        let ms = Duration::from_millis;
        assert_eq!(advert_for(None, 3, &mut notes), Duration::from_secs(1));
        assert_eq!(advert_for(Some((ms(50), at)), 3, &mut notes), ms(50));
        assert!(notes.is_empty());
        assert_eq!(advert_for(Some((ms(15), at)), 3, &mut notes), ms(20));
        assert_eq!(advert_for(Some((ms(1500), at)), 2, &mut notes), ms(2000));
        assert_eq!(advert_for(Some((ms(300), at)), 2, &mut notes), ms(1000));
        assert_eq!(
            advert_for(Some((Duration::from_secs(50), at)), 3, &mut notes),
            ms(40_950)
        );
        assert_eq!(notes.len(), 4);
    }

    const SMALL: &str = r#"global_defs {
    router_id lb1
    notification_email { ops@example.com }
}
vrrp_script chk {
    script "/bin/pidof haproxy"
    interval 2
    weight -60
    fall 3
}
vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 150
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass secret
    }
    unicast_peer {
        10.99.0.3
    }
    virtual_ipaddress {
        10.99.0.100/24 dev eth0 label eth0:1
    }
    track_script {
        chk
    }
    track_interface {
        eth1
    }
}
"#;

    #[test]
    fn an_instance_maps_to_vrrp_and_check() {
        let i = import_text(SMALL, &Options::default()).unwrap();
        let v: toml::Value = toml::from_str(&i.toml).unwrap();
        assert_eq!(v["node"]["name"].as_str(), Some("lb1"));
        assert_eq!(v["node"]["interface"].as_str(), Some("eth0"));
        let c = &v["check"][0];
        assert_eq!(c["name"].as_str(), Some("chk"));
        assert_eq!(c["command"].as_str(), Some("/bin/pidof haproxy"));
        assert_eq!(
            (c["interval"].as_str(), c["timeout"].as_str()),
            (Some("2s"), Some("2s"))
        );
        assert_eq!(
            (c["rise"].as_integer(), c["fall"].as_integer()),
            (Some(1), Some(3))
        );
        let r = &v["vrrp"][0];
        assert_eq!(r["vrid"].as_integer(), Some(51));
        assert_eq!(r["priority"].as_integer(), Some(150));
        assert_eq!(r["version"].as_integer(), Some(2));
        assert_eq!(r["advert_interval"].as_str(), Some("1s"));
        assert_eq!(r["auth_pass"].as_str(), Some("secret"));
        assert_eq!(r["unicast_peers"][0].as_str(), Some("10.99.0.3"));
        assert_eq!(r["vips"][0].as_str(), Some("10.99.0.100"));
        assert_eq!(r["track"][0]["weight"].as_integer(), Some(-60));
        let notes = notes_text(&i);
        for needle in [
            "keepalived.conf:3: notification_email: ignored",
            "keepalived.conf:12: state: note",
            "keepalived.conf:25: virtual_ipaddress: note: vip adds no address",
            "keepalived.conf:25: virtual_ipaddress: ignored: label eth0:1",
            "keepalived.conf:30: track_interface: not supported",
        ] {
            assert!(notes.contains(needle), "{needle:?} in\n{notes}");
        }
        crate::config::Config::parse(&i.toml, Path::new("out.toml")).unwrap();
    }

    #[test]
    fn without_an_interface_the_import_fails_unless_given_one() {
        let text = "vrrp_instance VI_1 {\n  virtual_router_id 5\n  virtual_ipaddress {\n    10.0.0.5\n  }\n}\n";
        let e = import_text(text, &Options::default()).unwrap_err();
        assert!(e.to_string().contains("--iface"), "{e}");
        let opts = Options {
            interface: Some("ens3".to_owned()),
            name: Some("n1".to_owned()),
            config_id: None,
        };
        let i = import_text(text, &opts).unwrap();
        assert!(
            i.toml.contains("interface = \"ens3\"\nname = \"n1\"\n"),
            "{}",
            i.toml
        );
    }

    #[test]
    fn sync_groups_zero_track_weights_like_keepalived() {
        let text = format!(
            "{SMALL}vrrp_instance VI_2 {{\n interface eth0\n virtual_router_id 52\n virtual_ipaddress {{\n 10.99.0.101\n }}\n}}\n\
             vrrp_sync_group G1 {{\n group {{\n VI_1\n VI_2\n }}\n}}\n"
        );
        let i = import_text(&text, &Options::default()).unwrap();
        let v: toml::Value = toml::from_str(&i.toml).unwrap();
        assert_eq!(v["vrrp"][0]["sync_group"].as_str(), Some("G1"));
        assert_eq!(v["vrrp"][1]["sync_group"].as_str(), Some("G1"));
        assert_eq!(v["vrrp"][0]["track"][0]["weight"].as_integer(), Some(0));
        assert!(
            notes_text(&i).contains("keepalived.conf:28: track_script: approximated"),
            "{}",
            notes_text(&i)
        );
    }

    #[test]
    fn corners_are_converted_or_reported() {
        let text = "global_defs {\n  vrrp_version 3\n}\n\
             vrrp_instance VI_1 {\n  state MASTER\n  interface eth0\n  virtual_router_id 9\n  advert_int 0.015\n\
               authentication {\n    auth_type PASS\n    auth_pass 12345678910\n  }\n\
               virtual_ipaddress {\n    10.0.0.100\n    fd00::1/64\n  }\n\
               notify_master /bin/n.sh\n  notify_backup /bin/n.sh\n  notify_fault /bin/n.sh\n}\n\
             virtual_server fwmark 7 {\n}\n\
             virtual_server 10.0.0.100 80 {\n  lb_kind NAT\n\
               real_server 10.0.0.11 8080 {\n    weight 5000\n  }\n\
               real_server 10.0.0.12 80 {\n    weight 2500\n  }\n}\n";
        let i = import_text(text, &Options::default()).unwrap();
        let v: toml::Value = toml::from_str(&i.toml).unwrap();
        let r = &v["vrrp"][0];
        assert_eq!(
            r["priority"].as_integer(),
            Some(255),
            "state MASTER without priority"
        );
        assert_eq!(r["version"].as_integer(), Some(3));
        assert_eq!(r["advert_interval"].as_str(), Some("20ms"));
        assert!(
            r.get("auth_pass").is_none(),
            "no authentication in version 3"
        );
        assert_eq!(r["vips"].as_array().unwrap().len(), 1);
        assert_eq!(r["notify"].as_str(), Some("/bin/n.sh"));
        let weights: Vec<i64> = v["service"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["weight"].as_integer().unwrap())
            .collect();
        assert_eq!(weights, [1000, 500]);
        let notes = notes_text(&i);
        for needle in [
            "keepalived.conf:5: state: note: with state MASTER and no priority",
            "keepalived.conf:8: advert_int: approximated",
            "keepalived.conf:11: auth_pass: approximated",
            "keepalived.conf:11: authentication: ignored: VRRP version 3",
            "keepalived.conf:15: virtual_ipaddress: not supported: fd00::1 is IPv6",
            "keepalived.conf:17: notify_master: approximated: the same script",
            "keepalived.conf:21: virtual_server: not supported: vip balances an address and a port, not a fwmark",
            "keepalived.conf:24: lb_kind: not supported",
            "keepalived.conf:25: real_server: not supported: direct routing cannot change the port",
            "keepalived.conf:25: real_server: approximated: vip weights go to 1000",
            "keepalived.conf:28: real_server: approximated: vip weights go to 1000",
        ] {
            assert!(notes.contains(needle), "{needle:?} in\n{notes}");
        }
    }

    #[test]
    fn misc_checks_that_differ_by_address_share_a_variable() {
        let text = "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 5\n virtual_ipaddress {\n 10.0.0.100\n }\n}\n\
             virtual_server 10.0.0.100 80 {\n lb_kind DR\n delay_loop 3\n\
             real_server 10.0.0.11 80 {\n MISC_CHECK {\n misc_path \"/bin/chk 10.0.0.11 80\"\n misc_timeout 2\n }\n }\n\
             real_server 10.0.0.12 80 {\n MISC_CHECK {\n misc_path \"/bin/chk 10.0.0.12 80\"\n misc_timeout 2\n }\n }\n}\n";
        let dir = Scratch::new("misc");
        let path = dir.write("k.conf", text);
        let mut lexer = Lexer::new("x".to_owned());
        lexer.read(&path, None).unwrap();
        let stmts = build(lexer.toks, &lexer.files).unwrap();
        let mut conv = Converter::new(lexer.files, lexer.notes);
        conv.walk(&stmts);
        let server = conv.servers.pop().unwrap();
        let probe = conv.service_check(&server).unwrap();
        assert_eq!(
            probe.command.as_deref(),
            Some("/bin/chk ${VIP_BACKEND_ADDRESS} 80")
        );
        assert_eq!(
            (probe.kind, probe.timeout, probe.fall),
            ("exec", Duration::from_secs(2), 1)
        );
        assert!(
            conv.notes
                .iter()
                .any(|n| n.message.contains("differ only by their address"))
        );
    }
}
