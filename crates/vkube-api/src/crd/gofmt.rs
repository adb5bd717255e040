//! How Go's fmt prints the JSON values that end up in upstream's messages (`%v` of a float64,
//! `%#v` of an `interface{}`), so that our messages read exactly as kube-apiserver's.

use serde_json::Value;

/// A float64 as `%v` prints it: shortest digits, exponent form from 1e+06 or below 1e-04
/// (`strconv.FormatFloat(f, 'g', -1, 64)`).
pub fn float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return "0".into();
    }
    // Shortest round-trip digits and the decimal exponent, from Rust's `{:e}`.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    // %v is 'g' with the shortest precision, where strconv switches to the exponent form at 6.
    if !(-4..6).contains(&exp) {
        let mut m = digits[..1].to_string();
        if digits.len() > 1 {
            m.push('.');
            m.push_str(&digits[1..]);
        }
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{m}e{esign}{:02}", exp.abs());
    }
    if exp < 0 {
        let zeros = "0".repeat((-exp - 1) as usize);
        return format!("{sign}0.{zeros}{digits}");
    }
    let point = exp as usize + 1;
    if digits.len() <= point {
        format!("{sign}{digits}{}", "0".repeat(point - digits.len()))
    } else {
        format!("{sign}{}.{}", &digits[..point], &digits[point..])
    }
}

/// A JSON number as Go holds it after decoding: integers as int64, the rest as float64.
pub fn number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else {
        float(n.as_f64().unwrap_or_default())
    }
}

/// A bad value as `field.Error` prints it: numbers and booleans with `%v`, strings with `%q`,
/// anything else (maps, lists) with `%#v`.
pub fn bad_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => quote(s),
        other => sharp_v(other),
    }
}

/// `%#v` of a decoded JSON value held in an `interface{}`.
pub fn sharp_v(v: &Value) -> String {
    match v {
        Value::Null => "interface {}(nil)".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => quote(s),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(sharp_v).collect();
            format!("[]interface {{}}{{{}}}", inner.join(", "))
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", quote(k), sharp_v(&map[k])))
                .collect();
            format!("map[string]interface {{}}{{{}}}", inner.join(", "))
        }
    }
}

/// Go's `%q` of a string (close enough: Rust's debug quoting agrees on ASCII).
pub fn quote(s: &str) -> String {
    format!("{s:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_print_as_go_does() {
        assert_eq!(float(1.5), "1.5");
        assert_eq!(float(10.0), "10");
        assert_eq!(float(1_000_000.0), "1e+06");
        assert_eq!(float(0.0001), "0.0001");
        assert_eq!(float(0.00001), "1e-05");
        assert_eq!(float(-2.25), "-2.25");
        assert_eq!(float(123456.0), "123456");
    }

    #[test]
    fn values_print_as_field_errors_do() {
        assert_eq!(bad_value(&json!("a")), "\"a\"");
        assert_eq!(bad_value(&json!(3)), "3");
        assert_eq!(bad_value(&json!(null)), "null");
        assert_eq!(
            bad_value(&json!({"name": "a", "n": 1})),
            "map[string]interface {}{\"n\":1, \"name\":\"a\"}"
        );
        assert_eq!(
            bad_value(&json!([1, "x", null])),
            "[]interface {}{1, \"x\", interface {}(nil)}"
        );
    }
}
