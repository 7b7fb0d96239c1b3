//! Sync groups (keepalived's `vrrp_sync_group`): instances that change state
//! together, so that, say, the client-side and the backend-side VIP of a
//! router never live on different nodes. Sans-IO like the machine: the shell
//! calls [`Groups::settle`] after every input it fed to its machines, before
//! it executes their actions.
//!
//! The rules, as keepalived 2.2 applies them (`vrrp_sync.c`):
//! - **Fault**: while one member is not operational (link down, a failing
//!   tracked check), every member is in Fault. The shell computes this with
//!   [`Groups::operational`].
//! - **Backup wins**: when a member falls from Master to Backup (it heard a
//!   better master), every other member that is Master falls back too
//!   ([`Machine::handle_sync_backup`]).
//! - **Master only together**: a member becomes Master only when every other
//!   member is Master or wants to be ([`Machine::wants_master`]: its own
//!   master-down time has passed). This prefers Backup to thrashing when the
//!   members' elections disagree.
//!
//! Because of the last rule keepalived ignores `track_script` weights of
//! sync-group members (a failing tracked check puts the member, and so the
//! group, in Fault): moving one member's priority would make the members'
//! elections disagree. vip does the same.

use std::{collections::BTreeMap, time::Instant};

use super::machine::{Machine, State};

/// The sync groups of a node's instances, by index.
#[derive(Debug, Clone, Default)]
pub struct Groups {
    groups: Vec<Vec<usize>>,
}

impl Groups {
    /// Groups the instances by name; `names[i]` is instance `i`'s group.
    #[must_use]
    pub fn new<'a>(names: impl IntoIterator<Item = Option<&'a str>>) -> Self {
        let mut by_name: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, name) in names.into_iter().enumerate() {
            if let Some(name) = name {
                by_name.entry(name).or_default().push(i);
            }
        }
        Self {
            groups: by_name.into_values().collect(),
        }
    }

    /// Whether instance `i` may run, given every instance's own
    /// operational state: all members of its group must be.
    #[must_use]
    pub fn operational(&self, i: usize, own: &[bool]) -> bool {
        match self.groups.iter().find(|g| g.contains(&i)) {
            Some(group) => group.iter().all(|&m| own[m]),
            None => own[i],
        }
    }

    /// Applies the group rules after one input. `before[i]` is machine `i`'s
    /// state before the input.
    pub fn settle<M: AsMut<Machine>>(&self, now: Instant, machines: &mut [M], before: &[State]) {
        for group in &self.groups {
            let state = |machines: &mut [M], m: usize| machines[m].as_mut().state();
            let fell = group
                .iter()
                .any(|&m| before[m] == State::Master && state(machines, m) == State::Backup);
            if fell {
                for &m in group {
                    machines[m].as_mut().handle_sync_backup(now);
                }
                continue;
            }
            let wants = |machines: &mut [M], m: usize| {
                let machine = machines[m].as_mut();
                machine.state() == State::Master || machine.wants_master()
            };
            let any_waiting = group.iter().any(|&m| machines[m].as_mut().wants_master());
            let rose = group
                .iter()
                .any(|&m| before[m] != State::Master && state(machines, m) == State::Master);
            if (any_waiting && group.iter().all(|&m| wants(machines, m))) || rose {
                for &m in group {
                    machines[m].as_mut().handle_sync_master(now);
                }
            }
        }
    }
}

impl AsMut<Machine> for Machine {
    fn as_mut(&mut self) -> &mut Machine {
        self
    }
}

#[cfg(test)]
mod tests {
    //! Two nodes, each with two instances (VRIDs 1 and 2) in one sync group,
    //! on a simulated wire with a fixed delay and a virtual clock.

    use std::{
        net::Ipv4Addr,
        time::{Duration, Instant},
    };

    use super::*;
    use crate::vrrp::machine::{Action, Election, Incoming, Params};

    const D: Duration = Duration::from_micros(100);
    const ADV: Duration = Duration::from_millis(10);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    struct Node {
        machines: Vec<Machine>,
        groups: Groups,
        running: bool,
        /// Own operational state per instance (link, tracked checks).
        own: Vec<bool>,
    }

    struct Packet {
        at: Instant,
        to: usize,
        vrid: usize,
        adv: Incoming,
    }

    struct Sim {
        t0: Instant,
        now: Instant,
        nodes: Vec<Node>,
        wire: Vec<Packet>,
        /// (time since t0, node, vrid, new state)
        log: Vec<(Duration, usize, usize, State)>,
        /// Partitioned: adverts are lost.
        cut: bool,
    }

