//! Microsoft.OperationalInsights workspaces and their dataSources: where the legacy agent's collection
//! settings live (one setting for every machine of the workspace).

use serde_json::{Value, json};

use super::super::world::ArmError;
use super::{Ctx, HResult, Req, Resp, method_not_allowed};

pub fn handle(ctx: &mut Ctx, r: &Req) -> HResult {
    if r.seg.len() < 8 {
        return Err(ArmError::new(
            404,
            "NotFound",
            format!("The simulator does not list workspaces ({}).", r.path),
        ));
    }
    let ws_id = format!("/{}", r.seg[..8].join("/"));
    let w = ctx.world.workspace_by_id(&ws_id).ok_or_else(|| ArmError::new(404, "ResourceNotFound", format!("The Resource 'Microsoft.OperationalInsights/workspaces/{}' under resource group '{}' was not found.", r.seg[7], r.seg[3])))?;
    let spec = ctx.world.workspaces[w].spec.clone();
    match (r.seg.len(), r.low.get(8).map(String::as_str)) {
        (8, _) if r.method == "GET" => Ok(Resp::json(
            200,
            json!({
                "id": spec.resource_id(), "name": spec.name, "type": "Microsoft.OperationalInsights/workspaces", "location": spec.location,
                "properties": {"customerId": spec.customer_id, "provisioningState": "Succeeded", "sku": {"name": "PerGB2018"}, "retentionInDays": 90}
            }),
        )),
        (9, Some("datasources")) => {
            if r.method != "GET" {
                return Err(method_not_allowed(r));
            }
            let filter = r.q("$filter").ok_or_else(|| {
                ArmError::new(
                    400,
                    "BadRequest",
                    "The $filter query parameter is required: $filter=kind='<kind>'.",
                )
            })?;
            let kind = parse_kind_filter(filter).ok_or_else(|| {
                ArmError::new(
                    400,
                    "BadRequest",
                    format!("Unsupported $filter '{filter}': only kind='<kind>' is supported."),
                )
            })?;
            let value: Vec<Value> = ctx.world.workspaces[w]
                .data_sources
                .values()
                .filter(|v| {
                    v.get("kind")
                        .and_then(Value::as_str)
                        .is_some_and(|k| k.eq_ignore_ascii_case(&kind))
                })
                .cloned()
                .collect();
            Ok(Resp::json(200, json!({ "value": value })))
        }
        (10, Some("datasources")) => {
            let name = r.seg[9].clone();
            let key = name.to_ascii_lowercase();
            match r.method.as_str() {
                "GET" => ctx.world.workspaces[w]
                    .data_sources
                    .get(&key)
                    .cloned()
                    .map(|v| Resp::json(200, v))
                    .ok_or_else(|| {
                        ArmError::new(
                            404,
                            "ResourceNotFound",
                            format!(
                                "The data source '{name}' was not found in workspace '{}'.",
                                spec.name
                            ),
                        )
                    }),
                "DELETE" => Ok(Resp::empty(
                    if ctx.world.delete_data_source(ctx.now, w, &name) {
                        200
                    } else {
                        204
                    },
                )),
                "PUT" => {
                    let body = r.json()?;
                    let kind = body.get("kind").and_then(Value::as_str).ok_or_else(|| {
                        ArmError::new(400, "BadRequest", "The dataSource 'kind' is required.")
                    })?;
                    let props = body
                        .get("properties")
                        .filter(|p| p.is_object())
                        .ok_or_else(|| {
                            ArmError::new(
                                400,
                                "BadRequest",
                                "The dataSource 'properties' object is required.",
                            )
                        })?;
                    if let Some(existing) = ctx.world.workspaces[w].data_sources.get(&key)
                        && let Some(k) = existing.get("kind").and_then(Value::as_str)
                        && !k.eq_ignore_ascii_case(kind)
                    {
                        return Err(ArmError::new(
                            409,
                            "Conflict",
                            format!(
                                "The data source '{name}' already exists with kind '{k}'; its kind cannot change to '{kind}'."
                            ),
                        ));
                    }
                    let etag = ctx.world.next_etag();
                    let mut resource = json!({
                        "id": format!("{}/dataSources/{name}", spec.resource_id()), "name": name,
                        "type": "Microsoft.OperationalInsights/workspaces/datasources", "kind": kind,
                        "etag": etag, "properties": props,
                    });
                    if let Some(t) = body.get("tags") {
                        resource["tags"] = t.clone();
                    }
                    let created = ctx
                        .world
                        .put_data_source(ctx.now, w, &name, resource.clone());
                    Ok(Resp::json(if created { 201 } else { 200 }, resource))
                }
                _ => Err(method_not_allowed(r)),
            }
        }
        _ => Err(ArmError::new(
            404,
            "NotFound",
            format!("The simulator does not serve {} {}.", r.method, r.path),
        )),
    }
}

/// `kind='WindowsEvent'` (also `kind eq 'X'`) → `WindowsEvent`.
fn parse_kind_filter(f: &str) -> Option<String> {
    let f = f.trim();
    let rest = f.strip_prefix("kind")?.trim_start();
    let rest = rest
        .strip_prefix('=')
        .or_else(|| rest.strip_prefix("eq "))?
        .trim();
    let v = rest.strip_prefix('\'')?.strip_suffix('\'')?;
    (!v.is_empty() && !v.contains('\'')).then(|| v.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn kind_filter_parses_only_kind() {
        assert_eq!(
            super::parse_kind_filter("kind='WindowsEvent'").as_deref(),
            Some("WindowsEvent")
        );
        assert_eq!(
            super::parse_kind_filter("kind eq 'LinuxSyslog'").as_deref(),
            Some("LinuxSyslog")
        );
        assert_eq!(super::parse_kind_filter("name='x'"), None);
    }
}
