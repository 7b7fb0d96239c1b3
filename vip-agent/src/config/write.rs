//! Writing a [`Config`] back as TOML: what `vipctl import-keepalived` emits,
//! and how tests build their configs (through the types, not strings).
//!
//! What is written reads back as the same [`Config`] (the `line` fields
//! aside): [`Config::parse`] of [`document`] equals the input. The keys that
//! say what a table is (an instance's `name`, `vrid`, `priority`, `version`
//! and `advert_interval`; a service's `vip`, `port`, `protocol`; a check's
//! kind, keys and schedule; every backend's weight) are always written; the
//! others only when they differ from their defaults.
//!
//! [`Comments`] puts text beside what is written (the importer's
//! `# file:line` provenance), keyed by the same paths config errors name.

use std::{collections::BTreeMap, path::Path, time::Duration};

use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, Value};

use super::{
    BackendConfig, Check, Config, DEFAULT_BPFFS, DEFAULT_FLOW_TABLE_SIZE, Garp, Node,
    OnBackendDown, Proto, Service, ServiceCheck, Track, V3Checksum, Vrrp, XdpMode,
};
use crate::check::{Probe, Schedule};

/// Comments to write beside the config, keyed by path: `node.interface`,
/// `check[0]`, `vrrp[1]`, `vrrp[1].v3_checksum`, `service[0]`,
/// `service[0].backends`, `service[0].backends[2]`. Text without `# `; a
/// text of several lines becomes several comment lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comments {
    /// Lines above a table's header or a key.
    pub above: BTreeMap<String, String>,
    /// At the end of a key's line, or of an array element's.
    pub beside: BTreeMap<String, String>,
}

impl Comments {
    pub fn above(&mut self, path: impl Into<String>, text: impl Into<String>) {
        self.above.insert(path.into(), text.into());
    }

    pub fn beside(&mut self, path: impl Into<String>, text: impl Into<String>) {
        self.beside.insert(path.into(), text.into());
    }
}

/// `cfg` as TOML text, without comments.
#[must_use]
pub fn to_toml(cfg: &Config) -> String {
    document(cfg, &Comments::default()).to_string()
}

/// `cfg` as a TOML document, with `comments`.
#[must_use]
pub fn document(cfg: &Config, comments: &Comments) -> DocumentMut {
    let w = Writer { comments };
    let mut doc = DocumentMut::new();
    doc.insert("node", Item::Table(w.node(&cfg.node)));
    w.tables(&mut doc, "check", cfg.checks.iter().map(check));
    w.tables(&mut doc, "vrrp", cfg.vrrp.iter().map(vrrp));
    w.tables(
        &mut doc,
        "service",
        cfg.services
            .iter()
            .enumerate()
            .map(|(i, s)| w.service(i, s)),
    );
    doc
}

/// A duration as config reads it back: whole seconds, else milliseconds,
/// else microseconds, else nanoseconds (config takes "250ns" too, and what
/// is written must read back as it was).
#[must_use]
pub fn fmt_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos.is_multiple_of(1_000_000_000) {
        format!("{}s", nanos / 1_000_000_000)
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{}ms", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1000) {
        format!("{}us", nanos / 1000)
    } else {
        format!("{nanos}ns")
    }
}

/// A service check as its inline table (`{ kind = "tcp", … }`).
#[must_use]
pub fn service_check(c: &ServiceCheck) -> InlineTable {
    let mut t = InlineTable::new();
    probe(&mut t, &c.probe);
    if let Some(p) = c.port {
        t.insert("port", int(p));
    }
    schedule(&mut t, &c.schedule);
    t.fmt();
    t
}

struct Writer<'a> {
    comments: &'a Comments,
}

