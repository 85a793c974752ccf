//! The routes: the JSON API under `/v1` (bearer token), the page, the
//! probes and the metrics; the JSON errors; the OpenAPI document.
//!
//! Reads come from the hub's copy of the records, never from the loop.
//! Actions go to the loop as control requests, exactly like the CLI's, so
//! they have the CLI's semantics (a stop answers once the worker is gone).
//! Work that grows with the number of sessions (the list, the metrics)
//! runs on the blocking pool, so that 10,000 sessions do not hold up the
//! loop's thread.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;
use wa_ctl_core::census;
use wa_ctl_core::config::Config;
use wa_ctl_core::control::{self, Request as ControlRequest};
use wa_ctl_core::lifecycle::State as SessionState;
use wa_ctl_core::status::{SessionRecord, SessionReport, unix_ms};
use wa_ctl_core::supervisor::ControlHandle;

use crate::auth::Token;
use crate::hub::{ApiEvent, Hub, qr_of};
use crate::metrics::{Metrics, Processes};

/// The largest request body.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// Requests that may use the blocking pool at once (the list, the
/// metrics): the pool is shared with the supervisor's own jobs (prepares,
/// sweeps), which a flood of scrapes must not hold up.
const BLOCKING_REQUESTS: usize = 2;

/// How long `/healthz` waits for the loop.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a `login` waits for the loop's first answer.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The page's Content-Security-Policy: its own inline script and style,
/// requests to this origin, images from blobs; nothing else.
const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
     img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const PAGE: &str = include_str!("../assets/index.html");

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    hub: Arc<Hub>,
    control: ControlHandle,
    token: Token,
    metrics: Arc<Metrics>,
    config: Arc<Config>,
    blocking: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// Runs `job` on the blocking pool, at most [`BLOCKING_REQUESTS`] at
    /// once (the others wait here, off the loop).
    async fn blocking<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let _permit = self
            .blocking
            .acquire()
            .await
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }

    pub(crate) fn new(
        hub: Arc<Hub>,
        control: ControlHandle,
        token: String,
        config: Config,
        webhooks: Vec<Arc<crate::webhook::Queue>>,
    ) -> AppState {
        AppState {
            metrics: Arc::new(Metrics::new(Arc::clone(&hub), webhooks)),
            hub,
            control,
            token: Token::new(&token),
            config: Arc::new(config),
            blocking: Arc::new(tokio::sync::Semaphore::new(BLOCKING_REQUESTS)),
        }
    }
}

/// An error, as every route answers one: `{"error": "...", "status": N}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong, in a sentence.
    error: String,
    /// The HTTP status, repeated.
    status: u16,
}

#[derive(Debug)]
pub(crate) struct ApiError(StatusCode, String);

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError(status, message.into())
    }

    fn unknown(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no session {} in the configuration",
                wa_ctl_core::text::Quoted(id)
            ),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.1,
            status: self.0.as_u16(),
        };
        let mut response = (self.0, axum::Json(body)).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"wa-ctl\""),
            );
        }
        response
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> ApiError {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("the body is larger than {} KiB", MAX_BODY / 1024)
        } else {
            rejection.body_text()
        };
        ApiError::new(status, message)
    }
}

/// The answer to an action: what the supervisor said, and the session now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ActionBody {
    /// The supervisor's answer, e.g. `session a: starting`.
    message: String,
    session: SessionReport,
}

/// `POST /v1/sessions/{id}/login`'s optional body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    /// Pair with a code typed on this phone instead of a QR code
    /// (international format, e.g. `+15551234567`).
    phone: Option<String>,
}

/// `GET /healthz`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    /// Whether the loop answered.
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `GET /readyz`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Readiness {
    /// Whether every session is settled.
    ready: bool,
    /// The sessions still starting or stopping.
    waiting: Vec<String>,
}

