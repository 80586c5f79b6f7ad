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
///
/// Only printable ASCII without a backslash, starting with one `/` and not two, that parses
/// as an origin-form request target: browsers drop tabs and line breaks from a `Location` and
/// read a backslash as `/`, so `/<TAB>/evil.example` or `/<BACKSLASH>evil.example` would leave
/// the site; nothing that could be read so is followed.
pub(super) fn local(to: &str) -> String {
    let printable = to.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    let rooted = to.starts_with('/') && !to.starts_with("//");
    match to.parse::<http::uri::PathAndQuery>() {
        Ok(pq) if printable && rooted && pq.as_str() == to => to.to_owned(),
        _ => "/".to_owned(),
    }
}

/// Sign-in attempts allowed per [`ATTEMPT_WINDOW`], over the listener (not per address: a
/// fleet sits behind proxies); past it `/login` answers 429 until the window ends. Every
/// attempt is counted when it arrives, before its form is read: attempts sent at once cannot
/// all be checked inside one window. Programs with the bearer header are never held (a token
/// of 16 characters or more cannot be guessed online; `check` warns of a shorter one).
pub const MAX_FAILED_SIGN_INS: u32 = 10;
/// The window [`MAX_FAILED_SIGN_INS`] counts over.
pub const ATTEMPT_WINDOW: Duration = Duration::from_secs(60);

/// The sign-in attempts of the current window.
#[derive(Debug, Default)]
pub struct Attempts(std::sync::Mutex<Option<(std::time::Instant, u32)>>);

impl Attempts {
    /// Counts an attempt; `Err(wait)` (and nothing counted) while the window's are used up.
    pub(super) fn admit(&self, now: std::time::Instant) -> Result<(), Duration> {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *g {
            Some((start, n)) if now < start + ATTEMPT_WINDOW => {
                if n >= MAX_FAILED_SIGN_INS {
                    return Err(start + ATTEMPT_WINDOW - now);
                }
                *g = Some((start, n + 1));
            }
            _ => *g = Some((now, 1)),
        }
        Ok(())
    }

    /// A successful sign-in gives its attempt back.
    pub(super) fn succeeded(&self) {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((start, n)) = *g {
            *g = Some((start, n.saturating_sub(1)));
        }
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

    proptest::proptest! {
        /// Whatever `next` is, the address a browser goes to (read as WHATWG URL parsing does:
        /// tabs and line breaks dropped, `\\` as `/`) is on this listener.
        #[test]
        fn a_redirect_never_leaves_the_listener(
            s in "\\PC{0,24}|[/\\\\\t\n\r%2Fa-z.:@?#]{0,24}|/[\t\n\r]{0,3}[/\\\\][a-z.]{0,12}",
        ) {
            let base = url::Url::parse("http://admin.local:9090/login").unwrap();
            let to = local(&s);
            let at = base.join(&to).unwrap();
            proptest::prop_assert_eq!(at.origin(), base.origin(), "{:?} -> {:?}", s, to);
            let res = redirect(&s);
            let loc = res.headers()[header::LOCATION].to_str().unwrap();
            proptest::prop_assert_eq!(base.join(loc).unwrap().origin(), base.origin());
        }
    }

    #[test]
    fn browser_normalised_forms_stay_home() {
        for bad in [
            "/\t/evil.example",
            "/\n/evil.example",
            "/\\/evil.example",
            "\t//evil.example",
            "/\r\n/evil",
        ] {
            assert_eq!(local(bad), "/", "{bad:?}");
        }
        assert_eq!(
            local("/%2F/x"),
            "/%2F/x",
            "an encoded slash is a path segment"
        );
        let a = Attempts::default();
        let t = std::time::Instant::now();
        for _ in 0..MAX_FAILED_SIGN_INS {
            assert!(a.admit(t).is_ok());
        }
        assert!(a.admit(t).is_err(), "counted on arrival: no race");
        assert!(a.admit(t + ATTEMPT_WINDOW).is_ok());
        a.succeeded();
        assert!(a.admit(t + ATTEMPT_WINDOW).is_ok());
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
