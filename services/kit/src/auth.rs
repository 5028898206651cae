//! Identity: bearer JWTs (HS256), the interceptor every service mounts, and [`Caller`], the
//! verified identity an RPC handler reads.
//!
//! Tokens carry `sub` (user id), `employer_id`, `role`, and the standard `iss`, `aud`, `iat`,
//! `exp`. Only HS256 is accepted: `alg: none` and every other algorithm are rejected, as are
//! expired tokens (30 s leeway) and tokens for another issuer or audience.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tonic::{Code, Request, Status, service::Interceptor};

use crate::{
    error,
    settings::{AuthSettings, LimitSettings},
};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Platform operator: everything.
    Admin,
    /// Manages one employer's programs.
    EmployerAdmin,
    /// A participant.
    Employee,
    /// A device or feed that sends events (fan engagement's IngestEvents) and nothing else:
    /// every other service refuses it (see [`Authenticator::admitting_ingest`]).
    Ingest,
}

impl Role {
    /// The wire name (`admin`, `employer_admin`, `employee`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::EmployerAdmin => "employer_admin",
            Role::Employee => "employee",
            Role::Ingest => "ingest",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "employer_admin" => Ok(Role::EmployerAdmin),
            "employee" => Ok(Role::Employee),
            "ingest" => Ok(Role::Ingest),
            other => Err(format!(
                "unknown role {other:?}: use admin, employer_admin, employee or ingest"
            )),
        }
    }
}

/// The claims of an EWPM token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The user's employer, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employer_id: Option<String>,
    /// The user's role.
    pub role: Role,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expires at (seconds since the epoch).
    pub exp: i64,
}

/// Whether `id` is a well-formed employer id: 1 to 64 ASCII letters, digits, `-`, `_`, `.`.
pub fn is_valid_employer_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Longest accepted user id (`sub`).
pub const MAX_SUBJECT_CHARS: usize = 128;

/// The verified identity of the caller of an RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user id (`sub`).
    pub user_id: String,
    /// The caller's employer.
    pub employer_id: Option<String>,
    /// The caller's role.
    pub role: Role,
}

impl Caller {
    /// The caller of `request`, as the interceptor verified it. Unauthenticated if the
    /// service was mounted without the interceptor (a wiring bug, not a client error).
    pub fn of<T>(request: &Request<T>) -> Result<Caller, Status> {
        request.extensions().get::<Caller>().cloned().ok_or_else(|| {
            error::status(Code::Unauthenticated, "UNAUTHENTICATED", "missing caller identity")
        })
    }

    /// Whether the caller is a platform admin.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// The bearer a service presents when it calls another service: an `admin` token for the
/// subject `service:<name>`, minted with the mesh's secret and re-minted well before it
/// expires.
pub struct ServiceToken {
    keys: TokenKeys,
    subject: String,
    current: std::sync::Mutex<(String, i64)>,
}

impl ServiceToken {
    /// The token of service `name`.
    pub fn new(keys: TokenKeys, name: &str) -> Self {
        let subject = format!("service:{name}");
        let token = keys.mint(&subject, Role::Admin, None);
        let now = chrono::Utc::now().timestamp();
        Self { keys, subject, current: std::sync::Mutex::new((token, now)) }
    }

    /// `Bearer <token>`, as the `authorization` metadata value.
    pub fn bearer(&self) -> String {
        let now = chrono::Utc::now().timestamp();
        let refresh = i64::try_from(self.keys.ttl_secs / 2).unwrap_or(i64::MAX).min(3600);
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if now - current.1 >= refresh {
            *current = (self.keys.mint(&self.subject, Role::Admin, None), now);
        }
        format!("Bearer {}", current.0)
    }

