//! Writing a [`Plan`] into the maps through [`MapStore`], in the order that
//! keeps every packet's lookup valid and the service map within its size:
//! the services that go, then backends, then table switches, then VIPs,
//! then the other removals.

use std::{collections::BTreeSet, time::Instant};

use vip_common::Backend;

use super::plan::Plan;
use crate::{dataplane::DataplaneError, store::MapStore};

/// What [`apply`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Lookup tables rebuilt and switched.
    pub switched: u64,
    /// How long the last one took (build, fill, flip).
    pub last_us: u64,
}

/// Writes `plan` into the maps, replacing `old` (the plan last applied).
/// The services that go first (so that a plan replacing every service fits
/// the map), then backends, then each table switch, then the other
/// removals, so no packet ever meets a table slot naming a backend that is
/// not written yet.
pub fn apply(
    dp: &mut impl MapStore,
    old: Option<&Plan>,
    plan: &Plan,
) -> Result<Applied, DataplaneError> {
    let mut applied = Applied::default();
    // Services that go, first: the map holds MAX_SERVICES, and a plan that
    // replaces them would otherwise need room for both sets at once.
    remove_services(dp, plan)?;
    for svc in &plan.services {
        for b in svc.backends.iter().filter(|b| b.resolved.is_some()) {
            dp.set_backend(b.id, &svc.map_backend(b))?;
            let r = b.resolved.expect("filtered");
            if !r.local {
                dp.add_tx_port(r.ifindex)?;
            }
        }
    }
    for svc in &plan.services {
        let unchanged = old
            .and_then(|o| o.services.iter().find(|s| s.id == svc.id))
            .is_some_and(|o| o == svc);
        if !unchanged {
            let t0 = Instant::now();
            dp.switch_table(svc.key(), svc.id, svc.flags, &svc.table())?;
            applied.switched += 1;
            applied.last_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
            tracing::info!(
                service = %format!("{}:{}", svc.vip, svc.port),
                backends = svc.backends.iter().filter(|b| b.in_table()).count(),
                took_us = applied.last_us,
                "lookup table switched"
            );
        }
    }
    for (vip, state) in &plan.vips {
        dp.set_vip(*vip, *state)?;
    }
    prune(dp, plan)?;
    Ok(applied)
}

/// Removes from the maps whatever `plan` does not hold: services, backends
/// (flags cleared, so the program stops following flows to them) and VIPs.
/// Works from the maps themselves, so it also cleans up after a previous
/// agent whose pins were adopted.
fn prune(dp: &mut impl MapStore, plan: &Plan) -> Result<(), DataplaneError> {
    remove_services(dp, plan)?;
    let live: BTreeSet<u32> = plan
        .services
        .iter()
        .flat_map(|s| &s.backends)
        .filter(|b| b.resolved.is_some())
        .map(|b| b.id)
        .collect();
    for (i, b) in dp.backends()?.iter().enumerate() {
        let id = u32::try_from(i).expect("MAX_BACKENDS fits u32");
        if b.flags != 0 && !live.contains(&id) {
            dp.set_backend(id, &Backend::default())?;
        }
    }
    for vip in dp.vips()?.into_keys() {
        if !plan.vips.contains_key(&vip) {
            dp.remove_vip(vip)?;
        }
    }
    Ok(())
}

