//! `cargo xtask run` with no arguments: a three-node `RabbitMQ` quorum
//! cluster behind two vip nodes, an AMQP workload through the VIP, a load
//! balancer failover and a broker crash, each with what the clients saw.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use vip_tests::{
    broker::{BrokerOptions, start_cluster},
    lab::{Lab, LabOptions, VIP, agent_config, format_mac},
    workload::{self, LoadOptions, Workload},
};

use crate::demo::{AgentProc, show, start_agent, vipctl, wait_until};

const BACKENDS: [(&str, u32); 3] = [("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)];
const BROKERS: [&str; 3] = ["b1", "b2", "b3"];
/// Messages per second the demo's publisher sends.
const RATE: u32 = 250;

/// lb's configuration: the lab's service with an AMQP check every 200 ms,
/// and `VI_1` at `priority` with 10 ms adverts.
fn config(node: &str, bpffs: &Path, priority: u8) -> String {
    format!(
        "{}check = {{ kind = \"amqp\", interval = \"200ms\", timeout = \"300ms\", rise = 2, fall = 2 }}\n\n\
         [[vrrp]]\nname = \"VI_1\"\nvrid = 51\npriority = {priority}\nadvert_interval = \"10ms\"\nvips = [\"{VIP}\"]\n",
        agent_config(node, bpffs, &BACKENDS)
    )
}

/// Waits until `load` has confirmed and consumed `RATE` more messages, then
/// half a second, and prints the figures from `from` to then.
fn figures(load: &Workload, what: &str, from: Instant) -> Result<()> {
    load.wait_flowing(u64::from(RATE), Duration::from_mins(1))?;
    std::thread::sleep(Duration::from_millis(500));
    let r = load.window(from, Instant::now());
    show(
        what,
        &format!(
            "reconnects: {} (publisher {}, consumer {})\n\
             longest publish stall: {:.1} ms, longest gap in consumption: {:.1} ms\n\
             confirmed {} and consumed {} messages meanwhile",
            r.reconnects(),
            r.publisher_reconnects,
            r.consumer_reconnects,
            r.longest_publish_stall.as_secs_f64() * 1e3,
            r.longest_consume_gap.as_secs_f64() * 1e3,
            r.confirmed,
            r.consumed,
        ),
    );
    Ok(())
}

/// Starts lb1 (priority 150) and lb2 (100) with their configs in `dir`;
/// returns each agent with its pins.
fn start_pair(lab: &Lab, bins: &Path, dir: &Path) -> Result<Vec<(AgentProc, PathBuf)>> {
    let mut agents = Vec::new();
    for (node, priority) in [("lb1", 150), ("lb2", 100)] {
        let bpffs = dir.join(format!("{node}-bpffs"));
        let cfg = dir.join(format!("{node}.toml"));
        std::fs::write(&cfg, config(node, &bpffs, priority))?;
        if node == "lb1" {
            show(
                "lb1's configuration (lb2's differs only in name, pins and priority 100)",
                &std::fs::read_to_string(&cfg)?,
            );
        }
        agents.push((start_agent(lab, bins, node, &cfg, &bpffs)?, bpffs));
    }
    Ok(agents)
}

/// Waits until lb1 is master and lb2 backup; shows lb1's status.
fn elected(bins: &Path, lb1_pins: &Path, lb2_pins: &Path) -> Result<()> {
    wait_until("lb1 to win the election", Duration::from_secs(5), || {
        vipctl(bins, lb1_pins, &["vips"]).is_ok_and(|o| o.contains("master"))
            && vipctl(bins, lb2_pins, &["vips"]).is_ok_and(|o| o.contains("backup"))
    })?;
    let sock = vip_tests::lab::control_socket("lb1", lb1_pins);
    show(
        "vipctl status on lb1",
        &vipctl(
            bins,
            lb1_pins,
            &["--socket", &sock.display().to_string(), "status"],
        )?,
    );
    Ok(())
}

/// The demo; the lab, the brokers and the agents are gone when it returns.
pub fn run(bins: &Path) -> Result<()> {
    let t0 = Instant::now();
    let mut opts = LabOptions::unique("rmqdemo");
    opts.backend_bin = bins.join("vip-lab-backend");
    opts.start_backends = false;
    let lab = Lab::up(opts).context("bring up the lab")?;
    let (lb1_mac, lb2_mac) = (format_mac(lab.mac("lb1")), format_mac(lab.mac("lb2")));
    println!(
        "lab {} up in {:?}: client 10.99.0.10, lb1 10.99.0.2 ({lb1_mac}), lb2 10.99.0.3 ({lb2_mac}), \
         RabbitMQ on b1..b3 10.99.0.11-13, VIP {VIP}",
        lab.prefix(),
        lab.setup_time(),
    );
    println!("starting a three-node RabbitMQ cluster (one broker per backend namespace)...");
    let mut cluster = start_cluster(&lab, &BROKERS, &BrokerOptions::default())
        .context("start the RabbitMQ cluster")?;
    println!(
        "cluster formed in {:.1} s: {}",
        cluster.formed_in().as_secs_f64(),
        cluster
            .brokers()
            .iter()
            .map(|b| b.nodename().to_owned())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let dir = PathBuf::from(format!("/run/vip-demo/{}", lab.prefix()));
    std::fs::create_dir_all(&dir)?;
    let mut agents = start_pair(&lab, bins, &dir)?;
    let (lb1_pins, lb2_pins) = (agents[0].1.clone(), agents[1].1.clone());
    elected(bins, &lb1_pins, &lb2_pins)?;

    let mut opts = LoadOptions::new((VIP, vip_tests::broker::AMQP_PORT).into());
    opts.rate = RATE;
    opts.limit = Duration::from_mins(5);
    let load = workload::start(&lab, "client", opts, Duration::from_secs(30))
        .context("start the AMQP workload through the VIP")?;
    load.wait_flowing(u64::from(RATE) * 2, Duration::from_secs(20))?;
    show(
        "the workload: a publisher (confirms, persistent messages) and a consumer (manual acks) on quorum queue vip-load, through the VIP",
        &load.snapshot().line(),
    );
    show(
        "vipctl backends on lb1 (the AMQP check probes each broker every 200 ms)",
        &vipctl(bins, &lb1_pins, &["backends"])?,
    );

    // A load balancer failover: kill -9 of lb1's agent.
    let from = Instant::now();
    if let Some(mut c) = agents[0].0.0.take() {
        c.kill()?;
        c.wait()?;
    }
    wait_until("lb2 to take over", Duration::from_secs(5), || {
        vipctl(bins, &lb2_pins, &["vips"]).is_ok_and(|o| o.contains("master"))
    })?;
    figures(
        &load,
        "kill -9 of lb1's agent: lb2 takes over; the clients' connections stay on their brokers",
        from,
    )?;

    // A broker crash: the one holding most of the clients' connections.
    let client = vip_tests::lab::node_addr("client").context("the client's address")?;
    let victim = BROKERS
        .iter()
        .copied()
        .max_by_key(|b| cluster.broker(b).connections_from(client).unwrap_or(0))
        .unwrap_or("b1");
    let from = Instant::now();
    cluster.broker_mut(victim).kill9()?;
    figures(
        &load,
        &format!(
            "kill -9 of the broker in {victim}: its clients reconnect through the VIP to a live one; the quorum keeps the queue"
        ),
        from,
    )?;
    show(
        "vipctl backends on lb2",
        &vipctl(bins, &lb2_pins, &["backends"])?,
    );

    let report = load.finish(Duration::from_secs(30))?;
    show(
        "the whole run (lost = confirmed by the broker but never consumed)",
        &report.line(),
    );
    drop(agents);
    drop(cluster);
    drop(lab);
    println!(
        "\nagents and brokers stopped, lab removed. Demo took {:.0} s.",
        t0.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = dir.parent().map(std::fs::remove_dir);
    Ok(())
}
