//! `vipctl import-keepalived`: turns a keepalived.conf into the equivalent vip
//! TOML and lists whatever has no equivalent as `FILE:LINE: keyword: what to
//! do`, so nothing is dropped silently.
//!
//! Three steps, each tested alone. [`Lexer`] reads the file and its includes
//! line by line the way keepalived 2.2 does (comments, quotes, `@id`
//! conditional lines, `$NAME=value` parameters, braces split off words) into
//! words that know their file and line; [`build`] groups them into statements
//! and `{ }` blocks; [`Converter`] walks the blocks, keeps what vip can
//! express, notes the rest, and writes the TOML. The TOML is then put through
//! the agent's own parser ([`crate::config::Config::parse`]), exactly what
//! `vip-agent --check` runs, so what is printed always loads.

use std::{
    collections::{HashMap, HashSet},
    fmt::{self, Write as _},
    io,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::Duration,
};

/// What the caller adds to, or overrides in, the keepalived file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `[node] interface` instead of the instances' `interface` (needed when
    /// no `vrrp_instance` names one).
    pub interface: Option<String>,
    /// `[node] name` instead of `router_id` (or the host name).
    pub name: Option<String>,
    /// keepalived's config id (`keepalived -i ID`) that `@ID` lines are
    /// compared with; default the host name up to its first dot, as keepalived.
    pub config_id: Option<String>,
}

/// The TOML, which passes `vip-agent --check`, and what it could not carry over.
#[derive(Debug, Clone)]
pub struct Imported {
    pub toml: String,
    /// In the order of the keepalived text (includes where they are included).
    pub notes: Vec<Note>,
}

/// Something in the keepalived file that vip does not do, or does differently.
///
/// Displays as `FILE:LINE: keyword: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub file: PathBuf,
    /// 1-based; `None` for what concerns the file as a whole.
    pub line: Option<usize>,
    pub keyword: String,
    /// Why, and what to do about it.
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}: {}", self.keyword, self.message)
    }
}

/// Why no TOML could be produced.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{}: cannot read the keepalived configuration", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}:{line}: cannot read {}, named by this include", file.display(), path.display())]
    Include {
        file: PathBuf,
        line: usize,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The text is not valid keepalived syntax (or uses syntax the importer
    /// cannot expand).
    #[error("{}:{line}: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        message: String,
    },
    /// Something vip needs that the file does not say.
    #[error("{}: {message}", file.display())]
    Incomplete { file: PathBuf, message: String },
    /// The TOML would not load (a vip limit, or a bug in the importer).
    #[error(
        "{}: the imported configuration does not pass vip's checks; fix the keepalived file, or import what passes and edit the TOML by hand",
        file.display()
    )]
    Invalid {
        file: PathBuf,
        #[source]
        source: crate::config::ConfigError,
    },
}

impl ImportError {
    /// The process exit code: 2, "usage or configuration error".
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        2
    }
}

/// Reads `path` (and what it includes) and converts it.
///
/// Fails when a file cannot be read, the syntax is broken (with the file and
/// line), the file gives no interface and `opts` none either, or the result
/// would not pass `vip-agent --check`.
pub fn import(path: &Path, opts: &Options) -> Result<Imported, ImportError> {
    let config_id = opts
        .config_id
        .clone()
        .unwrap_or_else(|| host_name().split('.').next().unwrap_or_default().to_owned());
    let mut lexer = Lexer::new(config_id);
    lexer.read(path, None)?;
    let Lexer {
        files, toks, notes, ..
    } = lexer;
    let stmts = build(toks, &files)?;
    let mut conv = Converter::new(files, notes);
    conv.walk(&stmts);
    conv.finish(path, opts)
}

/// The host name, as keepalived's default `router_id` and config id.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Lexing: files and lines to words and braces.

/// Where a word came from: the file (an index into the file table), its
/// 1-based line, and the line's position in the whole text (includes
/// spliced in) so notes can be put in reading order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    file: usize,
    line: usize,
    seq: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Open,
    Close,
}

/// A note before the file table turns it into a [`Note`].
#[derive(Debug, Clone)]
struct RawNote {
    at: Option<Loc>,
    keyword: String,
    message: String,
}

/// keepalived's include keywords; the variants only differ in how loudly
/// keepalived complains about missing files.
const INCLUDES: [&str; 6] = [
    "include", "includer", "includem", "includew", "includeb", "includea",
];
/// Deeper than this is a loop the path comparison did not catch.
const MAX_INCLUDE_DEPTH: usize = 32;
/// Parameter substitutions on one line before it counts as recursive.
const MAX_SUBSTITUTIONS: usize = 1000;

struct Lexer {
    /// Every file read, as its path was written (joined to the including
    /// file's directory); [`Loc::file`] indexes it.
    files: Vec<PathBuf>,
    toks: Vec<(Tok, Loc)>,
    notes: Vec<RawNote>,
    /// `$NAME=value` definitions seen so far.
    defs: HashMap<String, String>,
    config_id: String,
    /// Canonical paths of the files being read, outermost first.
    reading: Vec<PathBuf>,
    seq: usize,
    said_conditional: bool,
}

impl Lexer {
    fn new(config_id: String) -> Self {
        Self {
            files: Vec::new(),
            toks: Vec::new(),
            notes: Vec::new(),
            defs: HashMap::new(),
            config_id,
            reading: Vec::new(),
            seq: 0,
            said_conditional: false,
        }
    }

    fn syntax(&self, at: Loc, message: impl Into<String>) -> ImportError {
        ImportError::Syntax {
            file: self.files[at.file].clone(),
            line: at.line,
            message: message.into(),
        }
    }

    /// Reads `path`; `from` is the include line naming it.
    fn read(&mut self, path: &Path, from: Option<Loc>) -> Result<(), ImportError> {
        let bytes = std::fs::read(path).map_err(|source| match from {
            None => ImportError::Read {
                path: path.to_owned(),
                source,
            },
            Some(at) => ImportError::Include {
                file: self.files[at.file].clone(),
                line: at.line,
                path: path.to_owned(),
                source,
            },
        })?;
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        if let Some(at) = from {
            if self.reading.contains(&canonical) {
                return Err(self.syntax(
                    at,
                    format!(
                        "{} includes itself (directly or through other files); remove the loop",
                        path.display()
                    ),
                ));
            }
            if self.reading.len() >= MAX_INCLUDE_DEPTH {
                return Err(self.syntax(
                    at,
                    format!("includes nest deeper than {MAX_INCLUDE_DEPTH} files"),
                ));
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let file = self.files.len();
        self.files.push(path.to_owned());
        self.reading.push(canonical);
        for (n, raw) in text.lines().enumerate() {
            self.seq += 1;
            let at = Loc {
                file,
                line: n + 1,
                seq: self.seq,
            };
            self.line(raw, at)?;
        }
        self.reading.pop();
        Ok(())
    }

    fn line(&mut self, raw: &str, at: Loc) -> Result<(), ImportError> {
        let text = decomment(raw);
        if text.is_empty() {
            return Ok(());
        }
        if text.ends_with('\\') {
            return Err(self.syntax(
                at,
                "a line ending in '\\' continues a multi-line $definition, which the importer does not expand; \
                 expand it by hand",
            ));
        }
        // keepalived finds includes before conditionals and parameters.
        if let Some(pattern) = include_pattern(&text) {
            return self.include(&pattern, at);
        }
        let Some(text) = self.conditional(&text, at) else {
            return Ok(());
        };
        if self.define(&text) {
            return Ok(());
        }
        let text = self.substitute(&text, at)?;
        let Some(text) = self.conditional(&text, at) else {
            return Ok(());
        };
        if text.starts_with('~') {
            return Err(self.syntax(
                at,
                "~SEQ and other '~' replication lines are not expanded by the importer; expand them by hand",
            ));
        }
        let toks = split_words(&text).map_err(|m| self.syntax(at, m))?;
        self.toks.extend(toks.into_iter().map(|t| (t, at)));
        Ok(())
    }

    /// Reads the files `pattern` names, relative to the including file.
    fn include(&mut self, pattern: &str, at: Loc) -> Result<(), ImportError> {
        // `Path::join` keeps an absolute pattern as it is; a file given
        // without a directory has an empty parent, the current one.
        let base = self.files[at.file].parent().unwrap_or(Path::new(""));
        let full = base.join(pattern);
        if !is_pattern(pattern) {
            return self.read(&full, Some(at));
        }
        let found = glob(&full.to_string_lossy());
        if found.is_empty() {
            self.notes.push(RawNote {
                at: Some(at),
                keyword: "include".to_owned(),
                message: format!(
                    "note: no file matches {}, so nothing is included (keepalived does the same)",
                    full.display()
                ),
            });
        }
        for path in found {
            self.read(&path, Some(at))?;
        }
        Ok(())
    }

    /// The rest of an `@ID rest` line if ID is this config id (or, for
    /// `@^ID`, is not); other lines as they are.
    fn conditional(&mut self, text: &str, at: Loc) -> Option<String> {
        let Some(rest) = text.strip_prefix('@') else {
            return Some(text.to_owned());
        };
        let (id, line) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let (negate, id) = id.strip_prefix('^').map_or((false, id), |id| (true, id));
        if !self.said_conditional {
            self.said_conditional = true;
            self.notes.push(RawNote {
                at: Some(at),
                keyword: format!("@{id}"),
                message: format!(
                    "note: conditional lines were resolved for config id {:?} (keepalived -i); \
                     pass --config-id ID to import another node's view",
                    self.config_id
                ),
            });
        }
        ((id == self.config_id) != negate).then(|| line.trim_start().to_owned())
    }

    /// Records a `$NAME=value` definition; false if `text` is not one.
    fn define(&mut self, text: &str) -> bool {
        let Some(rest) = text.strip_prefix('$') else {
            return false;
        };
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let (name, after) = rest.split_at(len);
        let Some(value) = after.strip_prefix('=') else {
            return false;
        };
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return false;
        }
        self.defs.insert(name.to_owned(), value.trim().to_owned());
        true
    }

    /// Replaces `${NAME}`, and `$NAME` before whitespace or the end, by
    /// their definitions, again within what was substituted; undefined
    /// names stay as they are, as in keepalived.
    fn substitute(&self, text: &str, at: Loc) -> Result<String, ImportError> {
        let mut s = text.to_owned();
        let mut from = 0;
        let mut count = 0;
        while let Some(off) = s[from..].find('$') {
            let i = from + off;
            let after = &s[i + 1..];
            let (name, end) = if let Some(braced) = after.strip_prefix('{') {
                let Some(close) = braced.find('}') else {
                    from = i + 1;
                    continue;
                };
                (braced[..close].to_owned(), i + 2 + close + 1)
            } else {
                let len = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                let end = i + 1 + len;
                if len == 0 || !(end == s.len() || s[end..].starts_with(char::is_whitespace)) {
                    from = i + 1;
                    continue;
                }
                (after[..len].to_owned(), end)
            };
            let Some(value) = self.definition(&name, at) else {
                from = i + 1;
                continue;
            };
            count += 1;
            if count > MAX_SUBSTITUTIONS {
                return Err(self.syntax(
                    at,
                    format!("${name} keeps expanding into itself; fix the definitions"),
                ));
            }
            s.replace_range(i..end, &value);
            from = i;
        }
        Ok(s)
    }

    fn definition(&self, name: &str, at: Loc) -> Option<String> {
        match name {
            "_PWD" => {
                let file = &self.files[at.file];
                let dir = std::fs::canonicalize(file)
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_owned))
                    .unwrap_or_else(|| file.parent().unwrap_or(Path::new(".")).to_owned());
                Some(dir.to_string_lossy().into_owned())
            }
            "_INSTANCE" => Some(self.config_id.clone()),
            "_HASH" => Some("#".to_owned()),
            "_BANG" => Some("!".to_owned()),
            _ => self.defs.get(name).cloned(),
        }
    }
}

/// `raw` without its comment (`#` or `!` outside double quotes, to the end
/// of the line; `\#` and `\!` are the characters themselves) and without
/// surrounding whitespace, as keepalived's `decomment`.
fn decomment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut quote = false;
    let mut chars = raw.trim_start().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quote = !quote;
                out.push(c);
            }
            '\\' if !quote && matches!(chars.peek(), Some('#' | '!')) => {
                out.extend(chars.next());
            }
            '\\' => {
                out.push(c);
                out.extend(chars.next());
            }
            '!' | '#' if !quote => break,
            _ => out.push(c),
        }
    }
    out.trim_end().to_owned()
}

/// The file pattern of an include line, without surrounding quotes.
fn include_pattern(text: &str) -> Option<String> {
    let (word, rest) = text.split_once(char::is_whitespace)?;
    if !INCLUDES.contains(&word) {
        return None;
    }
    let rest = rest.trim();
    let unquoted = rest
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(rest);
    Some(unquoted.to_owned())
}

