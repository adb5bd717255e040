//! The string formats CRD schemas validate (apiextensions' supported list, checked as
//! kube-openapi's strfmt registry checks them). Other formats are ignored, as upstream strips them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use regex::Regex;

/// Whether `value` is a valid `format` string; `None` when the format is not one upstream checks
/// (unknown formats, and int32/int64/float/double, which only concern numbers).
pub fn check(format: &str, value: &str) -> Option<bool> {
    let normalized = format.replace('-', "");
    let ok = match normalized.as_str() {
        "password" => true,
        "byte" => re(&BASE64, BASE64_RE).is_match(value),
        "date" => is_date(value),
        "datetime" => is_date_time(value),
        "duration" => is_duration(value),
        "uuid" => re(&UUID, UUID_RE).is_match(value),
        "uuid3" => re(&UUID3, UUID3_RE).is_match(value),
        "uuid4" => re(&UUID4, UUID4_RE).is_match(value),
        "uuid5" => re(&UUID5, UUID5_RE).is_match(value),
        "ipv4" => value.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => value.contains(':') && value.parse::<Ipv6Addr>().is_ok(),
        "cidr" => is_cidr(value),
        "mac" => is_mac(value),
        "hostname" => is_hostname(value),
        "email" => re(&EMAIL, EMAIL_RE).is_match(value),
        "uri" => re(&URI, URI_RE).is_match(value),
        "hexcolor" => re(&HEXCOLOR, HEXCOLOR_RE).is_match(value),
        "rgbcolor" => re(&RGBCOLOR, RGBCOLOR_RE).is_match(value),
        "ssn" => re(&SSN, SSN_RE).is_match(value),
        "isbn" => is_isbn10(value) || is_isbn13(value),
        "isbn10" => is_isbn10(value),
        "isbn13" => is_isbn13(value),
        "creditcard" => is_credit_card(value),
        "bsonobjectid" => value.len() == 24 && value.bytes().all(|b| b.is_ascii_hexdigit()),
        "quantity" => re(&QUANTITY, QUANTITY_RE).is_match(value),
        _ => return None,
    };
    Some(ok)
}

type Lazy = OnceLock<Regex>;

fn re<'a>(cell: &'a Lazy, pattern: &str) -> &'a Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("a valid built-in pattern"))
}

static BASE64: Lazy = OnceLock::new();
const BASE64_RE: &str =
    r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$";
static UUID: Lazy = OnceLock::new();
const UUID_RE: &str = r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$";
static UUID3: Lazy = OnceLock::new();
const UUID3_RE: &str = r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$";
static UUID4: Lazy = OnceLock::new();
const UUID4_RE: &str =
    r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$";
static UUID5: Lazy = OnceLock::new();
const UUID5_RE: &str =
    r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$";
static HOSTNAME: Lazy = OnceLock::new();
const HOSTNAME_RE: &str = r"^([a-zA-Z0-9\p{S}\p{L}]((-?[a-zA-Z0-9\p{S}\p{L}]{0,62})?)|([a-zA-Z0-9\p{S}\p{L}](([a-zA-Z0-9-\p{S}\p{L}]{0,61}[a-zA-Z0-9\p{S}\p{L}])?)(\.)){1,}([a-zA-Z0-9\p{S}\p{L}])(-?[a-zA-Z0-9\p{S}\p{L}]){1,62})$";
static EMAIL: Lazy = OnceLock::new();
const EMAIL_RE: &str = r"^(?:[^<>@\s]+\s*<[^<>@\s]+@[^<>@\s]+>|[^<>@\s]+@[^<>@\s]+)$";
static URI: Lazy = OnceLock::new();
const URI_RE: &str = r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:[^\s]*|/[^\s]*)$";
static HEXCOLOR: Lazy = OnceLock::new();
const HEXCOLOR_RE: &str = r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$";
static RGBCOLOR: Lazy = OnceLock::new();
const RGBCOLOR_RE: &str = r"^rgb\(\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*,\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*,\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*\)$";
static SSN: Lazy = OnceLock::new();
const SSN_RE: &str = r"^\d{3}[- ]?\d{2}[- ]?\d{4}$";
static QUANTITY: Lazy = OnceLock::new();
const QUANTITY_RE: &str = r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?$";
static DURATION_GO: Lazy = OnceLock::new();
const DURATION_GO_RE: &str = r"^[-+]?(?:\d+(?:\.\d*)?(?:ns|us|µs|ms|s|m|h))+$";
static DURATION_WORDS: Lazy = OnceLock::new();
const DURATION_WORDS_RE: &str = r"^(?:\d+)\s*(?:ns|nanoseconds?|us|microseconds?|ms|milliseconds?|s|seconds?|m|minutes?|h|hours?|d|days?|w|weeks?)$";
static TIME: Lazy = OnceLock::new();
const TIME_RE: &str =
    r"^([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.[0-9]+)?)?(z|[+-][0-9]{2}:?[0-9]{2})?$";