    fn addr(node: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, 0, 2 + u8::try_from(node).unwrap())
    }

    impl Sim {
        /// `prios[node][vrid]`; every node's instances form one sync group.
        fn new(prios: &[[u8; 2]]) -> Self {
            let t0 = Instant::now();
            let nodes = prios
                .iter()
                .enumerate()
                .map(|(n, p)| Node {
                    machines: p
                        .iter()
                        .enumerate()
                        .map(|(v, &priority)| {
                            Machine::new(Params {
                                election: Election {
                                    vrid: u8::try_from(v + 1).unwrap(),
                                    priority,
                                    version: 3,
                                    advert_interval: ADV,
                                    preempt: true,
                                    preempt_delay: Duration::ZERO,
                                },
                                primary: addr(n),
                                synced: true,
                            })
                        })
                        .collect(),
                    groups: Groups::new([Some("G"), Some("G")]),
                    running: false,
                    own: vec![true, true],
                })
                .collect();
            Self {
                t0,
                now: t0,
                nodes,
                wire: Vec::new(),
                log: Vec::new(),
                cut: false,
            }
        }

        fn start(&mut self, n: usize) {
            let now = self.now;
            self.step(n, |m, _| m.handle_startup(now));
            self.nodes[n].running = true;
        }

        /// Feeds one input to node `n`'s machines, settles the group and
        /// executes the actions.
        fn step(&mut self, n: usize, input: impl Fn(&mut Machine, usize)) {
            let now = self.now;
            let node = &mut self.nodes[n];
            let before: Vec<State> = node.machines.iter().map(Machine::state).collect();
            for (v, m) in node.machines.iter_mut().enumerate() {
                input(m, v);
            }
            node.groups.settle(now, &mut node.machines, &before);
            for v in 0..node.machines.len() {
                while let Some(action) = self.nodes[n].machines[v].poll_action() {
                    match action {
                        Action::SendAdvert { .. } if self.cut => {}
                        Action::SendAdvert { priority } => {
                            for to in (0..self.nodes.len()).filter(|&to| to != n) {
                                self.wire.push(Packet {
                                    at: now + D,
                                    to,
                                    vrid: v,
                                    adv: Incoming {
                                        src: addr(n),
                                        priority,
                                        interval: ADV,
                                    },
                                });
                            }
                        }
                        Action::BecomeMaster => self.log(n, v, State::Master),
                        Action::BecomeBackup => self.log(n, v, State::Backup),
                        Action::EnterFault => self.log(n, v, State::Fault),
                        Action::SendGarp | Action::Notify(_) => {}
                    }
                }
            }
        }

        fn log(&mut self, n: usize, v: usize, state: State) {
            self.log.push((self.now - self.t0, n, v + 1, state));
        }

        fn crash(&mut self, n: usize) {
            self.nodes[n].running = false;
            self.wire.retain(|p| p.to != n);
        }

        /// Sets instance `v` of node `n` operational or not (a tracked
        /// check, say) and applies the group's fault rule.
        fn set_own(&mut self, n: usize, v: usize, up: bool) {
            self.nodes[n].own[v] = up;
            let own = self.nodes[n].own.clone();
            let groups = self.nodes[n].groups.clone();
            let now = self.now;
            self.step(n, |m, i| m.handle_link(now, groups.operational(i, &own)));
        }

        fn run_until(&mut self, end: Duration) {
            let end = self.t0 + end;
            for _ in 0..1_000_000 {
                let packet = self.wire.iter().map(|p| p.at).min();
                let timer = self
                    .nodes
                    .iter()
                    .filter(|n| n.running)
                    .flat_map(|n| n.machines.iter().filter_map(Machine::poll_timeout))
                    .min();
                let Some(next) = packet.into_iter().chain(timer).min() else {
                    break;
                };
                if next > end {
                    break;
                }
                self.now = next;
                if let Some(i) = self.wire.iter().position(|p| p.at == next) {
                    let p = self.wire.swap_remove(i);
                    if self.nodes[p.to].running {
                        self.step(p.to, |m, v| {
                            if v == p.vrid {
                                m.handle_advert(next, p.adv);
                            }
                        });
                    }
                    continue;
                }
                let n = (0..self.nodes.len())
                    .find(|&n| {
                        self.nodes[n].running
                            && self.nodes[n]
                                .machines
                                .iter()
                                .any(|m| m.poll_timeout() == Some(next))
                    })
                    .expect("a timer is due");
                self.step(n, |m, _| m.handle_timeout(next));
            }
            self.now = end;
        }

        fn states(&self, n: usize) -> Vec<State> {
            self.nodes[n].machines.iter().map(Machine::state).collect()
        }

        /// Transitions logged after `from`.
        fn changes_after(&self, from: Duration) -> Vec<(Duration, usize, usize, State)> {
            self.log.iter().filter(|e| e.0 > from).copied().collect()
        }
    }

    use State::{Backup, Fault, Master};

    #[test]
    fn the_group_is_elected_and_fails_over_together() {
        let mut sim = Sim::new(&[[150, 150], [100, 100]]);
        sim.start(0);
        sim.start(1);
        sim.run_until(ms(300));
        assert_eq!(
            (sim.states(0), sim.states(1)),
            (vec![Master; 2], vec![Backup; 2])
        );

        // The master dies: the backup takes both, at the same instant.
        sim.crash(0);
        sim.run_until(ms(500));
        let changes = sim.changes_after(ms(300));
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[0].0, changes[1].0, "{changes:?}");
        assert!(changes[0].0 < ms(300) + ADV * 4 + ms(1), "{changes:?}");
        assert_eq!(sim.states(1), vec![Master; 2]);
    }

    #[test]
    fn one_failing_member_moves_the_whole_group_and_back() {
        let mut sim = Sim::new(&[[150, 150], [100, 100]]);
        sim.start(0);
        sim.start(1);
        sim.run_until(ms(300));
        // VI_2's tracked check fails on node 0: both its instances go to
        // Fault, node 1 takes both.
        sim.set_own(0, 1, false);
        assert_eq!(sim.states(0), vec![Fault; 2]);
        sim.run_until(ms(500));
        assert_eq!(sim.states(1), vec![Master; 2]);
        // Recovered: node 0 preempts both back.
        sim.set_own(0, 1, true);
        sim.run_until(ms(800));
        assert_eq!(
            (sim.states(0), sim.states(1)),
            (vec![Master; 2], vec![Backup; 2])
        );
    }

    #[test]
    fn disagreeing_elections_prefer_backup_and_never_thrash() {
        // Node 0 wins VRID 1, node 1 wins VRID 2: without sync each would
        // hold one. With sync the first master keeps both, and nothing moves.
        let mut sim = Sim::new(&[[150, 100], [100, 150]]);
        sim.start(0);
        sim.run_until(ms(100));
        assert_eq!(sim.states(0), vec![Master; 2]);
        sim.start(1);
        sim.run_until(ms(2000));
        assert_eq!(
            (sim.states(0), sim.states(1)),
            (vec![Master; 2], vec![Backup; 2])
        );
        assert_eq!(
            sim.changes_after(ms(100)),
            [],
            "no transition once node 1 runs"
        );
    }

    #[test]
    fn a_member_that_loses_takes_the_group_to_backup_with_priority_zero() {
        // Node 1 starts late with a higher priority for both: node 0's first
        // member to hear it falls back and takes the other along at once.
        let mut sim = Sim::new(&[[100, 100], [150, 150]]);
        sim.start(0);
        sim.run_until(ms(100));
        sim.start(1);
        sim.run_until(ms(400));
        assert_eq!(
            (sim.states(0), sim.states(1)),
            (vec![Backup; 2], vec![Master; 2])
        );
        let node0: Vec<_> = sim
            .changes_after(ms(100))
            .into_iter()
            .filter(|c| c.1 == 0)
            .collect();
        assert_eq!(node0.len(), 2, "{node0:?}");
        assert_eq!(
            node0[0].0, node0[1].0,
            "both fell back in one step: {node0:?}"
        );
    }

    #[test]
    fn a_healed_partition_leaves_one_node_holding_the_whole_group() {
        // The members' elections disagree (node 1 wins VRID 1, node 0 VRID
        // 2). During the partition each node holds both; on healing, the
        // member that hears a better master falls back and takes its group
        // along, so the group is never split between the nodes.
        let mut sim = Sim::new(&[[100, 100], [150, 50]]);
        sim.cut = true;
        sim.start(0);
        sim.start(1);
        sim.run_until(ms(300));
        assert_eq!(
            (sim.states(0), sim.states(1)),
            (vec![Master; 2], vec![Master; 2])
        );
        sim.cut = false;
        sim.run_until(ms(2000));
        let (s0, s1) = (sim.states(0), sim.states(1));
        assert!(
            (s0 == [Master; 2] && s1 == [Backup; 2]) || (s0 == [Backup; 2] && s1 == [Master; 2]),
            "{s0:?} {s1:?}: {:?}",
            sim.changes_after(ms(300))
        );
        assert_eq!(sim.changes_after(ms(1000)), [], "settled");
    }

    #[test]
    fn groups_are_formed_by_name() {
        let g = Groups::new([Some("a"), None, Some("b"), Some("a")]);
        assert!(g.operational(1, &[false, true, true, true]));
        assert!(!g.operational(3, &[false, true, true, true]));
        assert!(g.operational(2, &[false, true, true, false]));
        assert!(!g.operational(0, &[true, true, true, false]));
    }
}