/// One line's words and braces. A double-quoted string is one word (without
/// its quotes, braces and all); `{` and `}` elsewhere are tokens of their
/// own even when touching a word, as keepalived splits them off.
fn split_words(text: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        let Some(c) = rest.chars().next() else {
            return Ok(toks);
        };
        match c {
            '"' => {
                let Some(close) = rest[1..].find('"') else {
                    return Err(format!(
                        "the quote in {rest} is not closed: add the closing '\"'"
                    ));
                };
                toks.push(Tok::Word(rest[1..=close].to_owned()));
                rest = &rest[close + 2..];
            }
            '{' => {
                toks.push(Tok::Open);
                rest = &rest[1..];
            }
            '}' => {
                toks.push(Tok::Close);
                rest = &rest[1..];
            }
            _ => {
                let end = rest
                    .find(|c: char| c.is_whitespace() || matches!(c, '"' | '{' | '}'))
                    .unwrap_or(rest.len());
                toks.push(Tok::Word(rest[..end].to_owned()));
                rest = &rest[end..];
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Globbing, for include patterns (`*`, `?`, `[...]`, `{a,b}`).

fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// The files `pattern` matches: each brace alternative in turn, each sorted,
/// names starting with '.' only when the pattern says so (as glob(3)).
fn glob(pattern: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in expand_braces(pattern) {
        let mut found = glob_one(&p);
        found.sort();
        out.extend(found);
    }
    out
}

fn glob_one(pattern: &str) -> Vec<PathBuf> {
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
fn expand_braces(s: &str) -> Vec<String> {
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
                        return alternatives
                            .iter()
                            .flat_map(|a| {
                                expand_braces(&format!("{}{a}{}", &s[..open], &s[i + 1..]))
                            })
                            .collect();
                    }
                }
            }
            _ => {}
        }
    }
    vec![s.to_owned()]
}

