//! The XDP flow table in the netns lab: `[node] flow_table_size` sizes it.
#![allow(
    clippy::too_many_lines,
    reason = "scenario tests read best as one story"
)]

use std::time::Duration;

use vip_agent::dataplane::{Dataplane, DataplaneError};
use vip_common::maps;
use vip_tests::kit::{self as common, Agent, is_root, lab, who_answers};

const BACKENDS: [(&str, u32); 3] = [("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)];

/// An agent with `flow_table_size = 1024` pins a flow table of 1024
/// entries and forwards through it; a data plane loaded over those pins
/// with another size is refused with the key named, so a changed size
/// never silently reuses the old table.
#[test]
fn the_flow_table_has_the_configured_size() {
    if !is_root() {
        eprintln!("skipping: netns tests need root");
        return;
    }
    let lab = lab("ftsz");
    let mut cfg = common::config::node(&lab, "lb1", &BACKENDS);
    cfg.node.flow_table_size = 1024;
    let agent = Agent::start_config(&lab, "lb1", cfg);
    let flows = agent.pins().join(maps::FLOWS);
    let info = aya::maps::MapInfo::from_pin(&flows).expect("the pinned flow table");
    assert_eq!(info.max_entries(), 1024, "{}", flows.display());

    let (who, _) = lab
        .run_in("client", || who_answers(Duration::from_secs(2)))
        .expect("a connection through the VIP");
    assert!(who.starts_with('b'), "{who}");
    assert!(
        !agent.maps().flows().expect("flows").is_empty(),
        "the connection is in the flow table"
    );

    match Dataplane::load(Some(&agent.pins()), 2048) {
        Err(e @ DataplaneError::FlowTableSize { .. }) => {
            let shown = e.to_string();
            assert!(
                shown.contains("has 1024 entries") && shown.contains("flow_table_size is 2048"),
                "{shown}"
            );
        }
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("a data plane of another flow-table size adopted the pins"),
    }
}
