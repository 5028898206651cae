//! The EWPM REST edge: a thin axum layer for browsers. It calls the services through tonic
//! clients only, forwards the caller's bearer token untouched, and answers errors as
//! `application/problem+json` with the service's stable reason.
//!
//! # Layout
//! - [`routes`]: one file per resource (challenges, leaderboards, named boards, incentives,
//!   scans, quizzes with their WebSocket room, match engagement).
//! - [`problem`]: gRPC status → problem+json.
//! - [`upstream`]: token and trace forwarding to the services, Server-Sent Events from their
//!   streams (the clients are over `ewpm_kit::client::Upstream`: HTTP/2 channels in the mesh,
//!   the services in this process under `ewpm dev`).
//! - [`cors`]: the CORS policy for browser pages on other origins (`http.cors_origins`).
//! - this file: the router, authentication before anything reads a request, `/health`
//!   (from upstream states checked every second), `/metrics`, `/openapi.json`, `/docs`,
//!   request spans and metrics, the live stream caps (SSE and WebSockets).

pub mod cors;
pub mod problem;
pub mod routes;
pub mod upstream;
pub mod web;

use routes::{boards, challenges, engagement, incentives, leaderboards, quizzes, scans};

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, patch, post},
};
use ewpm_kit::{
    CancellationToken,
    auth::{Caller, TokenKeys},
    client::Upstream,
    settings::LimitSettings,
};
use ewpm_proto::{
    challenge::v1::challenge_service_client::ChallengeServiceClient,
    engagement::v1::engagement_service_client::EngagementServiceClient,
    incentive::v1::incentive_service_client::IncentiveServiceClient,
    leaderboard::v1::leaderboard_service_client::LeaderboardServiceClient,
    progress::v1::progress_service_client::ProgressServiceClient,
    quiz::v1::quiz_service_client::QuizServiceClient,
    scan::v1::scan_service_client::ScanServiceClient,
};
use tokio::net::TcpListener;
use tracing::Instrument;
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_swagger_ui::SwaggerUi;

use crate::problem::Problem;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The challenge service.
    pub challenge: ChallengeServiceClient<Upstream>,
    /// The scan service.
    pub scan: ScanServiceClient<Upstream>,
    /// The progress service.
    pub progress: ProgressServiceClient<Upstream>,
    /// The leaderboard service.
    pub leaderboard: LeaderboardServiceClient<Upstream>,
    /// The incentive service.
    pub incentive: IncentiveServiceClient<Upstream>,
    /// The quiz service.
    pub quiz: QuizServiceClient<Upstream>,
    /// The engagement service.
    pub engagement: EngagementServiceClient<Upstream>,
    /// Every upstream, by service name (the `EWPM_SERVICES__<NAME>` keys).
    upstreams: Arc<BTreeMap<&'static str, Upstream>>,
    /// Verifies tokens before anything else reads the request.
    keys: Arc<TokenKeys>,
    /// Live streams (SSE and WebSockets), per caller and in all.
    pub streams: StreamSlots,
    /// Score updates for the quiz room sockets on this edge.
    pub score_updates: quizzes::ScoreHub,
    /// Cancelled when the edge shuts down ([`serve`]'s `shutdown`): WebSockets outlive the
    /// HTTP server's graceful shutdown (an upgraded connection is no longer its), so the rooms
    /// watch this to close with 1001 themselves.
    pub(crate) closing: CancellationToken,
    /// `/health`'s answer from the upstreams' health as last checked (see
    /// [`watch_upstreams`]), serialized once per check rather than once per request.
    upstream_health: Arc<RwLock<Arc<HealthAnswer>>>,
    /// The CORS policy (none unless [`AppState::with_cors`] set one).
    cors: cors::Cors,
    /// Challenge boards a caller's audience may read, as the challenge service last said
    /// (see [`VISIBLE_FOR`]).
    pub(crate) visible: Arc<ewpm_kit::cache::TtlCache<Audience, String>>,
}

/// HTTP/2 connections per upstream service: one connection's frames go through one task,
/// which the edge's request rate saturates first.
const UPSTREAM_CONNECTIONS: usize = 4;

/// How long the edge remembers that an audience may read a challenge's board, so board reads
/// need not ask the challenge service each time. A challenge moved to another employer is
/// still readable by its former audience through this edge for at most this long (the
/// leaderboard service's own audience cache is the same kind of bound).
pub const VISIBLE_FOR: Duration = Duration::from_secs(5);

