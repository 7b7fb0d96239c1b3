//! An AMQP workload that counts what a `RabbitMQ` client would lose: one
//! publisher with publisher confirms and persistent messages (delivery mode
//! 2), one consumer with manual acks, both on their own connection to one
//! address (the VIP), on a quorum queue (`x-queue-type: quorum`).
//!
//! - Every message carries its id (1, 2, ...) as `message_id`. An id is
//!   *confirmed* when the broker acks its publish; a nack or a lost
//!   connection puts it back in line, and after a reconnect the publisher
//!   sends the ones still unconfirmed again, first.
//! - The consumer records every id delivered: a second delivery of an id is
//!   a *duplicate* (a republish after a lost confirm, or a redelivery after a
//!   lost ack). It acks each message after recording it.
//! - [`Workload::finish`] stops publishing, waits until every confirmed id was
//!   consumed (or a deadline), and reports: sent, confirmed, consumed, *lost*
//!   (confirmed but never consumed: the figure that must be 0), duplicates,
//!   reconnects, the longest publish stall (the longest time without a
//!   confirm while publishing) and the longest gap in consumption.
//! - [`Workload::window`] gives the same figures between two instants of a
//!   running workload, so one run can measure several faults one by one.
//!
//! It runs on a thread of its own inside a lab namespace (the client's), on a
//! current-thread tokio runtime with lapin: every socket is made there.
//! Every wait has a deadline; a connection attempt takes at most
//! [`CONNECT_TIMEOUT`], and reconnects are spaced [`RECONNECT_PAUSE`] apart.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use futures_util::StreamExt as _;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, PublisherConfirm,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};

use crate::lab::Lab;

/// How long one connection attempt (TCP, AMQP handshake, channel, queue)
/// may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The pause between a lost connection and the next attempt.
pub const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// Messages published and not yet confirmed, at most; the publisher waits
/// past that (a stall shows in the figures, not as unbounded memory).
const MAX_IN_FLIGHT: usize = 20_000;
/// The consumer's prefetch.
const PREFETCH: u16 = 500;
/// How long one AMQP step (a publish written, an ack, a method) may block:
/// past that the connection counts as lost. A frozen broker stops reading,
/// and a full socket would block a write for ever.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a publish may wait for its confirm. Past that the channel is
/// given up, as a client waiting for confirms with a timeout does, and the
/// publisher connects again and sends it anew. A channel can hang for good
/// on a survivor: after a cut link of the queue's leader, a channel whose
/// publishes went to the old leader stayed credit-blocked after the
/// election (seen for 30 s, until its socket buffers filled and the write
/// blocked); a confirm lost in a leader's change would otherwise hold its
/// message for ever (seen once in about 27 000 publishes).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// Nacks in a row after which the publisher drops its connection and
/// connects again.
const MAX_NACKS_IN_A_ROW: u32 = 250;
/// How long [`Workload::finish`] and drop wait for the clients to end.
const JOIN_LIMIT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Where both clients connect: the VIP's AMQP port.
    pub addr: SocketAddr,
    /// The quorum queue (declared by both clients, durable).
    pub queue: String,
    /// Messages per second the publisher sends.
    pub rate: u32,
    /// Bytes per message body (at least 8: the id).
    pub size: usize,
    /// Stop publishing after this long, whatever happens (a bound on every
    /// run; [`Workload::finish`] usually comes first).
    pub limit: Duration,
}

impl LoadOptions {
    /// 250 messages/s of 256 bytes to `addr`, queue `vip-load`, at most 10
    /// minutes.
    #[must_use]
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            queue: "vip-load".to_owned(),
            rate: 250,
            size: 256,
            limit: Duration::from_mins(10),
        }
    }
}

/// Figures of a run, or of a window of one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Distinct ids published at least once.
    pub sent: u64,
    /// Distinct ids the broker confirmed.
    pub confirmed: u64,
    /// Publishes the broker nacked (each id goes out again).
    pub nacked: u64,
    /// Distinct ids delivered to the consumer.
    pub consumed: u64,
    /// Confirmed ids never delivered (only meaningful after
    /// [`Workload::finish`]; 0 in a window).
    pub lost: u64,
    /// Ids sent whose confirm had not come when the run ended, and where the
    /// publisher held them then (`in flight` on its channel, or `waiting`
    /// to go out again), e.g. `[14734] (in flight 1, waiting 0)`. Not lost:
    /// the broker never took responsibility for them.
    pub unconfirmed: String,
    /// The first lost ids, e.g. `[3702, 3703]`: the publisher numbers its
    /// messages in order, so an id tells when it was sent.
    pub lost_ids: String,
    /// Deliveries of an id already delivered.
    pub duplicates: u64,
    /// Connections the publisher had to make again.
    pub publisher_reconnects: u64,
    /// Connections the consumer had to make again.
    pub consumer_reconnects: u64,
    /// The longest time without a confirm while the publisher ran.
    pub longest_publish_stall: Duration,
    /// The longest time without a delivery while the publisher ran.
    pub longest_consume_gap: Duration,
    /// How long the run (or window) lasted.
    pub span: Duration,
}

