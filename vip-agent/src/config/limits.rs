//! The limits and defaults that validation applies.

use std::time::Duration;

/// The pin root unless `[node] bpffs` names another.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";

/// Longest interface name the kernel accepts (`IFNAMSIZ` - 1).
pub(super) const MAX_IFNAME: usize = 15;
/// Longest node name: it becomes a directory and a socket file name.
pub(super) const MAX_NODE_NAME: usize = 32;
/// Flow-table entries unless `[node] flow_table_size` says otherwise: the
/// size the data plane had before the key existed.
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = vip_common::MAX_FLOWS;
/// `[node] flow_table_size` bounds. Below 1024 the kernel's LRU, which
/// hands out free entries to each CPU in batches, evicts long before the
/// table is full; above 2^24 (about 1.6 GB of preallocated entries) it is a
/// typo.
pub const MIN_FLOW_TABLE_SIZE: u32 = 1024;
pub const MAX_FLOW_TABLE_SIZE: u32 = 1 << 24;
/// Backend weights are relative; a cap keeps the Maglev table balanced.
pub const MAX_WEIGHT: u32 = 1000;
/// keepalived's `auth_type PASS` carries at most 8 bytes.
pub const MAX_AUTH_PASS: usize = 8;
/// More gratuitous ARPs than this per transition is a misconfiguration.
pub const MAX_GARP_COUNT: u32 = 100;
/// Check defaults: a probe a second, two results in a row to change state.
pub(super) const CHECK_INTERVAL: Duration = Duration::from_secs(1);
pub(super) const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
pub(super) const CHECK_RISE: u32 = 2;
pub(super) const CHECK_FALL: u32 = 2;

/// A data-plane limit as a count.
pub(super) fn limit(max: u32) -> usize {
    usize::try_from(max).unwrap_or(usize::MAX)
}
