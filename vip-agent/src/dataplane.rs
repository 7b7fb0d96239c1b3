//! The data plane: loads the XDP program, pins its maps and link under
//! `<bpffs>/vip/<node>`, attaches it, and is the only writer of its maps.
//!
//! Lookup tables are switched atomically: the idle half of a service's table
//! is written first, then the service's value (which names the live half) is
//! replaced in one map update, so a packet sees either the old table or the
//! new one, never a mix.

use std::{
    collections::BTreeMap,
    io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{
        Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues,
        xdp::{DevMapHash, XdpMapError},
    },
    pin::PinError,
    programs::{
        ProgramError, Xdp,
        links::{FdLink, LinkError, PinnedLink},
        xdp::{XdpLink, XdpMode},
    },
};
use vip_common::{
    Backend, BackendStats, FlowKey, FlowValue, Heartbeat, LOOKUP_SIZE, LookupHalf, Service,
    ServiceKey, VipState, counter, maps, programs,
};

/// The XDP object built by `build.rs` from `vip-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vip"));

/// Refuses pins whose layout differs from this build's (an agent of another
/// version left them): reusing them would mis-read every entry.
fn check_pins(dir: &Path) -> Result<(), DataplaneError> {
    for spec in maps::SPECS {
        let (key, value, entries) = (spec.key_size, spec.value_size, spec.max_entries);
        let path = dir.join(spec.name);
        if !path.exists() {
            continue;
        }
        let Ok(info) = aya::maps::MapInfo::from_pin(&path) else {
            continue;
        };
        let found = (info.key_size(), info.value_size(), info.max_entries());
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
    #[error("failed to load the XDP object (maps pinned under {pins})")]
    Load {
        pins: String,
        #[source]
        source: EbpfError,
    },
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

/// Typed handles on the program's maps: owned by a loaded [`Dataplane`], or
/// opened from pins by vipctl and tests ([`Maps::open_pinned`]).
pub struct Maps {
    vips: HashMap<MapData, u32, VipState>,
    services: HashMap<MapData, ServiceKey, Service>,
    /// Raw: a half is 256 KiB, too big to pass through aya's by-value `get`
    /// on a thread's stack; see `lookup_half_raw`.
    lookup: MapData,
    backends: Array<MapData, Backend>,
    heartbeat: Array<MapData, Heartbeat>,
    counters: PerCpuArray<MapData, u64>,
    backend_stats: PerCpuArray<MapData, BackendStats>,
    tx_ports: DevMapHash<MapData>,
    flows: HashMap<MapData, FlowKey, FlowValue>,
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

macro_rules! take_map {
    ($ebpf:expr, $name:expr) => {{
        let map = $ebpf
            .take_map($name)
            .ok_or(DataplaneError::MissingMap($name))?;
        map.try_into().map_err(|source| DataplaneError::MapType {
            name: $name,
            source,
        })?
    }};
}

impl Dataplane {
    /// Loads the object and both programs. With `pins`, every map is pinned
    /// there, and maps already pinned there (left by an agent that crashed or
    /// is being upgraded) are reused with their contents: flows, tables and
    /// counters survive a restart. Without `pins` nothing is pinned (tests).
    pub fn load(pins: Option<&Path>) -> Result<Self, DataplaneError> {
        let mut loader = EbpfLoader::new();
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
            check_pins(dir)?;
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
        for name in [programs::VIP_XDP, programs::PASS] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or(DataplaneError::MissingProgram(name))?
                .try_into()
                .map_err(|source| DataplaneError::Verify { name, source })?;
            prog.load()
                .map_err(|source| DataplaneError::Verify { name, source })?;
        }
        let maps = Maps {
            vips: take_map!(ebpf, maps::VIPS),
            services: take_map!(ebpf, maps::SERVICES),
            lookup: lookup_map(
                ebpf.take_map(maps::LOOKUP)
                    .ok_or(DataplaneError::MissingMap(maps::LOOKUP))?,
            )?,
            backends: take_map!(ebpf, maps::BACKENDS),
            heartbeat: take_map!(ebpf, maps::HEARTBEAT),
            counters: take_map!(ebpf, maps::COUNTERS),
            backend_stats: take_map!(ebpf, maps::BACKEND_STATS),
            tx_ports: take_map!(ebpf, maps::TX_PORTS),
            flows: take_map!(ebpf, maps::FLOWS),
        };
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

impl Maps {
    /// Opens the maps a node pinned under `dir` (`<bpffs>/vip/<node>`).
    pub fn open_pinned(dir: &Path) -> Result<Self, DataplaneError> {
        fn open<T: TryFrom<Map, Error = MapError>>(
            dir: &Path,
            name: &'static str,
        ) -> Result<T, DataplaneError> {
            let path = dir.join(name);
            let data = MapData::from_pin(&path).map_err(|source| DataplaneError::Open {
                path: path.clone(),
                source,
            })?;
            let map = Map::from_map_data(data)
                .map_err(|source| DataplaneError::MapType { name, source })?;
            T::try_from(map).map_err(|source| DataplaneError::MapType { name, source })
        }
        Ok(Self {
            vips: open(dir, maps::VIPS)?,
            services: open(dir, maps::SERVICES)?,
            lookup: lookup_map(
                Map::from_map_data(MapData::from_pin(dir.join(maps::LOOKUP)).map_err(
                    |source| DataplaneError::Open {
                        path: dir.join(maps::LOOKUP),
                        source,
                    },
                )?)
                .map_err(|source| DataplaneError::MapType {
                    name: maps::LOOKUP,
                    source,
                })?,
            )?,
            backends: open(dir, maps::BACKENDS)?,
            heartbeat: open(dir, maps::HEARTBEAT)?,
            counters: open(dir, maps::COUNTERS)?,
            backend_stats: open(dir, maps::BACKEND_STATS)?,
            tx_ports: open(dir, maps::TX_PORTS)?,
            flows: open(dir, maps::FLOWS)?,
        })
    }

    /// Sets (or adds) a VIP's state.
    pub fn set_vip(&mut self, vip: Ipv4Addr, state: VipState) -> Result<(), DataplaneError> {
        self.vips
            .insert(u32::from_ne_bytes(vip.octets()), state, 0)
            .map_err(|source| DataplaneError::Map {
                name: maps::VIPS,
                source,
            })
    }

    /// Every VIP in the map.
    pub fn vips(&self) -> Result<BTreeMap<Ipv4Addr, VipState>, DataplaneError> {
        self.vips
            .iter()
            .map(|r| r.map(|(k, v)| (Ipv4Addr::from(k.to_ne_bytes()), v)))
            .collect::<Result<_, _>>()
            .map_err(|source| DataplaneError::Map {
                name: maps::VIPS,
                source,
            })
    }

    /// Removes a VIP (no-op when absent).
    pub fn remove_vip(&mut self, vip: Ipv4Addr) -> Result<(), DataplaneError> {
        match self.vips.remove(&u32::from_ne_bytes(vip.octets())) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(DataplaneError::Map {
                name: maps::VIPS,
                source,
            }),
        }
    }

    /// Writes backend `id`.
    pub fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<(), DataplaneError> {
        self.backends
            .set(id, backend, 0)
            .map_err(|source| DataplaneError::Map {
                name: maps::BACKENDS,
                source,
            })
    }

    /// Every backend slot (disabled ones included).
    pub fn backends(&self) -> Result<Vec<Backend>, DataplaneError> {
        self.backends
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|source| DataplaneError::Map {
                name: maps::BACKENDS,
                source,
            })
    }

    /// Every service in the map.
    pub fn services(&self) -> Result<BTreeMap<u32, (ServiceKey, Service)>, DataplaneError> {
        self.services
            .iter()
            .map(|r| r.map(|(k, v)| (v.id, (k, v))))
            .collect::<Result<_, _>>()
            .map_err(|source| DataplaneError::Map {
                name: maps::SERVICES,
                source,
            })
    }

    /// Installs `table` as the service's lookup table: writes the half that
    /// is not live, then flips the service to it in one map update. Returns
    /// the half that is now live.
    pub fn switch_table(
        &mut self,
        key: ServiceKey,
        id: u32,
        flags: u32,
        table: &[u32],
    ) -> Result<u32, DataplaneError> {
        assert_eq!(table.len(), LOOKUP_SIZE as usize, "table size");
        let current = match self.services.get(&key, 0) {
            Ok(s) if s.id == id => Some(s.live_half),
            Ok(_) | Err(MapError::KeyNotFound) => None,
            Err(source) => {
                return Err(DataplaneError::Map {
                    name: maps::SERVICES,
                    source,
                });
            }
        };
        let next = current.map_or(0, |h| (h + 1) & 1);
        let mut half: Box<LookupHalf> = bytemuck::zeroed_box();
        half.slots.copy_from_slice(table);
        lookup_raw(&self.lookup, BPF_MAP_UPDATE_ELEM, id * 2 + next, &mut half)?;
        let value = Service {
            id,
            live_half: next,
            table_size: LOOKUP_SIZE,
            flags,
        };
        self.services
            .insert(key, value, 0)
            .map_err(|source| DataplaneError::Map {
                name: maps::SERVICES,
                source,
            })?;
        Ok(next)
    }

    /// Removes a service (its flows fall back to `XDP_PASS`).
    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DataplaneError> {
        match self.services.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(DataplaneError::Map {
                name: maps::SERVICES,
                source,
            }),
        }
    }

    /// The live lookup table of service `id`.
    pub fn live_table(&self, key: &ServiceKey) -> Result<Vec<u32>, DataplaneError> {
        let svc = self
            .services
            .get(key, 0)
            .map_err(|source| DataplaneError::Map {
                name: maps::SERVICES,
                source,
            })?;
        let mut half: Box<LookupHalf> = bytemuck::zeroed_box();
        lookup_raw(
            &self.lookup,
            BPF_MAP_LOOKUP_ELEM,
            svc.id * 2 + svc.live_half,
            &mut half,
        )?;
        Ok(half.slots[..svc.table_size as usize].to_vec())
    }

    /// Adds an interface that backends behind another link are reached through.
    pub fn add_tx_port(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        self.tx_ports
            .insert(ifindex, ifindex, None, 0)
            .map_err(|source| DataplaneError::DevMap {
                name: maps::TX_PORTS,
                source,
            })
    }

    /// Stamps the heartbeat: XDP keeps acting for `dead_after` from now.
    pub fn stamp(&mut self, dead_after: Duration) -> Result<(), DataplaneError> {
        self.stamp_at(monotonic_ns(), dead_after)
    }

    /// Stamps the heartbeat with an explicit time (tests use 0 or the past).
    pub fn stamp_at(&mut self, now_ns: u64, dead_after: Duration) -> Result<(), DataplaneError> {
        let hb = Heartbeat {
            stamp_ns: now_ns,
            dead_after_ns: u64::try_from(dead_after.as_nanos()).unwrap_or(u64::MAX),
        };
        self.heartbeat
            .set(0, hb, 0)
            .map_err(|source| DataplaneError::Map {
                name: maps::HEARTBEAT,
                source,
            })
    }

    /// Counters summed over CPUs, indexed by `vip_common::counter`.
    pub fn counters(&self) -> Result<[u64; counter::COUNT as usize], DataplaneError> {
        let mut out = [0u64; counter::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let values: PerCpuValues<u64> = self
                .counters
                .get(&u32::try_from(i).expect("small"), 0)
                .map_err(|source| DataplaneError::Map {
                    name: maps::COUNTERS,
                    source,
                })?;
            *slot = values.iter().sum();
        }
        Ok(out)
    }

    /// Zeroes every counter (tests).
    pub fn reset_counters(&mut self) -> Result<(), DataplaneError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, source)| DataplaneError::Io {
            what: "cannot count CPUs",
            path: PathBuf::from("/sys/devices/system/cpu/possible"),
            source,
        })?;
        for i in 0..counter::COUNT {
            let zero =
                PerCpuValues::try_from(vec![0u64; cpus]).map_err(|source| DataplaneError::Map {
                    name: maps::COUNTERS,
                    source: MapError::SyscallError(aya::sys::SyscallError {
                        call: "per-cpu values",
                        io_error: source,
                    }),
                })?;
            self.counters
                .set(i, zero, 0)
                .map_err(|source| DataplaneError::Map {
                    name: maps::COUNTERS,
                    source,
                })?;
        }
        Ok(())
    }

    /// Packets and bytes forwarded to backend `id`, summed over CPUs.
    pub fn backend_stats(&self, id: u32) -> Result<BackendStats, DataplaneError> {
        let values = self
            .backend_stats
            .get(&id, 0)
            .map_err(|source| DataplaneError::Map {
                name: maps::BACKEND_STATS,
                source,
            })?;
        Ok(values
            .iter()
            .fold(BackendStats::default(), |acc, s| BackendStats {
                packets: acc.packets + s.packets,
                bytes: acc.bytes + s.bytes,
            }))
    }

    /// Every flow in the flow table.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, DataplaneError> {
        self.flows
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|source| DataplaneError::Map {
                name: maps::FLOWS,
                source,
            })
    }

    /// The heartbeat as last stamped.
    pub fn heartbeat(&self) -> Result<Heartbeat, DataplaneError> {
        self.heartbeat
            .get(&0, 0)
            .map_err(|source| DataplaneError::Map {
                name: maps::HEARTBEAT,
                source,
            })
    }
}