/// The OpenAPI document of the `/v1` routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "wa-ctl",
        description = "The HTTP API of the wa-ctl supervisor (docs/http-api.md).",
        license(name = "MIT")
    ),
    paths(
        list_sessions,
        get_session,
        start_session,
        stop_session,
        restart_session,
        login_session,
        session_qr,
        events,
        healthz,
        readyz,
        metrics
    ),
    components(schemas(SessionReport, ApiEvent, ErrorBody, ActionBody, LoginBody, Health, Readiness)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document, as `GET /v1/openapi.json` serves it.
pub fn openapi() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.to_pretty_json().expect("the document serializes")
}

pub(crate) fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/sessions", get(list_sessions))
        .route("/sessions/{id}", get(get_session))
        .route("/sessions/{id}/start", post(start_session))
        .route("/sessions/{id}/stop", post(stop_session))
        .route("/sessions/{id}/restart", post(restart_session))
        .route("/sessions/{id}/login", post(login_session))
        .route("/sessions/{id}/qr", get(session_qr))
        .route("/events", get(events))
        .route("/openapi.json", get(openapi_json))
        .fallback(not_found)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/v1", v1)
        .fallback(not_found)
        .layer(middleware::from_fn(limit_body))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route: see /v1/openapi.json")
}

/// Every `/v1` route: the bearer token, or 401.
async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if !state.token.accepts(header) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: send `Authorization: Bearer <token>` (the token is in the \
             [http] token_file)",
        )
        .into_response();
    }
    next.run(request).await
}

/// A declared body over the limit is refused before it is read (413), on
/// every route; a chunked one is cut off by the body extractor.
async fn limit_body(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {} KiB", MAX_BODY / 1024),
        )
        .into_response();
    }
    next.run(request).await
}

fn report(record: &SessionRecord) -> SessionReport {
    SessionReport::from_record(record.clone(), unix_ms(SystemTime::now()))
}

/// `Cache-Control: no-store` on everything that shows a session.
fn private(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Every session, as `wa-ctl status --json` shows them under `sessions`.
#[utoipa::path(get, path = "/v1/sessions", security(("bearer" = [])),
    responses((status = 200, description = "Every configured session, in configuration order", body = [SessionReport]),
              (status = 401, body = ErrorBody)))]
async fn list_sessions(State(state): State<AppState>) -> Result<Response, ApiError> {
    let records = state.hub.records();
    let body = state
        .blocking(move || {
            let now = unix_ms(SystemTime::now());
            let reports: Vec<SessionReport> = records
                .iter()
                .map(|r| SessionReport::from_record((**r).clone(), now))
                .collect();
            serde_json::to_vec(&reports)
        })
        .await?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(private(
        ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
    ))
}

/// One session.
#[utoipa::path(get, path = "/v1/sessions/{id}", security(("bearer" = [])),
    params(("id" = String, Path, description = "The session's id")),
    responses((status = 200, body = SessionReport), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn get_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = state
        .hub
        .record(&id)
        .ok_or_else(|| ApiError::unknown(&id))?;
    Ok(private(axum::Json(report(&record)).into_response()))
}

async fn action(
    state: AppState,
    id: String,
    request: ControlRequest,
) -> Result<Response, ApiError> {
    if state.hub.record(&id).is_none() {
        return Err(ApiError::unknown(&id));
    }
    let answer = state.control.request(request).await;
    if !answer.ok {
        let status =
            if answer.message.contains("shutting down") || answer.message.contains("exiting") {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::CONFLICT
            };
        return Err(ApiError::new(status, answer.message));
    }
    let record = state
        .hub
        .record(&id)
        .ok_or_else(|| ApiError::unknown(&id))?;
    Ok(private(
        axum::Json(ActionBody {
            message: answer.message,
            session: report(&record),
        })
        .into_response(),
    ))
}

/// Starts a session (stopped, failed, logged out or locked), like `wa-ctl start ID`.
#[utoipa::path(post, path = "/v1/sessions/{id}/start", security(("bearer" = [])),
    params(("id" = String, Path, description = "The session's id")),
    responses((status = 200, description = "Answered once the session has a worker starting (or stands by)", body = ActionBody),
              (status = 404, body = ErrorBody), (status = 409, description = "Another supervisor holds the session's lock", body = ErrorBody),
              (status = 503, description = "The supervisor is shutting down", body = ErrorBody)))]
async fn start_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let request = ControlRequest::Start {
        session: id.clone(),
    };
    action(state, id, request).await
}