impl Writer<'_> {
    /// Appends `tables` as `[[name]]`, commented by their paths.
    fn tables(&self, doc: &mut DocumentMut, name: &str, tables: impl Iterator<Item = Table>) {
        let mut array = ArrayOfTables::new();
        for (i, mut t) in tables.enumerate() {
            let path = format!("{name}[{i}]");
            let above = self
                .comments
                .above
                .get(&path)
                .map_or_else(String::new, |c| lines(c));
            t.decor_mut().set_prefix(format!("\n{above}"));
            self.comment_keys(&mut t, &path);
            array.push(t);
        }
        if !array.is_empty() {
            doc.insert(name, Item::ArrayOfTables(array));
        }
    }

    /// Puts the comments of `path.<key>` beside and above `t`'s keys.
    fn comment_keys(&self, t: &mut Table, path: &str) {
        let keys: Vec<String> = t.iter().map(|(k, _)| k.to_owned()).collect();
        for k in keys {
            let key_path = format!("{path}.{k}");
            if let Some(c) = self.comments.beside.get(&key_path)
                && let Some(v) = t.get_mut(&k).and_then(Item::as_value_mut)
            {
                v.decor_mut().set_suffix(format!("  # {c}"));
            }
            if let Some(c) = self.comments.above.get(&key_path)
                && let Some(mut key) = t.key_mut(&k)
            {
                key.leaf_decor_mut().set_prefix(lines(c));
            }
        }
    }

    fn node(&self, n: &Node) -> Table {
        let mut t = Table::new();
        t.insert("interface", item(n.interface.as_str()));
        t.insert("name", item(n.name.as_str()));
        if n.bpffs != Path::new(DEFAULT_BPFFS) {
            t.insert("bpffs", item(n.bpffs.display().to_string()));
        }
        if n.control_socket != Path::new(&format!("/run/vip/{}.sock", n.name)) {
            t.insert(
                "control_socket",
                item(n.control_socket.display().to_string()),
            );
        }
        if let Some(m) = n.metrics {
            t.insert("metrics", item(m.to_string()));
        }
        if n.xdp_mode != XdpMode::default() {
            t.insert("xdp_mode", item(n.xdp_mode.to_string()));
        }
        if let Some(d) = n.dead_time {
            t.insert("dead_time", item(fmt_duration(d)));
        }
        if let Some(u) = &n.script_user {
            t.insert("script_user", item(u.to_string()));
        }
        if !n.script_security {
            t.insert("script_security", item(false));
        }
        if n.flow_table_size != DEFAULT_FLOW_TABLE_SIZE {
            t.insert("flow_table_size", item(i64::from(n.flow_table_size)));
        }
        self.comment_keys(&mut t, "node");
        t
    }

    fn service(&self, i: usize, s: &Service) -> Table {
        let mut t = Table::new();
        t.insert("vip", item(s.vip.to_string()));
        t.insert("port", item(i64::from(s.port)));
        t.insert("protocol", item(s.protocol.name()));
        let default_down = match s.protocol {
            Proto::Tcp => OnBackendDown::Reset,
            Proto::Udp => OnBackendDown::Rehash,
        };
        if s.on_backend_down != default_down {
            t.insert("on_backend_down", item(s.on_backend_down.to_string()));
        }
        if let Some(c) = &s.check {
            t.insert("check", Item::Value(Value::InlineTable(service_check(c))));
        }
        t.insert(
            "backends",
            Item::Value(Value::Array(self.backends(i, &s.backends))),
        );
        t
    }

    /// One backend per line, each commented by `service[i].backends[j]`.
    fn backends(&self, i: usize, backends: &[BackendConfig]) -> Array {
        let mut a = Array::new();
        let mut after_previous = String::new();
        for (j, b) in backends.iter().enumerate() {
            let mut inline = InlineTable::new();
            inline.insert("address", b.address.to_string().into());
            inline.insert("weight", i64::from(b.weight).into());
            inline.fmt();
            let mut v = Value::InlineTable(inline);
            v.decor_mut().set_prefix(format!("{after_previous}\n  "));
            a.push_formatted(v);
            after_previous = self
                .comments
                .beside
                .get(&format!("service[{i}].backends[{j}]"))
                .map_or_else(String::new, |c| format!("  # {c}"));
        }
        a.set_trailing_comma(true);
        a.set_trailing(format!("{after_previous}\n"));
        a
    }
}

