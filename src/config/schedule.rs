//! Cron schedules in an IANA time zone, with the DST rules of docs/design.md, "Schedules".
//!
//! The cron expression is matched against *wall-clock* time in the schedule's zone. Each matching wall time is
//! then mapped to one instant:
//! - a wall time that exists once maps to that instant;
//! - an ambiguous wall time (autumn fall-back) maps to its first occurrence only, so it fires once;
//! - a wall time inside a spring-forward gap maps to the first instant after the gap, so a daily backup is never
//!   skipped. Several matches inside one gap collapse into that single instant.
//!
//! `next_after` is pure: no clock, no I/O.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// A parsed cron expression together with the zone its wall times are read in.
#[derive(Clone)]
pub struct Schedule {
    expression: String,
    /// Shared: a parsed expression holds a year table of about 5 KB, and every target's policy is cloned into
    /// the scheduler and the API.
    cron: Arc<Cron>,
    tz: Tz,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?} in {})", self.expression, self.tz)
    }
}

impl Schedule {
    /// Parses a 5-field, 6-field (leading seconds) or `@hourly`-style expression.
    ///
    /// # Errors
    /// A message naming what is wrong with the expression.
    pub fn parse(expression: &str, tz: Tz) -> Result<Self, String> {
        let trimmed = expression.trim();
        let fields = trimmed.split_whitespace().count();
        if !trimmed.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "invalid cron expression {expression:?}: expected 5 fields (minute hour day month weekday), \
                 6 with leading seconds, or a macro such as @hourly, found {fields} field(s)"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(trimmed)
            .map_err(|err| {
                if trimmed.starts_with('@') {
                    format!(
                        "invalid cron expression {expression:?}: unknown macro (known: @yearly, @annually, @monthly, \
                         @weekly, @daily, @hourly)"
                    )
                } else {
                    format!("invalid cron expression {expression:?}: {err}")
                }
            })?;
        Ok(Self {
            expression: trimmed.to_owned(),
            cron: Arc::new(cron),
            tz,
        })
    }

    /// Shares `other`'s parsed expression when both were written the same, so thousands of targets on one
    /// schedule hold one parse.
    pub fn share_parse(&mut self, other: &Schedule) {
        if self.expression == other.expression {
            self.cron = other.cron.clone();
        }
    }

    /// The expression as written.
    #[must_use]
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The zone wall times are read in.
    #[must_use]
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first firing instant strictly after `instant`, or `None` when the expression never matches again.
    #[must_use]
    pub fn next_after(&self, instant: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Cron matches whole seconds: search from the whole second, or a slot would inherit the fraction of a
        // second of the instant it was computed from and fire that much late.
        let mut wall = instant
            .with_timezone(&self.tz)
            .naive_local()
            .with_nanosecond(0)?;
        // Matches are searched in naive wall time. Mapping wall times to instants is monotonic, so the first
        // mapped instant after `instant` is the answer. Only inside a fall-back hour are earlier mapped
        // instants skipped; the bound keeps a pathological expression from looping.
        for _ in 0..100_000 {
            let next = self
                .cron
                .find_next_occurrence(&Utc.from_utc_datetime(&wall), false)
                .ok()?
                .naive_utc();
            let fired = self.instant_of(next)?;
            if fired > instant {
                return Some(fired);
            }
            wall = next;
        }
        None
    }

    /// The instant a matching wall time fires at (see the module docs for the DST rules).
    fn instant_of(&self, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.tz.from_local_datetime(&wall) {
            LocalResult::Single(at) => Some(at.with_timezone(&Utc)),
            LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
            LocalResult::None => {
                // Inside a gap: walk forward minute by minute until wall time exists again; the first existing
                // wall minute is the gap's end (gaps start and end on whole minutes in every IANA zone).
                let mut probe = wall.with_second(0)?.with_nanosecond(0)?;
                for _ in 0..(24 * 60) {
                    probe += TimeDelta::minutes(1);
                    if let Some(at) = self.tz.from_local_datetime(&probe).earliest() {
                        return Some(at.with_timezone(&Utc));
                    }
                }
                None
            }
        }
    }
}

impl FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s, Tz::UTC)
    }
}

