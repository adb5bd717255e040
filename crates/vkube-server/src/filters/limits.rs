//! Size limits on what a client sends, beside the body limit ([`crate::router::MAX_BODY`]):
//!
//! - **Headers**: kube-apiserver's Go server takes 1 MiB of request head (`MaxHeaderBytes`, plus
//!   Go's 4 KiB of slack for the request line) and answers `431 Request Header Fields Too Large`
//!   past it; over HTTP/2 it advertises 1 MiB plus 32 bytes for each of 10 fields as
//!   `SETTINGS_MAX_HEADER_LIST_SIZE` and answers 431 too. hyper's defaults (~400 KiB, and 16 KiB
//!   for HTTP/2, which a large OIDC token crosses) are raised to those, and a head is measured
//!   as Go measures it ([`head_too_large`]), since hyper's buffer limit is a soft one. Two limits
//!   stay hyper's:
//!   100 header fields over HTTP/1.1 (Go has no count limit; a larger table costs every request
//!   an allocation), and 64 KiB of URI (the `http` crate's; 414 over HTTP/1.1).
//! - **JSON depth**: Go's `encoding/json` refuses nesting past 10 000 levels with
//!   `invalid character '{' exceeded max depth`. vkube stops at [`MAX_JSON_DEPTH`], the depth
//!   serde_json reads and every recursive walk of an object here (copies, merges, schemas) is safe
//!   at on a worker thread's stack, with Go's words. YAML bodies keep serde-saphyr's budget
//!   (64 levels, bounded alias expansion).
//! - **Selectors**: upstream has no limit of its own beyond the URI's; the parsers here are
//!   linear, and a test times a 1 MiB selector.

use bytes::Bytes;
use http::Response;
use hyper_util::server::conn::auto;

use crate::response::{self, Body};

/// Go's `http.DefaultMaxHeaderBytes`, which kube-apiserver sets as `MaxHeaderBytes`.
pub const MAX_HEADER_BYTES: usize = 1 << 20;
/// What Go's HTTP/1.1 server reads before it gives up on a request head: a hard limit, where
/// hyper's buffer limit is a soft one (a read can carry it past), so [`head_too_large`] counts.
const HTTP1_HEAD_BYTES: usize = MAX_HEADER_BYTES + 4096;
/// hyper's buffer for a request head: room for Go's limit and a TLS record more, so that
/// [`head_too_large`] sees every head up to Go's limit and a little past it.
const HTTP1_BUFFER: usize = HTTP1_HEAD_BYTES + 64 * 1024;
/// What Go's HTTP/2 server advertises: 32 bytes of overhead for 10 typical fields on top.
const HTTP2_HEADER_LIST_BYTES: u32 = (MAX_HEADER_BYTES + 10 * 32) as u32;

/// The deepest JSON body read: the most serde_json's recursion limit lets through.
pub const MAX_JSON_DEPTH: usize = 127;

/// Sets the header limits on the connection builder.
pub fn configure<E>(builder: &mut auto::Builder<E>) {
    builder.http1().max_buf_size(HTTP1_BUFFER);
    builder
        .http2()
        .max_header_list_size(HTTP2_HEADER_LIST_BYTES);
}

/// Whether a request's head is larger than Go's server reads: the request line and each
/// `Name: value` line with its CRLF.
pub fn head_too_large<B>(req: &http::Request<B>) -> bool {
    let line =
        req.method().as_str().len() + req.uri().to_string().len() + " HTTP/1.1\r\n".len() + 1;
    let fields: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    line + fields > HTTP1_HEAD_BYTES
}

/// Go's answer to a head past its limit.
pub fn head_refused() -> Response<Body> {
    let mut resp = response::text(431, "431 Request Header Fields Too Large");
    resp.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    resp
}

/// A HEAD request's answer: the GET's head without its body. hyper's HTTP/2 server resets the
/// stream (PROTOCOL_ERROR) when a HEAD response comes with a body, so every HEAD over HTTP/2
/// failed; HTTP/1.1 drops the body itself.
pub fn head(is_head: bool, resp: Response<Body>) -> Response<Body> {
    if !is_head {
        return resp;
    }
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, response::full(Bytes::new()))
}

/// Refuses JSON nested deeper than [`MAX_JSON_DEPTH`] with Go's message, before a parser
/// recurses into it. Brackets inside strings do not count; the rest of the syntax is the
/// parser's to judge.
pub fn check_json_depth(body: &[u8]) -> Result<(), String> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(format!(
                        "invalid character '{}' exceeded max depth",
                        b as char
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn nested(depth: usize, open: char, close: char) -> String {
        let mut s = String::new();
        (0..depth).for_each(|_| s.push(open));
        (0..depth).for_each(|_| s.push(close));
        s
    }

    #[test]
    fn json_as_deep_as_serde_reads_passes_and_deeper_gets_gos_words() {
        let ok = nested(MAX_JSON_DEPTH, '[', ']');
        assert_eq!(check_json_depth(ok.as_bytes()), Ok(()));
        serde_json::from_str::<serde_json::Value>(&ok).expect("serde reads what passes");
        let over = nested(MAX_JSON_DEPTH + 1, '{', '}');
        assert!(check_json_depth(over.as_bytes()).is_err());
        for (open, close) in [('[', ']'), ('{', '}')] {
            let deep = format!("{{\"a\":{}}}", nested(10_001, open, close));
            assert_eq!(
                check_json_depth(deep.as_bytes()),
                Err(format!("invalid character '{open}' exceeded max depth"))
            );
        }
        // Brackets in strings, escaped quotes included, are text.
        let text = format!("{{\"a\":\"\\\"{}\"}}", "[".repeat(1000));
        assert_eq!(check_json_depth(text.as_bytes()), Ok(()));
    }

    #[test]
    fn a_head_past_gos_limit_is_counted_as_go_counts_it() {
        let with = |size: usize| {
            http::Request::get("/version")
                .header("x-big", "b".repeat(size))
                .body(())
                .unwrap()
        };
        assert!(!head_too_large(&with(MAX_HEADER_BYTES)));
        assert!(head_too_large(&with(MAX_HEADER_BYTES + 4096)));
        assert_eq!(head_refused().status(), 431);
    }

    #[tokio::test]
    async fn a_head_answer_keeps_the_head_and_drops_the_body() {
        use http_body_util::BodyExt;
        let resp = head(true, response::text(404, "not here"));
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
        assert!(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .is_empty()
        );
        let resp = head(false, response::text(200, "ok"));
        assert_eq!(
            &resp.into_body().collect().await.unwrap().to_bytes()[..],
            b"ok"
        );
    }

    #[test]
    fn a_one_mebibyte_selector_parses_in_linear_time() {
        let labels: String = (0..40_000)
            .map(|i| format!("k{i}=v{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let labels = &labels[..labels.len().min(1 << 20)];
        let started = Instant::now();
        let _ = vkube_api::selector::parse_labels(labels);
        let _ = vkube_api::selector::parse_labels(&"a".repeat(1 << 20));
        let _ = vkube_api::selector::parse_labels(&"!".repeat(1 << 20));
        let _ = vkube_api::selector::parse_labels(&"(".repeat(1 << 20));
        let _ = vkube_api::selector::parse_fields(
            &"metadata.name=x,".repeat(1 << 16),
            &["metadata.name"],
        );
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "1 MiB selectors took {took:?}"
        );
    }
}