/// Removes the services `plan` does not hold (their packets go to the
/// stack from then on).
fn remove_services(dp: &mut impl MapStore, plan: &Plan) -> Result<(), DataplaneError> {
    for (key, _) in dp.services()?.into_values() {
        if !plan.services.iter().any(|s| s.key() == key) {
            dp.remove_service(&key)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use vip_common::{BACKEND_DRAINING, BACKEND_ENABLED};

    use super::*;
    use crate::{
        agent::plan::{
            Steering,
            tests::{VIP, plan_of, three_backends},
        },
        store::MemoryStore,
    };

    #[test]
    fn backends_are_written_before_the_table_that_names_them() {
        let mut maps = MemoryStore::new();
        let p = plan_of(&three_backends(), &Steering::default());
        let applied = apply(&mut maps, None, &p).unwrap();
        assert_eq!(applied.switched, 1);
        assert_eq!(
            maps.log,
            [
                "backend 0",
                "backend 1",
                "backend 2",
                "switch 0",
                "vip 10.99.0.100 1"
            ]
        );
        assert_eq!(maps.tx_ports, BTreeSet::from([2]));
        assert_eq!(maps.services[&0].2, p.services[0].table());
    }

    #[test]
    fn a_reload_switches_only_the_services_that_changed() {
        let mut cfg = three_backends();
        cfg.services.push(cfg.services[0].clone());
        cfg.services[1].port = 15672;
        let mut maps = MemoryStore::new();
        let before = plan_of(&cfg, &Steering::default());
        apply(&mut maps, None, &before).unwrap();
        maps.log.clear();
        // The same plan again: backends are rewritten (idempotent), no table.
        let applied = apply(&mut maps, Some(&before), &before).unwrap();
        assert_eq!(applied.switched, 0);
        assert!(
            maps.log.iter().all(|l| !l.starts_with("switch")),
            "{:?}",
            maps.log
        );
        // A weight change in the second service rebuilds its table alone.
        cfg.services[1].backends[0].weight = 3;
        let after = plan_of(&cfg, &Steering::default());
        maps.log.clear();
        let applied = apply(&mut maps, Some(&before), &after).unwrap();
        assert_eq!(applied.switched, 1);
        let switched: Vec<&String> = maps
            .log
            .iter()
            .filter(|l| l.starts_with("switch"))
            .collect();
        assert_eq!(switched, ["switch 1"]);
    }

    #[test]
    fn a_drain_rewrites_the_backend_and_its_table() {
        let cfg = three_backends();
        let mut maps = MemoryStore::new();
        let before = plan_of(&cfg, &Steering::default());
        apply(&mut maps, None, &before).unwrap();
        let mut steering = Steering::default();
        steering.set_drained(Ipv4Addr::new(10, 99, 0, 12), true);
        let drained = plan_of(&cfg, &steering);
        assert_eq!(
            apply(&mut maps, Some(&before), &drained).unwrap().switched,
            1
        );
        assert_eq!(maps.backends[1].flags, BACKEND_ENABLED | BACKEND_DRAINING);
        assert!(!maps.services[&0].2.contains(&1));
        steering.set_drained(Ipv4Addr::new(10, 99, 0, 12), false);
        let undrained = plan_of(&cfg, &steering);
        apply(&mut maps, Some(&drained), &undrained).unwrap();
        assert_eq!(maps.backends[1].flags, BACKEND_ENABLED);
        assert!(maps.services[&0].2.contains(&1));
    }

    #[test]
    fn what_the_plan_no_longer_holds_is_removed() {
        let mut cfg = three_backends();
        cfg.services.push(cfg.services[0].clone());
        cfg.services[1].port = 15672;
        let mut maps = MemoryStore::new();
        let both = plan_of(&cfg, &Steering::default());
        apply(&mut maps, None, &both).unwrap();
        assert_eq!(maps.services.len(), 2);
        // The second service goes, and with no service left on it the VIP.
        cfg.services.truncate(1);
        let one = plan_of(&cfg, &Steering::default());
        apply(&mut maps, Some(&both), &one).unwrap();
        assert!(
            maps.log.contains(&"remove service 1".to_owned()),
            "{:?}",
            maps.log
        );
        assert_eq!(maps.services.len(), 1);
        // Backends 3..5 belonged to it: their flags are cleared.
        assert!(maps.backends[3..6].iter().all(|b| b.flags == 0));
        cfg.services.clear();
        let none = plan_of(&cfg, &Steering::default());
        apply(&mut maps, Some(&one), &none).unwrap();
        assert!(!maps.vips.contains_key(&VIP));
        assert!(maps.log.contains(&format!("remove vip {VIP}")));
        assert!(maps.services.is_empty());
    }
}
