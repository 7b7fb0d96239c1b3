//! This crate is built for `bpfel-unknown-none` by `vip-agent`'s build script;
//! the library target exists only so that `vip-agent` can name it as a build
//! dependency (cargo then rebuilds the agent when the program changes).
#![no_std]