fn check(c: &Check) -> Table {
    let mut inline = InlineTable::new();
    inline.insert("name", c.name.as_str().into());
    probe(&mut inline, &c.probe);
    if let Some(a) = c.address {
        inline.insert("address", a.to_string().into());
    }
    if let Some(p) = c.port
        && Some(p) != c.probe.kind().default_port()
    {
        inline.insert("port", int(p));
    }
    schedule(&mut inline, &c.schedule);
    inline.into_table()
}

fn vrrp(v: &Vrrp) -> Table {
    let e = &v.election;
    let mut t = Table::new();
    t.insert("name", item(v.name.as_str()));
    t.insert("vrid", item(i64::from(e.vrid)));
    t.insert("priority", item(i64::from(e.priority)));
    t.insert("version", item(i64::from(e.version)));
    t.insert("advert_interval", item(fmt_duration(e.advert_interval)));
    if !e.preempt {
        t.insert("preempt", item(false));
    }
    if !e.preempt_delay.is_zero() {
        t.insert("preempt_delay", item(fmt_duration(e.preempt_delay)));
    }
    if !v.unicast_peers.is_empty() {
        t.insert("unicast_peers", strings(v.unicast_peers.iter()));
    }
    if let Some(p) = &v.auth_pass {
        t.insert("auth_pass", item(p.as_str()));
    }
    if v.vlans.is_empty() {
        t.insert("vips", strings(v.vips.iter()));
    } else {
        let vips: Array = v
            .vips
            .iter()
            .map(|a| match v.vlans.get(a) {
                None => Value::from(a.to_string()),
                Some(id) => {
                    let mut e = InlineTable::new();
                    e.insert("address", a.to_string().into());
                    e.insert("vlan", i64::from(*id).into());
                    e.fmt();
                    Value::InlineTable(e)
                }
            })
            .collect();
        t.insert("vips", Item::Value(Value::Array(vips)));
    }
    if v.virtual_mac {
        t.insert("virtual_mac", item(true));
    }
    if let Some(g) = garp(&v.garp) {
        t.insert("garp", Item::Value(Value::InlineTable(g)));
    }
    if !v.track.is_empty() {
        let tracks: Array = v
            .track
            .iter()
            .map(|t| Value::InlineTable(track(t)))
            .collect();
        t.insert("track", Item::Value(Value::Array(tracks)));
    }
    if let Some(n) = &v.notify {
        t.insert("notify", item(n.display().to_string()));
    }
    if let Some(w) = v.track_services {
        let mut ts = InlineTable::new();
        ts.insert("weight", i64::from(w).into());
        ts.fmt();
        t.insert("track_services", Item::Value(Value::InlineTable(ts)));
    }
    if let Some(g) = &v.sync_group {
        t.insert("sync_group", item(g.as_str()));
    }
    if v.v3_checksum != V3Checksum::default() {
        t.insert("v3_checksum", item(v3_checksum(v.v3_checksum)));
    }
    t
}

/// A probe's `kind` and the keys of that kind.
fn probe(t: &mut InlineTable, p: &Probe) {
    t.insert("kind", p.kind().to_string().into());
    for (key, value) in p.keys() {
        t.insert(key, value);
    }
}

fn schedule(t: &mut InlineTable, s: &Schedule) {
    t.insert("interval", fmt_duration(s.interval).into());
    t.insert("timeout", fmt_duration(s.timeout).into());
    t.insert("rise", i64::from(s.rise).into());
    t.insert("fall", i64::from(s.fall).into());
}

/// The keys of `g` that differ from the defaults; `None` when none do.
fn garp(g: &Garp) -> Option<InlineTable> {
    let d = Garp::default();
    let mut t = InlineTable::new();
    if g.count != d.count {
        t.insert("count", i64::from(g.count).into());
    }
    if g.interval != d.interval {
        t.insert("interval", fmt_duration(g.interval).into());
    }
    if g.refresh != d.refresh {
        t.insert("refresh", fmt_duration(g.refresh).into());
    }
    t.fmt();
    (!t.is_empty()).then_some(t)
}

fn track(t: &Track) -> InlineTable {
    let mut inline = InlineTable::new();
    inline.insert("check", t.check.as_str().into());
    inline.insert("weight", i64::from(t.weight).into());
    inline.fmt();
    inline
}

