//! A `RabbitMQ` cluster in the lab: one [`Broker`] per backend namespace,
//! one Erlang cookie, long node names (`rabbit@10.99.0.11`), classic-config
//! peer discovery and `pause_minority`, as in
//! `../shared/design/RABBITMQ.md`. The members start at once and form the
//! cluster with no ctl step; [`start_cluster`] returns when every member
//! reports every other one running.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};

use super::{Broker, BrokerOptions, Membership, prepare};
use crate::lab::Lab;

/// How long the members get to see each other once they answer AMQP.
const FORM_LIMIT: Duration = Duration::from_secs(90);

/// Brokers of one cluster; each is stopped and cleaned up on drop.
pub struct Cluster {
    brokers: Vec<Broker>,
    formed_in: Duration,
}

/// Starts a broker in each of `nodes` (backend nodes of `lab`, e.g.
/// `["b1", "b2", "b3"]`) at once, as members of one cluster, and waits until
/// each reports all of them running (at most about two minutes).
pub fn start_cluster(lab: &Lab, nodes: &[&str], opts: &BrokerOptions) -> Result<Cluster> {
    if nodes.len() < 2 {
        bail!("a cluster needs two nodes or more, not {nodes:?}");
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let membership = Membership {
        cookie: format!("VIPCLUSTER{nanos:X}{:X}", std::process::id()),
        nodes: nodes
            .iter()
            .map(|n| format!("rabbit@{}", lab.addr(n)))
            .collect(),
    };
    let started = Instant::now();
    let mut brokers = Vec::new();
    for node in nodes {
        brokers.push(prepare(lab, node, opts, Some(membership.clone()))?);
    }
    // Launch all at once: classic-config discovery waits for the others.
    let launched: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = brokers
            .iter_mut()
            .map(|b| s.spawn(move || b.launch()))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a broker's start panicked")))
            })
            .collect()
    });
    for outcome in launched {
        outcome?;
    }
    let mut cluster = Cluster {
        brokers,
        formed_in: Duration::ZERO,
    };
    cluster.wait_formed(nodes.len(), FORM_LIMIT)?;
    cluster.formed_in = started.elapsed();
    Ok(cluster)
}

impl Cluster {
    /// From the first start to every member seeing all the others.
    #[must_use]
    pub fn formed_in(&self) -> Duration {
        self.formed_in
    }

    /// The members, in the order they were named.
    #[must_use]
    pub fn brokers(&self) -> &[Broker] {
        &self.brokers
    }

    /// The member in lab node `node`.
    #[must_use]
    pub fn broker(&self, node: &str) -> &Broker {
        self.brokers
            .iter()
            .find(|b| b.node() == node)
            .unwrap_or_else(|| panic!("no cluster member in {node}"))
    }

    /// The member in lab node `node`, to stop, kill or start it.
    pub fn broker_mut(&mut self, node: &str) -> &mut Broker {
        self.brokers
            .iter_mut()
            .find(|b| b.node() == node)
            .unwrap_or_else(|| panic!("no cluster member in {node}"))
    }

    /// The node names `member` reports running (`rabbitmqctl
    /// cluster_status`), sorted.
    pub fn running_nodes(member: &Broker) -> Result<Vec<String>> {
        let out = member.rabbitmqctl(&["cluster_status", "--formatter", "json"])?;
        let v: serde_json::Value = serde_json::from_str(out.trim())
            .with_context(|| format!("cluster_status is not JSON: {out}"))?;
        let mut nodes: Vec<String> = v["running_nodes"]
            .as_array()
            .with_context(|| format!("cluster_status has no running_nodes: {out}"))?
            .iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect();
        nodes.sort();
        Ok(nodes)
    }

    /// Waits until every running member reports `count` running nodes.
    pub fn wait_formed(&self, count: usize, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let mut last = String::new();
            let mut all = true;
            for b in &self.brokers {
                match Self::running_nodes(b) {
                    Ok(nodes) if nodes.len() == count => {}
                    Ok(nodes) => {
                        all = false;
                        last = format!("{} sees {nodes:?}", b.nodename());
                    }
                    Err(e) => {
                        all = false;
                        last = format!("{e:#}");
                    }
                }
            }
            if all {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let logs: String = self.brokers.iter().map(|b| b.log_tail(15)).collect();
                bail!(
                    "the cluster did not show {count} running nodes within {limit:?}: {last}\n{logs}"
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Moves the leadership of quorum queue `queue` (vhost `/`) to the
    /// member `to` (a node name) with Ra's own `transfer_leadership`, run on
    /// the current leader, and waits (at most 30 s) until the cluster
    /// reports `to` as the leader.
    pub fn move_leader(&self, queue: &str, to: &str) -> Result<()> {
        let leader = Self::queue_leader(&self.brokers[0], queue)?;
        if leader == to {
            return Ok(());
        }
        let on = self
            .brokers
            .iter()
            .find(|b| b.nodename() == leader)
            .with_context(|| format!("the leader {leader} is no member"))?;
        // The Ra cluster of a quorum queue is named after the URL-encoded
        // vhost and the queue: '%2F_<queue>'.
        let ra = format!("'%2F_{queue}'");
        let out = on.rabbitmqctl(&[
            "eval",
            &format!("ra:transfer_leadership({{{ra}, node()}}, {{{ra}, '{to}'}})."),
        ])?;
        if !matches!(out.trim(), "ok" | "already_leader") {
            bail!("moving the leader of {queue} to {to}: {}", out.trim());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = Self::queue_leader(&self.brokers[0], queue)?;
            if now == to {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the leader of {queue} is still {now}, not {to}, 30 s after the transfer");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The node name of `queue`'s Raft leader, as `member` reports it
    /// (`rabbitmqctl list_queues name leader`).
    pub fn queue_leader(member: &Broker, queue: &str) -> Result<String> {
        let out = member.rabbitmqctl(&[
            "list_queues",
            "name",
            "leader",
            "--formatter",
            "json",
            "--quiet",
        ])?;
        let v: serde_json::Value = serde_json::from_str(out.trim())
            .with_context(|| format!("list_queues is not JSON: {out}"))?;
        v.as_array()
            .and_then(|qs| {
                qs.iter()
                    .find(|q| q["name"] == queue)
                    .and_then(|q| q["leader"].as_str().map(str::to_owned))
            })
            .with_context(|| format!("no leader of {queue} in {out}"))
    }
}
