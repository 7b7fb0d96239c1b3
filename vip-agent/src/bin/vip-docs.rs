//! `vip-docs DIR`: writes the man pages (`DIR/man`) and shell completions
//! (`DIR/completions`) that `cargo xtask deb` packages. Not installed.

use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: vip-docs DIR");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    match vip_agent::docs::write_all(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vip-docs: cannot write {}: {e}", dir.display());
            ExitCode::from(1)
        }
    }
}