fn split_top_commas(s: &str) -> Vec<&str> {
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
fn fnmatch(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_chars(&p, &n)
}

fn match_chars(p: &[char], n: &[char]) -> bool {
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
fn bracket(p: &[char], c: Option<char>) -> Option<(bool, usize)> {
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

// ---------------------------------------------------------------------------
// Statements and blocks.

/// One keyword line: its words, and the `{ }` block after it, if any.
#[derive(Debug)]
struct Stmt {
    words: Vec<String>,
    at: Loc,
    block: Option<Vec<Stmt>>,
}

impl Stmt {
    fn key(&self) -> &str {
        &self.words[0]
    }

    fn args(&self) -> &[String] {
        &self.words[1..]
    }

    fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i + 1).map(String::as_str)
    }

    fn block(&self) -> &[Stmt] {
        self.block.as_deref().unwrap_or(&[])
    }
}

/// Groups tokens into statements: the words of one line up to a brace make
/// a statement; a `{` (on that line or a later one) opens the block of the
/// statement before it, and its `}` closes it.
fn build(toks: Vec<(Tok, Loc)>, files: &[PathBuf]) -> Result<Vec<Stmt>, ImportError> {
    let syntax = |at: Loc, message: String| ImportError::Syntax {
        file: files[at.file].clone(),
        line: at.line,
        message,
    };
    let mut open: Vec<(Vec<Stmt>, Loc)> = Vec::new();
    let mut cur: Vec<Stmt> = Vec::new();
    // The line of the statement the last word went to, while no brace came
    // after it: a word on that line extends it, and a `{` opens its block.
    let mut extending: Option<usize> = None;
    for (tok, at) in toks {
        match tok {
            Tok::Word(w) => {
                match cur.last_mut() {
                    Some(stmt) if extending == Some(at.seq) => stmt.words.push(w),
                    _ => cur.push(Stmt {
                        words: vec![w],
                        at,
                        block: None,
                    }),
                }
                extending = Some(at.seq);
            }
            Tok::Open => {
                if extending.is_none() {
                    return Err(syntax(
                        at,
                        "this '{' follows no keyword: remove it, or write the keyword before it"
                            .to_owned(),
                    ));
                }
                open.push((std::mem::take(&mut cur), at));
                extending = None;
            }
            Tok::Close => {
                let Some((mut parent, _)) = open.pop() else {
                    return Err(syntax(
                        at,
                        "this '}' closes no block: remove it, or add the '{' it belongs to"
                            .to_owned(),
                    ));
                };
                let children = std::mem::take(&mut cur);
                parent
                    .last_mut()
                    .expect("a '{' always follows a statement")
                    .block = Some(children);
                cur = parent;
                extending = None;
            }
        }
    }
    if let Some((parent, at)) = open.pop() {
        let keyword = parent.last().map_or("", |s| s.key());
        return Err(syntax(
            at,
            format!("the block of {keyword} opened here is never closed: add the missing '}}'"),
        ));
    }
    Ok(cur)
}

// ---------------------------------------------------------------------------
// Values.

/// A keepalived `<TIMER>`: seconds, with a fraction down to microseconds.
fn parse_secs(s: &str) -> Option<Duration> {
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

/// "2s", "500ms" or "250us": what vip's duration parser reads back exactly.
fn fmt_dur(d: Duration) -> String {
    let micros = d.as_micros();
    if micros.is_multiple_of(1_000_000) {
        format!("{}s", micros / 1_000_000)
    } else if micros.is_multiple_of(1000) {
        format!("{}ms", micros / 1000)
    } else {
        format!("{micros}us")
    }
}

/// A TOML basic string.
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `router_id` (or a host name) as a vip node name: `[A-Za-z0-9_-]{1,32}`.
fn node_name(raw: &str) -> String {
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
fn is_literal(re: &str) -> bool {
    !re.contains([
        '.', '^', '$', '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '\\',
    ])
}

/// `command` with `addr` replaced by `$VIP_BACKEND_ADDRESS` where it stands
/// as a whole address (not inside a longer number).
fn with_backend_variable(command: &str, addr: Ipv4Addr) -> String {
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

// ---------------------------------------------------------------------------
// What the keepalived file says, in vip's terms.

/// keepalived's defaults that differ from vip's.
const KA_VRRP_VERSION: u8 = 2;
const KA_PRIORITY: u8 = 100;
const KA_ADVERT: Duration = Duration::from_secs(1);
/// `delay_loop` and `connect_timeout` when not given.
const KA_DELAY_LOOP: Duration = Duration::from_mins(1);
const KA_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// keepalived's `auth_type PASS` uses this many bytes of the password.
const KA_AUTH_PASS: usize = 8;
/// vip's limits.
const VIP_MAX_WEIGHT: u32 = 1000;
const VIP_MAX_GARP: u32 = 100;

#[derive(Debug, Clone, Default)]
struct Garp {
    count: Option<u32>,
    interval: Option<Duration>,
    refresh: Option<Duration>,
}

impl Garp {
    fn or(&self, base: &Garp) -> Garp {
        Garp {
            count: self.count.or(base.count),
            interval: self.interval.or(base.interval),
            refresh: self.refresh.or(base.refresh),
        }
    }
}

/// A `vrrp_script`.
#[derive(Debug)]
struct Script {
    name: String,
    at: Loc,
    command: Option<String>,
    interval: Duration,
    timeout: Option<Duration>,
    weight: i32,
    rise: u32,
    fall: u32,
}

/// A `track_script` line.
#[derive(Debug)]
struct Track {
    name: String,
    weight: Option<i32>,
    at: Loc,
}

/// A notify script: the script with its own arguments, and where.
#[derive(Debug, Clone)]
struct Notify {
    keyword: String,
    script: String,
    at: Loc,
    /// Index into [`STATE_KEYWORDS`] for `notify_*`.
    state: usize,
}

const STATE_KEYWORDS: [&str; 3] = ["notify_master", "notify_backup", "notify_fault"];

/// A `vrrp_instance`.
#[derive(Debug)]
struct Instance {
    name: String,
    at: Loc,
    interface: Option<(String, Loc)>,
    vrid: Option<u8>,
    priority: Option<u8>,
    version: Option<u8>,
    advert: Option<(Duration, Loc)>,
    nopreempt: bool,
    preempt_delay: Option<Duration>,
    auth_pass: Option<(String, Loc)>,
    peers: Vec<Ipv4Addr>,
    vips: Vec<(Ipv4Addr, Loc)>,
    virtual_mac: bool,
    garp: Garp,
    tracks: Vec<Track>,
    notify: Option<Notify>,
    /// `notify_master`, `notify_backup`, `notify_fault`.
    notify_states: [Option<Notify>; 3],
    old_checksum: Option<Loc>,
    /// `state MASTER`: without a priority, keepalived makes it 255.
    master: Option<Loc>,
}

/// A `vrrp_sync_group`.
#[derive(Debug)]
struct Group {
    name: String,
    at: Loc,
    members: Vec<(String, Loc)>,
    /// `sync_group_tracking_weight`: keep the members' track weights.
    keep_weights: bool,
}

/// The checker options that cascade from virtual to real server to checker.
#[derive(Debug, Clone, Default)]
struct Timing {
    connect_timeout: Option<Duration>,
    retry: Option<u32>,
    delay_loop: Option<Duration>,
}

/// A service check in vip's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Probe {
    kind: &'static str,
    interval: Duration,
    timeout: Duration,
    fall: u32,
    port: Option<u16>,
    path: Option<String>,
    expect_status: Option<u16>,
    expect_body: Option<String>,
    command: Option<String>,
}

impl Probe {
    /// The names of the fields in which `other` differs.
    fn differences(&self, other: &Probe) -> Vec<&'static str> {
        let mut d = Vec::new();
        let mut check = |differs: bool, name| {
            if differs {
                d.push(name);
            }
        };
        check(self.kind != other.kind, "kind");
        check(self.interval != other.interval, "interval");
        check(self.timeout != other.timeout, "timeout");
        check(self.fall != other.fall, "retries");
        check(self.port != other.port, "port");
        check(self.path != other.path, "path");
        check(self.expect_status != other.expect_status, "status");
        check(self.expect_body != other.expect_body, "regex");
        check(self.command != other.command, "command");
        d
    }

    /// The inline table, without the braces.
    fn toml(&self) -> String {
        let mut s = format!(
            "kind = {}, interval = {}, timeout = {}, rise = 1, fall = {}",
            q(self.kind),
            q(&fmt_dur(self.interval)),
            q(&fmt_dur(self.timeout)),
            self.fall
        );
        if let Some(p) = self.port {
            let _ = write!(s, ", port = {p}");
        }
        if let Some(p) = &self.path {
            let _ = write!(s, ", path = {}", q(p));
        }
        if let Some(st) = self.expect_status {
            let _ = write!(s, ", expect_status = {st}");
        }
        if let Some(b) = &self.expect_body {
            let _ = write!(s, ", expect_body = {}", q(b));
        }
        if let Some(c) = &self.command {
            let _ = write!(s, ", command = {}", q(c));
        }
        s
    }
}

/// A `real_server`.
#[derive(Debug)]
struct Real {
    addr: Ipv4Addr,
    at: Loc,
    weight: u32,
    /// `inhibit_on_failure`: keep serving existing connections when down.
    inhibit: bool,
    /// The first checker in vip's terms, if it has one vip can run.
    probe: Option<(Probe, Loc)>,
}

/// A `virtual_server`.
#[derive(Debug)]
struct Server {
    vip: Ipv4Addr,
    port: u16,
    udp: bool,
    at: Loc,
    reals: Vec<Real>,
}

/// `inhibit_on_failure [<BOOL>]` and the like: on unless the value says off.
fn flag(s: &Stmt) -> bool {
    !matches!(s.arg(0), Some("false" | "off" | "no"))
}

struct Converter {
    files: Vec<PathBuf>,
    notes: Vec<RawNote>,
    /// Notes given once per import.
    said: HashSet<&'static str>,
    router_id: Option<(String, Loc)>,
    version: Option<u8>,
    garp: Garp,
    scripts: Vec<Script>,
    instances: Vec<Instance>,
    groups: Vec<Group>,
    servers: Vec<Server>,
}

impl Converter {
    fn new(files: Vec<PathBuf>, notes: Vec<RawNote>) -> Self {
        Self {
            files,
            notes,
            said: HashSet::new(),
            router_id: None,
            version: None,
            garp: Garp::default(),
            scripts: Vec::new(),
            instances: Vec::new(),
            groups: Vec::new(),
            servers: Vec::new(),
        }
    }

    fn loc(&self, at: Loc) -> String {
        format!("{}:{}", self.files[at.file].display(), at.line)
    }

    fn note(&mut self, at: Loc, keyword: &str, message: impl Into<String>) {
        self.notes.push(RawNote {
            at: Some(at),
            keyword: keyword.to_owned(),
            message: message.into(),
        });
    }

    fn note_once(&mut self, what: &'static str, at: Loc, keyword: &str, message: &str) {
        if self.said.insert(what) {
            self.note(at, keyword, message);
        }
    }

    fn ignored(&mut self, s: &Stmt, why: &str) {
        self.note(s.at, s.key(), format!("ignored: {why}"));
    }

    fn unknown(&mut self, s: &Stmt) {
        self.ignored(
            s,
            "vip has no equivalent (or the keyword is unknown to keepalived 2.2)",
        );
    }

    /// The first argument, or a note that it is missing.
    fn value(&mut self, s: &Stmt) -> Option<String> {
        let v = s.arg(0).map(str::to_owned);
        if v.is_none() {
            self.ignored(s, "it needs a value");
        }
        v
    }

    /// The first argument as an integer in `range`.
    fn int<T: TryFrom<i64>>(
        &mut self,
        s: &Stmt,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<T> {
        let v = self.value(s)?;
        let n = v
            .parse::<i64>()
            .ok()
            .filter(|n| range.contains(n))
            .and_then(|n| T::try_from(n).ok());
        if n.is_none() {
            self.ignored(
                s,
                &format!(
                    "{v:?} is not a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            );
        }
        n
    }

    /// The first argument as seconds.
    fn secs(&mut self, s: &Stmt) -> Option<Duration> {
        let v = self.value(s)?;
        let d = parse_secs(&v);
        if d.is_none() {
            self.ignored(s, &format!("{v:?} is not a number of seconds"));
        }
        d
    }

    /// `text` as an IPv4 address; `keyword` names the statement, or the
    /// block of the entry, in the note if it is not one.
    fn ipv4(&mut self, at: Loc, keyword: &str, text: &str) -> Option<Ipv4Addr> {
        match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => Some(a),
            Ok(IpAddr::V6(_)) => {
                self.note(
                    at,
                    keyword,
                    format!("not supported: {text} is IPv6 and vip is IPv4 only; left out"),
                );
                None
            }
            Err(_) => {
                self.note(
                    at,
                    keyword,
                    format!("ignored: {text:?} is not an IP address"),
                );
                None
            }
        }
    }

    // --- The top level.

    fn walk(&mut self, stmts: &[Stmt]) {
        for s in stmts {
            let needs_block = matches!(
                s.key(),
                "global_defs"
                    | "vrrp_script"
                    | "vrrp_instance"
                    | "vrrp_sync_group"
                    | "virtual_server"
            );
            if needs_block && s.block.is_none() {
                self.ignored(s, "it needs a { } block");
                continue;
            }
            match s.key() {
                "global_defs" => self.global_defs(s),
                "vrrp_script" => self.vrrp_script(s),
                "vrrp_instance" => self.vrrp_instance(s),
                "vrrp_sync_group" => self.sync_group(s),
                "virtual_server" => self.virtual_server(s),
                "virtual_server_group" => self.note(
                    s.at,
                    s.key(),
                    "not supported: vip has no virtual server groups; write one virtual_server per address and port",
                ),
                "vrrp_track_process" | "vrrp_track_file" | "track_file" => self.note(
                    s.at,
                    s.key(),
                    "not supported: vip tracks exec checks only; write a vrrp_script that tests the same thing",
                ),
                "bfd_instance" => self.note(
                    s.at,
                    s.key(),
                    "not supported: vip has no BFD; VRRP adverts detect a dead peer (shorten advert_int for speed)",
                ),
                "static_ipaddress" | "static_routes" | "static_rules" => self.note(
                    s.at,
                    s.key(),
                    "not supported: vip manages no static addresses, routes or rules; configure them in the OS",
                ),
                "garp_group" => self.note(
                    s.at,
                    s.key(),
                    "not supported: garp = { count, interval } is set per [[vrrp]] instance",
                ),
                "net_namespace" | "net_namespace_ipvs" | "instance" | "use_pid_dir"
                | "linkbeat_use_polling" | "child_wait_time" | "linkbeat_interfaces"
                | "interface_up_down_delays" | "SSL" | "track_group" => {
                    self.ignored(s, "vip has no equivalent");
                }
                _ => self.unknown(s),
            }
        }
    }

    fn global_defs(&mut self, s: &Stmt) {
        for d in s.block() {
            match d.key() {
                "router_id" => {
                    if let Some(v) = self.value(d) {
                        self.router_id = Some((v, d.at));
                    }
                }
                "vrrp_version" => self.version = self.int(d, 2..=3),
                "vrrp_garp_master_repeat" => self.garp.count = self.garp_count(d),
                "vrrp_garp_master_refresh" => self.garp.refresh = self.secs(d),
                "vrrp_garp_interval" => self.garp.interval = self.secs(d),
                "vrrp_min_garp" => {
                    if !matches!(d.arg(0), Some("false" | "off" | "no")) {
                        self.garp.count = Some(1);
                    }
                }
                "vrrp_garp_master_delay"
                | "vrrp_garp_master_refresh_repeat"
                | "vrrp_garp_lower_prio_delay"
                | "vrrp_garp_lower_prio_repeat" => self.garp_second_burst(d),
                "notification_email" | "notification_email_from" | "smtp_server"
                | "smtp_connect_timeout" | "smtp_helo_name" | "smtp_alert"
                | "smtp_alert_vrrp" | "smtp_alert_checker" | "no_email_faults"
                | "email_faults" => self.ignored(
                    d,
                    "vip sends no e-mail; a [[vrrp]] notify script can alert on state changes",
                ),
                "enable_script_security" | "script_user" => self.ignored(
                    d,
                    "vip runs check and notify scripts as the agent's own user; keep them owned by root",
                ),
                "max_auto_priority" | "vrrp_priority" | "checker_priority" | "bfd_priority"
                | "vrrp_rt_priority" | "checker_rt_priority" | "bfd_rt_priority"
                | "vrrp_no_swap" | "checker_no_swap" | "bfd_no_swap" | "vrrp_cpu_affinity"
                | "checker_cpu_affinity" | "bfd_cpu_affinity" | "vrrp_rlimit_rttime"
                | "checker_rlimit_rttime" => self.ignored(
                    d,
                    "vip does not change its own scheduling; set it in the service manager (systemd CPUSchedulingPolicy=)",
                ),
                "vrrp_mcast_group4" => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip multicasts adverts to 224.0.0.18 only; use unicast_peer for anything else",
                ),
                "lvs_sync_daemon" => self.ignored(
                    d,
                    "vip does not copy connections between nodes; both nodes' Maglev tables send a flow to the same backend when their backends match",
                ),
                "lvs_id" => self.ignored(d, "vip names the node with [node] name (from router_id)"),
                "vrrp_strict" => self.ignored(
                    d,
                    "vip has no strict mode; it never adds the VIPs to an interface, so there is no accept mode to turn off",
                ),
                _ => self.ignored(d, "vip has no equivalent global setting"),
            }
        }
    }

    fn garp_count(&mut self, d: &Stmt) -> Option<u32> {
        let n: u32 = self.int(d, 0..=i64::from(u32::MAX))?;
        if n > VIP_MAX_GARP {
            self.note(
                d.at,
                d.key(),
                format!("approximated: vip sends at most {VIP_MAX_GARP} gratuitous ARPs per transition; {n} became {VIP_MAX_GARP}"),
            );
        }
        Some(n.min(VIP_MAX_GARP))
    }

    fn garp_second_burst(&mut self, d: &Stmt) {
        self.ignored(
            d,
            "vip sends one burst of gratuitous ARPs on becoming master (garp.count, garp.interval) and then one per VIP every garp.refresh; there is no delayed second burst",
        );
    }

    fn vrrp_script(&mut self, s: &Stmt) {
        let Some(name) = self.value(s) else { return };
        let mut script = Script {
            name,
            at: s.at,
            command: None,
            interval: Duration::from_secs(1),
            timeout: None,
            weight: 0,
            rise: 1,
            fall: 1,
        };
        for d in s.block() {
            match d.key() {
                "script" => {
                    script.command = Some(d.args().join(" ")).filter(|c| !c.is_empty());
                }
                "interval" => {
                    if let Some(v) = self.secs(d).filter(|v| !v.is_zero()) {
                        script.interval = v;
                    }
                }
                "timeout" => script.timeout = self.secs(d).filter(|v| !v.is_zero()),
                "weight" => {
                    script.weight = self.int(d, -253..=253).unwrap_or(0);
                    if d.arg(1) == Some("reverse") {
                        self.note(
                            d.at,
                            "reverse",
                            "not supported: vip applies a weight while the check fails (negative) or passes (positive); \
                             the weight is kept without reverse",
                        );
                    }
                }
                "rise" => script.rise = self.int(d, 1..=i64::from(u32::MAX)).unwrap_or(1),
                "fall" => script.fall = self.int(d, 1..=i64::from(u32::MAX)).unwrap_or(1),
                "user" => self.ignored(d, "vip runs the script as the agent's own user"),
                "init_fail" => self.ignored(
                    d,
                    "vip starts every check as passing, so a restart does not lower the priority",
                ),
                _ => self.unknown(d),
            }
        }
        if script.command.is_none() {
            self.note(
                s.at,
                s.key(),
                format!(
                    "ignored: {} has no script, so keepalived drops it too",
                    script.name
                ),
            );
            return;
        }
        self.scripts.push(script);
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one arm per vrrp_instance keyword reads best as one table"
    )]
    fn vrrp_instance(&mut self, s: &Stmt) {
        let Some(name) = self.value(s) else { return };
        let mut inst = Instance {
            name,
            at: s.at,
            interface: None,
            vrid: None,
            priority: None,
            version: None,
            advert: None,
            nopreempt: false,
            preempt_delay: None,
            auth_pass: None,
            peers: Vec::new(),
            vips: Vec::new(),
            virtual_mac: false,
            garp: Garp::default(),
            tracks: Vec::new(),
            notify: None,
            notify_states: [None, None, None],
            old_checksum: None,
            master: None,
        };
        for d in s.block() {
            match d.key() {
                "state" => {
                    inst.master = (d.arg(0) == Some("MASTER")).then_some(d.at);
                    self.note_once(
                        "state",
                        d.at,
                        "state",
                        "note: vip has no initial state; the election decides by priority (the highest becomes master, \
                         and with preempt it takes over again when it comes back)",
                    );
                }
                "interface" => {
                    if let Some(v) = self.value(d) {
                        inst.interface = Some((v, d.at));
                    }
                }
                "virtual_router_id" => inst.vrid = self.int(d, 1..=255),
                "priority" => inst.priority = self.int(d, 1..=255),
                "version" => inst.version = self.int(d, 2..=3),
                "advert_int" => {
                    if let Some(v) = self.secs(d).filter(|v| !v.is_zero()) {
                        inst.advert = Some((v, d.at));
                    }
                }
                "nopreempt" => inst.nopreempt = true,
                "preempt" => inst.nopreempt = false,
                "preempt_delay" => inst.preempt_delay = self.secs(d),
                "authentication" => self.authentication(d, &mut inst),
                "unicast_src_ip" | "mcast_src_ip" => {
                    let v = d.arg(0).unwrap_or_default().to_owned();
                    self.note(
                        d.at,
                        d.key(),
                        format!(
                            "ignored: vip sends adverts from the primary address of [node] interface; make sure that is {v}"
                        ),
                    );
                }
                "unicast_peer" => self.unicast_peers(d, &mut inst),
                "virtual_ipaddress" | "virtual_ipaddress_excluded" => self.vips(d, &mut inst),
                "track_script" => {
                    for t in d.block() {
                        let weight = match t.arg(0) {
                            Some("weight") => t.arg(1).and_then(|w| w.parse::<i32>().ok()),
                            _ => None,
                        };
                        if t.args().iter().any(|a| a == "reverse") {
                            self.note(
                                t.at,
                                "reverse",
                                "not supported: vip applies a weight while the check fails (negative) or passes (positive); \
                                 the weight is kept without reverse",
                            );
                        }
                        inst.tracks.push(Track {
                            name: t.key().to_owned(),
                            weight,
                            at: t.at,
                        });
                    }
                }
                "track_interface" => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip watches only [node] interface (down means fault); to follow another link, \
                     write a vrrp_script such as `ip link show IF | grep -q 'state UP'` and track it",
                ),
                "track_file" | "track_process" | "track_bfd" | "track_src_ip" => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip tracks exec checks only; write a vrrp_script that tests the same thing and track it",
                ),
                "notify" | "notify_master" | "notify_backup" | "notify_fault" => {
                    self.notify_keyword(d, &mut inst);
                }
                "notify_stop" | "notify_deleted" | "notify_master_rx_lower_pri" => self.ignored(
                    d,
                    "vip's notify script is called for master, backup and fault only",
                ),
                "use_vmac" => {
                    inst.virtual_mac = true;
                    if !d.args().is_empty() {
                        self.ignored(
                            d,
                            "vip creates no macvlan: it answers for the VIPs with 00:00:5e:00:01:<vrid> on [node] interface; \
                             the interface name and MAC given here are not used",
                        );
                    }
                }
                "vmac_xmit_base" | "use_vmac_addr" | "use_ipvlan" => self.ignored(
                    d,
                    "vip creates no macvlan; virtual_mac = true answers with the virtual MAC on [node] interface",
                ),
                "garp_master_repeat" => inst.garp.count = self.garp_count(d),
                "garp_master_refresh" => inst.garp.refresh = self.secs(d),
                "garp_master_delay"
                | "garp_master_refresh_repeat"
                | "garp_lower_prio_delay"
                | "garp_lower_prio_repeat" => self.garp_second_burst(d),
                "old_unicast_checksum" => inst.old_checksum = Some(d.at),
                "dont_track_primary" => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip always goes to fault while [node] interface is down",
                ),
                "smtp_alert" => self.ignored(
                    d,
                    "vip sends no e-mail; a [[vrrp]] notify script can alert on state changes",
                ),
                "accept" | "no_accept" | "strict_mode" => self.ignored(
                    d,
                    "vip never adds the VIPs to an interface, so it has no accept mode",
                ),
                "virtual_routes" | "virtual_rules" => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip changes no routes or rules on a transition; a notify script can",
                ),
                "native_ipv6" => self.note(d.at, d.key(), "not supported: vip is IPv4 only"),
                _ => self.unknown(d),
            }
        }
        self.instances.push(inst);
    }

    fn authentication(&mut self, s: &Stmt, inst: &mut Instance) {
        let mut kind: Option<(String, Loc)> = None;
        let mut pass: Option<(String, Loc)> = None;
        for d in s.block() {
            match d.key() {
                "auth_type" => kind = self.value(d).map(|v| (v, d.at)),
                "auth_pass" => pass = self.value(d).map(|v| (v, d.at)),
                _ => self.unknown(d),
            }
        }
        match (kind, pass) {
            (Some((k, _)), Some((mut p, at))) if k == "PASS" => {
                if p.len() > KA_AUTH_PASS {
                    let mut end = KA_AUTH_PASS;
                    while !p.is_char_boundary(end) {
                        end -= 1;
                    }
                    p.truncate(end);
                    self.note(
                        at,
                        "auth_pass",
                        format!("approximated: keepalived sends only the first {KA_AUTH_PASS} bytes, {p:?}, and so does vip"),
                    );
                }
                inst.auth_pass = Some((p, at));
            }
            (Some((k, at)), _) if k == "AH" => self.note(
                at,
                "auth_type",
                "not supported: vip has no IPsec AH authentication; remove authentication on every node, or use auth_type PASS",
            ),
            (Some((k, at)), _) if k != "PASS" => {
                self.note(at, "auth_type", format!("ignored: {k:?} is neither PASS nor AH"));
            }
            (_, pass) => self.note(
                pass.map_or(s.at, |(_, at)| at),
                s.key(),
                "ignored: it needs both auth_type PASS and auth_pass",
            ),
        }
    }

    fn unicast_peers(&mut self, s: &Stmt, inst: &mut Instance) {
        for p in s.block() {
            if let Some(a) = self.ipv4(p.at, s.key(), p.key()) {
                inst.peers.push(a);
            }
            if !p.args().is_empty() {
                self.note(
                    p.at,
                    "unicast_peer",
                    format!(
                        "ignored: {}: vip checks that adverts come from a peer, with TTL 255",
                        p.args().join(" ")
                    ),
                );
            }
        }
    }

    fn vips(&mut self, s: &Stmt, inst: &mut Instance) {
        for v in s.block() {
            let (addr, prefix) = v.key().split_once('/').unwrap_or((v.key(), "32"));
            let Some(a) = self.ipv4(v.at, s.key(), addr) else {
                continue;
            };
            inst.vips.push((a, v.at));
            if prefix != "32" {
                self.note_once(
                    "prefix",
                    v.at,
                    s.key(),
                    &format!(
                        "note: vip adds no address to an interface (XDP answers ARP for the VIP), so the /{prefix} \
                         has no effect"
                    ),
                );
            }
            let mut options: Vec<&str> = v.args().iter().map(String::as_str).collect();
            if let Some(i) = options.iter().position(|o| *o == "dev") {
                let dev = options.get(i + 1).copied().unwrap_or_default();
                if inst.interface.as_ref().is_some_and(|(ifc, _)| ifc != dev) {
                    self.note(
                        v.at,
                        "dev",
                        format!("not supported: vip answers for VIPs on [node] interface only, not on {dev}"),
                    );
                }
                options.drain(i..(i + 2).min(options.len()));
            }
            if !options.is_empty() {
                self.note(
                    v.at,
                    s.key(),
                    format!(
                        "ignored: {}: vip adds no address to an interface, so address options do not apply",
                        options.join(" ")
                    ),
                );
            }
        }
    }

    fn notify_keyword(&mut self, d: &Stmt, inst: &mut Instance) {
        let Some(script) = self.value(d) else { return };
        if d.args().len() > 1 {
            self.ignored(
                d,
                &format!(
                    "the user {} is not used: vip runs the script as the agent's own user",
                    d.args()[1..].join(" ")
                ),
            );
        }
        let state = STATE_KEYWORDS.iter().position(|k| *k == d.key());
        let n = Notify {
            keyword: d.key().to_owned(),
            script,
            at: d.at,
            state: state.unwrap_or_default(),
        };
        match state {
            None => inst.notify = Some(n),
            Some(i) => inst.notify_states[i] = Some(n),
        }
    }

    fn sync_group(&mut self, s: &Stmt) {
        let Some(name) = self.value(s) else { return };
        let mut group = Group {
            name,
            at: s.at,
            members: Vec::new(),
            keep_weights: false,
        };
        for d in s.block() {
            match d.key() {
                "group" => {
                    for m in d.block() {
                        group
                            .members
                            .extend(m.words.iter().map(|w| (w.clone(), m.at)));
                    }
                }
                "sync_group_tracking_weight" => group.keep_weights = true,
                "global_tracking" => self.ignored(d, "deprecated in keepalived; vip keeps the members' own tracks"),
                "notify" | "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" => {
                    self.note(
                        d.at,
                        d.key(),
                        "not supported: vip notifies per instance; set notify on the member instances",
                    );
                }
                "track_script" | "track_interface" | "track_file" | "track_process"
                | "track_bfd" => self.note(
                    d.at,
                    d.key(),
                    "not supported on a sync group: track the vrrp_script from a member instance (one in fault takes the group with it)",
                ),
                "smtp_alert" => self.ignored(d, "vip sends no e-mail"),
                _ => self.unknown(d),
            }
        }
        self.groups.push(group);
    }

    // --- LVS.

    /// Handles the checker options shared by virtual servers, real servers
    /// and checkers; false if `d` is not one.
    fn timing(&mut self, d: &Stmt, t: &mut Timing) -> bool {
        match d.key() {
            "connect_timeout" => {
                t.connect_timeout = self.secs(d).filter(|v| !v.is_zero()).or(t.connect_timeout);
            }
            "retry" | "nb_get_retry" => {
                t.retry = self.int(d, 0..=i64::from(u32::MAX - 1)).or(t.retry);
            }
            "delay_loop" => t.delay_loop = self.secs(d).filter(|v| !v.is_zero()).or(t.delay_loop),
            "delay_before_retry" => self.ignored(
                d,
                "vip probes every interval (delay_loop) and marks a backend down after `fall` failures in a row; \
                 there is no separate retry delay",
            ),
            "warmup" => self.ignored(d, "vip spreads checks with a small random jitter of its own"),
            "alpha" => self.ignored(d, "vip starts each backend as up until its check fails"),
            "log_all_failures" => self.ignored(d, "vip logs state changes"),
            _ => return false,
        }
        true
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one arm per virtual_server keyword reads best as one table"
    )]
    fn virtual_server(&mut self, s: &Stmt) {
        let (Some(first), port) = (s.arg(0), s.arg(1)) else {
            self.ignored(s, "it needs an address and a port");
            return;
        };
        if first == "fwmark" || first == "group" {
            self.note(
                s.at,
                s.key(),
                format!(
                    "not supported: vip balances an address and a port, not a {first}; left out"
                ),
            );
            return;
        }
        let Some(vip) = self.ipv4(s.at, s.key(), first) else {
            return;
        };
        let Some(port) = port.and_then(|p| p.parse::<u16>().ok()).filter(|p| *p != 0) else {
            self.note(
                s.at,
                s.key(),
                "not supported: vip balances one port per service, and this virtual server has none; left out",
            );
            return;
        };
        let mut server = Server {
            vip,
            port,
            udp: false,
            at: s.at,
            reals: Vec::new(),
        };
        let mut timing = Timing::default();
        let mut kind_given = false;
        let mut inhibit = false;
        // Real servers last: they inherit the options whatever their order.
        let (reals, options): (Vec<&Stmt>, Vec<&Stmt>) =
            s.block().iter().partition(|d| d.key() == "real_server");
        for d in options {
            if self.timing(d, &mut timing) {
                continue;
            }
            match d.key() {
                "lb_algo" | "lvs_sched" => {
                    let algo = d.arg(0).unwrap_or_default();
                    self.note(
                        d.at,
                        d.key(),
                        format!(
                            "approximated: vip always spreads flows with Maglev consistent hashing weighted by the backends' weights; \
                             {algo} becomes that{}",
                            if matches!(algo, "lc" | "wlc" | "lblc" | "lblcr" | "sed" | "nq" | "twos") {
                                " (it counts no connections)"
                            } else {
                                ""
                            }
                        ),
                    );
                }
                "lb_kind" | "lvs_method" => {
                    kind_given = true;
                    let how = d.arg(0).unwrap_or_default();
                    if how != "DR" {
                        self.note(
                            d.at,
                            d.key(),
                            format!(
                                "not supported: vip forwards by direct routing (DR) only, not {how}; the service is imported as DR, \
                                 so each backend needs the VIP on lo with arp_ignore=1 and arp_announce=2, and answers clients directly"
                            ),
                        );
                    }
                }
                "protocol" => match d.arg(0) {
                    Some("TCP") => server.udp = false,
                    Some("UDP") => server.udp = true,
                    other => {
                        self.note(
                            d.at,
                            d.key(),
                            format!(
                                "not supported: vip balances TCP and UDP, not {}; left out",
                                other.unwrap_or("nothing")
                            ),
                        );
                        return;
                    }
                },
                "persistence_timeout" | "persistence_granularity" | "persistence_engine" => {
                    self.note(
                        d.at,
                        d.key(),
                        "approximated: vip keeps every connection on its backend for the connection's life (flow table) \
                         but has no client persistence across connections",
                    );
                }
                "inhibit_on_failure" => inhibit = flag(d),
                "sorry_server" | "sorry_server_inhibit" | "sorry_server_lvs_method" => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip has no sorry server; while every backend is down a [[vrrp]] track_services weight can move the VIP",
                ),
                "quorum" | "hysteresis" | "quorum_up" | "quorum_down" => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip has no quorum; [[vrrp]] track_services = { weight = N } reacts when a service has no healthy backend",
                ),
                "virtualhost" => self.ignored(d, "vip's HTTP check sends no Host of its own choosing"),
                "ha_suspend" | "omega" | "smtp_alert" | "snmp_name" | "ops"
                | "ip_family" | "flag-1" | "flag-2" | "flag-3" | "sh-port" | "sh-fallback"
                | "mh-port" | "mh-fallback" => self.ignored(d, "vip has no equivalent"),
                _ => self.unknown(d),
            }
        }
        if !kind_given {
            self.note(
                s.at,
                s.key(),
                "note: no lb_kind, and keepalived's default is NAT; vip forwards by direct routing (DR) only, so each backend \
                 needs the VIP on lo with arp_ignore=1 and arp_announce=2",
            );
        }
        for r in reals {
            if let Some(real) = self.real_server(r, port, &timing, inhibit) {
                server.reals.push(real);
            }
        }
        self.servers.push(server);
    }

    fn real_server(&mut self, s: &Stmt, port: u16, timing: &Timing, inhibit: bool) -> Option<Real> {
        let addr = self.ipv4(s.at, s.key(), s.arg(0).unwrap_or_default())?;
        if let Some(p) = s.arg(1)
            && p.parse::<u16>().ok() != Some(port)
        {
            self.note(
                s.at,
                s.key(),
                format!(
                    "not supported: direct routing cannot change the port; the backend gets port {port}, not {p}"
                ),
            );
        }
        let mut real = Real {
            addr,
            at: s.at,
            weight: 1,
            inhibit,
            probe: None,
        };
        let mut timing = timing.clone();
        let (checkers, options): (Vec<&Stmt>, Vec<&Stmt>) = s
            .block()
            .iter()
            .partition(|d| d.key().ends_with("_CHECK") || d.key().ends_with("_GET"));
        for d in options {
            if self.timing(d, &mut timing) {
                continue;
            }
            match d.key() {
                "weight" => real.weight = self.int(d, 0..=65535).unwrap_or(1),
                "inhibit_on_failure" => real.inhibit = flag(d),
                "lb_kind" | "lvs_method" if d.arg(0) != Some("DR") => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip forwards by direct routing (DR) only; this backend is imported as DR",
                ),
                "lb_kind" | "lvs_method" => {}
                "notify_up" | "notify_down" => self.ignored(
                    d,
                    "vip runs no script when a backend changes state; it logs it and shows it in `vipctl backends`",
                ),
                "uthreshold" | "lthreshold" => {
                    self.ignored(d, "vip counts no connections per backend");
                }
                "virtualhost" => self.ignored(d, "vip's HTTP check sends no Host of its own choosing"),
                "smtp_alert" | "snmp_name" => self.ignored(d, "vip has no equivalent"),
                _ => self.unknown(d),
            }
        }
        for (n, c) in checkers.into_iter().enumerate() {
            let probe = self.checker(c, addr, port, &timing);
            if n == 0 {
                real.probe = probe.map(|p| (p, c.at));
            } else if probe.is_some() {
                let first = real
                    .probe
                    .as_ref()
                    .map_or(String::new(), |(_, at)| format!(" (line {})", at.line));
                self.note(
                    c.at,
                    c.key(),
                    format!("ignored: vip runs one check per backend and uses this server's first{first}"),
                );
            }
        }
        Some(real)
    }

    /// A checker in vip's terms, or `None` (with a note) if vip cannot run it.
    fn checker(&mut self, c: &Stmt, addr: Ipv4Addr, port: u16, timing: &Timing) -> Option<Probe> {
        let (kind, retries) = match c.key() {
            "TCP_CHECK" => ("tcp", 1),
            "HTTP_GET" => ("http", 1),
            "MISC_CHECK" => ("exec", 0),
            "SSL_GET" | "SMTP_CHECK" => {
                self.note(
                    c.at,
                    c.key(),
                    "approximated: vip has no TLS or SMTP check; a TCP connect to the same port stands in",
                );
                ("tcp", 1)
            }
            other => {
                self.note(
                    c.at,
                    other,
                    "not supported: vip checks with tcp, http, amqp or exec; left out (a MISC_CHECK script can do it)",
                );
                return None;
            }
        };
        let mut timing = timing.clone();
        let mut probe = Probe {
            kind,
            interval: KA_DELAY_LOOP,
            timeout: KA_CONNECT_TIMEOUT,
            fall: 1,
            port: None,
            path: None,
            expect_status: None,
            expect_body: None,
            command: None,
        };
        let mut misc_timeout = None;
        let mut urls = 0;
        for d in c.block() {
            if self.timing(d, &mut timing) {
                continue;
            }
            match d.key() {
                "connect_port" => probe.port = self.int(d, 1..=65535),
                "connect_ip" => self.ignored(d, &format!("vip probes the backend's own address, {addr}")),
                "bindto" | "bind_port" | "bind_if" | "fwmark" => self.ignored(
                    d,
                    "vip probes from the node's own address, chosen by the kernel",
                ),
                "url" if kind != "http" => {
                    self.ignored(d, "the TCP connect that stands in for this check fetches no url");
                }
                "url" => {
                    urls += 1;
                    if urls == 1 {
                        self.url(d, &mut probe);
                    } else {
                        self.ignored(d, "vip checks one path per service: the first url");
                    }
                }
                "misc_path" if kind == "exec" => {
                    probe.command = Some(d.args().join(" ")).filter(|c| !c.is_empty());
                }
                "misc_timeout" if kind == "exec" => {
                    misc_timeout = self.secs(d).filter(|v| !v.is_zero());
                }
                "misc_dynamic" => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip sets no weight from the exit status; 0 is up, anything else down",
                ),
                "user" => self.ignored(d, "vip runs the script as the agent's own user"),
                "http_protocol" | "fast_recovery" | "enable_sni" | "helo_name" | "virtualhost" => {
                    self.ignored(d, "vip's check has no such option");
                }
                _ => self.unknown(d),
            }
        }
        probe.interval = timing.delay_loop.unwrap_or(KA_DELAY_LOOP);
        probe.timeout = if kind == "exec" {
            // keepalived lets a script run up to delay_loop without misc_timeout.
            misc_timeout.unwrap_or(probe.interval)
        } else {
            timing.connect_timeout.unwrap_or(KA_CONNECT_TIMEOUT)
        };
        // keepalived marks a server down after a failure and `retry` more.
        probe.fall = timing.retry.unwrap_or(retries) + 1;
        if probe.port == Some(port) {
            probe.port = None;
        }
        if kind == "http" {
            probe.path.get_or_insert_with(|| "/".to_owned());
            probe.expect_status.get_or_insert(200);
        }
        if kind == "exec" && probe.command.is_none() {
            self.note(
                c.at,
                c.key(),
                "ignored: it has no misc_path, so keepalived drops it too",
            );
            return None;
        }
        Some(probe)
    }

    fn url(&mut self, s: &Stmt, probe: &mut Probe) {
        let mut status_given = false;
        for d in s.block() {
            match d.key() {
                "path" => {
                    if let Some(p) = self.value(d) {
                        probe.path = Some(if p.starts_with('/') { p } else { format!("/{p}") });
                    }
                }
                "status_code" => {
                    status_given = true;
                    let codes = d.args().join(" ");
                    match codes.parse::<u16>() {
                        Ok(c) if (100..=599).contains(&c) => probe.expect_status = Some(c),
                        _ => {
                            let first = codes
                                .split(|c: char| !c.is_ascii_digit())
                                .find_map(|c| c.parse::<u16>().ok())
                                .filter(|c| (100..=599).contains(c))
                                .unwrap_or(200);
                            probe.expect_status = Some(first);
                            self.note(
                                d.at,
                                d.key(),
                                format!("approximated: vip expects one status, not {codes}; it expects {first}"),
                            );
                        }
                    }
                }
                "digest" => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip does not hash the body; the check passes on the expected status alone",
                ),
                "regex" if is_literal(d.arg(0).unwrap_or_default()) => {
                    probe.expect_body = d.arg(0).map(str::to_owned).filter(|b| !b.is_empty());
                }
                "regex" | "regex_no_match" | "regex_options" | "regex_stack"
                | "regex_min_offset" | "regex_max_offset" => self.note(
                    d.at,
                    d.key(),
                    "not supported: vip looks for a fixed string in the body (expect_body), not a regular expression; \
                     the check passes on the expected status alone",
                ),
                "virtualhost" => self.ignored(d, "vip's HTTP check sends no Host of its own choosing"),
                _ => self.unknown(d),
            }
        }
        if !status_given {
            self.note(
                s.at,
                "status_code",
                "approximated: keepalived accepts any 2xx status by default; vip expects 200 (set expect_status for another)",
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Resolving references and writing the TOML.

/// A vip `[[check]]` made from a `vrrp_script`.
struct CheckOut<'a> {
    script: &'a Script,
}

/// A `[[vrrp]]` ready to write.
struct VrrpOut {
    name: String,
    at: Loc,
    vrid: u8,
    priority: u8,
    version: u8,
    advert: Duration,
    nopreempt: bool,
    preempt_delay: Option<Duration>,
    peers: Vec<Ipv4Addr>,
    auth_pass: Option<String>,
    vips: Vec<Ipv4Addr>,
    /// The line of the first VIP.
    vips_at: Loc,
    virtual_mac: bool,
    garp: Garp,
    tracks: Vec<(String, i32)>,
    notify: Option<String>,
    sync_group: Option<String>,
    old_checksum: bool,
}

/// A `[[service]]` ready to write.
struct ServiceOut {
    at: Loc,
    vip: Ipv4Addr,
    port: u16,
    udp: bool,
    check: Option<Probe>,
    /// Why the check is written as a comment only.
    check_off: Option<String>,
    /// `on_backend_down = "keep"`, from keepalived's `inhibit_on_failure`.
    keep: bool,
    backends: Vec<(Ipv4Addr, u32, Loc)>,
}

impl Converter {
    fn finish(mut self, path: &Path, opts: &Options) -> Result<Imported, ImportError> {
        let (interface, interface_from) = self.interface(path, opts)?;
        let (name, name_from) = self.name(opts);
        let vrrp = self.vrrp_out();
        let tracked: HashSet<&str> = vrrp
            .iter()
            .flat_map(|v| v.tracks.iter().map(|(c, _)| c.as_str()))
            .collect();
        let unused: Vec<(Loc, String)> = self
            .scripts
            .iter()
            .filter(|s| !tracked.contains(s.name.as_str()))
            .map(|s| (s.at, s.name.clone()))
            .collect();
        for (at, name) in unused {
            self.note(
                at,
                "vrrp_script",
                format!("ignored: no instance tracks {name}, so keepalived never runs it either"),
            );
        }
        let mut services = self.services_out();
        self.local_vips(&vrrp, &services);

        // What `vip-agent --check` refuses in this build is written as a
        // comment, with a note, rather than making the whole file unusable.
        let mut rounds = 0;
        let toml = loop {
            let checks: Vec<CheckOut<'_>> = self
                .scripts
                .iter()
                .filter(|s| tracked.contains(s.name.as_str()))
                .map(|script| CheckOut { script })
                .collect();
            let toml = self.toml(
                path,
                (interface.as_str(), interface_from),
                (name.as_str(), name_from),
                &checks,
                &vrrp,
                &services,
            );
            let Err(e) = validate(&toml) else { break toml };
            rounds += 1;
            if rounds > services.len() + 1 || !self.check_off(&mut services, &e) {
                return Err(ImportError::Invalid {
                    file: path.to_owned(),
                    source: e,
                });
            }
        };
        let mut notes = std::mem::take(&mut self.notes);
        notes.sort_by_key(|n| n.at.map_or(usize::MAX, |a| a.seq));
        let notes = notes
            .into_iter()
            .map(|n| Note {
                file: n
                    .at
                    .map_or_else(|| path.to_owned(), |a| self.files[a.file].clone()),
                line: n.at.map(|a| a.line),
                keyword: n.keyword,
                message: n.message,
            })
            .collect();
        Ok(Imported { toml, notes })
    }

    /// Turns off the service check that `e` refuses; false if `e` is about
    /// something else.
    fn check_off(&mut self, services: &mut [ServiceOut], e: &crate::config::ConfigError) -> bool {
        let Some(key) = e.key.as_deref() else {
            return false;
        };
        let which: Vec<usize> = if key == "service.check" {
            // refuse_unsupported: this build checks no service at all.
            (0..services.len())
                .filter(|&i| services[i].check.is_some())
                .collect()
        } else if let Some(rest) = key.strip_prefix("service[")
            && let Some((i, field)) = rest.split_once(']')
            && field.starts_with(".check")
            && let Ok(i) = i.parse::<usize>()
            && services.get(i).is_some_and(|s| s.check.is_some())
        {
            vec![i]
        } else {
            return false;
        };
        if which.is_empty() {
            return false;
        }
        for i in which {
            let s = &mut services[i];
            let why = e.message.clone();
            s.check_off = Some(why.clone());
            let at = s.at;
            self.note(
                at,
                "virtual_server",
                format!(
                    "not supported by this build of vip: the check is written as a comment ({why}); its backends count as always up"
                ),
            );
        }
        true
    }

    fn interface(
        &mut self,
        path: &Path,
        opts: &Options,
    ) -> Result<(String, Option<Loc>), ImportError> {
        let chosen = match &opts.interface {
            Some(i) => (i.clone(), None),
            None => match self.instances.iter().find_map(|i| i.interface.clone()) {
                Some((i, at)) => (i, Some(at)),
                None => {
                    return Err(ImportError::Incomplete {
                        file: path.to_owned(),
                        message: "no vrrp_instance names an interface, and vip needs one ([node] interface, where XDP \
                                  attaches and VRRP runs): pass --iface IF"
                            .to_owned(),
                    });
                }
            },
        };
        let others: Vec<(String, Loc)> = self
            .instances
            .iter()
            .filter_map(|i| i.interface.clone())
            .filter(|(i, _)| *i != chosen.0)
            .collect();
        for (other, at) in others {
            self.note(
                at,
                "interface",
                format!(
                    "not supported: vip runs on one interface per node; this instance is imported onto {}, not {other} \
                     (run a second vip node for {other})",
                    chosen.0
                ),
            );
        }
        Ok(chosen)
    }

    fn name(&mut self, opts: &Options) -> (String, Option<Loc>) {
        if let Some(n) = &opts.name {
            return (node_name(n), None);
        }
        let Some((raw, at)) = self.router_id.clone() else {
            let name = node_name(&host_name());
            self.notes.push(RawNote {
                at: None,
                keyword: "router_id".to_owned(),
                message: format!(
                    "note: there is none, so the node is named {name:?} after this host, as keepalived does; \
                     pass --node NAME for another"
                ),
            });
            return (name, None);
        };
        let name = node_name(&raw);
        if name != raw {
            self.note(
                at,
                "router_id",
                format!(
                    "approximated: a vip node name is 1 to 32 of A-Z a-z 0-9 _ -, so {raw:?} became {name:?}"
                ),
            );
        }
        (name, Some(at))
    }

    #[expect(
        clippy::too_many_lines,
        reason = "the instance rules (defaults, sync groups, tracks, notify) read best in one place"
    )]
    fn vrrp_out(&mut self) -> Vec<VrrpOut> {
        let instances = std::mem::take(&mut self.instances);
        let groups = std::mem::take(&mut self.groups);
        let names: HashSet<&str> = instances.iter().map(|i| i.name.as_str()).collect();
        let mut group_of: HashMap<&str, &Group> = HashMap::new();
        for g in &groups {
            for (m, at) in &g.members {
                if !names.contains(m.as_str()) {
                    self.note(
                        *at,
                        "group",
                        format!(
                            "ignored: there is no vrrp_instance {m} in sync group {}",
                            g.name
                        ),
                    );
                } else if let Some(other) = group_of.get(m.as_str()) {
                    self.note(
                        *at,
                        "group",
                        format!("ignored: {m} is already in sync group {}", other.name),
                    );
                } else {
                    group_of.insert(m, g);
                }
            }
            if g.members.len() < 2 {
                self.note(
                    g.at,
                    "vrrp_sync_group",
                    "note: a sync group of fewer than two instances changes nothing",
                );
            }
        }
        let scripts: HashMap<&str, &Script> =
            self.scripts.iter().map(|s| (s.name.as_str(), s)).collect();
        let mut out: Vec<VrrpOut> = Vec::new();
        let mut vrids: HashMap<u8, String> = HashMap::new();
        let mut notes: Vec<(Loc, &str, String)> = Vec::new();
        for inst in &instances {
            let Some(vrid) = inst.vrid else {
                notes.push((
                    inst.at,
                    "vrrp_instance",
                    format!(
                        "ignored: {} has no virtual_router_id, so keepalived drops it too",
                        inst.name
                    ),
                ));
                continue;
            };
            if inst.vips.is_empty() {
                notes.push((inst.at, "vrrp_instance", format!("ignored: {} has no IPv4 virtual_ipaddress, and a vip instance needs one to move", inst.name)));
                continue;
            }
            if let Some(other) = vrids.get(&vrid) {
                notes.push((inst.at, "virtual_router_id", format!("ignored: {} uses vrid {vrid} like {other}, and vip runs all instances on one interface", inst.name)));
                continue;
            }
            if out.iter().any(|o| o.name == inst.name) {
                notes.push((
                    inst.at,
                    "vrrp_instance",
                    format!("ignored: a second instance named {}", inst.name),
                ));
                continue;
            }
            vrids.insert(vrid, inst.name.clone());
            let version = inst.version.or(self.version).unwrap_or(KA_VRRP_VERSION);
            let advert = advert_for(inst.advert, version, &mut notes);
            let mut vips: Vec<Ipv4Addr> = Vec::new();
            for (v, at) in &inst.vips {
                if vips.contains(v) {
                    notes.push((
                        *at,
                        "virtual_ipaddress",
                        format!("ignored: {v} is listed twice"),
                    ));
                } else {
                    vips.push(*v);
                }
            }
            let mut peers = Vec::new();
            for p in &inst.peers {
                if !peers.contains(p) {
                    peers.push(*p);
                }
            }
            let auth_pass = match &inst.auth_pass {
                Some((p, _)) if version == 2 => Some(p.clone()),
                Some((_, at)) => {
                    notes.push((*at, "authentication", "ignored: VRRP version 3 has no authentication (keepalived ignores it too); \
                                 set vrrp_version 2 on every node to keep it".to_owned()));
                    None
                }
                None => None,
            };
            let group = group_of.get(inst.name.as_str());
            let mut tracks = Vec::new();
            for t in &inst.tracks {
                let Some(script) = scripts.get(t.name.as_str()) else {
                    notes.push((
                        t.at,
                        "track_script",
                        format!(
                            "ignored: there is no vrrp_script {}, so keepalived ignores it too",
                            t.name
                        ),
                    ));
                    continue;
                };
                let mut weight = t.weight.unwrap_or(script.weight);
                if weight != 0 && group.is_some_and(|g| !g.keep_weights) {
                    notes.push((t.at, "track_script", format!(
                        "approximated: in a sync group keepalived sets track weights to 0 (a failing check puts the \
                         group in fault), and so does the import; add sync_group_tracking_weight to the group to keep {weight}"
                    )));
                    weight = 0;
                }
                tracks.push((script.name.clone(), weight));
            }
            let notify = Self::notify_out(inst, &mut notes);
            let old_checksum = match inst.old_checksum {
                Some(at) if version == 2 => {
                    notes.push((
                        at,
                        "old_unicast_checksum",
                        "ignored: it concerns VRRP version 3 only".to_owned(),
                    ));
                    false
                }
                Some(_) => true,
                None => false,
            };
            let priority = match (inst.priority, inst.master) {
                (Some(p), _) => p,
                (None, Some(at)) => {
                    notes.push((at, "state", "note: with state MASTER and no priority keepalived uses 255 (address owner), \
                                 and so does the import".to_owned()));
                    255
                }
                (None, None) => KA_PRIORITY,
            };
            out.push(VrrpOut {
                name: inst.name.clone(),
                at: inst.at,
                vrid,
                priority,
                version,
                advert,
                nopreempt: inst.nopreempt,
                preempt_delay: inst.preempt_delay,
                peers,
                auth_pass,
                vips,
                vips_at: inst.vips[0].1,
                virtual_mac: inst.virtual_mac,
                garp: inst.garp.or(&self.garp),
                tracks,
                notify,
                sync_group: group.map(|g| g.name.clone()),
                old_checksum,
            });
        }
        for (at, keyword, message) in notes {
            self.note(at, keyword, message);
        }
        out
    }

    /// vip's one notify script, from keepalived's notify and notify_*.
    fn notify_out(inst: &Instance, notes: &mut Vec<(Loc, &'static str, String)>) -> Option<String> {
        const ARGS: &str = "calls it as `SCRIPT <master|backup|fault> <instance>`";
        let simple = |n: &Notify| !n.script.contains(char::is_whitespace);
        let wrapper = |n: &Notify| {
            format!(
                "not supported: vip has one notify script and {ARGS}; write a wrapper that runs {:?} when $1 is {}, \
                 and set notify to it",
                n.script,
                n.keyword.trim_start_matches("notify_")
            )
        };
        let states = &inst.notify_states;
        let same_three = match states {
            [Some(a), Some(b), Some(c)] => {
                a.script == b.script && b.script == c.script && simple(a)
            }
            _ => false,
        };
        if let Some(n) = &inst.notify {
            for s in states.iter().flatten() {
                notes.push((s.at, STATE_KEYWORDS[s.state], wrapper(s)));
            }
            if simple(n) {
                notes.push((n.at, "notify", format!(
                    "approximated: keepalived calls it as `SCRIPT INSTANCE <name> <MASTER|BACKUP|FAULT> <priority>` and vip {ARGS}: \
                     adapt the script to vip's arguments"
                )));
                return Some(n.script.clone());
            }
            notes.push((n.at, "notify", format!(
                "not supported: vip runs notify as a bare path and {ARGS}; put {:?} in a wrapper \
                 script and set notify to it", n.script
            )));
            return None;
        }
        if same_three {
            let n = states[0].as_ref().expect("checked");
            notes.push((n.at, "notify_master", format!(
                "approximated: the same script for master, backup and fault becomes notify; keepalived called it without \
                 arguments and vip {ARGS}"
            )));
            return Some(n.script.clone());
        }
        for s in states.iter().flatten() {
            notes.push((s.at, STATE_KEYWORDS[s.state], wrapper(s)));
        }
        None
    }

    fn services_out(&mut self) -> Vec<ServiceOut> {
        let servers = std::mem::take(&mut self.servers);
        let mut out: Vec<ServiceOut> = Vec::new();
        for s in &servers {
            if let Some(first) = out
                .iter()
                .find(|o| o.vip == s.vip && o.port == s.port && o.udp == s.udp)
            {
                let msg = format!(
                    "ignored: {}:{} is already the virtual server at line {}",
                    s.vip, s.port, first.at.line
                );
                self.note(s.at, "virtual_server", msg);
                continue;
            }
            let mut backends: Vec<(Ipv4Addr, u32, Loc)> = Vec::new();
            for r in &s.reals {
                if backends.iter().any(|(a, _, _)| *a == r.addr) {
                    self.note(
                        r.at,
                        "real_server",
                        format!("ignored: {} is listed twice", r.addr),
                    );
                } else {
                    backends.push((r.addr, r.weight, r.at));
                }
            }
            if backends.is_empty() {
                self.note(
                    s.at,
                    "virtual_server",
                    "ignored: it has no IPv4 real_server, and a vip service needs one",
                );
                continue;
            }
            self.scale_weights(&mut backends);
            let check = self.service_check(s);
            let keep = self.keep_on_down(s, check.is_some());
            out.push(ServiceOut {
                at: s.at,
                vip: s.vip,
                port: s.port,
                udp: s.udp,
                check,
                check_off: None,
                keep,
                backends,
            });
        }
        out
    }

    /// keepalived's `inhibit_on_failure` sets a failed server's weight to 0,
    /// so its connections go on: vip's `on_backend_down = "keep"`, which is
    /// per service.
    fn keep_on_down(&mut self, s: &Server, checked: bool) -> bool {
        let inhibited = s.reals.iter().filter(|r| r.inhibit).count();
        if inhibited == 0 || !checked {
            return false;
        }
        let message = if inhibited == s.reals.len() {
            "approximated: inhibit_on_failure becomes on_backend_down = \"keep\": a failed backend gets no new flows \
             and keeps the ones it has"
                .to_owned()
        } else {
            format!(
                "approximated: {inhibited} of {} real servers have inhibit_on_failure; vip's on_backend_down is per service, \
                 so every backend keeps its flows when it fails (\"keep\")",
                s.reals.len()
            )
        };
        self.note(s.at, "inhibit_on_failure", message);
        true
    }

    /// LVS weights go to 65535, vip's to 1000: scale down, keeping ratios.
    fn scale_weights(&mut self, backends: &mut [(Ipv4Addr, u32, Loc)]) {
        let max = backends.iter().map(|b| b.1).max().unwrap_or(0);
        if max <= VIP_MAX_WEIGHT {
            return;
        }
        for b in backends.iter_mut() {
            let scaled = if b.1 == 0 {
                0
            } else {
                (u64::from(b.1) * u64::from(VIP_MAX_WEIGHT)).div_ceil(u64::from(max))
            };
            let scaled = u32::try_from(scaled).unwrap_or(VIP_MAX_WEIGHT);
            self.note(
                b.2,
                "real_server",
                format!(
                    "approximated: vip weights go to {VIP_MAX_WEIGHT}, so the service's weights were scaled \
                     keeping their ratios: weight {} became {scaled}",
                    b.1
                ),
            );
            b.1 = scaled;
        }
    }

    /// The one check of a service, from its real servers' checkers.
    fn service_check(&mut self, s: &Server) -> Option<Probe> {
        let mut probes: Vec<(Ipv4Addr, Probe, Loc)> = s
            .reals
            .iter()
            .filter_map(|r| r.probe.clone().map(|(p, at)| (r.addr, p, at)))
            .collect();
        if probes.is_empty() {
            return None;
        }
        for r in s.reals.iter().filter(|r| r.probe.is_none()) {
            self.note(
                r.at,
                "real_server",
                "note: it has no check that vip can run, but others in this virtual server do; vip checks every backend of a service alike",
            );
        }
        // MISC_CHECK scripts often name their real server: one command with
        // the backend's address in a variable serves them all.
        let commands: Vec<Option<&String>> =
            probes.iter().map(|(_, p, _)| p.command.as_ref()).collect();
        if commands.iter().all(Option::is_some) && commands.windows(2).any(|w| w[0] != w[1]) {
            let generic: Vec<String> = probes
                .iter()
                .map(|(a, p, _)| {
                    with_backend_variable(p.command.as_deref().unwrap_or_default(), *a)
                })
                .collect();
            if generic.windows(2).all(|w| w[0] == w[1]) {
                let at = probes[0].2;
                self.note(
                    at,
                    "misc_path",
                    format!(
                        "approximated: the real servers' scripts differ only by their address, so the check runs {:?}; \
                         vip sets VIP_BACKEND_ADDRESS (and VIP_BACKEND_PORT) for each backend",
                        generic[0]
                    ),
                );
                for ((_, p, _), c) in probes.iter_mut().zip(generic) {
                    p.command = Some(c);
                }
            }
        }
        let (_, first, first_at) = probes[0].clone();
        for (_, p, at) in probes.iter().skip(1) {
            let diff = first.differences(p);
            if !diff.is_empty() {
                let msg = format!(
                    "ignored: differs from the check at {} ({}); vip has one check per service and uses that one",
                    self.loc(first_at),
                    diff.join(", ")
                );
                self.note(*at, "real_server", msg);
            }
        }
        Some(first)
    }

    /// keepalived adds the VIPs to the interface; vip answers ARP for them
    /// from XDP and forwards [[service]] traffic, adding no address.
    fn local_vips(&mut self, vrrp: &[VrrpOut], services: &[ServiceOut]) {
        for v in vrrp {
            let bare: Vec<String> = v
                .vips
                .iter()
                .filter(|a| !services.iter().any(|s| s.vip == **a))
                .map(ToString::to_string)
                .collect();
            if !bare.is_empty() {
                self.note(
                    v.vips_at,
                    "virtual_ipaddress",
                    format!(
                        "note: vip answers ARP for {} but adds no address to an interface and has no [[service]] for it; \
                         if a local daemon (haproxy, nginx) serves it, add the address to lo on each node",
                        bare.join(", ")
                    ),
                );
            }
        }
    }

    fn toml(
        &self,
        path: &Path,
        interface: (&str, Option<Loc>),
        name: (&str, Option<Loc>),
        checks: &[CheckOut<'_>],
        vrrp: &[VrrpOut],
        services: &[ServiceOut],
    ) -> String {
        let mut t = String::new();
        let from = |at: Option<Loc>, what: &str| {
            at.map_or_else(String::new, |at| format!("  # {} ({what})", self.loc(at)))
        };
        let _ = writeln!(
            t,
            "# vip configuration imported from {} by `vipctl import-keepalived`.\n\
             # Review the notes it printed: they list what vip does differently.\n",
            path.display()
        );
        let _ = writeln!(t, "[node]");
        let _ = writeln!(
            t,
            "interface = {}{}",
            q(interface.0),
            from(interface.1, "interface")
        );
        let _ = writeln!(t, "name = {}{}", q(name.0), from(name.1, "router_id"));
        for c in checks {
            let s = c.script;
            let _ = writeln!(t, "\n[[check]]");
            let _ = writeln!(t, "# {}: vrrp_script {}", self.loc(s.at), s.name);
            let _ = writeln!(t, "name = {}", q(&s.name));
            let _ = writeln!(t, "kind = \"exec\"");
            let _ = writeln!(
                t,
                "command = {}",
                q(s.command.as_deref().unwrap_or_default())
            );
            let _ = writeln!(t, "interval = {}", q(&fmt_dur(s.interval)));
            let _ = writeln!(
                t,
                "timeout = {}",
                q(&fmt_dur(s.timeout.unwrap_or(s.interval)))
            );
            let _ = writeln!(t, "rise = {}", s.rise);
            let _ = writeln!(t, "fall = {}", s.fall);
        }
        for v in vrrp {
            self.vrrp_toml(&mut t, v);
        }
        for s in services {
            self.service_toml(&mut t, s);
        }
        t
    }

    fn vrrp_toml(&self, t: &mut String, v: &VrrpOut) {
        let list = |a: &[Ipv4Addr]| {
            a.iter()
                .map(|a| q(&a.to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(t, "\n[[vrrp]]");
        let _ = writeln!(t, "# {}: vrrp_instance {}", self.loc(v.at), v.name);
        let _ = writeln!(t, "name = {}", q(&v.name));
        let _ = writeln!(t, "vrid = {}", v.vrid);
        let _ = writeln!(t, "priority = {}", v.priority);
        let _ = writeln!(t, "version = {}", v.version);
        let _ = writeln!(t, "advert_interval = {}", q(&fmt_dur(v.advert)));
        if v.nopreempt {
            let _ = writeln!(t, "preempt = false");
        }
        if let Some(d) = v.preempt_delay {
            let _ = writeln!(t, "preempt_delay = {}", q(&fmt_dur(d)));
        }
        if !v.peers.is_empty() {
            let _ = writeln!(t, "unicast_peers = [{}]", list(&v.peers));
        }
        if let Some(p) = &v.auth_pass {
            let _ = writeln!(t, "auth_pass = {}", q(p));
        }
        let _ = writeln!(t, "vips = [{}]", list(&v.vips));
        if v.virtual_mac {
            let _ = writeln!(t, "virtual_mac = true");
        }
        let mut garp = Vec::new();
        if let Some(c) = v.garp.count {
            garp.push(format!("count = {c}"));
        }
        if let Some(i) = v.garp.interval {
            garp.push(format!("interval = {}", q(&fmt_dur(i))));
        }
        if let Some(r) = v.garp.refresh {
            garp.push(format!("refresh = {}", q(&fmt_dur(r))));
        }
        if !garp.is_empty() {
            let _ = writeln!(t, "garp = {{ {} }}", garp.join(", "));
        }
        if !v.tracks.is_empty() {
            let tracks: Vec<String> = v
                .tracks
                .iter()
                .map(|(c, w)| format!("{{ check = {}, weight = {w} }}", q(c)))
                .collect();
            let _ = writeln!(t, "track = [{}]", tracks.join(", "));
        }
        if let Some(n) = &v.notify {
            let _ = writeln!(t, "notify = {}", q(n));
        }
        if let Some(g) = &v.sync_group {
            let _ = writeln!(t, "sync_group = {}", q(g));
        }
        if v.old_checksum {
            let _ = writeln!(
                t,
                "v3_checksum = \"group-pseudo-header\"  # old_unicast_checksum"
            );
        }
    }

    fn service_toml(&self, t: &mut String, s: &ServiceOut) {
        let _ = writeln!(t, "\n[[service]]");
        let _ = writeln!(
            t,
            "# {}: virtual_server {} {}",
            self.loc(s.at),
            s.vip,
            s.port
        );
        let _ = writeln!(t, "vip = {}", q(&s.vip.to_string()));
        let _ = writeln!(t, "port = {}", s.port);
        let _ = writeln!(
            t,
            "protocol = {}",
            if s.udp { "\"udp\"" } else { "\"tcp\"" }
        );
        if s.keep {
            let _ = writeln!(t, "on_backend_down = \"keep\"  # inhibit_on_failure");
        }
        if let Some(c) = &s.check {
            match &s.check_off {
                None => {
                    let _ = writeln!(t, "check = {{ {} }}", c.toml());
                }
                Some(why) => {
                    let _ = writeln!(t, "# Not accepted by this build of vip ({why}):");
                    let _ = writeln!(t, "# check = {{ {} }}", c.toml());
                }
            }
        }
        let _ = writeln!(t, "backends = [");
        for (a, w, at) in &s.backends {
            let _ = writeln!(
                t,
                "  {{ address = {}, weight = {w} }},  # {}",
                q(&a.to_string()),
                self.loc(*at)
            );
        }
        let _ = writeln!(t, "]");
    }
}

/// The advert interval vip can send for `version`, rounded the way
/// keepalived rounds it (with a note when that changes it).
fn advert_for(
    given: Option<(Duration, Loc)>,
    version: u8,
    notes: &mut Vec<(Loc, &'static str, String)>,
) -> Duration {
    let Some((d, at)) = given else {
        return KA_ADVERT;
    };
    let (unit, max) = if version == 2 {
        (Duration::from_secs(1), Duration::from_secs(255))
    } else {
        (Duration::from_millis(10), Duration::from_millis(40_950))
    };
    let units = (d.as_nanos() + unit.as_nanos() / 2) / unit.as_nanos();
    let rounded = unit
        .checked_mul(u32::try_from(units).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .clamp(unit, max);
    if rounded != d {
        notes.push((
            at,
            "advert_int",
            format!(
                "approximated: VRRP version {version} sends {}; {} became {} (keepalived rounds it the same way)",
                if version == 2 { "whole seconds from 1s to 255s" } else { "multiples of 10ms up to 40.95s" },
                fmt_dur(d),
                fmt_dur(rounded)
            ),
        ));
    }
    rounded
}

/// What `vip-agent --check` runs on a file.
fn validate(toml: &str) -> Result<(), crate::config::ConfigError> {
    let path = Path::new("imported.toml");
    crate::config::Config::parse(toml, path).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory removed on drop, even when the test panics.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("vip-import-{}-{n}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Lexes and builds `text` as file `x.conf`.
    fn parse_text(text: &str) -> Result<Vec<Stmt>, ImportError> {
        let dir = Scratch::new("parse");
        let path = dir.write("x.conf", text);
        let mut lexer = Lexer::new("lb1".to_owned());
        lexer.read(&path, None)?;
        build(lexer.toks, &lexer.files)
    }

    fn shape(stmts: &[Stmt]) -> String {
        stmts
            .iter()
            .map(|s| {
                let mut out = format!("{}@{}", s.words.join(" "), s.at.line);
                if let Some(b) = &s.block {
                    let _ = write!(out, "{{{}}}", shape(b));
                }
                out
            })
            .collect::<Vec<_>>()
            .join(";")
    }

    fn syntax_line(e: &ImportError) -> usize {
        match e {
            ImportError::Syntax { line, .. } => *line,
            other => panic!("expected a syntax error, got {other}"),
        }
    }

    fn import_text(text: &str, opts: &Options) -> Result<Imported, ImportError> {
        let dir = Scratch::new("import");
        let path = dir.write("keepalived.conf", text);
        import(&path, opts)
    }

    fn notes_text(i: &Imported) -> String {
        i.notes.iter().map(|n| n.to_string() + "\n").collect()
    }

    #[test]
    fn comments_start_anywhere_outside_double_quotes() {
        assert_eq!(decomment("  priority 100 # the master"), "priority 100");
        assert_eq!(decomment("! a whole comment"), "");
        assert_eq!(decomment("auth_pass se!cret"), "auth_pass se");
        assert_eq!(
            decomment("script \"/bin/x # y\" # z"),
            "script \"/bin/x # y\""
        );
        assert_eq!(decomment("auth_pass a\\#b"), "auth_pass a#b");
    }

    #[test]
    fn words_quotes_and_braces() {
        let w = |s: &str| Tok::Word(s.to_owned());
        assert_eq!(
            split_words("script \"/bin/check -x {a}\" weight -2").unwrap(),
            [w("script"), w("/bin/check -x {a}"), w("weight"), w("-2")]
        );
        assert_eq!(
            split_words("group{VI_1 VI_2}").unwrap(),
            [w("group"), Tok::Open, w("VI_1"), w("VI_2"), Tok::Close]
        );
        assert_eq!(split_words("x \"\"").unwrap(), [w("x"), w("")]);
        assert!(
            split_words("script \"/bin/x")
                .unwrap_err()
                .contains("not closed")
        );
    }

    #[test]
    fn nested_blocks_on_one_or_many_lines() {
        let stmts = parse_text(
            "vrrp_instance VI_1 {\n  virtual_ipaddress {\n    10.0.0.1/24 dev eth0\n  }\n  authentication { auth_type PASS }\n}\n\
             vrrp_sync_group G\n{\n  group { VI_1\n VI_2 }\n}\n",
        )
        .unwrap();
        assert_eq!(
            shape(&stmts),
            "vrrp_instance VI_1@1{virtual_ipaddress@2{10.0.0.1/24 dev eth0@3};authentication@5{auth_type PASS@5}};\
             vrrp_sync_group G@7{group@9{VI_1@9;VI_2@10}}"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = parse_text("global_defs {\n  router_id x\n}\nvrrp_instance VI_1 {\n  priority 1\n")
            .unwrap_err();
        assert_eq!(syntax_line(&e), 4, "{e}");
        assert!(
            e.to_string()
                .contains("x.conf:4: the block of vrrp_instance opened here is never closed"),
            "{e}"
        );
        let e = parse_text("a {\n}\n}\n").unwrap_err();
        assert_eq!(syntax_line(&e), 3, "{e}");
        assert!(e.to_string().contains("closes no block"), "{e}");
        let e = parse_text("a { }\n{\n}\n").unwrap_err();
        assert_eq!(syntax_line(&e), 2, "{e}");
        let e = parse_text("a\nscript \"/bin/x\n").unwrap_err();
        assert_eq!(syntax_line(&e), 2, "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn include_globs_relative_to_the_including_file() {
        let dir = Scratch::new("include");
        let main = dir.write(
            "etc/keepalived.conf",
            "global_defs {\n  router_id lb1\n}\ninclude conf.d/*.conf\ninclude \"other/{b,a}.inc\"\n",
        );
        dir.write(
            "etc/conf.d/20-second.conf",
            "# second\nvrrp_script b {\n}\n",
        );
        dir.write("etc/conf.d/10-first.conf", "vrrp_script a {\n}\n");
        dir.write("etc/conf.d/.hidden.conf", "hidden 1\n");
        dir.write("etc/conf.d/notes.txt", "txt 1\n");
        dir.write("etc/other/a.inc", "from_a 1\n");
        dir.write("etc/other/b.inc", "include ../conf.d/1*.conf\n");
        let mut lexer = Lexer::new("lb1".to_owned());
        lexer.read(&main, None).unwrap();
        let stmts = build(lexer.toks, &lexer.files).unwrap();
        let found: Vec<(String, String, usize)> = stmts
            .iter()
            .map(|s| {
                let file = lexer.files[s.at.file].strip_prefix(&dir.0).unwrap();
                (s.words.join(" "), file.display().to_string(), s.at.line)
            })
            .collect();
        let want = [
            ("global_defs", "etc/keepalived.conf", 1),
            ("vrrp_script a", "etc/conf.d/10-first.conf", 1),
            ("vrrp_script b", "etc/conf.d/20-second.conf", 2),
            ("vrrp_script a", "etc/other/../conf.d/10-first.conf", 1),
            ("from_a 1", "etc/other/a.inc", 1),
        ];
        let want: Vec<(String, String, usize)> = want
            .iter()
            .map(|(w, f, l)| ((*w).to_owned(), (*f).to_owned(), *l))
            .collect();
        assert_eq!(found, want);
    }

    #[test]
    fn errors_in_included_files_name_that_file_and_line() {
        let dir = Scratch::new("include-error");
        let main = dir.write("main.conf", "global_defs {\n}\ninclude part.conf\n");
        dir.write("part.conf", "x 1\nvrrp_instance VI_1 {\n  priority 100\n");
        let e = import(&main, &Options::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("part.conf:2: the block of vrrp_instance opened here is never closed"),
            "{e}"
        );
        // Blocks span files: the included '}' closes the instance.
        dir.write("closing.conf", "priority 100\n}\n");
        let main = dir.write(
            "split.conf",
            "vrrp_instance VI_1 {\n  include closing.conf\n}\n",
        );
        let e = import(&main, &Options::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("split.conf:3: this '}' closes no block"),
            "{e}"
        );
        let e = import(
            &dir.write("loop.conf", "include loop.conf\n"),
            &Options::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("loop.conf:1: ") && e.to_string().contains("includes itself"),
            "{e}"
        );
        let e = import(
            &dir.write("missing.conf", "x 1\ninclude nope.conf\n"),
            &Options::default(),
        )
        .unwrap_err();
        assert!(matches!(e, ImportError::Include { line: 2, .. }), "{e}");
        let e = import(&dir.0.join("absent.conf"), &Options::default()).unwrap_err();
        assert!(matches!(e, ImportError::Read { .. }), "{e}");
    }

    #[test]
    fn conditionals_and_parameters() {
        let stmts = parse_text(
            "@lb1 router_id one\n@lb2 router_id two\n@^lb2 a b\n$P=150\n$NAME=VI_${N}\n$N=7\nvrrp_instance $NAME {\n priority $P\n x ${_HASH}y $UNDEFINED\n}\n",
        )
        .unwrap();
        assert_eq!(
            shape(&stmts),
            "router_id one@1;a b@3;vrrp_instance VI_7@7{priority 150@8;x #y $UNDEFINED@9}"
        );
        let e = parse_text("$A=$A x\nuse $A\n").unwrap_err();
        assert!(e.to_string().contains("keeps expanding"), "{e}");
        let e = parse_text("$A= \\\n x\n").unwrap_err();
        assert_eq!(syntax_line(&e), 1);
    }

    #[test]
    fn globbing() {
        assert!(fnmatch("*.conf", "a.conf"));
        assert!(!fnmatch("*.conf", "a.conf.bak"));
        assert!(fnmatch("1?-*.conf", "10-x.conf"));
        assert!(fnmatch("[0-9]*", "5a"));
        assert!(!fnmatch("[!0-9]*", "5a"));
        assert!(fnmatch("[]x]", "]"));
        assert!(fnmatch("a[", "a["));
        assert_eq!(expand_braces("a{b,c{d,e}}f"), ["abf", "acdf", "acef"]);
        assert_eq!(expand_braces("{,x}y"), ["y", "xy"]);
        assert_eq!(expand_braces("a{b}c"), ["a{b}c"]);
    }

    #[test]
    fn values() {
        assert_eq!(
            parse_secs("2.71828"),
            Some(Duration::from_micros(2_718_280))
        );
        assert_eq!(parse_secs("0.05"), Some(Duration::from_millis(50)));
        assert_eq!(parse_secs("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_secs("-1"), None);
        assert_eq!(parse_secs("."), None);
        assert_eq!(fmt_dur(Duration::from_secs(3)), "3s");
        assert_eq!(fmt_dur(Duration::from_millis(1500)), "1500ms");
        assert_eq!(fmt_dur(Duration::from_micros(2_718_280)), "2718280us");
        assert_eq!(q("a\"b\\c\u{1}"), "\"a\\\"b\\\\c\\u0001\"");
        assert_eq!(node_name("lb1.example.com"), "lb1-example-com");
        assert_eq!(node_name("LB_1"), "LB_1");
        assert_eq!(node_name("..."), "vip");
        assert_eq!(node_name(&"x".repeat(40)).len(), 32);
        let a = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(
            with_backend_variable("/bin/c 10.0.0.1 10.0.0.11 x10.0.0.1 10.0.0.1:80", a),
            "/bin/c ${VIP_BACKEND_ADDRESS} 10.0.0.11 x${VIP_BACKEND_ADDRESS} ${VIP_BACKEND_ADDRESS}:80"
        );
    }

    #[test]
    fn advert_intervals_round_like_keepalived() {
        let at = Loc {
            file: 0,
            line: 1,
            seq: 1,
        };
        let mut notes = Vec::new();
        let ms = Duration::from_millis;
        assert_eq!(advert_for(None, 3, &mut notes), Duration::from_secs(1));
        assert_eq!(advert_for(Some((ms(50), at)), 3, &mut notes), ms(50));
        assert!(notes.is_empty());
        assert_eq!(advert_for(Some((ms(15), at)), 3, &mut notes), ms(20));
        assert_eq!(advert_for(Some((ms(1500), at)), 2, &mut notes), ms(2000));
        assert_eq!(advert_for(Some((ms(300), at)), 2, &mut notes), ms(1000));
        assert_eq!(
            advert_for(Some((Duration::from_secs(50), at)), 3, &mut notes),
            ms(40_950)
        );
        assert_eq!(notes.len(), 4);
    }

    const SMALL: &str = r#"global_defs {
    router_id lb1
    notification_email { ops@example.com }
}
vrrp_script chk {
    script "/bin/pidof haproxy"
    interval 2
    weight -60
    fall 3
}
vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 150
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass secret
    }
    unicast_peer {
        10.99.0.3
    }
    virtual_ipaddress {
        10.99.0.100/24 dev eth0 label eth0:1
    }
    track_script {
        chk
    }
    track_interface {
        eth1
    }
}
"#;

    #[test]
    fn an_instance_maps_to_vrrp_and_check() {
        let i = import_text(SMALL, &Options::default()).unwrap();
        let v: toml::Value = toml::from_str(&i.toml).unwrap();
        assert_eq!(v["node"]["name"].as_str(), Some("lb1"));
        assert_eq!(v["node"]["interface"].as_str(), Some("eth0"));
        let c = &v["check"][0];
        assert_eq!(c["name"].as_str(), Some("chk"));
        assert_eq!(c["command"].as_str(), Some("/bin/pidof haproxy"));
        assert_eq!(
            (c["interval"].as_str(), c["timeout"].as_str()),
            (Some("2s"), Some("2s"))
        );
        assert_eq!(
            (c["rise"].as_integer(), c["fall"].as_integer()),
            (Some(1), Some(3))
        );
        let r = &v["vrrp"][0];
        assert_eq!(r["vrid"].as_integer(), Some(51));
        assert_eq!(r["priority"].as_integer(), Some(150));
        assert_eq!(r["version"].as_integer(), Some(2));
        assert_eq!(r["advert_interval"].as_str(), Some("1s"));
        assert_eq!(r["auth_pass"].as_str(), Some("secret"));
        assert_eq!(r["unicast_peers"][0].as_str(), Some("10.99.0.3"));
        assert_eq!(r["vips"][0].as_str(), Some("10.99.0.100"));
        assert_eq!(r["track"][0]["weight"].as_integer(), Some(-60));
        let notes = notes_text(&i);
        for needle in [
            "keepalived.conf:3: notification_email: ignored",
            "keepalived.conf:12: state: note",
            "keepalived.conf:25: virtual_ipaddress: note: vip adds no address",
            "keepalived.conf:25: virtual_ipaddress: ignored: label eth0:1",
            "keepalived.conf:30: track_interface: not supported",
        ] {
            assert!(notes.contains(needle), "{needle:?} in\n{notes}");
        }
        crate::config::Config::parse(&i.toml, Path::new("out.toml")).unwrap();
    }

    #[test]
    fn without_an_interface_the_import_fails_unless_given_one() {
        let text = "vrrp_instance VI_1 {\n  virtual_router_id 5\n  virtual_ipaddress {\n    10.0.0.5\n  }\n}\n";
        let e = import_text(text, &Options::default()).unwrap_err();
        assert!(e.to_string().contains("--iface"), "{e}");
        let opts = Options {
            interface: Some("ens3".to_owned()),
            name: Some("n1".to_owned()),
            config_id: None,
        };
        let i = import_text(text, &opts).unwrap();
        assert!(
            i.toml.contains("interface = \"ens3\"\nname = \"n1\"\n"),
            "{}",
            i.toml
        );
    }

    #[test]
    fn sync_groups_zero_track_weights_like_keepalived() {
        let text = format!(
            "{SMALL}vrrp_instance VI_2 {{\n interface eth0\n virtual_router_id 52\n virtual_ipaddress {{\n 10.99.0.101\n }}\n}}\n\
             vrrp_sync_group G1 {{\n group {{\n VI_1\n VI_2\n }}\n}}\n"
        );
        let i = import_text(&text, &Options::default()).unwrap();
        let v: toml::Value = toml::from_str(&i.toml).unwrap();
        assert_eq!(v["vrrp"][0]["sync_group"].as_str(), Some("G1"));
        assert_eq!(v["vrrp"][1]["sync_group"].as_str(), Some("G1"));
        assert_eq!(v["vrrp"][0]["track"][0]["weight"].as_integer(), Some(0));
        assert!(
            notes_text(&i).contains("keepalived.conf:28: track_script: approximated"),
            "{}",
            notes_text(&i)
        );
    }

    #[test]
    fn corners_are_converted_or_reported() {
        let text = "global_defs {\n  vrrp_version 3\n}\n\
             vrrp_instance VI_1 {\n  state MASTER\n  interface eth0\n  virtual_router_id 9\n  advert_int 0.015\n\
               authentication {\n    auth_type PASS\n    auth_pass 12345678910\n  }\n\
               virtual_ipaddress {\n    10.0.0.100\n    fd00::1/64\n  }\n\
               notify_master /bin/n.sh\n  notify_backup /bin/n.sh\n  notify_fault /bin/n.sh\n}\n\
             virtual_server fwmark 7 {\n}\n\
             virtual_server 10.0.0.100 80 {\n  lb_kind NAT\n\
               real_server 10.0.0.11 8080 {\n    weight 5000\n  }\n\
               real_server 10.0.0.12 80 {\n    weight 2500\n  }\n}\n";
        let i = import_text(text, &Options::default()).unwrap();
        let v: toml::Value = toml::from_str(&i.toml).unwrap();
        let r = &v["vrrp"][0];
        assert_eq!(
            r["priority"].as_integer(),
            Some(255),
            "state MASTER without priority"
        );
        assert_eq!(r["version"].as_integer(), Some(3));
        assert_eq!(r["advert_interval"].as_str(), Some("20ms"));
        assert!(
            r.get("auth_pass").is_none(),
            "no authentication in version 3"
        );
        assert_eq!(r["vips"].as_array().unwrap().len(), 1);
        assert_eq!(r["notify"].as_str(), Some("/bin/n.sh"));
        let weights: Vec<i64> = v["service"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["weight"].as_integer().unwrap())
            .collect();
        assert_eq!(weights, [1000, 500]);
        let notes = notes_text(&i);
        for needle in [
            "keepalived.conf:5: state: note: with state MASTER and no priority",
            "keepalived.conf:8: advert_int: approximated",
            "keepalived.conf:11: auth_pass: approximated",
            "keepalived.conf:11: authentication: ignored: VRRP version 3",
            "keepalived.conf:15: virtual_ipaddress: not supported: fd00::1 is IPv6",
            "keepalived.conf:17: notify_master: approximated: the same script",
            "keepalived.conf:21: virtual_server: not supported: vip balances an address and a port, not a fwmark",
            "keepalived.conf:24: lb_kind: not supported",
            "keepalived.conf:25: real_server: not supported: direct routing cannot change the port",
            "keepalived.conf:25: real_server: approximated: vip weights go to 1000",
            "keepalived.conf:28: real_server: approximated: vip weights go to 1000",
        ] {
            assert!(notes.contains(needle), "{needle:?} in\n{notes}");
        }
    }

    #[test]
    fn misc_checks_that_differ_by_address_share_a_variable() {
        let text = "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 5\n virtual_ipaddress {\n 10.0.0.100\n }\n}\n\
             virtual_server 10.0.0.100 80 {\n lb_kind DR\n delay_loop 3\n\
             real_server 10.0.0.11 80 {\n MISC_CHECK {\n misc_path \"/bin/chk 10.0.0.11 80\"\n misc_timeout 2\n }\n }\n\
             real_server 10.0.0.12 80 {\n MISC_CHECK {\n misc_path \"/bin/chk 10.0.0.12 80\"\n misc_timeout 2\n }\n }\n}\n";
        let dir = Scratch::new("misc");
        let path = dir.write("k.conf", text);
        let mut lexer = Lexer::new("x".to_owned());
        lexer.read(&path, None).unwrap();
        let stmts = build(lexer.toks, &lexer.files).unwrap();
        let mut conv = Converter::new(lexer.files, lexer.notes);
        conv.walk(&stmts);
        let server = conv.servers.pop().unwrap();
        let probe = conv.service_check(&server).unwrap();
        assert_eq!(
            probe.command.as_deref(),
            Some("/bin/chk ${VIP_BACKEND_ADDRESS} 80")
        );
        assert_eq!(
            (probe.kind, probe.timeout, probe.fall),
            ("exec", Duration::from_secs(2), 1)
        );
        assert!(
            conv.notes
                .iter()
                .any(|n| n.message.contains("differ only by their address"))
        );
    }
}
