//! Verification with bulk Log Analytics queries: one AMA Heartbeat query and one catalog proof
//! query per data source type cover every machine waiting for verification, never a query per
//! machine. Also the parity measurement of canary waves (legacy rows in production against AMA
//! rows in the test workspace).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::azure::ArmClient;
use crate::catalog::{Catalog, DataSourceType};
use crate::inventory::{CATEGORY_AMA, LogQueryResponse};

use super::EngineError;

/// The query window for the proof of delivery, in minutes.
pub const VERIFY_WINDOW_MINUTES: u32 = 15;

/// `Computer`, `_ResourceId` and `count_` of every row of the first table, as sent.
fn rows(resp: &LogQueryResponse) -> impl Iterator<Item = (&str, &str, f64)> + '_ {
    let t = resp.tables.first();
    let c = t.and_then(|t| t.column("Computer"));
    let r = t.and_then(|t| t.column("_ResourceId"));
    let n = t.and_then(|t| t.column("count_"));
    t.into_iter().flat_map(|t| t.rows.iter()).map(move |row| {
        let s = |i: Option<usize>| {
            i.and_then(|i| row.get(i))
                .and_then(|v| v.as_str())
                .unwrap_or("")
        };
        let count = n
            .and_then(|i| row.get(i))
            .and_then(|v| v.as_f64())
            .unwrap_or(1.0);
        (s(c), s(r), count)
    })
}

/// A set of computer names and resource ids, compared without regard to ASCII case. Held as
/// 64-bit hashes, not strings: the engine keeps one per data source type for the whole run, each
/// naming every machine of the workspace twice (a 10,000-machine fleet: 20,000 names of up to
/// 200 bytes per type). A false match needs two of them to collide in 64 bits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Senders(HashSet<u64>);

impl Senders {
    fn hash(name: &str) -> u64 {
        use std::hash::Hasher;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for b in name.bytes() {
            h.write_u8(b.to_ascii_lowercase());
        }
        h.finish()
    }

