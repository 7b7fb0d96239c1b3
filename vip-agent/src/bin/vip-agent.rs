//! `vip-agent --config FILE [--check] [--iface IF]`: runs one vip node.
//! Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.
#![allow(
    clippy::result_large_err,
    reason = "aya's error types are large; errors are rare"
)]

use std::process::ExitCode;

use clap::Parser as _;
use vip_agent::{
    agent::{Agent, AgentError},
    cli::agent::{Args, init_logging},
    config::Config,
    error_chain,
};

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = init_logging(args.log_format) {
        eprintln!("vip-agent: {e}");
        return ExitCode::from(1);
    }

    let (mut config, scripts) = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vip-agent: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(iface) = args.iface {
        config.node.interface = iface;
    }
    if args.check {
        println!(
            "{}: OK ({} service(s), node {} on {}; scripts run as {})",
            args.config.display(),
            config.services.len(),
            config.node.name,
            config.node.interface,
            scripts.name
        );
        if let Some(w) = &scripts.warning {
            eprintln!("vip-agent: warning: {w}");
        }
        return ExitCode::SUCCESS;
    }
    if let Some(w) = &scripts.warning {
        tracing::warn!("{w}");
    }
    tracing::info!(user = %scripts.name, "scripts run as");
    vip_agent::scripts::set_identity(&scripts);

    // Missing capabilities are named here, not met as EPERM later.
    match vip_agent::caps::effective() {
        Ok(eff) => {
            if let Some(complaint) = vip_agent::caps::complaint(eff) {
                eprintln!("vip-agent: {complaint}");
                return ExitCode::from(1);
            }
        }
        Err(e) => eprintln!("vip-agent: cannot read this process's capabilities ({e}); going on"),
    }

    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vip-agent: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result: Result<(), AgentError> = rt.block_on(async move {
        let agent = Agent::start(args.config, config).await?;
        agent.run().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vip-agent: {}{}", error_chain(&e), hint(&e));
            ExitCode::from(1)
        }
    }
}

/// What to do about the common failures.
fn hint(e: &AgentError) -> &'static str {
    let chain = error_chain(e);
    if chain.contains("Operation not permitted") || chain.contains("Permission denied") {
        "\nvip-agent: hint: loading XDP needs CAP_BPF and CAP_NET_ADMIN (and CAP_NET_RAW for ARP): run as root or grant those capabilities"
    } else {
        ""
    }
}
