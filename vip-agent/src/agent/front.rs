//! The front: the control socket and `/metrics`, served on a thread and
//! runtime of their own.
//!
//! Their load comes from outside (scrapers, scripts calling vipctl, anyone
//! who can reach the metrics port) and grows with it: accepting, reading
//! requests, encoding answers. On the run loop's thread, a flood of them
//! would queue ahead of the loop's own work. Here they cost the loop one
//! call per request it must answer itself, and for scrapes at most one per
//! [`crate::metrics::STATUS_MAX_AGE`]; each server caps its connections and
//! times out slow clients, so load on them fails their own clients first.

use std::{net::SocketAddr, path::PathBuf};

use tokio::sync::{mpsc, oneshot};

use super::AgentError;
use crate::control::Call;

/// The front's thread; stopped (sockets closed and removed) on drop.
pub struct Front {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Front {
    /// Binds the control socket at `control` and, when given, `/metrics` on
    /// `metrics`, both sending what they need from the loop on `calls`.
    /// Returns once both are bound, or with why one cannot be.
    pub fn start(
        control: PathBuf,
        metrics: Option<SocketAddr>,
        calls: mpsc::Sender<Call>,
    ) -> Result<Self, AgentError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), AgentError>>(1);
        let (stop, stopped) = oneshot::channel::<()>();
        let io = |what: &str, source| AgentError::Io {
            what: what.to_owned(),
            path: PathBuf::from("the front thread"),
            source,
        };
        let thread = std::thread::Builder::new()
            .name("vip-front".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(io("cannot start its runtime", e)));
                        return;
                    }
                };
                rt.block_on(serve(control, metrics, calls, ready_tx, stopped));
            })
            .map_err(|e| io("cannot start the front thread", e))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(io(
                    "the front thread ended before it was ready",
                    std::io::Error::other("no answer"),
                ))
            }
        }
    }
}

async fn serve(
    control: PathBuf,
    metrics: Option<SocketAddr>,
    calls: mpsc::Sender<Call>,
    ready: std::sync::mpsc::SyncSender<Result<(), AgentError>>,
    stopped: oneshot::Receiver<()>,
) {
    let control_server =
        match crate::control::Server::start(&control, calls.clone()).map_err(|e| AgentError::Io {
            what: e.to_string(),
            path: control.clone(),
            source: std::io::Error::other("control socket"),
        }) {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
    let metrics_server = match metrics {
        None => None,
        Some(addr) => match crate::metrics::serve(addr, calls).await {
            Ok(task) => Some(task),
            Err(source) => {
                let _ = ready.send(Err(AgentError::Io {
                    what: format!("cannot serve metrics on {addr}"),
                    path: PathBuf::from("[node] metrics"),
                    source,
                }));
                return;
            }
        },
    };
    let _ = ready.send(Ok(()));
    // Until the agent drops the front (or is gone).
    let _ = stopped.await;
    if let Some(task) = metrics_server {
        task.abort();
    }
    drop(control_server);
}

impl Drop for Front {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
