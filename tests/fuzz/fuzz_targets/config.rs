//! Config parsing (`vip_agent::config::Config::parse`) of any text.
//!
//! Asserts: parsing never panics; an error has a message and, when it names
//! a line, one of the text's lines (or the one after the last); a config
//! that parses, written back by `config::write::to_toml`, parses again to
//! the same config (its `line` fields aside), and writing that gives the
//! same text again.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vip_agent::config::{Config, write::to_toml};

/// `cfg` without its `line` fields (they say where, not what).
fn unplaced(mut cfg: Config) -> Config {
    cfg.checks.iter_mut().for_each(|c| c.line = 0);
    cfg.vrrp.iter_mut().for_each(|v| v.line = 0);
    cfg.services.iter_mut().for_each(|s| s.line = 0);
    cfg
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    match Config::parse(text, path) {
        Ok(cfg) => {
            let written = to_toml(&cfg);
            let again = Config::parse(&written, path).unwrap_or_else(|e| {
                panic!("what to_toml wrote does not parse: {e}\n--- written:\n{written}")
            });
            assert_eq!(to_toml(&again), written, "writing is not stable");
            assert_eq!(
                unplaced(again),
                unplaced(cfg),
                "written and read back, the config changed\n--- written:\n{written}"
            );
        }
        Err(e) => {
            assert!(!e.message.is_empty(), "an error without a message: {e:?}");
            if let Some(line) = e.line {
                let lines = text.lines().count().max(1);
                assert!(
                    (1..=lines + 1).contains(&line),
                    "line {line} of a {lines}-line text: {e}"
                );
            }
            assert!(e.to_string().starts_with("fuzz.toml"), "{e}");
        }
    }
});
