//! `[[service]]` tables and their backends.

use std::{collections::HashMap, net::Ipv4Addr};

use serde::Deserialize;
use toml::Spanned;

use super::{Source, check::RawCheck};
use crate::config::{BackendConfig, ConfigError, MAX_WEIGHT, OnBackendDown, Proto, Service, limit};
use crate::config::{Int, Ip};

/// A `[[service]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawService {
    pub(in crate::config) vip: Spanned<Ip>,
    pub(in crate::config) port: Spanned<Int>,
    pub(in crate::config) protocol: Option<Proto>,
    pub(in crate::config) check: Option<RawCheck>,
    pub(in crate::config) on_backend_down: Option<Spanned<OnBackendDown>>,
    pub(in crate::config) backends: Option<Vec<Spanned<RawBackend>>>,
}

/// One entry of `backends` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawBackend {
    pub(in crate::config) address: Spanned<Ip>,
    pub(in crate::config) weight: Option<Spanned<Int>>,
}

impl Source<'_> {
    pub(super) fn services(
        &self,
        raw: Vec<Spanned<RawService>>,
    ) -> Result<Vec<Service>, ConfigError> {
        let mut services: Vec<Service> = Vec::with_capacity(raw.len());
        let mut seen: HashMap<(Ipv4Addr, u16, Proto), usize> = HashMap::new();
        // No total to check: MAX_BACKENDS holds every service full.
        for (i, s) in raw.into_iter().enumerate() {
            let at = s.span().start;
            if i >= limit(vip_common::MAX_SERVICES) {
                return Err(self.error(
                    at,
                    &format!("service[{i}]"),
                    format!(
                        "a node serves at most {} services",
                        vip_common::MAX_SERVICES
                    ),
                ));
            }
            let svc = self.service(i, s)?;
            if let Some(j) = seen.insert((svc.vip, svc.port, svc.protocol), i) {
                return Err(self.error(
                    at,
                    &format!("service[{i}]"),
                    format!(
                        "{}:{}/{} is already defined by service[{j}] (line {}); merge their backends",
                        svc.vip, svc.port, svc.protocol, services[j].line
                    ),
                ));
            }
            services.push(svc);
        }
        Ok(services)
    }

    pub(super) fn service(
        &self,
        i: usize,
        raw: Spanned<RawService>,
    ) -> Result<Service, ConfigError> {
        let at = raw.span().start;
        let raw = raw.into_inner();
        let key = |k: &str| format!("service[{i}].{k}");
        let port = self.int(&raw.port, &key("port"), 1..=65535, "a port")?;
        let protocol = raw.protocol.unwrap_or_default();
        let check = raw
            .check
            .map(|c| self.service_check(c, &key("check")))
            .transpose()?;
        let on_backend_down =
            self.on_backend_down(raw.on_backend_down, protocol, &key("on_backend_down"))?;

        let raw_backends = raw.backends.unwrap_or_default();
        if raw_backends.is_empty() {
            return Err(self.error(
                at,
                &key("backends"),
                "a service needs at least one backend: backends = [{ address = \"10.0.0.11\" }]"
                    .to_owned(),
            ));
        }
        if raw_backends.len() > limit(vip_common::MAX_BACKENDS_PER_SERVICE) {
            return Err(self.error(
                raw_backends[limit(vip_common::MAX_BACKENDS_PER_SERVICE)]
                    .span()
                    .start,
                &key("backends"),
                format!(
                    "{} backends, but a service has at most {}",
                    raw_backends.len(),
                    vip_common::MAX_BACKENDS_PER_SERVICE
                ),
            ));
        }
        let mut seen: HashMap<Ipv4Addr, usize> = HashMap::new();
        let mut backends = Vec::with_capacity(raw_backends.len());
        for (b, raw_b) in raw_backends.into_iter().enumerate() {
            let raw_b = raw_b.into_inner();
            let address = raw_b.address.get_ref().0;
            let addr_at = raw_b.address.span().start;
            if let Some(first) = seen.insert(address, self.line(addr_at)) {
                return Err(self.error(
                    addr_at,
                    &key(&format!("backends[{b}].address")),
                    format!(
                        "backend {address} is listed twice in this service (first at line {first})"
                    ),
                ));
            }
            let weight = self.int_or(
                raw_b.weight.as_ref(),
                1,
                &key(&format!("backends[{b}].weight")),
                0..=i64::from(MAX_WEIGHT),
                "a weight (0 drains the backend)",
            )?;
            backends.push(BackendConfig { address, weight });
        }

        Ok(Service {
            vip: raw.vip.get_ref().0,
            port,
            protocol,
            check,
            on_backend_down,
            backends,
            line: self.line(at),
        })
    }

    /// `on_backend_down` of a service: UDP has no RST to send.
    pub(super) fn on_backend_down(
        &self,
        v: Option<Spanned<OnBackendDown>>,
        protocol: Proto,
        key: &str,
    ) -> Result<OnBackendDown, ConfigError> {
        match (v, protocol) {
            (None, Proto::Tcp) => Ok(OnBackendDown::Reset),
            (None, Proto::Udp) => Ok(OnBackendDown::Rehash),
            (Some(v), Proto::Udp) if *v.get_ref() == OnBackendDown::Reset => Err(self.error(
                v.span().start,
                key,
                "\"reset\" answers with a TCP RST, and UDP has no RST; use \"rehash\" \
                 (the default for UDP) or \"keep\""
                    .to_owned(),
            )),
            (Some(v), _) => Ok(v.into_inner()),
        }
    }
}
