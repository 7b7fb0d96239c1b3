//! Every configuration key, its default and what it does: the text of
//! vip.toml(5) (`docs::vip_toml`). A test holds this list to the keys the
//! parser accepts, both ways, so a key added to a `Raw*` table without a
//! line here fails the build's tests.

/// One table of the file (or an inline table inside one).
pub struct Table {
    /// The dotted path of the table: `node`, `vrrp.garp`, `service.check`.
    pub path: &'static str,
    /// How it is written: `[node]`, `[[vrrp]]`, `garp = { ... }`.
    pub header: &'static str,
    pub doc: &'static str,
    pub keys: &'static [Key],
}

/// One key of a table.
pub struct Key {
    pub name: &'static str,
    /// Its type and default (or "required").
    pub value: &'static str,
    pub doc: &'static str,
}

const fn key(name: &'static str, value: &'static str, doc: &'static str) -> Key {
    Key { name, value, doc }
}

/// The commented example installed as /etc/vip/vip.toml.
pub const EXAMPLE: &str = include_str!("../../etc/vip.toml");

/// Addresses, durations and errors: what holds for every key.
pub const GENERAL: &str = "The file is TOML. Durations are strings with a unit: \"10ms\", \
    \"1s\", \"1m 30s\". Addresses are IPv4 addresses as strings. A key that is not listed \
    here, a value out of its range or of the wrong type is refused: vip-agent --check and \
    vip-agent exit with status 2 and a message naming the file, the line and the dotted key \
    (service[0].backends[2].address). The running agent re-reads the file on SIGHUP or \
    vipctl reload; an invalid file is refused the same way and the running configuration \
    stays.";

