//! `[node] script_user`: who scripts run as, as keepalived's `script_user`
//! decides it.
//!
//! - Named: that user (by name or number) and its own group, or the group
//!   named after the colon.
//! - Not named, the agent not root (the systemd unit's `User=vip`): the
//!   agent's own user; no switch is needed and none of its capabilities
//!   reach the script.
//! - Not named, the agent root: `vip-script` when that user exists, else
//!   root (still without capabilities) with a warning.
//!
//! Becoming another user needs `CAP_SETUID` and `CAP_SETGID`; an agent
//! without them is told so before it starts, not when a script fails.

use nix::unistd::{Gid, Group, Uid, User};

use crate::{
    caps::{CAP_SETGID, CAP_SETUID, SwitchTo},
    config::ScriptUser,
};

/// The user a root agent runs scripts as when `script_user` is not set.
pub const DEFAULT_SCRIPT_USER: &str = "vip-script";

/// Who scripts run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// As logged: `vip-script (uid 998, gid 998)`.
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Whether that is someone other than the agent.
    pub switch: bool,
    /// Said once at start-up: scripts run as root.
    pub warning: Option<String>,
}

impl Identity {
    pub(super) fn switch(&self) -> Option<SwitchTo> {
        self.switch.then_some(SwitchTo {
            uid: self.uid,
            gid: self.gid,
        })
    }
}

/// This process, as far as choosing the script user goes.
#[derive(Debug, Clone, Copy)]
pub struct Agent {
    pub uid: u32,
    pub gid: u32,
    /// Its effective capabilities (`CapEff`).
    pub caps: u64,
}

impl Agent {
    /// The running process.
    #[must_use]
    pub fn this() -> Self {
        Self {
            uid: Uid::effective().as_raw(),
            gid: Gid::effective().as_raw(),
            caps: crate::caps::effective().unwrap_or(0),
        }
    }
}

/// Who scripts run as, for `[node] script_user = wanted`. The error says
/// what is wrong and what to do, for the `node.script_user` key.
pub fn resolve(wanted: Option<&ScriptUser>, agent: Agent) -> Result<Identity, String> {
    let user = match wanted {
        Some(w) => Some(find_user(&w.user)?.ok_or_else(|| {
            format!(
                "there is no user {:?} on this machine: create it (useradd --system --no-create-home {}) or name another",
                w.user, w.user
            )
        })?),
        None if agent.uid != 0 => None,
        None => find_user(DEFAULT_SCRIPT_USER)?,
    };
    let Some(user) = user else {
        let root = agent.uid == 0;
        return Ok(Identity {
            name: format!("the agent's user (uid {}, gid {})", agent.uid, agent.gid),
            uid: agent.uid,
            gid: agent.gid,
            switch: false,
            warning: root.then(|| {
                format!(
                    "scripts run as root (without capabilities): create the user {DEFAULT_SCRIPT_USER} \
                     (useradd --system --no-create-home {DEFAULT_SCRIPT_USER}) or set [node] script_user"
                )
            }),
        });
    };
    let gid = match wanted.and_then(|w| w.group.as_deref()) {
        Some(g) => find_group(g)?.ok_or_else(|| {
            format!("there is no group {g:?} on this machine: create it or name another")
        })?,
        None => user.gid.as_raw(),
    };
    let uid = user.uid.as_raw();
    let switch = (uid, gid) != (agent.uid, agent.gid);
    let needed = (1u64 << CAP_SETUID) | (1u64 << CAP_SETGID);
    if switch && agent.caps & needed != needed {
        return Err(format!(
            "running scripts as {:?} (uid {uid}, gid {gid}) needs CAP_SETUID and CAP_SETGID, which the agent \
             (uid {}) does not hold: leave script_user out to run scripts as the agent's own user, or grant them",
            user.name, agent.uid
        ));
    }
    Ok(Identity {
        name: format!("{} (uid {uid}, gid {gid})", user.name),
        uid,
        gid,
        switch,
        warning: (uid == 0).then(|| "scripts run as root (without capabilities)".to_owned()),
    })
}

/// A user by name, or by number when the text is all digits.
fn find_user(text: &str) -> Result<Option<User>, String> {
    let found = match text.parse::<u32>() {
        Ok(n) => User::from_uid(Uid::from_raw(n)),
        Err(_) => User::from_name(text),
    };
    found.map_err(|e| format!("cannot look up the user {text:?}: {e}"))
}

fn find_group(text: &str) -> Result<Option<u32>, String> {
    let found = match text.parse::<u32>() {
        Ok(n) => Group::from_gid(Gid::from_raw(n)),
        Err(_) => Group::from_name(text),
    };
    found
        .map(|g| g.map(|g| g.gid.as_raw()))
        .map_err(|e| format!("cannot look up the group {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT_CAPS: u64 = u64::MAX >> 23;

    fn named(user: &str, group: Option<&str>) -> ScriptUser {
        ScriptUser {
            user: user.to_owned(),
            group: group.map(str::to_owned),
        }
    }

    #[test]
    fn an_unprivileged_agent_runs_scripts_as_itself() {
        let agent = Agent {
            uid: 999,
            gid: 998,
            caps: 0,
        };
        let id = resolve(None, agent).unwrap();
        assert_eq!((id.uid, id.gid, id.switch), (999, 998, false));
        assert_eq!(id.warning, None);
    }

    #[test]
    fn a_root_agent_without_the_default_user_warns() {
        // Machines running this test have no vip-script user.
        if find_user(DEFAULT_SCRIPT_USER).unwrap().is_some() {
            return;
        }
        let agent = Agent {
            uid: 0,
            gid: 0,
            caps: ROOT_CAPS,
        };
        let id = resolve(None, agent).unwrap();
        assert_eq!((id.uid, id.switch), (0, false));
        assert!(id.warning.unwrap().contains("useradd"));
    }

    #[test]
    fn a_named_user_is_switched_to_when_the_agent_may() {
        let root = Agent {
            uid: 0,
            gid: 0,
            caps: ROOT_CAPS,
        };
        // nobody exists on every Debian machine (uid 65534).
        let id = resolve(Some(&named("nobody", None)), root).unwrap();
        assert_eq!((id.uid, id.switch), (65534, true));
        assert_eq!(
            id.switch(),
            Some(SwitchTo {
                uid: 65534,
                gid: 65534
            })
        );
        let id = resolve(Some(&named("65534", Some("0"))), root).unwrap();
        assert_eq!((id.uid, id.gid), (65534, 0));

        let unprivileged = Agent {
            uid: 999,
            gid: 999,
            caps: 1 << 12,
        };
        let e = resolve(Some(&named("nobody", None)), unprivileged).unwrap_err();
        assert!(e.contains("needs CAP_SETUID and CAP_SETGID"), "{e}");
        // Itself needs no switch.
        let me = Agent {
            uid: 65534,
            gid: 65534,
            caps: 0,
        };
        assert!(!resolve(Some(&named("nobody", None)), me).unwrap().switch);
    }

    #[test]
    fn a_missing_user_or_group_is_named() {
        let root = Agent {
            uid: 0,
            gid: 0,
            caps: ROOT_CAPS,
        };
        let e = resolve(Some(&named("no-such-user-vip", None)), root).unwrap_err();
        assert!(
            e.starts_with("there is no user \"no-such-user-vip\""),
            "{e}"
        );
        let e = resolve(Some(&named("nobody", Some("no-such-group-vip"))), root).unwrap_err();
        assert!(
            e.starts_with("there is no group \"no-such-group-vip\""),
            "{e}"
        );
    }
}