/// At most this many remembered answers (callers choose the ids).
const VISIBLE_CAPACITY: usize = 10_000;

/// Who may read a challenge, as far as its visibility goes: admins, or one employer's people
/// (`None`: no employer).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Audience {
    challenge: String,
    admin: bool,
    employer: Option<String>,
}

impl Audience {
    /// `caller`'s audience for `challenge`.
    pub(crate) fn of(caller: &Caller, challenge: &str) -> Self {
        let admin = caller.is_admin();
        Self {
            challenge: challenge.to_string(),
            admin,
            employer: if admin { None } else { caller.employer_id.clone() },
        }
    }
}

impl AppState {
    /// Clients for the services at `addrs` (service name → URI; connected lazily),
    /// verifying tokens with `keys` and holding callers to `limits`. Every upstream the edge
    /// routes to must have an address.
    pub fn connect(
        addrs: &BTreeMap<String, String>,
        keys: TokenKeys,
        limits: &LimitSettings,
    ) -> anyhow::Result<Self> {
        let mut upstreams = BTreeMap::new();
        for (name, _) in UPSTREAMS {
            let uri = addrs.get(name).with_context(|| {
                format!(
                    "EWPM_SERVICES__{} is required: the address of the {name} service",
                    name.to_ascii_uppercase()
                )
            })?;
            let channel = ewpm_kit::client::pooled(uri, UPSTREAM_CONNECTIONS)
                .with_context(|| format!("{name} service"))?;
            upstreams.insert(name, ewpm_kit::client::upstream(channel));
        }
        Ok(Self::with_upstreams(upstreams, keys, limits))
    }

    /// Clients for services served by this process (`ewpm dev`): each call goes through
    /// `local` (see `ewpm_kit::server::Mount::local`) with the same layers and token check
    /// as over the network, without HTTP/2 between the edge and the services.
    pub fn in_process(local: Upstream, keys: TokenKeys, limits: &LimitSettings) -> Self {
        let upstreams = UPSTREAMS.iter().map(|(name, _)| (*name, local.clone())).collect();
        Self::with_upstreams(upstreams, keys, limits)
    }

    fn with_upstreams(
        upstreams: BTreeMap<&'static str, Upstream>,
        keys: TokenKeys,
        limits: &LimitSettings,
    ) -> Self {
        let upstream = |name: &str| upstreams[name].clone();
        Self {
            challenge: ChallengeServiceClient::new(upstream("challenge")),
            scan: ScanServiceClient::new(upstream("scan")),
            progress: ProgressServiceClient::new(upstream("progress")),
            leaderboard: LeaderboardServiceClient::new(upstream("leaderboard")),
            incentive: IncentiveServiceClient::new(upstream("incentive")),
            quiz: QuizServiceClient::new(upstream("quiz")),
            engagement: EngagementServiceClient::new(upstream("engagement")),
            upstreams: Arc::new(upstreams),
            keys: Arc::new(keys),
            streams: StreamSlots::new(limits),
            score_updates: quizzes::ScoreHub::default(),
            closing: CancellationToken::new(),
            upstream_health: Arc::new(RwLock::new(Arc::new(HealthAnswer::of(
                &UPSTREAMS
                    .iter()
                    .map(|(name, _)| (*name, "unknown".to_string()))
                    .collect::<Vec<_>>(),
            )))),
            cors: cors::Cors::default(),
            visible: Arc::new(ewpm_kit::cache::TtlCache::with_capacity(
                VISIBLE_FOR,
                VISIBLE_CAPACITY,
            )),
        }
    }

    /// The same, answering CORS for browser pages on `origins` (`http.cors_origins`:
    /// `scheme://host[:port]` or `*`; empty: no CORS headers).
    pub fn with_cors(mut self, origins: &[String]) -> Self {
        self.cors = cors::Cors::new(origins);
        self
    }
}

/// The upstreams `/health` reports, with the health service name each is checked under.
const UPSTREAMS: [(&str, &str); 7] = [
    ("challenge", ewpm_proto::challenge::v1::SERVICE_NAME),
    ("scan", ewpm_proto::scan::v1::SERVICE_NAME),
    ("progress", ewpm_proto::progress::v1::SERVICE_NAME),
    ("leaderboard", ewpm_proto::leaderboard::v1::SERVICE_NAME),
    ("incentive", ewpm_proto::incentive::v1::SERVICE_NAME),
    ("quiz", ewpm_proto::quiz::v1::SERVICE_NAME),
    ("engagement", ewpm_proto::engagement::v1::SERVICE_NAME),
];

