//! A keepalived pair moved to vip with `vipctl import-keepalived`: the
//! keepalived.conf of each node (unicast VRRP version 2, `auth_type PASS`, a
//! tracked script, an LVS-DR virtual server over the lab's backends) is
//! imported, both agents run the imported TOML, lb1 (priority 150) becomes
//! master, and when it is killed lb2 (priority 100) takes over: the client's
//! ARP entry for the VIP and its connections follow.
#![allow(
    clippy::too_many_lines,
    reason = "scenario tests read best as one story"
)]

use vip_tests::kit as common;

use std::{path::Path, time::Duration};

use common::{Agent, DirGuard, VIP, is_root, lab, wait_for, who_answers};
use vip_agent::import::{Options, import};
use vip_tests::lab::{Lab, control_socket, format_mac};

/// The keepalived.conf of `node`, as a keepalived user would have written it.
fn keepalived_conf(node: &str, priority: u8, me: &str, peer: &str) -> String {
    let state = if priority > 100 { "MASTER" } else { "BACKUP" };
    format!(
        r#"global_defs {{
    router_id {node}
    enable_script_security
}}

vrrp_script chk_true {{
    script "/bin/true"
    interval 1
    weight -60
}}

vrrp_instance VI_1 {{
    state {state}
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int 1
    unicast_src_ip {me}
    unicast_peer {{
        {peer}
    }}
    authentication {{
        auth_type PASS
        auth_pass lab-pass
    }}
    virtual_ipaddress {{
        {VIP}/32
    }}
    track_script {{
        chk_true
    }}
}}

virtual_server {VIP} 5672 {{
    delay_loop 1
    lb_algo wrr
    lb_kind DR
    protocol TCP
    real_server 10.99.0.11 5672 {{
        TCP_CHECK {{
            connect_timeout 1
        }}
    }}
    real_server 10.99.0.12 5672 {{
        TCP_CHECK {{
            connect_timeout 1
        }}
    }}
    real_server 10.99.0.13 5672 {{
        TCP_CHECK {{
            connect_timeout 1
        }}
    }}
}}
"#
    )
}

/// Imports `node`'s keepalived.conf (written to `dir`) and checks what the
/// import kept.
fn import_node(dir: &Path, node: &str, priority: u8, me: &str, peer: &str) -> String {
    let path = dir.join(format!("{node}-keepalived.conf"));
    std::fs::write(&path, keepalived_conf(node, priority, me, peer))
        .expect("write keepalived.conf");
    let imported = import(&path, &Options::default()).unwrap_or_else(|e| {
        panic!(
            "import of {}: {}",
            path.display(),
            vip_agent::error_chain(&e)
        )
    });
    let toml = imported.toml;
    for needle in [
        "interface = \"eth0\"",
        &format!("name = \"{node}\""),
        &format!("priority = {priority}"),
        "version = 2",
        "auth_pass = \"lab-pass\"",
        &format!("unicast_peers = [\"{peer}\"]"),
        "track = [{ check = \"chk_true\", weight = -60 }]",
        "port = 5672",
    ] {
        assert!(toml.contains(needle), "{needle} in:\n{toml}");
    }
    let notes: Vec<String> = imported.notes.iter().map(ToString::to_string).collect();
    // enable_script_security is vip's default: mapped, no note.
    assert!(
        !notes.iter().any(|n| n.contains("enable_script_security")),
        "{notes:#?}"
    );
    toml
}

