//! Human durations in configuration: `90s`, `15m`, `6h`, `30d`, `1h 30m`, `500ms`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer};

/// A duration written the way operators write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `90s`, `15m`, `6h`, `30d`, `1h 30m` and similar.
    ///
    /// # Errors
    /// A message fit for an operator when the text is not a duration.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(
                "empty duration (write e.g. \"90s\", \"15m\", \"6h\" or \"30d\")".to_owned(),
            );
        }
        if trimmed.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "duration {text:?} has no unit (write e.g. \"{trimmed}s\" or \"{trimmed}m\")"
            ));
        }
        humantime::parse_duration(trimmed).map(Self).map_err(|err| {
            format!(
                "invalid duration {text:?}: {err} (write e.g. \"90s\", \"15m\", \"6h\" or \"30d\")"
            )
        })
    }
}

impl fmt::Display for HumanDuration {
    /// In the units a configuration uses (`60d`, `1h 30m`, `500ms`), never months or years: a message about
    /// `expiry = "60d"` says `60d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        if self.0.is_zero() || !self.0.subsec_nanos().is_multiple_of(1_000_000) {
            return write!(f, "{}", humantime::format_duration(self.0));
        }
        let parts = [
            (secs / 86_400, "d"),
            (secs / 3600 % 24, "h"),
            (secs / 60 % 60, "m"),
            (secs % 60, "s"),
            (u64::from(self.0.subsec_millis()), "ms"),
        ];
        let mut separator = "";
        for (value, unit) in parts {
            if value > 0 {
                write!(f, "{separator}{value}{unit}")?;
                separator = " ";
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"90s\", \"15m\", \"6h\" or \"30d\"")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<HumanDuration, E> {
                HumanDuration::parse(value).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operator_units() {
        assert_eq!(
            HumanDuration::parse("90s").unwrap().0,
            Duration::from_secs(90)
        );
        assert_eq!(
            HumanDuration::parse("15m").unwrap().0,
            Duration::from_mins(15)
        );
        assert_eq!(
            HumanDuration::parse("6h").unwrap().0,
            Duration::from_hours(6)
        );
        assert_eq!(
            HumanDuration::parse("30d").unwrap().0,
            Duration::from_hours(720)
        );
        assert_eq!(
            HumanDuration::parse("1h 30m").unwrap().0,
            Duration::from_mins(90)
        );
        assert_eq!(
            HumanDuration::parse("500ms").unwrap().0,
            Duration::from_millis(500)
        );
    }

    #[test]
    fn displays_in_configuration_units() {
        for (text, shown) in [
            ("60d", "60d"),
            ("1h 30m", "1h 30m"),
            ("90s", "1m 30s"),
            ("500ms", "500ms"),
            ("0s", "0s"),
        ] {
            let duration = HumanDuration::parse(text).unwrap();
            assert_eq!(duration.to_string(), shown);
            assert_eq!(HumanDuration::parse(shown).unwrap(), duration);
        }
    }

    #[test]
    fn rejects_nonsense_with_a_hint() {
        for bad in ["", "10", "ten minutes", "5x", "-5s"] {
            let err = HumanDuration::parse(bad).unwrap_err();
            assert!(err.contains("duration"), "{bad}: {err}");
        }
    }
}
