//! `[[check]]` and service `check` tables: what each names and targets, then
//! one validation of the probe of each kind, its keys and its schedule.

use std::net::Ipv4Addr;

use serde::Deserialize;
use toml::Spanned;

use super::Source;
use crate::config::Dur;
use crate::{
    check::{CheckKind, Probe, Schedule},
    config::{
        CHECK_FALL, CHECK_INTERVAL, CHECK_RISE, CHECK_TIMEOUT, Check, ConfigError, Int, Ip,
        ServiceCheck,
    },
};

/// A `[[check]]` table or a service's `check`: what to probe, how, and when.
/// One struct for both, since serde's `deny_unknown_fields` does not work
/// with `flatten`: `name` and `address` are `[[check]]` keys, which
/// validation requires there and refuses in a service check. `port` is the
/// target's in either. Every other key is the probe's or its schedule's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawCheck {
    pub(in crate::config) name: Option<Spanned<String>>,
    pub(in crate::config) kind: Spanned<CheckKind>,
    pub(in crate::config) command: Option<Spanned<String>>,
    pub(in crate::config) interval: Option<Spanned<Dur>>,
    pub(in crate::config) timeout: Option<Spanned<Dur>>,
    pub(in crate::config) rise: Option<Spanned<Int>>,
    pub(in crate::config) fall: Option<Spanned<Int>>,
    pub(in crate::config) address: Option<Spanned<Ip>>,
    pub(in crate::config) port: Option<Spanned<Int>>,
    pub(in crate::config) path: Option<Spanned<String>>,
    pub(in crate::config) expect_status: Option<Spanned<Int>>,
    pub(in crate::config) expect_body: Option<Spanned<String>>,
    pub(in crate::config) user: Option<Spanned<String>>,
    pub(in crate::config) password: Option<Spanned<String>>,
    pub(in crate::config) vhost: Option<Spanned<String>>,
}

