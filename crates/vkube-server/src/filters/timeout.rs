//! Request timeouts, as kube-apiserver's `WithRequestDeadline` and
//! `WithTimeoutForNonLongRunningRequests`: a request that is not long-running gets
//! `--request-timeout` (default 1m0s), or less when its `?timeout=` asks for less, and past it the
//! client gets upstream's 504. Long-running requests (watches, exec, attach, log, port-forward,
//! proxy) are not cut; a watch ends after its `timeoutSeconds`, or after a random time in
//! [`--min-request-timeout`, 2 × that), which spreads the re-lists of many clients.
//!
//! Upstream lets the timed-out handler run on in its goroutine; here its future is dropped, as
//! it already is when a client hangs up, so its in-flight slot is freed at the 504.

use std::time::Duration;

use http::{Response, StatusCode};
use vkube_api::Status;

use crate::request::RequestInfo;
use crate::response::{self, Body};

/// `--request-timeout`'s default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// `--min-request-timeout`'s default, in seconds.
pub const DEFAULT_MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(1800);

/// Upstream's wording when `?timeout=` is no Go duration (`… - time: invalid duration "x"`).
const INVALID_TIMEOUT_IN_URL: &str = "invalid timeout specified in the request URL";
/// What upstream's timeout filter writes: a bare `Status` (no kind, no apiVersion), encoded by
/// Go's `json.Encoder` (so a newline ends it), with no Content-Type of its own, which Go's
/// server then sniffs as plain text. No `Retry-After`: upstream asks for 0 seconds.
const TIMED_OUT: &str = "{\"metadata\":{},\"status\":\"Failure\",\"message\":\"Timeout: request did not complete within the allotted timeout\",\"reason\":\"Timeout\",\"details\":{},\"code\":504}\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// `--request-timeout`: the longest a request that is not long-running is served.
    pub request_timeout: Duration,
    /// `--min-request-timeout`: a watch without `timeoutSeconds` lasts between this and twice
    /// this; zero: until the client leaves.
    pub min_request_timeout: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            min_request_timeout: DEFAULT_MIN_REQUEST_TIMEOUT,
        }
    }
}

impl Timeouts {
    /// How long a request may run: `None` for a long-running one; a 400 for a `?timeout=` that
    /// is no Go duration. A zero, negative or longer `?timeout=` gets `--request-timeout`.
    pub fn deadline(
        &self,
        info: &RequestInfo,
        timeout: Option<&str>,
    ) -> Result<Option<Duration>, Status> {
        if super::max_in_flight::long_running(info) {
            return Ok(None);
        }
        let asked =
            match timeout.filter(|t| !t.is_empty()) {
                None => None,
                Some(t) => Some(parse_go_duration(t).map_err(|err| {
                    Status::bad_request(format!("{INVALID_TIMEOUT_IN_URL} - {err}"))
                })?),
            };
        Ok(Some(match asked {
            Some(nanos) if nanos > 0 && (nanos as u128) < self.request_timeout.as_nanos() => {
                Duration::from_nanos(nanos as u64)
            }
            _ => self.request_timeout,
        }))
    }

    /// Serves `handler` within the request's deadline: upstream's 400 for a bad `?timeout=`,
    /// its 504 past the deadline.
    pub async fn serve(
        &self,
        info: &RequestInfo,
        timeout: Option<&str>,
        handler: impl Future<Output = Response<Body>>,
    ) -> Response<Body> {
        match self.deadline(info, timeout) {
            Err(status) => response::status(&status),
            Ok(None) => handler.await,
            Ok(Some(limit)) => tokio::time::timeout(limit, handler)
                .await
                .unwrap_or_else(|_| timed_out()),
        }
    }

    /// How long a watch lasts: its `timeoutSeconds` when above zero, else a random time in
    /// [min, 2 × min) (`None`: no end, when `--min-request-timeout` is 0), as upstream's
    /// `ListResource`.
    pub fn watch(&self, timeout_seconds: Option<&str>) -> Option<Duration> {
        match timeout_seconds.and_then(|t| t.parse::<u64>().ok()) {
            Some(secs) if secs > 0 => Some(Duration::from_secs(secs)),
            _ if self.min_request_timeout.is_zero() => None,
            _ => Some(self.min_request_timeout.mul_f64(1.0 + fastrand::f64())),
        }
    }
}

