//! Debezium's numbers for PostgreSQL's dates, times and intervals (`time.precision.mode=adaptive`,
//! `interval.handling.mode=numeric`), and its ISO-8601 text for `timestamptz` and `timetz`. Pure
//! Rust, no PostgreSQL.
//!
//! Must stay true: exact over PostgreSQL's whole range where Debezium is; None or Err (the value
//! then refused, see the parent module) where Debezium would write a wrong number or stop; no
//! arithmetic here wraps.

use super::json::push_digits;

/// Microseconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
use crate::backend::input::PG_EPOCH_UNIX_US as PG_EPOCH_US;
const PG_EPOCH_DAYS: i32 = 10_957;
/// A day in microseconds.
pub const DAY_US: i64 = 86_400_000_000;
const HOUR_US: i64 = 3_600_000_000;
/// Debezium's month for intervals: 30.4375 days.
const MONTH_US: i64 = 2_629_800_000_000;
/// What Debezium writes for `timestamp` 'infinity' and '-infinity', in microseconds (PgJDBC's
/// `DATE_POSITIVE_INFINITY` and `DATE_NEGATIVE_INFINITY`).
const TIMESTAMP_INFINITY_US: [i64; 2] = [9_223_372_036_825_200_000, -9_223_372_036_832_400_000];
/// What Debezium writes for `date` 'infinity' and '-infinity' (the days of -5877611-06-21 and
/// -5877611-06-22, its stand-ins for them).
const DATE_INFINITY_DAYS: [i64; 2] = [-2_147_472_692, -2_147_472_691];

/// Why a `timestamp` of precision 4–6 is refused (see [`timestamp_micros`]); the others finish
/// the same sentence for intervals.
pub const TIMESTAMP_TOO_LATE: &str = "is after 294247-01-10 04:00:54.775807, the last timestamp whose \
    microseconds since 1970 fit in 64 bits (Debezium's MicroTimestamp; Debezium would write a wrong \
    number)";
const INTERVAL_TOO_MANY_HOURS: &str = "has 2^31 hours or more, which Debezium cannot read (PgJDBC's \
    PGInterval holds hours in 32 bits; Debezium's connector would stop)";
const INTERVAL_INFINITE: &str = "has no Debezium encoding (Debezium would write 0)";

/// Debezium's `timestamp` of precision 4–6: microseconds since 1970 (infinities as its
/// sentinels). None after 294247-01-10 04:00:54.775807, where they no longer fit in an i64:
/// there Debezium's `Conversions.toEpochMicros` (`TimeUnit.SECONDS.toMicros(s)`, which saturates
/// at Long.MAX_VALUE, plus the second's microseconds, which then wrap) writes garbage.
pub fn timestamp_micros(pg_us: i64) -> Option<i64> {
    match pg_us {
        i64::MAX => Some(TIMESTAMP_INFINITY_US[0]),
        i64::MIN => Some(TIMESTAMP_INFINITY_US[1]),
        us => us.checked_add(PG_EPOCH_US),
    }
}

/// Debezium's `timestamp` of precision 0–3: milliseconds since 1970, rounded down (Java's
/// `Instant.toEpochMilli`), exact over PostgreSQL's whole range (infinities: its sentinels in
/// milliseconds). None only for a value no PostgreSQL timestamp has.
pub fn timestamp_millis(pg_us: i64) -> Option<i64> {
    match pg_us {
        i64::MAX => Some(TIMESTAMP_INFINITY_US[0].div_euclid(1000)),
        i64::MIN => Some(TIMESTAMP_INFINITY_US[1].div_euclid(1000)),
        // PG_EPOCH_US is whole milliseconds, so flooring before adding it floors the sum.
        us => us.div_euclid(1000).checked_add(PG_EPOCH_US / 1000),
    }
}