/// The name of every upstream the edge needs an address for (the keys
/// [`AppState::connect`] requires).
pub fn upstream_names() -> impl Iterator<Item = &'static str> {
    UPSTREAMS.into_iter().map(|(name, _)| name)
}

/// How often the edge checks its upstreams' health.
const HEALTH_EVERY: Duration = Duration::from_secs(1);

/// Checks every upstream's gRPC health every second until `shutdown`, for `/health` to
/// answer from (a probe or a flood of `/health` calls costs the upstreams nothing).
pub async fn watch_upstreams(state: AppState, shutdown: CancellationToken) {
    loop {
        let checks = UPSTREAMS
            .iter()
            .map(|(name, service)| upstream_health(&state.upstreams[name], service));
        let results = futures::future::join_all(checks).await;
        let snapshot: Vec<(&'static str, String)> =
            UPSTREAMS.iter().map(|(name, _)| *name).zip(results).collect();
        let answer = Arc::new(HealthAnswer::of(&snapshot));
        *state.upstream_health.write().unwrap_or_else(|p| p.into_inner()) = answer;
        if ewpm_kit::retry::sleep_or_shutdown(HEALTH_EVERY, &shutdown).await {
            return;
        }
    }
}

/// Live streams (SSE and WebSockets): at most `limits.max_streams_per_caller` per verified caller and
/// `limits.max_streams` in all on this edge.
#[derive(Debug, Clone)]
pub struct StreamSlots(Arc<ewpm_kit::streams::StreamSlots>);

impl StreamSlots {
    /// Slots under `limits`.
    pub fn new(limits: &LimitSettings) -> Self {
        Self(ewpm_kit::streams::StreamSlots::new("sse", limits))
    }

    /// A slot for `caller`, or 429 (`TOO_MANY_STREAMS`) with `Retry-After`.
    pub fn acquire(&self, caller: &Caller) -> Result<StreamSlot, problem::ApiError> {
        self.0.acquire(&caller.user_id).map_err(|full| {
            let detail = if full.scope == "caller" {
                "too many live streams for this caller; close one first"
            } else {
                "this edge holds as many live streams as it can; retry shortly"
            };
            Problem::new(StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_STREAMS", detail)
                .retry_after(Duration::from_secs(5))
                .into()
        })
    }
}

pub use ewpm_kit::streams::StreamSlot;

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "EWPM REST API", description = "The browser edge of the EWPM engagement platform. Every route needs `Authorization: Bearer <token>`; errors are application/problem+json."),
    paths(
        challenges::create,
        challenges::get,
        challenges::list,
        challenges::update,
        challenges::active_for_user,
        leaderboards::submit,
        leaderboards::leaderboard,
        leaderboards::me,
        leaderboards::stream,
        boards::create,
        boards::get,
        boards::periods,
        boards::submit,
        boards::entries,
        boards::rank,
        boards::ranks,
        boards::stream,
        boards::void,
        boards::privacy,
        boards::set_privacy,
        boards::employer_settings,
        boards::set_employer_settings,
        incentives::log_activity,
        incentives::report_birth,
        incentives::user_awards,
        incentives::employer_awards,
        incentives::award_stream,
        incentives::create_incentive,
        incentives::list_incentives,
        incentives::update_incentive,
        incentives::deactivate_incentive,
        incentives::create_employer_incentive,
        incentives::list_employer_incentives,
        incentives::deactivate_employer_incentive,
        scans::feed,
        scans::upload,
        scans::parcel,
        scans::parcels,
        scans::projector,
        quizzes::seed_join,
        quizzes::update_score,
        quizzes::create_quiz,
        quizzes::list_quizzes,
        quizzes::get_quiz,
        quizzes::create_session,
        quizzes::get_session,
        quizzes::open_session,
        quizzes::start_session,
        quizzes::reveal,
        quizzes::close_question,
        quizzes::finish,
        quizzes::api_join,
        quizzes::answer,
        quizzes::leaderboard,
        quizzes::stream,
        quizzes::export,
        quizzes::ws,
        engagement::ingest,
        engagement::ingest_batch,
        engagement::metrics,
        engagement::live,
        engagement::stream,
        engagement::events,
        engagement::event,
        engagement::replay,
    ),
    components(schemas(Problem, problem::FieldError)),
    modifiers(&BearerAuth, &CommonResponses),
    tags(
        (name = "challenges", description = "Wellness challenges"),
        (name = "progress", description = "Challenge progress and live leaderboards"),
        (name = "boards", description = "Named leaderboards (`board:<id>`, `challenge:<id>`, `quiz:<id>`): definitions, periods, scores, pages both ways with the caller's own place, ranks, live snapshots with rank-change notices, voids, privacy, employer minimums"),
        (name = "incentives", description = "Health activity logging, the incentive catalog, employer incentives and awards"),
        (name = "scans", description = "Parcel scan events and parcel states"),
        (name = "quizzes", description = "Live quizzes: authoring, hosting, joining, answering, the session's events and its WebSocket room"),
        (name = "engagement", description = "Fan engagement: match events in, live match metrics out (once, or as Server-Sent Events), stored events, replay")
    )
)]
pub struct ApiDoc;

