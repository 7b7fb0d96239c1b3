//! keepalived values (timers, names, regexes) and their TOML spelling.

use std::{net::Ipv4Addr, time::Duration};

/// A keepalived `<TIMER>`: seconds, with a fraction down to microseconds.
pub(in crate::import) fn parse_secs(s: &str) -> Option<Duration> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if (whole.is_empty() && frac.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let digits: String = frac.chars().chain("000000".chars()).take(6).collect();
    let micros: u64 = digits.parse().ok()?;
    Some(Duration::from_secs(secs) + Duration::from_micros(micros))
}

/// `router_id` (or a host name) as a vip node name: `[A-Za-z0-9_-]{1,32}`.
pub(in crate::import) fn node_name(raw: &str) -> String {
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    let name: String = name.trim_matches('-').chars().take(32).collect();
    let name = name.trim_end_matches('-').to_owned();
    if name.is_empty() {
        "vip".to_owned()
    } else {
        name
    }
}

/// Whether a regular expression matches only itself, so a substring search
/// for it (`expect_body`) does the same.
pub(in crate::import) fn is_literal(re: &str) -> bool {
    !re.contains([
        '.', '^', '$', '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '\\',
    ])
}

/// `command` with `addr` replaced by `$VIP_BACKEND_ADDRESS` where it stands
/// as a whole address (not inside a longer number).
pub(in crate::import) fn with_backend_variable(command: &str, addr: Ipv4Addr) -> String {
    let needle = addr.to_string();
    let mut out = String::with_capacity(command.len());
    let mut rest = command;
    while let Some(i) = rest.find(&needle) {
        let before = rest[..i].chars().next_back();
        let after = &rest[i + needle.len()..];
        let mut next = after.chars();
        let standalone = !before.is_some_and(|c| c.is_ascii_digit() || c == '.')
            && !match next.next() {
                Some(c) if c.is_ascii_digit() => true,
                Some('.') => next.next().is_some_and(|c| c.is_ascii_digit()),
                _ => false,
            };
        out.push_str(&rest[..i]);
        out.push_str(if standalone {
            "${VIP_BACKEND_ADDRESS}"
        } else {
            needle.as_str()
        });
        rest = after;
    }
    out.push_str(rest);
    out
}
