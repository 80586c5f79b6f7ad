//! Webhooks: events delivered to `[[webhooks]]` endpoints from the store's outbox.
//!
//! Every event is written to the outbox (`webhook_outbox`) in the transaction that made it
//! happen, one row per subscribed endpoint, before anything is sent: a restart, a crash or an
//! endpoint that is down loses nothing. The deliverer (one task per `serve` instance, on the
//! shadow runtime) claims the oldest due delivery of each endpoint in turn, so an endpoint
//! never has two in flight and gets its events in order; a delivery is `POST`ed as JSON and
//! is done on a 2xx; otherwise it is tried again after `retry_base × 2^(attempts − 1)` (at most
//! 10 min) with ±25 % jitter, and after `max_attempts` it is dead (kept, listed by
//! `/api/webhooks`). A slow or failing endpoint never touches the proxy: deliveries run on the
//! background runtime, each within the endpoint's `timeout`.
//!
//! Each request carries `Shadowdiff-Event`, `Shadowdiff-Delivery` (the outbox id) and
//! `Shadowdiff-Signature: t=UNIX_SECONDS,v1=HEX`, where `HEX` is HMAC-SHA256 keyed by the
//! endpoint's secret over `"{t}.{body}"`. A receiver recomputes it, compares in constant time,
//! and refuses a `t` older than its replay window (5 minutes is usual); the body's `id` names
//! the event (the same on every attempt) so a receiver drops one it has seen.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};

use crate::store::{Delivery, Location, Outbox};

/// Longest pause between two attempts.
const MAX_RETRY: Duration = Duration::from_secs(600);
/// How often the deliverer looks for due deliveries.
const POLL: Duration = Duration::from_millis(250);

pub use crate::config::{Webhook as Endpoint, WEBHOOK_EVENTS as EVENTS};

/// The subscriptions as the store's writer takes them.
pub fn subscriptions(endpoints: &[Endpoint]) -> crate::store::Subscriptions {
    endpoints
        .iter()
        .map(|e| (e.name.clone(), e.events.clone()))
        .collect()
}

/// `Shadowdiff-Signature` of `body` at `t` (Unix seconds).
pub fn signature(secret: &str, t: u64, body: &str) -> String {
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The delay before attempt `attempts + 1` (after `attempts` failures), with jitter.
pub fn backoff(base: Duration, attempts: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let d = exp.min(MAX_RETRY);
    // ±25 %.
    let jitter = (crate::record::random_u64() % 1000) as f64 / 1000.0 * 0.5 - 0.25;
    d.mul_f64(1.0 + jitter)
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// Sends one delivery; `Ok` on a 2xx.
pub async fn send(client: &Client, e: &Endpoint, d: &Delivery) -> Result<u16, String> {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let req = http::Request::post(e.url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("shadowdiff-event", &d.event)
        .header("shadowdiff-delivery", d.id.to_string())
        .header("shadowdiff-signature", signature(&e.secret, t, &d.body))
        .body(Full::new(Bytes::from(d.body.clone())))
        .map_err(|err| err.to_string())?;
    let call = async {
        let res = client
            .request(req)
            .await
            .map_err(|err| crate::upstream::error_chain(&err))?;
        let status = res.status();
        // The answer's body is read and dropped, at most 64 KiB of it (an endpoint that streams
        // more has its connection closed): nothing it sends is held.
        let _ = http_body_util::Limited::new(res.into_body(), 64 << 10)
            .collect()
            .await;
        Ok::<_, String>(status.as_u16())
    };
    match tokio::time::timeout(e.timeout, call).await {
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(e.timeout)
        )),
        Ok(Err(err)) => Err(err),
        Ok(Ok(s)) if (200..300).contains(&s) => Ok(s),
        Ok(Ok(s)) => Err(format!("answered {s}")),
    }
}

/// Delivers the outbox's due deliveries to `endpoints` until `stop` resolves. Store errors
/// are logged and retried on the next round.
pub async fn run(
    location: Location,
    endpoints: Vec<Endpoint>,
    stop: impl std::future::Future<Output = ()>,
) {
    if endpoints.is_empty() {
        return;
    }
    let client: Client = match crate::upstream::client(None) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks: no HTTP client; nothing will be delivered");
            return;
        }
    };
    let outbox = Arc::new(std::sync::Mutex::new(Outbox::new(&location)));
    let endpoints = Arc::new(endpoints);
    let work = async {
        loop {
            // One task per endpoint and round: a slow endpoint holds only its own.
            let rounds = endpoints.iter().cloned().map(|e| {
                let (client, outbox) = (client.clone(), outbox.clone());
                async move { deliver_one(&client, &outbox, &e).await }
            });
            let delivered = futures_join(rounds).await;
            if !delivered {
                tokio::time::sleep(POLL).await;
            }
        }
    };
    tokio::select! {
        () = work => {}
        () = stop => {}
    }
}

