//! Log Analytics query API `POST /v1/workspaces/{customerId}/query`: parses the KQL subset and evaluates
//! it over the ledger's rows of that workspace.

use serde_json::{Value, json};

use super::super::kql;
use super::super::logs;
use super::super::world::ArmError;
use super::{Ctx, HResult, Req, Resp};

fn one_api(status: u16, code: &str, message: &str, inner_code: &str, inner: &str) -> Resp {
    Resp::json(
        status,
        json!({"error": {"code": code, "message": message, "innererror": {"code": inner_code, "message": inner}}}),
    )
}

pub fn handle(ctx: &mut Ctx, r: &Req) -> HResult {
    let l: Vec<&str> = r.low.iter().map(String::as_str).collect();
    let ["v1", "workspaces", cid, "query"] = l.as_slice() else {
        return Ok(one_api(
            404,
            "PathNotFoundError",
            &format!("The requested path does not exist: {}", r.path),
            "NotFound",
            "unknown path",
        ));
    };
    let Some(ws) = ctx.world.workspace_by_customer_id(cid) else {
        return Ok(one_api(
            404,
            "WorkspaceNotFoundError",
            &format!("The workspace could not be found: {cid}"),
            "NotFound",
            "unknown workspace",
        ));
    };
    let query = match r.method.as_str() {
        "POST" => {
            let body = r
                .json()
                .map_err(|e| ArmError::new(400, "BadArgumentError", e.message))?;
            body.get("query")
                .and_then(Value::as_str)
                .map(str::to_string)
        }
        "GET" => r.q("query").map(str::to_string),
        _ => {
            return Ok(one_api(
                405,
                "MethodNotAllowed",
                "Use POST or GET.",
                "MethodNotAllowed",
                &r.method,
            ));
        }
    };
    let Some(query) = query else {
        return Ok(one_api(
            400,
            "BadArgumentError",
            "The request had some invalid properties",
            "MissingQuery",
            "The 'query' field is required.",
        ));
    };
    let parsed = match kql::parse(&query) {
        Ok(q) => q,
        Err(e) => {
            return Ok(one_api(
                400,
                "BadArgumentError",
                "The request had some invalid properties",
                "SyntaxError",
                &e.to_string(),
            ));
        }
    };
    let groups = logs::row_groups(ctx.world, ws, ctx.now);
    match kql::evaluate(&parsed, &groups, ctx.now, &logs::schema) {
        Ok(table) => Ok(Resp::json(200, json!({"tables": [table]}))),
        Err(e) => Ok(one_api(
            400,
            "BadArgumentError",
            "The request had some invalid properties",
            "SemanticError",
            &e.to_string(),
        )),
    }
}