/// Debezium's `date`: days since 1970 (infinities as its stand-ins); exact over PostgreSQL's
/// whole range (4713 BC to 5874897 AD), as Debezium's `(int) LocalDate.toEpochDay()`.
pub fn date_days(pg_days: i32) -> i64 {
    match pg_days {
        i32::MAX => DATE_INFINITY_DAYS[0],
        i32::MIN => DATE_INFINITY_DAYS[1],
        // Widened: the sum of two i32 cannot overflow an i64.
        days => i64::from(days) + i64::from(PG_EPOCH_DAYS),
    }
}

/// Debezium's `interval` (MicroDuration, `interval.handling.mode=numeric`): microseconds, a
/// month 30.4375 days. Exact where that fits in an i64, else i64::MAX / i64::MIN, as the
/// `(long)` cast that ends Debezium's `durationMicros` saturates. Err where Debezium cannot
/// read the value: more than 2^31 - 1 hours in its time part (PostgreSQL writes the time as
/// `HHHH:MM:SS`, and PgJDBC's PGInterval parses the hours with `Integer.parseInt`), or
/// PostgreSQL 17's infinite intervals (which PGInterval reads as 0).
pub fn interval_micros(month: i32, day: i32, time: i64) -> Result<i64, &'static str> {
    let infinite = (month, day, time) == (i32::MAX, i32::MAX, i64::MAX)
        || (month, day, time) == (i32::MIN, i32::MIN, i64::MIN);
    if infinite && cfg!(any(feature = "pg17", feature = "pg18")) {
        return Err(INTERVAL_INFINITE);
    }
    // PostgreSQL's interval2itm: hours truncated toward zero, written without their sign.
    if (time / HOUR_US).unsigned_abs() > i32::MAX as u64 {
        return Err(INTERVAL_TOO_MANY_HOURS);
    }
    // In i128 (at most about 5.7e21 in magnitude), then saturated into an i64.
    let exact =
        i128::from(month) * i128::from(MONTH_US) + i128::from(day) * i128::from(DAY_US) + i128::from(time);
    Ok(i64::try_from(exact).unwrap_or(if exact > 0 { i64::MAX } else { i64::MIN }))
}

