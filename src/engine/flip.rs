//! Turning a workspace legacy stream off (the flip) and back on (restore). The previous
//! dataSource is recorded before it is changed, so a restore puts back exactly what was there.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::plan::ChangedLegacySetting;
use crate::azure::api_versions::OPERATIONAL_INSIGHTS;
use crate::azure::datasource::kinds;
use crate::azure::throttle::BucketClass;
use crate::azure::{ArmClient, AzureError, ResourceId, WorkspaceDataSource};
use crate::catalog::DataSourceType;
use crate::local::OperationOutcome;

use super::EngineError;
use super::state::EngineState;

/// The change that stops the legacy agent collecting through one dataSource: `Some(body)` to PUT,
/// `None` to DELETE it.
pub fn disabled(ds: &WorkspaceDataSource) -> Option<serde_json::Value> {
    let mut p = ds.properties.clone();
    match ds.kind.as_str() {
        k if k == kinds::SENTINEL_SECURITY_EVENTS
            || k == kinds::SECURITY_CENTER_SECURITY_EVENTS =>
        {
            p["tier"] = "None".into();
            Some(p)
        }
        k if k == kinds::IIS_LOGS => {
            p["state"] = "OnPremiseDisabled".into();
            Some(p)
        }
        k if k == kinds::LINUX_SYSLOG_COLLECTION || k == kinds::LINUX_PERFORMANCE_COLLECTION => {
            p["state"] = "Disabled".into();
            Some(p)
        }
        // One dataSource per channel, facility, counter or log: removing it stops collection.
        _ => None,
    }
}

/// DELETE a workspace dataSource (200/204; 404 counts as gone).
async fn delete_data_source(
    client: &ArmClient,
    workspace: &ResourceId,
    name: &str,
) -> Result<(), AzureError> {
    let url = client.arm_url(
        &format!("{workspace}/dataSources/{name}"),
        OPERATIONAL_INSIGHTS,
        &[],
    )?;
    let req = client.arm_request(
        reqwest::Method::DELETE,
        url,
        workspace.subscription(),
        BucketClass::Delete,
        &[],
        None,
    );
    client.execute(&req).await.map(|_| ())
}

/// Whether the dataSource is already in its switched-off state in ARM (`false` when unsure).
async fn already_disabled(
    client: &ArmClient,
    workspace: &ResourceId,
    name: &str,
    seen: &WorkspaceDataSource,
) -> bool {
    let Ok(now) = client.get_data_source(workspace, name).await else {
        return false;
    };
    match (now, disabled(seen)) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(d), Some(props)) => {
            disabled(&d).is_some_and(|p| p == d.properties) || d.properties == props
        }
    }
}

/// Close the journal entries of `action` on `resource_id` that a stop left open (the write may or
/// may not have reached ARM). Called once ARM was read again: the caller then skips the write
/// (found in effect) or sends it once more under a new entry — these writes set a known value, so
/// one more send is harmless. Without this, the next `begin_operation` of the same write is
/// refused as already in flight, for good.
pub(super) fn close_abandoned(
    state: &dyn EngineState,
    resource_id: &str,
    action: &str,
    found_in_effect: bool,
    now: Timestamp,
) -> Result<usize, EngineError> {
    let open: Vec<i64> = state
        .in_flight_operations()
        .map_err(EngineError::Store)?
        .into_iter()
        .filter(|e| e.action == action && e.resource_id.eq_ignore_ascii_case(resource_id))
        .map(|e| e.id)
        .collect();
    let reason = if found_in_effect {
        "stopped before the response was recorded; ARM read again: in effect"
    } else {
        "stopped before the response was recorded; ARM read again: not in effect, sent again"
    };
    for id in &open {
        state
            .finish_operation(
                *id,
                &OperationOutcome::Abandoned {
                    reason: reason.into(),
                },
                now,
            )
            .map_err(EngineError::Store)?;
    }
    Ok(open.len())
}

fn ds_id(workspace: &ResourceId, name: &str) -> String {
    format!("{workspace}/dataSources/{name}")
}

