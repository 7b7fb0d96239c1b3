//! The man pages and shell completions, generated from what the programs
//! themselves use: vip-agent(8) and vipctl(8) from the clap definitions
//! (`cli`), vip.toml(5) from the configuration reference
//! (`config::reference`), which a test holds to the parser. `vip-docs DIR`
//! writes them for the package (`cargo xtask deb`).

use std::{
    io,
    path::{Path, PathBuf},
};

use clap::CommandFactory as _;
use clap_complete::Shell;
use roff::{Roff, bold, italic, roman};

use crate::config::reference::{EXAMPLE, GENERAL, TABLES};

/// The programs, as the package installs them, with their man section.
const PROGRAMS: [(&str, &str); 2] = [("vip-agent", "8"), ("vipctl", "8")];

fn command(program: &str) -> clap::Command {
    match program {
        "vip-agent" => crate::cli::agent::Args::command(),
        "vipctl" => crate::cli::vipctl::Args::command(),
        _ => unreachable!("not one of PROGRAMS: {program}"),
    }
}

/// A page: its file name (`vipctl.8`) and its roff source.
pub struct Page {
    pub file: String,
    pub roff: String,
}

/// Every man page: vip-agent(8), vipctl(8), vip.toml(5).
#[must_use]
pub fn man_pages() -> Vec<Page> {
    let mut pages: Vec<Page> = PROGRAMS
        .iter()
        .map(|&(program, section)| Page {
            file: format!("{program}.{section}"),
            roff: program_page(&command(program), section),
        })
        .collect();
    pages.push(Page {
        file: "vip.toml.5".into(),
        roff: vip_toml(),
    });
    pages
}

/// A program's page: `clap_mangen`'s sections, with each subcommand's
/// arguments spelled out (`clap_mangen` lists only the subcommands' names),
/// and SEE ALSO.
fn program_page(cmd: &clap::Command, section: &str) -> String {
    let man = clap_mangen::Man::new(cmd.clone())
        .section(section)
        .manual("vip")
        .source(format!("vip {}", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    let write = |out: &mut Vec<u8>| -> io::Result<()> {
        man.render_title(out)?;
        man.render_name_section(out)?;
        man.render_synopsis_section(out)?;
        man.render_description_section(out)?;
        man.render_options_section(out)?;
        if cmd.has_subcommands() {
            out.extend(commands_section(cmd).render().as_bytes());
        }
        out.extend(see_also(cmd.get_name()).render().as_bytes());
        man.render_version_section(out)
    };
    write(&mut out).expect("writing to a Vec cannot fail");
    String::from_utf8(out).expect("clap_mangen writes UTF-8")
}

/// COMMANDS: each subcommand's usage, text and options.
fn commands_section(cmd: &clap::Command) -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["COMMANDS"]);
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let mut usage = vec![bold(sub.get_name())];
        for arg in sub.get_arguments().filter(|a| !a.is_global_set()) {
            usage.push(roman(" "));
            usage.push(if arg.is_positional() {
                italic(arg.get_id().as_str().to_uppercase())
            } else {
                let long = arg.get_long().expect("options have a long name");
                bold(format!("[--{long}]"))
            });
        }
        r.control("TP", []).text(usage);
        let about = sub
            .get_long_about()
            .or_else(|| sub.get_about())
            .map(ToString::to_string)
            .unwrap_or_default();
        r.text([roman(about)]);
        for arg in sub.get_arguments().filter(|a| !a.is_global_set()) {
            let Some(help) = arg.get_help() else { continue };
            let name = arg.get_long().map_or_else(
                || arg.get_id().as_str().to_uppercase(),
                |l| format!("--{l}"),
            );
            r.control("RS", [])
                .control("TP", [])
                .text([bold(name)])
                .text([roman(help.to_string())])
                .control("RE", []);
        }
    }
    r
}

fn see_also(program: &str) -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["SEE ALSO"]);
    let mut refs: Vec<(&str, &str)> = PROGRAMS.to_vec();
    refs.push(("vip.toml", "5"));
    let mut line = Vec::new();
    for (name, section) in refs.into_iter().filter(|(n, _)| *n != program) {
        if !line.is_empty() {
            line.push(roman(", "));
        }
        line.push(bold(name));
        line.push(roman(format!("({section})")));
    }
    line.push(roman(", "));
    line.push(bold("keepalived.conf"));
    line.push(roman("(5)"));
    r.text(line);
    r
}

