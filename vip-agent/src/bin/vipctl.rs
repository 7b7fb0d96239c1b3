//! `vipctl`: inspects a node through the maps it pinned, so `backends`,
//! `flows`, `table`, `stats` and `vips` work even when the agent is dead or
//! hung; `status`, `drain`, `undrain` and `reload` ask the agent through its
//! control socket and say so when it is not running. Every read verb takes
//! `--json`. Exit codes: 0 success, 1 runtime failure (agent not running),
//! 2 usage or configuration error. `import-keepalived` converts a
//! keepalived.conf into vip TOML and needs no running node.
#![allow(
    clippy::result_large_err,
    reason = "aya's error types are large; errors are rare"
)]

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::Parser as _;
use serde_json::json;
use vip_agent::{
    cli::vipctl::{Args, Verb},
    control::{self, Command},
    dataplane::{Maps, pin_dir},
    error_chain, import, maglev,
    net::fmt_mac,
};
use vip_common::{
    BACKEND_DOWN, BACKEND_DRAINING, BACKEND_ENABLED, BACKEND_LOCAL, NO_BACKEND, Proto, counter,
};

fn main() -> ExitCode {
    let args = Args::parse();
    if let Verb::ImportKeepalived {
        file,
        iface,
        config_id,
    } = &args.verb
    {
        let opts = import::Options {
            interface: iface.clone(),
            name: args.node.clone(),
            config_id: config_id.clone(),
        };
        return import_keepalived(file, &opts);
    }
    let out = match &args.verb {
        Verb::Status => agent_request(&args, Command::Status),
        Verb::Drain { address } => agent_request(&args, Command::Drain { address: *address }),
        Verb::Undrain { address } => agent_request(&args, Command::Undrain { address: *address }),
        Verb::Reload => agent_request(&args, Command::Reload),
        _ => read_pins(&args),
    };
    match out {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err((code, msg)) => {
            eprintln!("vipctl: {msg}");
            ExitCode::from(code)
        }
    }
}