struct BearerAuth;

/// The answers every authenticated route can give besides its own: a missing or bad token
/// (401), a caller not allowed (403), over its rate or stream limit (429, `Retry-After`), and
/// an upstream service or its store unavailable (503, `Retry-After`).
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{
            ContentBuilder, Ref, RefOr,
            response::{Response, ResponseBuilder},
        };
        let problem = |description: &str, retry: bool| -> RefOr<Response> {
            let mut builder = ResponseBuilder::new().description(description).content(
                "application/problem+json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
            );
            if retry {
                builder = builder.header(
                    "Retry-After",
                    utoipa::openapi::header::HeaderBuilder::new()
                        .description(Some("Seconds to wait before retrying"))
                        .build(),
                );
            }
            RefOr::T(builder.build())
        };
        let common = [
            ("401", problem("No token, or a forged, expired or foreign one", false)),
            ("403", problem("The caller may not do this (role, employer or user)", false)),
            ("429", problem("Over the caller's rate or stream limit, or the queue is full", true)),
            ("503", problem("An upstream service or its store is unavailable", true)),
        ];
        for item in openapi.paths.paths.values_mut() {
            for op in
                [&mut item.get, &mut item.post, &mut item.patch, &mut item.put, &mut item.delete]
                    .into_iter()
                    .flatten()
            {
                for (code, response) in &common {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| response.clone());
                }
            }
        }
    }
}

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
            ),
        );
    }
}

/// The whole REST router.
pub fn router(state: AppState) -> Router {
    let policy = state.cors.clone();
    let api = api_routes()
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route("/livez", get(livez))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state);
    // Outside `problem_errors` (which rebuilds error answers) so every answer, problems
    // included, carries the CORS headers; inside `observe` so preflights are counted under
    // their route template.
    Router::new()
        .merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
        .merge(web::routes())
        .merge(api)
        .layer(middleware::from_fn(problem_errors))
        .layer(middleware::from_fn_with_state(policy, cors::handle))
        .layer(middleware::from_fn(observe))
}