/// Stops a session, like `wa-ctl stop ID`: answered once its worker is gone.
#[utoipa::path(post, path = "/v1/sessions/{id}/stop", security(("bearer" = [])),
    params(("id" = String, Path, description = "The session's id")),
    responses((status = 200, body = ActionBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn stop_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let request = ControlRequest::Stop {
        session: id.clone(),
    };
    action(state, id, request).await
}

/// Stops, then starts a session, like `wa-ctl restart ID`.
#[utoipa::path(post, path = "/v1/sessions/{id}/restart", security(("bearer" = [])),
    params(("id" = String, Path, description = "The session's id")),
    responses((status = 200, body = ActionBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn restart_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let request = ControlRequest::Restart {
        session: id.clone(),
    };
    action(state, id, request).await
}

/// Starts pairing a session, like `wa-ctl login ID`: the QR code then comes
/// from `/v1/sessions/{id}/qr` and the event stream.
#[utoipa::path(post, path = "/v1/sessions/{id}/login", security(("bearer" = [])),
    params(("id" = String, Path, description = "The session's id")),
    request_body(content = Option<LoginBody>, description = "Optional: a phone number for the pair-code flow"),
    responses((status = 202, description = "Pairing started (or the session is already connected)", body = ActionBody),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn login_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    if state.hub.record(&id).is_none() {
        return Err(ApiError::unknown(&id));
    }
    let phone = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let login: LoginBody = serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")))?;
        login
            .phone
            .map(|p| control::phone_digits(&p))
            .transpose()
            .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, m))?
    };
    let Some(mut updates) = state.control.login(id.clone(), phone).await else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the supervisor is exiting",
        ));
    };
    // The first update is the session once the request is applied.
    let first = tokio::time::timeout(LOGIN_TIMEOUT, updates.recv())
        .await
        .ok()
        .flatten();
    let Some(first) = first else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the supervisor did not answer",
        ));
    };
    if let Some(error) = first.error {
        let status = if error.contains("shutting down") {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::CONFLICT
        };
        return Err(ApiError::new(status, error));
    }
    let record = state
        .hub
        .record(&id)
        .ok_or_else(|| ApiError::unknown(&id))?;
    let state_now = first.state.unwrap_or(record.state);
    let mut response = axum::Json(ActionBody {
        message: format!("session {id}: {state_now}"),
        session: report(&record),
    })
    .into_response();
    *response.status_mut() = StatusCode::ACCEPTED;
    Ok(private(response))
}

/// The QR code waiting to be scanned: SVG, or PNG for `Accept: image/png`.
#[utoipa::path(get, path = "/v1/sessions/{id}/qr", security(("bearer" = [])),
    params(("id" = String, Path, description = "The session's id")),
    responses((status = 200, description = "The code", content(("image/svg+xml"), ("image/png"))),
              (status = 404, description = "Unknown session, or not pairing with a QR code", body = ErrorBody)))]
async fn session_qr(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let record = state
        .hub
        .record(&id)
        .ok_or_else(|| ApiError::unknown(&id))?;
    let Some(payload) = qr_of(&record) else {
        let why = match (&record.state, &record.pairing) {
            (SessionState::Pairing, Some(_)) => format!(
                "session {id} is pairing with a pair code, not a QR code (see `wa-ctl login`)"
            ),
            (state, _) => format!("session {id} is not pairing (state {state})"),
        };
        return Err(ApiError::new(StatusCode::NOT_FOUND, why));
    };
    let wants_png = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("image/png"));
    let fail = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e);
    let response = if wants_png {
        let png = crate::qr::png(payload).map_err(fail)?;
        ([(header::CONTENT_TYPE, "image/png")], png).into_response()
    } else {
        let svg = crate::qr::svg(payload).map_err(|e| fail(e.to_string()))?;
        ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response()
    };
    Ok(private(response))
}

/// The changes as Server-Sent Events (see docs/http-api.md).
#[utoipa::path(get, path = "/v1/events", security(("bearer" = [])),
    params(("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event")),
    responses((status = 200, description = "A stream of ApiEvent objects, one per message", content_type = "text/event-stream", body = ApiEvent),
              (status = 400, body = ErrorBody)))]
