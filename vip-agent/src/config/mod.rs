//! The node's TOML configuration: parsing, defaults and validation.
//!
//! [`Config::parse`] turns the file (the README's "Configuration" section and
//! the doc of each type here) into plain typed values with every default filled
//! in, or into one [`ConfigError`] naming the file, the line, the dotted key
//! (`service[0].backends[2].address`) and what to do about it. Nothing here
//! touches the network or the kernel, so the agent, `vip-agent --check`, a
//! reload and the tests all go through this one function.
//!
//! Parsing is two steps. serde first fills private `Raw*` mirrors of the public
//! types, rejecting unknown keys; the values that later checks look at are kept
//! as [`toml::Spanned`] so an error can point at their line. toml attaches a
//! span to its own errors too, including those raised by the small value types
//! here (durations, addresses), so a type error gets its line for free; the
//! dotted key is then recovered by finding that span in `toml_edit`'s tree of
//! the document. The second step checks what one value alone cannot (ranges,
//! duplicates, references between tables, the data plane's limits) and builds
//! the public types.

use std::path::Path;

pub use crate::check::{CheckKind, Probe, Schedule};
pub use crate::vrrp::machine::Election;
pub use vip_common::Proto;

mod host;
mod limits;
pub mod reference;
mod spans;
mod types;
mod validate;
mod values;
pub mod write;

use self::{
    limits::{
        CHECK_FALL, CHECK_INTERVAL, CHECK_RISE, CHECK_TIMEOUT, MAX_IFNAME, MAX_NODE_NAME, limit,
    },
    spans::{join, key_at, quoted_name},
    validate::{RawConfig, Source},
    values::{Addr, Dur, Int, Ip},
};
pub use self::{
    limits::{
        DEFAULT_BPFFS, DEFAULT_FLOW_TABLE_SIZE, MAX_AUTH_PASS, MAX_FLOW_TABLE_SIZE, MAX_GARP_COUNT,
        MAX_WEIGHT, MIN_FLOW_TABLE_SIZE,
    },
    types::*,
    values::MAX_DURATION,
};

impl Config {
    /// Reads and parses the file at `path`, then checks it against this
    /// machine for the running process: the script user exists and may be
    /// switched to, and (with `script_security`) its scripts are safe.
    /// Returns the configuration and who its scripts run as.
    ///
    /// Fails with a [`ConfigError`] naming `path` when the file cannot be read
    /// or is not a valid configuration for this machine.
    pub fn load(path: &Path) -> Result<(Config, crate::scripts::Identity), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            line: None,
            key: None,
            message: format!(
                "cannot read the configuration: {e}; check the path and its permissions"
            ),
        })?;
        let cfg = Self::parse(&text, path)?;
        let identity = host::check(
            &cfg,
            &Source { text: &text, path },
            crate::scripts::user::Agent::this(),
        )?;
        Ok((cfg, identity))
    }

    /// Parses configuration text; `path` only appears in error messages.
    ///
    /// Fails with the first problem found, located by line and dotted key.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let src = Source { text, path };
        let raw: RawConfig = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
        src.build(raw)
    }
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

    use super::*;

    /// The project's reference configuration example, verbatim.
    const EXAMPLE: &str = r#"[node]
interface = "eth0"              # XDP attaches here; VRRP runs here
name = "lb1"                    # pins live under <bpffs>/vip/<name>
# bpffs = "/sys/fs/bpf"         # pin root; mounted by the agent if it is not a bpffs yet
# control_socket = "/run/vip/lb1.sock"
# metrics = "127.0.0.1:9650"

[[vrrp]]
name = "VI_1"
vrid = 51
priority = 100                  # 1..=254; 255 = address owner
version = 3                     # 3 (default) or 2 for old keepalived peers
advert_interval = "20ms"         # v3: multiples of 10ms; v2: whole seconds
preempt = true
preempt_delay = "0s"
unicast_peers = ["10.99.0.3"]   # omit for multicast 224.0.0.18
auth_pass = "1111"              # v2 only (keepalived auth_type PASS)
vips = ["10.99.0.100"]
virtual_mac = false             # true: answer with 00:00:5e:00:01:<vrid>
garp = { count = 5, interval = "10ms", refresh = "0s" }
track = [{ check = "local-broker", weight = -60 }]
notify = "/etc/vip/notify.sh"   # called as: notify.sh <master|backup|fault> <instance>

[[check]]                        # a named node-level check (keepalived vrrp_script)
name = "local-broker"
kind = "exec"                    # exec | tcp | amqp | http
command = "/usr/local/bin/check-rabbit"
interval = "500ms"
rise = 2
fall = 2

