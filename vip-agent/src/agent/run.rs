//! The shell's run loop: one [`Event`] at a time from the [`Inbox`], each
//! handled by a call on the agent, until SIGTERM or SIGINT.

use std::{collections::BTreeMap, path::PathBuf, time::Duration, time::Instant};

use tokio::signal::unix::{SignalKind, signal};

use super::{
    Agent, AgentError, dead_time,
    inbox::{Event, Every, Inbox},
    stamp_period,
};
use crate::check::runner::{BackendChecks, NodeChecks};

/// The most waiting adverts read before a VRRP timer is acted on.
const CATCH_UP: usize = 64;

/// How often the backends' MACs are looked up again.
const REFRESH: Duration = Duration::from_secs(30);
/// The longest the loop goes without a pass (and so without checking in
/// with the pacer), events or not: well within [`crate::pacer::LOOP_DEADLINE`].
const CHECK_IN: Duration = Duration::from_secs(1);
const _: () = assert!(CHECK_IN.as_millis() * 2 < crate::pacer::LOOP_DEADLINE.as_millis());

/// Whether the loop goes on after an event.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// The running checks of one generation (see [`Agent::checks_epoch`]):
/// dropping them stops them.
struct Running {
    epoch: u64,
    _node: Option<NodeChecks>,
    _backend: Option<BackendChecks>,
}

/// The control socket and the metrics endpoint, open while it lives.
type Servers = super::front::Front;

/// Waits until `t`, or forever.
async fn until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

impl Agent {
    /// Runs until SIGTERM/SIGINT: heartbeat, MAC refresh, reload on SIGHUP,
    /// VRRP adverts and timers, link and check events, the control socket
    /// and metrics. Then a graceful VRRP shutdown, and XDP detached and pins
    /// removed.
    pub async fn run(mut self) -> Result<(), AgentError> {
        let mut inbox = Inbox::default();
        let _servers = self.listen(&mut inbox)?;
        if let Err(e) = crate::notify::notify("READY=1") {
            tracing::warn!(error = %e, "cannot notify the service manager ($NOTIFY_SOCKET)");
        }
        let mut checks = self.start_checks(&mut inbox)?;
        let mut vrrp_watched = false;
        let mut dead = dead_time(&self.config);
        // Positive weights count from the start (checks start up).
        self.reevaluate();
        loop {
            // VRRP's socket and link watch, once there is VRRP (at start, or
            // added by a reload).
            if !vrrp_watched && let Some(v) = self.vrrp.as_ref() {
                inbox.forward(std::sync::Arc::clone(&v.sock), Event::Vrrp);
                inbox.forward(crate::net::watch_link(self.iface.index)?, Event::Link);
                vrrp_watched = true;
            }
            // A reload may change the advert intervals, and so the dead time.
            if dead_time(&self.config) != dead {
                dead = dead_time(&self.config);
                self.dp.stamp(dead)?;
                self.pacer
                    .set_heartbeat(Box::new(self.dp.stamper(dead)?), stamp_period(dead));
                tracing::info!(dead_ms = dead.as_millis(), "heartbeat dead time changed");
            }
            if checks.epoch != self.checks_epoch {
                drop(checks);
                checks = self.start_checks(&mut inbox)?;
                self.reevaluate();
                tracing::info!("checks restarted with the new configuration");
            }
            let next = self
                .vrrp
                .as_ref()
                .and_then(crate::vrrp::instance::Runtime::poll_timeout);
            self.pacer.alive();
            let event = tokio::select! {
                event = inbox.recv() => event.unwrap_or(Event::Stop),
                () = until(next) => Event::VrrpTimeout,
                // A loop with nothing to do still checks in with the pacer:
                // without VRRP and with nothing changing, no event may come
                // for a long time, and the pacer would stop the heartbeat.
                () = tokio::time::sleep(CHECK_IN) => continue,
            };
            if self.on(event, checks.epoch).await? == Flow::Stop {
                break;
            }
        }
        drop(inbox);
        tracing::info!("shutting down: detaching XDP and removing pins");
        let _ = crate::notify::notify("STOPPING=1");
        if let Some(v) = self.vrrp.as_mut() {
            v.shutdown(&mut self.dp, dead).await;
        }
        self.dp.detach_and_unpin()?;
        Ok(())
    }

