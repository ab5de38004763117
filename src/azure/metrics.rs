//! Request counters of the client, by operation class and status, readable as a snapshot
//! (prometheus registration can wrap the snapshot later).

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::throttle::BucketClass;

/// Totals since the client was created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// HTTP requests sent, by class (retries and polls included).
    pub reads: u64,
    pub writes: u64,
    pub deletes: u64,
    /// 429 responses received.
    pub throttled: u64,
    /// Requests re-sent after a 429, 5xx or network error.
    pub retries: u64,
    /// Transport failures (no HTTP status).
    pub network_errors: u64,
    /// Responses by (class, HTTP status).
    pub by_status: BTreeMap<(String, u16), u64>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<MetricsSnapshot>,
}

/// The coarse class a request is counted under.
pub fn class_label(class: BucketClass) -> &'static str {
    match class {
        BucketClass::Write | BucketClass::ComputeUpdateVm => "write",
        BucketClass::Delete => "delete",
        BucketClass::Read | BucketClass::ResourceGraph | BucketClass::LogQuery => "read",
    }
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut MetricsSnapshot) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    pub fn sent(&self, class: BucketClass, retry: bool) {
        self.with(|m| {
            match class_label(class) {
                "write" => m.writes += 1,
                "delete" => m.deletes += 1,
                _ => m.reads += 1,
            }
            if retry {
                m.retries += 1;
            }
        })
    }

    pub fn response(&self, class: BucketClass, status: u16) {
        self.with(|m| {
            if status == 429 {
                m.throttled += 1;
            }
            *m.by_status
                .entry((class_label(class).to_string(), status))
                .or_default() += 1;
        })
    }

    pub fn network_error(&self) {
        self.with(|m| m.network_errors += 1)
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        self.with(|m| m.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_class_and_status() {
        let m = Metrics::default();
        m.sent(BucketClass::Write, false);
        m.response(BucketClass::Write, 429);
        m.sent(BucketClass::Write, true);
        m.response(BucketClass::Write, 201);
        m.sent(BucketClass::Delete, false);
        m.sent(BucketClass::ResourceGraph, false);
        let s = m.snapshot();
        assert_eq!((s.reads, s.writes, s.deletes), (1, 2, 1));
        assert_eq!((s.throttled, s.retries), (1, 1));
        assert_eq!(s.by_status.get(&("write".to_string(), 201)), Some(&1));
    }
}
