//! Times and durations as Azure Backup writes them (it is a .NET service): dates with seven fractional digits
//! and a `Z` (`2023-04-18T19:02:22.8235853Z`), unset dates as `0001-01-01T00:00:00` without a `Z`, and
//! durations as .NET's `XmlConvert` writes a `TimeSpan` (`PT3.2525219S`, `PT1H11M13.0108008S`, `PT0S`).

use std::fmt::Write as _;

use chrono::{DateTime, Duration, Timelike as _, Utc};

/// The value .NET writes for `DateTime.MinValue`: an unset time.
pub(crate) const UNSET: &str = "0001-01-01T00:00:00";

/// `2023-04-18T19:02:22.8235853Z`: .NET's round-trip format (ticks of 100 ns), in UTC.
pub(crate) fn dotnet(time: DateTime<Utc>) -> String {
    let ticks = time.nanosecond() % 1_000_000_000 / 100;
    format!("{}.{ticks:07}Z", time.format("%Y-%m-%dT%H:%M:%S"))
}

/// A date, or [`UNSET`] when there is none.
pub(crate) fn dotnet_or_unset(time: Option<DateTime<Utc>>) -> String {
    time.map_or_else(|| UNSET.to_owned(), dotnet)
}

/// An ISO 8601 duration as .NET writes a `TimeSpan`: `P{d}DT{h}H{m}M{s.fffffff}S`, leaving out zero parts and
/// trailing fractional zeros; `PT0S` for zero. Negative durations count as zero.
pub(crate) fn iso_duration(duration: Duration) -> String {
    const TICKS_PER_SECOND: i64 = 10_000_000;
    if duration <= Duration::zero() {
        return "PT0S".to_owned();
    }
    let ticks = duration.num_microseconds().unwrap_or(i64::MAX / 10) * 10
        + i64::from(duration.subsec_nanos() % 1000 / 100);
    if ticks == 0 {
        return "PT0S".to_owned();
    }
    let total_seconds = ticks / TICKS_PER_SECOND;
    let fraction = ticks % TICKS_PER_SECOND;
    let (days, hours) = (total_seconds / 86_400, total_seconds / 3600 % 24);
    let (minutes, seconds) = (total_seconds / 60 % 60, total_seconds % 60);
    let mut text = String::from("P");
    if days > 0 {
        let _ = write!(text, "{days}D");
    }
    if hours > 0 || minutes > 0 || seconds > 0 || fraction > 0 {
        text.push('T');
    }
    if hours > 0 {
        let _ = write!(text, "{hours}H");
    }
    if minutes > 0 {
        let _ = write!(text, "{minutes}M");
    }
    if fraction > 0 {
        let digits = format!("{fraction:07}");
        let _ = write!(text, "{seconds}.{}S", digits.trim_end_matches('0'));
    } else if seconds > 0 {
        let _ = write!(text, "{seconds}S");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_have_seven_digits_and_unset_ones_no_zone() {
        let time = DateTime::parse_from_rfc3339("2023-04-18T19:02:22.82358536Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(dotnet(time), "2023-04-18T19:02:22.8235853Z");
        let whole = DateTime::parse_from_rfc3339("2023-04-18T19:02:22Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(dotnet(whole), "2023-04-18T19:02:22.0000000Z");
        assert_eq!(dotnet_or_unset(None), "0001-01-01T00:00:00");
    }

    #[test]
    fn durations_read_like_the_recording() {
        let ticks = |t: i64| Duration::microseconds(t / 10) + Duration::nanoseconds(t % 10 * 100);
        assert_eq!(iso_duration(ticks(32_525_219)), "PT3.2525219S");
        assert_eq!(
            iso_duration(Duration::seconds(4273) + ticks(108_008)),
            "PT1H11M13.0108008S"
        );
        assert_eq!(
            iso_duration(Duration::seconds(455) + ticks(9_709_775)),
            "PT7M35.9709775S"
        );
        assert_eq!(iso_duration(Duration::zero()), "PT0S");
        assert_eq!(iso_duration(Duration::seconds(-3)), "PT0S");
        assert_eq!(iso_duration(Duration::hours(1)), "PT1H");
        assert_eq!(iso_duration(Duration::milliseconds(1500)), "PT1.5S");
        assert_eq!(iso_duration(Duration::hours(26)), "P1DT2H");
        assert_eq!(iso_duration(Duration::days(2)), "P2D");
    }
}
