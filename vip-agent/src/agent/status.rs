//! The node's state as `vipctl status`, the control socket and `/metrics`
//! show it: a snapshot built from the agent and the maps.

use super::{
    Agent,
    plan::{dead_time, service_ident},
};
use crate::net::fmt_mac;

/// One VRRP instance as `vipctl status` shows it.
fn instance_status(i: &crate::vrrp::instance::Instance) -> crate::control::InstanceStatus {
    crate::control::InstanceStatus {
        name: i.cfg.name.clone(),
        vrid: i.cfg.election.vrid,
        state: i.machine.state().as_str().to_owned(),
        priority: i.machine.priority(),
        base_priority: i.cfg.election.priority,
        vips: i.cfg.vips.clone(),
        vlans: i.cfg.vlans.clone(),
        since_s: i.since.elapsed().as_secs_f64(),
        transitions: i.transitions,
        adverts_sent: i.sent().adverts,
        longest_advert_gap_ms: i.sent().longest_gap.as_secs_f64() * 1e3,
        longest_heard_gap_ms: i.longest_heard_gap.as_secs_f64() * 1e3,
        adverts_received: i.received,
        adverts_dropped: i
            .dropped
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
        sync_group: i.cfg.sync_group.clone(),
    }
}

impl Agent {
    /// The `[[check]]`s as `vipctl status` shows them.
    fn check_statuses(&self) -> Vec<crate::control::CheckStatus> {
        use crate::control::CheckStatus;
        self.config
            .checks
            .iter()
            .map(|c| {
                let (up, reason) = self.checks.get(&c.name).cloned().unwrap_or_default();
                let stats = self
                    .node_stats
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&c.name).copied())
                    .unwrap_or_default();
                CheckStatus {
                    name: c.name.clone(),
                    kind: c.probe.kind().to_string(),
                    up,
                    reason,
                    probes: stats.probes,
                    failures: stats.failures,
                    flaps: stats.flaps,
                    latency_ms: stats.last_latency.as_secs_f64() * 1e3,
                }
            })
            .collect()
    }

    /// The node's state now.
    #[must_use]
    pub fn status(&self) -> crate::control::Status {
        use crate::control::{BackendStatus, ServiceStatus, Status};
        let counters = self
            .dp
            .counters()
            .unwrap_or([0; vip_common::counter::COUNT as usize]);
        let now_ns = crate::dataplane::monotonic_ns();
        let hb = self.dp.heartbeat().unwrap_or_default();
        #[expect(clippy::cast_precision_loss, reason = "ages in ns fit f64 well enough")]
        let heartbeat_age_ms = now_ns.saturating_sub(hb.stamp_ns) as f64 / 1e6;
        let instances = self
            .vrrp
            .iter()
            .flat_map(|v| &v.instances)
            .map(instance_status)
            .collect();
        let checks = self.check_statuses();
        let checked = self
            .backend_stats
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let services = self
            .config
            .services
            .iter()
            .zip(&self.plan.services)
            .map(|(svc, sp)| ServiceStatus {
                vip: svc.vip,
                port: svc.port,
                protocol: svc.protocol.to_string(),
                check: svc.check.as_ref().map(|c| c.probe.kind().to_string()),
                backends: sp
                    .backends
                    .iter()
                    .map(|b| {
                        let stats = self.dp.backend_stats(b.id).unwrap_or_default();
                        let reason = self
                            .steering
                            .down
                            .get(&(service_ident(svc), b.addr))
                            .cloned()
                            .unwrap_or_default();
                        let c = self
                            .checked_services
                            .iter()
                            .position(|i| *i == service_ident(svc))
                            .and_then(|n| checked.get(&(n, b.addr)).copied())
                            .unwrap_or_default();
                        BackendStatus {
                            check_probes: c.probes,
                            check_failures: c.failures,
                            check_flaps: c.flaps,
                            check_latency_ms: c.last_latency.as_secs_f64() * 1e3,
                            address: b.addr,
                            id: b.id,
                            weight: b.weight,
                            up: !b.down,
                            draining: b.draining,
                            in_table: b.in_table(),
                            mac: b.resolved.map(|r| fmt_mac(&r.mac)),
                            reason,
                            packets: stats.packets,
                            bytes: stats.bytes,
                        }
                    })
                    .collect(),
            })
            .collect();
        Status {
            node: self.config.node.name.clone(),
            interface: self.iface.name.clone(),
            xdp_mode: self.mode.as_str().to_owned(),
            pid: std::process::id(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            heartbeat_age_ms,
            dead_time_ms: dead_time(&self.config).as_secs_f64() * 1e3,
            instances,
            checks,
            services,
            counters: vip_common::counter::NAMES
                .iter()
                .zip(counters)
                .map(|(n, v)| ((*n).to_owned(), v))
                .collect(),
            table_rebuilds: self.rebuilds,
            last_rebuild_us: self.last_rebuild_us,
            reloads: self.reloads,
            vrrp_unknown_vrid: self.vrrp.as_ref().map_or(0, |v| v.unknown_vrid),
        }
    }
}