impl Source<'_> {
    pub(super) fn check(&self, i: usize, raw: Spanned<RawCheck>) -> Result<Check, ConfigError> {
        let line = self.line(raw.span().start);
        let table_at = raw.span().start;
        let mut raw = raw.into_inner();
        let key = format!("check[{i}]");
        let Some(name) = raw.name.take() else {
            return Err(self.error(
                table_at,
                &format!("{key}.name"),
                "is missing: every [[check]] needs a name, which [[vrrp]] track refers to; \
                 add name = \"local-broker\", say"
                    .to_owned(),
            ));
        };
        let name = self.non_empty(name, &format!("{key}.name"), "the check name")?;
        let (address, port) = (raw.address.take(), raw.port.take());
        let (probe, schedule) = self.probe(raw, &key, table_at, "")?;
        let (address, port) =
            self.check_target(probe.kind(), address, port.as_ref(), table_at, i)?;
        Ok(Check {
            name,
            probe,
            address,
            port,
            schedule,
            line,
        })
    }

    /// A service's `check`: `port` (the service port when left out) and the
    /// probe. It probes each backend, so the `[[check]]` keys `name` and
    /// `address` are refused.
    pub(super) fn service_check(
        &self,
        mut raw: RawCheck,
        key: &str,
    ) -> Result<ServiceCheck, ConfigError> {
        let sub = |k: &str| format!("{key}.{k}");
        let node_only = [
            ("name", raw.name.as_ref().map(Spanned::span)),
            ("address", raw.address.as_ref().map(Spanned::span)),
        ];
        for (k, span) in node_only {
            if let Some(span) = span {
                return Err(self.error(
                    span.start,
                    &sub(k),
                    format!(
                        "a service check probes each backend of the service, so it has no {k}; \
                         remove {k}, or write a [[check]] table, where name and address belong \
                         (a check of one address that [[vrrp]] track can refer to)"
                    ),
                ));
            }
        }
        let port = raw.port.take();
        let kind_at = raw.kind.span().start;
        let (probe, schedule) = self.probe(
            raw,
            key,
            kind_at,
            " (it runs once per backend, with VIP_BACKEND_ADDRESS and VIP_BACKEND_PORT set)",
        )?;
        let port = port
            .map(|p| self.int(&p, &sub("port"), 1..=65535, "a port"))
            .transpose()?;
        Ok(ServiceCheck {
            probe,
            schedule,
            port,
        })
    }

    /// The `command` of a check of `kind`: required for `exec` (the error
    /// then points at `missing_at`), refused for the others. `hint` is added
    /// to the message for a missing command.
    pub(super) fn command(
        &self,
        kind: CheckKind,
        command: Option<Spanned<String>>,
        missing_at: usize,
        key: &str,
        hint: &str,
    ) -> Result<Option<String>, ConfigError> {
        match (kind, command) {
            (CheckKind::Exec, None) => Err(self.error(
                missing_at,
                key,
                format!(
                    "kind = \"exec\" needs a command to run; add command = \"/path/to/script\"{hint}"
                ),
            )),
            (CheckKind::Exec, Some(c)) => Ok(Some(self.non_empty(c, key, "the command")?)),
            (_, Some(c)) => Err(self.error(
                c.span().start,
                key,
                format!(
                    "only kind = \"exec\" runs a command and this check is kind = \"{kind}\"; \
                     remove the command or change the kind"
                ),
            )),
            (_, None) => Ok(None),
        }
    }

    /// `address` and `port` of `check[i]`: what a `tcp`, `amqp` or `http`
    /// check probes; an `exec` check has neither.
    pub(super) fn check_target(
        &self,
        kind: CheckKind,
        address: Option<Spanned<Ip>>,
        port: Option<&Spanned<Int>>,
        table_at: usize,
        i: usize,
    ) -> Result<(Option<Ipv4Addr>, Option<u16>), ConfigError> {
        let key = |k: &str| format!("check[{i}].{k}");
        if kind == CheckKind::Exec {
            let refuse = |at: usize, k: &str| {
                self.error(
                    at,
                    &key(k),
                    format!(
                        "an exec check runs its command and probes no {k}; remove {k}, or use \
                         kind = \"tcp\", \"amqp\" or \"http\" to probe an address"
                    ),
                )
            };
            if let Some(a) = &address {
                return Err(refuse(a.span().start, "address"));
            }
            if let Some(p) = port {
                return Err(refuse(p.span().start, "port"));
            }
            return Ok((None, None));
        }
        let Some(address) = address else {
            return Err(self.error(
                table_at,
                &key("address"),
                format!(
                    "kind = \"{kind}\" needs the address to probe; add address = \"127.0.0.1\" \
                     (for the broker on this node)"
                ),
            ));
        };
        let port = match (port, kind) {
            (Some(p), _) => self.int(p, &key("port"), 1..=65535, "a port")?,
            (None, kind) if kind.default_port().is_some() => {
                kind.default_port().expect("just checked")
            }
            (None, _) => {
                return Err(self.error(
                    table_at,
                    &key("port"),
                    format!("kind = \"{kind}\" needs the port to probe; add port = 5672, say"),
                ));
            }
        };
        Ok((Some(address.into_inner().0), Some(port)))
    }

    /// `expect_body` of an http check: not empty.
    pub(super) fn probe_body(
        &self,
        body: Option<Spanned<String>>,
        key: &str,
    ) -> Result<Option<String>, ConfigError> {
        Ok(match body {
            Some(b) if b.get_ref().is_empty() => {
                return Err(self.error(
                    b.span().start,
                    key,
                    "is empty, which every body contains; remove it or give the text to look for"
                        .to_owned(),
                ));
            }
            b => b.map(Spanned::into_inner),
        })
    }

    /// `path` of an http check: absolute, no spaces; `/` by default.
    pub(super) fn probe_path(
        &self,
        path: Option<Spanned<String>>,
        kind: CheckKind,
        key: &str,
    ) -> Result<Option<String>, ConfigError> {
        Ok(match path {
            Some(p) if !p.get_ref().starts_with('/') => {
                return Err(self.error(
                    p.span().start,
                    key,
                    format!("{:?} must start with '/'", p.get_ref()),
                ));
            }
            Some(p)
                if p.get_ref()
                    .contains(|c: char| c.is_whitespace() || c.is_control()) =>
            {
                return Err(self.error(
                    p.span().start,
                    key,
                    format!(
                        "{:?} contains a space or a control character; percent-encode it (%20)",
                        p.get_ref()
                    ),
                ));
            }
            Some(p) => Some(p.into_inner()),
            None => (kind == CheckKind::Http).then(|| "/".to_owned()),
        })
    }

    /// The probe and schedule of a check, `[[check]]` or a service's (`key`
    /// is its own dotted key): each key is refused where it means nothing
    /// for the kind, rather than silently ignored, and the defaults are
    /// filled in. A missing `command` is reported at `missing_at`, with
    /// `hint`. `name`, `address` and `port` are the caller's to validate and
    /// are not looked at here.
    pub(super) fn probe(
        &self,
        mut raw: RawCheck,
        key: &str,
        missing_at: usize,
        hint: &str,
    ) -> Result<(Probe, Schedule), ConfigError> {
        let sub = |k: &str| format!("{key}.{k}");
        let kind = *raw.kind.get_ref();
        let command = self.command(kind, raw.command.take(), missing_at, &sub("command"), hint)?;
        let schedule = self.schedule(&raw, key)?;
        self.refuse_foreign_keys(kind, &raw, key)?;
        match (&raw.user, &raw.password) {
            (Some(u), None) => {
                return Err(self.error(
                    u.span().start,
                    &sub("password"),
                    "a user needs a password too".to_owned(),
                ));
            }
            (None, Some(p)) => {
                return Err(self.error(
                    p.span().start,
                    &sub("user"),
                    "a password needs a user too".to_owned(),
                ));
            }
            _ => {}
        }
        let user = raw
            .user
            .map(|u| self.credential(u, kind, &sub("user"), true))
            .transpose()?;
        let password = raw
            .password
            .map(|p| self.credential(p, kind, &sub("password"), false))
            .transpose()?;
        let vhost = match raw.vhost {
            Some(v) if user.is_none() => {
                return Err(self.error(
                    v.span().start,
                    &sub("vhost"),
                    "the check opens a vhost only after logging in; add user and password, \
                     or remove vhost"
                        .to_owned(),
                ));
            }
            Some(v) if v.get_ref().is_empty() || v.get_ref().len() > 255 => {
                return Err(self.error(
                    v.span().start,
                    &sub("vhost"),
                    "must be 1 to 255 bytes (AMQP carries it as a short string), such as \"/\""
                        .to_owned(),
                ));
            }
            v => v.map(Spanned::into_inner),
        };
        let path = self.probe_path(raw.path, kind, &sub("path"))?;
        let expect_status = match &raw.expect_status {
            Some(v) => Some(self.int(v, &sub("expect_status"), 100..=599, "an HTTP status")?),
            None => (kind == CheckKind::Http).then_some(200),
        };
        let expect_body = self.probe_body(raw.expect_body, &sub("expect_body"))?;
        let login = user.zip(password);
        let probe = match kind {
            CheckKind::Tcp => Probe::Tcp,
            CheckKind::Amqp => Probe::Amqp {
                login: login.map(|(u, p)| (u, p, vhost.unwrap_or_else(|| "/".to_owned()))),
            },
            CheckKind::Http => Probe::Http {
                path: path.unwrap_or_else(|| "/".to_owned()),
                expect_status: expect_status.unwrap_or(200),
                expect_body,
                auth: login,
            },
            CheckKind::Exec => Probe::Exec {
                command: command.unwrap_or_default(),
            },
        };
        Ok((probe, schedule))
    }

    /// Refuses a probe key that a check of `kind` does not use
    /// ([`CheckKind::keys`]), naming the kinds that do.
    pub(super) fn refuse_foreign_keys(
        &self,
        kind: CheckKind,
        raw: &RawCheck,
        key: &str,
    ) -> Result<(), ConfigError> {
        let given = [
            ("path", raw.path.as_ref().map(Spanned::span)),
            (
                "expect_status",
                raw.expect_status.as_ref().map(Spanned::span),
            ),
            ("expect_body", raw.expect_body.as_ref().map(Spanned::span)),
            ("user", raw.user.as_ref().map(Spanned::span)),
            ("password", raw.password.as_ref().map(Spanned::span)),
            ("vhost", raw.vhost.as_ref().map(Spanned::span)),
        ];
        for (name, span) in given {
            let Some(span) = span else { continue };
            if kind.keys().contains(&name) {
                continue;
            }
            let users: Vec<String> = CheckKind::ALL
                .iter()
                .filter(|k| k.keys().contains(&name))
                .map(|k| format!("\"{k}\""))
                .collect();
            return Err(self.error(
                span.start,
                &format!("{key}.{name}"),
                format!(
                    "only a kind = {} check uses {name}; this one is \"{kind}\"",
                    users.join(" or ")
                ),
            ));
        }
        Ok(())
    }

    /// `interval`, `timeout`, `rise` and `fall` of a check (`key` is its
    /// dotted key), defaults filled in.
    pub(super) fn schedule(&self, raw: &RawCheck, key: &str) -> Result<Schedule, ConfigError> {
        let sub = |k: &str| format!("{key}.{k}");
        Ok(Schedule {
            interval: self.positive(raw.interval.as_ref(), CHECK_INTERVAL, &sub("interval"))?,
            timeout: self.positive(raw.timeout.as_ref(), CHECK_TIMEOUT, &sub("timeout"))?,
            rise: self.times(raw.rise.as_ref(), CHECK_RISE, &sub("rise"))?,
            fall: self.times(raw.fall.as_ref(), CHECK_FALL, &sub("fall"))?,
        })
    }

    /// A login user or password, refusing what the wire cannot carry: a NUL
    /// ends a PLAIN field, and a ':' in an HTTP basic-auth user splits it.
    pub(super) fn credential(
        &self,
        v: Spanned<String>,
        kind: CheckKind,
        key: &str,
        is_user: bool,
    ) -> Result<String, ConfigError> {
        let s = v.get_ref();
        if is_user && s.is_empty() {
            return Err(self.error(v.span().start, key, "the user is empty".to_owned()));
        }
        if s.contains('\0') {
            return Err(self.error(
                v.span().start,
                key,
                "contains a NUL character, which a login cannot carry".to_owned(),
            ));
        }
        if is_user && kind == CheckKind::Http && s.contains(':') {
            return Err(self.error(
                v.span().start,
                key,
                format!("{s:?} contains ':', which HTTP basic auth cannot carry in a user"),
            ));
        }
        Ok(v.into_inner())
    }
}