/// Upstream's answer to a request past its deadline.
pub fn timed_out() -> Response<Body> {
    response::text(StatusCode::GATEWAY_TIMEOUT.as_u16(), TIMED_OUT)
}

/// Go's `time.ParseDuration`, in nanoseconds, with its error messages: `1m0s`, `30s`, `1.5h`,
/// `-2ms`, `0`.
pub fn parse_go_duration(text: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", go_quote(text));
    let (neg, mut s) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    const LIMIT: u64 = 1 << 63;
    let mut total: u64 = 0;
    while !s.is_empty() {
        let b = s.as_bytes();
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // The integer part; more than 2^63 is an error.
        let int_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut value: u64 = 0;
        for &c in &b[..int_len] {
            if value > LIMIT / 10 {
                return Err(invalid());
            }
            value = value * 10 + u64::from(c - b'0');
            if value > LIMIT {
                return Err(invalid());
            }
        }
        s = &s[int_len..];
        // The fraction: digits past what a u64 holds are read and ignored, as Go does.
        let (mut fraction, mut scale, mut frac_len) = (0u64, 1f64, None);
        if let Some(rest) = s.strip_prefix('.') {
            let n = rest.bytes().take_while(u8::is_ascii_digit).count();
            let mut overflow = false;
            for c in rest[..n].bytes() {
                if overflow || fraction > (i64::MAX as u64) / 10 {
                    overflow = true;
                    continue;
                }
                let next = fraction * 10 + u64::from(c - b'0');
                if next > LIMIT {
                    overflow = true;
                    continue;
                }
                fraction = next;
                scale *= 10.0;
            }
            frac_len = Some(n);
            s = &rest[n..];
        }
        if int_len == 0 && frac_len.unwrap_or(0) == 0 {
            return Err(invalid());
        }
        let unit_len = s
            .bytes()
            .take_while(|c| !(*c == b'.' || c.is_ascii_digit()))
            .count();
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {}", go_quote(text)));
        }
        let unit_name = &s[..unit_len];
        s = &s[unit_len..];
        let unit: u64 = match unit_name {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    go_quote(unit_name),
                    go_quote(text)
                ));
            }
        };
        if value > LIMIT / unit {
            return Err(invalid());
        }
        value *= unit;
        if fraction > 0 {
            value += (fraction as f64 * (unit as f64 / scale)) as u64;
            if value > LIMIT {
                return Err(invalid());
            }
        }
        total += value;
        if total > LIMIT {
            return Err(invalid());
        }
    }
    if neg {
        return Ok((total as i128).wrapping_neg() as i64);
    }
    i64::try_from(total).map_err(|_| invalid())
}

