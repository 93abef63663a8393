//! Users, virtual hosts and permissions (administrators only, except
//! `whoami` and the vhost listing), edited through the same `users.json`
//! as `tributary user`, so the running broker sees every change.

use super::auth::Caller;
use super::json::{body_object, get_str};
use super::{ApiError, ApiResult, St};
use crate::users::{Permission, User, UserError};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{Map, Value as J, json};

/// A stored hash as RabbitMQ's API shows it: (hash, hashing_algorithm).
pub fn exported_hash(stored: &str) -> (String, &'static str) {
    if let Some(h) = stored.strip_prefix(crate::users::RABBIT_SHA256) {
        (h.to_string(), "rabbit_password_hashing_sha256")
    } else if let Some(h) = stored.strip_prefix(crate::users::RABBIT_SHA512) {
        (h.to_string(), "rabbit_password_hashing_sha512")
    } else {
        (stored.to_string(), "tributary_password_hashing_argon2id")
    }
}

/// A hash from the API or a definitions file as we store it; `None` when
/// the algorithm is one we cannot verify.
pub fn stored_hash(hash: &str, algorithm: Option<&str>) -> Option<String> {
    match algorithm {
        _ if hash.starts_with("$argon2") => Some(hash.to_string()),
        Some("rabbit_password_hashing_sha256") | None => {
            Some(format!("{}{hash}", crate::users::RABBIT_SHA256))
        }
        Some("rabbit_password_hashing_sha512") => {
            Some(format!("{}{hash}", crate::users::RABBIT_SHA512))
        }
        Some(_) => None,
    }
}

/// Tags given as an array or as RabbitMQ's comma-separated string.
pub fn parse_tags(m: &Map<String, J>) -> Result<Vec<String>, ApiError> {
    match m.get("tags") {
        None | Some(J::Null) => Ok(Vec::new()),
        Some(J::String(s)) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect()),
        Some(J::Array(a)) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(String::from)
                    .ok_or_else(|| ApiError::BadRequest("tags: expected strings".into()))
            })
            .collect(),
        Some(other) => Err(ApiError::BadRequest(format!(
            "tags: expected a string or an array, got {other}"
        ))),
    }
}

fn user_json(u: &User) -> J {
    let (hash, algorithm) = exported_hash(&u.password_hash);
    json!({
        "name": u.name,
        "password_hash": hash,
        "hashing_algorithm": algorithm,
        "tags": u.tags,
        "limits": {},
    })
}

fn list_users(st: &St) -> ApiResult<Vec<User>> {
    let mut users = st.s.admin.list()?;
    users.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(users)
}

/// GET /api/whoami.
pub async fn whoami(caller: Caller) -> Json<J> {
    Json(json!({ "name": caller.name, "tags": caller.tags }))
}

/// GET /api/users.
pub async fn users(State(st): State<St>, caller: Caller) -> ApiResult<Json<J>> {
    caller.require_admin()?;
    Ok(Json(J::Array(
        list_users(&st)?.iter().map(user_json).collect(),
    )))
}

/// GET /api/users/{name}.
pub async fn user(
    State(st): State<St>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<J>> {
    caller.require_admin()?;
    list_users(&st)?
        .iter()
        .find(|u| u.name == name)
        .map(|u| Json(user_json(u)))
        .ok_or(ApiError::NotFound)
}

/// PUT /api/users/{name}: `password` or `password_hash` (with
/// `hashing_algorithm`), and `tags`; 201 when created, 204 when updated.
pub async fn put_user(
    State(st): State<St>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let m = body_object(&body)?;
    let tags = parse_tags(&m)?;
    let exists = list_users(&st)?.iter().any(|u| u.name == name);
    let password = get_str(&m, "password")?.map(String::from);
    let hash = get_str(&m, "password_hash")?.map(String::from);
    let algorithm = get_str(&m, "hashing_algorithm")?.map(String::from);
    let admin = &st.s.admin;
    match (password, hash) {
        (Some(p), _) => {
            let (n, t) = (name.clone(), tags.clone());
            let admin_dir_user = if exists {
                admin.passwd(&n, &p).and_then(|()| admin.set_tags(&n, t))
            } else {
                admin.add(&n, &p, t)
            };
            admin_dir_user?;
        }
        (None, Some(h)) => {
            let stored = stored_hash(&h, algorithm.as_deref()).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "hashing_algorithm: '{}' is not supported",
                    algorithm.unwrap_or_default()
                ))
            })?;
            admin.put_hashed(&name, &stored, tags)?;
        }
        (None, None) if exists => admin.set_tags(&name, tags)?,
        (None, None) => {
            return Err(ApiError::BadRequest(
                "password or password_hash is required".into(),
            ));
        }
    }
    Ok(if exists {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    })
}

