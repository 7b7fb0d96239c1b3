//! Locating toml's own errors: the dotted key of a span.

use std::ops::Range;

/// The dotted key (`service[0].backends[2].address`) of the innermost key or
/// value whose span covers `at`, read from `toml_edit`'s view of the document:
/// toml's errors carry a span but not the key path. `None` when the text is
/// not valid TOML or nothing but the root covers `at`.
pub(super) fn key_at(text: &str, at: &Range<usize>) -> Option<String> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    in_table(doc.as_table(), at, "")
}

pub(super) fn covers(span: Option<Range<usize>>, at: &Range<usize>) -> bool {
    span.is_some_and(|s| s.start <= at.start && at.end <= s.end)
}

pub(super) fn in_table(table: &toml_edit::Table, at: &Range<usize>, path: &str) -> Option<String> {
    table
        .iter()
        .find_map(|(name, _)| {
            let (key, item) = table.get_key_value(name)?;
            let path = join(path, name);
            if covers(key.span(), at) {
                return Some(path);
            }
            in_item(item, at, &path)
        })
        // Implicit tables (`[a.b]` makes `a`) have no span and never match.
        .or_else(|| (!path.is_empty() && covers(table.span(), at)).then(|| path.to_owned()))
}

pub(super) fn in_item(item: &toml_edit::Item, at: &Range<usize>, path: &str) -> Option<String> {
    match item {
        toml_edit::Item::None => None,
        toml_edit::Item::Value(v) => in_value(v, at, path),
        toml_edit::Item::Table(t) => in_table(t, at, path),
        // No span of its own: the error lies in one of its tables.
        toml_edit::Item::ArrayOfTables(tables) => tables
            .iter()
            .enumerate()
            .find_map(|(i, t)| in_table(t, at, &format!("{path}[{i}]"))),
    }
}

pub(super) fn in_value(value: &toml_edit::Value, at: &Range<usize>, path: &str) -> Option<String> {
    let inner = match value {
        toml_edit::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| in_value(v, at, &format!("{path}[{i}]"))),
        toml_edit::Value::InlineTable(table) => table.iter().find_map(|(name, _)| {
            let (key, item) = table.get_key_value(name)?;
            let path = join(path, name);
            if covers(key.span(), at) {
                return Some(path);
            }
            in_item(item, at, &path)
        }),
        _ => None,
    };
    inner.or_else(|| covers(value.span(), at).then(|| path.to_owned()))
}

pub(super) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// The name in a serde message such as "missing field `vip`".
pub(super) fn quoted_name<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    rest.split_once('`').map(|(name, _)| name)
}

/// The span of the value at dotted `key` (`vrrp[0].notify`,
/// `service[2].check.command`), the inverse of [`key_at`].
pub(super) fn value_span(text: &str, key: &str) -> Option<Range<usize>> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut item: &toml_edit::Item = doc.as_item();
    for part in key.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, i)) => (n, Some(i.strip_suffix(']')?.parse::<usize>().ok()?)),
            None => (part, None),
        };
        item = item.get(name)?;
        if let Some(i) = index {
            item = item.get(i)?;
        }
    }
    item.span()
}
