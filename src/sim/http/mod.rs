//! The simulator's HTTP shell: one axum fallback handler parses method, path, query and body, then
//! dispatches by path segments (ARM paths nest resource ids, which route tables express poorly).
//! Every request passes api-version checks, faults and throttling like ARM, and lands in the request log.

mod compute;
mod graph;
mod insights;
mod logquery;
mod operations;
mod workspace;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};

use super::clock::{SimClock, SimMillis, iso};
use super::control;
use super::faults::FaultState;
use super::request_log::{Exchange, RequestLog};
use super::throttle::{Draw, OpClass, Throttle};
use super::world::{ArmError, World};

pub const API_COMPUTE: &str = "2024-11-01";
pub const API_HYBRID: &str = "2024-07-10";
pub const API_INSIGHTS: &str = "2023-03-11";
pub const API_WORKSPACE: &str = "2025-02-01";
pub const API_GRAPH: &str = "2024-04-01";

pub use super::request_log::RequestRecord;

/// Largest request body the simulator reads; a longer one is answered 413 without reading the rest.
/// The references we keep document no general ARM request-body limit; 4 MiB is ARM's documented
/// template size limit ("The template can't exceed 4 MB", learn.microsoft.com/azure/
/// azure-resource-manager/templates/error-job-size-exceeded), and the product's largest body, a DCR,
/// is a few KB.
pub const MAX_REQUEST_BODY_BYTES: usize = 4 * 1024 * 1024;

/// All mutable simulator state behind one lock (requests are short and CPU-bound).
pub struct Core {
    pub world: World,
    pub throttle: Throttle,
    pub log: RequestLog,
}

pub struct Shared {
    pub clock: Arc<SimClock>,
    pub core: Mutex<Core>,
}

impl Shared {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A parsed request.
pub struct Req {
    pub method: String,
    pub path: String,
    /// Path segments, as sent.
    pub seg: Vec<String>,
    /// Lower-case path segments, for matching.
    pub low: Vec<String>,
    pub query: BTreeMap<String, String>,
    pub body: Option<Value>,
    pub body_error: Option<String>,
    pub base: String,
}

impl Req {
    /// Query parameter, case-insensitive name.
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The JSON body, or a 400 explaining why there is none.
    pub fn json(&self) -> Result<&Value, ArmError> {
        if let Some(e) = &self.body_error {
            return Err(ArmError::new(
                400,
                "InvalidRequestContent",
                format!("The request content was invalid and could not be deserialized: {e}"),
            ));
        }
        self.body.as_ref().ok_or_else(|| {
            ArmError::new(
                400,
                "InvalidRequestContent",
                "The request content is missing: a JSON body is required.",
            )
        })
    }
}

/// A response to send.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    /// A non-JSON body (content type, text), e.g. the JSON-lines request log.
    pub text: Option<(&'static str, String)>,
}

impl Resp {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(body),
            text: None,
        }
    }
    pub fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
            text: None,
        }
    }
    pub fn text(status: u16, content_type: &'static str, text: String) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
            text: Some((content_type, text)),
        }
    }
    pub fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_string(), v.into()));
        self
    }
    pub fn err(e: &ArmError) -> Self {
        Self::json(e.status, e.body())
    }
}

impl From<ArmError> for Resp {
    fn from(e: ArmError) -> Self {
        Resp::err(&e)
    }
}

pub type HResult = Result<Resp, ArmError>;

/// Context passed to route handlers.
pub struct Ctx<'a> {
    pub world: &'a mut World,
    pub clock: &'a SimClock,
    pub now: SimMillis,
}

impl Ctx<'_> {
    /// `Retry-After` (real seconds) for an operation ending at `end`.
    pub fn retry_after(&self, end: Option<SimMillis>) -> String {
        let max = self.world.lro.max_retry_after_secs as SimMillis * 1000;
        let left = end
            .map(|e| (e - self.now).clamp(1000, max.max(1000)))
            .unwrap_or(max.max(1000));
        self.clock.retry_after_secs(left).to_string()
    }
}

