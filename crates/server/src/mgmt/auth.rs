//! HTTP basic auth against the shared users, and RabbitMQ's management tags:
//! `administrator` may do everything; `monitoring` sees every vhost and
//! connection; `management` sees the vhosts it has permissions in. A user
//! with none of them is refused (403), as RabbitMQ refuses users that are
//! not management users.

use super::{ApiError, St};
use crate::users::Access;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use base64::Engine;
use std::net::SocketAddr;
use std::sync::Arc;

/// The authenticated caller of one request.
pub struct Caller {
    /// Login name.
    pub name: String,
    /// The user's tags.
    pub tags: Vec<String>,
    state: St,
}

impl Caller {
    /// Has the `administrator` tag.
    pub fn is_admin(&self) -> bool {
        self.tags.iter().any(|t| t == "administrator")
    }

    /// Sees every vhost (`administrator` or `monitoring`).
    pub fn sees_all(&self) -> bool {
        self.is_admin() || self.tags.iter().any(|t| t == "monitoring")
    }

    /// Refuses unless the caller is an administrator.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("Not administrator user".into()))
        }
    }

    /// Whether the caller may see `vhost` at all.
    pub fn sees_vhost(&self, vhost: &str) -> bool {
        self.sees_all() || self.state.s.users.vhost_access(&self.name, vhost)
    }

    /// Refuses with 403 unless the user's `access` permission in `vhost`
    /// covers `resource` (what RabbitMQ checks for API operations too).
    pub fn permit(&self, vhost: &str, access: Access, resource: &str) -> Result<(), ApiError> {
        if self
            .state
            .s
            .users
            .check(&self.name, vhost, access, resource)
        {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "{} access to '{resource}' in vhost '{vhost}' refused for user '{}'",
                access.as_str(),
                self.name
            )))
        }
    }
}

impl FromRequestParts<St> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, ApiError> {
        // A script (the dashboard) asks for no challenge, so that the browser
        // does not open its own login dialog over the page's.
        let refused = if parts
            .headers
            .get("x-requested-with")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"))
        {
            ApiError::UnauthorizedNoChallenge
        } else {
            ApiError::Unauthorized
        };
        let Some((name, password)) = credentials(parts) else {
            return Err(refused);
        };
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .unwrap_or(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)));
        let users = state.s.users.clone();
        let login = name.clone();
        // Argon2 costs milliseconds: keep it off the IO threads.
        let outcome =
            tokio::task::spawn_blocking(move || users.authenticate(&login, &password, peer.ip()))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
        let user = match outcome {
            Ok(user) => user,
            Err(e) => {
                tracing::warn!(protocol = "http", user = %name, peer = %peer, error = %e, "login refused");
                // As the other protocols: a refused login waits `[auth] failure_delay_ms`.
                let delay = state.s.config.auth.failure_delay_ms;
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                return Err(refused);
            }
        };
        let tags = user.tags.clone();
        if !tags
            .iter()
            .any(|t| matches!(t.as_str(), "administrator" | "monitoring" | "management"))
        {
            return Err(ApiError::Forbidden("Not management user".into()));
        }
        Ok(Caller {
            name: user.name,
            tags,
            state: Arc::clone(state),
        })
    }
}

/// The user name and password of an `Authorization: Basic` header.
fn credentials(parts: &Parts) -> Option<(String, String)> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, b64) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}
