//! The vip agent as a library: every protocol and decision is a sans-IO core
//! (`config`, `maglev`, the planning half of `agent`) wrapped by a thin async
//! shell; the `vip-agent` and `vipctl` binaries are small front ends over it.

#![allow(
    clippy::result_large_err,
    reason = "aya's error types are large; errors are rare and never on a per-packet path"
)]

pub mod agent;
pub mod bpffs;
pub mod caps;
pub mod check;
pub mod cli;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod docs;
pub mod health;
pub mod import;
pub mod maglev;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod pacer;
pub mod scripts;
pub mod store;
pub mod vrrp;

/// An error and its causes on one line: `what: because: because`.
#[must_use]
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        if !s.ends_with(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s
}
