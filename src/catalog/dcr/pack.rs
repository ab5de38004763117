//! Packing data source entries into as few DCRs as the limits allow, deterministically.

use super::*;
#[derive(Default)]
struct Bin {
    units: Vec<Unit>,
    streams: Vec<String>,
    endpoint: Option<String>,
}

impl Bin {
    fn fits(&self, u: &Unit) -> bool {
        if self.units.len() + 1 > MAX_DATA_SOURCES_PER_DCR {
            return false;
        }
        if let (Some(a), Some(b)) = (&self.endpoint, &u.endpoint)
            && !a.eq_ignore_ascii_case(b)
        {
            return false;
        }
        let mut streams = self.streams.clone();
        for s in u.flows.iter().flat_map(|f| f.streams.iter()) {
            if !streams.contains(s) {
                streams.push(s.clone());
            }
        }
        streams.len() <= MAX_STREAMS_PER_DCR && streams.len() <= MAX_FLOWS_PER_DCR
    }

    fn add(&mut self, u: Unit) {
        for s in u.flows.iter().flat_map(|f| f.streams.iter()) {
            if !self.streams.contains(s) {
                self.streams.push(s.clone());
            }
        }
        if self.endpoint.is_none() {
            self.endpoint = u.endpoint.clone();
        }
        self.units.push(u);
    }
}

/// First-fit packing per OS (Windows first), in request order: deterministic names and content.
pub(super) fn pack(
    ctx: &DcrContext,
    workspace: &ResourceId,
    units: Vec<Unit>,
) -> Vec<GeneratedDcr> {
    let plan = dcr_name_part(&ctx.plan_name);
    let mut out = Vec::new();
    for os in [OsFamily::Windows, OsFamily::Linux] {
        let mut bins: Vec<Bin> = Vec::new();
        for u in units.iter().filter(|u| u.os == os) {
            match bins.iter_mut().find(|b| b.fits(u)) {
                Some(b) => b.add(u.clone()),
                None => {
                    let mut b = Bin::default();
                    b.add(u.clone());
                    bins.push(b);
                }
            }
        }
        let os_name = match os {
            OsFamily::Windows => "windows",
            OsFamily::Linux => "linux",
        };
        for (n, bin) in bins.into_iter().enumerate() {
            let name = format!("dcr-{plan}-{os_name}-{}", n + 1);
            out.push(build_rule(ctx, workspace, name, os, bin));
        }
    }
    out
}

fn build_rule(
    ctx: &DcrContext,
    workspace: &ResourceId,
    name: String,
    os: OsFamily,
    bin: Bin,
) -> GeneratedDcr {
    let mut data_sources = DcrDataSources::default();
    let mut flows: Vec<DataFlow> = Vec::new();
    let mut declarations = BTreeMap::new();
    let mut covered: Vec<DataSourceType> = Vec::new();
    let mut per_type: BTreeMap<DataSourceType, usize> = BTreeMap::new();
    for u in bin.units {
        let k = per_type.entry(u.data_source).or_insert(0);
        *k += 1;
        let mut entry = u.entry;
        entry.set_name(format!("{}-{}", u.data_source, k));
        entry.push_into(&mut data_sources);
        for f in u.flows {
            if !flows.contains(&f) {
                flows.push(f);
            }
        }
        declarations.extend(u.declarations);
        if !covered.contains(&u.data_source) {
            covered.push(u.data_source);
        }
    }
    let mut tags = BTreeMap::new();
    tags.insert("createdBy".to_string(), "ama-migrator".to_string());
    tags.insert("amaMigratorPlan".to_string(), ctx.plan_name.clone());
    let list: Vec<&str> = covered.iter().map(|t| t.as_str()).collect();
    let rule = DataCollectionRule {
        location: ctx.location.clone(),
        kind: Some(match os {
            OsFamily::Windows => "Windows".into(),
            OsFamily::Linux => "Linux".into(),
        }),
        tags,
        properties: DcrProperties {
            description: Some(format!(
                "ama-migrator plan {}: {}",
                ctx.plan_name,
                list.join(", ")
            )),
            data_collection_endpoint_id: bin.endpoint,
            stream_declarations: declarations,
            data_sources: Some(data_sources),
            destinations: DcrDestinations {
                log_analytics: vec![LogAnalyticsDestination {
                    name: DESTINATION_NAME.into(),
                    workspace_resource_id: workspace.as_str().to_string(),
                    workspace_id: None,
                }],
            },
            data_flows: flows,
            ..Default::default()
        },
        ..Default::default()
    };
    GeneratedDcr {
        name,
        os,
        data_sources: covered,
        rule,
    }
}

/// A plan name reduced to what a DCR name may hold (lower-case letters, digits, `-`).
fn dcr_name_part(plan: &str) -> String {
    let mut s: String = plan
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s = s.trim_matches('-');
    let s: String = s.chars().take(48).collect();
    if s.is_empty() {
        "plan".into()
    } else {
        s.trim_end_matches('-').to_string()
    }
}
