//! Health checks, one model for node `[[check]]`s and service `check`s:
//! what a check asks ([`Probe`], one variant per [`CheckKind`]), how often
//! and how strictly ([`Schedule`]), running one probe ([`run`]), and the
//! [`runner`] that keeps them going and reports state changes. Each kind's
//! exchange lives in its own file: [`tcp`], [`amqp`], [`http`], [`exec`].
//! The rise/fall machine and the `track` rule are in [`crate::health`],
//! free of I/O.
//!
//! Adding a kind: its file here (the exchange and its tests); an arm in
//! [`CheckKind`] (its [`keys`](CheckKind::keys) and
//! [`default_port`](CheckKind::default_port)), in [`Probe`] (with how
//! [`Probe::keys`] writes it) and in [`run`]; and in
//! `config/validate/check.rs`, the raw fields of any new key and their
//! validation.

pub mod amqp;
pub mod exec;
pub mod http;
pub mod runner;
pub mod tcp;

use std::{
    fmt,
    net::SocketAddr,
    time::{Duration, Instant},
};

use serde::Deserialize;

/// What a check does (the `kind` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// A TCP connect.
    Tcp,
    /// An AMQP 0-9-1 handshake (and login when a user is given).
    Amqp,
    /// An HTTP GET.
    Http,
    /// Run a command; exit status 0 is healthy.
    Exec,
}

impl CheckKind {
    /// Every kind, in the order error messages list them.
    pub const ALL: [CheckKind; 4] = [Self::Tcp, Self::Amqp, Self::Http, Self::Exec];

    /// The keys a check of this kind takes besides its schedule (`interval`,
    /// `timeout`, `rise`, `fall`) and target (`address`, `port`); config
    /// refuses the others.
    #[must_use]
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            Self::Tcp => &[],
            Self::Amqp => &["user", "password", "vhost"],
            Self::Http => &["path", "expect_status", "expect_body", "user", "password"],
            Self::Exec => &["command"],
        }
    }

    /// The port a node check of this kind probes when the config names
    /// none; `None` where it must be given (`tcp`) or means nothing (`exec`).
    #[must_use]
    pub fn default_port(self) -> Option<u16> {
        match self {
            Self::Amqp => Some(5672),
            Self::Http => Some(80),
            Self::Tcp | Self::Exec => None,
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Amqp => "amqp",
            Self::Http => "http",
            Self::Exec => "exec",
        })
    }
}

/// What to ask a backend (or, for a node check, its address), validated:
/// every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Tcp,
    Amqp {
        /// User, password, vhost: log in (PLAIN), open the vhost, close.
        login: Option<(String, String, String)>,
    },
    Http {
        path: String,
        expect_status: u16,
        expect_body: Option<String>,
        /// Basic auth.
        auth: Option<(String, String)>,
    },
    /// A command; for a service check run with `VIP_BACKEND_ADDRESS` and
    /// `VIP_BACKEND_PORT` set.
    Exec {
        command: String,
    },
}

impl Probe {
    /// The keys of this probe's kind as config reads them back (besides
    /// `kind`), for writing the probe out: defaults that say nothing
    /// (`vhost = "/"`) are left out.
    #[must_use]
    pub fn keys(&self) -> Vec<(&'static str, toml_edit::Value)> {
        let mut keys: Vec<(&'static str, toml_edit::Value)> = Vec::new();
        match self {
            Self::Tcp => {}
            Self::Amqp { login } => {
                if let Some((user, password, vhost)) = login {
                    keys.push(("user", user.as_str().into()));
                    keys.push(("password", password.as_str().into()));
                    if vhost != "/" {
                        keys.push(("vhost", vhost.as_str().into()));
                    }
                }
            }
            Self::Http {
                path,
                expect_status,
                expect_body,
                auth,
            } => {
                keys.push(("path", path.as_str().into()));
                keys.push(("expect_status", i64::from(*expect_status).into()));
                if let Some(b) = expect_body {
                    keys.push(("expect_body", b.as_str().into()));
                }
                if let Some((user, password)) = auth {
                    keys.push(("user", user.as_str().into()));
                    keys.push(("password", password.as_str().into()));
                }
            }
            Self::Exec { command } => keys.push(("command", command.as_str().into())),
        }
        keys
    }

    #[must_use]
    pub fn kind(&self) -> CheckKind {
        match self {
            Self::Tcp => CheckKind::Tcp,
            Self::Amqp { .. } => CheckKind::Amqp,
            Self::Http { .. } => CheckKind::Http,
            Self::Exec { .. } => CheckKind::Exec,
        }
    }
}

/// When a check probes and how many results change its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Time between probes (> 0), jittered by ±10 %.
    pub interval: Duration,
    /// How long one probe may take (> 0); longer is a failure.
    pub timeout: Duration,
    /// Consecutive successes before a down check is up.
    pub rise: u32,
    /// Consecutive failures before an up check is down.
    pub fall: u32,
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// Short and human: `connection refused`, `HTTP 503, expected 200`,
    /// `exit status 1`.
    pub reason: String,
    pub latency: Duration,
}

/// Runs `probe`, all of it (connect and exchange) within `timeout`. `addr`
/// is what an in-process probe connects to; for `exec` it is the backend
/// named in the environment, `None` for a node check (no variables).
pub async fn run(addr: Option<SocketAddr>, probe: &Probe, timeout: Duration) -> Outcome {
    let t0 = Instant::now();
    let result = match (probe, addr) {
        (Probe::Exec { command }, addr) => {
            let r = match addr {
                Some(addr) => exec::run_for_backend(command, addr, timeout).await,
                None => exec::run_exec(command, timeout).await,
            };
            return Outcome {
                ok: r.ok,
                reason: r.reason,
                latency: r.took,
            };
        }
        (_, None) => Err("no address to probe".to_owned()),
        (_, Some(addr)) => tokio::time::timeout(timeout, exchange(addr, probe))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "timed out after {}",
                    humantime::format_duration(timeout)
                ))
            }),
    };
    let latency = t0.elapsed();
    match result {
        Ok(()) => Outcome {
            ok: true,
            reason: "passed".into(),
            latency,
        },
        Err(reason) => Outcome {
            ok: false,
            reason,
            latency,
        },
    }
}

async fn exchange(addr: SocketAddr, probe: &Probe) -> Result<(), String> {
    let mut s = tcp::connect(addr).await?;
    match probe {
        Probe::Tcp | Probe::Exec { .. } => Ok(()),
        Probe::Amqp { login } => amqp::amqp(&mut s, login.as_ref()).await,
        Probe::Http {
            path,
            expect_status,
            expect_body,
            auth,
        } => {
            http::http(
                &mut s,
                &addr.to_string(),
                path,
                *expect_status,
                expect_body.as_deref(),
                auth.as_ref(),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn run_bounds_the_whole_probe_by_the_timeout() {
        // A TEST-NET-1 address inside no namespace is never contacted: the
        // exec probe is what runs, with the variables set.
        let addr = SocketAddr::from(([192, 0, 2, 7], 5672));
        let ok = run(
            Some(addr),
            &Probe::Exec {
                command: "test \"$VIP_BACKEND_ADDRESS:$VIP_BACKEND_PORT\" = 192.0.2.7:5672".into(),
            },
            Duration::from_secs(2),
        )
        .await;
        assert!(ok.ok, "{ok:?}");
        let slow = run(
            Some(addr),
            &Probe::Exec {
                command: "sleep 5".into(),
            },
            Duration::from_millis(100),
        )
        .await;
        assert!(
            !slow.ok && slow.latency < Duration::from_secs(2),
            "{slow:?}"
        );
    }
}