    /// Adds the bearer to an outgoing request.
    pub fn authorize<T>(&self, mut request: Request<T>) -> Request<T> {
        if let Ok(value) = self.bearer().parse() {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }
}

/// Signs and verifies tokens with one HS256 secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl_secs: u64,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Keys for `secret` with the issuer, audience and lifetime of `settings`.
    pub fn new(secret: &str, settings: &AuthSettings) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.leeway = 30;
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            ttl_secs: settings.token_ttl_secs,
        }
    }

    /// A keyed digest of `message`: HMAC-SHA256 under the token secret (base64url), stable
    /// while the secret is, and unguessable without it (e.g. pseudonyms that cannot be
    /// computed from a known user id). It is the signature of a token that expired at the
    /// epoch for an audience nothing accepts, so it is never a credential.
    pub fn digest(&self, message: &str) -> String {
        let claims = Claims {
            sub: message.to_string(),
            employer_id: None,
            role: Role::Employee,
            iss: "ewpm-digest".to_string(),
            aud: "ewpm-digest".to_string(),
            iat: 0,
            exp: 0,
        };
        let token = self.encode(&claims);
        token.rsplit('.').next().unwrap_or_default().to_string()
    }

    /// Keys from the configured secret; without one, the development key kept in
    /// `<data_dir>/dev-jwt-secret` (created on first use), so that `ewpm token` run in the
    /// same directory mints tokens a running `ewpm dev` accepts.
    pub fn for_embedded(settings: &AuthSettings, data_dir: &Path) -> anyhow::Result<Self> {
        if let Some(secret) = &settings.secret {
            return Ok(Self::new(secret, settings));
        }
        let path = data_dir.join("dev-jwt-secret");
        let secret = match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
            _ => {
                std::fs::create_dir_all(data_dir)
                    .with_context(|| format!("create {}", data_dir.display()))?;
                let secret =
                    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
                std::fs::write(&path, &secret)
                    .with_context(|| format!("write {}", path.display()))?;
                secret
            }
        };
        Ok(Self::new(&secret, settings))
    }

    /// Keys from the configured secret, or an error naming the variable that sets it.
    pub fn required(settings: &AuthSettings) -> anyhow::Result<Self> {
        let secret = settings
            .secret
            .as_deref()
            .filter(|s| !s.is_empty())
            .context("EWPM_AUTH__SECRET (the HS256 token secret) is required here")?;
        Ok(Self::new(secret, settings))
    }

    /// Mints a token for `sub` with `role` and optional `employer_id`.
    pub fn mint(&self, sub: &str, role: Role, employer_id: Option<&str>) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: sub.to_string(),
            employer_id: employer_id.map(str::to_string),
            role,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + i64::try_from(self.ttl_secs).unwrap_or(i64::MAX / 2),
        };
        self.encode(&claims)
    }

    /// Signs arbitrary claims (tests use it for expired tokens).
    pub fn encode(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing of serializable claims cannot fail")
    }

    /// Verifies a token and returns the caller it names.
    pub fn verify(&self, token: &str) -> Result<Caller, Status> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|err| {
                tracing::debug!(%err, "token rejected");
                error::status(Code::Unauthenticated, "INVALID_TOKEN", "invalid or expired token")
            })?;
        let c = data.claims;
        let printable = |s: &str, max: usize| {
            !s.is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control)
        };
        if !printable(&c.sub, MAX_SUBJECT_CHARS) {
            return Err(error::status(
                Code::Unauthenticated,
                "INVALID_TOKEN",
                "token subject must be 1 to 128 printable characters",
            ));
        }
        if let Some(e) = c.employer_id.as_deref().filter(|e| !e.is_empty())
            && !is_valid_employer_id(e)
        {
            return Err(error::status(
                Code::Unauthenticated,
                "INVALID_TOKEN",
                "token employer_id must be 1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        Ok(Caller {
            user_id: c.sub,
            employer_id: c.employer_id.filter(|e| !e.is_empty()),
            role: c.role,
        })
    }

    /// Verifies an `authorization` header value (`Bearer <jwt>`).
    pub fn verify_header(&self, header: Option<&str>) -> Result<Caller, Status> {
        let header = header.ok_or_else(|| {
            error::status(Code::Unauthenticated, "MISSING_TOKEN", "missing bearer token")
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                error::status(
                    Code::Unauthenticated,
                    "MISSING_TOKEN",
                    "authorization must be `Bearer <token>`",
                )
            })?;
        self.verify(token.trim())
    }
}

