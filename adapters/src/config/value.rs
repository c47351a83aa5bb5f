//! Reading typed values out of the spanned TOML tree. Every reader records its own error (with
//! the value's position, what it expected and what it found) and returns `None`, so callers
//! fall back to a default and keep going: one pass finds every mistake.

use std::ops::Range;
use std::time::Duration;

use processcontrol_core::units::{parse_duration, parse_size, UnitError};
use toml::de::{DeString, DeTable, DeValue};
use toml::Spanned;

use super::error::{ErrorKind, Report};

/// A key of the tree, with its position.
pub(crate) type Key<'i> = Spanned<DeString<'i>>;
/// A value of the tree, with its position.
pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// What a duration looks like, for "expected" texts.
pub(crate) const DURATION: &str =
    "a duration string such as \"100ms\", \"10s\", \"5m\" or \"1h30m\"";
/// What a size looks like, for "expected" texts.
pub(crate) const SIZE: &str = "a size such as \"512MiB\", \"2GB\" or a number of bytes";

/// A table being read, with the dotted path that names it in messages.
#[derive(Clone)]
pub(crate) struct Table<'a, 'i> {
    /// `processes.web.backoff`.
    pub(crate) path: &'a str,
    /// Where "missing key" errors point: the table's own key.
    pub(crate) span: Range<usize>,
    /// The entries.
    pub(crate) table: &'a DeTable<'i>,
}

impl<'a, 'i> Table<'a, 'i> {
    /// The value of `key`, if present.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value<'i>> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key and value of `key`, if present (the key's span is where conflicts point).
    pub(crate) fn entry(&self, key: &str) -> Option<(&'a Key<'i>, &'a Value<'i>)> {
        self.table.iter().find(|(k, _)| k.get_ref().as_ref() == key)
    }

    /// The entries in file order (the tree itself is sorted by key).
    pub(crate) fn entries(&self) -> Vec<(&'a Key<'i>, &'a Value<'i>)> {
        let mut entries: Vec<_> = self.table.iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        entries
    }

    /// The dotted path of a key of this table.
    pub(crate) fn path_of(&self, key: &str) -> String {
        join(self.path, key)
    }

    /// Reports every key that is not in `allowed`, suggesting the closest allowed one.
    pub(crate) fn check_keys(&self, r: &mut Report<'_>, allowed: &[&str]) {
        for (key, _) in self.entries() {
            let name = key.get_ref().as_ref();
            if allowed.contains(&name) {
                continue;
            }
            let message = match suggest(name, allowed) {
                Some(near) => format!(
                    "{}: unknown key `{name}`; did you mean `{near}`?",
                    self.path_or_root()
                ),
                None => format!("{}: unknown key `{name}`", self.path_or_root()),
            };
            r.error(
                &key.span(),
                ErrorKind::UnknownKey,
                message,
                format!("one of {}", list(allowed)),
                format!("`{name}`"),
            );
        }
    }

    /// Reports that a required key is absent.
    pub(crate) fn missing(&self, r: &mut Report<'_>, key: &str, expected: &str) {
        r.error(
            &self.span,
            ErrorKind::MissingKey,
            format!("{}: missing key `{key}`", self.path_or_root()),
            expected,
            format!("no `{key}`"),
        );
    }

    fn path_or_root(&self) -> &str {
        if self.path.is_empty() {
            "(top level)"
        } else {
            self.path
        }
    }
}

/// `path.key`, quoting a key that is not a bare TOML key.
pub(crate) fn join(path: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

/// `a, b or c` with backquotes, for "expected one of" texts.
pub(crate) fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// The allowed name closest to a misspelt one, if it is close enough to be a typo.
/// The closest of `allowed` to `name`, when it is close enough to be a typo.
pub fn suggest<'s>(name: &str, allowed: &[&'s str]) -> Option<&'s str> {
    allowed
        .iter()
        .map(|a| (edit_distance(name, a), *a))
        .filter(|(d, a)| *d <= (a.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// How a value is described in "found ...": its type, and the value itself when short.
pub(crate) fn describe(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("string {}", quote(s)),
        DeValue::Integer(i) => format!("integer {i}"),
        DeValue::Float(f) => format!("float {f}"),
        DeValue::Boolean(b) => format!("boolean {b}"),
        DeValue::Datetime(d) => format!("datetime {d}"),
        DeValue::Array(_) => "an array".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

/// A string as TOML would write it, shortened so a long value does not swamp the message.
pub(crate) fn quote(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let short: String = s.chars().take(MAX).collect();
        format!("{short:?}...")
    }
}

/// Records that `v` has the wrong type.
pub(crate) fn wrong_type(r: &mut Report<'_>, path: &str, v: &Value<'_>, expected: &str) {
    r.error(
        &v.span(),
        ErrorKind::WrongType,
        format!("{path}: wrong type"),
        expected,
        describe(v.get_ref()),
    );
}

/// Records that `v` has the right type but an unacceptable value.
pub(crate) fn invalid(
    r: &mut Report<'_>,
    path: &str,
    v: &Value<'_>,
    why: &str,
    expected: impl Into<String>,
) {
    r.error(
        &v.span(),
        ErrorKind::InvalidValue,
        format!("{path}: {why}"),
        expected,
        found(v.get_ref()),
    );
}

/// The value as the user wrote it, for "found ..." of an invalid value.
pub(crate) fn found(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => quote(s),
        DeValue::Integer(i) => i.to_string(),
        DeValue::Float(f) => f.to_string(),
        other => describe(other),
    }
}

/// A table; `expected` shows an example of one, as a bare "a table" helps nobody.
pub(crate) fn table<'a, 'i>(
    r: &mut Report<'_>,
    path: &str,
    v: &'a Value<'i>,
    expected: &str,
) -> Option<&'a DeTable<'i>> {
    match v.get_ref() {
        DeValue::Table(t) => Some(t),
        _ => {
            wrong_type(r, path, v, expected);
            None
        }
    }
}

/// Any string, empty included.
pub(crate) fn string<'a>(r: &mut Report<'_>, path: &str, v: &'a Value<'_>) -> Option<&'a str> {
    match v.get_ref() {
        DeValue::String(s) => Some(s.as_ref()),
        _ => {
            wrong_type(r, path, v, "a string");
            None
        }
    }
}

