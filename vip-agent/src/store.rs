//! The data plane's maps as the agent's core and VRRP write them: a trait,
//! so planning, applying and VRRP's VIP switching run against an in-memory
//! store in unit tests (microseconds, no kernel) and against
//! [`Dataplane`] for real.

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use vip_common::{Backend, Service, ServiceKey, VipState};

use crate::dataplane::{Dataplane, DataplaneError, Maps};

/// What the agent writes and reads back of the maps.
pub trait MapStore {
    fn set_vip(&mut self, vip: Ipv4Addr, state: VipState) -> Result<(), DataplaneError>;
    fn vips(&self) -> Result<BTreeMap<Ipv4Addr, VipState>, DataplaneError>;
    fn remove_vip(&mut self, vip: Ipv4Addr) -> Result<(), DataplaneError>;
    fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<(), DataplaneError>;
    /// Every backend slot, by id.
    fn backends(&self) -> Result<Vec<Backend>, DataplaneError>;
    /// The services by id, with their keys.
    fn services(&self) -> Result<BTreeMap<u32, (ServiceKey, Service)>, DataplaneError>;
    /// Fills the idle half of service `id`'s lookup table with `table`, then
    /// flips to it; returns the half now live.
    fn switch_table(
        &mut self,
        key: ServiceKey,
        id: u32,
        flags: u32,
        table: &[u32],
    ) -> Result<u32, DataplaneError>;
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DataplaneError>;
    /// Makes interface `ifindex` a redirect target.
    fn add_tx_port(&mut self, ifindex: u32) -> Result<(), DataplaneError>;
    /// Stamps the heartbeat: the program serves until `dead_after` from now.
    fn stamp(&mut self, dead_after: Duration) -> Result<(), DataplaneError>;
}

// The map methods are `Maps`' (a `Dataplane` derefs to its `Maps`).
impl MapStore for Dataplane {
    fn set_vip(&mut self, vip: Ipv4Addr, state: VipState) -> Result<(), DataplaneError> {
        Maps::set_vip(self, vip, state)
    }
    fn vips(&self) -> Result<BTreeMap<Ipv4Addr, VipState>, DataplaneError> {
        Maps::vips(self)
    }
    fn remove_vip(&mut self, vip: Ipv4Addr) -> Result<(), DataplaneError> {
        Maps::remove_vip(self, vip)
    }
    fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<(), DataplaneError> {
        Maps::set_backend(self, id, backend)
    }
    fn backends(&self) -> Result<Vec<Backend>, DataplaneError> {
        Maps::backends(self)
    }
    fn services(&self) -> Result<BTreeMap<u32, (ServiceKey, Service)>, DataplaneError> {
        Maps::services(self)
    }
    fn switch_table(
        &mut self,
        key: ServiceKey,
        id: u32,
        flags: u32,
        table: &[u32],
    ) -> Result<u32, DataplaneError> {
        Maps::switch_table(self, key, id, flags, table)
    }
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DataplaneError> {
        Maps::remove_service(self, key)
    }
    fn add_tx_port(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        Maps::add_tx_port(self, ifindex)
    }
    fn stamp(&mut self, dead_after: Duration) -> Result<(), DataplaneError> {
        Maps::stamp(self, dead_after)
    }
}

/// An in-memory [`MapStore`] for unit tests: the maps as plain collections,
/// and a log of every write in order.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemoryStore {
    pub vips: BTreeMap<Ipv4Addr, VipState>,
    pub backends: Vec<Backend>,
    /// By id: key, flags and the live table.
    pub services: BTreeMap<u32, (ServiceKey, u32, Vec<u32>)>,
    pub tx_ports: std::collections::BTreeSet<u32>,
    pub stamps: u32,
    /// `"backend 3"`, `"switch 0"`, `"vip 10.0.0.1"`, `"remove service 1"`...
    pub log: Vec<String>,
}

#[cfg(test)]
impl MemoryStore {
    #[must_use]
    pub fn new() -> Self {
        Self {
            backends: vec![Backend::default(); vip_common::MAX_BACKENDS as usize],
            ..Self::default()
        }
    }
}

#[cfg(test)]
impl MapStore for MemoryStore {
    fn set_vip(&mut self, vip: Ipv4Addr, state: VipState) -> Result<(), DataplaneError> {
        self.log.push(format!("vip {vip} {}", state.active));
        self.vips.insert(vip, state);
        Ok(())
    }
    fn vips(&self) -> Result<BTreeMap<Ipv4Addr, VipState>, DataplaneError> {
        Ok(self.vips.clone())
    }
    fn remove_vip(&mut self, vip: Ipv4Addr) -> Result<(), DataplaneError> {
        self.log.push(format!("remove vip {vip}"));
        self.vips.remove(&vip);
        Ok(())
    }
    fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<(), DataplaneError> {
        self.log.push(format!("backend {id}"));
        self.backends[id as usize] = *backend;
        Ok(())
    }
    fn backends(&self) -> Result<Vec<Backend>, DataplaneError> {
        Ok(self.backends.clone())
    }
    fn services(&self) -> Result<BTreeMap<u32, (ServiceKey, Service)>, DataplaneError> {
        Ok(self
            .services
            .iter()
            .map(|(id, (key, flags, _))| {
                let svc = Service {
                    id: *id,
                    flags: *flags,
                    ..Service::default()
                };
                (*id, (*key, svc))
            })
            .collect())
    }
    fn switch_table(
        &mut self,
        key: ServiceKey,
        id: u32,
        flags: u32,
        table: &[u32],
    ) -> Result<u32, DataplaneError> {
        self.log.push(format!("switch {id}"));
        self.services.insert(id, (key, flags, table.to_vec()));
        Ok(0)
    }
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DataplaneError> {
        let id = self
            .services
            .iter()
            .find(|(_, (k, ..))| k == key)
            .map(|(id, _)| *id);
        if let Some(id) = id {
            self.log.push(format!("remove service {id}"));
            self.services.remove(&id);
        }
        Ok(())
    }
    fn add_tx_port(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        self.tx_ports.insert(ifindex);
        Ok(())
    }
    fn stamp(&mut self, _dead_after: Duration) -> Result<(), DataplaneError> {
        self.stamps += 1;
        Ok(())
    }
}
