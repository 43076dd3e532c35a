//! The web UI on the TLS listener (docs/remote.md): `GET /` its `index.html`, `GET /assets/*` the
//! files Vite built, all embedded in oxvirtd at build time (build.rs, from `web/dist/`). They hold
//! no data, so they need no credentials (api/auth.rs `public`); every `/v1` route still does.
//! Without a built UI, `/` answers 503 saying how to build it.

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::services::Services;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// What the UI's page may load and from where: only this server (WebSockets to it included),
/// images also inline, styles inline (xterm.js sets them), and no framing by other pages.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' wss:; \
     img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'";

const NOT_BUILT: &str = "the web UI was not built: run scripts/setup.sh\n";

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/{*path}", get(asset))
}

fn file(name: &str) -> Option<&'static [u8]> {
    embedded::FILES
        .iter()
        .find(|(path, _)| *path == name)
        .map(|(_, bytes)| *bytes)
}

/// The content type of a file, by its extension (the kinds a Vite build makes).
fn content_type(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map_or("", |(_, e)| e);
    match extension.to_ascii_lowercase().as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Whether a file's name carries a hash of its contents (Vite's `name-HASH.ext`, the hash 8
/// letters, digits, `_` or `-`): a new build gives it a new name, so it may be cached for
/// good.
fn hashed(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    let stem = base.split_once('.').map_or(base, |(stem, _)| stem);
    stem.rsplit_once('-').is_some_and(|(_, hash)| {
        hash.len() == 8
            && hash
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// A file with the UI's security headers.
fn serve(
    status: StatusCode,
    content_type: &str,
    cache: &'static str,
    bytes: &'static [u8],
) -> Response {
    let mut response = (status, bytes).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn index() -> Response {
    match file("index.html") {
        // Never cached: it names the current build's hashed assets.
        Some(bytes) => serve(
            StatusCode::OK,
            content_type("index.html"),
            "no-cache",
            bytes,
        ),
        None => serve(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "no-store",
            NOT_BUILT.as_bytes(),
        ),
    }
}

async fn asset(Path(path): Path<String>) -> Response {
    let name = format!("assets/{path}");
    match file(&name) {
        Some(bytes) => {
            let cache = if hashed(&name) {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            serve(StatusCode::OK, content_type(&name), cache, bytes)
        }
        None => serve(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "no-store",
            b"no such file in the web UI\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names_and_types() {
        assert!(hashed("assets/index-BZx3_9aQ.js"));
        assert!(hashed("assets/xterm-4f2a9c1d.css"));
        assert!(!hashed("assets/logo.svg"));
        assert!(!hashed("assets/novnc-core.js"));
        assert_eq!(
            content_type("assets/a-1.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("assets/x.WOFF2"), "font/woff2");
        assert_eq!(content_type("assets/x"), "application/octet-stream");
    }
}
