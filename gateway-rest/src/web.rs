//! The web app at `/`: one HTML page, one script and one style sheet, compiled into the
//! binary (no CDN; works offline, like `/docs`), written in plain JavaScript with no
//! framework and no build step (`gateway-rest/web/`).
//!
//! Each asset is answered gzip-compressed to clients that accept it (compressed once, at
//! first use), with a strong `ETag` (`If-None-Match` answers 304) and `Cache-Control:
//! no-cache`, so a browser revalidates and a new binary's app is never mixed with an old
//! cached one. The page carries a Content-Security-Policy that allows only its own script,
//! style and connections, no framing, and no inline script.

use std::{io::Write, sync::LazyLock};

use axum::{
    Router,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

/// The page's Content-Security-Policy. `connect-src 'self'` covers the API, its SSE streams
/// and the quiz room's WebSocket on the same origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One compiled-in file.
struct Asset {
    body: &'static [u8],
    gzip: Vec<u8>,
    content_type: &'static str,
    /// The identity body's tag; the gzip body's is this with `-gz` (tags differ per coding).
    etag: HeaderValue,
    etag_gzip: HeaderValue,
}

impl Asset {
    fn new(body: &'static [u8], content_type: &'static str) -> Self {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        // Writing into a Vec cannot fail.
        let gzip = encoder.write_all(body).and_then(|()| encoder.finish()).unwrap_or_default();
        let hash = ewpm_kit::idempotency::fingerprint(body);
        let tag = |suffix: &str| {
            HeaderValue::from_str(&format!("\"{hash}{suffix}\""))
                .unwrap_or(HeaderValue::from_static("\"0\""))
        };
        Self { body, gzip, content_type, etag: tag(""), etag_gzip: tag("-gz") }
    }

    fn answer(&self, request: &HeaderMap, page: bool) -> Response {
        let gzip = accepts_gzip(request) && !self.gzip.is_empty();
        let etag = if gzip { &self.etag_gzip } else { &self.etag };
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, etag.clone());
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        if page {
            headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        }
        // Weak comparison (RFC 9110 13.1.2): a proxy may have weakened the tag.
        if request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|tag| tag.trim().trim_start_matches("W/"))
            .any(|tag| tag == "*" || tag == self.etag || tag == self.etag_gzip)
        {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        if gzip {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            return (headers, self.gzip.clone()).into_response();
        }
        (headers, self.body).into_response()
    }
}

static INDEX: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_bytes!("../web/index.html"), "text/html; charset=utf-8"));
static SCRIPT: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_bytes!("../web/app.js"), "text/javascript; charset=utf-8"));
static STYLE: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_bytes!("../web/app.css"), "text/css; charset=utf-8"));

/// The app's routes (no token needed: the page asks for one).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|h: HeaderMap| async move { INDEX.answer(&h, true) }))
        .route("/app/app.js", get(|h: HeaderMap| async move { SCRIPT.answer(&h, false) }))
        .route("/app/app.css", get(|h: HeaderMap| async move { STYLE.answer(&h, false) }))
}

/// Whether `Accept-Encoding` admits gzip: a `gzip` entry decides (any q but 0); without one,
/// a `*` entry does.
fn accepts_gzip(request: &HeaderMap) -> bool {
    let mut wildcard = false;
    for coding in request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let refused = parts.any(|p| {
            p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()).is_some_and(|q| q == 0.0)
        });
        if name.eq_ignore_ascii_case("gzip") {
            return !refused;
        }
        if name == "*" {
            wildcard = !refused;
        }
    }
    wildcard
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (k.clone(), HeaderValue::from_str(v).unwrap())).collect()
    }

    #[test]
    fn gzip_is_taken_unless_refused() {
        assert!(accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "gzip, deflate, br")])));
        assert!(accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "br;q=1, GZIP;q=0.5")])));
        assert!(accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "*")])));
        assert!(!accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "gzip;q=0")])));
        assert!(!accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "gzip;q=0, *")])));
        assert!(!accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "*;q=0")])));
        assert!(!accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "br")])));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn each_coding_has_its_own_tag_and_a_weakened_tag_still_revalidates() {
        let asset = &*SCRIPT;
        let gzip = headers(&[(header::ACCEPT_ENCODING, "gzip")]);
        let zipped = asset.answer(&gzip, false);
        let plain = asset.answer(&HeaderMap::new(), false);
        assert_ne!(zipped.headers()[header::ETAG], plain.headers()[header::ETAG]);
        for tag in [&asset.etag, &asset.etag_gzip] {
            let weak = format!("W/{}", tag.to_str().unwrap());
            for value in [tag.to_str().unwrap(), weak.as_str(), "\"other\", *"] {
                let mut request = gzip.clone();
                request.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
                assert_eq!(asset.answer(&request, false).status(), StatusCode::NOT_MODIFIED);
            }
        }
        let mut other = gzip.clone();
        other.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(asset.answer(&other, false).status(), StatusCode::OK);
    }

    #[test]
    fn every_asset_compresses_to_a_valid_gzip_of_itself() {
        for asset in [&*INDEX, &*SCRIPT, &*STYLE] {
            let mut out = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::GzDecoder::new(&asset.gzip[..]),
                &mut out,
            )
            .unwrap();
            assert_eq!(out, asset.body);
            assert!(asset.gzip.len() < asset.body.len());
        }
    }
}