/// Every route that needs a token.
fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/api/challenges", get(challenges::list).post(challenges::create))
        .route("/api/challenges/{id}", get(challenges::get).patch(challenges::update))
        .route("/api/users/{userId}/challenges/active", get(challenges::active_for_user))
        .route("/api/challenges/{id}/progress", post(leaderboards::submit))
        .route("/api/challenges/{id}/leaderboard", get(leaderboards::leaderboard))
        .route("/api/challenges/{id}/leaderboard/me", get(leaderboards::me))
        .route("/api/challenges/{id}/leaderboard/stream", get(leaderboards::stream))
        .route("/api/boards", post(boards::create))
        .route("/api/boards/{board}", get(boards::get))
        .route("/api/boards/{board}/periods", get(boards::periods))
        .route("/api/boards/{board}/scores", post(boards::submit))
        .route("/api/boards/{board}/entries", get(boards::entries))
        .route("/api/boards/{board}/rank", get(boards::rank))
        .route("/api/boards/{board}/ranks", get(boards::ranks))
        .route("/api/boards/{board}/stream", get(boards::stream))
        .route("/api/boards/{board}/voids", post(boards::void))
        .route("/api/me/privacy", get(boards::privacy).put(boards::set_privacy))
        .route(
            "/api/employers/{employerId}/board-settings",
            get(boards::employer_settings).put(boards::set_employer_settings),
        )
        .route("/api/activities", post(incentives::log_activity))
        .route("/api/births", post(incentives::report_birth))
        .route("/api/users/{userId}/awards", get(incentives::user_awards))
        .route("/api/employers/{employerId}/awards", get(incentives::employer_awards))
        .route("/api/me/awards/stream", get(incentives::award_stream))
        .route(
            "/api/incentives",
            get(incentives::list_incentives).post(incentives::create_incentive),
        )
        .route("/api/incentives/{id}", patch(incentives::update_incentive))
        .route("/api/incentives/{id}/deactivate", post(incentives::deactivate_incentive))
        .route(
            "/api/employers/{employerId}/incentives",
            get(incentives::list_employer_incentives).post(incentives::create_employer_incentive),
        )
        .route(
            "/api/employer-incentives/{id}/deactivate",
            post(incentives::deactivate_employer_incentive),
        )
        .route("/v1/scans/scanevents", get(scans::feed).post(scans::upload))
        .route("/api/parcels", get(scans::parcels))
        .route("/api/parcels/{parcelId}", get(scans::parcel))
        .route("/api/scans/projector", get(scans::projector))
        .route("/quiz-session/{id}/join", post(quizzes::seed_join))
        .route("/update-score", post(quizzes::update_score))
        .route("/api/quizzes", get(quizzes::list_quizzes).post(quizzes::create_quiz))
        .route("/api/quizzes/{id}", get(quizzes::get_quiz))
        .route("/api/quiz-sessions", post(quizzes::create_session))
        .route("/api/quiz-sessions/{id}", get(quizzes::get_session))
        .route("/api/quiz-sessions/{id}/open", post(quizzes::open_session))
        .route("/api/quiz-sessions/{id}/start", post(quizzes::start_session))
        .route("/api/quiz-sessions/{id}/reveal", post(quizzes::reveal))
        .route("/api/quiz-sessions/{id}/close-question", post(quizzes::close_question))
        .route("/api/quiz-sessions/{id}/finish", post(quizzes::finish))
        .route("/api/quiz-sessions/{id}/join", post(quizzes::api_join))
        .route("/api/quiz-sessions/{id}/answers", post(quizzes::answer))
        .route("/api/quiz-sessions/{id}/leaderboard", get(quizzes::leaderboard))
        .route("/api/quiz-sessions/{id}/stream", get(quizzes::stream))
        .route("/api/quiz-sessions/{id}/results.csv", get(quizzes::export))
        .route(QUIZ_ROOM, get(quizzes::ws))
        .route("/api/events", post(engagement::ingest))
        .route("/api/events/batch", post(engagement::ingest_batch))
        .route("/api/matches/{matchId}/metrics", get(engagement::metrics))
        .route("/api/matches/{matchId}/metrics/live", get(engagement::live))
        .route("/api/matches/{matchId}/stream", get(engagement::stream))
        .route("/api/matches/{matchId}/events", get(engagement::events))
        .route("/api/matches/{matchId}/events/{eventId}", get(engagement::event))
        .route("/api/matches/{matchId}/replay", post(engagement::replay))
}

/// The one route that also takes its token outside the `Authorization` header: browsers
/// cannot set headers on a WebSocket. It comes in the subprotocol list as
/// `ewpm.bearer.<token>` beside [`ROOM_PROTOCOL`] (what the web app sends: no URL carries
/// it), or as the `access_token` query parameter.
const QUIZ_ROOM: &str = "/api/quiz-sessions/{id}/ws";

/// The subprotocol the quiz room answers with when a client offers it.
pub const ROOM_PROTOCOL: &str = "ewpm.room.v1";

/// The prefix of the subprotocol entry that carries a bearer token.
const BEARER_PROTOCOL: &str = "ewpm.bearer.";

/// Verifies the bearer token before anything reads the request (a bad body from a caller
/// without a valid token is 401, not 400), and hands the [`Caller`] to the handler. The
/// services verify it again: the edge forwards it untouched.
///
/// On [`QUIZ_ROOM`] only, a request without the header may carry the token as the
/// `access_token` query parameter. It is taken out of the URI here, before anything else
/// sees the request (request spans and metrics name the route template, never the URI, and
/// no handler reads it), and handed on as the `authorization` header the upstream calls
/// forward.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let is_room =
        request.extensions().get::<MatchedPath>().is_some_and(|p| p.as_str() == QUIZ_ROOM);
    let query_token = if is_room { take_query_token(&mut request) } else { None };
    let protocol_token = if is_room { take_protocol_token(&mut request) } else { None };
    if let Some(token) = protocol_token.or(query_token)
        && !request.headers().contains_key(http::header::AUTHORIZATION)
        && let Ok(mut value) = http::HeaderValue::from_str(&format!("Bearer {token}"))
    {
        value.set_sensitive(true);
        request.headers_mut().insert(http::header::AUTHORIZATION, value);
    }
    let header = request.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match state.keys.verify_header(header) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(status) => Problem::from_status(&status, "").into_response(),
    }
}