/// Checks that `map` is the lookup array with values of a [`LookupHalf`].
fn lookup_map(map: Map) -> Result<MapData, DataplaneError> {
    let Map::Array(data) = map else {
        return Err(DataplaneError::MapType {
            name: maps::LOOKUP,
            source: MapError::InvalidMapType { map_type: 0 },
        });
    };
    let info = data.info().map_err(|source| DataplaneError::MapType {
        name: maps::LOOKUP,
        source,
    })?;
    let want = u32::try_from(std::mem::size_of::<LookupHalf>()).expect("fits");
    if info.value_size() != want {
        return Err(DataplaneError::MapType {
            name: maps::LOOKUP,
            source: MapError::InvalidValueSize {
                size: info.value_size() as usize,
                expected: want as usize,
            },
        });
    }
    Ok(data)
}

/// `BPF_MAP_LOOKUP_ELEM` / `BPF_MAP_UPDATE_ELEM` on the lookup array with the
/// value in a heap buffer.
fn lookup_raw(
    map: &MapData,
    cmd: u32,
    index: u32,
    value: &mut LookupHalf,
) -> Result<(), DataplaneError> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    /// The `map_elem` member of `union bpf_attr`.
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let attr = ElemAttr {
        map_fd: u32::try_from(map.fd().as_fd().as_raw_fd()).expect("fds are non-negative"),
        _pad: 0,
        key: (&raw const index) as u64,
        value: std::ptr::from_mut(value) as u64,
        flags: 0,
    };
    // SAFETY: attr points at a live key and a value buffer of the map's value size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &raw const attr,
            std::mem::size_of::<ElemAttr>(),
        )
    };
    if rc < 0 {
        return Err(DataplaneError::Map {
            name: maps::LOOKUP,
            source: MapError::SyscallError(aya::sys::SyscallError {
                call: if cmd == BPF_MAP_LOOKUP_ELEM {
                    "bpf_map_lookup_elem"
                } else {
                    "bpf_map_update_elem"
                },
                io_error: io::Error::last_os_error(),
            }),
        });
    }
    Ok(())
}

/// `enum bpf_cmd` values from `linux/bpf.h`.
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;

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
