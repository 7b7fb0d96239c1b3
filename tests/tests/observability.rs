//! What an operator reads: the agent's log written to a pipe (a file,
//! journald's stdout capture) carries no terminal escape sequences; with
//! `--log-format journald` each event reaches the journal's socket as native
//! journal fields (a socket of the test's, in a mount namespace of the
//! agent's own); and every query of the shipped Grafana dashboard names a
//! metric that a live `/metrics` scrape holds.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::net::UnixDatagram,
    path::Path,
    time::{Duration, Instant},
};

use vip_agent::{
    check::Probe,
    cli::agent::JOURNAL_FIELD_PREFIX,
    config::{Check, Config},
};
use vip_tests::{
    kit::{self, Agent, DirGuard, Setup, VIP, config, is_root, wait_for},
    lab::Lab,
    sys::journal_fields,
};

const METRICS_PORT: u16 = 9650;

/// lb1 alone, master of one instance over the lab's service, serving
/// metrics, with a node check and a service check, so every family the
/// agent exports has samples.
fn master_config(lab: &Lab) -> Config {
    let mut cfg = config::node(lab, "lb1", &[("10.99.0.11", 1), ("10.99.0.12", 1)]);
    let mut vrrp = config::vrrp("VI_1", 51, 150, &[VIP]);
    vrrp.election.advert_interval = Duration::from_millis(100);
    vrrp.track = vec![config::track("b1-up", -10)];
    cfg.vrrp.push(vrrp);
    cfg.node.metrics = Some(([127, 0, 0, 1], METRICS_PORT).into());
    cfg.checks.push(Check {
        name: "b1-up".into(),
        probe: Probe::Tcp,
        address: Some("10.99.0.11".parse().unwrap()),
        port: Some(5672),
        schedule: config::schedule(),
        line: 0,
    });
    cfg.services[0].check = Some(config::tcp_check());
    cfg
}

#[test]
fn a_log_written_to_a_pipe_has_no_escape_sequences() {
    if !is_root() {
        eprintln!("skipping: needs root (netns, XDP)");
        return;
    }
    let lab = kit::lab("log");
    let agent = Agent::start_full(&lab, "lb1", master_config(&lab), Setup::logged());
    // The transition line has fields (instance=, vrid=, ...), which the
    // terminal format wraps in escape codes.
    let log = wait_for(
        "the master transition in the log",
        Duration::from_secs(10),
        || {
            let log = agent.log_tail(200);
            log.lines()
                .any(|l| l.contains("master") && l.contains("VI_1"))
                .then_some(log)
        },
    );
    assert!(log.contains("XDP attached"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "the log has escape sequences (NO_COLOR is not set, stderr is a file):\n{log:?}"
    );
}

/// The datagrams the agent sent to the journal socket in `dir`, each as
/// its fields, until `done` holds for one of them or `limit` passes.
fn journal_until(
    sock: &UnixDatagram,
    limit: Duration,
    done: impl Fn(&BTreeMap<String, String>) -> bool,
) -> Vec<BTreeMap<String, String>> {
    let deadline = Instant::now() + limit;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut entries = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while Instant::now() < deadline {
        let Ok(n) = sock.recv(&mut buf) else { continue };
        if n == 0 {
            continue; // tracing-journald's probe of the socket
        }
        let fields = journal_fields(&buf[..n])
            .unwrap_or_else(|| panic!("not the journal's native protocol: {:?}", &buf[..n]));
        let entry: BTreeMap<String, String> = fields
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let stop = done(&entry);
        entries.push(entry);
        if stop {
            return entries;
        }
    }
    panic!("timed out after {limit:?}; the journal got:\n{entries:#?}");
}

#[test]
fn journald_format_sends_each_field_as_a_journal_field() {
    if !is_root() {
        eprintln!("skipping: needs root (netns, XDP, mount namespaces)");
        return;
    }
    let lab = kit::lab("journal");
    let dir = DirGuard::new(kit::agent_dir(&lab, "journal"));
    let sock = UnixDatagram::bind(dir.0.join("socket")).expect("the journal socket");
    let _agent = Agent::start_full(
        &lab,
        "lb1",
        master_config(&lab),
        Setup {
            journal: Some(dir.0.clone()),
            ..Setup::default()
        },
    );
    let instance = format!("{JOURNAL_FIELD_PREFIX}_INSTANCE");
    let entries = journal_until(&sock, Duration::from_secs(10), |e| {
        e.get("MESSAGE").is_some_and(|m| m == "master")
    });
    let master = entries.last().unwrap();
    assert_eq!(
        master.get(&instance).map(String::as_str),
        Some("VI_1"),
        "{master:#?}"
    );
    assert_eq!(
        master.get("VIP_VRID").map(String::as_str),
        Some("51"),
        "{master:#?}"
    );
    assert_eq!(
        master.get("PRIORITY").map(String::as_str),
        Some("6"),
        "info: {master:#?}"
    );
    assert_eq!(
        master.get("SYSLOG_IDENTIFIER").map(String::as_str),
        Some("vip-agent"),
        "{master:#?}"
    );
    let attached = entries
        .iter()
        .find(|e| e.get("MESSAGE").is_some_and(|m| m == "XDP attached"))
        .unwrap_or_else(|| panic!("no \"XDP attached\" entry: {entries:#?}"));
    assert_eq!(
        attached.get("VIP_IFACE").map(String::as_str),
        Some("eth0"),
        "{attached:#?}"
    );
    assert!(attached.contains_key("VIP_MODE"), "{attached:#?}");
    for e in &entries {
        for (k, v) in e {
            assert!(!v.contains('\x1b'), "{k}={v:?} has an escape sequence");
        }
    }
}

/// Every `vip_...` name in a `PromQL` expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("vip_") {
        let before_ok = at == 0
            || !rest[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        if before_ok {
            names.push(name);
        }
    }
    names
}