/// Removes every `ewpm.bearer.<token>` entry from the request's `Sec-WebSocket-Protocol`
/// list (so nothing after this sees the token there); answers the first one's token.
fn take_protocol_token(request: &mut Request) -> Option<String> {
    let name = http::header::SEC_WEBSOCKET_PROTOCOL;
    let offered: Vec<String> = request
        .headers()
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let token = offered.iter().find_map(|p| p.strip_prefix(BEARER_PROTOCOL)).map(str::to_string)?;
    let kept: Vec<&str> =
        offered.iter().filter(|p| !p.starts_with(BEARER_PROTOCOL)).map(String::as_str).collect();
    request.headers_mut().remove(&name);
    if !kept.is_empty()
        && let Ok(value) = http::HeaderValue::from_str(&kept.join(", "))
    {
        request.headers_mut().insert(name, value);
    }
    Some(token)
}

/// Removes every `access_token` parameter from the request's query; answers the first one's
/// value (percent-decoded).
fn take_query_token(request: &mut Request) -> Option<String> {
    let query = request.uri().query()?;
    let mut token = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == "access_token" {
            if token.is_none() {
                token = Some(percent_decode(value));
            }
        } else if !pair.is_empty() {
            kept.push(pair);
        }
    }
    token.as_ref()?;
    let path = request.uri().path();
    let rebuilt =
        if kept.is_empty() { path.to_string() } else { format!("{path}?{}", kept.join("&")) };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = rebuilt.parse().ok();
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    token
}

/// `%XX` escapes and `+` in a query value, decoded; invalid escapes are kept as they are.
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Errors axum itself answers (a malformed query or path, 405, 413…) come as plain text;
/// turn every error that is not problem+json yet into one, keeping its message.
async fn problem_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let allow = response.headers().get(http::header::ALLOW).cloned();
    let body = axum::body::to_bytes(response.into_body(), 16 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_string();
    let reason = match status {
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
        s if s.is_client_error() => "INVALID_ARGUMENT",
        _ => "INTERNAL",
    };
    let detail = if text.is_empty() || status.is_server_error() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut problem = Problem::new(status, reason, detail).into_response();
    if let Some(allow) = allow {
        problem.headers_mut().insert(http::header::ALLOW, allow);
    }
    problem
}

/// Serves the REST edge on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    mut state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    state.closing = shutdown.clone();
    let watcher = tokio::spawn(watch_upstreams(state.clone(), shutdown.clone()));
    let served = axum::serve(ewpm_kit::server::nodelay(listener), router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("REST edge failed");
    watcher.abort();
    served
}

/// Readiness with each upstream's status as last checked (at most a second old): 200 (`ok`,
/// or `degraded` when some upstream is down, so one service's outage does not take the whole
/// edge out of rotation), 503 when no upstream serves. Answered from memory: `/health` costs
/// the upstreams nothing however often it is called.
/// Liveness: the edge's process answers; asks nothing of anyone (a liveness probe that
/// depended on the upstreams would restart a healthy edge when they are down).
async fn livez() -> &'static str {
    "ok"
}

async fn health(State(state): State<AppState>) -> Response {
    let answer = state.upstream_health.read().unwrap_or_else(|p| p.into_inner()).clone();
    let mut response = Response::new(axum::body::Body::from(answer.body.clone()));
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers.clone();
    response
}

/// `/health`'s answer, made once per look at the upstreams.
struct HealthAnswer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
}

impl HealthAnswer {
    /// The answer for `services` (name, state): 200 `ok` when every upstream serves,
    /// `degraded` when some do, 503 problem+json when none does.
    fn of(services: &[(&'static str, String)]) -> Self {
        let serving = services.iter().filter(|(_, s)| s == "serving").count();
        if serving == 0 {
            let detail =
                services.iter().map(|(n, s)| format!("{n}: {s}")).collect::<Vec<_>>().join("; ");
            let problem =
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "UPSTREAM_NOT_SERVING", detail);
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/problem+json"),
            );
            headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
            return Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                headers,
                body: serde_json::to_vec(&problem).unwrap_or_default().into(),
            };
        }
        let map: serde_json::Map<String, serde_json::Value> = services
            .iter()
            .map(|(n, s)| (n.to_string(), serde_json::Value::from(s.as_str())))
            .collect();
        let status = if serving == services.len() { "ok" } else { "degraded" };
        let mut headers = http::HeaderMap::new();
        headers
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        Self {
            status: StatusCode::OK,
            headers,
            body: serde_json::to_vec(&serde_json::json!({"status": status, "services": map}))
                .unwrap_or_default()
                .into(),
        }
    }
}

