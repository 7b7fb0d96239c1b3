//! The data plane: loads the XDP program, pins its maps and link under
//! `<bpffs>/vip/<node>`, attaches it, and is the only writer of its maps.
//!
//! Lookup tables are switched atomically: the idle half of a service's table
//! is written first, then the service's value (which names the live half) is
//! replaced in one map update, so a packet sees either the old table or the
//! new one, never a mix.

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{MapError, xdp::XdpMapError},
    pin::PinError,
    programs::{
        ProgramError, Xdp,
        links::{FdLink, LinkError, PinnedLink},
        xdp::{XdpLink, XdpMode},
    },
};
use vip_common::{maps, programs};

mod typed;

pub use self::typed::Maps;

/// The XDP object built by `build.rs` from `vip-ebpf`; empty in a build made
/// with `AYA_BUILD_SKIP=1` (the fuzz targets'), which cannot load XDP.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vip"));

/// The map table with the flow table sized `flow_table_size`.
fn specs(flow_table_size: u32) -> [maps::Spec; maps::SPECS.len()] {
    maps::SPECS.map(|s| {
        if s.name == maps::FLOWS {
            maps::Spec {
                max_entries: flow_table_size,
                ..s
            }
        } else {
            s
        }
    })
}

/// Refuses pins whose layout differs from this build's (an agent of another
/// version left them): reusing them would mis-read every entry; and a
/// pinned flow table of another size than `[node] flow_table_size`.
fn check_pins(dir: &Path, flow_table_size: u32) -> Result<(), DataplaneError> {
    for spec in specs(flow_table_size) {
        let (key, value, entries) = (spec.key_size, spec.value_size, spec.max_entries);
        let path = dir.join(spec.name);
        if !path.exists() {
            continue;
        }
        let Ok(info) = aya::maps::MapInfo::from_pin(&path) else {
            continue;
        };
        let found = (info.key_size(), info.value_size(), info.max_entries());
        if spec.name == maps::FLOWS
            && (found.0, Some(found.1)) == (key, value)
            && found.2 != entries
        {
            return Err(DataplaneError::FlowTableSize {
                path,
                dir: dir.to_owned(),
                found: found.2,
                want: entries,
            });
        }
        if found.0 != key || value.is_some_and(|v| v != found.1) || found.2 != entries {
            let show = |k: u32, v: Option<u32>, e: u32| {
                format!(
                    "{k}-byte keys, {} values and {e} entries",
                    v.map_or_else(|| "any".to_owned(), |v| format!("{v}-byte"))
                )
            };
            return Err(DataplaneError::IncompatiblePin {
                path,
                dir: dir.to_owned(),
                found: show(found.0, Some(found.1), found.2),
                want: show(key, value, entries),
            });
        }
    }
    Ok(())
}

/// Name of the pinned XDP link inside a node's pin directory.
pub const LINK_PIN: &str = "link";

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(
        "the map pinned at {path} has {found} but this build needs {want}: the pins are from another version of vip; stop that agent with SIGTERM (it removes its pins) or delete {dir}, then start again"
    )]
    IncompatiblePin {
        path: PathBuf,
        dir: PathBuf,
        found: String,
        want: String,
    },
    #[error(
        "the flow table pinned at {path} has {found} entries but [node] flow_table_size is {want}: a new size applies to a fresh data plane; stop the agent with SIGTERM (it removes its pins; open flows are placed anew by the lookup table) or delete {dir}, then start again"
    )]
    FlowTableSize {
        path: PathBuf,
        dir: PathBuf,
        found: u32,
        want: u32,
    },
    #[error("failed to load the XDP object (maps pinned under {pins})")]
    Load {
        pins: String,
        #[source]
        source: EbpfError,
    },
    #[error(
        "this build has no XDP program: it was built with AYA_BUILD_SKIP=1 (as the fuzz targets are); build again without it"
    )]
    NoObject,
    #[error("the XDP object has no program `{0}` (build mismatch)")]
    MissingProgram(&'static str),
    #[error("the XDP object has no map `{0}` (build mismatch)")]
    MissingMap(&'static str),
    #[error("map `{name}` has an unexpected type or layout")]
    MapType {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error(
        "the kernel rejected the XDP program `{name}` (verifier or missing CAP_BPF/CAP_NET_ADMIN)"
    )]
    Verify {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("failed to attach XDP to {iface} in {mode} mode")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("failed to pin {what} at {path}")]
    Pin {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: PinError,
    },
    #[error("failed to adopt the pinned XDP link at {path}")]
    Adopt {
        path: PathBuf,
        #[source]
        source: LinkError,
    },
    #[error("failed to update map `{name}`")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("failed to update map `{name}`")]
    DevMap {
        name: &'static str,
        #[source]
        source: XdpMapError,
    },
    #[error(
        "cannot open the pinned map {path} (is the agent running with this bpffs and node name?)"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: MapError,
    },
    #[error("{path}: {what}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Where the agent asked XDP to run, and where it ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode.
    Native,
    /// Generic (skb) mode: works on any device, slower.
    Generic,
    /// A link pinned by a previous agent, switched to this program; it keeps
    /// the mode it was made in.
    Adopted,
}