    /// Handles one event. Check and backend events of an older check
    /// generation than `epoch` are stale and ignored.
    async fn on(&mut self, event: Event, epoch: u64) -> Result<Flow, AgentError> {
        match event {
            Event::Vrrp(Ok(pkt)) => {
                if let Some(v) = self.vrrp.as_mut() {
                    v.receive(Instant::now(), &pkt, &mut self.dp);
                }
            }
            Event::Vrrp(Err(e)) => tracing::warn!(error = %e, "VRRP receive failed"),
            Event::VrrpTimeout => {
                if let Some(v) = self.vrrp.as_mut() {
                    // Adverts that arrived while the loop was busy (a long
                    // reload) come first: a late timer must not beat the
                    // advert that would have reset it.
                    for _ in 0..CATCH_UP {
                        let Some(pkt) = v.sock.try_recv() else { break };
                        v.receive(Instant::now(), &pkt, &mut self.dp);
                    }
                    v.timeout(Instant::now(), &mut self.dp);
                }
            }
            Event::Link(up) => {
                tracing::info!(iface = %self.iface.name, up, "link state changed");
                self.link_up = up;
                self.link_gate.set(up);
                self.reevaluate();
            }
            Event::Check { epoch: e, event } if e == epoch => {
                self.checks.insert(event.name, (event.up, event.reason));
                self.reevaluate();
            }
            Event::Backend { epoch: e, event } if e == epoch => {
                if let Err(e) = self.backend_event(event).await {
                    tracing::error!(error = %crate::error_chain(&e), "cannot apply a backend health change");
                }
            }
            Event::Check { .. } | Event::Backend { .. } => {}
            Event::Call((command, reply)) => {
                let r = self.handle(command).await;
                let _ = reply.send(r);
            }
            Event::Refresh => self.spawn_resolve(BTreeMap::new()),
            Event::Resolved(found) => {
                if let Err(e) = self.resolved(found).await {
                    tracing::warn!(error = %crate::error_chain(&e), "backend refresh failed");
                }
            }
            Event::Reload => {
                tracing::info!("SIGHUP");
                if self.reload_notified().await.is_ok() {
                    self.reevaluate();
                }
            }
            Event::Stop => return Ok(Flow::Stop),
        }
        Ok(Flow::Continue)
    }

    /// Opens the inputs that live as long as the loop: signals, the MAC
    /// refresh, background resolutions, the control socket and `/metrics`.
    fn listen(&mut self, inbox: &mut Inbox) -> Result<Servers, AgentError> {
        let sig = |k| {
            signal(k).map_err(|source| AgentError::Io {
                what: "cannot install a signal handler".into(),
                path: PathBuf::new(),
                source,
            })
        };
        inbox.forward(sig(SignalKind::terminate())?, |()| Event::Stop);
        inbox.forward(sig(SignalKind::interrupt())?, |()| Event::Stop);
        inbox.forward(sig(SignalKind::hangup())?, |()| Event::Reload);
        inbox.forward(Every::new(REFRESH), |()| Event::Refresh);
        if let Some(rx) = self.resolved_rx.take() {
            inbox.forward(rx, Event::Resolved);
        }
        let (call_tx, calls) = tokio::sync::mpsc::channel::<crate::control::Call>(16);
        if let Some(addr) = self.config.node.metrics
            && !addr.ip().is_loopback()
        {
            tracing::warn!(
                %addr,
                "metrics are served to anyone who can reach {addr}; bind 127.0.0.1 unless a scraper elsewhere needs them"
            );
        }
        let front = super::front::Front::start(
            self.config.node.control_socket.clone(),
            self.config.node.metrics,
            call_tx,
        )?;
        inbox.forward(calls, Event::Call);
        Ok(front)
    }

    /// Starts the node and service checks of the current configuration,
    /// their events tagged with the current generation.
    fn start_checks(&mut self, inbox: &mut Inbox) -> Result<Running, AgentError> {
        let epoch = self.checks_epoch;
        let (node, rx) = self.spawn_node_checks()?;
        if let Some(rx) = rx {
            inbox.forward(rx, move |event| Event::Check { epoch, event });
        }
        let (backend, rx) = self.spawn_backend_checks();
        if let Some(rx) = rx {
            inbox.forward(rx, move |event| Event::Backend { epoch, event });
        }
        Ok(Running {
            epoch,
            _node: node,
            _backend: backend,
        })
    }
}
