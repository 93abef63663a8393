//! RabbitMQ's list query parameters on every GET of the API: `sort=key`
//! (a dotted path such as `message_stats.publish`), `sort_reverse=true`,
//! and `columns=a,b.c` (keeps only those fields of each object, nested
//! paths kept nested, as `rabbitmqadmin` asks for them). Applied to the
//! JSON answer after the handler ran, so every endpoint gets them alike.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value as J};
use std::cmp::Ordering;

/// Largest answer re-shaped (bigger ones are returned as they are).
const MAX_BODY: usize = 256 * 1024 * 1024;

struct Shape {
    columns: Option<Vec<Vec<String>>>,
    sort: Option<Vec<String>>,
    reverse: bool,
}

fn shape_of(query: &str) -> Option<Shape> {
    let mut shape = Shape {
        columns: None,
        sort: None,
        reverse: false,
    };
    for (k, v) in url_pairs(query) {
        match k.as_str() {
            "columns" if !v.is_empty() => {
                shape.columns = Some(
                    v.split(',')
                        .filter(|c| !c.is_empty())
                        .map(|c| c.split('.').map(String::from).collect())
                        .collect(),
                );
            }
            "sort" if !v.is_empty() => {
                shape.sort = Some(v.split('.').map(String::from).collect());
            }
            "sort_reverse" => shape.reverse = v == "true",
            _ => {}
        }
    }
    (shape.columns.is_some() || shape.sort.is_some()).then_some(shape)
}

fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        (decode(k), decode(v))
    })
}

fn lookup<'a>(v: &'a J, path: &[String]) -> Option<&'a J> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

/// Orders JSON values: null first, then numbers, strings, booleans
/// (what makes sense for a table column).
fn compare(a: Option<&J>, b: Option<&J>) -> Ordering {
    match (a, b) {
        (Some(J::Number(x)), Some(J::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(J::String(x)), Some(J::String(y))) => x.cmp(y),
        (Some(J::Bool(x)), Some(J::Bool(y))) => x.cmp(y),
        (None | Some(J::Null), None | Some(J::Null)) => Ordering::Equal,
        (None | Some(J::Null), _) => Ordering::Less,
        (_, None | Some(J::Null)) => Ordering::Greater,
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

fn project(v: &J, columns: &[Vec<String>]) -> J {
    let mut out = Map::new();
    for path in columns {
        let Some(found) = lookup(v, path) else {
            continue;
        };
        let mut slot = &mut out;
        for (i, k) in path.iter().enumerate() {
            if i + 1 == path.len() {
                slot.insert(k.clone(), found.clone());
            } else {
                let entry = slot
                    .entry(k.clone())
                    .or_insert_with(|| J::Object(Map::new()));
                let Some(next) = entry.as_object_mut() else {
                    break;
                };
                slot = next;
            }
        }
    }
    J::Object(out)
}

/// Applies `sort`, `sort_reverse` and `columns` to a JSON answer.
fn reshape(mut v: J, shape: &Shape) -> J {
    if let (Some(key), J::Array(items)) = (&shape.sort, &mut v) {
        items.sort_by(|a, b| compare(lookup(a, key), lookup(b, key)));
        if shape.reverse {
            items.reverse();
        }
    }
    match (&shape.columns, v) {
        (Some(cols), J::Array(items)) => J::Array(items.iter().map(|i| project(i, cols)).collect()),
        (Some(cols), obj @ J::Object(_)) => project(&obj, cols),
        (_, other) => other,
    }
}

/// The middleware: runs the handler, then re-shapes a successful JSON answer.
pub async fn columns_and_sort(req: Request, next: Next) -> Response {
    let shape = match (req.method(), req.uri().query()) {
        (&Method::GET, Some(q)) => shape_of(q),
        _ => None,
    };
    let response = next.run(req).await;
    let Some(shape) = shape else {
        return response;
    };
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if response.status() != StatusCode::OK || !is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match serde_json::from_slice::<J>(&bytes) {
        Ok(v) => {
            let text = reshape(v, &shape).to_string();
            let mut r = Response::from_parts(parts, Body::from(text));
            r.headers_mut().remove(header::CONTENT_LENGTH);
            r
        }
        Err(_) => Response::from_parts(parts, Body::from(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_by_a_dotted_key_and_keeps_columns_nested() {
        let v = json!([
            {"name": "b", "messages": 2, "message_stats": {"publish": 5, "ack": 1}},
            {"name": "a", "messages": 10, "message_stats": {"publish": 1}},
            {"name": "c"},
        ]);
        let shape = shape_of(
            "sort=message_stats.publish&sort_reverse=true&columns=name,message_stats.publish",
        )
        .unwrap();
        assert_eq!(
            reshape(v, &shape),
            json!([
                {"name": "b", "message_stats": {"publish": 5}},
                {"name": "a", "message_stats": {"publish": 1}},
                {"name": "c"},
            ])
        );
    }

    #[test]
    fn without_parameters_nothing_is_done() {
        assert!(shape_of("if-unused=true").is_none());
        assert!(shape_of("").is_none());
    }
}
