//! Artifact name templates: `{target}`, `{id}` and `{utc:FORMAT}` (strftime) placeholders.

use std::fmt::Write as _;

use chrono::format::{Item, Parsed, StrftimeItems, parse_and_remainder};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Target,
    Id,
    Utc(String),
}

/// A validated artifact name template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTemplate {
    source: String,
    parts: Vec<Part>,
}

impl NameTemplate {
    /// Parses a template. Names must be relative paths without `..`, and must contain `{id}` or `{utc:...}` so
    /// two backups of one target never share a name.
    ///
    /// # Errors
    /// A message naming the offending placeholder or path element.
    pub fn parse(source: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in name template {source:?}"))?;
            let inner = &rest[open + 1..open + close];
            parts.push(match inner {
                "target" => Part::Target,
                "id" => Part::Id,
                _ if inner.starts_with("utc:") => {
                    let format = &inner[4..];
                    if format.is_empty()
                        || StrftimeItems::new(format).any(|item| item == Item::Error)
                    {
                        return Err(format!(
                            "invalid time format {format:?} in name template {source:?}"
                        ));
                    }
                    Part::Utc(format.to_owned())
                }
                _ => {
                    return Err(format!(
                        "unknown placeholder {{{inner}}} in name template {source:?} \
                         (known: {{target}}, {{id}}, {{utc:FORMAT}})"
                    ));
                }
            });
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("unmatched '}}' in name template {source:?}"));
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        if !parts.iter().any(|p| matches!(p, Part::Id | Part::Utc(_))) {
            return Err(format!(
                "name template {source:?} must contain {{id}} or {{utc:...}} so every backup gets its own name"
            ));
        }
        if source.starts_with('/') || source.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err(format!(
                "name template {source:?} must be a relative path without '.' or '..' segments"
            ));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The template as written.
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether a rendered name depends on the backup's id (`{id}`), so it can only be rendered once the backup
    /// is recorded.
    #[must_use]
    pub fn uses_id(&self) -> bool {
        self.parts.iter().any(|part| matches!(part, Part::Id))
    }

