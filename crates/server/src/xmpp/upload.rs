//! HTTP File Upload (XEP-0363 v1.1): the `upload.<domain>` service hands
//! out slots (a PUT and a GET URL on the broker's HTTP listener) and the
//! HTTP routes `/upload/<secret>/<file name>` take and serve the files.
//!
//! The secret (256 random bits) is the capability: whoever holds the GET
//! URL may download. Files are kept in `<data dir>/upload/<secret>/data`
//! with a sidecar `<secret>.json` (owner, name, size, content type), read
//! back at start to rebuild the per-user usage for the quota. A slot is
//! valid for [`SLOT_TTL`]; a PUT of another size, another content type, or
//! after expiry is refused, and a slot takes one PUT only.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use parking_lot::Mutex;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use tributary_xmpp::ns;
use tributary_xmpp_xml::Element;

use crate::http::HttpState;

/// How long a slot may be used for its PUT.
pub const SLOT_TTL: Duration = Duration::from_secs(300);
/// Longest file name accepted, in bytes.
const MAX_NAME: usize = 255;

/// What a stored file's sidecar records.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct FileMeta {
    owner: String,
    name: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
}

/// A granted slot waiting for its PUT.
struct Slot {
    meta: FileMeta,
    expires: Instant,
}

#[derive(Default)]
struct State_ {
    slots: HashMap<String, Slot>,
    files: HashMap<String, FileMeta>,
    /// Bytes stored plus bytes reserved by open slots, per bare JID.
    usage: HashMap<String, u64>,
}

/// The upload service.
pub struct Upload {
    domain: String,
    dir: PathBuf,
    max_file_size: u64,
    quota: u64,
    configured_url: String,
    base_url: OnceLock<String>,
    state: Mutex<State_>,
}

