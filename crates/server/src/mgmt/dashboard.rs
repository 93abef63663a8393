//! The web dashboard at `/`: one page of hand-written HTML, CSS and
//! JavaScript built into the binary (no CDN, nothing fetched at run time).
//! It logs in with HTTP basic auth against the API (credentials kept in the
//! tab's sessionStorage) and polls the API every two seconds.
//!
//! Caching: every asset carries an ETag (a hash of its text) and
//! `Cache-Control: no-cache`, so a browser revalidates and gets a 304 until
//! the broker is upgraded. A strict Content-Security-Policy allows only the
//! page's own scripts, styles and API.

use super::St;
use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::OnceLock;

const INDEX: &str = include_str!("dashboard/index.html");
const APP: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; form-action 'self'; \
                   base-uri 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: String,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Self {
        // FNV-1a over the text and the version: changes with either.
        let hash = body
            .bytes()
            .chain(env!("CARGO_PKG_VERSION").bytes())
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        Asset {
            body,
            content_type,
            etag: format!("\"{hash:016x}\""),
        }
    }

    fn serve(&self, request: &HeaderMap) -> Response {
        let fresh = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == self.etag));
        let status = if fresh {
            StatusCode::NOT_MODIFIED
        } else {
            StatusCode::OK
        };
        let mut r = if fresh {
            status.into_response()
        } else {
            (status, self.body).into_response()
        };
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if let Ok(etag) = HeaderValue::from_str(&self.etag) {
            h.insert(header::ETAG, etag);
        }
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        r
    }
}

fn assets() -> &'static [Asset; 3] {
    static ASSETS: OnceLock<[Asset; 3]> = OnceLock::new();
    ASSETS.get_or_init(|| {
        [
            Asset::new(INDEX, "text/html; charset=utf-8"),
            Asset::new(APP, "text/javascript; charset=utf-8"),
            Asset::new(STYLE, "text/css; charset=utf-8"),
        ]
    })
}

async fn index(headers: HeaderMap) -> Response {
    assets()[0].serve(&headers)
}

async fn app(headers: HeaderMap) -> Response {
    assets()[1].serve(&headers)
}

async fn style(headers: HeaderMap) -> Response {
    assets()[2].serve(&headers)
}

/// The dashboard's routes (no credentials needed for the page itself; the
/// API calls it makes are authenticated).
pub fn routes() -> Router<St> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/dashboard/app.js", get(app))
        .route("/dashboard/style.css", get(style))
}