pub async fn handle(State(shared): State<Arc<Shared>>, req: Request<Body>) -> Response {
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let user_agent = req
        .headers()
        .get("user-agent")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let method = req.method().as_str().to_string();
    let uri = req.uri().clone();
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let bytes = match read_body(req.into_body(), declared).await {
        Ok(b) => b,
        Err(e) => return to_response(Resp::err(&e)),
    };
    let path = uri.path().to_string();
    let mut query = BTreeMap::new();
    if let Some(q) = uri.query() {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            query.insert(k.into_owned(), v.into_owned());
        }
    }
    let (body, body_error) = if bytes.is_empty() {
        (None, None)
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e.to_string())),
        }
    };
    let seg: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let low = seg.iter().map(|s| s.to_ascii_lowercase()).collect();
    let r = Req {
        method,
        path,
        seg,
        low,
        query,
        body,
        body_error,
        base: format!("http://{host}"),
    };
    if r.low.first().map(String::as_str) == Some("_sim") {
        return to_response(control::handle(&shared, &r));
    }
    let mut core = shared.lock();
    let resp = dispatch(&mut core, &shared.clock, &r);
    let now = shared.clock.now();
    // Serialized once: the log keeps the text and the response sends it.
    let body_text = resp.body.as_ref().map(Value::to_string);
    let request_body = r.body.as_ref().map(redact);
    core.log.push(Exchange {
        sim_time: iso(now),
        method: &r.method,
        path: &r.path,
        query: &r.query,
        request_body: request_body.as_ref(),
        status: resp.status,
        response_body: body_text.as_deref(),
        user_agent: user_agent.as_deref(),
    });
    drop(core);
    respond(resp.status, resp.headers, body_text, resp.text)
}

