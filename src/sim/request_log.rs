//! The request log: the ARM and Log Analytics requests the simulator answered, for tests and reports.
//! It is a bounded ring, so junk cannot grow it: it keeps at most `maxRecords` records and
//! `maxTotalBytes` of recorded text, dropping the oldest (and counting them), and keeps at most
//! `maxBodyBytes` of each body, cutting the rest behind a marker. Bodies are held as redacted JSON
//! text, not `serde_json::Value` (several times larger), and turned back into values when read.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Records kept by default: a 600-machine throughput run sends well under 20,000 requests.
pub const DEFAULT_MAX_RECORDS: usize = 100_000;
/// Bytes of one recorded body (as JSON text) by default; ARM bodies the product sends are a few KB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Bytes of text over all records kept by default (paths, queries, user agents, bodies).
pub const DEFAULT_MAX_TOTAL_BYTES: usize = 128 * 1024 * 1024;

/// How much of the traffic the request log keeps (`Scenario::request_log`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestLogLimits {
    /// Records kept; beyond it the oldest are dropped.
    pub max_records: usize,
    /// Bytes of one recorded request or response body, as JSON text; the rest is cut, with a marker.
    pub max_body_bytes: usize,
    /// Bytes of recorded text over all records kept; beyond it the oldest are dropped (the newest
    /// record is always kept).
    pub max_total_bytes: usize,
}

impl Default for RequestLogLimits {
    fn default() -> Self {
        Self {
            max_records: DEFAULT_MAX_RECORDS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
        }
    }
}

/// One request as the simulator saw it (secrets redacted; a body over the limit is a string ending
/// in a `[truncated by the simulator's request log: …]` marker).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// Position among the requests recorded since the simulator started or the log was cleared
    /// (dropped records leave gaps at the start).
    pub seq: usize,
    pub sim_time: String,
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub request_body: Option<Value>,
    pub status: u16,
    pub response_body: Option<Value>,
    /// The request's `User-Agent` header, when it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// What the HTTP shell hands the log for one request.
pub struct Exchange<'a> {
    pub sim_time: String,
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a BTreeMap<String, String>,
    /// The redacted request body.
    pub request_body: Option<&'a Value>,
    pub status: u16,
    /// The response body as sent.
    pub response_body: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// A body as kept: whole JSON text, or its first bytes with the marker appended.
#[derive(Debug)]
enum Body {
    Json(Box<str>),
    Cut(Box<str>),
}

impl Body {
    fn keep(text: &str, limit: usize) -> Self {
        if text.len() <= limit {
            return Body::Json(text.into());
        }
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Body::Cut(
            format!(
                "{}… [truncated by the simulator's request log: {} of {} bytes cut; it keeps {limit} bytes of a body]",
                &text[..end],
                text.len() - end,
                text.len()
            )
            .into(),
        )
    }
    fn len(&self) -> usize {
        match self {
            Body::Json(t) | Body::Cut(t) => t.len(),
        }
    }
    fn value(&self) -> Value {
        match self {
            Body::Json(t) => {
                serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_string()))
            }
            Body::Cut(t) => Value::String(t.to_string()),
        }
    }
}

#[derive(Debug)]
struct Entry {
    seq: usize,
    sim_time: String,
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    request_body: Option<Body>,
    status: u16,
    response_body: Option<Body>,
    user_agent: Option<String>,
    /// Recorded text, counted against `max_total_bytes`.
    bytes: usize,
}

impl Entry {
    fn record(&self) -> RequestRecord {
        RequestRecord {
            seq: self.seq,
            sim_time: self.sim_time.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            request_body: self.request_body.as_ref().map(Body::value),
            status: self.status,
            response_body: self.response_body.as_ref().map(Body::value),
            user_agent: self.user_agent.clone(),
        }
    }
}

/// Requests served, by class: kept as totals beside the ring, so reports over long runs do not
/// depend on how many records the ring still holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestCounts {
    pub reads: u64,
    pub writes: u64,
    pub deletes: u64,
    pub throttled: u64,
    pub resource_graph: u64,
    pub log_queries: u64,
}

impl RequestCounts {
    /// Count one request: Log Analytics queries and Resource Graph apart, ARM by method.
    pub fn count(&mut self, method: &str, path: &str, status: u16) {
        if status == 429 {
            self.throttled += 1;
        }
        if path.contains("/v1/workspaces/") {
            self.log_queries += 1;
        } else if path
            .to_ascii_lowercase()
            .contains("/providers/microsoft.resourcegraph/")
        {
            self.resource_graph += 1;
        } else {
            match method {
                "GET" | "HEAD" => self.reads += 1,
                "DELETE" => self.deletes += 1,
                _ => self.writes += 1,
            }
        }
    }
}

/// The bounded ring of recorded requests.
#[derive(Debug)]
pub struct RequestLog {
    limits: RequestLogLimits,
    entries: VecDeque<Entry>,
    /// Requests recorded since start or the last clear (the next `seq`).
    recorded: usize,
    /// Records dropped to stay within the limits since start or the last clear.
    dropped: u64,
    bytes: usize,
    /// Every request recorded since start or the last clear, by class (dropped ones included).
    counts: RequestCounts,
}

impl RequestLog {
    pub fn new(limits: RequestLogLimits) -> Self {
        Self {
            limits,
            entries: VecDeque::new(),
            recorded: 0,
            dropped: 0,
            bytes: 0,
            counts: RequestCounts::default(),
        }
    }

    pub fn limits(&self) -> &RequestLogLimits {
        &self.limits
    }

