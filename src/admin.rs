//! The admin listener: `/healthz` (the process is up) and `/readyz` (it accepts traffic and the
//! store writer is running). When `[admin] token` is set, every route but `/healthz` needs
//! `Authorization: Bearer <token>`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;

/// State the admin routes read.
#[derive(Debug, Default)]
pub struct AdminState {
    /// Set once the listeners are bound, cleared when shutdown starts.
    pub ready: AtomicBool,
    pub token: Option<String>,
}

/// Serves one admin request.
pub fn handle<B>(state: &Arc<AdminState>, req: &Request<B>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path == "/healthz" {
        return json(StatusCode::OK, r#"{"status":"ok"}"#);
    }
    if let Some(token) = &state.token {
        let expected = format!("Bearer {token}");
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        if !given.is_some_and(|g| constant_time_eq(g, expected.as_bytes())) {
            return json(StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#);
        }
    }
    match path {
        "/readyz" if state.ready.load(Ordering::Acquire) => {
            json(StatusCode::OK, r#"{"status":"ready"}"#)
        }
        "/readyz" => json(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"not_ready"}"#),
        _ => json(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#),
    }
}

fn json(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(state: &Arc<AdminState>, path: &str, auth: Option<&str>) -> StatusCode {
        let mut b = Request::builder().uri(path);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        handle(state, &b.body(()).unwrap()).status()
    }

    #[test]
    fn routes_and_token() {
        let s = Arc::new(AdminState {
            ready: AtomicBool::new(true),
            token: Some("t0k".into()),
        });
        assert_eq!(get(&s, "/healthz", None), StatusCode::OK);
        assert_eq!(get(&s, "/readyz", None), StatusCode::UNAUTHORIZED);
        assert_eq!(
            get(&s, "/readyz", Some("Bearer nope")),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(get(&s, "/readyz", Some("Bearer t0k")), StatusCode::OK);
        s.ready.store(false, Ordering::Release);
        assert_eq!(
            get(&s, "/readyz", Some("Bearer t0k")),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get(&s, "/nope", Some("Bearer t0k")), StatusCode::NOT_FOUND);
    }
}