[[service]]
vip = "10.99.0.100"
port = 5672
protocol = "tcp"
check = { kind = "amqp", interval = "200ms", timeout = "300ms", rise = 2, fall = 2 }
backends = [
  { address = "10.99.0.11" },
  { address = "10.99.0.12", weight = 2 },
  { address = "10.99.0.13" },
]
"#;

    /// Lines 1-3.
    const NODE: &str = "[node]\ninterface = \"eth0\"\nname = \"lb1\"\n";
    /// Lines 4-7 after [`NODE`].
    const SERVICE: &str =
        "[[service]]\nvip = \"10.0.0.100\"\nport = 80\nbackends = [{ address = \"10.0.0.11\" }]\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("vip.toml"))
    }

    fn ok(text: &str) -> Config {
        parse(text).unwrap_or_else(|e| panic!("expected a valid config, got: {e}"))
    }

    /// Asserts that `text` fails at `line` on `key` with a message containing `needle`.
    #[track_caller]
    fn fails(text: &str, line: usize, key: &str, needle: &str) -> ConfigError {
        let e = match parse(text) {
            Ok(c) => panic!("expected an error at {key}, parsed: {c:?}"),
            Err(e) => e,
        };
        let shown = e.to_string();
        assert_eq!(e.line, Some(line), "line of: {shown}");
        assert_eq!(e.key.as_deref(), Some(key), "key of: {shown}");
        assert!(shown.contains(&format!(":{line}: {key}: ")), "{shown}");
        assert!(
            shown.contains(needle),
            "{shown:?} should contain {needle:?}"
        );
        e
    }

    /// A check `c` (line 1, as an inline table, so that it fits on one
    /// line), [`NODE`] (lines 2-4) and a vrrp instance (from line 7) whose
    /// extra keys start at line 11.
    fn vrrp_with(extra: &str) -> String {
        format!(
            "check = [{{ name = \"c\", kind = \"tcp\", address = \"127.0.0.1\", port = 5672 }}]\n\
             {NODE}# lines 5 and 6 are left\n# for the vrrp tests' line numbers\n\
             [[vrrp]]\nname = \"VI_1\"\nvrid = 51\nvips = [\"10.0.0.100\"]\n{extra}"
        )
    }

    #[test]
    fn the_documented_example_parses() {
        let c = ok(EXAMPLE);
        assert_eq!(c.node.interface, "eth0");
        assert_eq!(c.node.name, "lb1");
        assert_eq!(c.node.bpffs, PathBuf::from("/sys/fs/bpf"));
        assert_eq!(c.node.control_socket, PathBuf::from("/run/vip/lb1.sock"));
        let v = &c.vrrp[0];
        assert_eq!(
            (v.election.vrid, v.election.priority, v.election.version),
            (51, 100, 3)
        );
        assert_eq!(v.election.advert_interval, Duration::from_millis(20));
        assert_eq!(v.unicast_peers, [Ipv4Addr::new(10, 99, 0, 3)]);
        assert_eq!(v.vips, [Ipv4Addr::new(10, 99, 0, 100)]);
        assert_eq!(
            v.garp,
            Garp {
                count: 5,
                interval: Duration::from_millis(10),
                refresh: Duration::ZERO
            }
        );
        assert_eq!(
            v.track,
            [Track {
                check: "local-broker".into(),
                weight: -60
            }]
        );
        assert_eq!(v.notify.as_deref(), Some(Path::new("/etc/vip/notify.sh")));
        assert_eq!(v.line, 8);
        assert_eq!(c.checks[0].probe.kind(), CheckKind::Exec);
        assert_eq!(c.checks[0].schedule.interval, Duration::from_millis(500));
        assert_eq!(c.checks[0].line, 24);
        let s = &c.services[0];
        assert_eq!(
            (s.vip, s.port, s.protocol),
            (Ipv4Addr::new(10, 99, 0, 100), 5672, Proto::Tcp)
        );
        assert_eq!(s.line, 32);
        let check = s.check.as_ref().unwrap();
        assert_eq!(check.probe.kind(), CheckKind::Amqp);
        assert_eq!(check.schedule.timeout, Duration::from_millis(300));
        assert_eq!(s.backends.len(), 3);
        assert_eq!(
            s.backends[1],
            BackendConfig {
                address: Ipv4Addr::new(10, 99, 0, 12),
                weight: 2
            }
        );
        assert_eq!(s.backends[0].weight, 1);
    }

    #[test]
    fn auth_pass_is_kept_for_version_2_only() {
        // The documented example pairs auth_pass with version 3; like
        // keepalived, a v3 instance ignores it (with a warning).
        assert_eq!(ok(EXAMPLE).vrrp[0].auth_pass, None);
        let v2 = EXAMPLE
            .replace("version = 3 ", "version = 2 ")
            .replace("\"20ms\"", "\"1s\"");
        assert_eq!(ok(&v2).vrrp[0].auth_pass.as_deref(), Some("1111"));
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let c = ok(&format!("{NODE}{SERVICE}"));
        assert_eq!(c.node.bpffs, PathBuf::from(DEFAULT_BPFFS));
        assert_eq!(c.node.control_socket, PathBuf::from("/run/vip/lb1.sock"));
        assert_eq!(
            (c.node.metrics, c.node.xdp_mode, c.node.dead_time),
            (None, XdpMode::Auto, None)
        );
        assert_eq!(c.node.flow_table_size, vip_common::MAX_FLOWS);
        assert!(c.vrrp.is_empty() && c.checks.is_empty());
        let s = &c.services[0];
        assert_eq!(
            (s.protocol, s.check.as_ref(), s.line),
            (Proto::Tcp, None, 4)
        );
        assert_eq!(s.backends[0].weight, 1);

        let c = ok(&vrrp_with(
            "[[service]]\nvip = \"10.0.0.100\"\nport = 80\nbackends = [{ address = \"10.0.0.11\" }]\ncheck = { kind = \"http\" }\n",
        ));
        let v = &c.vrrp[0];
        assert_eq!(
            (
                v.election.priority,
                v.election.version,
                v.election.preempt,
                v.virtual_mac
            ),
            (100, 3, true, false)
        );
        assert_eq!(
            (v.election.advert_interval, v.election.preempt_delay),
            (Duration::from_secs(1), Duration::ZERO)
        );
        assert_eq!(
            (v.garp.clone(), v.auth_pass.as_ref(), v.notify.as_ref()),
            (Garp::default(), None, None)
        );
        let defaults = Schedule {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 2,
        };
        assert_eq!(c.checks[0].schedule, defaults);
        let sc = c.services[0].check.clone().unwrap();
        assert_eq!(sc.schedule, defaults);
        assert_eq!(
            (sc.probe, sc.port),
            (
                Probe::Http {
                    path: "/".into(),
                    expect_status: 200,
                    expect_body: None,
                    auth: None
                },
                None
            )
        );
    }

    #[test]
    fn node_options_parse() {
        let c = ok(&format!(
            "{NODE}bpffs = \"/mnt/bpf\"\ncontrol_socket = \"/tmp/x.sock\"\nmetrics = \"127.0.0.1:9650\"\nxdp_mode = \"generic\"\ndead_time = \"1.5s\"\n"
        ));
        assert_eq!(c.node.bpffs, PathBuf::from("/mnt/bpf"));
        assert_eq!(c.node.control_socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(c.node.metrics, Some("127.0.0.1:9650".parse().unwrap()));
        assert_eq!(c.node.xdp_mode, XdpMode::Generic);
        assert_eq!(c.node.dead_time, Some(Duration::from_millis(1500)));
        fails(
            &format!("{NODE}xdp_mode = \"turbo\"\n"),
            4,
            "node.xdp_mode",
            "`native`",
        );
        fails(
            &format!("{NODE}metrics = \"localhost\"\n"),
            4,
            "node.metrics",
            "is not an address:port",
        );
        fails(
            &format!("{NODE}dead_time = \"0s\"\n"),
            4,
            "node.dead_time",
            "0s",
        );
    }

    #[test]
    fn flow_table_size_is_bounded() {
        for n in [MIN_FLOW_TABLE_SIZE, 100_000, MAX_FLOW_TABLE_SIZE] {
            let c = ok(&format!("{NODE}flow_table_size = {n}\n"));
            assert_eq!(c.node.flow_table_size, n);
        }
        for n in [
            "0".to_owned(),
            "-1".to_owned(),
            (MIN_FLOW_TABLE_SIZE - 1).to_string(),
            (MAX_FLOW_TABLE_SIZE + 1).to_string(),
            "100000000000000".to_owned(),
        ] {
            fails(
                &format!("{NODE}flow_table_size = {n}\n"),
                4,
                "node.flow_table_size",
                &format!("{n} is out of range: the flow table's entries must be 1024..=16777216"),
            );
        }
        let e = parse(&format!("{NODE}flow_table_size = 10\n")).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        fails(
            &format!("{NODE}flow_table_size = \"big\"\n"),
            4,
            "node.flow_table_size",
            "",
        );
    }

    #[test]
    fn display_has_path_line_key_and_message() {
        let text = format!("{NODE}{SERVICE}").replace("10.0.0.11", "10.0.0.300");
        let e = parse(&text).unwrap_err();
        assert_eq!(
            e.to_string(),
            "vip.toml:7: service[0].backends[0].address: \"10.0.0.300\" is not an IPv4 address"
        );
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        fails("[nodes]\ninterface = \"eth0\"\n", 1, "nodes", "unknown key");
        fails(
            &format!("{NODE}colour = \"blue\"\n"),
            4,
            "node.colour",
            "expected",
        );
        let text =
            format!("{NODE}{SERVICE}").replace("\"10.0.0.11\" }", "\"10.0.0.11\", wieght = 2 }");
        fails(&text, 7, "service[0].backends[0].wieght", "unknown key");
        fails(
            &vrrp_with("garp = { count = 1, burst = 2 }\n"),
            11,
            "vrrp[0].garp.burst",
            "unknown key",
        );
        fails(
            &vrrp_with("garp.burst = 2\n"),
            11,
            "vrrp[0].garp.burst",
            "unknown key",
        );
        fails(
            &vrrp_with("[vrrp.garp]\nburst = 2\n"),
            12,
            "vrrp[0].garp.burst",
            "unknown key",
        );
        fails(
            &vrrp_with("[vrrp.garb]\ncount = 2\n"),
            11,
            "vrrp[0].garb",
            "unknown key",
        );
        fails(
            &vrrp_with("[[vrrp.gorp]]\ncount = 2\n"),
            11,
            "vrrp[0].gorp",
            "unknown key",
        );
        fails(
            "[[nodes]]\ninterface = \"eth0\"\n",
            1,
            "nodes",
            "unknown key",
        );
        fails("[node]\nnode = 1\n", 2, "node.node", "unknown key");
        fails(
            &format!("{NODE}{SERVICE}check = {{ kind = \"tcp\", comand = \"x\" }}\n"),
            8,
            "service[0].check.comand",
            "unknown key",
        );
    }

    #[test]
    fn unknown_keys_in_sub_tables_are_found() {
        let text = format!(
            "{NODE}[[service]]\nvip = \"10.0.0.100\"\nport = 80\n[[service.backends]]\naddress = \"10.0.0.11\"\n[[service.backends]]\naddress = \"10.0.0.12\"\nport = 81\n"
        );
        fails(&text, 11, "service[0].backends[1].port", "unknown key");
    }

    #[test]
    fn missing_required_keys_are_named() {
        fails(
            "[node]\nname = \"lb1\"\n",
            1,
            "node.interface",
            "required key is missing",
        );
        fails("[node]\ninterface = \"eth0\"\n", 1, "node.name", "missing");
        fails(SERVICE, 1, "node", "missing");
        fails(
            &format!("{NODE}[[service]]\nport = 80\nbackends = [{{ address = \"10.0.0.11\" }}]\n"),
            4,
            "service[0].vip",
            "missing",
        );
        fails(
            &format!(
                "{NODE}[[service]]\nvip = \"10.0.0.100\"\nbackends = [{{ address = \"10.0.0.11\" }}]\n"
            ),
            4,
            "service[0].port",
            "missing",
        );
        let text = format!("{NODE}{SERVICE}").replace(
            "[{ address = \"10.0.0.11\" }]",
            "[{ address = \"10.0.0.11\" },\n  { weight = 2 }]",
        );
        fails(&text, 8, "service[0].backends[1].address", "missing");
        fails(
            &format!("{NODE}[[vrrp]]\nvrid = 1\nvips = [\"10.0.0.1\"]\n"),
            4,
            "vrrp[0].name",
            "missing",
        );
        fails(
            &format!("{NODE}[[vrrp]]\nname = \"a\"\nvips = [\"10.0.0.1\"]\n"),
            4,
            "vrrp[0].vrid",
            "missing",
        );
        fails(
            &format!("{NODE}[[vrrp]]\nname = \"a\"\nvrid = 1\n"),
            4,
            "vrrp[0].vips",
            "missing",
        );
        fails(
            &format!("{NODE}[[check]]\nkind = \"tcp\"\n"),
            4,
            "check[0].name",
            "missing",
        );
        fails(
            &format!("{NODE}[[check]]\nname = \"c\"\n"),
            4,
            "check[0].kind",
            "missing",
        );
    }

    #[test]
    fn type_errors_point_at_the_value() {
        let text = format!("{NODE}{SERVICE}").replace("port = 80", "port = \"80\"");
        fails(&text, 6, "service[0].port", "expected an integer");
        fails(
            &format!("{NODE}{SERVICE}protocol = \"sctp\"\n"),
            8,
            "service[0].protocol",
            "`udp`",
        );
        fails(
            &vrrp_with("preempt = \"yes\"\n"),
            11,
            "vrrp[0].preempt",
            "expected a boolean",
        );
    }

    #[test]
    fn durations_need_a_unit() {
        fails(
            &vrrp_with("garp.interval = 5\n"),
            11,
            "vrrp[0].garp.interval",
            "\"5ms\"",
        );
        fails(
            &vrrp_with("[[vrrp.track]]\ncheck = \"c\"\nweight = \"-5\"\n"),
            13,
            "vrrp[0].track[0].weight",
            "an integer",
        );
        fails(
            &vrrp_with("advert_interval = 1\n"),
            11,
            "vrrp[0].advert_interval",
            "no unit; add one",
        );
        // Added to an Instant by the agent: an absurd value must not pass
        // --check and then overflow there.
        fails(
            &vrrp_with("garp = { refresh = \"400000000000y\" }\n"),
            11,
            "vrrp[0].garp.refresh",
            "longer than 1day, the longest duration vip takes",
        );
        fails(
            &vrrp_with("preempt_delay = \"25h\"\n"),
            11,
            "vrrp[0].preempt_delay",
            "longest duration",
        );
        assert!(
            parse(&vrrp_with("garp = { refresh = \"24h\" }\n")).is_ok(),
            "a day is taken"
        );
        fails(
            &vrrp_with("advert_interval = \"20\"\n"),
            11,
            "vrrp[0].advert_interval",
            "\"20ms\"",
        );
        fails(
            &vrrp_with("advert_interval = 0.5\n"),
            11,
            "vrrp[0].advert_interval",
            "unit",
        );
        fails(
            &vrrp_with("advert_interval = \"fast\"\n"),
            11,
            "vrrp[0].advert_interval",
            "is not a duration",
        );
        let c = ok(&vrrp_with(
            "advert_interval = \"1.5s\"\npreempt_delay = \"2m\"\n",
        ));
        assert_eq!(
            c.vrrp[0].election.advert_interval,
            Duration::from_millis(1500)
        );
        assert_eq!(c.vrrp[0].election.preempt_delay, Duration::from_mins(2));
    }

    #[test]
    fn bad_addresses_are_quoted() {
        fails(
            &format!("{NODE}{SERVICE}").replace("10.0.0.100", "10.0.0"),
            5,
            "service[0].vip",
            "\"10.0.0\" is not an IPv4 address",
        );
        fails(
            &vrrp_with("unicast_peers = [\"10.0.0.2\", \"fe80::1\"]\n"),
            11,
            "vrrp[0].unicast_peers[1]",
            "not an IPv4",
        );
    }

    #[test]
    fn node_names_and_interfaces_are_checked() {
        let node = |iface: &str, name: &str| {
            format!("[node]\ninterface = \"{iface}\"\nname = \"{name}\"\n")
        };
        fails(&node("eth0", "lb 1"), 3, "node.name", "letters, digits");
        fails(&node("eth0", ""), 3, "node.name", "1 to 32");
        fails(
            &node("eth0", &"a".repeat(33)),
            3,
            "node.name",
            "not a valid node name",
        );
        fails(
            &node("eth0", "../x"),
            3,
            "node.name",
            "not a valid node name",
        );
        assert_eq!(ok(&node("eth0", &"a-Z_9".repeat(6))).node.name.len(), 30);
        fails(&node("", "lb1"), 2, "node.interface", "is empty");
        fails(
            &node("a-very-long-name0", "lb1"),
            2,
            "node.interface",
            "longer than 15",
        );
        fails(
            &node("eth0/1", "lb1"),
            2,
            "node.interface",
            "not a valid interface name",
        );
        assert_eq!(
            ok(&node("enp0s31f6.4000", "lb1")).node.interface,
            "enp0s31f6.4000"
        );
    }

    #[test]
    fn ports_and_weights_have_ranges() {
        fails(
            &format!("{NODE}{SERVICE}").replace("port = 80", "port = 0"),
            6,
            "service[0].port",
            "1..=65535",
        );
        fails(
            &format!("{NODE}{SERVICE}").replace("port = 80", "port = 65536"),
            6,
            "service[0].port",
            "out of range",
        );
        let weight = |w: &str| {
            format!("{NODE}{SERVICE}").replace(
                "\"10.0.0.11\" }",
                &format!("\"10.0.0.11\", weight = {w} }}"),
            )
        };
        fails(
            &weight("1001"),
            7,
            "service[0].backends[0].weight",
            "0..=1000",
        );
        fails(
            &weight("-1"),
            7,
            "service[0].backends[0].weight",
            "out of range",
        );
        assert_eq!(ok(&weight("0")).services[0].backends[0].weight, 0);
        assert_eq!(ok(&weight("1000")).services[0].backends[0].weight, 1000);
    }

    #[test]
    fn backends_are_non_empty_bounded_and_distinct() {
        fails(
            &format!("{NODE}[[service]]\nvip = \"10.0.0.100\"\nport = 80\n"),
            4,
            "service[0].backends",
            "at least one backend",
        );
        fails(
            &format!("{NODE}{SERVICE}").replace("[{ address = \"10.0.0.11\" }]", "[]"),
            4,
            "service[0].backends",
            "at least one",
        );
        let many: Vec<String> = (0..257)
            .map(|i| format!("{{ address = \"10.1.{}.{}\" }},\n", i / 256, i % 256))
            .collect();
        let text = format!(
            "{NODE}[[service]]\nvip = \"10.0.0.100\"\nport = 80\nbackends = [\n{}]\n",
            many.concat()
        );
        fails(&text, 8 + 256, "service[0].backends", "at most 256");
        let dup = format!("{NODE}{SERVICE}").replace(
            "[{ address = \"10.0.0.11\" }]",
            "[\n  { address = \"10.0.0.11\" },\n  { address = \"10.0.0.12\" },\n  { address = \"10.0.0.11\" },\n]",
        );
        fails(
            &dup,
            10,
            "service[0].backends[2].address",
            "listed twice in this service (first at line 8)",
        );
    }

    #[test]
    fn services_are_distinct_and_bounded() {
        let text = format!("{NODE}{SERVICE}{SERVICE}");
        fails(
            &text,
            8,
            "service[1]",
            "10.0.0.100:80/tcp is already defined by service[0] (line 4)",
        );
        let udp = format!("{NODE}{SERVICE}{SERVICE}protocol = \"udp\"\n");
        assert_eq!(ok(&udp).services[1].protocol, Proto::Udp);
        let many: String = (1..=17)
            .map(|p| SERVICE.replace("port = 80", &format!("port = {p}")))
            .collect();
        fails(
            &format!("{NODE}{many}"),
            4 + 16 * 4,
            "service[16]",
            "at most 16 services",
        );
    }

    #[test]
    fn vrrp_numbers_have_ranges() {
        fails(
            &vrrp_with("").replace("vrid = 51", "vrid = 0"),
            9,
            "vrrp[0].vrid",
            "1..=255",
        );
        fails(
            &vrrp_with("").replace("vrid = 51", "vrid = 256"),
            9,
            "vrrp[0].vrid",
            "out of range",
        );
        fails(
            &vrrp_with("priority = 0\n"),
            11,
            "vrrp[0].priority",
            "1..=255",
        );
        assert_eq!(
            ok(&vrrp_with("priority = 255\n")).vrrp[0].election.priority,
            255
        );
        fails(
            &vrrp_with("version = 4\n"),
            11,
            "vrrp[0].version",
            "use 3 (RFC 5798) or 2",
        );
        fails(
            &vrrp_with("garp = { count = 101 }\n"),
            11,
            "vrrp[0].garp.count",
            "0..=100",
        );
        fails(
            &vrrp_with("garp.count = -1\n"),
            11,
            "vrrp[0].garp.count",
            "0..=100",
        );
        let c = ok(&vrrp_with("[vrrp.garp]\ncount = 0\nrefresh = \"30s\"\n"));
        assert_eq!(
            c.vrrp[0].garp,
            Garp {
                count: 0,
                interval: Duration::from_millis(10),
                refresh: Duration::from_secs(30)
            }
        );
    }

    #[test]
    fn advert_interval_fits_the_version() {
        fails(
            &vrrp_with("advert_interval = \"15ms\"\n"),
            11,
            "vrrp[0].advert_interval",
            "multiple of 10ms",
        );
        fails(
            &vrrp_with("advert_interval = \"41s\"\n"),
            11,
            "vrrp[0].advert_interval",
            "40.95s",
        );
        fails(
            &vrrp_with("advert_interval = \"0s\"\n"),
            11,
            "vrrp[0].advert_interval",
            "version 3",
        );
        assert_eq!(
            ok(&vrrp_with("advert_interval = \"40.95s\"\n")).vrrp[0]
                .election
                .advert_interval,
            Duration::from_millis(40_950)
        );
        fails(
            &vrrp_with("version = 2\nadvert_interval = \"500ms\"\n"),
            12,
            "vrrp[0].advert_interval",
            "whole seconds",
        );
        fails(
            &vrrp_with("version = 2\nadvert_interval = \"256s\"\n"),
            12,
            "vrrp[0].advert_interval",
            "255s",
        );
        assert_eq!(
            ok(&vrrp_with("version = 2\nadvert_interval = \"3s\"\n")).vrrp[0]
                .election
                .advert_interval,
            Duration::from_secs(3)
        );
    }

    #[test]
    fn auth_pass_is_short() {
        fails(
            &vrrp_with("version = 2\nauth_pass = \"123456789\"\n"),
            12,
            "vrrp[0].auth_pass",
            "1 to 8 bytes",
        );
        fails(
            &vrrp_with("version = 2\nauth_pass = \"\"\n"),
            12,
            "vrrp[0].auth_pass",
            "1 to 8 bytes",
        );
        fails(
            &vrrp_with("auth_pass = \"123456789\"\n"),
            11,
            "vrrp[0].auth_pass",
            "1 to 8 bytes",
        );
        assert_eq!(
            ok(&vrrp_with("version = 2\nauth_pass = \"12345678\"\n")).vrrp[0]
                .auth_pass
                .as_deref(),
            Some("12345678")
        );
        assert_eq!(
            ok(&vrrp_with("auth_pass = \"1234\"\n")).vrrp[0].auth_pass,
            None
        );
    }

    #[test]
    fn vips_are_non_empty_and_distinct() {
        fails(
            &vrrp_with("").replace("vips = [\"10.0.0.100\"]", "vips = []"),
            10,
            "vrrp[0].vips",
            "at least one VIP",
        );
        let dup = vrrp_with("").replace(
            "vips = [\"10.0.0.100\"]",
            "vips = [\"10.0.0.100\",\n  \"10.0.0.100\"]",
        );
        fails(
            &dup,
            11,
            "vrrp[0].vips[1]",
            "VIP 10.0.0.100 is listed twice (first at line 10)",
        );
        fails(
            &vrrp_with("unicast_peers = [\"10.0.0.2\", \"10.0.0.2\"]\n"),
            11,
            "vrrp[0].unicast_peers[1]",
            "listed twice",
        );
    }

    #[test]
    fn a_vip_may_name_a_vlan() {
        let cfg = ok(&vrrp_with("").replace(
            "vips = [\"10.0.0.100\"]",
            "vips = [\"10.0.0.100\", { address = \"10.0.0.101\", vlan = 100 },\n  { address = \"10.0.0.102\" }]",
        ));
        let v = &cfg.vrrp[0];
        let [plain, tagged, table] = [100, 101, 102].map(|h| Ipv4Addr::new(10, 0, 0, h));
        assert_eq!(v.vips, [plain, tagged, table]);
        assert_eq!((v.vlan(plain), v.vlan(tagged), v.vlan(table)), (0, 100, 0));
        assert_eq!(cfg.vlan_of(tagged), 100);
        assert_eq!(
            ok(&vrrp_with("").replace(
                "10.0.0.100\"]",
                "10.0.0.100\", { address = \"10.0.0.1\", vlan = 4094 }]"
            ))
            .vrrp[0]
                .vlan(Ipv4Addr::new(10, 0, 0, 1)),
            4094
        );
    }

    #[test]
    fn a_vlan_out_of_range_or_not_a_number_is_refused_with_its_key_and_line() {
        let with = |entry: &str| {
            vrrp_with("").replace(
                "vips = [\"10.0.0.100\"]",
                &format!("vips = [\"10.0.0.100\",\n  {entry}]"),
            )
        };
        for (vlan, needle) in [
            ("0", "0 is out of range: an 802.1Q VLAN id must be 1..=4094"),
            (
                "4095",
                "4095 is out of range: an 802.1Q VLAN id must be 1..=4094",
            ),
            ("-3", "out of range"),
        ] {
            fails(
                &with(&format!("{{ address = \"10.0.0.101\", vlan = {vlan} }}")),
                11,
                "vrrp[0].vips[1].vlan",
                needle,
            );
        }
        fails(
            &with("{ address = \"10.0.0.101\", vlan = \"x\" }"),
            11,
            "vrrp[0].vips[1].vlan",
            "invalid type: string \"x\", expected an integer",
        );
        let e = parse(&with("{ address = \"10.0.0.101\", vlna = 100 }")).unwrap_err();
        assert_eq!(e.line, Some(11), "{e}");
        assert!(e.to_string().contains("vlna"), "{e}");
        let e = parse(&with("{ vlan = 100 }")).unwrap_err();
        assert!(e.to_string().contains("address"), "{e}");
        fails(
            &with("{ address = \"10.0.0.100\", vlan = 7 }"),
            11,
            "vrrp[0].vips[1]",
            "VIP 10.0.0.100 is listed twice (first at line 10)",
        );
    }

    #[test]
    fn an_address_has_one_vlan_across_instances() {
        let second =
            |vips: &str| format!("[[vrrp]]\nname = \"VI_2\"\nvrid = 52\nvips = [{vips}]\n");
        fails(
            &(vrrp_with("") + &second("{ address = \"10.0.0.100\", vlan = 100 }")),
            11,
            "vrrp[1].vips",
            "VIP 10.0.0.100 is on VLAN 100 here but untagged in vrrp[0] (line 7)",
        );
        // The same address on the same VLAN is not this check's concern.
        ok(&(vrrp_with("") + &second("\"10.0.0.100\"")));
    }

    #[test]
    fn vrrp_names_and_vrids_are_unique() {
        let second = |name: &str, vrid: u8| {
            format!("[[vrrp]]\nname = \"{name}\"\nvrid = {vrid}\nvips = [\"10.0.0.101\"]\n")
        };
        fails(
            &(vrrp_with("") + &second("VI_1", 52)),
            12,
            "vrrp[1].name",
            "already the name of vrrp[0] (line 7)",
        );
        fails(
            &(vrrp_with("") + &second("VI_2", 51)),
            13,
            "vrrp[1].vrid",
            "vrid 51 is already used by vrrp[0] (line 7)",
        );
        assert_eq!(ok(&(vrrp_with("") + &second("VI_2", 52))).vrrp.len(), 2);
    }

    #[test]
    fn sync_group_checksum_and_track_services() {
        let c = ok(&vrrp_with(
            "sync_group = \"G1\"\nv3_checksum = \"message-only\"\ntrack_services = { weight = -50 }\n",
        ));
        assert_eq!(c.vrrp[0].sync_group.as_deref(), Some("G1"));
        assert_eq!(c.vrrp[0].v3_checksum, V3Checksum::MessageOnly);
        assert_eq!(c.vrrp[0].track_services, Some(-50));
        let c = ok(&vrrp_with("track_services = {}\n"));
        assert_eq!(c.vrrp[0].track_services, Some(0));
        let c = ok(&vrrp_with(""));
        assert_eq!(c.vrrp[0].v3_checksum, V3Checksum::PseudoHeader);
        assert_eq!(
            (c.vrrp[0].sync_group.as_ref(), c.vrrp[0].track_services),
            (None, None)
        );
        fails(
            &vrrp_with("sync_group = \" \"\n"),
            11,
            "vrrp[0].sync_group",
            "empty",
        );
        fails(
            &vrrp_with("track_services = { weight = -300 }\n"),
            11,
            "vrrp[0].track_services.weight",
            "-254..=254",
        );
        fails(
            &vrrp_with("v3_checksum = \"rfc\"\n"),
            11,
            "vrrp[0].v3_checksum",
            "pseudo-header",
        );
        fails(
            &vrrp_with("version = 2\nadvert_interval = \"1s\"\nv3_checksum = \"message-only\"\n"),
            13,
            "vrrp[0].v3_checksum",
            "version 3 only",
        );
    }

    #[test]
    fn tracks_name_existing_checks_within_weight_range() {
        fails(
            &vrrp_with("track = [{ check = \"nope\" }]\n"),
            11,
            "vrrp[0].track[0].check",
            "no [[check]] named \"nope\"",
        );
        fails(
            &vrrp_with("track = [{ check = \"c\", weight = 255 }]\n"),
            11,
            "vrrp[0].track[0].weight",
            "-254..=254",
        );
        let c = ok(&vrrp_with(
            "track = [{ check = \"c\", weight = -254 }, { check = \"c\" }]\n",
        ));
        assert_eq!(
            c.vrrp[0].track,
            [
                Track {
                    check: "c".into(),
                    weight: -254
                },
                Track {
                    check: "c".into(),
                    weight: 0
                }
            ]
        );
    }

    #[test]
    fn checks_are_unique_and_complete() {
        let check = |body: &str| format!("{NODE}[[check]]\nname = \"c\"\n{body}");
        fails(
            &check("kind = \"exec\"\n"),
            4,
            "check[0].command",
            "needs a command",
        );
        fails(
            &check("kind = \"tcp\"\ncommand = \"x\"\n"),
            7,
            "check[0].command",
            "only kind = \"exec\"",
        );
        fails(
            &check("kind = \"tcp\"\ninterval = \"0s\"\n"),
            7,
            "check[0].interval",
            "greater than 0s",
        );
        fails(
            &check("kind = \"tcp\"\ntimeout = \"0ms\"\n"),
            7,
            "check[0].timeout",
            "greater than 0s",
        );
        fails(
            &check("kind = \"tcp\"\nrise = 0\n"),
            7,
            "check[0].rise",
            "out of range",
        );
        fails(&check("kind = \"ping\"\n"), 6, "check[0].kind", "`exec`");
        let twice = format!(
            "{}[[check]]\nname = \"c\"\nkind = \"exec\"\ncommand = \"true\"\n",
            check("kind = \"amqp\"\naddress = \"127.0.0.1\"\n")
        );
        fails(
            &twice,
            9,
            "check[1].name",
            "already the name of check[0] (line 4)",
        );
    }

    #[test]
    fn every_node_check_is_named() {
        let e = fails(
            &format!("{NODE}[[check]]\nkind = \"tcp\"\naddress = \"127.0.0.1\"\nport = 1\n"),
            4,
            "check[0].name",
            "every [[check]] needs a name, which [[vrrp]] track refers to",
        );
        assert!(e.message.contains("add name = "), "{e}");
        fails(
            &format!("check = [{{ kind = \"exec\", command = \"true\" }}]\n{NODE}"),
            1,
            "check[0].name",
            "needs a name",
        );
    }

    #[test]
    fn a_service_check_has_no_name_or_address() {
        let svc = |check: &str| format!("{NODE}{SERVICE}[service.check]\nkind = \"tcp\"\n{check}");
        let e = fails(
            &svc("interval = \"1s\"\nname = \"c\"\n"),
            11,
            "service[0].check.name",
            "a service check probes each backend of the service, so it has no name",
        );
        assert!(
            e.message
                .contains("remove name, or write a [[check]] table"),
            "{e}"
        );
        fails(
            &svc("address = \"127.0.0.1\"\n"),
            10,
            "service[0].check.address",
            "so it has no address; remove address",
        );
        fails(
            &format!("{NODE}{SERVICE}check = {{ kind = \"tcp\", name = \"c\" }}\n"),
            8,
            "service[0].check.name",
            "[[check]] table",
        );
    }

    #[test]
    fn service_checks_take_only_their_kind_keys() {
        let svc = |check: &str| format!("{NODE}{SERVICE}check = {{ {check} }}\n");
        fails(
            &svc("kind = \"exec\""),
            8,
            "service[0].check.command",
            "needs a command",
        );
        fails(
            &svc("kind = \"tcp\", command = \"true\""),
            8,
            "service[0].check.command",
            "only kind = \"exec\" runs a command",
        );
        fails(
            &svc("kind = \"amqp\", path = \"/\""),
            8,
            "service[0].check.path",
            "only a kind = \"http\" check uses path",
        );
        fails(
            &svc("kind = \"tcp\", vhost = \"/\""),
            8,
            "service[0].check.vhost",
            "only a kind = \"amqp\"",
        );
        fails(
            &svc("kind = \"tcp\", expect_status = 200"),
            8,
            "service[0].check.expect_status",
            "http",
        );
        fails(
            &svc("kind = \"http\", path = \"health\""),
            8,
            "service[0].check.path",
            "must start with '/'",
        );
        fails(
            &svc("kind = \"http\", expect_status = 99"),
            8,
            "service[0].check.expect_status",
            "100..=599",
        );
        fails(
            &svc("kind = \"amqp\", user = \"u\""),
            8,
            "service[0].check.password",
            "needs a password",
        );
        fails(
            &svc("kind = \"tcp\", interval = \"0s\""),
            8,
            "service[0].check.interval",
            "greater than 0s",
        );
        fails(
            &svc("kind = \"tcp\", port = 0"),
            8,
            "service[0].check.port",
            "1..=65535",
        );
        let c = ok(&svc(
            "kind = \"amqp\", port = 15672, user = \"u\", password = \"p\", vhost = \"/\"",
        ));
        let sc = c.services[0].check.clone().unwrap();
        assert_eq!(
            (sc.port, sc.probe),
            (
                Some(15672),
                Probe::Amqp {
                    login: Some(("u".into(), "p".into(), "/".into()))
                }
            )
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let e = parse(&format!("{NODE}[[service]\n")).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.to_string().starts_with("vip.toml:4: "), "{e}");
        let e = parse(&vrrp_with("vips = [\"10.0.0.1\"]\n")).unwrap_err();
        assert_eq!(e.line, Some(11), "{e}");
        assert!(e.message.contains("duplicate key `vips`"), "{e}");
    }

    /// toml gives no message for a value missing at the end of the text;
    /// the error still says what is wrong (found by the config fuzz target).
    #[test]
    fn a_value_missing_at_the_end_is_named() {
        for (text, line) in [("H=", 1), ("[node]\ninterface = \"eth0\"\nname =  ", 3)] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, Some(line), "{e}");
            assert_eq!(e.message, "a value is missing after `=`", "{e}");
        }
    }

    #[test]
    fn load_names_the_unreadable_file() {
        let path = Path::new("/nonexistent/vip-config-test.toml");
        let e = Config::load(path).unwrap_err();
        assert_eq!(
            (e.path.as_path(), e.line, e.key.as_ref()),
            (path, None, None)
        );
        assert!(
            e.to_string()
                .starts_with("/nonexistent/vip-config-test.toml: cannot read"),
            "{e}"
        );
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn load_reads_a_file() {
        let dir = std::env::temp_dir().join(format!("vip-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vip.toml");
        std::fs::write(&path, EXAMPLE).unwrap();
        let c = Config::load(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(c.unwrap().0.services[0].backends.len(), 3);
    }
}