fn v3_checksum(c: V3Checksum) -> &'static str {
    match c {
        V3Checksum::PseudoHeader => "pseudo-header",
        V3Checksum::GroupPseudoHeader => "group-pseudo-header",
        V3Checksum::MessageOnly => "message-only",
    }
}

fn item(v: impl Into<Value>) -> Item {
    Item::Value(v.into())
}

fn int(n: u16) -> Value {
    i64::from(n).into()
}

fn strings<T: ToString>(v: impl Iterator<Item = T>) -> Item {
    Item::Value(Value::Array(v.map(|x| x.to_string()).collect()))
}

/// `text` as comment lines.
fn lines(text: &str) -> String {
    text.lines().fold(String::new(), |mut s, l| {
        s.push_str("# ");
        s.push_str(l);
        s.push('\n');
        s
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Every key config has, most of them off their defaults.
    const EVERY_KEY: &str = r#"
[node]
interface = "eth0"
name = "lb1"
bpffs = "/mnt/bpf"
control_socket = "/run/lb1.sock"
metrics = "127.0.0.1:9650"
xdp_mode = "generic"
dead_time = "750ms"
script_user = "vip-script:vip"
script_security = false
flow_table_size = 4096

[[check]]
name = "broker"
kind = "amqp"
address = "127.0.0.1"
port = 5673
user = "guest"
password = "guest"
vhost = "/prod"
interval = "500ms"
timeout = "250ms"
rise = 3
fall = 4

[[check]]
name = "alarms"
kind = "http"
address = "127.0.0.1"
port = 15672
path = "/api/health/checks/alarms"
expect_status = 204
expect_body = "\"ok\""
user = "mon"
password = "s3cret"

[[check]]
name = "script"
kind = "exec"
command = "/usr/local/bin/check \"quoted\""

[[vrrp]]
name = "VI_1"
vrid = 51
priority = 150
version = 2
advert_interval = "2s"
preempt = false
preempt_delay = "5s"
unicast_peers = ["10.99.0.3", "10.99.0.4"]
auth_pass = "1111"
vips = ["10.99.0.100", "10.99.0.101"]
virtual_mac = true
garp = { count = 3, interval = "20ms", refresh = "0s" }
track = [{ check = "broker", weight = -60 }, { check = "alarms" }]
notify = "/etc/vip/notify.sh"
track_services = { weight = -10 }
sync_group = "G"

[[vrrp]]
name = "VI_2"
vrid = 52
vips = ["10.99.0.102", { address = "10.99.0.103", vlan = 100 }]
sync_group = "G"
v3_checksum = "message-only"
advert_interval = "10ms"

[[service]]
vip = "10.99.0.100"
port = 5672
check = { kind = "tcp", port = 5673, interval = "200ms", timeout = "300ms", rise = 1, fall = 3 }
on_backend_down = "keep"
backends = [{ address = "10.99.0.11" }, { address = "10.99.0.12", weight = 0 }]

[[service]]
vip = "10.99.0.100"
port = 53
protocol = "udp"
check = { kind = "exec", command = "/bin/true" }
backends = [{ address = "10.99.0.11", weight = 1000 }]

[[service]]
vip = "10.99.0.101"
port = 15672
check = { kind = "http", path = "/health", user = "u", password = "p" }
backends = [{ address = "10.99.0.13" }]
"#;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("vip.toml"))
            .unwrap_or_else(|e| panic!("{e}\n--- the text:\n{text}"))
    }

    /// `cfg` with the `line` fields cleared (they say where, not what).
    fn unplaced(mut cfg: Config) -> Config {
        cfg.checks.iter_mut().for_each(|c| c.line = 0);
        cfg.vrrp.iter_mut().for_each(|v| v.line = 0);
        cfg.services.iter_mut().for_each(|s| s.line = 0);
        cfg
    }

    #[test]
    fn durations_are_written_in_the_largest_exact_unit() {
        assert_eq!(fmt_duration(Duration::from_secs(3)), "3s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(fmt_duration(Duration::from_micros(2_718_280)), "2718280us");
        assert_eq!(fmt_duration(Duration::from_nanos(250)), "250ns");
        assert_eq!(
            fmt_duration(Duration::from_nanos(1_000_000_001)),
            "1000000001ns"
        );
    }

    #[test]
    fn what_is_written_reads_back_as_the_same_config() {
        let cfg = parse(EVERY_KEY);
        let text = to_toml(&cfg);
        assert_eq!(unplaced(parse(&text)), unplaced(cfg), "written:\n{text}");
    }

    /// Found by the config fuzz target: a timeout of "250ns" passed and
    /// was written as "0s", which config refuses.
    #[test]
    fn a_vlan_vip_is_written_as_a_table_and_the_others_as_strings() {
        let cfg = parse(EVERY_KEY);
        assert_eq!(
            cfg.vrrp[1].vlans.get(&"10.99.0.103".parse().unwrap()),
            Some(&100)
        );
        let text = to_toml(&cfg);
        assert!(
            text.contains(r#"vips = ["10.99.0.102", { address = "10.99.0.103", vlan = 100 }]"#),
            "{text}"
        );
    }

    #[test]
    fn a_duration_below_a_microsecond_reads_back() {
        let cfg = parse(&EVERY_KEY.replace("timeout = \"250ms\"", "timeout = \"250ns\""));
        assert_eq!(cfg.checks[0].schedule.timeout, Duration::from_nanos(250));
        let text = to_toml(&cfg);
        assert!(text.contains("timeout = \"250ns\""), "{text}");
        assert_eq!(unplaced(parse(&text)), unplaced(cfg));
    }

    #[test]
    fn defaults_are_left_out_and_what_names_a_table_is_kept() {
        let cfg = parse(
            "[node]\ninterface = \"eth0\"\nname = \"lb1\"\n\
             [[vrrp]]\nname = \"VI_1\"\nvrid = 51\nvips = [\"10.99.0.100\"]\n\
             [[service]]\nvip = \"10.99.0.100\"\nport = 5672\nbackends = [{ address = \"10.99.0.11\" }]\n",
        );
        let text = to_toml(&cfg);
        assert_eq!(
            text,
            "[node]\ninterface = \"eth0\"\nname = \"lb1\"\n\
             \n[[vrrp]]\nname = \"VI_1\"\nvrid = 51\npriority = 100\nversion = 3\nadvert_interval = \"1s\"\nvips = [\"10.99.0.100\"]\n\
             \n[[service]]\nvip = \"10.99.0.100\"\nport = 5672\nprotocol = \"tcp\"\nbackends = [\n  { address = \"10.99.0.11\", weight = 1 },\n]\n"
        );
    }

    #[test]
    fn comments_go_above_tables_and_keys_and_beside_values_and_backends() {
        let cfg = parse(
            "[node]\ninterface = \"eth0\"\nname = \"lb1\"\n\
             [[service]]\nvip = \"10.99.0.100\"\nport = 5672\n\
             backends = [{ address = \"10.99.0.11\" }, { address = \"10.99.0.12\" }]\n",
        );
        let mut c = Comments::default();
        c.beside("node.interface", "a.conf:3 (interface)");
        c.above("service[0]", "a.conf:9: virtual_server 10.99.0.100 5672");
        c.above(
            "service[0].backends",
            "not accepted here:\ncheck = { kind = \"x\" }",
        );
        c.beside("service[0].backends[0]", "a.conf:10");
        c.beside("service[0].backends[1]", "a.conf:14");
        let text = document(&cfg, &c).to_string();
        assert_eq!(
            text,
            "[node]\ninterface = \"eth0\"  # a.conf:3 (interface)\nname = \"lb1\"\n\
             \n# a.conf:9: virtual_server 10.99.0.100 5672\n[[service]]\nvip = \"10.99.0.100\"\nport = 5672\nprotocol = \"tcp\"\n\
             # not accepted here:\n# check = { kind = \"x\" }\n\
             backends = [\n  { address = \"10.99.0.11\", weight = 1 },  # a.conf:10\n  { address = \"10.99.0.12\", weight = 1 },  # a.conf:14\n]\n"
        );
        assert_eq!(
            unplaced(parse(&text)),
            unplaced(cfg),
            "comments change nothing"
        );
    }
}