    pub fn push(&mut self, x: Exchange<'_>) {
        self.counts.count(x.method, x.path, x.status);
        let limit = self.limits.max_body_bytes;
        let request_body = x.request_body.map(|v| Body::keep(&v.to_string(), limit));
        let response_body = x.response_body.map(|t| Body::keep(t, limit));
        let bytes = x.sim_time.len()
            + x.method.len()
            + x.path.len()
            + x.query
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + x.user_agent.map_or(0, str::len)
            + request_body.as_ref().map_or(0, Body::len)
            + response_body.as_ref().map_or(0, Body::len);
        self.entries.push_back(Entry {
            seq: self.recorded,
            sim_time: x.sim_time,
            method: x.method.to_string(),
            path: x.path.to_string(),
            query: x.query.clone(),
            request_body,
            status: x.status,
            response_body,
            user_agent: x.user_agent.map(str::to_string),
            bytes,
        });
        self.recorded += 1;
        self.bytes += bytes;
        while self.entries.len() > self.limits.max_records.max(1)
            || (self.bytes > self.limits.max_total_bytes && self.entries.len() > 1)
        {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.bytes;
            if self.dropped == 0 {
                tracing::warn!(
                    max_records = self.limits.max_records,
                    max_total_bytes = self.limits.max_total_bytes,
                    "the simulator's request log is full: dropping its oldest records (raise the scenario's requestLog limits to keep more)"
                );
            }
            self.dropped += 1;
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.recorded = 0;
        self.dropped = 0;
        self.bytes = 0;
        self.counts = RequestCounts::default();
    }

    /// Requests recorded since start or the last clear, by class, dropped records included.
    pub fn counts(&self) -> &RequestCounts {
        &self.counts
    }

    /// The records kept, oldest first, bodies as JSON values.
    pub fn records(&self) -> Vec<RequestRecord> {
        self.entries.iter().map(Entry::record).collect()
    }

    /// The records kept, one at a time (for streaming them out without holding all as values).
    pub fn iter(&self) -> impl Iterator<Item = RequestRecord> + '_ {
        self.entries.iter().map(Entry::record)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Recorded text held (paths, queries, user agents, bodies), bounded by `max_total_bytes` plus
    /// the newest record.
    pub fn recorded_bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn push(log: &mut RequestLog, path: &str, body: Option<&Value>, response: Option<&str>) {
        log.push(Exchange {
            sim_time: "2025-06-02T08:00:00.000Z".into(),
            method: "PUT",
            path,
            query: &BTreeMap::new(),
            request_body: body,
            status: 200,
            response_body: response,
            user_agent: None,
        });
    }

    #[test]
    fn keeps_the_newest_records_and_counts_the_dropped() {
        let mut log = RequestLog::new(RequestLogLimits {
            max_records: 3,
            ..RequestLogLimits::default()
        });
        for i in 0..5 {
            push(&mut log, &format!("/p/{i}"), None, None);
        }
        let recs = log.records();
        assert_eq!(
            recs.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(recs[0].path, "/p/2");
        assert_eq!(log.dropped(), 2);
        // The class totals count the dropped requests too.
        assert_eq!(log.counts().writes, 5);
        log.push(Exchange {
            sim_time: "2025-06-02T08:00:00.000Z".into(),
            method: "GET",
            path: "/v1/workspaces/w/query",
            query: &BTreeMap::new(),
            request_body: None,
            status: 429,
            response_body: None,
            user_agent: None,
        });
        assert_eq!(
            (log.counts().log_queries, log.counts().throttled, log.len()),
            (1, 1, 3)
        );
        log.clear();
        assert_eq!(log.counts(), &RequestCounts::default());
        assert!(log.is_empty());
        assert_eq!(log.dropped(), 0);
        push(&mut log, "/p/again", None, None);
        assert_eq!(log.records()[0].seq, 0, "seq restarts after a clear");
    }

    #[test]
    fn bodies_round_trip_or_are_cut_with_a_marker() {
        let mut log = RequestLog::new(RequestLogLimits {
            max_body_bytes: 100,
            ..RequestLogLimits::default()
        });
        let small = json!({"properties": {"n": 1.5, "s": "é"}});
        push(&mut log, "/small", Some(&small), Some("{\"id\":\"x\"}"));
        let big = json!({"blob": "é".repeat(1000)});
        push(&mut log, "/big", Some(&big), None);
        let recs = log.records();
        assert_eq!(recs[0].request_body.as_ref(), Some(&small));
        assert_eq!(recs[0].response_body, Some(json!({"id": "x"})));
        let cut = recs[1]
            .request_body
            .as_ref()
            .and_then(Value::as_str)
            .unwrap();
        let total = big.to_string().len();
        assert!(cut.starts_with("{\"blob\":\"é"), "{cut}");
        // 100 bytes fall inside a two-byte 'é': 99 are kept.
        assert!(
            cut.ends_with(&format!(
                "[truncated by the simulator's request log: {} of {total} bytes cut; it keeps 100 bytes of a body]",
                total - 99
            )),
            "{cut}"
        );
    }

    #[test]
    fn total_bytes_are_bounded() {
        let mut log = RequestLog::new(RequestLogLimits {
            max_records: 1_000,
            max_body_bytes: 1_000,
            max_total_bytes: 10_000,
        });
        let body = json!("x".repeat(5_000));
        for _ in 0..50 {
            push(&mut log, "/p", Some(&body), None);
        }
        assert!(log.recorded_bytes() <= 10_000, "{}", log.recorded_bytes());
        assert!(log.len() >= 5 && log.dropped() > 0);
        assert_eq!(log.len() as u64 + log.dropped(), 50);
    }
}