impl AttachMode {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
            Self::Adopted => "adopted (mode unchanged)",
        }
    }
}

/// The pin directory of one node: `<bpffs>/vip/<node>`.
#[must_use]
pub fn pin_dir(bpffs: &Path, node: &str) -> PathBuf {
    bpffs.join("vip").join(node)
}

/// Reads `CLOCK_MONOTONIC`, the clock `bpf_ktime_get_ns` reads.
#[must_use]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    #[expect(clippy::cast_sign_loss, reason = "monotonic time is never negative")]
    let ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    ns
}

/// The loaded program and its maps (reachable through `Deref` to [`Maps`]).
pub struct Dataplane {
    ebpf: Ebpf,
    pins: Option<PathBuf>,
    maps: Maps,
}

impl std::ops::Deref for Dataplane {
    type Target = Maps;
    fn deref(&self) -> &Maps {
        &self.maps
    }
}

impl std::ops::DerefMut for Dataplane {
    fn deref_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }
}

impl Dataplane {
    /// Loads the object and its programs (`vip_common::programs::ALL`). With `pins`, every map is pinned
    /// there, and maps already pinned there (left by an agent that crashed or
    /// is being upgraded) are reused with their contents: flows, tables and
    /// counters survive a restart. Without `pins` nothing is pinned (tests).
    /// The flow table gets `flow_table_size` entries (`[node]
    /// flow_table_size`; the object declares `vip_common::MAX_FLOWS`).
    pub fn load(pins: Option<&Path>, flow_table_size: u32) -> Result<Self, DataplaneError> {
        if EBPF_OBJECT.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(maps::FLOWS, flow_table_size);
        let paths: Vec<(&str, PathBuf)> = pins
            .map(|dir| maps::ALL.iter().map(|m| (*m, dir.join(m))).collect())
            .unwrap_or_default();
        if let Some(dir) = pins {
            std::fs::create_dir_all(dir).map_err(|source| DataplaneError::Io {
                what: "cannot create the pin directory",
                path: dir.to_owned(),
                source,
            })?;
        }
        if let Some(dir) = pins {
            check_pins(dir, flow_table_size)?;
        }
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .map_err(|source| DataplaneError::Load {
                pins: pins.map_or_else(|| "nowhere".into(), |p| p.display().to_string()),
                source,
            })?;
        for name in programs::ALL {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or(DataplaneError::MissingProgram(name))?
                .try_into()
                .map_err(|source| DataplaneError::Verify { name, source })?;
            prog.load()
                .map_err(|source| DataplaneError::Verify { name, source })?;
        }
        let maps = Maps::take(&mut ebpf)?;
        Ok(Self {
            ebpf,
            pins: pins.map(Path::to_owned),
            maps,
        })
    }

    /// The load balancer program (for `BPF_PROG_TEST_RUN`).
    pub fn program(&mut self) -> &mut Xdp {
        self.xdp(programs::VIP_XDP)
    }

    /// The trivial `XDP_PASS` program (benchmark baseline).
    pub fn pass_program(&mut self) -> &mut Xdp {
        self.xdp(programs::PASS)
    }

    /// The minimal forwarder (benchmark baseline: backend 0's MACs, `XDP_TX`).
    pub fn min_fwd_program(&mut self) -> &mut Xdp {
        self.xdp(programs::MIN_FWD)
    }

    /// A program that drops every frame (the benchmarks' receiving end).
    pub fn drop_program(&mut self) -> &mut Xdp {
        self.xdp(programs::DROP)
    }

    fn xdp(&mut self, name: &'static str) -> &mut Xdp {
        self.ebpf
            .program_mut(name)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .expect("program verified in load()")
    }