/// vip.toml(5): every table and key of the configuration, with its type
/// and default, then the shipped example.
#[must_use]
pub fn vip_toml() -> String {
    let mut r = Roff::new();
    let version = format!("vip {}", env!("CARGO_PKG_VERSION"));
    r.control("TH", ["vip.toml", "5", "", version.as_str(), "vip"]);
    r.control("SH", ["NAME"])
        .text([roman("vip.toml - configuration of the vip agent")]);
    r.control("SH", ["SYNOPSIS"])
        .text([bold("/etc/vip/vip.toml")]);
    r.control("SH", ["DESCRIPTION"]).text([roman(GENERAL)]);
    for table in TABLES {
        let title = if table.path.is_empty() {
            "TOP LEVEL".to_owned()
        } else {
            table.header.to_owned()
        };
        r.control("SH", [title.as_str()]);
        if !table.path.is_empty() && table.path.contains('.') {
            r.text([
                roman(format!("In {}: ", parent_header(table.path))),
                roman(table.doc),
            ]);
        } else {
            r.text([roman(table.doc)]);
        }
        for key in table.keys {
            r.control("TP", [])
                .text([bold(key.name), roman(" ("), italic(key.value), roman(")")])
                .text([roman(key.doc)]);
        }
    }
    r.control("SH", ["EXAMPLE"]);
    r.text([roman("The file installed as /etc/vip/vip.toml:")]);
    r.control("PP", []).control("nf", []).control("RS", ["4"]);
    for line in EXAMPLE.lines() {
        r.text([roman(line)]);
    }
    r.control("RE", []).control("fi", []);
    r.control("SH", ["FILES"])
        .control("TP", [])
        .text([bold("/etc/vip/vip.toml")])
        .text([roman("The configuration the packaged service runs with.")])
        .control("TP", [])
        .text([bold("/usr/share/doc/vip/keepalived/")])
        .text([roman(
            "keepalived.conf samples; vipctl import-keepalived FILE prints the vip.toml \
             equivalent of one.",
        )]);
    r.extend([see_also("vip.toml")]);
    r.render()
}

/// `[[vrrp]]` for `vrrp.garp`.
fn parent_header(path: &str) -> &'static str {
    let parent = path.rsplit_once('.').map_or("", |(p, _)| p);
    TABLES
        .iter()
        .find(|t| t.path == parent)
        .map_or("", |t| t.header)
}

/// The completion files and where the package puts them.
#[must_use]
pub fn completions() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for (program, _) in PROGRAMS {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut command(program), program, &mut out);
            let path = match shell {
                Shell::Bash => format!("bash-completion/completions/{program}"),
                Shell::Zsh => format!("zsh/vendor-completions/_{program}"),
                _ => format!("fish/vendor_completions.d/{program}.fish"),
            };
            files.push((PathBuf::from(path), out));
        }
    }
    files
}

/// Writes `man/<page>.gz` (compressed, as Debian policy wants them, with
/// no timestamp in the header) and `completions/<shell path>` under `dir`.
pub fn write_all(dir: &Path) -> io::Result<()> {
    let write = |path: PathBuf, bytes: &[u8]| -> io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes)
    };
    for page in man_pages() {
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::best());
        io::Write::write_all(&mut gz, page.roff.as_bytes())?;
        write(
            dir.join("man").join(format!("{}.gz", page.file)),
            &gz.finish()?,
        )?;
    }
    for (path, bytes) in completions() {
        write(dir.join("completions").join(path), &bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{completions, man_pages};
    use crate::config::reference::TABLES;

    fn page(file: &str) -> String {
        man_pages()
            .into_iter()
            .find(|p| p.file == file)
            .unwrap_or_else(|| panic!("no page {file}"))
            .roff
    }

    #[test]
    fn vip_toml_5_gives_every_key_under_its_table() {
        let page = page("vip.toml.5");
        for table in TABLES {
            let title = if table.path.is_empty() {
                "TOP LEVEL"
            } else {
                table.header
            };
            let at = page
                .find(&format!(".SH \"{title}\""))
                .or_else(|| page.find(&format!(".SH {title}\n")))
                .unwrap_or_else(|| panic!("no section for {}", table.path));
            let section = &page[at..];
            let end = section[4..].find("\n.SH ").map_or(section.len(), |e| e + 4);
            let section = &section[..end];
            for key in table.keys {
                assert!(
                    section.contains(&format!("\\fB{}\\fR", key.name.replace('-', "\\-"))),
                    "{}.{} is not in its section of vip.toml(5)",
                    table.path,
                    key.name
                );
            }
        }
        assert!(
            page.contains("advert_interval = \"10ms\""),
            "the example is missing"
        );
    }

    #[test]
    fn vipctl_8_spells_out_every_verb_and_its_options() {
        let page = page("vipctl.8");
        for verb in [
            "status",
            "backends",
            "flows",
            "table",
            "stats",
            "vips",
            "drain",
            "undrain",
            "reload",
            "import\\-keepalived",
        ] {
            assert!(
                page.contains(&format!(".TP\n\\fB{verb}\\fR")),
                "verb {verb}"
            );
        }
        for option in [
            "\\fB[\\-\\-watch]\\fR",
            "\\-\\-config\\-id",
            "\\-\\-json",
            "\\-\\-node",
        ] {
            assert!(page.contains(option), "option {option}");
        }
    }

    #[test]
    fn vip_agent_8_has_its_options_and_log_formats() {
        let page = page("vip-agent.8");
        for needle in [
            "\\-\\-config",
            "\\-\\-check",
            "\\-\\-iface",
            "journald",
            "SIGHUP",
            "vip.toml",
        ] {
            assert!(page.contains(needle), "{needle}");
        }
    }

    #[test]
    fn completions_for_each_program_and_shell_name_its_verbs() {
        let files = completions();
        assert_eq!(files.len(), 6);
        for (path, bytes) in &files {
            let text = String::from_utf8_lossy(bytes);
            let name = path.to_string_lossy();
            if name.contains("vipctl") {
                assert!(text.contains("import-keepalived"), "{name}");
            } else {
                assert!(text.contains("log-format"), "{name}");
            }
        }
    }
}
