//! Statements and blocks: words grouped into keyword lines and their
//! `{ }` blocks.

use super::{ImportError, Loc, PathBuf, Tok};

/// One keyword line: its words, and the `{ }` block after it, if any.
#[derive(Debug)]
pub(in crate::import) struct Stmt {
    pub(in crate::import) words: Vec<String>,
    pub(in crate::import) at: Loc,
    pub(in crate::import) block: Option<Vec<Stmt>>,
}

impl Stmt {
    pub(in crate::import) fn key(&self) -> &str {
        &self.words[0]
    }

    pub(in crate::import) fn args(&self) -> &[String] {
        &self.words[1..]
    }

    pub(in crate::import) fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i + 1).map(String::as_str)
    }

    pub(in crate::import) fn block(&self) -> &[Stmt] {
        self.block.as_deref().unwrap_or(&[])
    }
}

/// Groups tokens into statements: the words of one line up to a brace make
/// a statement; a `{` (on that line or a later one) opens the block of the
/// statement before it, and its `}` closes it.
pub(in crate::import) fn build(
    toks: Vec<(Tok, Loc)>,
    files: &[PathBuf],
) -> Result<Vec<Stmt>, ImportError> {
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