/// `HH:MM:SS[.ffffff]` of microseconds since midnight: with `digits` (1 to 6) exactly that many
/// fraction digits, zero-padded (Java's `appendFraction(NANO_OF_SECOND, n, n, true)`), with 0 as
/// many as the value needs, trailing zeros trimmed (`DateTimeFormatter.ISO_*_TIME`).
pub fn clock(out: &mut String, us: i64, digits: u8) {
    let secs = us / 1_000_000;
    push_digits(out, secs / 3600, 2);
    out.push(':');
    push_digits(out, secs / 60 % 60, 2);
    out.push(':');
    push_digits(out, secs % 60, 2);
    let mut frac = us % 1_000_000;
    if digits > 0 {
        out.push('.');
        let cut = 6 - u32::from(digits.min(6));
        push_digits(out, frac / 10_i64.pow(cut), usize::from(digits.min(6)));
    } else if frac != 0 {
        let mut digits = 6;
        while frac % 10 == 0 {
            frac /= 10;
            digits -= 1;
        }
        out.push('.');
        push_digits(out, frac, digits);
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]` in UTC of a PostgreSQL timestamptz (microseconds since
/// 2000-01-01 UTC; `digits`: see `clock`); years past 9999 as `+YYYYY`, before year 0 as `-YYYY`,
/// as Java's ISO formats write them. Days and time of day are taken apart before the epochs are
/// shifted, so the whole range of PostgreSQL (4713 BC to 294276 AD) is written exactly.
pub fn iso_utc(out: &mut String, pg_us: i64, digits: u8) {
    // A day count of at most about 1.1e8: widening keeps the sum far from overflowing.
    let (y, m, d) = civil_from_days(pg_us.div_euclid(DAY_US) + i64::from(PG_EPOCH_DAYS));
    if y > 9999 {
        out.push('+');
    } else if y < 0 {
        out.push('-');
    }
    push_digits(out, y.abs(), 4);
    out.push('-');
    push_digits(out, m.into(), 2);
    out.push('-');
    push_digits(out, d.into(), 2);
    out.push('T');
    clock(out, pg_us.rem_euclid(DAY_US), digits);
}

/// Gregorian (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn utc_timestamps_and_clocks() {
        // From microseconds since 1970, for readable expectations.
        let iso = |us: i64, digits| {
            let mut s = String::new();
            iso_utc(&mut s, us - PG_EPOCH_US, digits);
            s
        };
        assert_eq!(iso(1_612_317_906_789_000, 0), "2021-02-03T02:05:06.789");
        assert_eq!(iso(1_612_317_906_789_000, 6), "2021-02-03T02:05:06.789000");
        assert_eq!(iso(1_612_317_906_000_000, 6), "2021-02-03T02:05:06.000000");
        assert_eq!(iso(1_612_317_906_789_000, 3), "2021-02-03T02:05:06.789");
        assert_eq!(iso(1_612_317_906_700_000, 2), "2021-02-03T02:05:06.70");
        assert_eq!(iso(-1, 0), "1969-12-31T23:59:59.999999");
        // Debezium's own expectations (AbstractRecordsProducerTest): years past 9999 and BC.
        assert_eq!(iso(601_060_287_090_000_000, 6), "+21016-11-04T06:51:30.000000");
        assert_eq!(iso(-210_863_520_000_000_001, 6), "-4713-12-31T23:59:59.999999");
        let mut s = String::new();
        clock(&mut s, 7_506_000_000, 0);
        assert_eq!(s, "02:05:06");
    }

    /// PostgreSQL's last and first timestamps, in microseconds since 2000: 294276-12-31
    /// 23:59:59.999999 (END_TIMESTAMP - 1) and 4714-11-24 00:00:00 BC (MIN_TIMESTAMP).
    const PG_LAST_US: i64 = 9_223_371_331_200_000_000 - 1;
    const PG_FIRST_US: i64 = -211_813_488_000_000_000;

    #[test]
    fn intervals_saturate_as_debeziums_long_cast() {
        // The example: 178000000 years used to wrap to -9004142481413242880; Debezium's
        // (long) of a double beyond 2^63 is Long.MAX_VALUE.
        assert_eq!(interval_micros(178_000_000 * 12, 0, 0), Ok(i64::MAX));
        assert_eq!(interval_micros(-178_000_000 * 12, 0, 0), Ok(i64::MIN));
        assert_eq!(interval_micros(i32::MAX, 0, 0), Ok(i64::MAX));
        assert_eq!(interval_micros(i32::MIN, i32::MIN, 0), Ok(i64::MIN));
        assert_eq!(interval_micros(0, i32::MAX, 0), Ok(i64::MAX));
        assert_eq!(interval_micros(0, 106_751_991, 0), Ok(106_751_991 * DAY_US)); // the most days that fit
                                                                                  // Debezium's reference records (types.sql).
        assert_eq!(interval_micros(14, 3, 14_706_789_012), Ok(37_091_106_789_012));
        assert_eq!(interval_micros(0, -1, -1), Ok(-86_400_000_001));
        // Exact up to i64::MAX itself, saturated one past it.
        let months = 567_508; // 1.49e18 µs, leaving a time part under 2^31 hours
        let time = i64::MAX - months as i64 * MONTH_US;
        assert_eq!(interval_micros(months, 0, time - 1), Ok(i64::MAX - 1));
        assert_eq!(interval_micros(months, 0, time), Ok(i64::MAX));
        assert_eq!(interval_micros(months, 1, time), Ok(i64::MAX));
        assert_eq!(interval_micros(-months, 0, -time - 1), Ok(i64::MIN));
        assert_eq!(interval_micros(-months, -1, -time), Ok(i64::MIN));
        // Hours: PgJDBC reads at most 2147483647 of them, whatever the sign.
        let most = i64::from(i32::MAX) * HOUR_US + HOUR_US - 1; // 2147483647:59:59.999999
        assert_eq!(interval_micros(0, 0, most), Ok(most));
        assert_eq!(interval_micros(0, 0, -most), Ok(-most));
        assert_eq!(interval_micros(i32::MAX, i32::MAX, most), Ok(i64::MAX));
        for time in [most + 1, -most - 1, i64::MAX, i64::MIN] {
            assert_eq!(interval_micros(0, 0, time), Err(INTERVAL_TOO_MANY_HOURS), "{time}");
        }
        // 'infinity' (PostgreSQL 17): refused either way.
        assert!(interval_micros(i32::MAX, i32::MAX, i64::MAX).is_err());
        assert!(interval_micros(i32::MIN, i32::MIN, i64::MIN).is_err());
    }

    #[test]
    fn timestamps_are_exact_or_refused() {
        assert_eq!(timestamp_micros(0), Some(PG_EPOCH_US));
        assert_eq!(timestamp_micros(PG_FIRST_US), Some(-210_866_803_200_000_000));
        // Microseconds since 1970 fit in an i64 up to 294247-01-10 04:00:54.775807; after it
        // Debezium writes garbage (its example: Long.MAX_VALUE + 999999, wrapped), so: refused.
        assert_eq!(timestamp_micros(i64::MAX - 1 - PG_EPOCH_US), Some(i64::MAX - 1));
        assert_eq!(timestamp_micros(i64::MAX - PG_EPOCH_US), Some(i64::MAX));
        assert_eq!(timestamp_micros(i64::MAX - PG_EPOCH_US + 1), None);
        assert_eq!(timestamp_micros(PG_LAST_US), None);
        // Infinities as today: Debezium's sentinels.
        assert_eq!(timestamp_micros(i64::MAX), Some(9_223_372_036_825_200_000));
        assert_eq!(timestamp_micros(i64::MIN), Some(-9_223_372_036_832_400_000));
        // Milliseconds (timestamp(0) to (3)) hold the whole range, rounded down as
        // Instant.toEpochMilli.
        assert_eq!(timestamp_millis(PG_LAST_US), Some(9_224_318_015_999_999));
        assert_eq!(timestamp_millis(PG_FIRST_US), Some(-210_866_803_200_000));
        assert_eq!(timestamp_millis(-PG_EPOCH_US - 1), Some(-1));
        assert_eq!(timestamp_millis(i64::MAX), Some(9_223_372_036_825_200));
        assert_eq!(timestamp_millis(i64::MIN), Some(-9_223_372_036_832_400));
        // timestamptz: the example used to come out as year -290278.
        let iso = |pg_us, digits| {
            let mut s = String::new();
            iso_utc(&mut s, pg_us, digits);
            s
        };
        assert_eq!(iso(PG_LAST_US, 6), "+294276-12-31T23:59:59.999999");
        assert_eq!(iso(PG_LAST_US, 0), "+294276-12-31T23:59:59.999999");
        assert_eq!(iso(PG_LAST_US - 999_999, 3), "+294276-12-31T23:59:59.000");
        assert_eq!(iso(PG_FIRST_US, 6), "-4713-11-24T00:00:00.000000");
        assert_eq!(iso(PG_FIRST_US, 0), "-4713-11-24T00:00:00");
        assert_eq!(iso(0, 0), "2000-01-01T00:00:00");
        assert_eq!(iso(-1, 6), "1999-12-31T23:59:59.999999");
    }

    #[test]
    fn dates_are_exact_at_their_limits() {
        // 5874897-12-31 and 4714-11-24 BC, PostgreSQL's last and first dates.
        assert_eq!(date_days(2_145_031_948), 2_145_042_905);
        assert_eq!(date_days(-2_451_545), -2_440_588);
        assert_eq!(date_days(0), 10_957);
        assert_eq!(date_days(i32::MAX), DATE_INFINITY_DAYS[0]);
        assert_eq!(date_days(i32::MIN), DATE_INFINITY_DAYS[1]);
    }

    #[test]
    fn years_before_one_are_written_as_java_does() {
        let mut s = String::new();
        // The day before year 1 (iso_utc takes microseconds since 2000).
        iso_utc(&mut s, -62_135_596_800_000_000 - 86_400_000_000 - PG_EPOCH_US, 0);
        assert_eq!(s, "0000-12-31T00:00:00");
    }
}
