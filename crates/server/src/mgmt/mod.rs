//! The management HTTP API under `/api/` and the Prometheus metrics at
//! `/metrics`, on the HTTP listener (default 127.0.0.1:15672), following
//! RabbitMQ's management plugin: its paths, JSON shapes, status codes and
//! tags, so that `rabbitmqadmin` and scripts written for RabbitMQ work.
//!
//! - `auth`: HTTP basic auth against the shared users, tag checks.
//! - `json`: core objects shaped as RabbitMQ's JSON, and the other way.
//! - `overview`: overview, nodes, connections, channels, consumers, health.
//! - `resources`: exchanges, queues, bindings, publish and get.
//! - `access`: users, vhosts, permissions, whoami.
//! - `definitions`: export and import of the whole configuration.
//! - `metrics`: the Prometheus text exposition.
//! - `rates`: the sampler behind `*_details.rate`.
//! - `listing`: `columns`, `sort` and `sort_reverse` on every GET.
//! - `limits`: vhost limits (`/api/vhost-limits`).
//! - `dashboard`: the web dashboard at `/` (assets built into the binary).
//!
//! docs/management.md lists every endpoint.

mod access;
mod auth;
mod cluster;
mod dashboard;
mod definitions;
mod json;
mod limits;
mod listing;
mod metrics;
mod overview;
mod rates;
mod resources;

use crate::registry::Registry;
use crate::users::{UserAdmin, UserDb};
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use std::time::Instant;
use tributary_core::{Broker, CoreError};

/// What the management API reaches.
pub struct Services {
    /// The core.
    pub broker: Arc<Broker>,
    /// The live user database (authentication, permission checks).
    pub users: Arc<UserDb>,
    /// Edits to the user database.
    pub admin: UserAdmin,
    /// Every open connection.
    pub registry: Arc<Registry>,
    /// The MQTT service (sessions, retained messages).
    pub mqtt: Arc<crate::mqtt::driver::MqttContext>,
    /// The message store (its counters for metrics).
    pub store: Arc<tributary_store::Store>,
    /// The configuration the broker runs with (listeners for the overview).
    pub config: crate::config::Config,
    /// The XMPP service (rooms and pubsub nodes), when it runs.
    pub xmpp: Option<Arc<crate::xmpp::XmppContext>>,
    /// Live CoAP observations.
    pub coap: crate::coap::Observations,
}

/// The management API's shared state.
pub struct MgmtState {
    s: Services,
    started: Instant,
    rates: rates::Rates,
}

impl MgmtState {
    /// Wraps the services and starts the rate sampler (on the current
    /// runtime; it stops when the state is dropped).
    pub fn new(s: Services) -> Arc<Self> {
        let state = Arc::new(MgmtState {
            s,
            started: Instant::now(),
            rates: rates::Rates::default(),
        });
        rates::spawn(&state);
        state
    }
}

type St = Arc<MgmtState>;

