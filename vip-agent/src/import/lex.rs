//! Lexing: files and lines to words and braces, the way keepalived 2.2
//! reads them (comments, quotes, `@id` lines, `$NAME=value`, includes).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use super::{
    ImportError,
    glob::{MAX_EXPANSIONS, glob, is_pattern},
};

/// Where a word came from: the file (an index into the file table), its
/// 1-based line, and the line's position in the whole text (includes
/// spliced in) so notes can be put in reading order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::import) struct Loc {
    pub(in crate::import) file: usize,
    pub(in crate::import) line: usize,
    pub(in crate::import) seq: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::import) enum Tok {
    Word(String),
    Open,
    Close,
}

/// A note before the file table turns it into a [`Note`].
#[derive(Debug, Clone)]
pub(in crate::import) struct RawNote {
    pub(in crate::import) at: Option<Loc>,
    pub(in crate::import) keyword: String,
    pub(in crate::import) message: String,
}

/// keepalived's include keywords; the variants only differ in how loudly
/// keepalived complains about missing files.
pub(in crate::import) const INCLUDES: [&str; 6] = [
    "include", "includer", "includem", "includew", "includeb", "includea",
];
/// Deeper than this is a loop the path comparison did not catch.
pub(in crate::import) const MAX_INCLUDE_DEPTH: usize = 32;
/// Files one import reads at most, the main one and its includes.
pub(in crate::import) const MAX_FILES: usize = 1024;
/// The largest file read: far more than any keepalived configuration.
pub(in crate::import) const MAX_FILE_BYTES: u64 = 16 << 20;
/// Parameter substitutions on one line before it counts as recursive.
pub(in crate::import) const MAX_SUBSTITUTIONS: usize = 1000;

/// The bytes of `path`, refused past [`MAX_FILE_BYTES`].
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "it is larger than {} MiB, more than any keepalived configuration",
            MAX_FILE_BYTES >> 20
        )));
    }
    Ok(bytes)
}

pub(in crate::import) struct Lexer {
    /// Every file read, as its path was written (joined to the including
    /// file's directory); [`Loc::file`] indexes it.
    pub(in crate::import) files: Vec<PathBuf>,
    pub(in crate::import) toks: Vec<(Tok, Loc)>,
    pub(in crate::import) notes: Vec<RawNote>,
    /// `$NAME=value` definitions seen so far.
    pub(in crate::import) defs: HashMap<String, String>,
    pub(in crate::import) config_id: String,
    /// Canonical paths of the files being read, outermost first.
    pub(in crate::import) reading: Vec<PathBuf>,
    pub(in crate::import) seq: usize,
    pub(in crate::import) said_conditional: bool,
}

impl Lexer {
    pub(in crate::import) fn new(config_id: String) -> Self {
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

    pub(in crate::import) fn syntax(&self, at: Loc, message: impl Into<String>) -> ImportError {
        ImportError::Syntax {
            file: self.files[at.file].clone(),
            line: at.line,
            message: message.into(),
        }
    }

    /// Reads `path`; `from` is the include line naming it.
    pub(in crate::import) fn read(
        &mut self,
        path: &Path,
        from: Option<Loc>,
    ) -> Result<(), ImportError> {
        if let Some(at) = from
            && self.files.len() >= MAX_FILES
        {
            return Err(self.syntax(
                at,
                format!(
                    "the includes name more than {MAX_FILES} files; include fewer (a pattern may match too much)"
                ),
            ));
        }
        let bytes = read_bounded(path).map_err(|source| match from {
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

    pub(in crate::import) fn line(&mut self, raw: &str, at: Loc) -> Result<(), ImportError> {
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
    pub(in crate::import) fn include(&mut self, pattern: &str, at: Loc) -> Result<(), ImportError> {
        // `Path::join` keeps an absolute pattern as it is; a file given
        // without a directory has an empty parent, the current one.
        let base = self.files[at.file].parent().unwrap_or(Path::new(""));
        let full = base.join(pattern);
        if !is_pattern(pattern) {
            return self.read(&full, Some(at));
        }
        let Some(found) = glob(&full.to_string_lossy()) else {
            return Err(self.syntax(
                at,
                format!(
                    "the include pattern's braces expand to more than {MAX_EXPANSIONS} patterns; \
                     name fewer files, or use * and ?"
                ),
            ));
        };
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
    pub(in crate::import) fn conditional(&mut self, text: &str, at: Loc) -> Option<String> {
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
    pub(in crate::import) fn define(&mut self, text: &str) -> bool {
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
    pub(in crate::import) fn substitute(&self, text: &str, at: Loc) -> Result<String, ImportError> {
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

    pub(in crate::import) fn definition(&self, name: &str, at: Loc) -> Option<String> {
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
pub(in crate::import) fn decomment(raw: &str) -> String {
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
pub(in crate::import) fn include_pattern(text: &str) -> Option<String> {
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
pub(in crate::import) fn split_words(text: &str) -> Result<Vec<Tok>, String> {
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
