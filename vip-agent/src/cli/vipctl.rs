//! `vipctl`'s command line: the definitions the binary parses and the man
//! page and completions are generated from.

use std::{net::Ipv4Addr, path::PathBuf};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "vipctl",
    version,
    about = "Inspect a running vip node",
    long_about = "Inspect and steer a running vip node.\n\n\
        backends, flows, table, stats and vips read the maps the node pinned \
        under <bpffs>/vip/<node>, so they work even when the agent is dead or \
        hung; status, drain, undrain and reload ask the agent through its \
        control socket and say so when it is not running. Every read takes \
        --json. import-keepalived needs no running node.\n\n\
        Exit status: 0 success, 1 runtime failure (such as no agent \
        running), 2 usage or configuration error."
)]
pub struct Args {
    /// Node name (the directory under <bpffs>/vip); optional when only one node is pinned.
    #[arg(long, global = true)]
    pub node: Option<String>,
    /// The pin root the agent uses (`[node] bpffs`).
    #[arg(long, global = true, default_value = "/sys/fs/bpf")]
    pub bpffs: PathBuf,
    /// The agent's control socket (`[node] control_socket`; default
    /// /run/vip/<node>.sock).
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub verb: Verb,
}

#[derive(Subcommand)]
pub enum Verb {
    /// Backends: address, MAC, flags, packets and bytes forwarded.
    Backends,
    /// Flow-table entries: client 5-tuple and the backend it is pinned to.
    Flows,
    /// Lookup-table share per backend of one service (VIP:PORT[/tcp|udp]).
    Table { service: String },
    /// Packet counters by verdict; with --watch, rates redrawn every second.
    Stats {
        /// Redraw packets/s and bytes/s per verdict and per backend.
        #[arg(long)]
        watch: bool,
        /// With --watch: stop after this many redraws.
        #[arg(long)]
        count: Option<u64>,
    },
    /// VIPs: whether this node holds each one now, and the MAC it answers with.
    Vips,
    /// The agent's state: VRRP instances (role, priority, since), checks,
    /// services and backends (health, drain, table), counters.
    Status,
    /// Stop sending new connections to a backend (every service); its
    /// connections stay. Lasts until undrain or an agent restart.
    Drain { address: Ipv4Addr },
    /// Undo drain.
    Undrain { address: Ipv4Addr },
    /// Make the agent re-read its configuration (like SIGHUP); exit 2 with
    /// the key and line if the new one is invalid (the old one keeps running).
    Reload,
    /// Print the vip TOML equivalent to a keepalived.conf (following its
    /// includes); what has no exact equivalent is listed on stderr as
    /// `FILE:LINE: keyword: what to do`. `--node` names the node instead of
    /// `router_id`.
    ImportKeepalived {
        /// The keepalived configuration.
        file: PathBuf,
        /// `[node] interface` when no `vrrp_instance` names one, or instead of theirs.
        #[arg(long)]
        iface: Option<String>,
        /// keepalived's config id (`keepalived -i ID`) for `@ID` lines;
        /// default the host name up to its first dot.
        #[arg(long)]
        config_id: Option<String>,
    },
}
