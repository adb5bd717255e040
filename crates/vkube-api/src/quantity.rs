//! Resource quantities (`500m`, `252Mi`, `1e3`) as upstream's `resource.Quantity`: parsed exactly
//! to nano units (rounding up below a nano, capped at 2^63-1 units, as upstream), summed and
//! compared, and printed in upstream's canonical form, which keeps the format of the first
//! non-zero operand (`0 + 252Mi` is `252Mi`, `500m + 1` is `1500m`). Quota status depends on it.

use std::cmp::Ordering;
use std::fmt;

/// How a quantity prints, from the suffix it was written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `m`, `k`, `M`, …, or no suffix.
    DecimalSI,
    /// `Ki`, `Mi`, `Gi`, …
    BinarySI,
    /// `e3`, `E-2`.
    DecimalExponent,
}

/// An exact quantity: a number of nano units and how it prints.
#[derive(Clone, Copy, Debug)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Format,
    #[error("unable to parse quantity's suffix")]
    Suffix,
}

const NANO: i128 = 1_000_000_000;
/// Upstream caps every parsed quantity at the largest int64.
const MAX_NANOS: i128 = i64::MAX as i128 * NANO;

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl Default for Quantity {
    fn default() -> Self {
        Quantity::zero()
    }
}

impl Quantity {
    /// Zero, which prints as `0` (upstream's `Quantity{Format: DecimalSI}`).
    pub fn zero() -> Quantity {
        Quantity {
            nanos: 0,
            format: Format::DecimalSI,
        }
    }

    /// A whole number of units, decimal (object counts).
    pub fn from_units(units: i64) -> Quantity {
        Quantity {
            nanos: units as i128 * NANO,
            format: Format::DecimalSI,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// Rounded up to a whole unit (upstream's `RoundUp(0)`; storage is counted in bytes).
    pub fn round_up_units(self) -> Quantity {
        let rem = self.nanos.rem_euclid(NANO);
        let nanos = if rem == 0 {
            self.nanos
        } else {
            self.nanos - rem + NANO
        };
        Quantity { nanos, ..self }
    }

    /// Parses upstream's quantity syntax: a signed decimal number and an optional suffix.
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(end);
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(QuantityError::Format);
        }
        let (exp10, pow1024, format) = parse_suffix(suffix)?;
        let nanos = exact_nanos(int, frac, exp10, pow1024).min(MAX_NANOS);
        Ok(Quantity {
            nanos: if negative { -nanos } else { nanos },
            format,
        })
    }
}

/// The suffix's decimal exponent, power of 1024 and format.
fn parse_suffix(suffix: &str) -> Result<(i32, u32, Format), QuantityError> {
    let decimal = |e| Ok((e, 0, Format::DecimalSI));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => Ok((0, 1, Format::BinarySI)),
        "Mi" => Ok((0, 2, Format::BinarySI)),
        "Gi" => Ok((0, 3, Format::BinarySI)),
        "Ti" => Ok((0, 4, Format::BinarySI)),
        "Pi" => Ok((0, 5, Format::BinarySI)),
        "Ei" => Ok((0, 6, Format::BinarySI)),
        s if s.starts_with(['e', 'E']) => {
            let digits = &s[1..];
            let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return Err(QuantityError::Suffix);
            }
            let e: i32 =
                digits
                    .parse()
                    .unwrap_or(if digits.starts_with('-') { -1000 } else { 1000 });
            Ok((e.clamp(-1000, 1000), 0, Format::DecimalExponent))
        }
        _ => Err(QuantityError::Suffix),
    }
}

/// `int.frac × 10^exp10 × 1024^pow1024` in nanos, rounded up (away from zero) below a nano and
/// saturated above the cap.
fn exact_nanos(int: &str, frac: &str, exp10: i32, pow1024: u32) -> i128 {
    let frac = frac.trim_end_matches('0');
    let digits: String = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return 0;
    }
    // value = digits × 10^scale × 1024^pow1024, in nanos.
    let mut scale = exp10 + 9 - frac.len() as i32;
    // Keep at most 36 significant digits; dropped ones only round up.
    let (kept, dropped) = digits.split_at(digits.len().min(36));
    let mut mantissa: i128 = kept.parse().unwrap_or(0);
    let mut inexact = dropped.bytes().any(|b| b != b'0');
    scale += dropped.len() as i32;
    for _ in 0..pow1024 {
        mantissa = match mantissa.checked_mul(1024) {
            Some(m) => m,
            None => return MAX_NANOS,
        };
    }
    if scale >= 0 {
        for _ in 0..scale {
            mantissa = match mantissa.checked_mul(10) {
                Some(m) if m <= MAX_NANOS => m,
                _ => return MAX_NANOS,
            };
        }
    } else {
        for _ in 0..(-scale) {
            inexact |= mantissa % 10 != 0;
            mantissa /= 10;
            if mantissa == 0 {
                break;
            }
        }
    }
    if inexact { mantissa + 1 } else { mantissa }
}

