//! `GET /api/cluster`: this node's view of the cluster (members, leader, term), or
//! `{"clustered": false}` on a single node. Any management user may read it.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::St;
use super::auth::Caller;

/// The route, merged into the API router.
pub fn routes() -> Router<St> {
    Router::new().route("/api/cluster", get(status))
}

async fn status(_caller: Caller) -> Json<Value> {
    match crate::cluster::active() {
        None => Json(json!({ "clustered": false })),
        Some(c) => {
            let s = c.status();
            let mut v = serde_json::to_value(&s).unwrap_or_else(|_| json!({}));
            if let Some(o) = v.as_object_mut() {
                o.insert("clustered".into(), Value::Bool(true));
            }
            Json(v)
        }
    }
}
