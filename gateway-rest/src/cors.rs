//! CORS: lets browser pages on other origins call the edge (`http.cors_origins`,
//! `EWPM_HTTP__CORS_ORIGINS`). A small middleware of our own rather than a dependency: the
//! edge needs one policy (bearer tokens, no cookies), and the whole of it fits here.
//!
//! - No origins configured (the default): the middleware adds nothing; browsers call the edge
//!   from its own origin only.
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an allowed
//!   origin is answered 204 here, before authentication (browsers send preflights without
//!   the `Authorization` header), with the methods and request headers the routes take and a
//!   max-age.
//! - Every other response to an allowed origin gets `Access-Control-Allow-Origin` (the origin
//!   itself, or `*` when any origin is allowed) and exposes `Location` and `Retry-After` to
//!   the page's script. With a list of origins every response also says `Vary: Origin`, so a
//!   cache never hands one origin's answer to another.
//! - A disallowed origin gets no CORS header at all (its preflight goes on like any request
//!   and is refused: 401 without a token, else 405 or 404): the browser blocks the call.
//!
//! No `Access-Control-Allow-Credentials`: the edge authenticates by bearer token, never by
//! cookie, so `*` is safe to allow.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

/// Methods a preflight may ask for: every method a route of the edge takes.
const ALLOW_METHODS: &str = "GET, POST, PATCH, PUT, DELETE, OPTIONS";
/// Request headers a page may send: the token, JSON bodies, retry keys, trace context.
const ALLOW_HEADERS: &str = "authorization, content-type, idempotency-key, traceparent";
/// Response headers a page's script may read besides the CORS-safelisted ones.
const EXPOSE_HEADERS: &str = "location, retry-after";
/// How long a browser may cache a preflight answer, in seconds.
const MAX_AGE_SECS: u32 = 600;

/// The CORS policy of the edge.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    /// `*` was configured: any origin.
    any: bool,
    /// The allowed origins, lower case, without a trailing `/`.
    origins: Arc<[String]>,
}

impl Cors {
    /// The policy for `origins` (as `http.cors_origins` holds them: `scheme://host[:port]`
    /// or `*`); empty is no CORS.
    pub fn new(origins: &[String]) -> Self {
        let any = origins.iter().any(|o| o == "*");
        let origins = origins
            .iter()
            .filter(|o| *o != "*")
            .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
            .collect();
        Self { any, origins }
    }

    /// Whether any origin is allowed at all.
    fn enabled(&self) -> bool {
        self.any || !self.origins.is_empty()
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, when allowed.
    fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        if self.any {
            return Some(HeaderValue::from_static("*"));
        }
        let origin = origin?;
        let text = origin.to_str().ok()?.to_ascii_lowercase();
        self.origins.contains(&text).then(|| origin.clone())
    }
}

/// The middleware (see the module doc).
pub async fn handle(State(cors): State<Cors>, request: Request, next: Next) -> Response {
    if !cors.enabled() {
        return next.run(request).await;
    }
    let origin = request.headers().get(header::ORIGIN).cloned();
    // Without an Origin header the request is no cross-origin browser call: nothing to allow.
    let allow = origin.as_ref().and_then(|o| cors.allow(Some(o)));
    let preflight = request.method() == Method::OPTIONS
        && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if let Some(allow) = &allow
        && preflight
    {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow.clone());
        headers
            .insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW_METHODS));
        headers
            .insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS));
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(MAX_AGE_SECS));
        if !cors.any {
            headers.append(header::VARY, HeaderValue::from_static("origin"));
        }
        return response;
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if !cors.any {
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
    if let Some(allow) = allow {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::{Router, body::Body, middleware, routing::get};
    use tower::Service;

    use super::*;

    fn app(origins: &[&str]) -> Router {
        let origins: Vec<String> = origins.iter().map(|o| o.to_string()).collect();
        Router::new()
            .route("/x", get(|| async { "hello" }))
            .layer(middleware::from_fn_with_state(Cors::new(&origins), handle))
    }

    /// The status and the CORS-related headers of the answer, sorted by name.
    async fn call(
        origins: &[&str],
        method: Method,
        headers: &[(&str, &str)],
    ) -> (u16, Vec<(String, String)>) {
        let mut request = http::Request::builder().method(method).uri("/x");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = app(origins).call(request.body(Body::empty()).unwrap()).await.unwrap();
        let mut cors: Vec<(String, String)> = response
            .headers()
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("access-control-") || *name == "vary")
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        cors.sort();
        (response.status().as_u16(), cors)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    const PREFLIGHT: [(&str, &str); 3] = [
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "authorization, content-type"),
    ];

    #[tokio::test]
    async fn without_configured_origins_nothing_is_added() {
        assert_eq!(call(&[], Method::OPTIONS, &PREFLIGHT).await, (405, vec![]));
        let from = [("origin", "https://app.example.com")];
        assert_eq!(call(&[], Method::GET, &from).await, (200, vec![]));
    }

    #[tokio::test]
    async fn a_preflight_from_an_allowed_origin_is_answered_204_with_the_policy() {
        let origins = ["https://app.example.com", "http://localhost:3000"];
        assert_eq!(
            call(&origins, Method::OPTIONS, &PREFLIGHT).await,
            (
                204,
                pairs(&[
                    (
                        "access-control-allow-headers",
                        "authorization, content-type, idempotency-key, traceparent"
                    ),
                    ("access-control-allow-methods", "GET, POST, PATCH, PUT, DELETE, OPTIONS"),
                    ("access-control-allow-origin", "https://app.example.com"),
                    ("access-control-max-age", "600"),
                    ("vary", "origin"),
                ])
            )
        );
    }

    #[tokio::test]
    async fn an_allowed_origin_gets_its_origin_back_and_others_get_nothing_but_vary() {
        let origins = ["https://app.example.com"];
        let allowed = [("origin", "https://APP.example.com")];
        assert_eq!(
            call(&origins, Method::GET, &allowed).await,
            (
                200,
                pairs(&[
                    ("access-control-allow-origin", "https://APP.example.com"),
                    ("access-control-expose-headers", "location, retry-after"),
                    ("vary", "origin"),
                ])
            )
        );
        let other = [("origin", "https://evil.example.com")];
        assert_eq!(call(&origins, Method::GET, &other).await, (200, pairs(&[("vary", "origin")])));
        assert_eq!(call(&origins, Method::GET, &[]).await, (200, pairs(&[("vary", "origin")])));
        // A disallowed origin's preflight is not answered here: the router refuses it.
        let mut preflight = PREFLIGHT;
        preflight[0].1 = "https://evil.example.com";
        assert_eq!(
            call(&origins, Method::OPTIONS, &preflight).await,
            (405, pairs(&[("vary", "origin")]))
        );
    }

    #[tokio::test]
    async fn a_wildcard_allows_every_origin_with_a_star() {
        let from = [("origin", "https://anyone.example")];
        assert_eq!(
            call(&["*"], Method::GET, &from).await,
            (
                200,
                pairs(&[
                    ("access-control-allow-origin", "*"),
                    ("access-control-expose-headers", "location, retry-after"),
                ])
            )
        );
        let (status, headers) = call(&["*"], Method::OPTIONS, &PREFLIGHT).await;
        assert_eq!(status, 204);
        assert!(headers.contains(&("access-control-allow-origin".into(), "*".into())));
    }
}