async fn futures_join(
    rounds: impl Iterator<Item = impl std::future::Future<Output = bool> + Send + 'static>,
) -> bool {
    let handles: Vec<_> = rounds.map(tokio::spawn).collect();
    let mut any = false;
    for h in handles {
        any |= h.await.unwrap_or(false);
    }
    any
}

/// Claims and attempts the endpoint's next due delivery; whether there was one.
async fn deliver_one(
    client: &Client,
    outbox: &Arc<std::sync::Mutex<Outbox>>,
    e: &Endpoint,
) -> bool {
    let lease = e.timeout + Duration::from_secs(30);
    let name = e.name.clone();
    let ob = outbox.clone();
    let claimed = tokio::task::spawn_blocking(move || {
        ob.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .claim(&name, lease)
    })
    .await;
    let d = match claimed {
        Ok(Ok(Some(d))) => d,
        Ok(Ok(None)) => return false,
        Ok(Err(err)) => {
            tracing::warn!(error = %err, endpoint = %e.name, "webhooks: reading the outbox failed");
            return false;
        }
        Err(_) => return false,
    };
    let result = send(client, e, &d).await;
    let attempts = d.attempts + 1;
    let retry = (attempts < e.max_attempts).then(|| backoff(e.retry_base, attempts));
    match &result {
        Ok(status) => {
            tracing::info!(endpoint = %e.name, event = %d.event, id = d.id, status, "webhook delivered");
        }
        Err(err) if retry.is_some() => {
            tracing::warn!(endpoint = %e.name, event = %d.event, id = d.id, attempts, error = %err, "webhook delivery failed; will retry");
        }
        Err(err) => {
            tracing::error!(endpoint = %e.name, event = %d.event, id = d.id, attempts, error = %err, "webhook delivery dead after its last attempt");
        }
    }
    crate::telemetry::webhook(if result.is_ok() {
        "delivered"
    } else if retry.is_some() {
        "failed"
    } else {
        "dead"
    });
    let ob = outbox.clone();
    let id = d.id;
    let outcome = result.map(|_| ());
    let _ = tokio::task::spawn_blocking(move || {
        ob.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .attempted(id, &outcome, retry)
    })
    .await;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_the_timestamp_and_the_body() {
        // The primitive against RFC 4231's test case 2.
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex = hex::encode(mac.finalize().into_bytes());
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // The header: over "t.body".
        let s = signature("Jefe", 1_700_000_000, "{}");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1700000000.{}");
        let want = hex::encode(mac.finalize().into_bytes());
        assert_eq!(s, format!("t=1700000000,v1={want}"));
        assert_ne!(s, signature("Jeff", 1_700_000_000, "{}"));
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap() {
        let base = Duration::from_secs(1);
        for attempts in 1..6u32 {
            let d = backoff(base, attempts).as_secs_f64();
            let want = f64::from(1u32 << (attempts - 1));
            assert!(d >= want * 0.75 && d <= want * 1.25, "{attempts}: {d}");
        }
        assert!(backoff(base, 40) <= MAX_RETRY.mul_f64(1.25));
    }
}
