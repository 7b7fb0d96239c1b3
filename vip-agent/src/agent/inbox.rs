//! The run loop's one inbox: every input of a running node, as an [`Event`].
//!
//! Each source (the VRRP socket, the link watch, the check runners, the
//! control socket and `/metrics`, background MAC resolution, signals, the
//! MAC refresh timer) gets a small forwarding task that wraps what it yields
//! in an [`Event`] and posts it here. The run loop then reads one stream and
//! handles one event at a time, whatever its source; only the timers whose
//! deadline the loop's own state decides (VRRP's next timeout and the
//! heartbeat) stay beside it.
//!
//! The inbox is bounded: a source that outpaces the loop waits in its
//! forwarding task instead of queueing without limit. Dropping the inbox
//! stops every forwarding task.

use std::{future::Future, sync::Arc};

use tokio::{
    signal::unix::Signal,
    sync::mpsc,
    task::JoinSet,
    time::{Duration, Interval},
};

use super::Resolution;
use crate::{
    check::runner::{BackendEvent, CheckEvent},
    control::Call,
    vrrp::transport::{Received, VrrpSocket},
};

/// How many events may wait for the loop before their sources wait too.
const CAPACITY: usize = 256;

/// One input of the run loop.
#[derive(Debug)]
pub enum Event {
    /// A VRRP datagram arrived (or receiving failed).
    Vrrp(std::io::Result<Received>),
    /// VRRP's next timer is due (posted by the loop itself, which knows
    /// the deadline).
    VrrpTimeout,
    /// The interface's carrier went up (`true`) or down.
    Link(bool),
    /// A `[[check]]` changed state. `epoch` is the check generation that
    /// sent it: a reload that restarts the checks makes older events stale.
    Check { epoch: u64, event: CheckEvent },
    /// A service check changed a backend's state (`epoch` as for `Check`).
    Backend { epoch: u64, event: BackendEvent },
    /// A control-socket or `/metrics` request, with where to answer.
    Call(Call),
    /// Time to look the backends' MACs up again.
    Refresh,
    /// A background MAC resolution finished.
    Resolved(Resolution),
    /// SIGHUP: reload the configuration.
    Reload,
    /// SIGTERM or SIGINT: shut down.
    Stop,
}

/// Something a forwarding task can wait on.
pub trait Source: Send + 'static {
    type Item: Send;
    /// The next item; `None` when the source has ended.
    fn next(&mut self) -> impl Future<Output = Option<Self::Item>> + Send;
}

impl<T: Send + 'static> Source for mpsc::Receiver<T> {
    type Item = T;
    fn next(&mut self) -> impl Future<Output = Option<T>> + Send {
        self.recv()
    }
}

impl<T: Send + 'static> Source for mpsc::UnboundedReceiver<T> {
    type Item = T;
    fn next(&mut self) -> impl Future<Output = Option<T>> + Send {
        self.recv()
    }
}

impl Source for Signal {
    type Item = ();
    fn next(&mut self) -> impl Future<Output = Option<()>> + Send {
        self.recv()
    }
}

/// A timer that never ends: an item per tick, the first one period after
/// the start.
pub struct Every(Interval);

impl Every {
    #[must_use]
    pub fn new(period: Duration) -> Self {
        let start = tokio::time::Instant::now() + period;
        Self(tokio::time::interval_at(start, period))
    }
}

impl Source for Every {
    type Item = ();
    async fn next(&mut self) -> Option<()> {
        self.0.tick().await;
        Some(())
    }
}

/// A VRRP socket never ends either: every datagram, and every error.
impl Source for Arc<VrrpSocket> {
    type Item = std::io::Result<Received>;
    async fn next(&mut self) -> Option<Self::Item> {
        Some(self.recv().await)
    }
}

/// The run loop's inbox and the tasks that fill it.
pub struct Inbox {
    tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
    tasks: JoinSet<()>,
}

impl Default for Inbox {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(CAPACITY);
        Self {
            tx,
            rx,
            tasks: JoinSet::new(),
        }
    }
}

impl Inbox {
    /// Posts every item of `source`, wrapped by `wrap`, until the source
    /// ends or the inbox is dropped.
    pub fn forward<S: Source>(
        &mut self,
        mut source: S,
        wrap: impl Fn(S::Item) -> Event + Send + 'static,
    ) {
        let tx = self.tx.clone();
        self.tasks.spawn(async move {
            while let Some(item) = source.next().await {
                if tx.send(wrap(item)).await.is_err() {
                    break;
                }
            }
        });
    }

    /// The next event. Never `None` while the inbox holds its own sender.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn events_of_every_source_arrive_in_one_stream_in_order() {
        let mut inbox = Inbox::default();
        let (a_tx, a_rx) = mpsc::unbounded_channel::<bool>();
        let (b_tx, b_rx) = mpsc::channel::<Resolution>(4);
        inbox.forward(a_rx, Event::Link);
        inbox.forward(b_rx, Event::Resolved);
        a_tx.send(false).unwrap();
        a_tx.send(true).unwrap();
        b_tx.send(Resolution::default()).await.unwrap();
        let mut links = Vec::new();
        let mut resolved = 0;
        for _ in 0..3 {
            match inbox.recv().await.expect("an event") {
                Event::Link(up) => links.push(up),
                Event::Resolved(_) => resolved += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(links, [false, true], "one source keeps its order");
        assert_eq!(resolved, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_ticks_once_per_period_and_not_at_the_start() {
        let mut inbox = Inbox::default();
        inbox.forward(Every::new(Duration::from_secs(30)), |()| Event::Refresh);
        let start = tokio::time::Instant::now();
        assert!(matches!(inbox.recv().await, Some(Event::Refresh)));
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        assert!(matches!(inbox.recv().await, Some(Event::Refresh)));
        assert_eq!(start.elapsed(), Duration::from_mins(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_inbox_holds_its_sources_back_instead_of_growing() {
        let mut inbox = Inbox::default();
        let (tx, rx) = mpsc::channel::<bool>(1);
        inbox.forward(rx, Event::Link);
        // The inbox takes CAPACITY events, the forwarder holds one more, the
        // source's own channel one more; then the source is refused.
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..4 * CAPACITY {
            match tx.try_send(true) {
                Ok(()) => accepted += 1,
                Err(_) => refused += 1,
            }
            if refused == 8 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted, CAPACITY + 2, "{refused} refused");
        drop(tx);
        let mut got = 0;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(1), inbox.recv()).await {
            got += 1;
        }
        assert_eq!(got, accepted, "every event taken arrives once");
    }
}