/// The API's routes, with their state, to merge into the HTTP router.
pub fn router<S: Clone + Send + Sync + 'static>(state: St) -> Router<S> {
    Router::new()
        .route("/metrics", get(metrics::metrics))
        .route("/api/overview", get(overview::overview))
        .route("/api/nodes", get(overview::nodes))
        .route("/api/nodes/{node}", get(overview::node))
        .route("/api/connections", get(overview::connections))
        .route(
            "/api/connections/{name}",
            get(overview::connection).delete(overview::close_connection),
        )
        .route("/api/channels", get(overview::channels))
        .route("/api/consumers", get(overview::consumers))
        .route("/api/consumers/{vhost}", get(overview::consumers_in))
        .route("/api/healthchecks/node", get(overview::healthcheck))
        .route("/api/aliveness-test/{vhost}", get(overview::aliveness))
        .route("/api/mqtt/sessions", get(overview::mqtt_sessions))
        .route("/api/mqtt/retained", get(overview::mqtt_retained))
        .route("/api/xmpp/sessions", get(overview::xmpp_sessions))
        .route("/api/xmpp/rooms", get(overview::xmpp_rooms))
        .route("/api/xmpp/pubsub", get(overview::xmpp_pubsub))
        .route("/api/coap/observations", get(overview::coap_observations))
        .route("/api/vhost-limits", get(limits::all))
        .route("/api/vhost-limits/{vhost}", get(limits::of_vhost))
        .route(
            "/api/vhost-limits/{vhost}/{name}",
            axum::routing::put(limits::put).delete(limits::delete),
        )
        .route("/api/exchanges", get(resources::exchanges))
        .route("/api/exchanges/{vhost}", get(resources::exchanges_in))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(resources::exchange)
                .put(resources::declare_exchange)
                .delete(resources::delete_exchange),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/publish",
            post(resources::publish),
        )
        .route("/api/queues", get(resources::queues))
        .route("/api/queues/{vhost}", get(resources::queues_in))
        .route(
            "/api/queues/{vhost}/{name}",
            get(resources::queue)
                .put(resources::declare_queue)
                .delete(resources::delete_queue),
        )
        .route(
            "/api/queues/{vhost}/{name}/contents",
            axum::routing::delete(resources::purge_queue),
        )
        .route("/api/queues/{vhost}/{name}/get", post(resources::get))
        .route(
            "/api/queues/{vhost}/{name}/bindings",
            get(resources::queue_bindings),
        )
        .route("/api/bindings", get(resources::bindings))
        .route("/api/bindings/{vhost}", get(resources::bindings_in))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            get(resources::binding_list).post(resources::bind),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            get(resources::binding_one).delete(resources::unbind),
        )
        .route("/api/whoami", get(access::whoami))
        .route("/api/users", get(access::users))
        .route(
            "/api/users/{name}",
            get(access::user)
                .put(access::put_user)
                .delete(access::delete_user),
        )
        .route(
            "/api/users/{name}/permissions",
            get(access::user_permissions),
        )
        .route("/api/vhosts", get(access::vhosts))
        .route(
            "/api/vhosts/{name}",
            get(access::vhost)
                .put(access::put_vhost)
                .delete(access::delete_vhost),
        )
        .route(
            "/api/vhosts/{name}/permissions",
            get(access::vhost_permissions),
        )
        .route("/api/permissions", get(access::permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(access::permission)
                .put(access::put_permission)
                .delete(access::delete_permission),
        )
        .route(
            "/api/definitions",
            get(definitions::export).post(definitions::import),
        )
        .route(
            "/api/definitions/{vhost}",
            get(definitions::export_vhost).post(definitions::import_vhost),
        )
        .route("/api/{*rest}", axum::routing::any(not_found))
        .layer(axum::middleware::from_fn(listing::columns_and_sort))
        .merge(dashboard::routes())
        .merge(cluster::routes())
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// An API error, rendered as RabbitMQ renders it.
#[derive(Debug)]
pub enum ApiError {
    /// 400 with a reason.
    BadRequest(String),
    /// 401: no or bad credentials.
    Unauthorized,
    /// 401 without a `WWW-Authenticate` challenge (the request said
    /// `X-Requested-With: XMLHttpRequest`).
    UnauthorizedNoChallenge,
    /// 403 with a reason.
    Forbidden(String),
    /// 404.
    NotFound,
    /// 500 with a reason.
    Internal(String),
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::NotFound(_) => ApiError::NotFound,
            CoreError::AccessRefused(r) => ApiError::Forbidden(r),
            CoreError::Internal(r) => ApiError::Internal(r),
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

impl From<crate::users::UserError> for ApiError {
    fn from(e: crate::users::UserError) -> Self {
        use crate::users::UserError as E;
        match e {
            E::Missing(_) => ApiError::NotFound,
            E::Io { .. } | E::Corrupt { .. } | E::Hash(_) | E::Cluster(_) => {
                ApiError::Internal(e.to_string())
            }
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let challenge = matches!(self, ApiError::Unauthorized);
        let (status, error, reason) = match self {
            ApiError::BadRequest(r) => (StatusCode::BAD_REQUEST, "bad_request", r),
            ApiError::Unauthorized | ApiError::UnauthorizedNoChallenge => (
                StatusCode::UNAUTHORIZED,
                "not_authorized",
                "Login failed".to_string(),
            ),
            ApiError::Forbidden(r) => (StatusCode::FORBIDDEN, "not_authorized", r),
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                "Object Not Found",
                "Not Found".to_string(),
            ),
            ApiError::Internal(r) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", r),
        };
        let body = axum::Json(serde_json::json!({ "error": error, "reason": reason }));
        if challenge {
            (
                status,
                [(
                    axum::http::header::WWW_AUTHENTICATE,
                    "Basic realm=\"RabbitMQ Management\"",
                )],
                body,
            )
                .into_response()
        } else {
            (status, body).into_response()
        }
    }
}

/// A handler's result.
type ApiResult<T> = Result<T, ApiError>;