async fn events(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let last = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(StatusCode::BAD_REQUEST, "Last-Event-ID is not an event id")
                })?,
        ),
    };
    Ok(private(
        crate::events::stream(&state.hub, last).into_response(),
    ))
}

async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi()).into_response()
}

/// Whether the supervisor's loop answers (a ping through its control queue).
#[utoipa::path(get, path = "/healthz",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn healthz(State(state): State<AppState>) -> Response {
    let answer =
        tokio::time::timeout(HEALTH_TIMEOUT, state.control.request(ControlRequest::Ping)).await;
    let (status, probe) = match answer {
        Ok(r) if r.ok => (
            StatusCode::OK,
            Health {
                ok: true,
                error: None,
            },
        ),
        Ok(r) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Health {
                ok: false,
                error: Some(r.message),
            },
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Health {
                ok: false,
                error: Some(format!("the loop did not answer within {HEALTH_TIMEOUT:?}")),
            },
        ),
    };
    (status, axum::Json(probe)).into_response()
}

/// Whether every configured session is settled (not starting or stopping).
#[utoipa::path(get, path = "/readyz",
    responses((status = 200, body = Readiness), (status = 503, description = "Some sessions are starting or stopping", body = Readiness)))]
async fn readyz(State(state): State<AppState>) -> Response {
    let waiting: Vec<String> = state
        .hub
        .records()
        .iter()
        .filter(|r| matches!(r.state, SessionState::Starting | SessionState::Stopping))
        .map(|r| r.id.clone())
        .collect();
    let status = if waiting.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let probe = Readiness {
        ready: waiting.is_empty(),
        waiting,
    };
    (status, axum::Json(probe)).into_response()
}

/// Prometheus metrics: the classic text format, or OpenMetrics when asked.
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "The exposition", content_type = "text/plain; version=0.0.4")))]
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let job = state.clone();
    let text = state
        .blocking(move || {
            let records = job.hub.records();
            let owned = census::Owned {
                supervisor: Some(std::process::id()),
                workers: records.iter().filter_map(|r| r.worker_pid).collect(),
            };
            let counted = census::take(&job.config, &owned);
            let processes = Processes {
                workers: counted.workers,
                strays: counted.strays.len(),
            };
            job.metrics.render(processes, openmetrics)
        })
        .await?;
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

/// The pairing page: static; everything it shows comes from the API with
/// the token the operator gives it.
async fn page() -> Response {
    let mut response = axum::response::Html(PAGE).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/openapi.json is the document the server serves: a change to a
    /// handler's types shows in review as a change to that file. Rewrite
    /// it with `WA_CTL_UPDATE_OPENAPI=1 cargo test -p wa-ctl-http openapi`.
    #[test]
    fn openapi_document_is_committed() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let served = openapi();
        if std::env::var_os("WA_CTL_UPDATE_OPENAPI").is_some() {
            std::fs::write(path, format!("{served}\n")).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed.trim_end() == served,
            "docs/openapi.json differs from the served document: run \
             `WA_CTL_UPDATE_OPENAPI=1 cargo test -p wa-ctl-http openapi` and review the diff"
        );
    }

    /// The schema of a session names exactly the fields the API sends.
    #[test]
    fn the_session_schema_has_every_field_of_a_session() {
        let doc: serde_json::Value = serde_json::from_str(&openapi()).unwrap();
        let schema = &doc["components"]["schemas"]["SessionReport"];
        let mut named: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        named.sort_unstable();
        let record = SessionRecord::new("a", SessionState::Stopped);
        let value = serde_json::to_value(report(&record)).unwrap();
        let mut sent: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        sent.sort_unstable();
        assert_eq!(named, sent);
        for path in [
            "/v1/sessions",
            "/v1/sessions/{id}",
            "/v1/sessions/{id}/start",
            "/v1/sessions/{id}/stop",
            "/v1/sessions/{id}/restart",
            "/v1/sessions/{id}/login",
            "/v1/sessions/{id}/qr",
            "/v1/events",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} is documented");
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }
}
