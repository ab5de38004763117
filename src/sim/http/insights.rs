//! Microsoft.Insights data collection rules (synchronous PUT/GET/DELETE) and their associations to
//! machines (synchronous PUT/GET/DELETE/list, an extension resource under the machine id).

use serde_json::{Value, json};

use super::super::world::ArmError;
use super::{Ctx, HResult, Req, Resp, method_not_allowed};

fn dcr_id(r: &Req) -> String {
    format!("/{}", r.seg[..8].join("/"))
}

pub fn dcr(ctx: &mut Ctx, r: &Req) -> HResult {
    if r.seg.len() < 8 {
        return Err(ArmError::new(
            404,
            "NotFound",
            format!(
                "The simulator does not list data collection rules ({}).",
                r.path
            ),
        ));
    }
    let id = dcr_id(r);
    let key = id.to_ascii_lowercase();
    let name = r.seg[7].clone();
    let not_found = || {
        ArmError::new(
            404,
            "ResourceNotFound",
            format!(
                "The Resource 'Microsoft.Insights/dataCollectionRules/{name}' under resource group '{}' was not found.",
                r.seg[3]
            ),
        )
    };
    if r.seg.len() == 9 && r.low[8] == "associations" {
        if r.method != "GET" {
            return Err(method_not_allowed(r));
        }
        let canonical = ctx.world.dcrs.get(&key).ok_or_else(not_found)?.resource["id"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let mut value = Vec::new();
        for m in &ctx.world.machines {
            let Some(mid) = m.arm_id() else { continue };
            for a in m.dcras.values() {
                if a.properties
                    .get("dataCollectionRuleId")
                    .and_then(Value::as_str)
                    .is_some_and(|d| d.eq_ignore_ascii_case(&canonical))
                {
                    value.push(dcra_json(&mid, a));
                }
            }
        }
        return Ok(Resp::json(200, json!({ "value": value })));
    }
    if r.seg.len() != 8 {
        return Err(ArmError::new(
            404,
            "NotFound",
            format!("The simulator does not serve {}.", r.path),
        ));
    }
    match r.method.as_str() {
        "GET" => Ok(Resp::json(
            200,
            ctx.world
                .dcrs
                .get(&key)
                .ok_or_else(not_found)?
                .resource
                .clone(),
        )),
        "DELETE" => {
            let existed = ctx.world.dcrs.remove(&key).is_some();
            ctx.world.recompute_all(ctx.now);
            Ok(Resp::empty(if existed { 200 } else { 204 }))
        }
        "PUT" => {
            let body = r.json()?;
            let location = body
                .get("location")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ArmError::new(
                        400,
                        "InvalidPayload",
                        "Data collection rule is invalid: 'location' is required.",
                    )
                })?;
            let props = body
                .get("properties")
                .filter(|p| p.is_object())
                .cloned()
                .unwrap_or_else(|| json!({}));
            let mut props = props;
            if let Some(dests) = props
                .pointer_mut("/destinations/logAnalytics")
                .and_then(Value::as_array_mut)
            {
                for d in dests {
                    let wsid = d
                        .get("workspaceResourceId")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    if let Some(w) = ctx.world.workspace_by_id(&wsid) {
                        d["workspaceId"] = json!(ctx.world.workspaces[w].spec.customer_id);
                    }
                }
            }
            let existing_immutable = ctx
                .world
                .dcrs
                .get(&key)
                .and_then(|d| d.resource.pointer("/properties/immutableId").cloned());
            let immutable = existing_immutable.unwrap_or_else(|| {
                json!(format!("dcr-{}", ctx.world.new_op_id().replace('-', "")))
            });
            if let Some(o) = props.as_object_mut() {
                o.insert("immutableId".into(), immutable);
                o.insert("provisioningState".into(), json!("Succeeded"));
            }
            let mut resource = json!({
                "id": id, "name": name, "type": "Microsoft.Insights/dataCollectionRules",
                "location": location, "etag": ctx.world.next_etag(), "properties": props,
            });
            for f in ["kind", "tags", "identity"] {
                if let Some(v) = body.get(f) {
                    resource[f] = v.clone();
                }
            }
            let created = ctx.world.put_dcr(ctx.now, &id, resource.clone());
            Ok(Resp::json(if created { 201 } else { 200 }, resource))
        }
        _ => Err(method_not_allowed(r)),
    }
}

