//! Noise learning (`[diff.noise]`): for a sampled share of mirrored GET/HEAD requests, legacy
//! is asked the same question twice; the fields where its two answers differ are noise.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use super::candidate::{body_hint, read_candidate_body};
use super::*;

impl Shadow {
    /// For a sampled share (`[diff.noise] secondary_sample_rate`) of mirrored GET/HEAD requests:
    /// the same request again for legacy, sent from the comparison task once legacy has answered
    /// the caller. Its answer is compared with the first one to learn which fields are noise.
    /// `cfg` is the configuration the request was decided with. Off (the default) it costs one
    /// comparison on the request path.
    pub(super) fn secondary(
        cfg: &Config,
        parts: &http::request::Parts,
    ) -> Option<Request<Full<Bytes>>> {
        let rate = cfg.diff.noise.secondary_sample_rate;
        if rate <= 0.0 || !config::is_safe(&parts.method) || !sampled(rate) {
            return None;
        }
        let base = cfg.legacy.base_url.as_ref()?;
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut headers = parts.headers.clone();
        upstream::strip_hop_by_hop(&mut headers);
        upstream::request(
            base,
            parts.method.clone(),
            pq,
            headers,
            Full::new(Bytes::new()),
        )
        .ok()
    }

    /// Sends a second legacy call; `None` when it fails, times out or is too large.
    pub(super) async fn legacy_again(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Option<(StatusCode, HeaderMap, Bytes, Held)> {
        let cfg = self.config();
        let max_body = cfg.shadow.max_body;
        let call = async {
            let res = self.legacy_client.request(req).await.ok()?;
            let (parts, body) = res.into_parts();
            let hint = body_hint(&parts.headers);
            match read_candidate_body(body, max_body, hint, &self.budget)
                .await
                .ok()?
            {
                (CandidateBody::Complete(b), held) => Some((parts.status, parts.headers, b, held)),
                _ => None,
            }
        };
        crate::telemetry::secondary_call();
        tokio::time::timeout(cfg.legacy.timeout, call)
            .await
            .ok()
            .flatten()
    }

    /// Compares legacy's two answers and hands the differing fields to the store.
    pub(super) fn learn_noise(
        &self,
        meta: &Meta,
        legacy: &mut Legacy,
        (status, headers, body, _held): (StatusCode, HeaderMap, Bytes, Held),
        rules: &diff::Rules,
        cfg: &Config,
    ) {
        let Legacy::Response {
            status: l_status,
            headers: l_headers,
            body: Captured::Complete(chunks),
            ..
        } = legacy
        else {
            return;
        };
        if l_status.as_u16() >= 300 {
            return;
        }
        let first = capture::join(std::mem::take(chunks));
        chunks.push(first.clone());
        let a = compare::Side {
            status: *l_status,
            headers: l_headers,
            body: first,
        };
        let b = compare::Side {
            status,
            headers: &headers,
            body,
        };
        if let Some(fields) = compare::noise_sample(&a, &b, rules, cfg) {
            tracing::debug!(fields = fields.len(), "noise sample");
            self.store.noise(crate::record::NoiseSample {
                route: RouteKey::from_route(meta.route.as_deref()),
                at: meta.started_at,
                fields,
            });
        }
    }
}