/// The gRPC interceptor: verifies the bearer token and stores the [`Caller`] in the request
/// extensions; answers Unauthenticated otherwise. With a [`RateLimit`] it also holds each
/// caller to its rate.
#[derive(Clone, Debug)]
pub struct Authenticator {
    keys: Arc<TokenKeys>,
    limit: Option<Arc<RateLimit>>,
    /// Whether `ingest` tokens pass (only for the services that take events).
    ingest: bool,
}

impl Authenticator {
    /// An interceptor verifying with `keys`, with no rate limit.
    pub fn new(keys: TokenKeys) -> Self {
        Self { keys: Arc::new(keys), limit: None, ingest: false }
    }

    /// The same, holding every caller to `limits` (none when its rate is 0).
    pub fn with_limits(keys: TokenKeys, limits: &LimitSettings) -> Self {
        Self { keys: Arc::new(keys), limit: RateLimit::new(limits).map(Arc::new), ingest: false }
    }

    /// The same interceptor, letting `ingest` tokens through as well (every other service
    /// refuses them with PERMISSION_DENIED `INGEST_TOKEN`, so a device's token reads nothing).
    pub fn admitting_ingest(&self) -> Self {
        Self { ingest: true, ..self.clone() }
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let caller = self.keys.verify_header(header)?;
        if caller.role == Role::Ingest && !self.ingest {
            return Err(error::status(
                Code::PermissionDenied,
                "INGEST_TOKEN",
                "an ingest token may only send events",
            ));
        }
        if let Some(limit) = &self.limit {
            limit.check(&caller)?;
        }
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// Callers whose rate state is kept at most before idle ones are forgotten: an idle caller's
/// state is full again anyway, so forgetting it changes no answer.
const MAX_TRACKED_CALLERS: usize = 100_000;

/// A per-caller rate limit (GCRA, `governor`): `rate_per_sec` sustained with `burst` on top,
/// keyed by the verified subject. Service-to-service callers (`service:*`) are not limited.
/// State is bounded: past [`MAX_TRACKED_CALLERS`] subjects, those whose bucket is full again
/// are dropped.
pub struct RateLimit {
    limiter: governor::DefaultKeyedRateLimiter<String>,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").field("callers", &self.limiter.len()).finish()
    }
}

impl RateLimit {
    /// The limit of `limits`, or none when its rate is 0.
    pub fn new(limits: &LimitSettings) -> Option<Self> {
        let rate = std::num::NonZeroU32::new(limits.rate_per_sec)?;
        let burst =
            std::num::NonZeroU32::new(limits.burst.max(limits.rate_per_sec)).unwrap_or(rate);
        let quota = governor::Quota::per_second(rate).allow_burst(burst);
        Some(Self { limiter: governor::RateLimiter::keyed(quota) })
    }

