//! Conversions from GLPI's representation: local datetimes, seconds of work,
//! category paths.

use chrono::{DateTime, Duration, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// Minutes billed for `seconds` of work: billed to the minute, any started
/// minute counts (2.75 h = 9900 s = 165 min; 0.08 h = 288 s = 5 min;
/// 1.83 h = 6588 s = 110 min; 61 s = 2 min). `None` for negative input.
pub fn minutes_billed(seconds: i64) -> Option<i64> {
    (seconds >= 0).then(|| seconds / 60 + i64::from(seconds % 60 != 0))
}

/// Parses GLPI's datetime format, "YYYY-MM-DD HH:MM:SS" (seconds optional).
pub fn parse_glpi_datetime(text: &str) -> Result<NaiveDateTime, String> {
    let text = text.trim();
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M"))
        .map_err(|_| format!("{text:?} is not a GLPI datetime (YYYY-MM-DD HH:MM:SS)"))
}

/// The instant of a wall-clock time in `zone`. In the hour repeated when
/// clocks go back, the first occurrence is taken; a time in the hour skipped
/// when clocks go forward (which no clock showed) is read with the offset in
/// force before the change, as a clock not yet changed would have shown it.
pub fn local_to_utc(local: NaiveDateTime, zone: Tz) -> DateTime<Utc> {
    match zone.from_local_datetime(&local).earliest() {
        Some(t) => t.with_timezone(&Utc),
        None => {
            let before = zone.offset_from_utc_datetime(&(local - Duration::hours(3))).fix();
            DateTime::<Utc>::from_naive_utc_and_offset(local - Duration::seconds(i64::from(before.local_minus_utc())), Utc)
        }
    }
}

/// A GLPI datetime, read in the GLPI server's time zone, as UTC.
pub fn glpi_time_to_utc(text: &str, zone: Tz) -> Result<DateTime<Utc>, String> {
    parse_glpi_datetime(text).map(|local| local_to_utc(local, zone))
}

/// The levels of an ITIL category's `completename` ("RUN > MCO > servers").
/// GLPI versions that return sanitized text write ">" as "&#62;" or "&gt;".
pub fn category_levels(completename: &str) -> Vec<String> {
    let decoded = completename
        .replace("&#62;", ">")
        .replace("&gt;", ">")
        .replace("&#60;", "<")
        .replace("&lt;", "<")
        .replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    crate::mapping::path_levels(&decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Paris;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn minutes_are_rounded_up_to_the_whole_minute() {
        assert_eq!(minutes_billed(9900), Some(165), "2.75 h");
        assert_eq!(minutes_billed(288), Some(5), "0.08 h: a 5-minute answer");
        assert_eq!(minutes_billed(300), Some(5));
        assert_eq!(minutes_billed(6588), Some(110), "1.83 h");
        assert_eq!(minutes_billed(720), Some(12), "12 minutes worked is 12 minutes billed");
        assert_eq!(minutes_billed(7200), Some(120), "a two-hour meeting");
        assert_eq!(minutes_billed(61), Some(2));
        assert_eq!(minutes_billed(1), Some(1));
        assert_eq!(minutes_billed(0), Some(0));
        assert_eq!(minutes_billed(-60), None);
    }

    #[test]
    fn local_times_convert_to_utc_across_dst() {
        // Winter: UTC+1; summer: UTC+2.
        assert_eq!(glpi_time_to_utc("2026-01-12 09:00:00", Paris).unwrap(), utc("2026-01-12T08:00:00Z"));
        assert_eq!(glpi_time_to_utc("2026-07-01 10:00:00", Paris).unwrap(), utc("2026-07-01T08:00:00Z"));
        // Spring forward (29 March 2026, 02:00 -> 03:00): 01:59 is CET, 03:00 is CEST,
        // 02:30 never showed on a changed clock: read as CET.
        assert_eq!(glpi_time_to_utc("2026-03-29 01:59:00", Paris).unwrap(), utc("2026-03-29T00:59:00Z"));
        assert_eq!(glpi_time_to_utc("2026-03-29 03:00:00", Paris).unwrap(), utc("2026-03-29T01:00:00Z"));
        assert_eq!(glpi_time_to_utc("2026-03-29 02:30:00", Paris).unwrap(), utc("2026-03-29T01:30:00Z"));
        // Fall back (25 October 2026, 03:00 -> 02:00): 02:30 happens twice, the first (CEST) is taken.
        assert_eq!(glpi_time_to_utc("2026-10-25 02:30:00", Paris).unwrap(), utc("2026-10-25T00:30:00Z"));
        assert_eq!(glpi_time_to_utc("2026-10-25 03:30:00", Paris).unwrap(), utc("2026-10-25T02:30:00Z"));
        // A task across the change: 01:30 CEST to 03:30 CET is 3 hours of real time.
        let start = glpi_time_to_utc("2026-10-25 01:30:00", Paris).unwrap();
        let end = glpi_time_to_utc("2026-10-25 03:30:00", Paris).unwrap();
        assert_eq!(end - start, Duration::hours(3));
        assert_eq!(glpi_time_to_utc("2026-01-12 09:00", chrono_tz::UTC).unwrap(), utc("2026-01-12T09:00:00Z"));
        assert!(glpi_time_to_utc("12/01/2026 09:00", Paris).is_err());
        assert!(glpi_time_to_utc("2026-02-30 09:00:00", Paris).is_err());
    }

    #[test]
    fn category_paths_split_on_the_separator() {
        assert_eq!(category_levels("RUN > MCO > servers"), vec!["RUN", "MCO", "servers"]);
        assert_eq!(category_levels("RUN &#62; MCO &#62; backups"), vec!["RUN", "MCO", "backups"]);
        assert_eq!(category_levels("Hors périmètre"), vec!["Hors périmètre"]);
        assert!(category_levels("  ").is_empty());
    }
}