    /// Adds a name; an empty one is no sender.
    pub fn insert(&mut self, name: &str) {
        if !name.is_empty() {
            self.0.insert(Self::hash(name));
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        !name.is_empty() && self.0.contains(&Self::hash(name))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> FromIterator<&'a str> for Senders {
    fn from_iter<I: IntoIterator<Item = &'a str>>(names: I) -> Self {
        let mut set = Senders::default();
        for n in names {
            set.insert(n);
        }
        set
    }
}

/// Every computer name and resource id of a result.
fn senders(resp: &LogQueryResponse) -> Senders {
    rows(resp).flat_map(|(c, r, _)| [c, r]).collect()
}

/// A machine waiting for verification.
#[derive(Clone, Debug)]
pub struct Pending {
    pub key: String,
    pub computer: String,
    pub types: BTreeSet<DataSourceType>,
}

/// Which machines (keys and lower-cased computer names) sent rows of each type over the last
/// `window_minutes`: one proof query per type, before any association, so verification can tell
/// "AMA does not deliver it" from "the machine does not produce it".
pub async fn producers(
    client: &ArmClient,
    customer_id: &str,
    catalog: &Catalog,
    types: &BTreeSet<DataSourceType>,
    window_minutes: u32,
) -> Result<BTreeMap<DataSourceType, Senders>, EngineError> {
    let mut out = BTreeMap::new();
    for t in types {
        let Some(q) = catalog.row(*t).proof_query(window_minutes, None) else {
            continue;
        };
        let resp = client
            .query_logs(customer_id, &q, None)
            .await
            .map_err(|e| EngineError::azure("a baseline data query", e))?;
        out.insert(*t, senders(&resp));
    }
    Ok(out)
}

/// Which pending types each machine proved: an AMA heartbeat, and rows of each source the
/// machine produced before (`produced`; a source it never sent needs only the heartbeat).
pub async fn verify(
    client: &ArmClient,
    customer_id: &str,
    catalog: &Catalog,
    pending: &[Pending],
    produced: &BTreeMap<DataSourceType, Senders>,
) -> Result<BTreeMap<String, BTreeSet<DataSourceType>>, EngineError> {
    let mut out = BTreeMap::new();
    if pending.is_empty() {
        return Ok(out);
    }
    let hb_query = format!(
        "Heartbeat | where TimeGenerated > ago({VERIFY_WINDOW_MINUTES}m) and Category == '{CATEGORY_AMA}' | summarize count() by Computer, _ResourceId"
    );
    let hb = client
        .query_logs(customer_id, &hb_query, None)
        .await
        .map_err(|e| EngineError::azure("the AMA Heartbeat verification query", e))?;
    let alive = senders(&hb);
    drop(hb);
    let produces = |p: &Pending, t: &DataSourceType| {
        produced
            .get(t)
            .is_none_or(|set| set.contains(&p.key) || set.contains(&p.computer))
    };
    let types: BTreeSet<DataSourceType> = pending
        .iter()
        .filter(|p| alive.contains(&p.key) || alive.contains(&p.computer))
        .flat_map(|p| {
            p.types
                .iter()
                .filter(|t| produces(p, t))
                .copied()
                .collect::<Vec<_>>()
        })
        .collect();
    let mut delivered: BTreeMap<DataSourceType, Senders> = BTreeMap::new();
    // Types proven by the live Heartbeat alone (`alive`, not copied per type).
    let mut heartbeat_only: BTreeSet<DataSourceType> = BTreeSet::new();
    for t in types {
        let Some(q) = catalog.row(t).proof_query(VERIFY_WINDOW_MINUTES, None) else {
            // No table to prove it by (custom logs without a table): the heartbeat must do.
            heartbeat_only.insert(t);
            continue;
        };
        let resp = client
            .query_logs(customer_id, &q, None)
            .await
            .map_err(|e| EngineError::azure("a data verification query", e))?;
        delivered.insert(t, senders(&resp));
    }
    for p in pending {
        let seen = |set: &Senders| set.contains(&p.key) || set.contains(&p.computer);
        if !seen(&alive) {
            continue;
        }
        let ok: BTreeSet<DataSourceType> = p
            .types
            .iter()
            .copied()
            .filter(|t| {
                !produces(p, t) || heartbeat_only.contains(t) || delivered.get(t).is_some_and(seen)
            })
            .collect();
        if !ok.is_empty() {
            out.insert(p.key.clone(), ok);
        }
    }
    Ok(out)
}

/// Parity of a canary wave: for every moved type, rows the legacy agent put into production
/// against rows AMA put into the test workspace, summed over the wave's machines, within
/// `tolerance_percent`. `Ok(None)` when there is nothing to compare yet.
#[allow(clippy::too_many_arguments)]
pub async fn parity(
    client: &ArmClient,
    prod_customer_id: &str,
    test_customer_id: &str,
    catalog: &Catalog,
    machines: &[(String, String)],
    types: &BTreeSet<DataSourceType>,
    window_minutes: u32,
    tolerance_percent: u32,
) -> Result<Option<bool>, EngineError> {
    let members: Senders = machines
        .iter()
        .flat_map(|(k, c)| [k.as_str(), c.as_str()])
        .collect();
    let mut compared = false;
    for t in types {
        let row = catalog.row(*t);
        let (Some(lq), Some(aq)) = (
            row.legacy_proof_query(window_minutes, None),
            row.proof_query(window_minutes, None),
        ) else {
            continue;
        };
        let sum = |resp: &LogQueryResponse| -> f64 {
            rows(resp)
                .filter(|(c, r, _)| members.contains(c) || members.contains(r))
                .map(|(_, _, n)| n)
                .sum()
        };
        let legacy = client
            .query_logs(prod_customer_id, &lq, None)
            .await
            .map_err(|e| EngineError::azure("the parity query (production)", e))?;
        let ama = client
            .query_logs(test_customer_id, &aq, None)
            .await
            .map_err(|e| EngineError::azure("the parity query (test workspace)", e))?;
        let (l, a) = (sum(&legacy), sum(&ama));
        if l <= 0.0 && a <= 0.0 {
            continue;
        }
        compared = true;
        let diff = (l - a).abs() * 100.0 / l.max(a);
        if diff > f64::from(tolerance_percent) {
            return Ok(Some(false));
        }
    }
    Ok(compared.then_some(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(rows: serde_json::Value) -> LogQueryResponse {
        serde_json::from_value(serde_json::json!({"tables": [{
            "name": "PrimaryResult",
            "columns": [{"name": "Computer", "type": "string"},
                        {"name": "_ResourceId", "type": "string"},
                        {"name": "count_", "type": "long"}],
            "rows": rows
        }]}))
        .unwrap()
    }

    #[test]
    fn senders_match_names_and_ids_in_any_case_and_never_a_blank() {
        let r = result(serde_json::json!([
            ["VM-1", "/SUBSCRIPTIONS/S/vm-1", 3],
            ["onprem-02", "", 1],
            ["", "/subscriptions/s/ARC-3", 2]
        ]));
        let got = senders(&r);
        assert_eq!(got.len(), 4, "two names, two ids; blanks are no sender");
        for name in [
            "vm-1",
            "Vm-1",
            "/subscriptions/s/VM-1",
            "ONPREM-02",
            "/subscriptions/s/arc-3",
        ] {
            assert!(got.contains(name), "{name}");
        }
        for name in ["", "vm-2", "arc-3", "/subscriptions/s/vm-1/"] {
            assert!(!got.contains(name), "{name}");
        }
        assert!(senders(&LogQueryResponse { tables: vec![] }).is_empty());
    }

    #[test]
    fn rows_carry_counts_and_default_to_one() {
        let r = result(serde_json::json!([["a", "", 5], ["b", "", null]]));
        let counts: Vec<(&str, f64)> = rows(&r).map(|(c, _, n)| (c, n)).collect();
        assert_eq!(counts, vec![("a", 5.0), ("b", 1.0)]);
    }
}
