//! The command lines of `vip-agent` and `vipctl`, kept in the library so
//! that their man pages and shell completions are generated from the very
//! definitions the binaries parse (`docs`).

pub mod agent;
pub mod vipctl;
