//! Configuration problems: every one names its key path, and its line and column where they are known.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path such as `targets[2].policy.rpo`; empty for problems of the whole file.
    pub path: String,
    /// What is wrong, and where it helps, what to write instead.
    pub message: String,
    /// 1-based line and column in the file.
    pub position: Option<(usize, usize)>,
}

impl Problem {
    /// A problem at a key path, position not yet known.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            position: None,
        }
    }
}

/// All problems found in one configuration file.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// The file that was read.
    pub file: PathBuf,
    /// At least one problem.
    pub problems: Vec<Problem>,
}

impl ConfigError {
    pub(crate) fn new(file: &Path, problems: Vec<Problem>) -> Self {
        Self {
            file: file.to_path_buf(),
            problems,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        write!(
            f,
            "{} has {count} problem{}:",
            self.file.display(),
            if count == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            write!(f, "\n  {}", self.file.display())?;
            if let Some((line, column)) = problem.position {
                write!(f, ":{line}:{column}")?;
            }
            if problem.path.is_empty() {
                write!(f, ": {}", problem.message)?;
            } else {
                write!(f, ": {}: {}", problem.path, problem.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Finds the span of the value at a key path (`a.b[2].c`) in a parsed document, falling back to the nearest
/// ancestor that exists (an unknown key's table, a missing key's parent).
pub(crate) fn locate(document: &DeTable<'_>, path: &str) -> Option<Range<usize>> {
    let mut current: Option<&DeValue<'_>> = None;
    let mut span: Option<Range<usize>> = None;
    for segment in split_path(path) {
        let next = match (&segment, current) {
            (Segment::Key(key), None) => document
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == key.as_str())
                .map(|(k, v)| (k.span(), v)),
            (Segment::Key(key), Some(DeValue::Table(table))) => table
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == key.as_str())
                .map(|(k, v)| (k.span(), v)),
            (Segment::Index(index), Some(DeValue::Array(array))) => {
                array.get(*index).map(|v| (v.span(), v))
            }
            _ => None,
        };
        let Some((found_span, value)) = next else {
            break;
        };
        span = Some(found_span);
        current = Some(value.get_ref());
    }
    span
}

enum Segment {
    Key(String),
    Index(usize),
}

fn split_path(path: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    for piece in path.split('.') {
        let mut rest = piece;
        if let Some(open) = rest.find('[') {
            if open > 0 {
                segments.push(Segment::Key(rest[..open].to_owned()));
            }
            rest = &rest[open..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(close) = stripped.find(']') else {
                    break;
                };
                if let Ok(index) = stripped[..close].parse() {
                    segments.push(Segment::Index(index));
                }
                rest = &stripped[close + 1..];
            }
        } else if !rest.is_empty() {
            segments.push(Segment::Key(rest.to_owned()));
        }
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn locates_nested_keys_and_array_items() {
        let text = "[daemon]\nlisten = \"x\"\n\n[[targets]]\nname = \"a\"\n\n[[targets]]\nname = \"b\"\n[targets.policy]\nrpo = \"1h\"\n";
        let doc = DeTable::parse(text).unwrap();
        let span = locate(doc.get_ref(), "targets[1].policy.rpo").unwrap();
        assert_eq!(line_column(text, span.start), (10, 1));
        let span = locate(doc.get_ref(), "daemon.listen").unwrap();
        assert_eq!(line_column(text, span.start), (2, 1));
        let span = locate(doc.get_ref(), "targets[1].nope").unwrap();
        assert_eq!(line_column(text, span.start).0, 7);
    }
}