/// Go's `time.quote`: double quotes, `\"` and `\\` escaped, and each byte of a character that
/// is not printable ASCII as `\xNN`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c < ' ' || !c.is_ascii() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;
    use http_body_util::BodyExt;
    use proptest::prelude::*;

    use crate::request::query;

    fn info(path_and_query: &str) -> RequestInfo {
        let (path, q) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        RequestInfo::parse(&Method::GET, path, &query(Some(q)))
    }

    #[test]
    fn go_durations_parse_as_go_parses_them() {
        let s = 1_000_000_000i64;
        for (text, nanos) in [
            ("1m0s", 60 * s),
            ("30s", 30 * s),
            ("0", 0),
            ("-0", 0),
            ("1.5h", 5400 * s),
            ("1h30m", 5400 * s),
            ("-2ms", -2_000_000),
            ("+5us", 5_000),
            ("7\u{b5}s", 7_000),
            (".5s", s / 2),
            ("1.s", s),
            ("9223372036854775807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
        ] {
            assert_eq!(parse_go_duration(text), Ok(nanos), "{text}");
        }
        for (text, err) in [
            ("", "time: invalid duration \"\""),
            ("abc", "time: invalid duration \"abc\""),
            (".s", "time: invalid duration \".s\""),
            ("1", "time: missing unit in duration \"1\""),
            ("1x", "time: unknown unit \"x\" in duration \"1x\""),
            (
                "1\u{e9}",
                "time: unknown unit \"\\xc3\\xa9\" in duration \"1\\xc3\\xa9\"",
            ),
            (
                "9223372036854775808ns",
                "time: invalid duration \"9223372036854775808ns\"",
            ),
            ("3000000h", "time: invalid duration \"3000000h\""),
        ] {
            assert_eq!(parse_go_duration(text), Err(err.to_string()), "{text:?}");
        }
    }

    proptest! {
        #[test]
        fn go_durations_never_panic(text in "[-+.0-9a-z\u{b5}\u{3bc}]{0,24}|\\PC{0,16}") {
            let _ = parse_go_duration(&text);
        }

        #[test]
        fn whole_seconds_round_trip(secs in 0u64..9_000_000_000) {
            prop_assert_eq!(parse_go_duration(&format!("{secs}s")), Ok(secs as i64 * 1_000_000_000));
        }
    }

    #[test]
    fn a_request_gets_the_flag_or_less_when_it_asks_and_long_running_ones_none() {
        let t = Timeouts::default();
        let pods = info("/api/v1/namespaces/default/pods");
        assert_eq!(t.deadline(&pods, None), Ok(Some(Duration::from_secs(60))));
        assert_eq!(
            t.deadline(&pods, Some("")),
            Ok(Some(Duration::from_secs(60)))
        );
        assert_eq!(
            t.deadline(&pods, Some("5s")),
            Ok(Some(Duration::from_secs(5)))
        );
        for more in ["2m", "0s", "-1s", "60s"] {
            assert_eq!(
                t.deadline(&pods, Some(more)),
                Ok(Some(Duration::from_secs(60))),
                "{more}"
            );
        }
        let err = t.deadline(&pods, Some("5")).unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(err.reason, "BadRequest");
        assert_eq!(
            err.message,
            "invalid timeout specified in the request URL - time: missing unit in duration \"5\""
        );
        for long in [
            "/api/v1/namespaces/default/pods?watch=true",
            "/api/v1/watch/pods",
            "/api/v1/namespaces/default/pods/p/exec",
            "/api/v1/namespaces/default/pods/p/log",
            "/api/v1/namespaces/default/pods/p/portforward",
            "/api/v1/namespaces/default/pods/p/attach",
            "/api/v1/namespaces/default/pods/p/proxy",
        ] {
            assert_eq!(t.deadline(&info(long), Some("x")), Ok(None), "{long}");
        }
    }

    #[test]
    fn a_watch_lasts_its_timeout_seconds_or_a_random_time_from_min_to_twice_min() {
        let t = Timeouts::default();
        assert_eq!(t.watch(Some("7")), Some(Duration::from_secs(7)));
        for asked in [None, Some("0"), Some("x")] {
            for _ in 0..100 {
                let d = t.watch(asked).unwrap();
                assert!(d >= Duration::from_secs(1800) && d < Duration::from_secs(3600));
            }
        }
        let forever = Timeouts {
            min_request_timeout: Duration::ZERO,
            ..t
        };
        assert_eq!(forever.watch(None), None);
        assert_eq!(forever.watch(Some("3")), Some(Duration::from_secs(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_request_gets_upstreams_504_and_a_watch_is_not_cut() {
        let t = Timeouts::default();
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(120)).await;
            response::text(200, "late")
        };
        let pods = info("/api/v1/namespaces/default/pods");
        let resp = t.serve(&pods, None, slow()).await;
        assert_eq!(resp.status(), 504);
        assert!(resp.headers().get("retry-after").is_none());
        assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status["reason"], "Timeout");
        assert_eq!(status["code"], 504);
        assert_eq!(
            status["message"],
            "Timeout: request did not complete within the allotted timeout"
        );
        assert!(body.ends_with(b"}\n"));
        let started = tokio::time::Instant::now();
        let resp = t.serve(&pods, Some("3s"), slow()).await;
        assert_eq!(resp.status(), 504);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        let watch = info("/api/v1/namespaces/default/pods?watch=1");
        assert_eq!(t.serve(&watch, None, slow()).await.status(), 200);
        let resp = t
            .serve(&pods, Some("1h"), async { response::text(200, "ok") })
            .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(t.serve(&pods, Some("soon"), slow()).await.status(), 400);
    }
}