    /// Counts one call of `caller`; RESOURCE_EXHAUSTED (reason `RATE_LIMITED`, with the wait in
    /// `RetryInfo`) when it is over its rate.
    pub fn check(&self, caller: &Caller) -> Result<(), Status> {
        if caller.user_id.starts_with("service:") {
            return Ok(());
        }
        if self.limiter.len() > MAX_TRACKED_CALLERS {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&caller.user_id).map_err(|not_until| {
            use governor::clock::Clock;
            let wait = not_until.wait_time_from(self.limiter.clock().now());
            metrics::counter!("ewpm_rate_limited_total").increment(1);
            error::retry_after(
                Code::ResourceExhausted,
                "RATE_LIMITED",
                format!("too many requests; retry in {} ms", wait.as_millis().max(1)),
                wait.max(std::time::Duration::from_millis(1)),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> TokenKeys {
        TokenKeys::new(secret, &crate::settings::Settings::default().auth)
    }

    fn reason(status: &Status) -> String {
        use tonic_types::StatusExt;
        status.get_error_details().error_info().map(|i| i.reason.clone()).unwrap_or_default()
    }

    #[test]
    fn a_minted_token_verifies_to_its_caller() {
        let k = keys("secret");
        let token = k.mint("u1", Role::EmployerAdmin, Some("acme"));
        let caller = k.verify_header(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!(
            caller,
            Caller {
                user_id: "u1".into(),
                employer_id: Some("acme".into()),
                role: Role::EmployerAdmin
            }
        );
    }

    #[test]
    fn an_ingest_token_passes_only_the_interceptor_that_admits_ingest() {
        let k = keys("secret");
        let bearer = format!("Bearer {}", k.mint("feed-1", Role::Ingest, None));
        let request = || {
            let mut r = Request::new(());
            r.metadata_mut().insert("authorization", bearer.parse().unwrap());
            r
        };
        let mut plain = Authenticator::new(k.clone());
        let err = plain.call(request()).unwrap_err();
        assert_eq!((err.code(), reason(&err)), (Code::PermissionDenied, "INGEST_TOKEN".into()));
        let mut ingest = plain.admitting_ingest();
        let admitted = ingest.call(request()).unwrap();
        assert_eq!(admitted.extensions().get::<Caller>().map(|c| c.role), Some(Role::Ingest));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_rejected() {
        let token = keys("other").mint("u1", Role::Admin, None);
        let err = keys("secret").verify(&token).unwrap_err();
        assert_eq!((err.code(), reason(&err)), (Code::Unauthenticated, "INVALID_TOKEN".into()));
    }

    #[test]
    fn an_expired_token_is_rejected() {
        let k = keys("secret");
        let now = chrono::Utc::now().timestamp();
        let token = k.encode(&Claims {
            sub: "u1".into(),
            employer_id: None,
            role: Role::Admin,
            iss: "ewpm".into(),
            aud: "ewpm".into(),
            iat: now - 7200,
            exp: now - 3600,
        });
        assert_eq!(k.verify(&token).unwrap_err().code(), Code::Unauthenticated);
    }

    #[test]
    fn a_token_for_another_audience_is_rejected() {
        let k = keys("secret");
        let now = chrono::Utc::now().timestamp();
        let token = k.encode(&Claims {
            sub: "u1".into(),
            employer_id: None,
            role: Role::Admin,
            iss: "ewpm".into(),
            aud: "someone-else".into(),
            iat: now,
            exp: now + 60,
        });
        assert_eq!(k.verify(&token).unwrap_err().code(), Code::Unauthenticated);
    }

    #[test]
    fn an_unsigned_alg_none_token_is_rejected() {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let now = chrono::Utc::now().timestamp();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"sub":"u1","role":"admin","iss":"ewpm","aud":"ewpm","iat":{now},"exp":{}}}"#,
            now + 60
        ));
        let err = keys("secret").verify(&format!("{header}.{body}.")).unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }

    #[test]
    fn a_signed_token_with_unusable_claims_is_rejected() {
        let k = keys("secret");
        let long = k.mint(&"u".repeat(129), Role::Employee, None);
        assert_eq!(k.verify(&long).unwrap_err().code(), Code::Unauthenticated);
        let weird = k.mint("u1", Role::Employee, Some("acme corp/../"));
        assert_eq!(k.verify(&weird).unwrap_err().code(), Code::Unauthenticated);
    }

    #[test]
    fn a_missing_or_malformed_header_is_unauthenticated() {
        let k = keys("secret");
        assert_eq!(reason(&k.verify_header(None).unwrap_err()), "MISSING_TOKEN");
        assert_eq!(reason(&k.verify_header(Some("Basic abc")).unwrap_err()), "MISSING_TOKEN");
        assert_eq!(reason(&k.verify_header(Some("Bearer garbage")).unwrap_err()), "INVALID_TOKEN");
    }

    #[test]
    fn a_digest_is_stable_per_secret_and_differs_across_secrets_and_messages() {
        let (a, b) = (keys("one"), keys("two"));
        assert_eq!(a.digest("alice"), a.digest("alice"));
        assert_ne!(a.digest("alice"), a.digest("bob"));
        assert_ne!(a.digest("alice"), b.digest("alice"));
        assert!(a.digest("alice").len() >= 40);
        assert!(a.verify(&format!("x.y.{}", a.digest("alice"))).is_err());
    }

    #[test]
    fn the_development_key_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::settings::Settings::default().auth;
        let first = TokenKeys::for_embedded(&settings, dir.path()).unwrap();
        let second = TokenKeys::for_embedded(&settings, dir.path()).unwrap();
        let token = first.mint("u1", Role::Employee, None);
        assert_eq!(second.verify(&token).unwrap().user_id, "u1");
    }
}
