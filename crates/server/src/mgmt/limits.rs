//! Vhost limits, RabbitMQ's `/api/vhost-limits`: `max-connections`,
//! `max-queues` and Tributary's `max-sessions` (MQTT sessions), kept in
//! `users.json` beside the vhost (what `tributary vhost set_limits` edits),
//! so the running broker applies a change at its next look.

use super::auth::Caller;
use super::json::{body_object, get_u64};
use super::{ApiError, ApiResult, St};
use crate::users::VhostLimits;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{Map, Value as J, json};

/// The names of the limits, as RabbitMQ spells them.
const NAMES: [&str; 3] = ["max-connections", "max-queues", "max-sessions"];

/// The limits that are set, as RabbitMQ's `value` object.
pub(super) fn value_json(l: &VhostLimits) -> J {
    let mut m = Map::new();
    for (name, v) in NAMES
        .iter()
        .zip([l.max_connections, l.max_queues, l.max_sessions])
    {
        if let Some(v) = v {
            m.insert((*name).to_string(), json!(v));
        }
    }
    J::Object(m)
}

fn listed(st: &St, caller: &Caller, only: Option<&str>) -> Vec<J> {
    let mut records = st.s.users.vhosts();
    records.sort_by(|a, b| a.name.cmp(&b.name));
    records
        .iter()
        .filter(|r| only.is_none_or(|o| o == r.name) && caller.sees_vhost(&r.name))
        .filter(|r| !r.limits.is_empty())
        .map(|r| json!({ "vhost": r.name, "value": value_json(&r.limits) }))
        .collect()
}

/// GET /api/vhost-limits.
pub async fn all(State(st): State<St>, caller: Caller) -> Json<J> {
    Json(J::Array(listed(&st, &caller, None)))
}

/// GET /api/vhost-limits/{vhost}.
pub async fn of_vhost(
    State(st): State<St>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<J>> {
    super::resources::vhost_for(&st, &caller, &vhost)?;
    Ok(Json(J::Array(listed(&st, &caller, Some(&vhost)))))
}

fn check_name(name: &str) -> ApiResult<()> {
    if NAMES.contains(&name) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "unknown limit '{name}' (max-connections, max-queues, max-sessions)"
        )))
    }
}

/// PUT /api/vhost-limits/{vhost}/{name} with `{"value": n}` (a negative
/// value removes the limit, as in RabbitMQ). 204.
pub async fn put(
    State(st): State<St>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    check_name(&name)?;
    super::resources::vhost_for(&st, &caller, &vhost)?;
    let m = body_object(&body)?;
    let value = match m.get("value") {
        Some(J::Number(n)) if n.as_i64().is_some_and(|v| v < 0) => -1,
        Some(_) => i64::try_from(get_u64(&m, "value", 0)?)
            .map_err(|_| ApiError::BadRequest("value: out of range".into()))?,
        None => return Err(ApiError::BadRequest("value is required".into())),
    };
    let text = json!({ name: value }).to_string();
    st.s.admin.set_vhost_limits(&vhost, &text)?;
    Ok(StatusCode::NO_CONTENT)
}

/// DELETE /api/vhost-limits/{vhost}/{name}. 204, or 404 when not set.
pub async fn delete(
    State(st): State<St>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    check_name(&name)?;
    super::resources::vhost_for(&st, &caller, &vhost)?;
    if value_json(&st.s.users.vhost_limits(&vhost))
        .get(&name)
        .is_none()
    {
        return Err(ApiError::NotFound);
    }
    st.s.admin
        .set_vhost_limits(&vhost, &json!({ name: -1 }).to_string())?;
    Ok(StatusCode::NO_CONTENT)
}