    /// Renders the name of one backup.
    #[must_use]
    pub fn render(&self, target: &str, id: i64, at: DateTime<Utc>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Target => out.push_str(target),
                Part::Id => {
                    let _ = write!(out, "{id}");
                }
                Part::Utc(format) => {
                    let _ = write!(out, "{}", at.format(format));
                }
            }
        }
        out
    }

    /// Whether `name` could have been rendered from this template for `target`: literals and the target name
    /// match exactly, `{id}` matches digits, and `{utc:...}` matches any non-empty text (formats vary too much to
    /// check, and a name made unique with `-ID` still matches).
    #[must_use]
    pub fn matches(&self, name: &str, target: &str) -> bool {
        fn matches_from(parts: &[Part], name: &str, target: &str) -> bool {
            let Some((first, rest)) = parts.split_first() else {
                return name.is_empty();
            };
            match first {
                Part::Literal(text) => name
                    .strip_prefix(text.as_str())
                    .is_some_and(|tail| matches_from(rest, tail, target)),
                Part::Target => name
                    .strip_prefix(target)
                    .is_some_and(|tail| matches_from(rest, tail, target)),
                Part::Id => {
                    let digits = name.bytes().take_while(u8::is_ascii_digit).count();
                    (1..=digits).any(|n| matches_from(rest, &name[n..], target))
                }
                Part::Utc(_) => name
                    .char_indices()
                    .skip(1)
                    .map(|(i, _)| i)
                    .chain(std::iter::once(name.len()))
                    .filter(|&i| i > 0)
                    .any(|i| matches_from(rest, &name[i..], target)),
            }
        }
        matches_from(&self.parts, name, target)
    }

    /// The instant a name rendered from this template for `target` encodes through its first `{utc:...}`, read
    /// back with the same format: the time the backup was taken. `None` when the name does not match, the
    /// template has no `{utc:...}`, or what stands there is not a full date. A format without a time of day
    /// reads as the start of that day (UTC), never later than the backup.
    #[must_use]
    pub fn encoded_time(&self, name: &str, target: &str) -> Option<DateTime<Utc>> {
        /// The name matched whole, with the time of its first `{utc:...}` if that is a full date.
        struct Matched(Option<DateTime<Utc>>);
        fn read(parts: &[Part], name: &str, target: &str) -> Option<Matched> {
            let Some((first, rest)) = parts.split_first() else {
                return name.is_empty().then_some(Matched(None));
            };
            match first {
                Part::Literal(text) => read(rest, name.strip_prefix(text.as_str())?, target),
                Part::Target => read(rest, name.strip_prefix(target)?, target),
                Part::Id => {
                    let digits = name.bytes().take_while(u8::is_ascii_digit).count();
                    (1..=digits).find_map(|n| read(rest, &name[n..], target))
                }
                Part::Utc(format) => {
                    let mut parsed = Parsed::new();
                    let tail = parse_and_remainder(&mut parsed, name, StrftimeItems::new(format))
                        .ok()
                        .filter(|tail| tail.len() < name.len())?;
                    let at = parsed
                        .to_naive_datetime_with_offset(0)
                        .ok()
                        .or_else(|| {
                            parsed
                                .to_naive_date()
                                .ok()
                                .and_then(|d| d.and_hms_opt(0, 0, 0))
                        })
                        .map(|naive| naive.and_utc());
                    // Whatever follows must still match; a time is only trusted from a name that matches whole.
                    read(rest, tail, target).map(|later| Matched(at.or(later.0)))
                }
            }
        }
        read(&self.parts, name, target).and_then(|matched| matched.0)
    }

    /// The literal text before the first placeholder after rendering `{target}`: the prefix under which all of
    /// a target's artifacts are listed.
    #[must_use]
    pub fn prefix(&self, target: &str) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Target => out.push_str(target),
                Part::Id | Part::Utc(_) => break,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_names_match_their_template_and_others_do_not() {
        let template =
            NameTemplate::parse("{target}/{utc:%Y%m%dT%H%M%SZ}-{id}.apimbackup").unwrap();
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let name = template.render("svc", 42, at);
        assert!(template.matches(&name, "svc"), "{name}");
        assert!(!template.matches(&name, "other"));
        assert!(!template.matches("svc/20231114T221320Z-x.apimbackup", "svc"));
        assert!(!template.matches("svc/notes.txt", "svc"));
        let plain = NameTemplate::parse("{target}/{utc:%Y%m%d}.apimbackup").unwrap();
        assert!(plain.matches("svc/20231114-7.apimbackup", "svc"));
        assert!(!plain.matches("svc/.apimbackup", "svc"));
    }

    #[test]
    fn renders_all_placeholders() {
        let t = NameTemplate::parse("{target}/{utc:%Y%m%dT%H%M%SZ}-{id}.tar.zst").unwrap();
        let at: DateTime<Utc> = "2026-11-21T10:20:30Z".parse().unwrap();
        assert_eq!(t.render("etc", 42, at), "etc/20261121T102030Z-42.tar.zst");
        assert_eq!(t.prefix("etc"), "etc/");
    }

    #[test]
    fn the_time_a_name_encodes_is_read_back() {
        let t = NameTemplate::parse("{target}/{utc:%Y%m%dT%H%M%SZ}-{id}.zst").unwrap();
        let at: DateTime<Utc> = "2026-11-21T10:20:30Z".parse().unwrap();
        assert_eq!(t.encoded_time(&t.render("etc", 42, at), "etc"), Some(at));
        let old: DateTime<Utc> = "1999-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            t.encoded_time("etc/19990101T000000Z-424242.zst", "etc"),
            Some(old)
        );
        assert_eq!(t.encoded_time("etc/19990101T000000Z-x.zst", "etc"), None);
        assert_eq!(t.encoded_time("other/19990101T000000Z-1.zst", "etc"), None);
        let day = NameTemplate::parse("{target}/{utc:%Y-%m-%d}-{id}.zst").unwrap();
        assert_eq!(
            day.encoded_time("etc/2026-11-21-7.zst", "etc"),
            Some("2026-11-21T00:00:00Z".parse().unwrap())
        );
        let ids = NameTemplate::parse("{target}/{id}.zst").unwrap();
        assert_eq!(ids.encoded_time("etc/7.zst", "etc"), None);
    }

    #[test]
    fn rejects_unsafe_or_ambiguous_templates() {
        for bad in [
            "{target}.tar",
            "{target}/{nope}-{id}",
            "/abs/{id}",
            "../{id}",
            "{target}/{id",
            "{id}}",
            "{utc:%Q}",
        ] {
            assert!(
                NameTemplate::parse(bad).is_err(),
                "{bad} should be rejected"
            );
        }
    }
}
