//! Long-running operation tracking URLs: `.../locations/{loc}/operations/{id}` (the `Azure-AsyncOperation`
//! status object) and `.../operationResults/{id}` (the `Location` URL: 202 while running).

use serde_json::json;

use super::super::clock::iso;
use super::super::world::{ArmError, OpKind};
use super::compute::{extension_json, machine_json};
use super::{Ctx, HResult, Req, Resp, method_not_allowed};

pub fn handle(ctx: &mut Ctx, r: &Req, kind: &str) -> HResult {
    if r.method != "GET" {
        return Err(method_not_allowed(r));
    }
    let id = &r.seg[7];
    let op = ctx.world.ops.get(id).cloned().ok_or_else(|| {
        ArmError::new(
            404,
            "ResourceNotFound",
            format!("The operation '{id}' was not found."),
        )
    })?;
    let (status, error) = op.status(ctx.now);
    match kind {
        "operations" | "operationstatus" | "operationstatuses" => {
            let mut body = json!({
                "id": format!("/subscriptions/{}/providers/{}/locations/{}/operations/{}", op.subscription, op.namespace, op.location, op.id),
                "name": op.id, "status": status, "startTime": iso(op.start),
            });
            if status != "InProgress" {
                body["endTime"] = json!(iso(op.end.unwrap_or(ctx.now)));
                body["percentComplete"] = json!(100);
            }
            if let Some((code, message)) = error {
                body["error"] = json!({"code": code, "message": message});
            }
            let mut resp = Resp::json(200, body);
            if status == "InProgress" {
                resp = resp.header("Retry-After", ctx.retry_after(op.end));
            }
            Ok(resp)
        }
        "operationresults" => {
            if status == "InProgress" {
                return Ok(Resp::empty(202)
                    .header(
                        "Location",
                        format!(
                            "{}{}?api-version={}",
                            r.base,
                            r.path,
                            r.q("api-version").unwrap_or_default()
                        ),
                    )
                    .header("Retry-After", ctx.retry_after(op.end)));
            }
            let m = &ctx.world.machines[op.machine];
            match op.kind {
                OpKind::DeleteExtension => Ok(Resp::empty(204)),
                OpKind::PatchVm => Ok(Resp::json(200, machine_json(ctx, op.machine, false))),
                OpKind::PutExtension => match m.extensions.get(&op.ext_key) {
                    Some(e) => Ok(Resp::json(200, extension_json(ctx, m, e))),
                    None => Ok(Resp::empty(204)),
                },
            }
        }
        _ => Err(ArmError::new(
            404,
            "NotFound",
            format!("The simulator does not serve {}.", r.path),
        )),
    }
}