impl Report {
    /// Reconnects of both clients.
    #[must_use]
    pub fn reconnects(&self) -> u64 {
        self.publisher_reconnects + self.consumer_reconnects
    }

    /// Confirmed messages per second over the span.
    #[must_use]
    pub fn confirm_rate(&self) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "a rate to print")]
        let n = self.confirmed as f64;
        n / self.span.as_secs_f64().max(1e-9)
    }

    /// One line for logs and tables.
    #[must_use]
    pub fn line(&self) -> String {
        format!(
            "sent {} confirmed {} consumed {} lost {} duplicates {} nacked {} reconnects {} \
             (publisher {}, consumer {}) longest publish stall {:.1} ms, longest consume gap {:.1} ms, \
             over {:.1} s ({:.0} confirms/s)",
            self.sent,
            self.confirmed,
            self.consumed,
            self.lost,
            self.duplicates,
            self.nacked,
            self.reconnects(),
            self.publisher_reconnects,
            self.consumer_reconnects,
            ms(self.longest_publish_stall),
            ms(self.longest_consume_gap),
            self.span.as_secs_f64(),
            self.confirm_rate(),
        ) + &if self.unconfirmed.is_empty() {
            String::new()
        } else {
            format!("; not confirmed (yet): {}", self.unconfirmed)
        } + &if self.lost_ids.is_empty() {
            String::new()
        } else {
            format!("; lost: {}", self.lost_ids)
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What both clients record, shared with the test thread.
#[derive(Debug, Default)]
struct Tally {
    sent: BTreeSet<u64>,
    confirmed: BTreeSet<u64>,
    /// When each nack came (in order).
    nack_times: Vec<Instant>,
    /// Deliveries per id.
    delivered: HashMap<u64, u32>,
    duplicates: u64,
    /// When each confirm came (in order).
    confirm_times: Vec<Instant>,
    /// When each first delivery came (in order).
    delivery_times: Vec<Instant>,
    /// The latest error each client saw, for the report of a failed run.
    last_error: Option<String>,
    /// Every lost connection: when, which client, why.
    drops: Vec<(Instant, Client, String)>,
    /// The publisher's last view: ids published on its channel and not
    /// answered yet, and ids waiting to go out again.
    in_flight: usize,
    waiting: usize,
}

/// One of the workload's two clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    Publisher,
    Consumer,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Self::Publisher => "publisher",
            Self::Consumer => "consumer",
        }
    }
}

impl Tally {
    /// Connections `who` lost between `from` and `to`.
    fn drops_of(&self, who: Client, from: Instant, to: Instant) -> u64 {
        self.drops
            .iter()
            .filter(|(at, c, _)| *c == who && *at >= from && *at <= to)
            .count() as u64
    }
}