impl std::ops::Add for Quantity {
    type Output = Quantity;

    /// A zero sum-so-far takes the other's format, as upstream's `Add`.
    fn add(self, other: Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_add(other.nanos),
            format: if self.nanos == 0 {
                other.format
            } else {
                self.format
            },
        }
    }
}

impl std::ops::Sub for Quantity {
    type Output = Quantity;

    /// Keeps this quantity's format (unless it is zero).
    fn sub(self, other: Quantity) -> Quantity {
        self + Quantity {
            nanos: -other.nanos,
            format: other.format,
        }
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl fmt::Display for Quantity {
    /// Upstream's canonical form: decimal mantissas with the largest SI suffix that keeps them
    /// whole, binary ones (`Ki`…`Ei`) only for whole values of at least 1024.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let magnitude = self.nanos.unsigned_abs();
        let binary = self.format == Format::BinarySI
            && magnitude >= 1024 * NANO as u128
            && magnitude % NANO as u128 == 0;
        if binary {
            let (mut units, mut power) = (magnitude / NANO as u128, 0);
            while units % 1024 == 0 && power < 6 {
                units /= 1024;
                power += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][power];
            return write!(f, "{sign}{units}{suffix}");
        }
        let (mut mantissa, mut exponent) = (magnitude, -9i32);
        while mantissa % 10 == 0 {
            mantissa /= 10;
            exponent += 1;
        }
        let down = exponent.rem_euclid(3);
        mantissa *= 10u128.pow(down as u32);
        exponent -= down;
        let suffix = match (self.format, exponent) {
            (Format::DecimalExponent, 0) => String::new(),
            (Format::DecimalExponent, e) => format!("e{e}"),
            (_, -9) => "n".into(),
            (_, -6) => "u".into(),
            (_, -3) => "m".into(),
            (_, 0) => String::new(),
            (_, 3) => "k".into(),
            (_, 6) => "M".into(),
            (_, 9) => "G".into(),
            (_, 12) => "T".into(),
            (_, 15) => "P".into(),
            (_, 18) => "E".into(),
            (_, e) => format!("e{e}"),
        };
        write!(f, "{sign}{mantissa}{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn canonical_forms_match_upstream() {
        for (input, canonical) in [
            ("500m", "500m"),
            ("0.5", "500m"),
            ("1000m", "1"),
            ("1500m", "1500m"),
            ("252Mi", "252Mi"),
            ("1024Mi", "1Gi"),
            ("1536Mi", "1536Mi"),
            ("1024", "1024"),
            ("1Ki", "1Ki"),
            ("0.5Ki", "512"),
            ("1.5Gi", "1536Mi"),
            ("10", "10"),
            ("1000", "1k"),
            ("12e3", "12e3"),
            ("1e3", "1e3"),
            ("1E6", "1e6"),
            ("2000k", "2M"),
            ("30Gi", "30Gi"),
            ("0", "0"),
            ("0Mi", "0"),
            ("-1.5", "-1500m"),
            ("+3", "3"),
            ("0.1n", "1n"),
            ("1.0000000001", "1000000001n"),
            (".5", "500m"),
            ("5.", "5"),
            ("100u", "100u"),
        ] {
            assert_eq!(q(input).to_string(), canonical, "{input}");
        }
    }

    #[test]
    fn sums_keep_the_first_non_zero_format() {
        let zero = Quantity::zero();
        assert_eq!((zero + q("252Mi")).to_string(), "252Mi");
        assert_eq!((q("252Mi") + q("100Mi")).to_string(), "352Mi");
        assert_eq!((q("500m") + q("1")).to_string(), "1500m");
        assert_eq!((q("1") + q("1Gi")).to_string(), "1073741825");
        assert_eq!((q("1Gi") - q("1Gi")).to_string(), "0");
        assert_eq!((q("1") - q("300m")).to_string(), "700m");
        assert!(q("600m") > q("500m") && q("1") == q("1000m"));
    }

    #[test]
    fn rounding_and_caps() {
        assert_eq!(q("1.5").round_up_units().to_string(), "2");
        assert_eq!(q("2").round_up_units().to_string(), "2");
        assert_eq!(q("1e100").to_string(), "9223372036854775807");
        assert_eq!(q("100Ei").to_string(), "9223372036854775807");
    }

    #[test]
    fn malformed_quantities_are_refused() {
        for bad in [
            "", "abc", "1.2.3", "1Kb", "1e", "1ex", "-", ".", "1 Gi", "Mi",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?}");
        }
    }
}
