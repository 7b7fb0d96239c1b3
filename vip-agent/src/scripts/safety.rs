//! `[node] script_security` (keepalived's `enable_script_security`): a
//! script the agent runs must not be changeable by anyone but root and the
//! agent's own user. The script file and every directory above it must be
//! owned by one of them, writable by no group but root's and by no one
//! else, except that a sticky directory (`/tmp`) may be world-writable
//! above an existing file that one of them owns: there no one else may
//! replace it.

use std::{
    io,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

const GROUP_WRITE: u32 = 0o020;
const OTHER_WRITE: u32 = 0o002;
const STICKY: u32 = 0o1000;

/// The program a command line starts first: its first word that is not a
/// variable assignment, looked up in `$PATH` when it names no directory.
/// `None` for a shell builtin or a word not found.
#[must_use]
pub fn program_of(command: &str) -> Option<PathBuf> {
    let word = command
        .split(|c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|' | '(' | ')'))
        .filter(|w| !w.is_empty())
        .find(|w| !is_assignment(w))?;
    let word = word.trim_matches(|c| c == '"' || c == '\'');
    if word.contains('/') {
        return Some(PathBuf::from(word));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(word))
        .find(|p| p.is_file())
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// Whether `script` may be run by an agent whose user is `trusted`; the
/// error says what is wrong and what to do.
pub fn check(script: &Path, trusted: u32) -> Result<(), String> {
    unsafe_part(script, trusted)
        .map_err(|e| format!("cannot check {}: {e}", script.display()))?
        .map_or(Ok(()), |why| {
            Err(format!(
                "{} is not safe to run: {why}; only root and the agent's user (uid {trusted}) may be able to \
                 change a script or a directory above it: fix the owner or mode, or set [node] script_security = false",
                script.display()
            ))
        })
}

/// The first file or directory on the way to `script` that someone else
/// could change, with why.
fn unsafe_part(script: &Path, trusted: u32) -> io::Result<Option<String>> {
    let script = std::path::absolute(script)?;
    // The file itself, when it exists, resolved; its directories either way.
    let (mut child_trusted, mut dir) = match std::fs::canonicalize(&script) {
        Ok(real) => {
            let m = std::fs::metadata(&real)?;
            if let Some(why) = writable_by_others(&real, &m, trusted, false) {
                return Ok(Some(why));
            }
            (true, real.parent().map(Path::to_owned))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            (false, script.parent().map(Path::to_owned))
        }
        Err(e) => return Err(e),
    };
    while let Some(d) = dir {
        let Ok(real) = std::fs::canonicalize(&d) else {
            // Not there (yet): whoever may create it is judged above.
            child_trusted = false;
            dir = d.parent().map(Path::to_owned);
            continue;
        };
        let m = std::fs::metadata(&real)?;
        if let Some(why) = writable_by_others(&real, &m, trusted, child_trusted) {
            return Ok(Some(why));
        }
        child_trusted = true;
        dir = real.parent().map(Path::to_owned);
    }
    Ok(None)
}

fn writable_by_others(
    path: &Path,
    m: &std::fs::Metadata,
    trusted: u32,
    child_trusted: bool,
) -> Option<String> {
    let mode = m.permissions().mode();
    let what = if m.is_dir() { "directory" } else { "file" };
    let shown = path.display();
    if m.uid() != 0 && m.uid() != trusted {
        return Some(format!("{what} {shown} is owned by uid {}", m.uid()));
    }
    if mode & GROUP_WRITE != 0 && m.gid() != 0 {
        return Some(format!(
            "{what} {shown} is writable by its group (gid {})",
            m.gid()
        ));
    }
    let sticky_dir = m.is_dir() && mode & STICKY != 0;
    if mode & OTHER_WRITE != 0 && !(sticky_dir && child_trusted) {
        return Some(format!("{what} {shown} is writable by everyone"));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// A fresh root-owned directory (mode 0755) under /tmp, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(test: &str) -> Self {
            let d = std::env::temp_dir().join(format!("vip-safety-{}-{test}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
            Self(d)
        }

        fn script(&self, name: &str, mode: u32) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn me() -> u32 {
        nix::unistd::Uid::effective().as_raw()
    }

    #[test]
    fn the_program_of_a_command_line() {
        assert_eq!(
            program_of("/usr/local/bin/check --x"),
            Some("/usr/local/bin/check".into())
        );
        assert_eq!(
            program_of("A=1 B=2 '/opt/c d' x"),
            Some("/opt/c".into()),
            "first word, quotes trimmed"
        );
        let sh = program_of("sh -c true").expect("sh is on $PATH");
        assert!(sh.ends_with("sh") && sh.is_absolute(), "{}", sh.display());
        assert_eq!(program_of("exit 0"), None, "a builtin");
        assert_eq!(program_of("  "), None);
    }

    #[test]
    fn a_script_only_its_owner_may_write_is_safe() {
        let d = Dir::new("ok");
        let s = d.script("ok.sh", 0o755);
        check(&s, me()).unwrap();
        // In a sticky world-writable directory above an existing file.
        let tmp = std::env::temp_dir();
        if std::fs::metadata(&tmp).unwrap().permissions().mode() & 0o1777 == 0o1777 {
            check(&s, me()).unwrap();
        }
    }

    #[test]
    fn a_script_others_may_write_is_refused_with_why() {
        let d = Dir::new("bad");
        let s = d.script("world.sh", 0o757);
        let e = check(&s, me()).unwrap_err();
        assert!(e.contains("world.sh is writable by everyone"), "{e}");
        assert!(e.contains("script_security = false"), "{e}");

        if me() != 0 {
            return; // chown below needs root
        }
        let s = d.script("group.sh", 0o775);
        nix::unistd::chown(&s, None, Some(nix::unistd::Gid::from_raw(65534))).unwrap();
        let e = check(&s, me()).unwrap_err();
        assert!(e.contains("writable by its group (gid 65534)"), "{e}");

        let s = d.script("owned.sh", 0o755);
        nix::unistd::chown(&s, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let e = check(&s, me()).unwrap_err();
        assert!(e.contains("owned.sh is owned by uid 65534"), "{e}");
        if me() == 0 {
            check(&s, 65534).expect("the agent's own user may own it");
        }

        // A directory above it that anyone may write.
        let open = d.0.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let s = open.join("x.sh");
        std::fs::write(&s, "").unwrap();
        let e = check(&s, me()).unwrap_err();
        assert!(
            e.contains("directory") && e.contains("open is writable by everyone"),
            "{e}"
        );

        // A script not there yet in a sticky directory: anyone could create it.
        let sticky = d.0.join("sticky");
        std::fs::create_dir(&sticky).unwrap();
        std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let missing = sticky.join("later.sh");
        let e = check(&missing, me()).unwrap_err();
        assert!(e.contains("sticky is writable by everyone"), "{e}");
        std::fs::write(&missing, "").unwrap();
        check(&missing, me()).unwrap();
    }
}
