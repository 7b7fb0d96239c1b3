//! Globbing, for include patterns (`*`, `?`, `[...]`, `{a,b}`).

use super::{Path, PathBuf};

pub(in crate::import) fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// The most patterns one include's braces may expand to: `{a,b}` twelve
/// times over is 4096 already, and each pattern is a directory walk.
pub(in crate::import) const MAX_EXPANSIONS: usize = 4096;

/// The files `pattern` matches: each brace alternative in turn, each sorted,
/// names starting with '.' only when the pattern says so (as glob(3)).
/// `None` when its braces expand to more than [`MAX_EXPANSIONS`] patterns.
pub(in crate::import) fn glob(pattern: &str) -> Option<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in expand_braces(pattern, MAX_EXPANSIONS)? {
        let mut found = glob_one(&p);
        found.sort();
        out.extend(found);
    }
    Some(out)
}

pub(in crate::import) fn glob_one(pattern: &str) -> Vec<PathBuf> {
    let (mut paths, rest) = match pattern.strip_prefix('/') {
        Some(rest) => (vec![PathBuf::from("/")], rest),
        None => (vec![PathBuf::new()], pattern),
    };
    for part in rest.split('/').filter(|p| !p.is_empty()) {
        let mut next = Vec::new();
        for dir in &paths {
            if !is_pattern(part) {
                next.push(dir.join(part));
                continue;
            }
            let listed = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir.as_path()
            };
            let Ok(entries) = std::fs::read_dir(listed) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with('.') && !part.starts_with('.') {
                    continue;
                }
                if fnmatch(part, name) {
                    next.push(dir.join(name));
                }
            }
        }
        paths = next;
    }
    paths.retain(|p| p.is_file());
    paths
}

/// `a{b,c{d,e}}f` as `abf`, `acdf`, `acef`; braces without a comma stay.
/// `s` with its outermost brace groups expanded, in order; `None` when that
/// would make more than `max` strings (it stops counting there, so a
/// hostile pattern costs no more than `max` expansions).
pub(in crate::import) fn expand_braces(s: &str, max: usize) -> Option<Vec<String>> {
    let mut out = Vec::new();
    expand_into(s, max, &mut out).then_some(out)
}

/// Appends the expansions of `s` to `out`; false once `out` would pass `max`.
fn expand_into(s: &str, max: usize, out: &mut Vec<String>) -> bool {
    let mut depth = 0usize;
    let mut open = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => {
                if depth == 0 {
                    open = i;
                }
                depth += 1;
            }
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    let alternatives = split_top_commas(&s[open + 1..i]);
                    if alternatives.len() > 1 {
                        return alternatives.iter().all(|a| {
                            expand_into(&format!("{}{a}{}", &s[..open], &s[i + 1..]), max, out)
                        });
                    }
                }
            }
            _ => {}
        }
    }
    if out.len() == max {
        return false;
    }
    out.push(s.to_owned());
    true
}

pub(in crate::import) fn split_top_commas(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Shell-style matching of one path component.
pub(in crate::import) fn fnmatch(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_chars(&p, &n)
}

pub(in crate::import) fn match_chars(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|i| match_chars(&p[1..], &n[i..])),
        Some('?') => !n.is_empty() && match_chars(&p[1..], &n[1..]),
        Some('[') => match (n.first(), bracket(&p[1..], n.first().copied())) {
            (Some(_), Some((true, used))) => match_chars(&p[1 + used..], &n[1..]),
            (_, Some((false, _))) | (None, Some(_)) => false,
            // No closing ']': a literal '['.
            (_, None) => n.first() == Some(&'[') && match_chars(&p[1..], &n[1..]),
        },
        Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && match_chars(&p[2..], &n[1..]),
        Some(c) => n.first() == Some(c) && match_chars(&p[1..], &n[1..]),
    }
}

/// Whether `c` is in the class starting after a '[', and how many pattern
/// characters the class took (with its ']'); `None` if it is not closed.
pub(in crate::import) fn bracket(p: &[char], c: Option<char>) -> Option<(bool, usize)> {
    let negate = matches!(p.first(), Some('!' | '^'));
    let mut i = usize::from(negate);
    let mut found = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((found != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            found |= c.is_some_and(|c| p[i] <= c && c <= p[i + 2]);
            i += 3;
        } else {
            found |= c == Some(p[i]);
            i += 1;
        }
    }
    None
}
