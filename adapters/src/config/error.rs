//! Errors of the config file. Each one points at `file:line:column` and says what was expected
//! and what was found, and all of them are collected before anything is reported, so that one
//! run shows the operator every mistake instead of one per attempt.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// What kind of mistake an error is, for callers (and tests) that need more than the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file could not be read.
    Io,
    /// The file is not valid TOML (parsing stops at these).
    Syntax,
    /// A key this table does not have, most often a typo.
    UnknownKey,
    /// A required key is absent.
    MissingKey,
    /// A value of the wrong TOML type, such as a number where a duration string belongs.
    WrongType,
    /// A value of the right type that is not acceptable: a bad duration, size or signal, an
    /// unknown name, a number out of range, an unusable probe target.
    InvalidValue,
    /// Keys that exclude each other appear together, such as two probe kinds in one probe.
    Conflict,
    /// `depends_on` names a process that is not in the file.
    UnknownDependency,
    /// Processes that wait for each other in a circle, so none could ever start.
    DependencyCycle,
    /// The program to run does not exist or is not executable.
    ProgramNotFound,
    /// A problem only the process specification's own validation found (a safety net: the
    /// config checks are meant to catch everything first).
    Spec,
}

/// One mistake in a config file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message} (expected {expected}, found {found})", file.display())]
pub struct ConfigError {
    /// The config file, as given to [`load`](super::load) or [`parse`](super::parse).
    pub file: PathBuf,
    /// 1-based line of the offending key or value.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What kind of mistake it is.
    pub kind: ErrorKind,
    /// What is wrong, starting with the dotted key path (`processes.web.restart: ...`).
    pub message: String,
    /// What would have been accepted.
    pub expected: String,
    /// What the file says instead.
    pub found: String,
}

/// Every mistake found in a config file, ordered by position. Displayed one per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The errors, in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true for an error returned by `load` or `parse`; here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Collects errors against one source text, turning byte spans into lines and columns.
pub(crate) struct Report<'t> {
    file: PathBuf,
    text: &'t str,
    errors: Vec<ConfigError>,
}

impl<'t> Report<'t> {
    pub(crate) fn new(file: &Path, text: &'t str) -> Self {
        Report {
            file: file.to_path_buf(),
            text,
            errors: Vec::new(),
        }
    }

    /// Records one error at the start of `span`.
    pub(crate) fn error(
        &mut self,
        span: &Range<usize>,
        kind: ErrorKind,
        message: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) {
        let (line, column) = position(self.text, span.start);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            column,
            kind,
            message: one_line(message.into()),
            expected: one_line(expected.into()),
            found: one_line(found.into()),
        });
    }

    /// How many errors so far, to tell whether a part of the file added any.
    pub(crate) fn count(&self) -> usize {
        self.errors.len()
    }

    /// The source text, for quoting what a syntax error points at.
    pub(crate) fn text(&self) -> &'t str {
        self.text
    }

    /// The errors in file order, or `Ok` when there are none.
    pub(crate) fn finish(&mut self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            return Ok(());
        }
        let mut errors = std::mem::take(&mut self.errors);
        // Stable: errors at one position keep the order they were found in.
        errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(errors))
    }
}

/// Escapes control characters (a quoted key may hold a newline), so that each error stays on
/// its one line of the display.
fn one_line(s: String) -> String {
    if !s.chars().any(char::is_control) {
        return s;
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// 1-based line and column (in characters) of a byte offset; offsets past the end or inside a
/// character are clamped, so any span a parser reports is safe.
pub(crate) fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::position;

    #[test]
    fn positions_are_one_based_and_clamped() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(position(text, 0), (1, 1));
        assert_eq!(position(text, 4), (1, 5));
        assert_eq!(position(text, 6), (2, 1));
        // After the two-byte `é`: column counts characters.
        assert_eq!(position(text, 9), (2, 3));
        // Inside `é`: clamped back to its start.
        assert_eq!(position(text, 8), (2, 2));
        assert_eq!(position(text, 1000), (3, 1));
        assert_eq!(position("", 5), (1, 1));
    }
}