/// `serving`, `not serving`, or why the check failed.
async fn upstream_health(upstream: &Upstream, service: &str) -> String {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let mut request = tonic::Request::new(HealthCheckRequest { service: service.to_string() });
    request.set_timeout(std::time::Duration::from_secs(2));
    match HealthClient::new(upstream.clone()).check(request).await {
        Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => "serving".to_string(),
        Ok(_) => "not serving".to_string(),
        Err(status) => format!("unavailable ({})", status.message()),
    }
}

/// A protobuf timestamp as RFC 3339 UTC (`2026-01-31T00:00:00Z`); empty when unset.
pub(crate) fn rfc3339(ts: Option<prost_types::Timestamp>) -> String {
    ts.as_ref()
        .and_then(ewpm_kit::timestamp::from_proto)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

/// Prometheus metrics of this process.
async fn metrics() -> String {
    ewpm_kit::telemetry::metrics_handle().render()
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "ROUTE_NOT_FOUND", "no such route")
}

/// A span per request (with the trace id) and request metrics by route template.
async fn observe(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    // A method is any token a caller likes: only the standard ones are labels.
    let method = match *request.method() {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let trace_id = ewpm_kit::server::trace_id(request.headers());
    let span = tracing::info_span!("http", http.method = %method, http.route = %route, %trace_id);
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed().as_secs_f64();
    metrics::counter!("http_server_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_server_request_duration_seconds", "method" => method, "route" => route).record(elapsed);
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_ms = elapsed * 1e3,
            "request finished"
        )
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room_request(protocols: &[&str]) -> Request {
        let mut builder = http::Request::builder().uri("/api/quiz-sessions/x/ws?top=5");
        for p in protocols {
            builder = builder.header(http::header::SEC_WEBSOCKET_PROTOCOL, *p);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    fn offered(request: &Request) -> Vec<String> {
        request
            .headers()
            .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn the_bearer_subprotocol_is_taken_out_and_the_rest_kept() {
        let mut r = room_request(&["ewpm.room.v1, ewpm.bearer.abc.def-ghi_j"]);
        assert_eq!(take_protocol_token(&mut r).as_deref(), Some("abc.def-ghi_j"));
        assert_eq!(offered(&r), ["ewpm.room.v1"]);

        // Over several header lines, the first token wins and every bearer entry goes.
        let mut r = room_request(&["ewpm.bearer.one", "ewpm.room.v1", "ewpm.bearer.two"]);
        assert_eq!(take_protocol_token(&mut r).as_deref(), Some("one"));
        assert_eq!(offered(&r), ["ewpm.room.v1"]);

        // Only a bearer entry: the header goes entirely.
        let mut r = room_request(&["ewpm.bearer.t"]);
        assert_eq!(take_protocol_token(&mut r).as_deref(), Some("t"));
        assert!(offered(&r).is_empty());

        // No bearer entry: nothing changes.
        let mut r = room_request(&["ewpm.room.v1, chat"]);
        assert_eq!(take_protocol_token(&mut r), None);
        assert_eq!(offered(&r), ["ewpm.room.v1, chat"]);
        let mut r = room_request(&[]);
        assert_eq!(take_protocol_token(&mut r), None);
    }

    #[test]
    fn every_operation_documents_401_403_429_and_503() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut missing = Vec::new();
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                operations += 1;
                for code in ["401", "403", "429", "503"] {
                    if op["responses"].get(code).is_none() {
                        missing.push(format!("{method} {path} {code}"));
                    }
                }
                let retry = &op["responses"]["429"]["headers"]["Retry-After"];
                if retry.is_null() {
                    missing.push(format!("{method} {path} 429 Retry-After"));
                }
            }
        }
        assert!(operations >= 20, "{operations} operations");
        assert_eq!(missing, Vec::<String>::new());
    }

    #[test]
    fn every_board_route_is_documented_under_boards_with_its_own_statuses() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let routes = [
            ("post", "/api/boards", &["201", "400", "403", "409"][..]),
            ("get", "/api/boards/{board}", &["200", "404"]),
            ("get", "/api/boards/{board}/periods", &["200", "400", "404"]),
            (
                "post",
                "/api/boards/{board}/scores",
                &["201", "200", "400", "403", "404", "409", "422"],
            ),
            ("get", "/api/boards/{board}/entries", &["200", "400", "404"]),
            ("get", "/api/boards/{board}/rank", &["200", "400", "404"]),
            ("get", "/api/boards/{board}/ranks", &["200", "400", "404"]),
            ("get", "/api/boards/{board}/stream", &["200", "400", "404"]),
            ("post", "/api/boards/{board}/voids", &["201", "200", "400", "403", "404"]),
            ("get", "/api/me/privacy", &["200"]),
            ("put", "/api/me/privacy", &["200", "400"]),
            ("get", "/api/employers/{employerId}/board-settings", &["200", "403"]),
            ("put", "/api/employers/{employerId}/board-settings", &["200", "400", "403"]),
        ];
        let mut missing = Vec::new();
        for (method, path, codes) in routes {
            let op = &doc["paths"][path][method];
            if op["tags"] != serde_json::json!(["boards"]) {
                missing.push(format!("{method} {path} tag"));
            }
            for code in codes.iter().chain(&["401", "403", "429", "503"]) {
                let response = &op["responses"][*code];
                let media = if code.starts_with('2') {
                    if path.ends_with("/stream") { "text/event-stream" } else { "application/json" }
                } else {
                    "application/problem+json"
                };
                if response["content"][media].is_null() {
                    missing.push(format!("{method} {path} {code} {media}"));
                }
            }
        }
        assert_eq!(missing, Vec::<String>::new());
    }

    fn state() -> (AppState, TokenKeys) {
        let settings = ewpm_kit::settings::Settings::default();
        let addrs = UPSTREAMS.map(|(name, _)| (name.to_string(), "http://127.0.0.1:9".to_string()));
        let state = AppState::connect(
            &addrs.into_iter().collect(),
            TokenKeys::new("test", &settings.auth),
            &settings.limits,
        )
        .unwrap();
        (state, TokenKeys::new("test", &settings.auth))
    }

    async fn call(uri: &str, authorization: Option<&str>) -> (u16, serde_json::Value) {
        use tower::Service;
        let (state, _) = state();
        let mut request = http::Request::get(uri);
        if let Some(value) = authorization {
            request = request.header(http::header::AUTHORIZATION, value);
        }
        let response =
            router(state).call(request.body(axum::body::Body::empty()).unwrap()).await.unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    #[tokio::test]
    async fn the_quiz_room_takes_its_token_from_the_query_and_no_other_route_does() {
        let token = state().1.mint("ann", ewpm_kit::auth::Role::Employee, None);
        // Authenticated: what answers is the upgrade check (this is no WebSocket request).
        let (status, body) =
            call(&format!("/api/quiz-sessions/s-1/ws?top=5&access_token={token}"), None).await;
        assert_eq!((status, &body["reason"]), (400, &serde_json::json!("INVALID_ARGUMENT")));
        let (status, body) = call("/api/quiz-sessions/s-1/ws?access_token=forged", None).await;
        assert_eq!((status, &body["reason"]), (401, &serde_json::json!("INVALID_TOKEN")));
        let (status, body) = call(&format!("/api/quizzes?access_token={token}"), None).await;
        assert_eq!((status, &body["reason"]), (401, &serde_json::json!("MISSING_TOKEN")));
        // The header, when present, is the token; the query one is dropped.
        let bearer = format!("Bearer {token}");
        let (status, _) =
            call("/api/quiz-sessions/s-1/ws?access_token=forged", Some(bearer.as_str())).await;
        assert_eq!(status, 400);
    }

    #[test]
    fn the_query_token_is_taken_out_of_the_uri_and_decoded() {
        let mut request = Request::new(axum::body::Body::empty());
        *request.uri_mut() =
            "/api/quiz-sessions/s/ws?top=5&access_token=a%2Eb+c&x=1&access_token=z"
                .parse()
                .unwrap();
        assert_eq!(take_query_token(&mut request).as_deref(), Some("a.b c"));
        assert_eq!(request.uri().to_string(), "/api/quiz-sessions/s/ws?top=5&x=1");
        *request.uri_mut() = "/p?access_token=t".parse().unwrap();
        assert_eq!(take_query_token(&mut request).as_deref(), Some("t"));
        assert_eq!(request.uri().to_string(), "/p");
        *request.uri_mut() = "/p?top=5".parse().unwrap();
        assert_eq!(take_query_token(&mut request), None);
        assert_eq!(request.uri().to_string(), "/p?top=5");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