fn dcra_json(machine_id: &str, a: &super::super::world::Dcra) -> Value {
    let mut props = a.properties.clone();
    if let Some(o) = props.as_object_mut() {
        o.insert("provisioningState".into(), json!("Succeeded"));
    }
    json!({
        "id": format!("{machine_id}/providers/Microsoft.Insights/dataCollectionRuleAssociations/{}", a.name),
        "name": a.name, "type": "Microsoft.Insights/dataCollectionRuleAssociations",
        "etag": "\"0a00b1c2-0000-0100-0000-000000000000\"", "properties": props,
    })
}

pub fn dcra(ctx: &mut Ctx, r: &Req) -> HResult {
    // {machine id (8 segments)}/providers/Microsoft.Insights/dataCollectionRuleAssociations[/{name}]
    let ok_shape = r.seg.len() >= 11
        && r.low[8] == "providers"
        && r.low[10] == "datacollectionruleassociations"
        && r.low[0] == "subscriptions";
    if !ok_shape || r.seg.len() > 12 {
        return Err(ArmError::new(
            404,
            "NotFound",
            format!(
                "The simulator serves associations only on machines, not {}.",
                r.path
            ),
        ));
    }
    let machine_id = format!("/{}", r.seg[..8].join("/"));
    let i = ctx.world.machine_index(&machine_id).ok_or_else(|| {
        ArmError::new(
            404,
            "ResourceNotFound",
            format!(
                "The Resource '{}/{}/{}' under resource group '{}' was not found.",
                r.seg[5], r.seg[6], r.seg[7], r.seg[3]
            ),
        )
    })?;
    let canonical = ctx.world.machines[i].arm_id().unwrap_or_default();
    if r.seg.len() == 11 {
        if r.method != "GET" {
            return Err(method_not_allowed(r));
        }
        let value: Vec<Value> = ctx.world.machines[i]
            .dcras
            .values()
            .map(|a| dcra_json(&canonical, a))
            .collect();
        return Ok(Resp::json(200, json!({ "value": value })));
    }
    let name = r.seg[11].clone();
    match r.method.as_str() {
        "GET" => {
            let a = ctx.world.machines[i]
                .dcras
                .get(&name.to_ascii_lowercase())
                .ok_or_else(|| {
                    ArmError::new(
                        404,
                        "ResourceNotFound",
                        format!("The data collection rule association '{name}' was not found."),
                    )
                })?;
            Ok(Resp::json(200, dcra_json(&canonical, a)))
        }
        "DELETE" => Ok(Resp::empty(if ctx.world.delete_dcra(ctx.now, i, &name) {
            200
        } else {
            204
        })),
        "PUT" => {
            let body = r.json()?;
            let props = body
                .get("properties")
                .filter(|p| p.is_object())
                .ok_or_else(|| {
                    ArmError::new(
                        400,
                        "InvalidPayload",
                        "The association is invalid: 'properties' is required.",
                    )
                })?;
            let rule = props.get("dataCollectionRuleId").and_then(Value::as_str);
            let endpoint = props
                .get("dataCollectionEndpointId")
                .and_then(Value::as_str);
            match (rule, endpoint) {
                (None, None) => {
                    return Err(ArmError::new(
                        400,
                        "InvalidPayload",
                        "The association must name properties.dataCollectionRuleId or properties.dataCollectionEndpointId.",
                    ));
                }
                (Some(rule), _) if !ctx.world.dcrs.contains_key(&rule.to_ascii_lowercase()) => {
                    return Err(ArmError::new(
                        400,
                        "InvalidPayload",
                        format!(
                            "The data collection rule '{rule}' does not exist; create it before associating it."
                        ),
                    ));
                }
                _ => {}
            }
            let mut stored = serde_json::Map::new();
            for f in [
                "dataCollectionRuleId",
                "dataCollectionEndpointId",
                "description",
            ] {
                if let Some(v) = props.get(f) {
                    stored.insert(f.into(), v.clone());
                }
            }
            let created = ctx.world.put_dcra(ctx.now, i, &name, Value::Object(stored));
            let a = &ctx.world.machines[i].dcras[&name.to_ascii_lowercase()];
            Ok(Resp::json(
                if created { 201 } else { 200 },
                dcra_json(&canonical, a),
            ))
        }
        _ => Err(method_not_allowed(r)),
    }
}
