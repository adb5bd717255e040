//! Cron schedules as robfig/cron's `ParseStandard` reads them (upstream's parser): five fields
//! (minute, hour, day of month, month, day of week) with `*`, `?`, lists, ranges, steps and
//! names (`jan`, `mon`), the descriptors `@yearly` … `@hourly` and `@every 1h30m`, and an
//! optional `TZ=`/`CRON_TZ=` prefix. When both day fields are restricted, either matches (as
//! cron does); when one is `*`, both must.

use std::time::Duration;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
/// robfig/cron's `starBit`: the field was `*` or `?`.
const STAR: u64 = 1 << 63;

#[derive(Debug, Clone)]
pub enum Schedule {
    Cron {
        minute: u64,
        hour: u64,
        dom: u64,
        month: u64,
        dow: u64,
        tz: TimeZone,
    },
    Every(Duration),
}

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The value of the first name (`jan` is 1, `sun` is 0).
    first: u32,
}

const MINUTE: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
    first: 0,
};
const HOUR: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
    first: 0,
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
    first: 0,
};
const MONTH: Bounds = Bounds {
    min: 1,
    max: 12,
    names: MONTHS,
    first: 1,
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: DAYS,
    first: 0,
};

fn number(text: &str, b: &Bounds) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = b.names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + b.first);
    }
    text.parse::<u32>().map_err(|_| {
        format!("failed to parse int from {text}: strconv.Atoi: parsing {text:?}: invalid syntax")
    })
}