/// After an oversized body, how much more of it is read and thrown away (by bytes and by time) so
/// the client, still sending, gets to read the 413 instead of a reset connection.
const DRAIN_BYTES: u64 = 64 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Read the request body, at most `MAX_REQUEST_BODY_BYTES`. A longer one (declared or sent) is a 413;
/// it is never buffered: what follows the limit is read and discarded (up to `DRAIN_BYTES` or
/// `DRAIN_TIME`) so that the answer reaches the client, or not read at all when the declared length is
/// beyond that.
async fn read_body(body: Body, declared: Option<u64>) -> Result<Bytes, ArmError> {
    let limit = MAX_REQUEST_BODY_BYTES;
    let too_large = |what: String| {
        ArmError::new(
            413,
            "RequestEntityTooLarge",
            format!(
                "The request body {what} the limit of {limit} bytes ({} MiB).",
                limit / (1024 * 1024)
            ),
        )
    };
    let mut frames = body.into_data_stream();
    if let Some(n) = declared
        && n > limit as u64
    {
        if n - limit as u64 <= DRAIN_BYTES {
            drain(&mut frames).await;
        }
        return Err(too_large(format!("of {n} bytes (Content-Length) exceeds")));
    }
    let mut buf: Vec<u8> = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(chunk) = frames.next().await {
        let chunk = chunk.map_err(|e| {
            ArmError::new(
                400,
                "InvalidRequestContent",
                format!("The request body could not be read: {e}"),
            )
        })?;
        if buf.len() + chunk.len() > limit {
            drop(buf);
            drain(&mut frames).await;
            return Err(too_large("is longer than".to_string()));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Read and discard the rest of a body, bounded by `DRAIN_BYTES` and `DRAIN_TIME`.
async fn drain(frames: &mut axum::body::BodyDataStream) {
    let read_rest = async {
        let mut n: u64 = 0;
        while let Some(Ok(chunk)) = frames.next().await {
            n += chunk.len() as u64;
            if n > DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, read_rest).await;
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

/// Remove secrets (`protectedSettings`) from a logged body.
pub fn redact(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    if k.eq_ignore_ascii_case("protectedSettings") {
                        (k.clone(), Value::String("<redacted>".into()))
                    } else {
                        (k.clone(), redact(v))
                    }
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redact).collect()),
        other => other.clone(),
    }
}

pub fn to_response(r: Resp) -> Response {
    let body_text = r.body.as_ref().map(Value::to_string);
    respond(r.status, r.headers, body_text, r.text)
}

/// A response from its parts, the JSON body already serialized.
fn respond(
    status: u16,
    headers: Vec<(String, String)>,
    json_text: Option<String>,
    text: Option<(&'static str, String)>,
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = match (json_text, text) {
        (Some(b), _) => (
            status,
            [("content-type", "application/json; charset=utf-8")],
            b,
        )
            .into_response(),
        (None, Some((ct, text))) => (status, [("content-type", ct)], text).into_response(),
        (None, None) => status.into_response(),
    };
    for (k, v) in headers {
        if let (Ok(name), Ok(val)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().append(name, val);
        }
    }
    resp
}

/// The provider namespace a path addresses (after the last `providers` segment), lower-case.
fn namespace_of(low: &[String]) -> Option<&str> {
    let i = low.iter().rposition(|s| s == "providers")?;
    low.get(i + 1).map(String::as_str)
}

fn api_version_for(ns: &str) -> Option<&'static str> {
    match ns {
        "microsoft.compute" => Some(API_COMPUTE),
        "microsoft.hybridcompute" => Some(API_HYBRID),
        "microsoft.insights" => Some(API_INSIGHTS),
        "microsoft.operationalinsights" => Some(API_WORKSPACE),
        "microsoft.resourcegraph" => Some(API_GRAPH),
        _ => None,
    }
}

/// ARM front door: api-version, faults, throttling, then the resource provider.
pub fn dispatch(core: &mut Core, clock: &SimClock, r: &Req) -> Resp {
    let now = clock.now();
    core.world.settle(now);
    if r.low.first().map(String::as_str) == Some("v1") {
        let mut ctx = Ctx {
            world: &mut core.world,
            clock,
            now,
        };
        return logquery::handle(&mut ctx, r).unwrap_or_else(Resp::from);
    }
    let Some(ns) = namespace_of(&r.low) else {
        return Resp::err(&ArmError::new(
            404,
            "InvalidResourceNamespace",
            format!("The request path '{}' names no resource provider.", r.path),
        ));
    };
    let Some(expected) = api_version_for(ns) else {
        return Resp::err(&ArmError::new(
            404,
            "InvalidResourceNamespace",
            format!("The resource namespace '{ns}' is invalid."),
        ));
    };
    match r.q("api-version") {
        None => {
            return Resp::err(&ArmError::new(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            ));
        }
        Some(v) if v != expected => {
            return Resp::err(&ArmError::new(
                400,
                "InvalidApiVersionParameter",
                format!(
                    "The api-version '{v}' is invalid. The supported versions are '{expected}'."
                ),
            ));
        }
        Some(_) => {}
    }
    let sub = match (r.low.first().map(String::as_str), r.seg.get(1)) {
        (Some("subscriptions"), Some(s)) => s.to_ascii_lowercase(),
        _ => "tenant".to_string(),
    };
    let class = match r.method.as_str() {
        "GET" | "HEAD" => OpClass::Read,
        "DELETE" => OpClass::Delete,
        "POST" if ns == "microsoft.resourcegraph" => OpClass::Read,
        _ => OpClass::Write,
    };
    // Faults first: a 5xx burst or a 429 storm answers before the RP sees the request.
    let faults: &mut FaultState = &mut core.world.faults;
    if faults.server_errors > 0 {
        faults.server_errors -= 1;
        let status = if faults.server_error_status == 0 {
            500
        } else {
            faults.server_error_status
        };
        let (code, msg) = if status == 503 {
            (
                "ServiceUnavailable",
                "The service is temporarily unavailable. Please retry later.",
            )
        } else {
            (
                "InternalServerError",
                "Encountered internal server error. Diagnostic information: timestamp '', subscription id '', tracking id ''.",
            )
        };
        return Resp::err(&ArmError::new(status, code, msg));
    }
    if let Some(until) = faults.storm_until {
        if until > now {
            let secs = clock.retry_after_secs(until - now);
            return throttled(&sub, class, secs).header(class.header(), "0");
        }
        faults.storm_until = None;
    }
    let remaining = match core.throttle.draw(&sub, class) {
        Draw::Ok(n) => n,
        Draw::Throttled { retry_after_secs } => {
            return throttled(&sub, class, retry_after_secs).header(class.header(), "0");
        }
    };
    // Compute counts extension writes and VM updates against its per-subscription "Update VM" policy.
    let compute_update =
        ns == "microsoft.compute" && matches!(r.method.as_str(), "PUT" | "PATCH" | "DELETE");
    let mut compute_remaining = None;
    if compute_update {
        match core.throttle.draw(&sub, OpClass::ComputeUpdate) {
            Draw::Ok(n) => compute_remaining = Some(n),
            Draw::Throttled { retry_after_secs } => {
                let limit = core.throttle.config().compute_update;
                let detail = json!({"operationGroup": "UpdateVMSubscriptionMaximum", "startTime": iso(now), "endTime": iso(now + retry_after_secs as i64 * 1000), "allowedRequestCount": limit.size as u64, "measuredRequestCount": limit.size as u64 + 1}).to_string();
                let mut e = ArmError::new(
                    429,
                    "OperationNotAllowed",
                    "The server rejected the request because too many requests have been received for this subscription.",
                );
                e.details = Some(
                    json!([{"code": "TooManyRequests", "target": "UpdateVMSubscriptionMaximum", "message": detail}]),
                );
                return Resp::err(&e)
                    .header("Retry-After", retry_after_secs.to_string())
                    .header(class.header(), remaining.to_string())
                    .header(
                        "x-ms-ratelimit-remaining-resource",
                        "Microsoft.Compute/UpdateVMSubscriptionMaximum;0",
                    );
            }
        }
    }
    if FaultState::scope_hit(&core.world.faults.forbidden, &r.path) {
        return with_rate(
            Resp::err(&ArmError::new(
                403,
                "AuthorizationFailed",
                format!(
                    "The client '00000000-0000-0000-0000-000000000000' with object id '00000000-0000-0000-0000-000000000000' does not have authorization to perform action over scope '{}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
                    r.path
                ),
            )),
            class,
            remaining,
        );
    }
    if matches!(r.method.as_str(), "PUT" | "PATCH" | "DELETE") && ns != "microsoft.resourcegraph" {
        let f = &core.world.faults;
        if FaultState::scope_hit(&f.locks, &r.path) {
            return with_rate(
                Resp::err(&ArmError::new(
                    409,
                    "ScopeLocked",
                    format!(
                        "The scope '{}' cannot perform {} operation because following scope(s) are locked: '{}'. Please remove the lock and try again.",
                        r.path,
                        if r.method == "DELETE" {
                            "delete"
                        } else {
                            "write"
                        },
                        f.locks
                            .iter()
                            .find(|s| r
                                .path
                                .to_ascii_lowercase()
                                .starts_with(&s.to_ascii_lowercase()))
                            .cloned()
                            .unwrap_or_default()
                    ),
                )),
                class,
                remaining,
            );
        }
        if r.method != "DELETE" && FaultState::scope_hit(&f.policies, &r.path) {
            return with_rate(
                Resp::err(&ArmError::new(
                    403,
                    "RequestDisallowedByPolicy",
                    format!(
                        "Resource '{}' was disallowed by policy. Policy identifiers: '[{{\"policyAssignment\":{{\"name\":\"Deny monitoring agents\",\"id\":\"/providers/Microsoft.Management/managementGroups/root/providers/Microsoft.Authorization/policyAssignments/deny-agents\"}}}}]'.",
                        r.seg.last().cloned().unwrap_or_default()
                    ),
                )),
                class,
                remaining,
            );
        }
    }
    let mut ctx = Ctx {
        world: &mut core.world,
        clock,
        now,
    };
    let resp = route(&mut ctx, r, ns).unwrap_or_else(Resp::from);
    let mut resp = with_rate(resp, class, remaining);
    if let Some(n) = compute_remaining {
        resp = resp.header(
            "x-ms-ratelimit-remaining-resource",
            format!("Microsoft.Compute/UpdateVMSubscriptionMaximum;{n}"),
        );
    }
    resp
}

fn with_rate(resp: Resp, class: OpClass, remaining: u64) -> Resp {
    resp.header(class.header(), remaining.to_string())
}

fn throttled(sub: &str, class: OpClass, secs: u64) -> Resp {
    let kind = match class {
        OpClass::Read => "read",
        OpClass::Delete => "delete",
        _ => "write",
    };
    Resp::err(&ArmError::new(429, "SubscriptionRequestsThrottled", format!(
        "Number of '{kind}' requests for subscription '{sub}' exceeded the limit. Please try again after '{secs}' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling for additional information."
    )))
    .header("Retry-After", secs.to_string())
}

fn route(ctx: &mut Ctx, r: &Req, ns: &str) -> HResult {
    let l: Vec<&str> = r.low.iter().map(String::as_str).collect();
    match (ns, l.as_slice()) {
        ("microsoft.resourcegraph", ["providers", _, "resources"]) => graph::handle(ctx, r),
        (_, ["subscriptions", _, "providers", _, "locations", _, kind, _]) => {
            operations::handle(ctx, r, kind)
        }
        ("microsoft.insights", _) if l.contains(&"datacollectionruleassociations") => {
            insights::dcra(ctx, r)
        }
        (
            "microsoft.insights",
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                _,
                "datacollectionrules",
                ..,
            ],
        ) => insights::dcr(ctx, r),
        (
            "microsoft.compute" | "microsoft.hybridcompute",
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                _,
                "virtualmachines" | "machines",
                ..,
            ],
        ) => compute::handle(ctx, r),
        (
            "microsoft.operationalinsights",
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                _,
                "workspaces",
                ..,
            ],
        ) => workspace::handle(ctx, r),
        _ => Err(ArmError::new(
            404,
            "NotFound",
            format!("The simulator does not serve {} {}.", r.method, r.path),
        )),
    }
}

pub fn method_not_allowed(r: &Req) -> ArmError {
    ArmError::new(
        405,
        "MethodNotAllowed",
        format!(
            "The requested resource does not support http method '{}'.",
            r.method
        ),
    )
}

/// The inventory rows of every machine ARM knows (for `SimHandle::inventory`).
pub fn graph_rows(world: &World) -> Vec<crate::inventory::InventoryMachine> {
    graph::inventory_rows(world, None)
}
