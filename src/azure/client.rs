//! The HTTP shell of the ARM client: budget, token, send, classify, retry, count, trace.
//! Typed operations live in the sibling modules (`extensions`, `identity`, `insights`, …).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;
use url::Url;

use super::auth::Authenticator;
use super::config::{ARM_SCOPE, ClientConfig, LOG_ANALYTICS_SCOPE};
use super::error::{AzureError, Classification, classify_status};
use super::lro::{
    LroHeaders, LroMethod, OperationHandle, PollKind, PollState, StartedRequest, interpret_poll,
    operation_from_response,
};
use super::metrics::{Metrics, MetricsSnapshot};
use super::retry::parse_retry_after;
use super::throttle::{BucketClass, BucketKey, Budget};

/// Which service (and token audience) a request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Service {
    Arm,
    LogAnalytics,
}

/// One logical request; re-sent as is on retry.
#[derive(Debug)]
pub(crate) struct Request {
    pub method: reqwest::Method,
    pub url: Url,
    /// Serialized JSON body. Never logged: it may hold protectedSettings.
    pub body: Option<Vec<u8>>,
    pub service: Service,
    /// The subscription whose buckets the request spends, if any.
    pub subscription: Option<String>,
    /// The bucket class counted for metrics and header sync.
    pub class: BucketClass,
    pub buckets: Vec<BucketKey>,
    pub if_match: Option<String>,
}

/// A response the caller interprets (2xx, or 404 which often means "absent"/"done").
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub lro: LroHeaders,
    /// The body as reqwest collected it (no copy): parsed in place by [`Response::json`].
    pub body: bytes::Bytes,
}

impl Response {
    pub fn json<T: DeserializeOwned>(&self, method: &str, path: &str) -> Result<T, AzureError> {
        serde_json::from_slice(&self.body).map_err(|e| AzureError::Decode {
            method: method.to_string(),
            path: path.to_string(),
            message: e.to_string(),
        })
    }
    pub fn json_value(&self) -> Option<serde_json::Value> {
        if self.body.is_empty() {
            None
        } else {
            serde_json::from_slice(&self.body).ok()
        }
    }
}

/// The result of a PUT/PATCH/DELETE that may continue as a long-running operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Submitted<T> {
    /// The resource from the response body, when there was one.
    pub resource: Option<T>,
    /// Present while the operation is still running; persist it to resume after a restart.
    pub operation: Option<OperationHandle>,
}

impl<T> Submitted<T> {
    pub fn is_done(&self) -> bool {
        self.operation.is_none()
    }
}

/// One poll of a running operation.
#[derive(Clone, Debug, PartialEq)]
pub enum PollOutcome {
    Running {
        retry_after: Option<Duration>,
    },
    /// Finished successfully; for PUT/PATCH the final resource (None after a DELETE).
    Done(Option<serde_json::Value>),
}

/// The ARM / Resource Graph / Log Analytics client. Cheap to clone; clones share budget,
/// token cache and metrics.
#[derive(Clone, Debug)]
pub struct ArmClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    auth: Authenticator,
    config: ClientConfig,
    budget: Budget,
    metrics: Metrics,
}

const RATELIMIT_HEADERS: [(&str, BucketClass); 3] = [
    (
        "x-ms-ratelimit-remaining-subscription-reads",
        BucketClass::Read,
    ),
    (
        "x-ms-ratelimit-remaining-subscription-writes",
        BucketClass::Write,
    ),
    (
        "x-ms-ratelimit-remaining-subscription-deletes",
        BucketClass::Delete,
    ),
];

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Idle connections kept per host (ARM, Log Analytics, Resource Graph) between bursts.
const IDLE_CONNECTIONS_PER_HOST: usize = 8;

impl ArmClient {
    /// Builds the client with the configured credential (refused: `None` on a remote endpoint).
    pub fn new(config: ClientConfig) -> Result<Self, AzureError> {
        let auth = Authenticator::new(&config.credential, &config.endpoints)?;
        Self::with_authenticator(config, auth)
    }

