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

/// Whether the pattern `p` matches all of `n`.
///
/// Every item but `*` matches exactly one character, so after a mismatch
/// only the last `*` needs to take one character more: earlier ones cannot
/// help, as the last one can absorb whatever they would. That is at most
/// `p.len() × n.len()` steps, where trying every split at every `*` took
/// exponential time (`include` with 28 `*` kept the importer busy for
/// good; the import fuzz target's input timeout reports such a hang).
pub(in crate::import) fn match_chars(p: &[char], n: &[char]) -> bool {
    let (mut pi, mut ni) = (0, 0);
    // Just after the last `*`, and where in the name it took up.
    let mut star: Option<(usize, usize)> = None;
    loop {
        if p.get(pi) == Some(&'*') {
            pi += 1;
            star = Some((pi, ni));
            continue;
        }
        if pi == p.len() && ni == n.len() {
            return true;
        }
        if let Some(used) = one(&p[pi..], n.get(ni).copied()) {
            pi += used;
            ni += 1;
            continue;
        }
        match star {
            Some((after, from)) if from < n.len() => {
                star = Some((after, from + 1));
                (pi, ni) = (after, from + 1);
            }
            _ => return false,
        }
    }
}

/// How many pattern characters the item at the start of `p` (not `*`)
/// takes to match `c`, or `None` if it does not (or `c` is the end).
fn one(p: &[char], c: Option<char>) -> Option<usize> {
    let c = c?;
    match p.first()? {
        '?' => Some(1),
        '[' => match bracket(&p[1..], Some(c)) {
            Some((true, used)) => Some(1 + used),
            Some((false, _)) => None,
            // No closing ']': a literal '['.
            None => (c == '[').then_some(1),
        },
        '\\' if p.len() > 1 => (c == p[1]).then_some(2),
        first => (c == *first).then_some(1),
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
