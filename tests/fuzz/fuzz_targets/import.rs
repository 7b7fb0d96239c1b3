//! The keepalived importer (`vip_agent::import::import`) on a keepalived.conf
//! and the files it includes, written to a scratch directory per run
//! (`$VIP_FUZZ_TMP`, an absolute path, else one under the system's temp
//! dir).
//!
//! Input: the text of `keepalived.conf`; a line `#@file NAME` (a comment to
//! keepalived) starts another file, `NAME` relative to the directory
//! (letters, digits, `._-`, `/` between parts; at most 8 files), which the
//! main one can `include`. Inputs whose includes could leave the directory
//! (an absolute pattern, or `..`) are skipped: the importer must only read
//! what the run wrote. The node interface is given as `eth0` unless the
//! text says `interface` itself.
//!
//! Asserts: the importer never panics; what it emits passes the agent's
//! own parser (what `vip-agent --check` runs); every note and error names a
//! file of the scratch directory, and a line when it has one is 1 or more.

#![no_main]

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use libfuzzer_sys::fuzz_target;
use vip_agent::{
    config::Config,
    import::{ImportError, Options, import},
};

/// keepalived's include keywords (`import::lex::INCLUDES`).
const INCLUDES: [&str; 6] = [
    "include", "includer", "includem", "includew", "includeb", "includea",
];
const MAX_FILES: usize = 8;

/// `$VIP_FUZZ_TMP` (xtask puts it on a tmpfs when there is one: file
/// creation on a disk file system costs more than the import), else a
/// directory of this process under the temp dir.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::var_os("VIP_FUZZ_TMP").map_or_else(
            || std::env::temp_dir().join(format!("vip-fuzz-import-{}", std::process::id())),
            PathBuf::from,
        )
    })
}

/// The files of an input: `keepalived.conf` first.
fn files(text: &str) -> Option<Vec<(String, String)>> {
    let mut files = vec![("keepalived.conf".to_owned(), String::new())];
    for line in text.split_inclusive('\n') {
        if let Some(name) = line.strip_prefix("#@file ") {
            let name = name.trim_end();
            let ok = name.split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            });
            if !ok || files.len() == MAX_FILES || files.iter().any(|(n, _)| n == name) {
                return None;
            }
            files.push((name.to_owned(), String::new()));
        } else {
            files
                .last_mut()
                .expect("one file at least")
                .1
                .push_str(line);
        }
    }
    Some(files)
}

/// Whether an include line of `text` could name a file outside the
/// directory: an absolute pattern (keepalived's reader trims whitespace and
/// quotes around it), or `..` anywhere in it.
fn escapes(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim_start();
        let word = line.split(char::is_whitespace).next().unwrap_or_default();
        if !INCLUDES.contains(&word) {
            return false;
        }
        let rest = &line[word.len()..];
        rest.contains("..")
            || rest
                .char_indices()
                .any(|(i, c)| c == '/' && rest[..i].chars().all(|c| c.is_whitespace() || c == '"'))
    })
}

fn in_scratch(path: &Path) -> bool {
    path.starts_with(scratch())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(files) = files(text) else {
        return;
    };
    if files.iter().any(|(_, t)| escapes(t)) {
        return;
    }
    let dir = scratch();
    let _ = std::fs::remove_dir_all(dir);
    for (name, text) in &files {
        let path = dir.join(name);
        // A name may be another one's directory (`a`, `a/b`), in either
        // order: such an input is skipped.
        let parent = path.parent().expect("in the directory");
        if std::fs::create_dir_all(parent).is_err() || std::fs::write(&path, text).is_err() {
            return;
        }
    }
    let opts = Options {
        interface: (!text.contains("interface")).then(|| "eth0".to_owned()),
        name: Some("lb1".to_owned()),
        config_id: Some("lb1".to_owned()),
    };
    match import(&dir.join("keepalived.conf"), &opts) {
        Ok(imported) => {
            if let Err(e) = Config::parse(&imported.toml, Path::new("imported.toml")) {
                panic!(
                    "the import does not load: {e}\n--- the TOML:\n{}",
                    imported.toml
                );
            }
            for note in &imported.notes {
                assert!(in_scratch(&note.file), "a note on another file: {note}");
                assert_ne!(note.line, Some(0), "{note}");
                assert!(!note.message.is_empty(), "{note}");
            }
        }
        Err(e) => {
            let (file, line) = match &e {
                ImportError::Read { path, .. } => (path, None),
                ImportError::Include { file, line, .. }
                | ImportError::Syntax { file, line, .. } => (file, Some(*line)),
                ImportError::Incomplete { file, .. } | ImportError::Invalid { file, .. } => {
                    (file, None)
                }
            };
            assert!(in_scratch(file), "an error on another file: {e}");
            assert_ne!(line, Some(0), "{e}");
            assert_eq!(e.exit_code(), 2);
            assert!(!e.to_string().is_empty());
        }
    }
});