/// A string that must not be empty.
pub(crate) fn nonempty_string<'a>(
    r: &mut Report<'_>,
    path: &str,
    v: &'a Value<'_>,
    expected: &str,
) -> Option<&'a str> {
    match v.get_ref() {
        DeValue::String(s) if s.is_empty() => {
            invalid(r, path, v, "must not be empty", expected);
            None
        }
        DeValue::String(s) => Some(s.as_ref()),
        _ => {
            wrong_type(r, path, v, expected);
            None
        }
    }
}

/// `true` or `false`; TOML has no truthy strings, and neither do we.
pub(crate) fn boolean(r: &mut Report<'_>, path: &str, v: &Value<'_>) -> Option<bool> {
    match v.get_ref() {
        DeValue::Boolean(b) => Some(*b),
        _ => {
            wrong_type(r, path, v, "true or false");
            None
        }
    }
}

/// An integer from `min` to `max`.
pub(crate) fn integer(
    r: &mut Report<'_>,
    path: &str,
    v: &Value<'_>,
    min: i128,
    max: i128,
) -> Option<i128> {
    let expected = if max >= i128::from(u32::MAX) {
        format!("an integer >= {min}")
    } else {
        format!("an integer from {min} to {max}")
    };
    let DeValue::Integer(i) = v.get_ref() else {
        wrong_type(r, path, v, &expected);
        return None;
    };
    let why = match i128::from_str_radix(i.as_str(), i.radix()) {
        Ok(n) if (min..=max).contains(&n) => return Some(n),
        Ok(n) if n < min => format!("must be at least {min}"),
        Ok(_) => format!("must be at most {max}"),
        Err(_) => "out of range".to_string(),
    };
    invalid(r, path, v, &why, expected);
    None
}

/// A `u32` of at least `min`.
pub(crate) fn u32_at_least(r: &mut Report<'_>, path: &str, v: &Value<'_>, min: u32) -> Option<u32> {
    integer(r, path, v, i128::from(min), i128::from(u32::MAX)).and_then(|n| u32::try_from(n).ok())
}

/// A `u64` of at least `min`.
pub(crate) fn u64_at_least(r: &mut Report<'_>, path: &str, v: &Value<'_>, min: u64) -> Option<u64> {
    integer(r, path, v, i128::from(min), i128::from(u64::MAX)).and_then(|n| u64::try_from(n).ok())
}

/// A finite number, written as a float or an integer.
pub(crate) fn number(r: &mut Report<'_>, path: &str, v: &Value<'_>) -> Option<f64> {
    let n = match v.get_ref() {
        DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .ok()
            .map(|n| n as f64),
        _ => {
            wrong_type(r, path, v, "a number");
            return None;
        }
    };
    match n {
        Some(n) if n.is_finite() => Some(n),
        _ => {
            invalid(r, path, v, "not a finite number", "a finite number");
            None
        }
    }
}

/// Why a unit string was rejected, without the "expected" part the error carries anyway.
fn unit_problem(e: &UnitError) -> String {
    match e {
        UnitError::Empty { .. } => "empty value".to_string(),
        UnitError::MissingNumber { rest, .. } => format!("expected a number before `{rest}`"),
        UnitError::UnknownUnit { unit, .. } => format!("unknown unit `{unit}`"),
        UnitError::Overflow { .. } => "too large".to_string(),
        other => other.to_string(),
    }
}

/// A duration in human units (`"100ms"`, `"1h30m"`), read exactly as the CLI reads it.
pub(crate) fn duration(r: &mut Report<'_>, path: &str, v: &Value<'_>) -> Option<Duration> {
    match v.get_ref() {
        DeValue::String(s) => match parse_duration(s) {
            Ok(d) => Some(d),
            Err(e) => {
                invalid(
                    r,
                    path,
                    v,
                    &format!("invalid duration: {}", unit_problem(&e)),
                    DURATION,
                );
                None
            }
        },
        _ => {
            wrong_type(r, path, v, DURATION);
            None
        }
    }
}