/// Every `expr` of every panel (rows' panels too) and template variable
/// query of the dashboard, with the panel's title.
fn queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    fn panels(list: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in list.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_owned();
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().expect("a target with an expr");
                out.push((title.clone(), expr.to_owned()));
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    let variables = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten();
    for v in variables.filter(|v| v["type"] == "query") {
        if let Some(q) = v["query"]["query"].as_str().or_else(|| v["query"].as_str()) {
            out.push((format!("variable {}", v["name"]), q.to_owned()));
        }
    }
    out
}

#[test]
fn every_dashboard_query_names_a_metric_the_agent_exports() {
    if !is_root() {
        eprintln!("skipping: needs root (netns, XDP)");
        return;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vip-agent/grafana/vip.json");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let queries = queries(&dashboard);
    assert!(queries.len() >= 10, "{queries:#?}");

    let lab = kit::lab("dash");
    let _agent = Agent::start_config(&lab, "lb1", master_config(&lab));
    // Every metric the agent exports, as a query names it: the family of
    // each `# TYPE` line, a counter's with the `_total` its samples carry.
    // lb2 runs the same VRID over another address, a collision lb1 counts
    // (vip_vrrp_adverts_dropped_total{reason="address_mismatch"}): a family
    // without samples is not written at all.
    let mut other = config::node(&lab, "lb2", &[]);
    other.services.clear();
    let mut vrrp = config::vrrp("VI_1", 51, 100, &["10.99.0.101".parse().unwrap()]);
    vrrp.election.advert_interval = Duration::from_millis(100);
    other.vrrp.push(vrrp);
    let _lb2 = Agent::start_config(&lab, "lb2", other);
    let text = wait_for(
        "lb1 to count lb2's adverts dropped",
        Duration::from_secs(10),
        || {
            let text = kit::metrics_text(&lab, "lb1", METRICS_PORT);
            text.contains("vip_vrrp_adverts_dropped_total{")
                .then_some(text)
        },
    );
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| match l.split_once(' ') {
            Some((family, "counter")) => format!("{family}_total"),
            Some((family, _)) => family.to_owned(),
            None => panic!("a bad TYPE line: {l}"),
        })
        .collect();
    assert!(exported.len() > 20, "{text}");
    let mut used = BTreeSet::new();
    for (title, expr) in &queries {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "panel {title:?}: {expr} names no vip metric"
        );
        for name in names {
            assert!(
                exported.contains(&name),
                "panel {title:?}: {name} is not in the agent's /metrics; it exports {exported:#?}"
            );
            used.insert(name);
        }
    }
    // And the dashboard shows every metric the agent has.
    let unused: Vec<_> = exported.difference(&used).collect();
    assert!(unused.is_empty(), "metrics no panel shows: {unused:?}");
}