impl Upload {
    /// Opens the service over `<data_dir>/upload`, reading back the stored files.
    pub fn open(
        domain: String,
        data_dir: &std::path::Path,
        max_file_size: u64,
        quota: u64,
        url: String,
    ) -> std::io::Result<Self> {
        let dir = data_dir.join("upload");
        std::fs::create_dir_all(&dir)?;
        let mut state = State_::default();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Some(secret) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<FileMeta>(&b).ok())
            {
                Some(meta) => {
                    *state.usage.entry(meta.owner.clone()).or_default() += meta.size;
                    state.files.insert(secret, meta);
                }
                None => tracing::warn!(path = %path.display(), "unreadable upload sidecar skipped"),
            }
        }
        Ok(Upload {
            domain,
            dir,
            max_file_size,
            quota,
            configured_url: url.trim_end_matches('/').to_string(),
            base_url: OnceLock::new(),
            state: Mutex::new(state),
        })
    }

    /// The service's JID.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The HTTP listener is bound: URLs are derived from it unless
    /// `[xmpp] upload_url` names another base.
    pub fn set_listener(&self, addr: std::net::SocketAddr, tls: bool) {
        let scheme = if tls { "https" } else { "http" };
        let _ = self.base_url.set(format!("{scheme}://{addr}"));
    }

    fn base(&self) -> Option<&str> {
        if !self.configured_url.is_empty() {
            return Some(&self.configured_url);
        }
        self.base_url.get().map(String::as_str)
    }

    /// Answers an iq addressed to the service (`from` already stamped).
    /// Returns `None` for stanzas that get no answer.
    pub fn handle_iq(&self, stanza: &Element) -> Option<Element> {
        if stanza.name != "iq" || !matches!(stanza.attr("type"), Some("get" | "set")) {
            return None;
        }
        let payload = stanza.elements().next()?;
        let answer = match (
            payload.ns.as_str(),
            payload.name.as_str(),
            stanza.attr("type"),
        ) {
            (ns::DISCO_INFO, "query", Some("get")) if payload.attr("node").is_none() => {
                Ok(self.disco_info())
            }
            (ns::DISCO_ITEMS, "query", Some("get")) => Ok(Element::new("query", ns::DISCO_ITEMS)),
            (ns::HTTP_UPLOAD, "request", Some("get")) => {
                let owner = stanza
                    .attr("from")
                    .and_then(|f| jid::Jid::new(f).ok())
                    .map(|j| j.to_bare().to_string());
                match owner {
                    Some(owner) => self.request_slot(&owner, payload),
                    None => Err(error("modify", "bad-request", "no sender", None)),
                }
            }
            _ => Err(error("cancel", "service-unavailable", "", None)),
        };
        let mut reply = Element::new("iq", ns::CLIENT);
        if let Some(id) = stanza.attr("id") {
            reply.set_attr("id", id);
        }
        if let Some(from) = stanza.attr("from") {
            reply.set_attr("to", from);
        }
        reply.set_attr("from", self.domain.clone());
        match answer {
            Ok(payload) => {
                reply.set_attr("type", "result");
                reply.push_child(payload);
            }
            Err(err) => {
                reply.set_attr("type", "error");
                reply.push_child(err);
            }
        }
        Some(reply)
    }

    fn disco_info(&self) -> Element {
        let field = |var: &str, value: String| {
            Element::new("field", ns::DATA_FORMS)
                .with_attr("var", var)
                .with_child(Element::new("value", ns::DATA_FORMS).with_text(value))
        };
        Element::new("query", ns::DISCO_INFO)
            .with_child(
                Element::new("identity", ns::DISCO_INFO)
                    .with_attr("category", "store")
                    .with_attr("type", "file")
                    .with_attr("name", "HTTP File Upload"),
            )
            .with_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", ns::DISCO_INFO))
            .with_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", ns::HTTP_UPLOAD))
            .with_child(
                Element::new("x", ns::DATA_FORMS)
                    .with_attr("type", "result")
                    .with_child(
                        field("FORM_TYPE", ns::HTTP_UPLOAD.to_string()).with_attr("type", "hidden"),
                    )
                    .with_child(field("max-file-size", self.max_file_size.to_string())),
            )
    }

    /// XEP-0363 §4: checks the request and grants a slot.
    fn request_slot(&self, owner: &str, req: &Element) -> Result<Element, Element> {
        let name = req.attr("filename").unwrap_or("");
        if name.is_empty()
            || name.len() > MAX_NAME
            || name == "."
            || name == ".."
            || name
                .chars()
                .any(|c| c.is_control() || c == '/' || c == '\\')
        {
            return Err(error("modify", "bad-request", "invalid file name", None));
        }
        let size: u64 = req
            .attr("size")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| error("modify", "bad-request", "invalid size", None))?;
        if size > self.max_file_size {
            let too_large = Element::new("file-too-large", ns::HTTP_UPLOAD).with_child(
                Element::new("max-file-size", ns::HTTP_UPLOAD)
                    .with_text(self.max_file_size.to_string()),
            );
            return Err(error(
                "modify",
                "not-acceptable",
                &format!(
                    "File too large. The maximum file size is {} bytes",
                    self.max_file_size
                ),
                Some(too_large),
            ));
        }
        let content_type = match req.attr("content-type") {
            Some("") => None,
            Some(t) if t.len() > 255 || !t.contains('/') || t.chars().any(char::is_control) => {
                return Err(error("modify", "bad-request", "invalid content type", None));
            }
            other => other.map(str::to_string),
        };
        let Some(base) = self.base() else {
            return Err(error(
                "wait",
                "service-unavailable",
                "no HTTP listener",
                None,
            ));
        };
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        {
            let mut st = self.state.lock();
            let now = Instant::now();
            expire(&mut st, now);
            let used = st.usage.get(owner).copied().unwrap_or(0);
            if used.saturating_add(size) > self.quota {
                return Err(error(
                    "wait",
                    "resource-constraint",
                    "upload quota exceeded",
                    None,
                ));
            }
            *st.usage.entry(owner.to_string()).or_default() += size;
            st.slots.insert(
                secret.clone(),
                Slot {
                    meta: FileMeta {
                        owner: owner.to_string(),
                        name: name.to_string(),
                        size,
                        content_type,
                    },
                    expires: now + SLOT_TTL,
                },
            );
        }
        let url = format!(
            "{base}/upload/{secret}/{}",
            utf8_percent_encode(name, NON_ALPHANUMERIC)
        );
        Ok(Element::new("slot", ns::HTTP_UPLOAD)
            .with_child(Element::new("put", ns::HTTP_UPLOAD).with_attr("url", url.clone()))
            .with_child(Element::new("get", ns::HTTP_UPLOAD).with_attr("url", url)))
    }

    /// Takes the body of a PUT for `secret`.
    async fn put(&self, secret: &str, name: &str, headers: &HeaderMap, body: Body) -> StatusCode {
        let meta = {
            let mut st = self.state.lock();
            expire(&mut st, Instant::now());
            match st.slots.get(secret) {
                Some(slot) if slot.meta.name == name => {}
                _ => return StatusCode::FORBIDDEN,
            }
            let Some(slot) = st.slots.get(secret) else {
                return StatusCode::FORBIDDEN;
            };
            let length = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if length != Some(slot.meta.size) {
                return StatusCode::PAYLOAD_TOO_LARGE;
            }
            let ctype = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            if let (Some(want), Some(got)) = (&slot.meta.content_type, ctype)
                && !want.eq_ignore_ascii_case(got)
            {
                return StatusCode::BAD_REQUEST;
            }
            // One PUT per slot: the slot is consumed now.
            let Some(slot) = st.slots.remove(secret) else {
                return StatusCode::FORBIDDEN;
            };
            slot.meta
        };
        let limit = usize::try_from(meta.size).unwrap_or(usize::MAX);
        let bytes = match axum::body::to_bytes(body, limit).await {
            Ok(b) if b.len() as u64 == meta.size => b,
            _ => {
                self.release(&meta);
                return StatusCode::BAD_REQUEST;
            }
        };
        match self.store(secret, &meta, bytes).await {
            Ok(()) => {
                self.state.lock().files.insert(secret.to_string(), meta);
                StatusCode::CREATED
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot store an uploaded file");
                self.release(&meta);
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// Gives back a reservation that did not become a file.
    fn release(&self, meta: &FileMeta) {
        let mut st = self.state.lock();
        if let Some(u) = st.usage.get_mut(&meta.owner) {
            *u = u.saturating_sub(meta.size);
        }
    }

    /// Writes the file and then its sidecar (each to a temporary name,
    /// fsynced, renamed), off the async workers.
    async fn store(
        &self,
        secret: &str,
        meta: &FileMeta,
        bytes: axum::body::Bytes,
    ) -> std::io::Result<()> {
        let dir = self.dir.clone();
        let secret = secret.to_string();
        let sidecar = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
        tokio::task::spawn_blocking(move || {
            let write = |path: &std::path::Path, data: &[u8]| -> std::io::Result<()> {
                let tmp = path.with_extension("tmp");
                let mut f = std::fs::File::create(&tmp)?;
                std::io::Write::write_all(&mut f, data)?;
                f.sync_all()?;
                std::fs::rename(&tmp, path)
            };
            let files = dir.join(&secret);
            std::fs::create_dir_all(&files)?;
            write(&files.join("data"), &bytes)?;
            write(&dir.join(format!("{secret}.json")), &sidecar)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    async fn get(&self, secret: &str, name: &str) -> Response {
        let meta = match self.state.lock().files.get(secret) {
            Some(m) if m.name == name => m.clone(),
            _ => return StatusCode::NOT_FOUND.into_response(),
        };
        let path = self.dir.join(secret).join("data");
        match tokio::task::spawn_blocking(move || std::fs::read(path)).await {
            Ok(Ok(bytes)) => {
                let ctype = meta
                    .content_type
                    .unwrap_or_else(|| "application/octet-stream".to_string());
                (
                    [
                        (header::CONTENT_TYPE, ctype),
                        (header::CONTENT_DISPOSITION, "attachment".to_string()),
                    ],
                    bytes,
                )
                    .into_response()
            }
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }
}

/// Drops expired slots and their reservations.
fn expire(st: &mut State_, now: Instant) {
    let expired: Vec<String> = st
        .slots
        .iter()
        .filter(|(_, s)| s.expires <= now)
        .map(|(k, _)| k.clone())
        .collect();
    for k in expired {
        if let Some(slot) = st.slots.remove(&k)
            && let Some(u) = st.usage.get_mut(&slot.meta.owner)
        {
            *u = u.saturating_sub(slot.meta.size);
        }
    }
}

/// An `<error/>` with an optional text and application condition.
fn error(kind: &str, condition: &str, text: &str, app: Option<Element>) -> Element {
    let mut e = Element::new("error", ns::CLIENT)
        .with_attr("type", kind)
        .with_child(Element::new(condition, ns::STANZAS));
    if !text.is_empty() {
        e.push_child(Element::new("text", ns::STANZAS).with_text(text));
    }
    if let Some(app) = app {
        e.push_child(app);
    }
    e
}

fn service(state: &HttpState) -> Option<Arc<Upload>> {
    state.xmpp.as_ref().and_then(|x| x.upload().cloned())
}

async fn put_file(
    State(state): State<HttpState>,
    Path((secret, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> StatusCode {
    match service(&state) {
        Some(up) => up.put(&secret, &name, &headers, body).await,
        None => StatusCode::NOT_FOUND,
    }
}

async fn get_file(
    State(state): State<HttpState>,
    Path((secret, name)): Path<(String, String)>,
) -> Response {
    match service(&state) {
        Some(up) => up.get(&secret, &name).await,
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The upload routes, merged into the HTTP listener's router.
pub fn routes() -> Router<HttpState> {
    Router::new().route("/upload/{secret}/{name}", put(put_file).get(get_file))
}

impl super::XmppContext {
    /// The upload service, when enabled.
    pub fn upload(&self) -> Option<&Arc<Upload>> {
        self.upload.as_ref()
    }

    /// Answers the stanzas addressed to the upload service; returns the
    /// others (for the bridge).
    pub(super) fn run_upload(
        &self,
        stanzas: Vec<(super::SessionId, Element)>,
    ) -> Vec<(super::SessionId, Element)> {
        let Some(up) = &self.upload else {
            return stanzas;
        };
        let mut rest = Vec::new();
        for (session, stanza) in stanzas {
            let to_upload = stanza
                .attr("to")
                .and_then(|t| jid::Jid::new(t).ok())
                .is_some_and(|t| t.domain().as_str() == up.domain());
            if !to_upload {
                rest.push((session, stanza));
                continue;
            }
            if let Some(reply) = up.handle_iq(&stanza)
                && let Some(handle) = self.sessions.lock().get(&session)
                && handle
                    .mailbox
                    .try_send(super::SessionMsg::Deliver(reply))
                    .is_err()
            {
                handle.kill.cancel();
            }
        }
        rest
    }
}