/// `import-keepalived`: the TOML on stdout, the notes on stderr; exit 0 when
/// TOML was printed (notes or not), 2 when the file cannot be read or used.
fn import_keepalived(file: &Path, opts: &import::Options) -> ExitCode {
    match import::import(file, opts) {
        Ok(imported) => {
            print!("{}", imported.toml);
            for note in &imported.notes {
                eprintln!("{note}");
            }
            if !imported.notes.is_empty() {
                eprintln!(
                    "vipctl: {} item(s) above have no exact equivalent in vip; review them before using the TOML",
                    imported.notes.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vipctl: {}", error_chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}

/// The verbs that read the pinned maps.
fn read_pins(args: &Args) -> Out {
    let dir = node_dir(&args.bpffs, args.node.as_deref()).map_err(|m| (2, m))?;
    let maps = Maps::open_pinned(&dir).map_err(|e| (1, error_chain(&e)))?;
    match &args.verb {
        Verb::Backends => backends(&maps, args.json),
        Verb::Flows => flows(&maps, args.json),
        Verb::Table { service } => table(&maps, service, args.json),
        Verb::Stats { watch: false, .. } => stats(&maps, args.json),
        Verb::Stats { watch: true, count } => watch(&maps, *count),
        Verb::Vips => vips(&maps, args.json),
        Verb::Status
        | Verb::Drain { .. }
        | Verb::Undrain { .. }
        | Verb::Reload
        | Verb::ImportKeepalived { .. } => {
            unreachable!("verbs that read no pins")
        }
    }
}

/// The control socket: `--socket`, else /run/vip/<node>.sock with the node
/// from `--node` or the only one pinned.
fn socket_path(args: &Args) -> Result<PathBuf, (u8, String)> {
    if let Some(p) = &args.socket {
        return Ok(p.clone());
    }
    let node = match &args.node {
        Some(n) => n.clone(),
        None => node_dir(&args.bpffs, None)
            .map_err(|m| (1, format!("{m}; or name the agent's socket with --socket")))?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    Ok(PathBuf::from(format!("/run/vip/{node}.sock")))
}

fn agent_request(args: &Args, command: Command) -> Out {
    let path = socket_path(args)?;
    let status_verb = command == Command::Status;
    let reply = control::request(&path, command, std::time::Duration::from_secs(30))
        .map_err(|e| (1, error_chain(&e)))?;
    if !reply.ok {
        let code = reply
            .exit_code
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(1);
        return Err((
            code,
            reply.error.unwrap_or_else(|| "the agent refused".into()),
        ));
    }
    if status_verb {
        let status = reply
            .status
            .ok_or((1, "the agent sent no status".to_owned()))?;
        return Ok(if args.json {
            serde_json::to_string_pretty(&status).expect("json")
        } else {
            show_status(&status)
        });
    }
    let message = reply.message.unwrap_or_default();
    Ok(if args.json {
        serde_json::to_string_pretty(&json!({ "ok": true, "message": message })).expect("json")
    } else {
        message
    })
}

fn show_status(st: &control::Status) -> String {
    let mut s = format!(
        "node {} on {} (XDP {}), pid {}, up {:.1}s, heartbeat {:.1} ms old (dead after {:.0} ms), {} reload(s)\n",
        st.node,
        st.interface,
        st.xdp_mode,
        st.pid,
        st.uptime_s,
        st.heartbeat_age_ms,
        st.dead_time_ms,
        st.reloads
    );
    if !st.instances.is_empty() {
        let _ = writeln!(
            s,
            "\n{:<12} {:>4} {:<7} {:>8} {:>9} {:<18} {:>8} {:>9}",
            "instance", "vrid", "state", "priority", "since", "vips", "sent", "received"
        );
        for i in &st.instances {
            let prio = if i.priority == i.base_priority {
                i.priority.to_string()
            } else {
                format!("{}/{}", i.priority, i.base_priority)
            };
            let vips: Vec<String> = i
                .vips
                .iter()
                .map(|v| match i.vlans.get(v) {
                    Some(id) => format!("{v}@vlan{id}"),
                    None => v.to_string(),
                })
                .collect();
            let _ = writeln!(
                s,
                "{:<12} {:>4} {:<7} {:>8} {:>8.1}s {:<18} {:>8} {:>9}",
                i.name,
                i.vrid,
                i.state,
                prio,
                i.since_s,
                vips.join(","),
                i.adverts_sent,
                i.adverts_received
            );
        }
    }
    if !st.checks.is_empty() {
        let _ = writeln!(s, "\n{:<20} {:<6} {:<5} reason", "check", "kind", "state");
        for c in &st.checks {
            let _ = writeln!(
                s,
                "{:<20} {:<6} {:<5} {}",
                c.name,
                c.kind,
                if c.up { "up" } else { "down" },
                c.reason
            );
        }
    }
    for svc in &st.services {
        let _ = writeln!(
            s,
            "\nservice {}:{}/{}{}",
            svc.vip,
            svc.port,
            svc.protocol,
            svc.check
                .as_ref()
                .map(|c| format!(" (check {c})"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "  {:<15} {:>6} {:<6} {:<8} {:<5} {:>12} {:>14}  reason",
            "backend", "weight", "health", "drain", "table", "packets", "bytes"
        );
        for b in &svc.backends {
            let _ = writeln!(
                s,
                "  {:<15} {:>6} {:<6} {:<8} {:<5} {:>12} {:>14}  {}",
                b.address,
                b.weight,
                if b.up { "up" } else { "down" },
                if b.draining { "draining" } else { "-" },
                if b.in_table { "yes" } else { "no" },
                b.packets,
                b.bytes,
                b.reason
            );
        }
    }
    s.trim_end().to_owned()
}

/// `stats --watch`: per-second rates by verdict and by backend, redrawn.
fn watch(maps: &Maps, count: Option<u64>) -> Out {
    let sample = || -> Result<_, (u8, String)> {
        let c = maps.counters().map_err(|e| fail(&e))?;
        let mut per_backend = Vec::new();
        for (id, b) in maps.backends().map_err(|e| fail(&e))?.iter().enumerate() {
            if b.flags & BACKEND_ENABLED != 0 {
                let id = u32::try_from(id).expect("small");
                let st = maps.backend_stats(id).map_err(|e| fail(&e))?;
                per_backend.push((ip(b.addr), st.packets, st.bytes));
            }
        }
        Ok((std::time::Instant::now(), c, per_backend))
    };
    let mut prev = sample()?;
    let mut n = 0;
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let cur = sample()?;
        let dt = cur.0.duration_since(prev.0).as_secs_f64();
        #[expect(clippy::cast_precision_loss, reason = "rates")]
        let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
        let mut s = String::from("\x1b[2J\x1b[H");
        let _ = writeln!(s, "{:<16} {:>14} {:>12}", "verdict", "total", "packets/s");
        for (i, name) in counter::NAMES.iter().enumerate() {
            let _ = writeln!(
                s,
                "{name:<16} {:>14} {:>12.0}",
                cur.1[i],
                rate(cur.1[i], prev.1[i])
            );
        }
        let _ = writeln!(
            s,
            "\n{:<15} {:>12} {:>12}",
            "backend", "packets/s", "bytes/s"
        );
        for (addr, p, b) in &cur.2 {
            let (pp, pb) = prev
                .2
                .iter()
                .find(|(a, _, _)| a == addr)
                .map_or((0, 0), |(_, p, b)| (*p, *b));
            let _ = writeln!(
                s,
                "{addr:<15} {:>12.0} {:>12.0}",
                rate(*p, pp),
                rate(*b, pb)
            );
        }
        print!("{s}");
        prev = cur;
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return Ok(String::new());
        }
    }
}

type Out = Result<String, (u8, String)>;

fn fail(e: &vip_agent::dataplane::DataplaneError) -> (u8, String) {
    (1, error_chain(e))
}

fn node_dir(bpffs: &Path, node: Option<&str>) -> Result<PathBuf, String> {
    if let Some(n) = node {
        return Ok(pin_dir(bpffs, n));
    }
    let root = bpffs.join("vip");
    let nodes: Vec<String> = std::fs::read_dir(&root)
        .map_err(|e| format!("no vip node is pinned under {} ({e}); is the agent running? use --bpffs for another pin root", root.display()))?
        .filter_map(std::result::Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match nodes.as_slice() {
        [one] => Ok(root.join(one)),
        [] => Err(format!("no vip node is pinned under {}", root.display())),
        many => Err(format!(
            "several nodes are pinned under {}: {}; pick one with --node",
            root.display(),
            many.join(", ")
        )),
    }
}

fn ip(raw: u32) -> Ipv4Addr {
    Ipv4Addr::from(raw.to_ne_bytes())
}

fn flag_names(flags: u32) -> Vec<&'static str> {
    let mut v = Vec::new();
    if flags & BACKEND_LOCAL != 0 {
        v.push("local");
    }
    if flags & BACKEND_DRAINING != 0 {
        v.push("draining");
    }
    if flags & BACKEND_DOWN != 0 {
        v.push("down");
    }
    v
}

fn backends(maps: &Maps, json_out: bool) -> Out {
    let services = maps.services().map_err(|e| fail(&e))?;
    let mut rows = Vec::new();
    for (id, b) in maps.backends().map_err(|e| fail(&e))?.iter().enumerate() {
        if b.flags & BACKEND_ENABLED == 0 {
            continue;
        }
        let id = u32::try_from(id).expect("small");
        let stats = maps.backend_stats(id).map_err(|e| fail(&e))?;
        let svc = services
            .get(&b.service)
            .map(|(k, _)| format!("{}:{}", ip(k.vip), u16::from_be(k.port)));
        rows.push(json!({
            "id": id,
            "service": svc,
            "address": ip(b.addr).to_string(),
            "mac": fmt_mac(&b.mac),
            "ifindex": b.ifindex,
            "flags": flag_names(b.flags),
            "packets": stats.packets,
            "bytes": stats.bytes,
        }));
    }
    if json_out {
        return Ok(serde_json::to_string_pretty(&rows).expect("json"));
    }
    let mut s = format!(
        "{:<4} {:<20} {:<15} {:<17} {:>7} {:>12} {:>14}  flags\n",
        "id", "service", "address", "mac", "ifindex", "packets", "bytes"
    );
    for r in &rows {
        let _ = writeln!(
            s,
            "{:<4} {:<20} {:<15} {:<17} {:>7} {:>12} {:>14}  {}",
            r["id"].as_u64().unwrap_or(0),
            r["service"].as_str().unwrap_or("?"),
            r["address"].as_str().unwrap_or(""),
            r["mac"].as_str().unwrap_or(""),
            r["ifindex"].as_u64().unwrap_or(0),
            r["packets"].as_u64().unwrap_or(0),
            r["bytes"].as_u64().unwrap_or(0),
            r["flags"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(","))
                .unwrap_or_default()
        );
    }
    Ok(s.trim_end().to_owned())
}

fn flows(maps: &Maps, json_out: bool) -> Out {
    let backends = maps.backends().map_err(|e| fail(&e))?;
    let rows: Vec<_> = maps
        .flows()
        .map_err(|e| fail(&e))?
        .into_iter()
        .map(|(k, v)| {
            let backend = backends
                .get(v.backend as usize)
                .map(|b| ip(b.addr).to_string());
            json!({
                "client": format!("{}:{}", ip(k.src), u16::from_be(k.sport)),
                "vip": format!("{}:{}", ip(k.dst), u16::from_be(k.dport)),
                "protocol": Proto::from_number(k.proto).map_or("?", Proto::name),
                "backend_id": v.backend,
                "backend": backend,
            })
        })
        .collect();
    if json_out {
        return Ok(serde_json::to_string_pretty(&rows).expect("json"));
    }
    let mut s = format!(
        "{:<22} {:<22} {:<5} {}\n",
        "client", "vip", "proto", "backend"
    );
    for r in &rows {
        let _ = writeln!(
            s,
            "{:<22} {:<22} {:<5} {}",
            r["client"].as_str().unwrap_or(""),
            r["vip"].as_str().unwrap_or(""),
            r["protocol"].as_str().unwrap_or(""),
            r["backend"].as_str().unwrap_or("?")
        );
    }
    let _ = write!(s, "{} flow(s)", rows.len());
    Ok(s)
}

fn parse_service(s: &str) -> Option<(Ipv4Addr, u16, Proto)> {
    let (addr, proto) = match s.split_once('/') {
        Some((a, "tcp")) => (a, Proto::Tcp),
        Some((a, "udp")) => (a, Proto::Udp),
        Some(_) => return None,
        None => (s, Proto::Tcp),
    };
    let (vip, port) = addr.split_once(':')?;
    Some((vip.parse().ok()?, port.parse().ok()?, proto))
}

fn table(maps: &Maps, service: &str, json_out: bool) -> Out {
    let (vip, port, proto) = parse_service(service)
        .ok_or_else(|| (2, format!("{service:?} is not a service; write VIP:PORT or VIP:PORT/udp, e.g. 10.99.0.100:5672")))?;
    let key = vip_agent::agent::service_key(vip, port, proto);
    let table = maps
        .live_table(&key)
        .map_err(|_| (1, format!("no service {service} in the pinned maps")))?;
    let backends = maps.backends().map_err(|e| fail(&e))?;
    let total = table.len();
    let rows: Vec<_> = maglev::shares(&table)
        .into_iter()
        .map(|(id, slots)| {
            let addr = if id == NO_BACKEND { None } else { backends.get(id as usize).map(|b| ip(b.addr).to_string()) };
            #[expect(clippy::cast_precision_loss, reason = "a percentage")]
            let pct = f64::from(slots) * 100.0 / total as f64;
            json!({ "backend_id": id, "backend": addr, "slots": slots, "share_percent": (pct * 100.0).round() / 100.0 })
        })
        .collect();
    if json_out {
        return Ok(serde_json::to_string_pretty(
            &json!({ "service": service, "slots": total, "backends": rows }),
        )
        .expect("json"));
    }
    let mut s = format!(
        "service {service}: {total} slots\n{:<4} {:<15} {:>7} {:>8}\n",
        "id", "backend", "slots", "share"
    );
    for r in &rows {
        let _ = writeln!(
            s,
            "{:<4} {:<15} {:>7} {:>7.2}%",
            r["backend_id"].as_u64().unwrap_or(0),
            r["backend"].as_str().unwrap_or("(none)"),
            r["slots"].as_u64().unwrap_or(0),
            r["share_percent"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(s.trim_end().to_owned())
}

fn stats(maps: &Maps, json_out: bool) -> Out {
    let c = maps.counters().map_err(|e| fail(&e))?;
    let hb = maps.heartbeat().map_err(|e| fail(&e))?;
    let age_ms = vip_agent::dataplane::monotonic_ns().saturating_sub(hb.stamp_ns) / 1_000_000;
    if json_out {
        let counters: serde_json::Map<String, serde_json::Value> = counter::NAMES
            .iter()
            .zip(c.iter())
            .map(|(n, v)| ((*n).to_owned(), json!(v)))
            .collect();
        return Ok(serde_json::to_string_pretty(&json!({
            "counters": counters,
            "heartbeat_age_ms": age_ms,
            "heartbeat_dead_after_ms": hb.dead_after_ns / 1_000_000,
        }))
        .expect("json"));
    }
    let mut s = String::new();
    for (n, v) in counter::NAMES.iter().zip(c.iter()) {
        let _ = writeln!(s, "{n:<16} {v:>14}");
    }
    let _ = write!(
        s,
        "heartbeat age {age_ms} ms (dead after {} ms)",
        hb.dead_after_ns / 1_000_000
    );
    Ok(s)
}

fn vips(maps: &Maps, json_out: bool) -> Out {
    let hb = maps.heartbeat().map_err(|e| fail(&e))?;
    let fresh = hb.is_fresh(vip_agent::dataplane::monotonic_ns());
    let rows: Vec<_> = maps
        .vips()
        .map_err(|e| fail(&e))?
        .into_iter()
        .map(|(vip, st)| {
            json!({
                "vip": vip.to_string(),
                "active": st.active == 1,
                "answering": st.active == 1 && fresh,
                "mac": fmt_mac(&st.mac),
                "vlan": st.vlan,
            })
        })
        .collect();
    if json_out {
        return Ok(serde_json::to_string_pretty(&rows).expect("json"));
    }
    let mut s = format!(
        "{:<15} {:<8} {:<10} {:<17} {}\n",
        "vip", "role", "answering", "mac", "vlan"
    );
    for r in &rows {
        let active = r["active"].as_bool().unwrap_or(false);
        let vlan = match r["vlan"].as_u64() {
            Some(0) | None => "-".to_owned(),
            Some(id) => id.to_string(),
        };
        let _ = writeln!(
            s,
            "{:<15} {:<8} {:<10} {:<17} {vlan}",
            r["vip"].as_str().unwrap_or(""),
            if active { "master" } else { "backup" },
            if r["answering"].as_bool().unwrap_or(false) {
                "yes"
            } else {
                "no"
            },
            r["mac"].as_str().unwrap_or("")
        );
    }
    if !fresh {
        s.push_str("(heartbeat stale: the agent is not running or hung; XDP is passive)\n");
    }
    Ok(s.trim_end().to_owned())
}