/// One comma-separated term (robfig/cron's `getRange`).
fn range(expr: &str, b: &Bounds) -> Result<u64, String> {
    let parts: Vec<&str> = expr.split('/').collect();
    let low_high: Vec<&str> = parts[0].split('-').collect();
    let (mut start, mut end, mut extra) = (b.min, b.max, 0);
    if low_high[0] == "*" || low_high[0] == "?" {
        extra = STAR;
    } else {
        start = number(low_high[0], b)?;
        end = match low_high.len() {
            1 => start,
            2 => number(low_high[1], b)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
    }
    let step = match parts.len() {
        1 => 1,
        2 => {
            let step = parts[1].parse::<u32>().map_err(|_| {
                format!(
                    "failed to parse int from {}: strconv.Atoi: parsing {:?}: invalid syntax",
                    parts[1], parts[1]
                )
            })?;
            if low_high.len() == 1 {
                end = b.max;
            }
            if step > 1 {
                extra = 0;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < b.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        ));
    }
    if end > b.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    let mut bits = extra;
    let mut v = start;
    while v <= end {
        bits |= 1 << v;
        v += step;
    }
    Ok(bits)
}

fn field(text: &str, b: &Bounds) -> Result<u64, String> {
    text.split(',')
        .try_fold(0, |acc, term| Ok(acc | range(term, b)?))
}

/// Go's `time.ParseDuration` for what `@every` takes: `1h30m`, `90s`, `1.5h`.
fn go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("failed to parse duration @every {text}: time: invalid duration {text:?}");
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * unit;
        rest = &rest[u..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// Parses `text`; the schedule's times are in `tz` unless the text names its own zone.
pub fn parse(text: &str, tz: TimeZone) -> Result<Schedule, String> {
    let mut text = text.trim();
    let mut tz = tz;
    if let Some(rest) = text
        .strip_prefix("TZ=")
        .or_else(|| text.strip_prefix("CRON_TZ="))
    {
        let (name, spec) = rest.split_once(' ').unwrap_or((rest, ""));
        tz = TimeZone::get(name).map_err(|e| format!("provided bad location {name}: {e}"))?;
        text = spec.trim();
    }
    let expanded = match text {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => text,
    };
    if let Some(every) = expanded.strip_prefix("@every ") {
        let d = go_duration(every.trim())?;
        // robfig/cron: at least a second, whole seconds.
        let secs = d.as_secs_f64().round().max(1.0);
        return Ok(Schedule::Every(Duration::from_secs(secs as u64)));
    }
    if expanded.starts_with('@') {
        return Err(format!("unrecognized descriptor: {expanded}"));
    }
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    Ok(Schedule::Cron {
        minute: field(fields[0], &MINUTE)?,
        hour: field(fields[1], &HOUR)?,
        dom: field(fields[2], &DOM)?,
        month: field(fields[3], &MONTH)?,
        dow: field(fields[4], &DOW)?,
        tz,
    })
}

impl Schedule {
    /// The first time strictly after `t` (`None` if there is none within five years, where
    /// robfig/cron gives up too).
    pub fn next(&self, t: Timestamp) -> Option<Timestamp> {
        let (minute, hour, dom, month, dow, tz) = match self {
            Schedule::Every(d) => {
                let d = SignedDuration::try_from(*d).ok()?;
                let whole = t
                    .checked_sub(SignedDuration::from_nanos(t.subsec_nanosecond().into()))
                    .ok()?;
                return whole.checked_add(d).ok();
            }
            Schedule::Cron {
                minute,
                hour,
                dom,
                month,
                dow,
                tz,
            } => (*minute, *hour, *dom, *month, *dow, tz),
        };
        let local = t.to_zoned(tz.clone()).datetime();
        let start = local
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let day_matches = |d: Date| {
            let dom_ok = dom & (1 << d.day()) != 0;
            let dow_ok = dow & (1 << d.weekday().to_sunday_zero_offset()) != 0;
            if dom & STAR != 0 || dow & STAR != 0 {
                dom_ok && dow_ok
            } else {
                dom_ok || dow_ok
            }
        };
        let mut day = start.date();
        let last = day.checked_add(5.years()).ok()?;
        while day <= last {
            if month & (1 << day.month()) != 0 && day_matches(day) {
                for h in 0..24i8 {
                    if hour & (1 << h) == 0 {
                        continue;
                    }
                    for m in 0..60i8 {
                        if minute & (1 << m) == 0 {
                            continue;
                        }
                        let at = DateTime::from_parts(day, jiff::civil::time(h, m, 0, 0));
                        if at < start {
                            continue;
                        }
                        let Ok(zoned) = tz.to_ambiguous_zoned(at).compatible() else {
                            continue;
                        };
                        if zoned.timestamp() > t {
                            return Some(zoned.timestamp());
                        }
                    }
                }
            }
            day = day.tomorrow().ok()?;
        }
        None
    }

    pub fn time_zone(&self) -> TimeZone {
        match self {
            Schedule::Cron { tz, .. } => tz.clone(),
            Schedule::Every(_) => TimeZone::UTC,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next_after(s: &str, tz: &str, t: &str) -> String {
        let tz = TimeZone::get(tz).unwrap();
        let sched = parse(s, tz).unwrap();
        sched.next(t.parse().unwrap()).unwrap().to_string()
    }

    #[test]
    fn fields_names_ranges_steps_and_descriptors() {
        assert_eq!(
            next_after("*/15 * * * *", "UTC", "2026-01-01T00:07:30Z"),
            "2026-01-01T00:15:00Z"
        );
        assert_eq!(
            next_after("0 9 * * mon-fri", "UTC", "2026-01-02T10:00:00Z"),
            "2026-01-05T09:00:00Z"
        );
        assert_eq!(
            next_after("30 2 1,15 jan,Jul *", "UTC", "2026-01-15T02:30:00Z"),
            "2026-07-01T02:30:00Z"
        );
        assert_eq!(
            next_after("@hourly", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-01T01:00:00Z"
        );
        assert_eq!(
            next_after("@weekly", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-04T00:00:00Z"
        );
        assert_eq!(
            next_after("5/20 * * * *", "UTC", "2026-01-01T00:46:00Z"),
            "2026-01-01T01:05:00Z"
        );
        // Both day fields restricted: either matches (the 13th or a Friday).
        assert_eq!(
            next_after("0 0 13 * 5", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-02T00:00:00Z"
        );
        assert_eq!(
            next_after("@every 90s", "UTC", "2026-01-01T00:00:00.5Z"),
            "2026-01-01T00:01:30Z"
        );
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        assert_eq!(
            next_after("0 9 * * *", "Asia/Tokyo", "2026-01-01T00:00:00Z"),
            "2026-01-02T00:00:00Z"
        );
        // New York leaves EDT on 2026-11-01: 09:00 local is 13:00Z before, 14:00Z after.
        assert_eq!(
            next_after("0 9 * * *", "America/New_York", "2026-10-31T14:00:00Z"),
            "2026-11-01T14:00:00Z"
        );
        assert_eq!(
            next_after("TZ=Asia/Tokyo 0 9 * * *", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-02T00:00:00Z"
        );
    }

    #[test]
    fn errors_as_robfig_cron() {
        let err = |s: &str| parse(s, TimeZone::UTC).unwrap_err();
        assert_eq!(err("* * *"), "expected exactly 5 fields, found 3: [* * *]");
        assert_eq!(
            err("61 * * * *"),
            "end of range (61) above maximum (59): 61"
        );
        assert_eq!(err("* * * * 7"), "end of range (7) above maximum (6): 7");
        assert_eq!(err("@often"), "unrecognized descriptor: @often");
        assert_eq!(
            err("5-1 * * * *"),
            "beginning of range (5) beyond end of range (1): 5-1"
        );
        assert!(
            parse("59 23 31 2 *", TimeZone::UTC)
                .unwrap()
                .next(Timestamp::UNIX_EPOCH)
                .is_none()
        );
    }
}
