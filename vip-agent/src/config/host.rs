//! What a configuration asks of this machine, checked when the agent or
//! `--check` loads it (parsing itself stays pure): the script user exists
//! and the agent may become it, and, with `script_security`, no script can
//! be rewritten by anyone but root and the agent's user.

use std::path::Path;

use crate::{
    config::{Config, ConfigError, Probe, spans::value_span, validate::Source},
    scripts::{self, Identity, user::Agent},
};

/// Checks `cfg` (parsed from `src`) against this machine for an agent
/// running as `agent`; returns who its scripts run as.
pub(super) fn check(cfg: &Config, src: &Source, agent: Agent) -> Result<Identity, ConfigError> {
    let error = |key: &str, message: String| {
        let at = value_span(src.text, key).map_or(0, |s| s.start);
        src.error(at, key, message)
    };
    let identity = scripts::resolve(cfg.node.script_user.as_ref(), agent)
        .map_err(|m| error("node.script_user", m))?;
    if cfg.node.script_security {
        for (key, script) in scripts_of(cfg) {
            scripts::safety::check(&script, agent.uid).map_err(|m| error(&key, m))?;
        }
    }
    Ok(identity)
}

/// Every script the configuration runs, by the key that names it.
fn scripts_of(cfg: &Config) -> Vec<(String, std::path::PathBuf)> {
    let program = |probe: &Probe| match probe {
        Probe::Exec { command } => scripts::safety::program_of(command),
        _ => None,
    };
    let checks = cfg
        .checks
        .iter()
        .enumerate()
        .filter_map(|(i, c)| program(&c.probe).map(|p| (format!("check[{i}].command"), p)));
    let services = cfg.services.iter().enumerate().filter_map(|(i, s)| {
        let c = s.check.as_ref()?;
        program(&c.probe).map(|p| (format!("service[{i}].check.command"), p))
    });
    let notify = cfg.vrrp.iter().enumerate().filter_map(|(i, v)| {
        v.notify
            .as_deref()
            .map(|p| (format!("vrrp[{i}].notify"), Path::to_owned(p)))
    });
    checks.chain(services).chain(notify).collect()
}
