//! Raw mirrors of the public types, filled by serde: unknown keys are
//! refused, and the values later checks look at keep their spans.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::{
    check::CheckKind,
    config::{Addr, Dur, Int, Ip, OnBackendDown, Proto, V3Checksum, XdpMode},
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) node: RawNode,
    #[serde(default)]
    pub(super) vrrp: Vec<Spanned<RawVrrp>>,
    #[serde(default)]
    pub(super) check: Vec<Spanned<RawCheck>>,
    #[serde(default)]
    pub(super) service: Vec<Spanned<RawService>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub(super) interface: Spanned<String>,
    pub(super) name: Spanned<String>,
    pub(super) bpffs: Option<Spanned<PathBuf>>,
    pub(super) control_socket: Option<Spanned<PathBuf>>,
    pub(super) metrics: Option<Addr>,
    pub(super) xdp_mode: Option<XdpMode>,
    pub(super) dead_time: Option<Spanned<Dur>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVrrp {
    pub(super) name: Spanned<String>,
    pub(super) vrid: Spanned<Int>,
    pub(super) priority: Option<Spanned<Int>>,
    pub(super) version: Option<Spanned<Int>>,
    pub(super) advert_interval: Option<Spanned<Dur>>,
    pub(super) preempt: Option<bool>,
    pub(super) preempt_delay: Option<Dur>,
    #[serde(default)]
    pub(super) unicast_peers: Vec<Spanned<Ip>>,
    pub(super) auth_pass: Option<Spanned<String>>,
    pub(super) vips: Spanned<Vec<Spanned<Ip>>>,
    pub(super) virtual_mac: Option<bool>,
    pub(super) garp: Option<RawGarp>,
    #[serde(default)]
    pub(super) track: Vec<Spanned<RawTrack>>,
    pub(super) notify: Option<Spanned<PathBuf>>,
    pub(super) track_services: Option<RawTrackServices>,
    pub(super) sync_group: Option<Spanned<String>>,
    pub(super) v3_checksum: Option<Spanned<V3Checksum>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGarp {
    pub(super) count: Option<Spanned<Int>>,
    pub(super) interval: Option<Dur>,
    pub(super) refresh: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrackServices {
    pub(super) weight: Option<Spanned<Int>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrack {
    pub(super) check: Spanned<String>,
    pub(super) weight: Option<Spanned<Int>>,
}

/// A `[[check]]` table or a service's `check`: what to probe, how, and when.
/// One struct for both, since serde's `deny_unknown_fields` does not work
/// with `flatten`: `name` and `address` are `[[check]]` keys, which
/// validation requires there and refuses in a service check. `port` is the
/// target's in either. Every other key is the probe's or its schedule's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    pub(super) name: Option<Spanned<String>>,
    pub(super) kind: Spanned<CheckKind>,
    pub(super) command: Option<Spanned<String>>,
    pub(super) interval: Option<Spanned<Dur>>,
    pub(super) timeout: Option<Spanned<Dur>>,
    pub(super) rise: Option<Spanned<Int>>,
    pub(super) fall: Option<Spanned<Int>>,
    pub(super) address: Option<Spanned<Ip>>,
    pub(super) port: Option<Spanned<Int>>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) expect_status: Option<Spanned<Int>>,
    pub(super) expect_body: Option<Spanned<String>>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) password: Option<Spanned<String>>,
    pub(super) vhost: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) vip: Spanned<Ip>,
    pub(super) port: Spanned<Int>,
    pub(super) protocol: Option<Proto>,
    pub(super) check: Option<RawCheck>,
    pub(super) on_backend_down: Option<Spanned<OnBackendDown>>,
    pub(super) backends: Option<Vec<Spanned<RawBackend>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub(super) address: Spanned<Ip>,
    pub(super) weight: Option<Spanned<Int>>,
}