/// DELETE /api/users/{name}.
pub async fn delete_user(
    State(st): State<St>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    st.s.admin.delete(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

fn permission_json(user: &str, vhost: &str, p: &Permission) -> J {
    json!({
        "user": user,
        "vhost": vhost,
        "configure": p.configure,
        "write": p.write,
        "read": p.read,
    })
}

fn all_permissions(st: &St) -> ApiResult<Vec<J>> {
    let mut out = Vec::new();
    for u in list_users(st)? {
        for (vhost, p) in &u.permissions {
            out.push(permission_json(&u.name, vhost, p));
        }
    }
    Ok(out)
}

/// GET /api/users/{name}/permissions.
pub async fn user_permissions(
    State(st): State<St>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<J>> {
    caller.require_admin()?;
    if !list_users(&st)?.iter().any(|u| u.name == name) {
        return Err(ApiError::NotFound);
    }
    Ok(Json(J::Array(
        all_permissions(&st)?
            .into_iter()
            .filter(|p| p["user"] == name.as_str())
            .collect(),
    )))
}

/// GET /api/vhosts/{name}/permissions.
pub async fn vhost_permissions(
    State(st): State<St>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<J>> {
    caller.require_admin()?;
    st.s.broker.vhost(&name).ok_or(ApiError::NotFound)?;
    Ok(Json(J::Array(
        all_permissions(&st)?
            .into_iter()
            .filter(|p| p["vhost"] == name.as_str())
            .collect(),
    )))
}

/// GET /api/permissions.
pub async fn permissions(State(st): State<St>, caller: Caller) -> ApiResult<Json<J>> {
    caller.require_admin()?;
    Ok(Json(J::Array(all_permissions(&st)?)))
}

/// GET /api/permissions/{vhost}/{user}.
pub async fn permission(
    State(st): State<St>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Json<J>> {
    caller.require_admin()?;
    list_users(&st)?
        .iter()
        .find(|u| u.name == user)
        .and_then(|u| u.permissions.get(&vhost))
        .map(|p| Json(permission_json(&user, &vhost, p)))
        .ok_or(ApiError::NotFound)
}

/// PUT /api/permissions/{vhost}/{user}: `configure`, `write`, `read`.
pub async fn put_permission(
    State(st): State<St>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let m = body_object(&body)?;
    if st.s.broker.vhost(&vhost).is_none() {
        return Err(ApiError::BadRequest(format!(
            "vhost '{vhost}' does not exist"
        )));
    }
    let field = |k: &str| -> ApiResult<String> {
        get_str(&m, k)?
            .map(String::from)
            .ok_or_else(|| ApiError::BadRequest(format!("{k} is required")))
    };
    let permission = Permission {
        configure: field("configure")?,
        write: field("write")?,
        read: field("read")?,
    };
    let existed = list_users(&st)?
        .iter()
        .find(|u| u.name == user)
        .ok_or_else(|| ApiError::BadRequest(format!("user '{user}' does not exist")))?
        .permissions
        .contains_key(&vhost);
    st.s.admin.set_permissions(&user, &vhost, permission)?;
    Ok(if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    })
}

/// DELETE /api/permissions/{vhost}/{user}.
pub async fn delete_permission(
    State(st): State<St>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let has = list_users(&st)?
        .iter()
        .any(|u| u.name == user && u.permissions.contains_key(&vhost));
    if !has {
        return Err(ApiError::NotFound);
    }
    st.s.admin.clear_permissions(&user, &vhost)?;
    Ok(StatusCode::NO_CONTENT)
}

fn vhost_json(st: &St, v: &tributary_core::VHost) -> J {
    let (mut ready, mut unacked) = (0, 0);
    for q in v.queues() {
        let s = q.stats();
        ready += s.ready;
        unacked += s.unacked;
    }
    let record = st.s.users.vhosts().into_iter().find(|r| r.name == v.name());
    json!({
        "name": v.name(),
        "description": record.as_ref().map_or("", |r| r.description.as_str()),
        "tags": record.as_ref().map(|r| r.tags.clone()).unwrap_or_default(),
        "tracing": false,
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
    })
}

/// GET /api/vhosts: the vhosts the caller may see.
pub async fn vhosts(State(st): State<St>, caller: Caller) -> Json<J> {
    let mut vs: Vec<_> =
        st.s.broker
            .vhosts()
            .into_iter()
            .filter(|v| caller.sees_vhost(v.name()))
            .collect();
    vs.sort_by(|a, b| a.name().cmp(b.name()));
    Json(J::Array(vs.iter().map(|v| vhost_json(&st, v)).collect()))
}

/// GET /api/vhosts/{name}.
pub async fn vhost(
    State(st): State<St>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<J>> {
    let v = super::resources::vhost_for(&st, &caller, &name)?;
    Ok(Json(vhost_json(&st, &v)))
}

/// Creates a vhost in `users.json` and in the running broker.
pub fn create_vhost(st: &St, name: &str, description: &str) -> ApiResult<bool> {
    let created = match st.s.admin.add_vhost(name, description) {
        Ok(()) => true,
        Err(UserError::VhostExists(_)) => false,
        Err(e) => return Err(e.into()),
    };
    let new_in_broker = st.s.broker.vhost(name).is_none();
    // The broker follows users.json; create it now rather than at the next look.
    crate::vhosts::resolve(&st.s.broker, &st.s.users, name);
    Ok(created || new_in_broker)
}

/// PUT /api/vhosts/{name}: 201 when created, 204 when it existed.
pub async fn put_vhost(
    State(st): State<St>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let m = body_object(&body)?;
    let description = get_str(&m, "description")?.unwrap_or("");
    Ok(if create_vhost(&st, &name, description)? {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    })
}

/// DELETE /api/vhosts/{name}: the vhost, everything in it and every
/// permission in it.
pub async fn delete_vhost(
    State(st): State<St>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    if st.s.broker.vhost(&name).is_none() {
        return Err(ApiError::NotFound);
    }
    match st.s.admin.delete_vhost(&name) {
        Ok(()) | Err(UserError::NoVhost(_)) => {}
        Err(e) => return Err(e.into()),
    }
    // Gone from users.json: the broker deletes it now rather than at the next look.
    crate::vhosts::resolve(&st.s.broker, &st.s.users, &name);
    Ok(StatusCode::NO_CONTENT)
}