/// A running workload; [`Workload::finish`] ends it.
pub struct Workload {
    opts: LoadOptions,
    started: Instant,
    tally: Arc<Mutex<Tally>>,
    /// Set: the publisher stops publishing new ids.
    stop_publishing: Arc<AtomicBool>,
    /// Set: both clients stop.
    stop_all: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

/// Starts the workload on a thread in `node`'s namespace of `lab` and
/// returns once both clients are connected and the first message was
/// confirmed and consumed (at most `ready` later).
pub fn start(lab: &Lab, node: &str, opts: LoadOptions, ready: Duration) -> Result<Workload> {
    if opts.size < 8 || opts.rate == 0 {
        bail!("a workload needs messages of at least 8 bytes and a rate above 0");
    }
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let stop_all = Arc::new(AtomicBool::new(false));
    let run = Run {
        opts: opts.clone(),
        tally: Arc::clone(&tally),
        stop_publishing: Arc::clone(&stop_publishing),
        stop_all: Arc::clone(&stop_all),
    };
    let thread = lab.try_ns(node)?.spawn_thread_in(move || run.main())?;
    let mut load = Workload {
        opts,
        started: Instant::now(),
        tally,
        stop_publishing,
        stop_all,
        thread: Some(thread),
    };
    let deadline = Instant::now() + ready;
    loop {
        {
            let t = load.lock();
            if !t.confirm_times.is_empty() && !t.delivery_times.is_empty() {
                break;
            }
        }
        if load.thread.as_ref().is_some_and(JoinHandle::is_finished) {
            let err = load.join().err();
            bail!("the workload ended before its first message went through: {err:?}");
        }
        if Instant::now() >= deadline {
            let why = load.lock().last_error.clone().unwrap_or_default();
            load.stop();
            bail!(
                "no message confirmed and consumed through {} within {ready:?} (last error: {why})",
                load.opts.addr
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    load.started = Instant::now();
    Ok(load)
}

impl Workload {
    fn lock(&self) -> MutexGuard<'_, Tally> {
        self.tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The figures between `from` and `to` (instants of this run): what was
    /// confirmed and consumed then, reconnects then, and the longest gaps
    /// between confirms and between deliveries, counting the edges of the
    /// window.
    #[must_use]
    pub fn window(&self, from: Instant, to: Instant) -> Report {
        let t = self.lock();
        let inside = |times: &[Instant]| -> Vec<Instant> {
            times
                .iter()
                .copied()
                .filter(|x| *x >= from && *x <= to)
                .collect()
        };
        let confirms = inside(&t.confirm_times);
        let deliveries = inside(&t.delivery_times);
        Report {
            sent: 0,
            confirmed: confirms.len() as u64,
            nacked: inside(&t.nack_times).len() as u64,
            consumed: deliveries.len() as u64,
            lost: 0,
            unconfirmed: String::new(),
            lost_ids: String::new(),
            duplicates: 0,
            publisher_reconnects: t.drops_of(Client::Publisher, from, to),
            consumer_reconnects: t.drops_of(Client::Consumer, from, to),
            longest_publish_stall: longest_gap(from, &confirms, to),
            longest_consume_gap: longest_gap(from, &deliveries, to),
            span: to.saturating_duration_since(from),
        }
    }

    /// The figures so far (`lost` counts confirmed ids not consumed yet).
    #[must_use]
    pub fn snapshot(&self) -> Report {
        self.report(Instant::now())
    }

    /// Every connection a client lost, one line each: seconds since the
    /// start, which client, the error.
    #[must_use]
    pub fn drops(&self) -> Vec<String> {
        let t = self.lock();
        t.drops
            .iter()
            .map(|(at, who, why)| {
                format!(
                    "{:+.3} s {}: {why}",
                    at.saturating_duration_since(self.started).as_secs_f64(),
                    who.name()
                )
            })
            .collect()
    }

    /// The latest error a client saw, if any.
    #[must_use]
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// Waits until `n` more messages are confirmed and consumed than now (at
    /// most `limit`): the workload is flowing again.
    pub fn wait_flowing(&self, n: u64, limit: Duration) -> Result<()> {
        self.wait_more(n, true, limit)
    }

    /// Waits until `n` more messages are confirmed than now (at most
    /// `limit`), whatever the consumer does: publishing goes on.
    pub fn wait_confirmed(&self, n: u64, limit: Duration) -> Result<()> {
        self.wait_more(n, false, limit)
    }

    fn wait_more(&self, n: u64, consumed_too: bool, limit: Duration) -> Result<()> {
        let (c0, d0) = {
            let t = self.lock();
            (t.confirm_times.len(), t.delivery_times.len())
        };
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        let deadline = Instant::now() + limit;
        loop {
            {
                let t = self.lock();
                if t.confirm_times.len() >= c0 + n
                    && (!consumed_too || t.delivery_times.len() >= d0 + n)
                {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "the workload did not confirm{} {n} more messages within {limit:?} \
                     (so far: {}; last error: {})",
                    if consumed_too { " and consume" } else { "" },
                    self.snapshot().line(),
                    self.last_error().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops publishing, waits (at most `drain`) until every confirmed id was
    /// consumed, stops both clients and reports the whole run.
    pub fn finish(mut self, drain: Duration) -> Result<Report> {
        self.stop_publishing.store(true, Ordering::Relaxed);
        let stopped = Instant::now();
        let deadline = stopped + drain;
        loop {
            let done = {
                let t = self.lock();
                t.confirmed.iter().all(|id| t.delivered.contains_key(id))
                    && t.sent.len() == t.confirmed.len()
            };
            if done || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        let report = self.report(stopped);
        self.join()?;
        Ok(report)
    }

    fn report(&self, end: Instant) -> Report {
        let t = self.lock();
        let lost_set: Vec<u64> = t
            .confirmed
            .iter()
            .filter(|id| !t.delivered.contains_key(id))
            .copied()
            .collect();
        let lost = lost_set.len() as u64;
        let lost_ids = if lost_set.is_empty() {
            String::new()
        } else {
            format!("{:?}", &lost_set[..lost_set.len().min(8)])
        };
        let from = self.started;
        let confirms: Vec<Instant> = t
            .confirm_times
            .iter()
            .copied()
            .filter(|x| *x >= from && *x <= end)
            .collect();
        let deliveries: Vec<Instant> = t
            .delivery_times
            .iter()
            .copied()
            .filter(|x| *x >= from && *x <= end)
            .collect();
        let open: Vec<u64> = t.sent.difference(&t.confirmed).take(8).copied().collect();
        let unconfirmed = if open.is_empty() {
            String::new()
        } else {
            format!(
                "{open:?} (in flight {}, waiting {})",
                t.in_flight, t.waiting
            )
        };
        Report {
            unconfirmed,
            lost_ids,
            sent: t.sent.len() as u64,
            confirmed: t.confirmed.len() as u64,
            nacked: t.nack_times.len() as u64,
            consumed: t.delivered.len() as u64,
            lost,
            duplicates: t.duplicates,
            publisher_reconnects: t.drops_of(Client::Publisher, from, end),
            consumer_reconnects: t.drops_of(Client::Consumer, from, end),
            longest_publish_stall: longest_gap(from, &confirms, end),
            longest_consume_gap: longest_gap(from, &deliveries, end),
            span: end.saturating_duration_since(from),
        }
    }

    fn stop(&mut self) {
        self.stop_publishing.store(true, Ordering::Relaxed);
        self.stop_all.store(true, Ordering::Relaxed);
    }

    fn join(&mut self) -> Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + JOIN_LIMIT;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                // Detached: it ends with the process.
                bail!("the workload's clients did not end within {JOIN_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        thread
            .join()
            .map_err(|_| anyhow!("the workload's thread panicked"))?
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop();
        if let Err(e) = self.join() {
            eprintln!("warning: workload: {e:#}");
        }
    }
}

/// Awaits one AMQP step for at most [`STEP_TIMEOUT`].
async fn step<T>(what: &str, f: impl std::future::Future<Output = lapin::Result<T>>) -> Result<T> {
    match tokio::time::timeout(STEP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(anyhow!("{what}: {e}")),
        Err(_) => Err(anyhow!("{what}: blocked for {STEP_TIMEOUT:?}")),
    }
}

/// The longest of: `from` to the first instant, between two instants, the
/// last to `to` (all of it when there is none).
fn longest_gap(from: Instant, times: &[Instant], to: Instant) -> Duration {
    let mut prev = from;
    let mut longest = Duration::ZERO;
    for t in times.iter().copied().chain(std::iter::once(to)) {
        longest = longest.max(t.saturating_duration_since(prev));
        prev = prev.max(t);
    }
    longest
}

/// The workload's side of the thread.
struct Run {
    opts: LoadOptions,
    tally: Arc<Mutex<Tally>>,
    stop_publishing: Arc<AtomicBool>,
    stop_all: Arc<AtomicBool>,
}

impl Run {
    fn main(self) -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build the workload's runtime")?;
        let run = Arc::new(self);
        rt.block_on(async {
            let publisher = tokio::spawn(Arc::clone(&run).publisher());
            let consumer = tokio::spawn(Arc::clone(&run).consumer());
            let (p, c) = tokio::join!(publisher, consumer);
            p.context("publisher task")?;
            c.context("consumer task")?;
            Ok(())
        })
    }

    fn lock(&self) -> MutexGuard<'_, Tally> {
        self.tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn note_error(&self, who: &str, e: &dyn std::fmt::Display) {
        self.lock().last_error = Some(format!("{who}: {e}"));
    }

    fn stopped(&self) -> bool {
        self.stop_all.load(Ordering::Relaxed)
    }

    /// Connects and opens a channel with the queue declared.
    async fn open(&self) -> Result<(Connection, Channel)> {
        let uri = format!("amqp://guest:guest@{}/%2f", self.opts.addr);
        let attempt = async {
            let conn = Connection::connect(&uri, ConnectionProperties::default()).await?;
            let channel = conn.create_channel().await?;
            let mut args = FieldTable::default();
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            channel
                .queue_declare(
                    self.opts.queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    args,
                )
                .await?;
            Ok::<_, lapin::Error>((conn, channel))
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(e)) => bail!("cannot connect to {}: {e}", self.opts.addr),
            Err(_) => bail!(
                "no AMQP connection to {} within {CONNECT_TIMEOUT:?}",
                self.opts.addr
            ),
        }
    }

    /// Connects until it works or the run stops.
    async fn connect(&self, who: &str) -> Option<(Connection, Channel)> {
        loop {
            if self.stopped() {
                return None;
            }
            match self.open().await {
                Ok(pair) => return Some(pair),
                Err(e) => self.note_error(who, &e),
            }
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }

    async fn publisher(self: Arc<Self>) {
        let deadline = Instant::now() + self.opts.limit;
        let period = Duration::from_secs(1) / self.opts.rate;
        // Ids to send again (unconfirmed when a connection went), first.
        let mut again: VecDeque<u64> = VecDeque::new();
        let mut next_id = 1u64;
        loop {
            let Some((conn, channel)) = self.connect("publisher").await else {
                return;
            };
            let outcome = self
                .publish_on(&channel, &mut again, &mut next_id, period, deadline)
                .await;
            if !self.ended(Client::Publisher, conn, outcome).await {
                return;
            }
        }
    }

    /// Publishes on one channel until the run stops (`Ok`) or the channel
    /// fails (`Err`, with every unconfirmed id queued in `again`).
    async fn publish_on(
        &self,
        channel: &Channel,
        again: &mut VecDeque<u64>,
        next_id: &mut u64,
        period: Duration,
        deadline: Instant,
    ) -> Result<()> {
        step(
            "confirm.select",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        // (id, Some(true)) acked, Some(false) nacked, None: no answer (the
        // channel went, or none within CONFIRM_TIMEOUT): sent again, on a
        // new connection.
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Option<bool>)>();
        // Ids published on this channel and not confirmed yet.
        let mut in_flight: BTreeSet<u64> = BTreeSet::new();
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut failed: Option<anyhow::Error> = None;
        // Nacks in a row: a channel whose every publish is refused is
        // given up, as a client would, and the publisher connects again.
        let mut nacks_in_a_row = 0u32;
        loop {
            let publishing = !self.stop_publishing.load(Ordering::Relaxed)
                && Instant::now() < deadline
                && !self.stopped();
            if !publishing && in_flight.is_empty() && again.is_empty() {
                return Ok(());
            }
            if self.stopped() {
                return Ok(());
            }
            {
                let mut t = self.lock();
                t.in_flight = in_flight.len();
                t.waiting = again.len();
            }
            tokio::select! {
                Some((id, answer)) = done_rx.recv() => {
                    in_flight.remove(&id);
                    failed = self.answered(channel, id, answer, again, &mut nacks_in_a_row);
                }
                _ = tick.tick(), if in_flight.len() < MAX_IN_FLIGHT => {
                    let id = match again.pop_front() {
                        Some(id) => id,
                        None if publishing => {
                            let id = *next_id;
                            *next_id += 1;
                            id
                        }
                        None => continue,
                    };
                    match self.publish(channel, id).await {
                        Ok(confirm) => {
                            in_flight.insert(id);
                            self.lock().sent.insert(id);
                            let tx = done_tx.clone();
                            tokio::spawn(async move {
                                let answer = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
                                    .await
                                    .ok()
                                    .and_then(Result::ok)
                                    .and_then(|c| match c {
                                        Confirmation::Ack(_) => Some(true),
                                        Confirmation::Nack(_) => Some(false),
                                        Confirmation::NotRequested => None,
                                    });
                                let _ = tx.send((id, answer));
                            });
                        }
                        Err(e) => {
                            again.push_front(id);
                            failed = Some(e);
                        }
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            if failed.is_none() && !channel.status().connected() {
                failed = Some(anyhow!("the channel is no longer connected"));
            }
            if let Some(e) = failed.take() {
                // Whatever is still in flight was not confirmed: send it again,
                // in id order, before anything new.
                for id in in_flight.iter().rev() {
                    again.push_front(*id);
                }
                return Err(e);
            }
        }
    }

    /// Records the broker's answer for `id` (`Some(true)` acked,
    /// `Some(false)` nacked, `None`: none) and says why the channel must be
    /// given up, if it must: a missing confirm, or
    /// [`MAX_NACKS_IN_A_ROW`] nacks in a row. Ids not acked go to `again`.
    fn answered(
        &self,
        channel: &Channel,
        id: u64,
        answer: Option<bool>,
        again: &mut VecDeque<u64>,
        nacks_in_a_row: &mut u32,
    ) -> Option<anyhow::Error> {
        let mut t = self.lock();
        match answer {
            Some(true) => {
                *nacks_in_a_row = 0;
                if t.confirmed.insert(id) {
                    t.confirm_times.push(Instant::now());
                }
                None
            }
            Some(false) => {
                t.nack_times.push(Instant::now());
                drop(t);
                again.push_back(id);
                *nacks_in_a_row += 1;
                (*nacks_in_a_row >= MAX_NACKS_IN_A_ROW)
                    .then(|| anyhow!("{nacks_in_a_row} publishes in a row nacked"))
            }
            None => {
                drop(t);
                again.push_back(id);
                Some(if channel.status().connected() {
                    anyhow!("no confirm for message {id} within {CONFIRM_TIMEOUT:?}")
                } else {
                    anyhow!("the channel is no longer connected")
                })
            }
        }
    }

    async fn publish(&self, channel: &Channel, id: u64) -> Result<PublisherConfirm> {
        let mut body = vec![0u8; self.opts.size];
        body[..8].copy_from_slice(&id.to_be_bytes());
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(id.to_string().into());
        step(
            &format!("basic.publish of message {id}"),
            channel.basic_publish(
                "".into(),
                self.opts.queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                props,
            ),
        )
        .await
    }

    /// Closes `who`'s connection after its run on it ended with `outcome`:
    /// `false` when the run is over, `true` (a lost connection, recorded,
    /// after the reconnect pause) when `who` should connect again.
    async fn ended(&self, who: Client, conn: Connection, outcome: Result<()>) -> bool {
        let _ =
            tokio::time::timeout(Duration::from_millis(500), conn.close(200, "bye".into())).await;
        let Err(e) = outcome else {
            return false;
        };
        self.note_error(who.name(), &e);
        self.lock()
            .drops
            .push((Instant::now(), who, format!("{e:#}")));
        tokio::time::sleep(RECONNECT_PAUSE).await;
        true
    }

    async fn consumer(self: Arc<Self>) {
        loop {
            let Some((conn, channel)) = self.connect("consumer").await else {
                return;
            };
            let outcome = self.consume_on(&channel).await;
            if !self.ended(Client::Consumer, conn, outcome).await {
                return;
            }
        }
    }

    async fn consume_on(&self, channel: &Channel) -> Result<()> {
        step(
            "basic.qos",
            channel.basic_qos(PREFETCH, BasicQosOptions::default()),
        )
        .await?;
        let mut deliveries = step(
            "basic.consume",
            channel.basic_consume(
                self.opts.queue.as_str().into(),
                "vip-load".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        loop {
            if self.stopped() {
                return Ok(());
            }
            let next = tokio::time::timeout(Duration::from_millis(50), deliveries.next()).await;
            let delivery = match next {
                Err(_) => {
                    if channel.status().connected() {
                        continue;
                    }
                    bail!("the channel is no longer connected");
                }
                Ok(None) => bail!("the consumer was cancelled"),
                Ok(Some(Err(e))) => bail!("delivery: {e}"),
                Ok(Some(Ok(d))) => d,
            };
            let id = delivery
                .properties
                .message_id()
                .as_ref()
                .and_then(|s| s.as_str().parse::<u64>().ok())
                .context("a delivery without a numeric message_id")?;
            {
                let mut t = self.lock();
                let n = t.delivered.entry(id).or_insert(0);
                *n += 1;
                if *n == 1 {
                    t.delivery_times.push(Instant::now());
                } else {
                    t.duplicates += 1;
                }
            }
            step(
                &format!("basic.ack of message {id}"),
                delivery.ack(BasicAckOptions::default()),
            )
            .await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_gap_counts_the_edges() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(
            longest_gap(t0, &[at(10), at(20), at(90)], at(100)),
            Duration::from_millis(70)
        );
        assert_eq!(longest_gap(t0, &[], at(40)), Duration::from_millis(40));
        assert_eq!(
            longest_gap(t0, &[at(5)], at(100)),
            Duration::from_millis(95)
        );
        assert_eq!(
            longest_gap(at(50), &[at(60)], at(65)),
            Duration::from_millis(10)
        );
    }
}