/// A duration that must be longer than zero.
pub(crate) fn positive_duration(r: &mut Report<'_>, path: &str, v: &Value<'_>) -> Option<Duration> {
    let d = duration(r, path, v)?;
    if d.is_zero() {
        invalid(
            r,
            path,
            v,
            "must be longer than 0",
            "a duration longer than 0",
        );
        return None;
    }
    Some(d)
}

/// A size in bytes: a string with a unit (`"512MiB"`) or a plain integer.
pub(crate) fn size(r: &mut Report<'_>, path: &str, v: &Value<'_>) -> Option<u64> {
    match v.get_ref() {
        DeValue::String(s) => match parse_size(s) {
            Ok(n) => Some(n),
            Err(e) => {
                invalid(
                    r,
                    path,
                    v,
                    &format!("invalid size: {}", unit_problem(&e)),
                    SIZE,
                );
                None
            }
        },
        DeValue::Integer(_) => u64_at_least(r, path, v, 0),
        _ => {
            wrong_type(r, path, v, SIZE);
            None
        }
    }
}

/// A size of at least one byte.
pub(crate) fn positive_size(r: &mut Report<'_>, path: &str, v: &Value<'_>) -> Option<u64> {
    let n = size(r, path, v)?;
    if n == 0 {
        invalid(
            r,
            path,
            v,
            "must be more than 0 bytes",
            "a size of at least 1 byte",
        );
        return None;
    }
    Some(n)
}

/// An array of strings; each bad element is reported at its own position.
pub(crate) fn strings<'a>(
    r: &mut Report<'_>,
    path: &str,
    v: &'a Value<'_>,
) -> Option<Vec<(&'a str, Range<usize>)>> {
    let DeValue::Array(items) = v.get_ref() else {
        wrong_type(r, path, v, "an array of strings");
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match item.get_ref() {
            DeValue::String(s) => out.push((s.as_ref(), item.span())),
            _ => {
                wrong_type(r, &format!("{path}[{i}]"), item, "a string");
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// A command: an array `[program, args...]`, or a string run with `/bin/sh -c`. Returns the
/// argv and, for an array, the span of the program (where a missing-program error points).
pub(crate) fn command(
    r: &mut Report<'_>,
    path: &str,
    v: &Value<'_>,
) -> Option<(Vec<String>, Option<Range<usize>>)> {
    const EXPECTED: &str = "a non-empty array of strings such as [\"./server\", \"--port\", \"8080\"], or a shell command string";
    match v.get_ref() {
        DeValue::String(s) if s.trim().is_empty() => {
            invalid(r, path, v, "the command is empty", EXPECTED);
            None
        }
        DeValue::String(s) if s.contains('\0') => {
            invalid(r, path, v, "the command contains a NUL character", EXPECTED);
            None
        }
        DeValue::String(s) => Some((
            vec!["/bin/sh".to_string(), "-c".to_string(), s.to_string()],
            None,
        )),
        DeValue::Array(_) => {
            let items = strings(r, path, v)?;
            let Some((program, span)) = items.first() else {
                invalid(r, path, v, "the command is empty", EXPECTED);
                return None;
            };
            if program.is_empty() {
                r.error(
                    span,
                    ErrorKind::InvalidValue,
                    format!("{path}[0]: the program name is empty"),
                    "a program name or path",
                    "\"\"",
                );
                return None;
            }
            if let Some((i, (_, span))) = items
                .iter()
                .enumerate()
                .find(|(_, (s, _))| s.contains('\0'))
            {
                r.error(
                    span,
                    ErrorKind::InvalidValue,
                    format!("{path}[{i}]: contains a NUL character"),
                    "a string without NUL (a program cannot receive one)",
                    "a string with NUL",
                );
                return None;
            }
            let span = span.clone();
            Some((
                items.into_iter().map(|(s, _)| s.to_string()).collect(),
                Some(span),
            ))
        }
        _ => {
            wrong_type(r, path, v, EXPECTED);
            None
        }
    }
}

/// One of a fixed set of names.
pub(crate) fn choice<T: Copy>(
    r: &mut Report<'_>,
    path: &str,
    v: &Value<'_>,
    what: &str,
    choices: &[(&str, T)],
) -> Option<T> {
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    let expected = format!("one of {}", list(&names));
    let s = match v.get_ref() {
        DeValue::String(s) => s,
        _ => {
            wrong_type(r, path, v, &expected);
            return None;
        }
    };
    match choices.iter().find(|(n, _)| *n == s.as_ref()) {
        Some((_, t)) => Some(*t),
        None => {
            let why = match suggest(s, &names) {
                Some(near) => format!("unknown {what}; did you mean `{near}`?"),
                None => format!("unknown {what}"),
            };
            invalid(r, path, v, &why, expected);
            None
        }
    }
}
