//! Microsoft.Compute virtual machines and Microsoft.HybridCompute machines, with their extensions
//! (long-running PUT/DELETE) and the VM identity PATCH.

use serde_json::{Value, json};

use crate::catalog::OsFamily;
use crate::inventory::MachineKind;

use super::super::clock::iso;
use super::super::world::{ArmError, ExtState, Extension, Machine, Outcome, namespace};
use super::{API_COMPUTE, API_HYBRID, Ctx, HResult, Req, Resp, method_not_allowed};

fn api(kind: MachineKind) -> &'static str {
    match kind {
        MachineKind::AzureVM => API_COMPUTE,
        MachineKind::ArcServer => API_HYBRID,
    }
}

pub fn handle(ctx: &mut Ctx, r: &Req) -> HResult {
    // subscriptions/{s}/resourceGroups/{rg}/providers/{ns}/{type}/{name}[/extensions[/{ext}]]
    let machine_id = format!("/{}", r.seg[..8.min(r.seg.len())].join("/"));
    if r.seg.len() < 8 {
        return Err(ArmError::new(
            404,
            "NotFound",
            format!("The simulator does not list machines ({}).", r.path),
        ));
    }
    let kind = if r.low[6] == "virtualmachines" {
        MachineKind::AzureVM
    } else {
        MachineKind::ArcServer
    };
    let i = ctx
        .world
        .machine_index(&machine_id)
        .filter(|i| ctx.world.machines[*i].kind == Some(kind))
        .ok_or_else(|| {
            ArmError::new(
                404,
                "ResourceNotFound",
                format!(
                    "The Resource '{}/{}/{}' under resource group '{}' was not found.",
                    r.seg[5], r.seg[6], r.seg[7], r.seg[3]
                ),
            )
        })?;
    match (r.seg.len(), r.low.get(8).map(String::as_str)) {
        (8, _) => match r.method.as_str() {
            "GET" => Ok(Resp::json(
                200,
                machine_json(ctx, i, r.q("$expand") == Some("instanceView")),
            )),
            "PATCH" if kind == MachineKind::AzureVM => patch_vm(ctx, r, i),
            _ => Err(method_not_allowed(r)),
        },
        (9, Some("extensions")) => match r.method.as_str() {
            "GET" => {
                let m = &ctx.world.machines[i];
                let value: Vec<Value> = m
                    .extensions
                    .values()
                    .map(|e| extension_json(ctx, m, e))
                    .collect();
                Ok(Resp::json(200, json!({ "value": value })))
            }
            _ => Err(method_not_allowed(r)),
        },
        (10, Some("extensions")) => {
            let name = r.seg[9].clone();
            match r.method.as_str() {
                "GET" => {
                    let m = &ctx.world.machines[i];
                    let e = m.extensions.get(&name.to_ascii_lowercase()).ok_or_else(|| {
                        ArmError::new(404, "ResourceNotFound", format!("The Resource '{}/{}/{}/extensions/{name}' under resource group '{}' was not found.", r.seg[5], r.seg[6], r.seg[7], r.seg[3]))
                    })?;
                    Ok(Resp::json(200, extension_json(ctx, m, e)))
                }
                "PUT" => put_extension(ctx, r, i, kind, &name),
                "DELETE" => delete_extension(ctx, r, i, kind, &name),
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

fn os_str(m: &Machine) -> &'static str {
    match m.os {
        OsFamily::Windows => "Windows",
        OsFamily::Linux => "Linux",
    }
}

pub fn machine_json(ctx: &Ctx, i: usize, instance_view: bool) -> Value {
    let m = &ctx.world.machines[i];
    let id = m.arm_id().unwrap_or_default();
    let tenant = &ctx.world.fleet.tenant_id;
    match m.kind {
        Some(MachineKind::ArcServer) => json!({
            "id": id, "name": m.name, "type": "Microsoft.HybridCompute/machines", "location": m.location, "tags": m.tags,
            "identity": {"type": "SystemAssigned", "principalId": m.vm_id, "tenantId": tenant},
            "properties": {
                "provisioningState": "Succeeded",
                "status": if m.running { "Connected" } else { "Disconnected" },
                "lastStatusChange": iso(ctx.world.ledger.started()),
                "osType": os_str(m).to_ascii_lowercase(),
                "osName": os_str(m).to_ascii_lowercase(),
                "agentVersion": "1.44.02845.1707",
                "vmId": m.vm_id,
                "displayName": m.name,
                "machineFqdn": format!("{}.corp.contoso.com", m.name),
            }
        }),
        _ => {
            let mut identity = json!({"type": m.identity.type_str()});
            if m.identity.system {
                identity["principalId"] = json!(m.identity.principal_id);
                identity["tenantId"] = json!(tenant);
            }
            if !m.identity.user.is_empty() {
                identity["userAssignedIdentities"] = m
                    .identity
                    .user
                    .iter()
                    .map(|u| {
                        (
                            u.clone(),
                            json!({"principalId": m.vm_id, "clientId": m.vm_id}),
                        )
                    })
                    .collect::<serde_json::Map<_, _>>()
                    .into();
            }
            let mut props = json!({
                "vmId": m.vm_id,
                "provisioningState": if m.busy_until > ctx.now { "Updating" } else { "Succeeded" },
                "hardwareProfile": {"vmSize": "Standard_D2s_v3"},
                "storageProfile": {"osDisk": {"osType": os_str(m), "name": format!("{}_OsDisk_1", m.name), "createOption": "FromImage", "caching": "ReadWrite"}},
                "osProfile": {"computerName": m.name, "adminUsername": "azureuser"},
            });
            if instance_view {
                let power = if m.running {
                    ("PowerState/running", "VM running")
                } else {
                    ("PowerState/deallocated", "VM deallocated")
                };
                props["instanceView"] = json!({"statuses": [
                    {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded"},
                    {"code": power.0, "level": "Info", "displayStatus": power.1}
                ]});
            }
            json!({"id": id, "name": m.name, "type": "Microsoft.Compute/virtualMachines", "location": m.location, "tags": m.tags, "identity": identity, "properties": props})
        }
    }
}

pub fn extension_json(ctx: &Ctx, m: &Machine, e: &Extension) -> Value {
    let kind = m.kind.unwrap_or(MachineKind::AzureVM);
    let id = format!("{}/extensions/{}", m.arm_id().unwrap_or_default(), e.name);
    let mut props = e.properties.clone();
    let state = e.provisioning_state();
    if let Some(o) = props.as_object_mut() {
        o.insert("provisioningState".into(), json!(state));
    }
    let (ok, code, message) = match &e.state {
        ExtState::Done(Outcome::Succeeded) => (true, String::new(), "Enable succeeded".to_string()),
        ExtState::Done(Outcome::Failed { code, message } | Outcome::Canceled { code, message }) => {
            (false, code.clone(), message.clone())
        }
        _ => (true, String::new(), "Transitioning".to_string()),
    };
    let ty = e.ext_type().to_string();
    let ver = e
        .properties
        .get("typeHandlerVersion")
        .and_then(Value::as_str)
        .unwrap_or("1.0")
        .to_string();
    let time = iso(e.status_time);
    let _ = ctx;
    match kind {
        MachineKind::AzureVM => {
            props["instanceView"] = json!({"name": e.name, "type": ty, "typeHandlerVersion": ver, "statuses": [{
                "code": if ok { format!("ProvisioningState/{}", state.to_ascii_lowercase()) } else { format!("ProvisioningState/failed/{code}") },
                "level": if ok { "Info" } else { "Error" },
                "displayStatus": if ok { format!("Provisioning {}", state.to_ascii_lowercase()) } else { "Provisioning failed".to_string() },
                "message": message, "time": time
            }]});
            let mut v = json!({"id": id, "name": e.name, "type": "Microsoft.Compute/virtualMachines/extensions", "location": e.location, "properties": props});
            if let Some(t) = &e.tags {
                v["tags"] = t.clone();
            }
            v
        }
        MachineKind::ArcServer => {
            props["instanceView"] = json!({"name": e.name, "type": ty, "typeHandlerVersion": ver, "status": {
                "code": if ok { "success".to_string() } else { code.clone() },
                "level": if ok { "Information" } else { "Error" },
                "displayStatus": if ok { format!("Provisioning {}", state.to_ascii_lowercase()) } else { "Provisioning failed".to_string() },
                "message": message, "time": time
            }});
            let mut v = json!({"id": id, "name": e.name, "type": "Microsoft.HybridCompute/machines/extensions", "location": e.location, "properties": props});
            if let Some(t) = &e.tags {
                v["tags"] = t.clone();
            }
            v
        }
    }
}

fn op_urls(r: &Req, ns: &str, sub: &str, loc: &str, op: &str, api: &str) -> (String, String) {
    (
        format!(
            "{}/subscriptions/{sub}/providers/{ns}/locations/{loc}/operations/{op}?api-version={api}",
            r.base
        ),
        format!(
            "{}/subscriptions/{sub}/providers/{ns}/locations/{loc}/operationResults/{op}?api-version={api}",
            r.base
        ),
    )
}

fn put_extension(ctx: &mut Ctx, r: &Req, i: usize, kind: MachineKind, name: &str) -> HResult {
    let body = r.json()?;
    let props = body
        .get("properties")
        .filter(|p| p.is_object())
        .ok_or_else(|| {
            ArmError::new(
                400,
                "InvalidParameter",
                "Required parameter 'properties' is missing (null).",
            )
        })?;
    for field in ["publisher", "type"] {
        if props
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(ArmError::new(
                400,
                "InvalidParameter",
                format!("Required parameter '{field}' is missing (null)."),
            )
            .with_target(field));
        }
    }
    let m = &ctx.world.machines[i];
    if kind == MachineKind::AzureVM && !m.running {
        return Err(ArmError::new(
            409,
            "OperationNotAllowed",
            "Cannot modify extensions in the VM when the VM is not running.",
        ));
    }
    let location = body
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or(&m.location)
        .to_string();
    let tags = body.get("tags").cloned();
    let (created, op) = ctx
        .world
        .put_extension(ctx.now, i, name, location, tags, props.clone())?;
    let m = &ctx.world.machines[i];
    let e = &m.extensions[&name.to_ascii_lowercase()];
    let body = extension_json(ctx, m, e);
    let (status_url, result_url) = op_urls(
        r,
        namespace(kind),
        &m.subscription,
        &m.location,
        &op,
        api(kind),
    );
    let end = ctx.world.ops.get(&op).and_then(|o| o.end);
    let code = if created && kind == MachineKind::AzureVM {
        201
    } else {
        200
    };
    let mut resp = Resp::json(code, body)
        .header("Azure-AsyncOperation", status_url)
        .header("Retry-After", ctx.retry_after(end));
    if kind == MachineKind::ArcServer {
        resp = resp.header("Location", result_url);
    }
    Ok(resp)
}

fn delete_extension(ctx: &mut Ctx, r: &Req, i: usize, kind: MachineKind, name: &str) -> HResult {
    let m = &ctx.world.machines[i];
    if kind == MachineKind::AzureVM
        && !m.running
        && m.extensions.contains_key(&name.to_ascii_lowercase())
    {
        return Err(ArmError::new(
            409,
            "OperationNotAllowed",
            "Cannot modify extensions in the VM when the VM is not running.",
        ));
    }
    match ctx.world.delete_extension(ctx.now, i, name)? {
        None => Ok(Resp::empty(204)),
        Some(op) => {
            let m = &ctx.world.machines[i];
            let (status_url, result_url) = op_urls(
                r,
                namespace(kind),
                &m.subscription,
                &m.location,
                &op,
                api(kind),
            );
            let end = ctx.world.ops.get(&op).and_then(|o| o.end);
            Ok(Resp::empty(202)
                .header("Azure-AsyncOperation", status_url)
                .header("Location", result_url)
                .header("Retry-After", ctx.retry_after(end)))
        }
    }
}

fn patch_vm(ctx: &mut Ctx, r: &Req, i: usize) -> HResult {
    let body = r.json()?;
    if !ctx.world.machines[i].running {
        // Identity changes are accepted on a deallocated VM (model update only).
    }
    let identity = body.get("identity");
    if let Some(id) = identity {
        ctx.world.patch_identity(ctx.now, i, id)?;
    }
    if let Some(tags) = body.get("tags").and_then(Value::as_object) {
        let m = &mut ctx.world.machines[i];
        m.tags = tags
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
    }
    let op = ctx
        .world
        .ops
        .values()
        .filter(|o| o.machine == i && o.kind == super::super::world::OpKind::PatchVm)
        .max_by_key(|o| o.start)
        .map(|o| (o.id.clone(), o.end));
    let m = &ctx.world.machines[i];
    let mut resp = Resp::json(200, machine_json(ctx, i, false));
    if let Some((op, end)) = op.filter(|(_, end)| end.is_some_and(|e| e > ctx.now)) {
        let (status_url, _) = op_urls(
            r,
            "Microsoft.Compute",
            &m.subscription,
            &m.location,
            &op,
            API_COMPUTE,
        );
        resp = resp
            .header("Azure-AsyncOperation", status_url)
            .header("Retry-After", ctx.retry_after(end));
    }
    Ok(resp)
}

trait WithTarget {
    fn with_target(self, t: &str) -> Self;
}

impl WithTarget for ArmError {
    fn with_target(mut self, t: &str) -> Self {
        self.message = format!("{} Target: '{t}'.", self.message);
        self
    }
}