/// Starts vip-agent in `node` with the imported `toml`. `Agent` writes and
/// starts its own config first; this replaces it with the import, changing
/// only the two `[node]` paths each test keeps to itself (the pin root and
/// the control socket), and starts the agent again.
fn start_imported(lab: &Lab, node: &str, toml: &str) -> Agent {
    let backends = [("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)];
    let mut agent = Agent::start(lab, node, node, &backends);
    assert!(
        agent.stop().success(),
        "{node}: the first agent stops cleanly"
    );
    let paths = format!(
        "[node]\nbpffs = \"{}\"\ncontrol_socket = \"{}\"\n",
        agent.bpffs.display(),
        control_socket(node, &agent.bpffs).display()
    );
    assert!(toml.contains("[node]\n"), "{toml}");
    std::fs::write(&agent.config, toml.replacen("[node]\n", &paths, 1)).expect("write config");
    agent.spawn(lab);
    agent
}

fn client_arp(lab: &Lab) -> String {
    lab.ns("client")
        .ip(&["neigh", "show", &VIP.to_string()])
        .unwrap_or_default()
}

#[test]
fn an_imported_keepalived_pair_fails_over() {
    if !is_root() {
        eprintln!("skipping: netns tests need root");
        return;
    }
    let lab = lab("imp");
    let guard = DirGuard::new(std::path::PathBuf::from(format!(
        "/run/vip-test/{}-import",
        lab.prefix()
    )));
    let lb1_toml = import_node(&guard.0, "lb1", 150, "10.99.0.2", "10.99.0.3");
    let lb2_toml = import_node(&guard.0, "lb2", 100, "10.99.0.3", "10.99.0.2");
    let lb1_mac = format_mac(lab.mac("lb1"));
    let lb2_mac = format_mac(lab.mac("lb2"));

    let mut lb1 = start_imported(&lab, "lb1", &lb1_toml);
    let lb2 = start_imported(&lab, "lb2", &lb2_toml);

    // VRRP version 2 with 1 s adverts: a backup waits 3 adverts and a skew.
    wait_for("lb1 master, lb2 backup", Duration::from_secs(10), || {
        (lb1.holds(VIP) && !lb2.holds(VIP)).then_some(())
    });
    let (who, _) = lab
        .run_in("client", || who_answers(Duration::from_secs(2)))
        .expect("the VIP answers through lb1");
    assert!(who.starts_with('b'), "a backend answered: {who}");
    wait_for(
        "the client's ARP entry to name lb1",
        Duration::from_secs(3),
        || client_arp(&lab).contains(&lb1_mac).then_some(()),
    );

    lb1.kill9();
    wait_for("lb2 to become master", Duration::from_secs(10), || {
        lb2.holds(VIP).then_some(())
    });
    wait_for(
        "the client's ARP entry to name lb2",
        Duration::from_secs(3),
        || client_arp(&lab).contains(&lb2_mac).then_some(()),
    );
    let (who, _) = wait_for(
        "the VIP to answer through lb2",
        Duration::from_secs(5),
        || {
            lab.run_in("client", || who_answers(Duration::from_secs(1)))
                .ok()
        },
    );
    assert!(who.starts_with('b'), "a backend answered: {who}");
}

/// `toml` with every `command = "/usr/local/bin/..."` replaced by `true`.
fn lab_scripts(toml: &str) -> String {
    let mut out = String::with_capacity(toml.len());
    let mut rest = toml;
    while let Some(at) = rest.find("command = \"/usr/local/bin/") {
        let start = at + "command = \"".len();
        let end = start + rest[start..].find('"').expect("closing quote");
        out.push_str(&rest[..start]);
        out.push_str("true");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Every sample keepalived.conf of `vip-agent/tests/keepalived` runs in the
/// lab once imported: the agent starts on lb1 with the printed TOML (only
/// the node name and its two paths changed), every VRRP instance becomes
/// master (lb1 is alone), the node holds every instance's VIPs, and every
/// backend of a `tcp`-checked service is up.
#[test]
fn every_sample_config_runs_in_the_lab() {
    if !is_root() {
        eprintln!("skipping: netns tests need root");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vip-agent/tests/keepalived");
    let mut samples: Vec<_> = std::fs::read_dir(&dir)
        .expect("samples")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    samples.sort();
    assert!(samples.len() >= 4, "{samples:?}");
    for sample in samples {
        let lab = lab("ims");
        let imported = import(&sample, &Options::default())
            .unwrap_or_else(|e| panic!("{}: {}", sample.display(), vip_agent::error_chain(&e)));
        // The node is called lb1 here whatever its router_id, and the
        // samples' site scripts (/usr/local/bin/...) do not exist in the
        // lab: `true` stands in for them (a missing tracked script would
        // rightly put its instance in Fault).
        let toml: String = lab_scripts(&imported.toml)
            .lines()
            .map(|l| {
                if l.starts_with("name = ") && l.contains("(router_id)") {
                    "name = \"lb1\"".to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let lb1 = start_imported(&lab, "lb1", &toml);
        let what = sample.file_name().unwrap().to_string_lossy().into_owned();
        let st = wait_for(
            &format!("{what}: every instance master"),
            Duration::from_secs(15),
            || {
                let st = lb1.status();
                (!st.instances.is_empty() && st.instances.iter().all(|i| i.state == "master"))
                    .then_some(st)
            },
        );
        for i in &st.instances {
            for vip in &i.vips {
                assert!(lb1.holds(*vip), "{what}: lb1 holds {vip}");
            }
        }
        wait_for(
            &format!("{what}: tcp-checked backends up"),
            Duration::from_secs(15),
            || {
                lb1.status()
                    .services
                    .iter()
                    .filter(|s| s.check.as_deref() == Some("tcp"))
                    .all(|s| s.backends.iter().all(|b| b.up))
                    .then_some(())
            },
        );
        eprintln!(
            "{what}: {} instance(s) master, {} service(s)",
            st.instances.len(),
            st.services.len()
        );
    }
}