/// Every table, in the order the man page gives them.
pub const TABLES: &[Table] = &[
    Table {
        path: "",
        header: "top level",
        doc: "The file has one [node] table and any number of [[vrrp]], [[check]] and \
              [[service]] tables.",
        keys: &[
            key("node", "table, required", "This machine: see [node]."),
            key(
                "vrrp",
                "array of tables",
                "VRRP instances (keepalived's vrrp_instance): see [[vrrp]].",
            ),
            key(
                "check",
                "array of tables",
                "Named node-level checks (keepalived's vrrp_script): see [[check]].",
            ),
            key(
                "service",
                "array of tables",
                "Load-balanced services (keepalived's virtual_server): see [[service]].",
            ),
        ],
    },
    Table {
        path: "node",
        header: "[node]",
        doc: "This machine: where XDP attaches and VRRP runs, and the agent's own settings.",
        keys: &[
            key(
                "interface",
                "string, required",
                "The interface XDP attaches to and VRRP runs on (vip-agent --iface overrides it).",
            ),
            key(
                "name",
                "string, required",
                "The node's name, 1 to 32 of [A-Za-z0-9_-]: its maps are pinned under \
                 <bpffs>/vip/<name> and vipctl --node names it.",
            ),
            key(
                "bpffs",
                "path, default \"/sys/fs/bpf\"",
                "The pin root; the agent mounts a bpffs there if there is none.",
            ),
            key(
                "control_socket",
                "path, default \"/run/vip/<name>.sock\"",
                "The agent's control socket, which vipctl status, drain, undrain and reload use.",
            ),
            key(
                "metrics",
                "\"address:port\", default none",
                "Serve Prometheus metrics on GET /metrics there, such as \"127.0.0.1:9650\".",
            ),
            key(
                "xdp_mode",
                "\"auto\" | \"native\" | \"generic\", default \"auto\"",
                "How XDP attaches: auto uses the driver's mode where it has one, else generic \
                 (skb) mode; native and generic insist on one.",
            ),
            key(
                "dead_time",
                "duration, default derived",
                "How old the agent's heartbeat may get before the XDP program stops acting on \
                 packets (a dead agent must not keep a node forwarding). Default: with VRRP, \
                 4.5 advert intervals of the slowest instance, so a backup has taken over \
                 first; without, 1s. Must be above 0s.",
            ),
            key(
                "script_user",
                "\"user\" or \"user:group\", default see text",
                "Who exec checks and notify scripts run as, by name or number (keepalived's \
                 script_user). Unset: the agent's own user; a root agent uses the user \
                 vip-script when it exists, else root without capabilities, with a warning. \
                 Scripts never keep the agent's capabilities. Switching user needs CAP_SETUID \
                 and CAP_SETGID.",
            ),
            key(
                "script_security",
                "bool, default true",
                "Refuse a script (exec check, notify) that anyone but root or the agent's user \
                 could change: the file and every directory above it (keepalived's \
                 enable_script_security).",
            ),
            key(
                "flow_table_size",
                "integer, 1024..=16777216, default 65536",
                "Entries of the XDP flow table, an LRU of about 100 bytes per entry, \
                 preallocated. A new size needs a restart that removes the pins (SIGTERM).",
            ),
        ],
    },
    Table {
        path: "vrrp",
        header: "[[vrrp]]",
        doc: "One VRRP instance (keepalived's vrrp_instance): the master answers ARP for the \
              VIPs and forwards their services; a backup takes over when the master's \
              adverts stop.",
        keys: &[
            key(
                "name",
                "string, required",
                "Unique; passed to the notify script and shown by vipctl status.",
            ),
            key(
                "vrid",
                "integer, 1..=255, required",
                "The virtual router id, the same on every node of the instance and unique on \
                 the network segment.",
            ),
            key(
                "priority",
                "integer, 1..=255, default 100",
                "The highest priority is master. 255 means this node owns the addresses: \
                 master at once, never preempted.",
            ),
            key(
                "version",
                "2 | 3, default 3",
                "VRRP version: 3 (RFC 9568), or 2 (RFC 3768) for old keepalived peers.",
            ),
            key(
                "advert_interval",
                "duration, default \"1s\"",
                "How often the master advertises. Version 3: a multiple of 10ms, \
                 10ms..=40.95s; version 2: whole seconds, 1s..=255s. A backup takes over about \
                 3 intervals after the last advert.",
            ),
            key(
                "preempt",
                "bool, default true",
                "Whether a higher-priority backup takes over from a lower-priority master.",
            ),
            key(
                "preempt_delay",
                "duration, default \"0s\"",
                "How long a preempting takeover waits (keepalived's preempt_delay).",
            ),
            key(
                "unicast_peers",
                "array of addresses, default multicast",
                "Send adverts to these peers instead of the multicast group 224.0.0.18.",
            ),
            key(
                "auth_pass",
                "string, 1..=8 bytes, version 2 only",
                "keepalived's auth_type PASS with this auth_pass.",
            ),
            key(
                "vips",
                "array, required",
                "The virtual addresses: address strings, or tables { address = \"...\", \
                 vlan = N } for a VIP on an 802.1Q VLAN of the interface (see vips below). \
                 Non-empty and distinct.",
            ),
            key(
                "virtual_mac",
                "bool, default false",
                "Answer ARP for the VIPs with the VRRP virtual MAC 00:00:5e:00:01:<vrid> \
                 instead of the interface's own.",
            ),
            key(
                "garp",
                "table, default { count = 5, interval = \"10ms\", refresh = \"30s\" }",
                "Gratuitous ARPs on becoming master: see garp below.",
            ),
            key(
                "track",
                "array of tables, default none",
                "Checks that move the priority: see track below.",
            ),
            key(
                "notify",
                "path, default none",
                "Run as <notify> <master|backup|fault> <instance> on each transition, one call \
                 at a time, each killed after 10s.",
            ),
            key(
                "track_services",
                "table, default none",
                "Weight applied while every service on this instance's VIPs has no healthy \
                 backend: see track_services below.",
            ),
            key(
                "sync_group",
                "string, default none",
                "Instances naming the same group change state together (keepalived's \
                 vrrp_sync_group): one in fault puts them all in fault, one becoming master \
                 takes the others with it.",
            ),
            key(
                "v3_checksum",
                "\"pseudo-header\" | \"group-pseudo-header\" | \"message-only\", default \
                 \"pseudo-header\"",
                "Version 3 only: the checksum this instance sends (all three are accepted). \
                 pseudo-header is what keepalived >= 1.3.7 and FRR use; group-pseudo-header \
                 is keepalived <= 1.3.6 on unicast; message-only is Cisco's and Juniper's.",
            ),
        ],
    },
    Table {
        path: "vrrp.vips",
        header: "vips = [{ ... }]",
        doc: "A VIP on an 802.1Q VLAN of the interface (a trunk port), keepalived's \
              \"10.0.0.1/24 dev eth0.100\". It is answered and forwarded only on its VLAN, \
              and its gratuitous ARPs carry the tag.",
        keys: &[
            key("address", "address, required", "The VIP."),
            key(
                "vlan",
                "integer, 1..=4094, default untagged",
                "The VLAN id.",
            ),
        ],
    },
    Table {
        path: "vrrp.garp",
        header: "garp = { ... }",
        doc: "Gratuitous ARPs for each VIP when this node becomes master.",
        keys: &[
            key(
                "count",
                "integer, 0..=100, default 5",
                "How many per VIP on a transition.",
            ),
            key(
                "interval",
                "duration, default \"10ms\"",
                "The gap between them.",
            ),
            key(
                "refresh",
                "duration, default \"30s\"",
                "While master, one per VIP this often, so a host that kept a wrong MAC is \
                 corrected; \"0s\" disables.",
            ),
        ],
    },
    Table {
        path: "vrrp.track",
        header: "track = [{ ... }]",
        doc: "A [[check]] whose state moves the instance's priority (keepalived's \
              track_script).",
        keys: &[
            key("check", "string, required", "The name of a [[check]]."),
            key(
                "weight",
                "integer, -254..=254, default 0",
                "Added to the priority while the check fails (negative) or passes (positive); \
                 0 puts the instance in fault while the check fails, as in keepalived.",
            ),
        ],
    },
    Table {
        path: "vrrp.track_services",
        header: "track_services = { ... }",
        doc: "What happens while every service on the instance's VIPs has no healthy backend.",
        keys: &[key(
            "weight",
            "integer, -254..=254, default 0",
            "Negative lowers the priority by that much; 0 puts the instance in fault.",
        )],
    },
    Table {
        path: "check",
        header: "[[check]]",
        doc: "A named node-level check (keepalived's vrrp_script) that [[vrrp]] track refers \
              to. An exec check runs a command; a tcp, amqp or http check probes \
              address:port from the agent itself.",
        keys: &[
            key(
                "name",
                "string, required",
                "Unique; what [[vrrp]] track names.",
            ),
            key(
                "kind",
                "\"exec\" | \"tcp\" | \"amqp\" | \"http\", required",
                "exec: the command exits 0; tcp: a connection opens; amqp: the AMQP 0-9-1 \
                 handshake completes (and, with user, login and the vhost open); http: the \
                 response has the expected status (and body).",
            ),
            key(
                "command",
                "string, exec only",
                "The command, run with /bin/sh -c as script_user, with no capabilities; \
                 exit status 0 passes. Killed with its process group after timeout.",
            ),
            key(
                "address",
                "address, tcp/amqp/http: required",
                "What to probe; refused for exec.",
            ),
            key(
                "port",
                "integer, 1..=65535",
                "The port to probe: default 5672 for amqp and 80 for http; required for tcp.",
            ),
            key(
                "interval",
                "duration, default \"1s\"",
                "The time between probes (above 0s).",
            ),
            key(
                "timeout",
                "duration, default \"1s\"",
                "A probe that takes longer fails (above 0s).",
            ),
            key(
                "rise",
                "integer, at least 1, default 2",
                "Passes in a row that make a failed check pass.",
            ),
            key(
                "fall",
                "integer, at least 1, default 2",
                "Failures in a row that make a passing check fail.",
            ),
            key("path", "string, default \"/\"", "http: the request path."),
            key(
                "expect_status",
                "integer, default 200",
                "http: the status a passing response has.",
            ),
            key(
                "expect_body",
                "string, default none",
                "http: a substring the first 64 KiB of the body must hold.",
            ),
            key(
                "user",
                "string, default none",
                "amqp: log in (PLAIN) as this user and open vhost; http: basic auth.",
            ),
            key("password", "string, default none", "The password for user."),
            key(
                "vhost",
                "string, default \"/\"",
                "amqp with user: the virtual host to open.",
            ),
        ],
    },
    Table {
        path: "service",
        header: "[[service]]",
        doc: "One (VIP, port, protocol) forwarded by XDP to its backends by direct server \
              return: backends must be on a directly connected subnet and hold the VIP on lo \
              with arp_ignore=1 and arp_announce=2, as for LVS-DR.",
        keys: &[
            key("vip", "address, required", "The service's virtual address."),
            key(
                "port",
                "integer, 1..=65535, required",
                "The service's port.",
            ),
            key(
                "protocol",
                "\"tcp\" | \"udp\", default \"tcp\"",
                "The service's protocol.",
            ),
            key(
                "check",
                "table, default none (backends always up)",
                "How each backend is probed: see check below.",
            ),
            key(
                "on_backend_down",
                "\"reset\" | \"rehash\" | \"keep\", default \"reset\" (tcp), \"rehash\" (udp)",
                "What happens to the flows of a backend that goes down: reset answers the \
                 client with an RST so it reconnects at once; rehash places the flow anew on a \
                 live backend; keep leaves it (new flows avoid the backend). reset is refused \
                 for udp.",
            ),
            key(
                "backends",
                "array of tables, 1..=256, required",
                "The backends: see backends below.",
            ),
        ],
    },
    Table {
        path: "service.check",
        header: "check = { ... }",
        doc: "The health check of every backend of a service (keepalived's TCP_CHECK, \
              HTTP_GET, MISC_CHECK). The keys are those of [[check]] but name and address: \
              each backend is probed at its own address. An exec check runs its command once \
              per backend with VIP_BACKEND_ADDRESS and VIP_BACKEND_PORT set.",
        keys: &[
            key(
                "kind",
                "\"exec\" | \"tcp\" | \"amqp\" | \"http\", required",
                "As in [[check]].",
            ),
            key("command", "string, exec only", "As in [[check]]."),
            key(
                "port",
                "integer, default the service's port",
                "The port to probe (exec: the value of VIP_BACKEND_PORT).",
            ),
            key("interval", "duration, default \"1s\"", "As in [[check]]."),
            key("timeout", "duration, default \"1s\"", "As in [[check]]."),
            key("rise", "integer, default 2", "As in [[check]]."),
            key("fall", "integer, default 2", "As in [[check]]."),
            key("path", "string, default \"/\"", "As in [[check]]."),
            key("expect_status", "integer, default 200", "As in [[check]]."),
            key("expect_body", "string, default none", "As in [[check]]."),
            key("user", "string, default none", "As in [[check]]."),
            key("password", "string, default none", "As in [[check]]."),
            key("vhost", "string, default \"/\"", "As in [[check]]."),
        ],
    },
    Table {
        path: "service.backends",
        header: "backends = [{ ... }]",
        doc: "One backend of a service; distinct addresses.",
        keys: &[
            key("address", "address, required", "The backend's address."),
            key(
                "weight",
                "integer, 0..=1000, default 1",
                "Its relative share of new flows (Maglev); 0 drains it: it keeps its flows but \
                 gets no new ones.",
            ),
        ],
    },
];

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, path::Path};

    use serde::{Deserialize, de::Visitor, forward_to_deserialize_any};

    use super::{EXAMPLE, TABLES};
    use crate::config::{
        Config,
        validate::{
            RawBackend, RawCheck, RawConfig, RawGarp, RawNode, RawService, RawTrack,
            RawTrackServices, RawVipTable, RawVrrp,
        },
    };

    /// The field names a derived `Deserialize` asks for: what the parser
    /// accepts in that table (every `Raw*` table denies unknown fields).
    fn fields_of<'de, T: Deserialize<'de>>() -> BTreeSet<&'static str> {
        struct Names<'a>(&'a mut Vec<&'static str>);
        impl<'de> serde::Deserializer<'de> for Names<'_> {
            type Error = serde::de::value::Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(serde::de::Error::custom("not a struct"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0.extend(fields);
                Err(serde::de::Error::custom("names read"))
            }
            forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
                bytes byte_buf option unit unit_struct newtype_struct seq tuple
                tuple_struct map enum identifier ignored_any
            }
        }
        let mut names = Vec::new();
        let _ = T::deserialize(Names(&mut names));
        assert!(
            !names.is_empty(),
            "{} is not a struct",
            std::any::type_name::<T>()
        );
        names.into_iter().collect()
    }

    fn documented(path: &str) -> BTreeSet<&'static str> {
        TABLES
            .iter()
            .find(|t| t.path == path)
            .unwrap_or_else(|| panic!("no table {path:?} in the reference"))
            .keys
            .iter()
            .map(|k| k.name)
            .collect()
    }

    #[test]
    fn the_reference_names_every_key_the_parser_accepts_and_no_other() {
        let service_check: BTreeSet<_> = fields_of::<RawCheck>()
            .into_iter()
            .filter(|k| !matches!(*k, "name" | "address"))
            .collect();
        let accepted = [
            ("", fields_of::<RawConfig>()),
            ("node", fields_of::<RawNode>()),
            ("vrrp", fields_of::<RawVrrp>()),
            ("vrrp.vips", fields_of::<RawVipTable>()),
            ("vrrp.garp", fields_of::<RawGarp>()),
            ("vrrp.track", fields_of::<RawTrack>()),
            ("vrrp.track_services", fields_of::<RawTrackServices>()),
            ("check", fields_of::<RawCheck>()),
            ("service", fields_of::<RawService>()),
            ("service.check", service_check),
            ("service.backends", fields_of::<RawBackend>()),
        ];
        for (path, keys) in &accepted {
            assert_eq!(
                &documented(path),
                keys,
                "table {path:?}: the reference (left) and the parser (right) disagree"
            );
        }
        let paths: BTreeSet<_> = TABLES.iter().map(|t| t.path).collect();
        assert_eq!(paths.len(), TABLES.len(), "a table is listed twice");
        assert_eq!(
            paths,
            accepted.iter().map(|(p, _)| *p).collect(),
            "a table of the reference is not checked against the parser"
        );
    }

    #[test]
    fn the_shipped_example_is_a_valid_configuration() {
        let config = Config::parse(EXAMPLE, Path::new("etc/vip.toml"))
            .unwrap_or_else(|e| panic!("the example does not parse: {e}"));
        assert_eq!(config.vrrp.len(), 1);
        assert_eq!(config.services.len(), 1);
        assert_eq!(config.services[0].backends.len(), 3);
    }
}