/// A full-date (RFC 3339), with the calendar checked as Go's time.Parse does.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = &s[r];
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// A date-time: a full-date, `T`, then a time with optional seconds, fraction and zone.
fn is_date_time(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let Some((date, time)) = lower.split_once('t') else {
        return false;
    };
    if !is_date(date) {
        return false;
    }
    let Some(c) = re(&TIME, TIME_RE).captures(time) else {
        return false;
    };
    let field = |i: usize| c.get(i).map_or("00", |m| m.as_str());
    field(1) <= "23" && field(2) <= "59" && field(3) <= "59"
}

fn is_duration(s: &str) -> bool {
    re(&DURATION_GO, DURATION_GO_RE).is_match(s)
        || re(&DURATION_WORDS, DURATION_WORDS_RE).is_match(s)
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => bits <= 32,
        Ok(IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

/// net.ParseMAC: 6, 8 or 20 octets as `xx:xx:..`, `xx-xx-..` or `xxxx.xxxx.xxxx`.
fn is_mac(s: &str) -> bool {
    let octets = |sep: char, width: usize| -> Option<usize> {
        let parts: Vec<&str> = s.split(sep).collect();
        parts
            .iter()
            .all(|p| p.len() == width && p.bytes().all(|b| b.is_ascii_hexdigit()))
            .then_some(parts.len() * width / 2)
    };
    let n = if s.contains(':') {
        octets(':', 2)
    } else if s.contains('-') {
        octets('-', 2)
    } else if s.contains('.') {
        octets('.', 4)
    } else {
        None
    };
    matches!(n, Some(6 | 8 | 20))
}

fn is_hostname(s: &str) -> bool {
    re(&HOSTNAME, HOSTNAME_RE).is_match(s) && s.len() <= 255 && s.split('.').all(|p| p.len() <= 63)
}

fn isbn_digits(s: &str) -> Vec<char> {
    s.chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .collect()
}

fn is_isbn10(s: &str) -> bool {
    let d = isbn_digits(s);
    if d.len() != 10 {
        return false;
    }
    let mut sum = 0;
    for (i, c) in d.iter().enumerate() {
        let v = match c {
            '0'..='9' => *c as u32 - '0' as u32,
            'X' if i == 9 => 10,
            _ => return false,
        };
        sum += (10 - i as u32) * v;
    }
    sum % 11 == 0
}

fn is_isbn13(s: &str) -> bool {
    let d = isbn_digits(s);
    if d.len() != 13 || !d.iter().all(char::is_ascii_digit) {
        return false;
    }
    let sum: u32 = d
        .iter()
        .enumerate()
        .map(|(i, c)| (*c as u32 - '0' as u32) * if i % 2 == 0 { 1 } else { 3 })
        .sum();
    sum % 10 == 0
}

/// govalidator.IsCreditCard: the digits (separators dropped) pass the Luhn check and look like
/// a card number (13 to 19 digits).
fn is_credit_card(s: &str) -> bool {
    let digits: Vec<u32> = s
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .map(|c| c.to_digit(10))
        .collect::<Option<_>>()
        .unwrap_or_default();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                *d
            }
        })
        .sum();
    sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn formats_accept_and_refuse_as_strfmt() {
        let yes = [
            ("date-time", "2014-12-15T19:30:20.000Z"),
            ("date-time", "2014-12-15T19:30:20+01:00"),
            ("date", "2024-02-29"),
            ("byte", "aGVsbG8="),
            ("uuid", "123e4567-e89b-12d3-a456-426614174000"),
            ("ipv4", "10.0.0.1"),
            ("ipv6", "::1"),
            ("cidr", "10.0.0.0/8"),
            ("mac", "00:1a:2b:3c:4d:5e"),
            ("hostname", "example.com"),
            ("email", "a@example.com"),
            ("uri", "https://example.com/x"),
            ("duration", "1h30m"),
            ("duration", "3 days"),
            ("quantity", "10Gi"),
            ("isbn13", "978-0321751041"),
            ("isbn10", "0321751043"),
            ("hexcolor", "#FFFFFF"),
            ("bsonobjectid", "507f1f77bcf86cd799439011"),
        ];
        for (f, v) in yes {
            assert_eq!(check(f, v), Some(true), "{f} {v}");
        }
        let no = [
            ("date-time", "2014-12-15"),
            ("date-time", "2014-12-15T25:30:20Z"),
            ("date", "2023-02-29"),
            ("byte", "not base64!"),
            ("uuid", "123"),
            ("ipv4", "10.0.0.300"),
            ("ipv6", "10.0.0.1"),
            ("cidr", "10.0.0.0/33"),
            ("mac", "00:1a:2b"),
            ("hostname", "-bad-.com"),
            ("email", "nope"),
            ("duration", "soon"),
            ("quantity", "1.5.5"),
        ];
        for (f, v) in no {
            assert_eq!(check(f, v), Some(false), "{f} {v}");
        }
        assert_eq!(check("int32", "x"), None);
        assert_eq!(check("made-up", "x"), None);
    }
}