    /// Attaches the load balancer to `iface`. A link pinned by a previous
    /// agent is switched to this program atomically (no packet sees no
    /// program); otherwise a new link is made, in native mode when `native`
    /// allows it, else in generic mode. With pins, the link is pinned so XDP
    /// stays attached if the agent dies.
    pub fn attach(
        &mut self,
        iface: &str,
        prefer: crate::config::XdpMode,
    ) -> Result<AttachMode, DataplaneError> {
        use crate::config::XdpMode as Want;
        let link_pin = self.pins.as_ref().map(|p| p.join(LINK_PIN));
        if let Some(path) = link_pin.as_ref().filter(|p| p.exists()) {
            let pinned = PinnedLink::from_pin(path).map_err(|source| DataplaneError::Adopt {
                path: path.clone(),
                source,
            })?;
            let fd_link = pinned.unpin().map_err(|source| DataplaneError::Io {
                what: "cannot unpin the previous XDP link",
                path: path.clone(),
                source,
            })?;
            let link = XdpLink::try_from(fd_link).map_err(|source| DataplaneError::Adopt {
                path: path.clone(),
                source,
            })?;
            let prog = self.program();
            let id = prog
                .attach_to_link(link)
                .map_err(|source| DataplaneError::Attach {
                    iface: iface.to_owned(),
                    mode: "adopted",
                    source,
                })?;
            self.pin_link(id, path)?;
            return Ok(AttachMode::Adopted);
        }
        let attempts: &[(XdpMode, AttachMode)] = match prefer {
            Want::Auto => &[
                (XdpMode::Driver, AttachMode::Native),
                (XdpMode::Skb, AttachMode::Generic),
            ],
            Want::Native => &[(XdpMode::Driver, AttachMode::Native)],
            Want::Generic => &[(XdpMode::Skb, AttachMode::Generic)],
        };
        let mut last = None;
        for &(flags, mode) in attempts {
            match self.program().attach(iface, flags) {
                Ok(id) => {
                    if let Some(path) = &link_pin {
                        self.pin_link(id, path)?;
                    } else {
                        // Keep the link owned by the program: detached on drop.
                        let _ = id;
                    }
                    if mode == AttachMode::Generic && prefer == Want::Auto {
                        tracing::warn!(
                            iface,
                            "native XDP is not available on {iface}; attached in generic (skb) mode, which is slower"
                        );
                    }
                    return Ok(mode);
                }
                Err(source) => {
                    last = Some(DataplaneError::Attach {
                        iface: iface.to_owned(),
                        mode: mode.as_str(),
                        source,
                    });
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn pin_link(
        &mut self,
        id: aya::programs::xdp::XdpLinkId,
        path: &Path,
    ) -> Result<(), DataplaneError> {
        let link = self
            .program()
            .take_link(id)
            .map_err(|source| DataplaneError::Attach {
                iface: String::new(),
                mode: "pin",
                source,
            })?;
        let fd_link = FdLink::try_from(link).map_err(|source| DataplaneError::Adopt {
            path: path.to_owned(),
            source,
        })?;
        fd_link.pin(path).map_err(|source| DataplaneError::Pin {
            what: "the XDP link",
            path: path.to_owned(),
            source,
        })?;
        Ok(())
    }

    /// Clean shutdown: detaches XDP and removes every pin, so nothing of this
    /// node is left in the kernel.
    pub fn detach_and_unpin(self) -> Result<(), DataplaneError> {
        let Some(dir) = self.pins.clone() else {
            return Ok(());
        };
        let link = dir.join(LINK_PIN);
        if link.exists() {
            let pinned = PinnedLink::from_pin(&link).map_err(|source| DataplaneError::Adopt {
                path: link.clone(),
                source,
            })?;
            // Dropping the unpinned FdLink closes the last reference: detach.
            drop(pinned.unpin().map_err(|source| DataplaneError::Io {
                what: "cannot unpin the XDP link",
                path: link.clone(),
                source,
            })?);
        }
        for name in maps::ALL {
            let path = dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(DataplaneError::Io {
                        what: "cannot unpin map",
                        path,
                        source,
                    });
                }
            }
        }
        let _ = std::fs::remove_dir(&dir);
        drop(self);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The XDP object declares exactly the maps of `vip_common::maps::SPECS`,
    /// each with the spec's key size, value size and entries (the object's
    /// own `.rodata`/`.bss` sections and aya-log's ring aside).
    #[test]
    fn the_object_declares_the_map_table() {
        let obj = aya_obj::Object::parse(EBPF_OBJECT).expect("parse the XDP object");
        let mut declared: Vec<&str> = obj
            .maps
            .keys()
            .map(String::as_str)
            .filter(|n| !n.starts_with('.') && !n.starts_with("AYA_LOG"))
            .collect();
        declared.sort_unstable();
        let mut table = maps::ALL.to_vec();
        table.sort_unstable();
        assert_eq!(declared, table);
        for spec in maps::SPECS {
            let m = &obj.maps[spec.name];
            assert_eq!(
                (
                    m.key_size(),
                    spec.value_size.map(|_| m.value_size()),
                    m.max_entries()
                ),
                (spec.key_size, spec.value_size, spec.max_entries),
                "{}",
                spec.name
            );
        }
    }
}