    /// Builds the client with a given authenticator (e.g. a custom credential).
    pub fn with_authenticator(
        config: ClientConfig,
        auth: Authenticator,
    ) -> Result<Self, AzureError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(crate::USER_AGENT)
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(30)))
            // An idle connection keeps the read buffer its largest answer grew (a Log Analytics
            // result of every machine: hundreds of KiB). A burst of `maxParallel` requests must
            // not leave that many buffers behind: keep a few connections, close them when idle.
            .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST)
            .pool_idle_timeout(Duration::from_secs(30));
        if config.endpoints.first_remote().is_none() {
            // A loopback simulator must never be reached through an HTTP proxy.
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(|e| AzureError::Network {
            method: "-".into(),
            path: "-".into(),
            message: format!("cannot build the HTTP client: {e}"),
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                auth,
                budget: Budget::new(config.budget.clone()),
                metrics: Metrics::default(),
                config,
            }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    pub(crate) fn key(&self, scope: &str, class: BucketClass) -> BucketKey {
        BucketKey::new(scope, &self.inner.config.arm_region, class)
    }

    /// `{arm}/{path}?api-version=..&extra..`
    pub(crate) fn arm_url(
        &self,
        path: &str,
        api_version: &str,
        extra: &[(&str, &str)],
    ) -> Result<Url, AzureError> {
        build_url(
            &self.inner.config.endpoints.arm,
            path,
            Some(api_version),
            extra,
        )
    }

    pub(crate) fn log_analytics_url(&self, path: &str) -> Result<Url, AzureError> {
        build_url(&self.inner.config.endpoints.log_analytics, path, None, &[])
    }

    /// Parses a server-provided URL (nextLink, poll URL) and refuses hosts other than the
    /// configured ARM endpoint, so tokens never leave for an unexpected host.
    pub(crate) fn trusted_arm_url(&self, raw: &str) -> Result<Url, AzureError> {
        let url = Url::parse(raw).map_err(|e| AzureError::InvalidUrl {
            url: raw.to_string(),
            message: e.to_string(),
        })?;
        let arm = &self.inner.config.endpoints.arm;
        if url.scheme() != arm.scheme()
            || url.host_str() != arm.host_str()
            || url.port_or_known_default() != arm.port_or_known_default()
        {
            return Err(AzureError::UntrustedUrl {
                url: url.origin().ascii_serialization(),
                endpoint: arm.origin().ascii_serialization(),
            });
        }
        Ok(url)
    }

    /// A request on ARM spending the buckets of `class` (plus `extra`) of `subscription`.
    pub(crate) fn arm_request(
        &self,
        method: reqwest::Method,
        url: Url,
        subscription: &str,
        class: BucketClass,
        extra: &[BucketClass],
        body: Option<Vec<u8>>,
    ) -> Request {
        let mut buckets = vec![self.key(subscription, class)];
        buckets.extend(extra.iter().map(|c| self.key(subscription, *c)));
        Request {
            method,
            url,
            body,
            service: Service::Arm,
            subscription: Some(subscription.to_string()),
            class,
            buckets,
            if_match: None,
        }
    }

    /// Sends with budget, token, bounded retries. Ok for 2xx and 404; Err for everything else.
    pub(crate) async fn execute(&self, req: &Request) -> Result<Response, AzureError> {
        let inner = &self.inner;
        let policy = &inner.config.retry;
        let method = req.method.as_str().to_string();
        let path = req.url.path().to_string();
        let scope = match req.service {
            Service::Arm => ARM_SCOPE,
            Service::LogAnalytics => LOG_ANALYTICS_SCOPE,
        };
        let started = Instant::now();
        let mut attempt: u32 = 0;
        let mut transient_failures: u32 = 0;
        let mut throttle_waits: u32 = 0;
        loop {
            attempt += 1;
            inner.budget.acquire(&req.buckets).await;
            let auth = inner.auth.authorization(scope).await?;
            let span = tracing::info_span!(
                "azure_request",
                method = %method,
                path = %path,
                attempt,
                status = tracing::field::Empty,
                duration_ms = tracing::field::Empty,
            );
            let mut rb = inner.http.request(req.method.clone(), req.url.clone());
            if let Some(a) = &auth {
                // Marked sensitive so transport-level debug output never prints it.
                let mut v = reqwest::header::HeaderValue::from_str(a.secret()).map_err(|_| {
                    AzureError::Auth(super::error::AuthError::Credential {
                        credential: inner.auth.credential_name(),
                        scope: scope.to_string(),
                        message: "the token is not a valid HTTP header value".into(),
                    })
                })?;
                v.set_sensitive(true);
                rb = rb.header(reqwest::header::AUTHORIZATION, v);
            }
            if let Some(b) = &req.body {
                rb = rb
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
            }
            if let Some(etag) = &req.if_match {
                rb = rb.header(reqwest::header::IF_MATCH, etag);
            }
            let t = Instant::now();
            inner.metrics.sent(req.class, attempt > 1);
            let sent = async {
                let resp = rb.send().await?;
                let status = resp.status().as_u16();
                let lro = LroHeaders {
                    azure_async_operation: header(&resp, "azure-asyncoperation"),
                    location: header(&resp, "location"),
                    retry_after: header(&resp, "retry-after").and_then(|v| parse_retry_after(&v)),
                };
                let remaining: Vec<(BucketClass, f64)> = RATELIMIT_HEADERS
                    .iter()
                    .filter_map(|(h, c)| header(&resp, h)?.trim().parse().ok().map(|n| (*c, n)))
                    .collect();
                let body = resp.bytes().await?;
                Ok::<_, reqwest::Error>((status, lro, remaining, body))
            }
            .instrument(span.clone())
            .await;
            let elapsed_ms = t.elapsed().as_millis() as u64;
            span.record("duration_ms", elapsed_ms);
            let failure = match sent {
                Ok((status, lro, remaining, body)) => {
                    span.record("status", status);
                    inner.metrics.response(req.class, status);
                    let now = Instant::now();
                    if let Some(sub) = &req.subscription {
                        for (class, n) in remaining {
                            inner
                                .budget
                                .observe_remaining(&self.key(sub, class), n, now);
                        }
                    }
                    if (200..300).contains(&status) || status == 404 {
                        tracing::debug!(parent: &span, "azure request done");
                        return Ok(Response { status, lro, body });
                    }
                    let err = AzureError::api(&method, &path, status, &body);
                    let code = err.arm_code().unwrap_or_default().to_string();
                    match classify_status(status, &code) {
                        Classification::Permanent => return Err(err),
                        Classification::Throttled => {
                            throttle_waits += 1;
                            let wait = policy.throttle_wait(lro.retry_after);
                            tracing::warn!(parent: &span, wait_ms = wait.as_millis() as u64, "throttled (429); holding the bucket until Retry-After");
                            for k in &req.buckets {
                                inner.budget.block(k, now + wait, now);
                            }
                            if throttle_waits > policy.max_throttle_waits
                                || started.elapsed() + wait > policy.max_elapsed
                            {
                                return Err(exhausted(&method, &path, attempt, started, err));
                            }
                            // The budget now holds every request on these buckets until `wait`.
                            continue;
                        }
                        Classification::Transient => (err, lro.retry_after),
                    }
                }
                Err(e) => {
                    inner.metrics.network_error();
                    let message = e.without_url().to_string();
                    tracing::warn!(parent: &span, error = %message, "network error");
                    (
                        AzureError::Network {
                            method: method.clone(),
                            path: path.clone(),
                            message,
                        },
                        None,
                    )
                }
            };
            let (err, retry_after) = failure;
            transient_failures += 1;
            let delay = policy
                .backoff(transient_failures, rand::random::<f64>())
                .max(retry_after.unwrap_or_default().min(policy.max_retry_after));
            if transient_failures >= policy.max_attempts
                || started.elapsed() + delay > policy.max_elapsed
            {
                return Err(exhausted(&method, &path, attempt, started, err));
            }
            tracing::info!(delay_ms = delay.as_millis() as u64, error = %err, "retrying after transient failure");
            tokio::time::sleep(delay).await;
        }
    }

    /// GET returning `None` on 404.
    pub(crate) async fn get_optional<T: DeserializeOwned>(
        &self,
        url: Url,
        subscription: &str,
    ) -> Result<Option<T>, AzureError> {
        let req = self.arm_request(
            reqwest::Method::GET,
            url,
            subscription,
            BucketClass::Read,
            &[],
            None,
        );
        let resp = self.execute(&req).await?;
        if resp.status == 404 {
            return Ok(None);
        }
        resp.json("GET", req.url.path()).map(Some)
    }

    /// GET pages `{value, nextLink}` until no nextLink (bounded; a repeated link stops).
    pub(crate) async fn list_paged<T: DeserializeOwned>(
        &self,
        first: Url,
        subscription: &str,
    ) -> Result<Vec<T>, AzureError> {
        #[derive(serde::Deserialize)]
        struct Page<T> {
            #[serde(default = "Vec::new")]
            value: Vec<T>,
            #[serde(rename = "nextLink", default)]
            next_link: Option<String>,
        }
        const MAX_PAGES: usize = 10_000;
        let mut out = Vec::new();
        let mut url = first;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..MAX_PAGES {
            let req = self.arm_request(
                reqwest::Method::GET,
                url.clone(),
                subscription,
                BucketClass::Read,
                &[],
                None,
            );
            let resp = self.execute(&req).await?;
            if resp.status == 404 {
                return Err(AzureError::api("GET", url.path(), 404, &resp.body));
            }
            let page: Page<T> = resp.json("GET", url.path())?;
            out.extend(page.value);
            match page.next_link.filter(|l| !l.is_empty()) {
                Some(next) if seen.insert(next.clone()) => url = self.trusted_arm_url(&next)?,
                _ => return Ok(out),
            }
        }
        Ok(out)
    }

    /// PUT/PATCH/DELETE that may become a long-running operation.
    pub(crate) async fn submit<T: DeserializeOwned>(
        &self,
        method: LroMethod,
        url: Url,
        resource_id: &str,
        extra: &[BucketClass],
        body: Option<&impl Serialize>,
        if_match: Option<String>,
    ) -> Result<Submitted<T>, AzureError> {
        let parsed = super::ResourceId::parse(resource_id)?;
        let subscription = parsed.subscription();
        let (http_method, class) = match method {
            LroMethod::Put => (reqwest::Method::PUT, BucketClass::Write),
            LroMethod::Patch => (reqwest::Method::PATCH, BucketClass::Write),
            LroMethod::Delete => (reqwest::Method::DELETE, BucketClass::Delete),
        };
        let body = body
            .map(|b| serde_json::to_vec(b))
            .transpose()
            .map_err(|e| AzureError::Decode {
                method: method.as_str().into(),
                path: url.path().into(),
                message: format!("cannot serialize the request body: {e}"),
            })?;
        let mut req = self.arm_request(http_method, url.clone(), subscription, class, extra, body);
        req.if_match = if_match;
        let resp = self.execute(&req).await?;
        if resp.status == 404 && method != LroMethod::Delete {
            return Err(AzureError::api(
                method.as_str(),
                url.path(),
                404,
                &resp.body,
            ));
        }
        let value = resp.json_value();
        let operation = operation_from_response(StartedRequest {
            method,
            status: resp.status,
            headers: &resp.lro,
            body: value.as_ref(),
            resource_id,
            resource_url: url.as_str(),
            now: SystemTime::now(),
        });
        if let Some(op) = &operation {
            // Validate now rather than at resume time.
            self.trusted_arm_url(&op.poll_url)?;
        }
        let resource = match value {
            Some(v) if method != LroMethod::Delete => {
                Some(serde_json::from_value(v).map_err(|e| AzureError::Decode {
                    method: method.as_str().into(),
                    path: url.path().into(),
                    message: e.to_string(),
                })?)
            }
            _ => None,
        };
        Ok(Submitted {
            resource,
            operation,
        })
    }

    /// Polls a running operation once. Works from a handle persisted by another process.
    pub async fn poll_operation(&self, op: &OperationHandle) -> Result<PollOutcome, AzureError> {
        let url = self.trusted_arm_url(&op.poll_url)?;
        let sub = super::ResourceId::parse(&op.resource_id)?
            .subscription()
            .to_string();
        let req = self.arm_request(
            reqwest::Method::GET,
            url.clone(),
            &sub,
            BucketClass::Read,
            &[],
            None,
        );
        let resp = self.execute(&req).await?;
        let body = resp.json_value();
        match interpret_poll(op.poll_kind, op.method, resp.status, body.as_ref()) {
            PollState::Running => Ok(PollOutcome::Running {
                retry_after: resp.lro.retry_after,
            }),
            PollState::HttpError => {
                Err(AzureError::api("GET", url.path(), resp.status, &resp.body))
            }
            PollState::Failed { status, error } => Err(AzureError::OperationFailed {
                resource: op.resource_id.clone(),
                status,
                code: error.code,
                message: error.message,
            }),
            PollState::Succeeded => {
                if op.method == LroMethod::Delete {
                    return Ok(PollOutcome::Done(None));
                }
                let resource_body = match op.poll_kind {
                    PollKind::ResourceState => body,
                    PollKind::Location if resp.status == 200 => body,
                    _ => None,
                };
                match resource_body {
                    Some(b) => Ok(PollOutcome::Done(Some(b))),
                    None => {
                        let url = self.trusted_arm_url(&op.resource_url)?;
                        let v: Option<serde_json::Value> = self.get_optional(url, &sub).await?;
                        Ok(PollOutcome::Done(v))
                    }
                }
            }
        }
    }

    /// Polls until the operation ends (bounded by the LRO policy), honouring `Retry-After`.
    pub async fn wait_operation(
        &self,
        op: &OperationHandle,
    ) -> Result<Option<serde_json::Value>, AzureError> {
        let policy = &self.inner.config.lro;
        let started = Instant::now();
        let clamp = |d: Duration| d.min(policy.max_poll_interval);
        let mut delay = clamp(
            op.retry_after_ms
                .map(Duration::from_millis)
                .unwrap_or(policy.default_poll_interval),
        );
        for polls in 1..=policy.max_polls {
            if started.elapsed() + delay > policy.max_wait {
                return Err(AzureError::OperationStillRunning {
                    resource: op.resource_id.clone(),
                    polls: polls - 1,
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(delay).await;
            match self.poll_operation(op).await? {
                PollOutcome::Done(v) => return Ok(v),
                PollOutcome::Running { retry_after } => {
                    delay = clamp(retry_after.unwrap_or(policy.default_poll_interval));
                }
            }
        }
        Err(AzureError::OperationStillRunning {
            resource: op.resource_id.clone(),
            polls: policy.max_polls,
            waited: started.elapsed(),
        })
    }

    /// Waits for a submitted request to finish and returns the final resource.
    pub async fn complete<T: DeserializeOwned>(
        &self,
        submitted: Submitted<T>,
    ) -> Result<Option<T>, AzureError> {
        let Some(op) = submitted.operation else {
            return Ok(submitted.resource);
        };
        match self.wait_operation(&op).await? {
            None => Ok(None),
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| AzureError::Decode {
                    method: "GET".into(),
                    path: op.resource_id.clone(),
                    message: e.to_string(),
                }),
        }
    }
}

fn exhausted(
    method: &str,
    path: &str,
    attempts: u32,
    started: Instant,
    last: AzureError,
) -> AzureError {
    AzureError::RetriesExhausted {
        method: method.to_string(),
        path: path.to_string(),
        attempts,
        elapsed: started.elapsed(),
        last: Box::new(last),
    }
}

/// Joins `path` onto `base` (keeping any base path prefix) and appends query pairs.
pub(crate) fn build_url(
    base: &Url,
    path: &str,
    api_version: Option<&str>,
    extra: &[(&str, &str)],
) -> Result<Url, AzureError> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let p = format!("{}/", base.path());
        base.set_path(&p);
    }
    let mut url = base
        .join(path.trim_start_matches('/'))
        .map_err(|e| AzureError::InvalidUrl {
            url: format!("{base}{path}"),
            message: e.to_string(),
        })?;
    {
        let mut q = url.query_pairs_mut();
        if let Some(v) = api_version {
            q.append_pair("api-version", v);
        }
        for (k, v) in extra {
            q.append_pair(k, v);
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_base_prefix_and_encode_queries() {
        let base = Url::parse("http://127.0.0.1:9/sim").unwrap();
        let u = build_url(
            &base,
            "/subscriptions/s/x",
            Some("2024-11-01"),
            &[("$filter", "kind='WindowsEvent'")],
        )
        .unwrap();
        assert_eq!(u.path(), "/sim/subscriptions/s/x");
        assert_eq!(
            u.query_pairs().collect::<Vec<_>>(),
            vec![
                ("api-version".into(), "2024-11-01".into()),
                ("$filter".into(), "kind='WindowsEvent'".into())
            ]
        );
        let u = build_url(
            &Url::parse("https://api.loganalytics.io/").unwrap(),
            "/v1/workspaces/g/query",
            None,
            &[],
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "https://api.loganalytics.io/v1/workspaces/g/query"
        );
    }

    #[tokio::test]
    async fn arm_and_log_analytics_requests_carry_the_user_agent() {
        use crate::azure::{CredentialConfig, Endpoints, ResourceId};
        use crate::sim::{Scenario, Simulator};
        let sim = Simulator::start(
            Scenario {
                machines: 1,
                ..Scenario::default()
            },
            "127.0.0.1:0",
        )
        .await
        .unwrap();
        let base = Url::parse(&sim.base_url()).unwrap();
        let client = ArmClient::new(ClientConfig::new(
            Endpoints::single(base),
            CredentialConfig::None,
        ))
        .unwrap();
        let workspace = ResourceId::parse(&sim.workspace_resource_id()).unwrap();
        client
            .list_data_sources(&workspace, "WindowsEvent")
            .await
            .unwrap();
        // Whatever the simulator answers, the request is logged with its agent.
        let _ = client
            .query_logs(&sim.workspace_customer_id(), "Heartbeat | take 1", None)
            .await;
        let log = sim.request_log();
        assert!(
            log.iter().any(|r| r.path.contains("/dataSources"))
                && log.iter().any(|r| r.path.ends_with("/query")),
            "{log:?}"
        );
        for r in &log {
            assert_eq!(r.user_agent.as_deref(), Some(crate::USER_AGENT), "{r:?}");
        }
        sim.shutdown().await;
    }
}
