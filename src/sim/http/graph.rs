//! Resource Graph `POST /providers/Microsoft.ResourceGraph/resources`: answers the product's inventory
//! query (`crate::inventory::INVENTORY_QUERY`) from the world, with `$top`/`$skipToken` paging.
//! Full ARG KQL is out of scope: any other query gets 400 `InvalidQuery`.

use serde_json::{Value, json};

use crate::inventory::{
    AgentKind, INVENTORY_QUERY, InventoryExtension, InventoryMachine, MachineKind,
};

use super::super::world::{ArmError, World};
use super::{Ctx, HResult, Req, Resp, method_not_allowed};

fn normalize(q: &str) -> String {
    q.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn inventory_rows(world: &World, subscriptions: Option<&[String]>) -> Vec<InventoryMachine> {
    let mut rows: Vec<InventoryMachine> = world
        .machines
        .iter()
        .filter_map(|m| {
            let id = m.arm_id()?;
            if let Some(subs) = subscriptions
                && !subs.iter().any(|s| s.eq_ignore_ascii_case(&m.subscription))
            {
                return None;
            }
            let kind = m.kind?;
            Some(InventoryMachine {
                id,
                name: m.name.clone(),
                resource_type: match kind {
                    MachineKind::AzureVM => "microsoft.compute/virtualmachines".into(),
                    MachineKind::ArcServer => "microsoft.hybridcompute/machines".into(),
                },
                location: m.location.clone(),
                resource_group: m.resource_group.to_ascii_lowercase(),
                subscription_id: m.subscription.clone(),
                tags: m.tags.clone(),
                os_type: match (kind, m.os) {
                    (MachineKind::AzureVM, crate::catalog::OsFamily::Windows) => "Windows".into(),
                    (MachineKind::AzureVM, crate::catalog::OsFamily::Linux) => "Linux".into(),
                    (_, crate::catalog::OsFamily::Windows) => "windows".into(),
                    (_, crate::catalog::OsFamily::Linux) => "linux".into(),
                },
                identity_type: match kind {
                    MachineKind::AzureVM if m.identity.type_str() == "None" => String::new(),
                    MachineKind::AzureVM => m.identity.type_str().into(),
                    MachineKind::ArcServer => "SystemAssigned".into(),
                },
                power_state: match kind {
                    MachineKind::AzureVM if m.running => "PowerState/running".into(),
                    MachineKind::AzureVM => "PowerState/deallocated".into(),
                    MachineKind::ArcServer => String::new(),
                },
                status: match kind {
                    MachineKind::ArcServer if m.running => "Connected".into(),
                    MachineKind::ArcServer => "Disconnected".into(),
                    MachineKind::AzureVM => String::new(),
                },
                extensions: m
                    .extensions
                    .values()
                    .map(|e| InventoryExtension {
                        name: e.name.clone(),
                        publisher: e.publisher().to_string(),
                        ext_type: e.ext_type().to_string(),
                        provisioning_state: e.provisioning_state().to_string(),
                        workspace_id: if e.agent() == Some(AgentKind::Legacy) {
                            e.workspace_id().unwrap_or_default().to_string()
                        } else {
                            String::new()
                        },
                    })
                    .collect(),
            })
        })
        .collect();
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    rows
}

pub fn handle(ctx: &mut Ctx, r: &Req) -> HResult {
    if r.method != "POST" {
        return Err(method_not_allowed(r));
    }
    let body = r.json()?;
    let query = body.get("query").and_then(Value::as_str).ok_or_else(|| {
        ArmError::new(400, "BadRequest", "The request body must contain 'query'.")
    })?;
    if normalize(query) != normalize(INVENTORY_QUERY) {
        let mut e = ArmError::new(
            400,
            "BadRequest",
            "Please provide below info when asking for support: timestamp, correlationId.",
        );
        e.details = Some(
            json!([{"code": "InvalidQuery", "message": "Query is invalid. The simulator answers only crate::inventory::INVENTORY_QUERY."}]),
        );
        return Err(e);
    }
    let subs: Option<Vec<String>> = body
        .get("subscriptions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        });
    let opts = body.get("options");
    let top = opts
        .and_then(|o| o.get("$top"))
        .and_then(Value::as_u64)
        .unwrap_or(1000);
    if !(1..=1000).contains(&top) {
        return Err(ArmError::new(
            400,
            "BadRequest",
            format!("options.$top must be between 1 and 1000, not {top}."),
        ));
    }
    let skip = match opts
        .and_then(|o| o.get("$skipToken"))
        .and_then(Value::as_str)
    {
        Some(t) => t
            .strip_prefix("sim-skip-")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                ArmError::new(
                    400,
                    "BadRequest",
                    format!("options.$skipToken '{t}' was not issued by this service."),
                )
            })?,
        None => opts
            .and_then(|o| o.get("$skip"))
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize,
    };
    let rows = inventory_rows(ctx.world, subs.as_deref());
    let total = rows.len();
    let page: Vec<Value> = rows
        .into_iter()
        .skip(skip)
        .take(top as usize)
        .map(|m| {
            let mut v = serde_json::to_value(&m).unwrap_or(Value::Null);
            v["machineId"] = json!(m.id.to_ascii_lowercase());
            if m.extensions.is_empty() {
                v["extensions"] = Value::Null;
            }
            v
        })
        .collect();
    let next = skip + page.len();
    let mut out = json!({
        "totalRecords": total, "count": page.len(), "resultTruncated": if next < total { "true" } else { "false" },
        "data": page, "facets": [],
    });
    if next < total {
        out["$skipToken"] = json!(format!("sim-skip-{next}"));
    }
    Ok(Resp::json(200, out))
}