/// Parses an IANA time zone name such as `Europe/Amsterdam`.
///
/// # Errors
/// A message naming the unknown zone.
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!(
            "unknown time zone {name:?} (use an IANA name such as \"UTC\" or \"Europe/Amsterdam\")"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn ams(expr: &str) -> Schedule {
        Schedule::parse(expr, parse_timezone("Europe/Amsterdam").unwrap()).unwrap()
    }

    #[test]
    fn five_six_fields_and_macros() {
        let s = Schedule::parse("*/5 * * * *", Tz::UTC).unwrap();
        assert_eq!(
            s.next_after(utc("2026-01-01T00:01:00Z")),
            Some(utc("2026-01-01T00:05:00Z"))
        );
        let s = Schedule::parse("*/2 * * * * *", Tz::UTC).unwrap();
        assert_eq!(
            s.next_after(utc("2026-01-01T00:00:01Z")),
            Some(utc("2026-01-01T00:00:02Z"))
        );
        let s = Schedule::parse("@hourly", Tz::UTC).unwrap();
        assert_eq!(
            s.next_after(utc("2026-01-01T00:00:00Z")),
            Some(utc("2026-01-01T01:00:00Z"))
        );
        let s = Schedule::parse("@daily", Tz::UTC).unwrap();
        assert_eq!(
            s.next_after(utc("2026-01-01T10:00:00Z")),
            Some(utc("2026-01-02T00:00:00Z"))
        );
    }

    #[test]
    fn rejects_bad_expressions() {
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "* * * * * * * *",
            "@sometimes",
            "a b c d e",
        ] {
            assert!(
                Schedule::parse(bad, Tz::UTC).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn slots_fall_on_whole_seconds_whatever_the_start() {
        let s = Schedule::parse("*/20 * * * * *", Tz::UTC).unwrap();
        let start = utc("2026-01-01T12:00:20.458Z");
        assert_eq!(s.next_after(start), Some(utc("2026-01-01T12:00:40Z")));
        let s = Schedule::parse("* * * * * *", Tz::UTC).unwrap();
        assert_eq!(
            s.next_after(utc("2026-01-01T12:00:20.999Z")),
            Some(utc("2026-01-01T12:00:21Z"))
        );
    }

    #[test]
    fn next_is_strictly_after() {
        let s = Schedule::parse("0 * * * *", Tz::UTC).unwrap();
        assert_eq!(
            s.next_after(utc("2026-01-01T01:00:00Z")),
            Some(utc("2026-01-01T02:00:00Z"))
        );
    }

    #[test]
    fn spring_forward_gap_fires_at_first_instant_after_the_gap() {
        // 2026-03-29: Amsterdam jumps from 02:00 CET to 03:00 CEST (01:00 UTC). 02:30 does not exist.
        let s = ams("30 2 * * *");
        let day_before = s.next_after(utc("2026-03-27T12:00:00Z")).unwrap();
        assert_eq!(day_before, utc("2026-03-28T01:30:00Z"), "02:30 CET");
        let in_gap_day = s.next_after(day_before).unwrap();
        assert_eq!(
            in_gap_day,
            utc("2026-03-29T01:00:00Z"),
            "fires at 03:00 CEST, not skipped"
        );
        let after = s.next_after(in_gap_day).unwrap();
        assert_eq!(
            after,
            utc("2026-03-30T00:30:00Z"),
            "back to 02:30 CEST the next day"
        );
    }

    #[test]
    fn several_matches_in_a_gap_fire_once() {
        let s = ams("*/15 2-3 * * *");
        let mut fires = Vec::new();
        let mut at = utc("2026-03-29T00:00:00Z");
        while let Some(next) = s.next_after(at) {
            if next > utc("2026-03-29T02:00:00Z") {
                break;
            }
            fires.push(next);
            at = next;
        }
        assert_eq!(
            fires,
            vec![
                utc("2026-03-29T01:00:00Z"),
                utc("2026-03-29T01:15:00Z"),
                utc("2026-03-29T01:30:00Z"),
                utc("2026-03-29T01:45:00Z"),
            ],
            "02:00-02:45 collapse into 03:00 CEST, then 03:15.. follow"
        );
    }

    #[test]
    fn fall_back_ambiguous_time_fires_once() {
        // 2026-10-25: Amsterdam goes from 03:00 CEST back to 02:00 CET (01:00 UTC). 02:30 happens twice.
        let s = ams("30 2 * * *");
        let first = s.next_after(utc("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(
            first,
            utc("2026-10-25T00:30:00Z"),
            "first occurrence, 02:30 CEST"
        );
        let next = s.next_after(first).unwrap();
        assert_eq!(next, utc("2026-10-26T01:30:00Z"), "not again at 02:30 CET");
    }

    #[test]
    fn hourly_over_fall_back_does_not_repeat_wall_hours() {
        let s = ams("0 * * * *");
        let mut fires = Vec::new();
        let mut at = utc("2026-10-24T23:30:00Z");
        for _ in 0..4 {
            at = s.next_after(at).unwrap();
            fires.push(at);
        }
        // 02:00 CEST, (02:00 CET skipped: the same wall time again), 03:00 CET, 04:00 CET, 05:00 CET
        assert_eq!(
            fires,
            vec![
                utc("2026-10-25T00:00:00Z"),
                utc("2026-10-25T02:00:00Z"),
                utc("2026-10-25T03:00:00Z"),
                utc("2026-10-25T04:00:00Z"),
            ]
        );
    }

    #[test]
    fn unknown_zone_is_rejected() {
        assert!(parse_timezone("Mars/Olympus").is_err());
        assert!(parse_timezone("Europe/Amsterdam").is_ok());
    }
}
