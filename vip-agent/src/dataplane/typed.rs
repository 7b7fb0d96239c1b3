//! Typed access to the program's maps: VIPs, services and their lookup
//! tables (switched atomically), backends, flows, counters, the heartbeat.

use std::{
    collections::BTreeMap,
    io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::maps::{
    Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues, xdp::DevMapHash,
};
use vip_common::{
    Backend, BackendStats, FlowKey, FlowValue, Heartbeat, LOOKUP_SIZE, LookupHalf, Service,
    ServiceKey, VipState, counter, maps,
};

use super::{DataplaneError, monotonic_ns};

/// Typed handles on the program's maps: owned by a loaded [`Dataplane`], or
/// opened from pins by vipctl and tests ([`Maps::open_pinned`]).
pub struct Maps {
    pub(super) vips: HashMap<MapData, u32, VipState>,
    pub(super) services: HashMap<MapData, ServiceKey, Service>,
    /// Raw: a half is 256 KiB, too big to pass through aya's by-value `get`
    /// on a thread's stack; see `lookup_half_raw`.
    pub(super) lookup: MapData,
    pub(super) backends: Array<MapData, Backend>,
    pub(super) heartbeat: Array<MapData, Heartbeat>,
    pub(super) counters: PerCpuArray<MapData, u64>,
    pub(super) backend_stats: PerCpuArray<MapData, BackendStats>,
    pub(super) tx_ports: DevMapHash<MapData>,
    pub(super) flows: HashMap<MapData, FlowKey, FlowValue>,
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

impl Maps {
    /// Takes every map of `ebpf`, the loaded object, checking each one's type.
    pub(super) fn take(ebpf: &mut aya::Ebpf) -> Result<Self, DataplaneError> {
        Ok(Self {
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
        })
    }

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
            .map_err(map_error(maps::VIPS))
    }

    /// Every VIP in the map.
    pub fn vips(&self) -> Result<BTreeMap<Ipv4Addr, VipState>, DataplaneError> {
        self.vips
            .iter()
            .map(|r| r.map(|(k, v)| (Ipv4Addr::from(k.to_ne_bytes()), v)))
            .collect::<Result<_, _>>()
            .map_err(map_error(maps::VIPS))
    }

    /// Removes a VIP (no-op when absent).
    pub fn remove_vip(&mut self, vip: Ipv4Addr) -> Result<(), DataplaneError> {
        removed(
            self.vips.remove(&u32::from_ne_bytes(vip.octets())),
            maps::VIPS,
        )
    }

    /// Writes backend `id`.
    pub fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<(), DataplaneError> {
        self.backends
            .set(id, backend, 0)
            .map_err(map_error(maps::BACKENDS))
    }

    /// Every backend slot (disabled ones included).
    pub fn backends(&self) -> Result<Vec<Backend>, DataplaneError> {
        self.backends
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_error(maps::BACKENDS))
    }

    /// Every service in the map.
    pub fn services(&self) -> Result<BTreeMap<u32, (ServiceKey, Service)>, DataplaneError> {
        self.services
            .iter()
            .map(|r| r.map(|(k, v)| (v.id, (k, v))))
            .collect::<Result<_, _>>()
            .map_err(map_error(maps::SERVICES))
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
            Err(source) => return Err(map_error(maps::SERVICES)(source)),
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
            .map_err(map_error(maps::SERVICES))?;
        Ok(next)
    }

    /// Removes a service (its flows fall back to `XDP_PASS`).
    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DataplaneError> {
        removed(self.services.remove(key), maps::SERVICES)
    }

    /// The live lookup table of service `id`.
    pub fn live_table(&self, key: &ServiceKey) -> Result<Vec<u32>, DataplaneError> {
        let svc = self
            .services
            .get(key, 0)
            .map_err(map_error(maps::SERVICES))?;
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

    /// A second handle on the heartbeat map that stamps it with
    /// `dead_after`, for the pacer's thread (`crate::pacer`).
    pub fn stamper(&self, dead_after: Duration) -> Result<Stamper, DataplaneError> {
        use aya::maps::IterableMap as _;
        use std::os::fd::AsFd as _;
        let fd = self
            .heartbeat
            .map()
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| DataplaneError::Io {
                what: "cannot duplicate the heartbeat map's descriptor",
                path: PathBuf::from(maps::HEARTBEAT),
                source,
            })?;
        let map = MapData::from_fd(fd)
            .and_then(|m| Array::try_from(Map::Array(m)))
            .map_err(map_error(maps::HEARTBEAT))?;
        Ok(Stamper { map, dead_after })
    }

    /// Stamps the heartbeat with an explicit time (tests use 0 or the past).
    pub fn stamp_at(&mut self, now_ns: u64, dead_after: Duration) -> Result<(), DataplaneError> {
        let hb = Heartbeat {
            stamp_ns: now_ns,
            dead_after_ns: u64::try_from(dead_after.as_nanos()).unwrap_or(u64::MAX),
        };
        self.heartbeat
            .set(0, hb, 0)
            .map_err(map_error(maps::HEARTBEAT))
    }

    /// Counters summed over CPUs, indexed by `vip_common::counter`.
    pub fn counters(&self) -> Result<[u64; counter::COUNT as usize], DataplaneError> {
        let mut out = [0u64; counter::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let values: PerCpuValues<u64> = self
                .counters
                .get(&u32::try_from(i).expect("small"), 0)
                .map_err(map_error(maps::COUNTERS))?;
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
                .map_err(map_error(maps::COUNTERS))?;
        }
        Ok(())
    }

    /// Packets and bytes forwarded to backend `id`, summed over CPUs.
    pub fn backend_stats(&self, id: u32) -> Result<BackendStats, DataplaneError> {
        let values = self
            .backend_stats
            .get(&id, 0)
            .map_err(map_error(maps::BACKEND_STATS))?;
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
            .map_err(map_error(maps::FLOWS))
    }

    /// The heartbeat as last stamped.
    pub fn heartbeat(&self) -> Result<Heartbeat, DataplaneError> {
        self.heartbeat
            .get(&0, 0)
            .map_err(map_error(maps::HEARTBEAT))
    }
}

/// The error of a read or write of map `name`.
fn map_error(name: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

/// The result of removing a key from map `name`: an absent key is removed
/// already.
fn removed(result: Result<(), MapError>, name: &'static str) -> Result<(), DataplaneError> {
    match result {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(source) => Err(map_error(name)(source)),
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
pub(super) fn lookup_raw(
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

/// Stamps the heartbeat from another thread than the maps' owner.
pub struct Stamper {
    map: Array<MapData, Heartbeat>,
    dead_after: Duration,
}

impl crate::pacer::Beat for Stamper {
    fn stamp(&mut self) -> Result<(), String> {
        let hb = Heartbeat {
            stamp_ns: monotonic_ns(),
            dead_after_ns: u64::try_from(self.dead_after.as_nanos()).unwrap_or(u64::MAX),
        };
        self.map.set(0, hb, 0).map_err(|e| crate::error_chain(&e))
    }
}