/// Turn off `t`'s legacy collection: every controlling dataSource is recorded, then disabled.
/// Returns the settings changed (for the plan's status).
#[allow(clippy::too_many_arguments)]
pub async fn flip(
    client: &ArmClient,
    state: &dyn EngineState,
    namespace: &str,
    plan: &str,
    workspace: &ResourceId,
    t: DataSourceType,
    controls: &[String],
    current: &[WorkspaceDataSource],
    now: Timestamp,
) -> Result<Vec<ChangedLegacySetting>, EngineError> {
    let mut changed = Vec::new();
    for name in controls {
        let Some(ds) = current.iter().find(|d| {
            d.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        }) else {
            continue; // already gone
        };
        let setting = ChangedLegacySetting {
            resource_id: ds_id(workspace, name),
            kind: ds.kind.clone(),
            data_source_type: t,
            previous_properties: ds.properties.to_string(),
            changed_at: Time(now),
        };
        let fresh = state
            .record_legacy_change(namespace, plan, &setting)
            .map_err(EngineError::Store)?;
        // An open change already recorded: this dataSource was switched off before (for another
        // stream it also controls, or before a stop). Read it back rather than write it again.
        if !fresh {
            let in_effect = already_disabled(client, workspace, name, ds).await;
            close_abandoned(state, &setting.resource_id, "FlipLegacy", in_effect, now)?;
            if in_effect {
                changed.push(setting);
                continue;
            }
        }
        let id = state
            .begin_operation(&setting.resource_id, "FlipLegacy", now)
            .map_err(EngineError::Store)?;
        let result = match disabled(ds) {
            Some(props) => {
                let body = WorkspaceDataSource {
                    properties: props,
                    ..ds.clone()
                };
                client
                    .put_data_source(workspace, name, &body)
                    .await
                    .map(|_| ())
            }
            None => delete_data_source(client, workspace, name).await,
        };
        let outcome = match &result {
            Ok(()) => OperationOutcome::Succeeded,
            Err(e) => OperationOutcome::Failed {
                code: e.arm_code().unwrap_or("ClientError").into(),
                message: e.to_string(),
            },
        };
        state
            .finish_operation(id, &outcome, now)
            .map_err(EngineError::Store)?;
        result.map_err(|e| EngineError::azure("switching a workspace legacy stream off", e))?;
        changed.push(setting);
    }
    Ok(changed)
}

/// Put back every recorded, unrestored setting of `t`.
pub async fn restore(
    client: &ArmClient,
    state: &dyn EngineState,
    namespace: &str,
    plan: &str,
    workspace: &ResourceId,
    t: DataSourceType,
    now: Timestamp,
) -> Result<usize, EngineError> {
    let changes = state
        .legacy_changes(namespace, plan)
        .map_err(EngineError::Store)?;
    let mut n = 0;
    for c in changes.iter().filter(|c| c.setting.data_source_type == t) {
        let s = &c.setting;
        let name = s
            .resource_id
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let props: serde_json::Value =
            serde_json::from_str(&s.previous_properties).map_err(|e| EngineError::Discovery {
                what: "a recorded legacy setting",
                problem: format!("{}: previous properties are not JSON: {e}", s.resource_id),
            })?;
        let body = WorkspaceDataSource {
            id: None,
            name: None,
            resource_type: None,
            kind: s.kind.clone(),
            properties: props,
            etag: None,
        };
        let stopped_midway = state
            .in_flight_operations()
            .map_err(EngineError::Store)?
            .iter()
            .any(|e| {
                e.action == "RestoreLegacy" && e.resource_id.eq_ignore_ascii_case(&s.resource_id)
            });
        if stopped_midway {
            // A stop between journaling this restore and its answer: read ARM back first.
            let now_there = client
                .get_data_source(workspace, &name)
                .await
                .map_err(|e| EngineError::azure("reading a workspace legacy stream back", e))?;
            let in_effect = now_there.is_some_and(|d| d.properties == body.properties);
            close_abandoned(state, &s.resource_id, "RestoreLegacy", in_effect, now)?;
            if in_effect {
                state
                    .mark_legacy_restored(namespace, plan, &s.resource_id, now)
                    .map_err(EngineError::Store)?;
                n += 1;
                continue;
            }
        }
        let id = state
            .begin_operation(&s.resource_id, "RestoreLegacy", now)
            .map_err(EngineError::Store)?;
        let result = client.put_data_source(workspace, &name, &body).await;
        let outcome = match &result {
            Ok(_) => OperationOutcome::Succeeded,
            Err(e) => OperationOutcome::Failed {
                code: e.arm_code().unwrap_or("ClientError").into(),
                message: e.to_string(),
            },
        };
        state
            .finish_operation(id, &outcome, now)
            .map_err(EngineError::Store)?;
        result.map_err(|e| EngineError::azure("restoring a workspace legacy stream", e))?;
        state
            .mark_legacy_restored(namespace, plan, &s.resource_id, now)
            .map_err(EngineError::Store)?;
        n += 1;
    }
    Ok(n)
}
