//! Who may read the admin listener when `[admin] token` is set.
//!
//! - Programs send `Authorization: Bearer <token>`: every route, reads and changes.
//! - People sign in once at `/login` (a form posting the token): the answer sets an `HttpOnly`,
//!   `SameSite=Strict` cookie holding an expiry and an HMAC-SHA256 of it keyed by the token, so
//!   no token sits in a page's script, its links or the address bar, any instance of a fleet
//!   sharing the token accepts it, and changing the token signs everyone out. The cookie
//!   opens pages and `GET` APIs only: a change (`POST`) needs the bearer header.
//! - A link carrying `?token=` (as printed by older versions) still opens a page once: the
//!   answer sets the cookie and redirects to the same address without the token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub(super) const COOKIE: &str = "shadowdiff_session";

/// How long a sign-in lasts.
pub(super) const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// How a request was authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// No token configured, or the bearer header: everything.
    Full,
    /// A valid session cookie (or a `?token=` link being exchanged for one): reads only.
    Session,
    None,
}

/// Compares a presented secret with the expected one in constant time (both hashed first, so
/// the time depends on neither's length).
pub(super) fn secret_eq(presented: &[u8], expected: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    Sha256::digest(presented)
        .ct_eq(&Sha256::digest(expected))
        .into()
}

fn mac(token: &str, expires: u64) -> String {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()).expect("any key length");
    m.update(format!("shadowdiff-session:{expires}").as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// A session cookie's value valid until `now + LIFETIME`.
pub(super) fn issue(token: &str, now: SystemTime) -> String {
    let expires = (now + LIFETIME)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("v1.{expires}.{}", mac(token, expires))
}

/// Whether a cookie value is a session signed with `token` and not expired at `now`.
pub(super) fn valid(token: &str, value: &str, now: SystemTime) -> bool {
    let mut parts = value.splitn(3, '.');
    let (Some("v1"), Some(expires), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(expires) = expires.parse::<u64>() else {
        return false;
    };
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // Not expired, and not issued further ahead than a lifetime (a forged far future).
    expires > now
        && expires <= now + LIFETIME.as_secs() + 60
        && secret_eq(sig.as_bytes(), mac(token, expires).as_bytes())
}

/// The session cookie's value in a request's `Cookie` headers.
pub(super) fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` of a new session (`Secure` when the listener serves TLS).
pub(super) fn set_cookie(token: &str, secure: bool) -> HeaderValue {
    let value = format!(
        "{COOKIE}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        issue(token, SystemTime::now()),
        LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&value).expect("the cookie is ASCII")
}

/// The `Set-Cookie` that ends a session.
pub(super) fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("shadowdiff_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict")
}

/// A redirect (303) to a local address.
pub(super) fn redirect(to: &str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::SEE_OTHER;
    res.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&local(to)).unwrap_or_else(|_| HeaderValue::from_static("/")),
    );
    res
}

/// `to` when it is a path of this listener, `/` otherwise (no open redirect to another site).
pub(super) fn local(to: &str) -> String {
    if to.starts_with('/')
        && !to.starts_with("//")
        && !to.contains('\\')
        && !to.contains(['\r', '\n'])
    {
        to.to_owned()
    } else {
        "/".to_owned()
    }
}

/// The sign-in page (`error`: the previous attempt failed).
pub(super) fn login_page(next: &str, error: bool) -> String {
    let next = crate::report::render::esc(&local(next));
    super::pages::page(
        "sign in",
        &format!(
            "<h1>shadowdiff</h1><form method=\"post\" action=\"/login\" class=\"login\">\
             <input type=\"hidden\" name=\"next\" value=\"{next}\">\
             <label>admin token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" autofocus required></label> \
             <button type=\"submit\">sign in</button></form>{}\
             <p class=\"muted\">The token is <code>[admin] token</code> of the config. Signing in sets a cookie for {} hours; \
             programs send <code>Authorization: Bearer</code> instead.</p>",
            if error {
                "<p class=\"bad\" id=\"login-error\">That is not the token.</p>"
            } else {
                ""
            },
            LIFETIME.as_secs() / 3600
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_signed_and_expire() {
        let now = SystemTime::now();
        let c = issue("t0k", now);
        assert!(valid("t0k", &c, now));
        assert!(!valid("other", &c, now), "a new token signs everyone out");
        assert!(!valid("t0k", &c, now + LIFETIME + Duration::from_secs(1)));
        // Tampered: another expiry with the old signature; garbage; far future.
        let sig = c.rsplit('.').next().unwrap();
        assert!(!valid("t0k", &format!("v1.99999999999.{sig}"), now));
        for bad in ["", "v1", "v1..", "v2.1.x", "v1.x.y", "v1.1.", "\u{0}.é.ß"] {
            assert!(!valid("t0k", bad, now), "{bad:?}");
        }
        let far = 4_000_000_000u64;
        assert!(!valid("t0k", &format!("v1.{far}.{}", mac("t0k", far)), now));
    }

    #[test]
    fn only_local_redirects() {
        assert_eq!(local("/route/x?since=1h"), "/route/x?since=1h");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "",
            "x",
            "/a\r\nSet-Cookie: x",
        ] {
            assert_eq!(local(bad), "/", "{bad:?}");
        }
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; shadowdiff_session=v1.2.3"),
        );
        assert_eq!(cookie(&h), Some("v1.2.3"));
        h.clear();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        assert_eq!(cookie(&h), None);
    }
}
