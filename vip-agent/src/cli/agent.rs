//! `vip-agent`'s command line, and its logging set-up.

use std::{io::IsTerminal as _, path::PathBuf};

use clap::{Parser, ValueEnum};
use tracing_subscriber::{
    EnvFilter, Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

#[derive(Parser)]
#[command(
    name = "vip-agent",
    version,
    about = "vip: XDP load balancer and failover agent",
    long_about = "vip: XDP load balancer and failover agent.\n\n\
        Runs one vip node: VRRP (v3, and v2 for keepalived peers), health \
        checks, and the XDP program that answers ARP for the VIPs and \
        forwards their services to healthy backends (direct server return). \
        The configuration is described in vip.toml(5); vipctl(8) inspects \
        and steers a running node.\n\n\
        Signals: SIGHUP re-reads the configuration (an invalid one is \
        refused and the old one keeps running); SIGTERM and SIGINT shut \
        down gracefully (VRRP priority 0, XDP detached, pins removed). \
        Exit status: 0 success, 1 runtime failure, 2 usage or configuration \
        error (with the key and line).\n\n\
        Environment: VIP_LOG sets the log filter (tracing's EnvFilter \
        syntax, default \"info\"); NO_COLOR turns colour off even on a \
        terminal."
)]
pub struct Args {
    /// The TOML configuration (see vip.toml(5)).
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// Validate the configuration and exit (0 valid, 2 invalid).
    #[arg(long)]
    pub check: bool,
    /// Override `[node] interface`.
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,
    // The help as an attribute: a doc comment would need `NO_COLOR` in
    // backticks, which --help would show.
    #[arg(
        long,
        value_enum,
        default_value_t = LogFormat::Text,
        help = "Log format: text (coloured only on a terminal without NO_COLOR), json \
                (one object per line), or journald (native journal fields, under systemd)"
    )]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
    Journald,
}

/// The prefix of the journal field of each event field: `instance` is sent
/// as `VIP_INSTANCE`, so `journalctl VIP_INSTANCE=VI_1` selects it, and no
/// field can pass for one of journald's own (`MESSAGE`, `PRIORITY`, ...).
pub const JOURNAL_FIELD_PREFIX: &str = "VIP";

/// Installs the global subscriber: `VIP_LOG` filters (default `info`),
/// events go to stderr or, for [`LogFormat::Journald`], to the journal.
///
/// # Errors
/// When the journal's socket cannot be reached, saying so and what to do.
pub fn init_logging(format: LogFormat) -> Result<(), String> {
    let filter = EnvFilter::try_from_env("VIP_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,netlink_packet_route=error"));
    let layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(colour(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Journald => tracing_journald::layer()
            .map_err(|e| {
                format!(
                    "--log-format journald: cannot reach the journal's socket \
                     (/run/systemd/journal/socket): {e}; is systemd-journald running? \
                     Use --log-format text to log to stderr"
                )
            })?
            .with_field_prefix(Some(JOURNAL_FIELD_PREFIX.into()))
            .with_syslog_identifier("vip-agent".into())
            // journald's own reading of the levels: info is 6, not the
            // crate's default of 5 (notice), so `journalctl -p info` and
            // `-p notice` mean what they say.
            .with_priority_mappings(tracing_journald::PriorityMappings {
                info: tracing_journald::Priority::Informational,
                debug: tracing_journald::Priority::Debug,
                ..tracing_journald::PriorityMappings::new()
            })
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .init();
    Ok(())
}

/// Whether text logs carry ANSI colour: only on a terminal, and never when
/// `NO_COLOR` is set to anything but the empty string (no-color.org).
#[must_use]
pub fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
        assert!(!colour(false, Some(OsStr::new("1"))));
    }
}
