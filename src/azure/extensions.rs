//! VM (Microsoft.Compute) and Arc (Microsoft.HybridCompute) extensions behind one API that takes
//! the machine id and dispatches by its resource type.

use super::ResourceId;
use super::api_versions::{COMPUTE, HYBRID_COMPUTE};
use super::client::{ArmClient, Submitted};
use super::error::AzureError;
use super::lro::LroMethod;
use super::throttle::BucketClass;
use super::types::Extension;
use crate::inventory::{AgentKind, MachineKind};

/// The machine kind and api-version of a machine id, or a clear error.
pub fn machine_kind(machine: &ResourceId) -> Result<(MachineKind, &'static str), AzureError> {
    if machine.is_type("Microsoft.Compute/virtualMachines") {
        Ok((MachineKind::AzureVM, COMPUTE))
    } else if machine.is_type("Microsoft.HybridCompute/machines") {
        Ok((MachineKind::ArcServer, HYBRID_COMPUTE))
    } else {
        Err(AzureError::UnsupportedResource {
            id: machine.to_string(),
            expected: "a Microsoft.Compute/virtualMachines or Microsoft.HybridCompute/machines id",
        })
    }
}

/// Extension writes on VMs also spend Compute's per-subscription "Update VM" bucket.
fn write_extra(kind: MachineKind) -> &'static [BucketClass] {
    match kind {
        MachineKind::AzureVM => &[BucketClass::ComputeUpdateVm],
        MachineKind::ArcServer => &[],
    }
}

impl ArmClient {
    pub async fn get_extension(
        &self,
        machine: &ResourceId,
        name: &str,
    ) -> Result<Option<Extension>, AzureError> {
        let (_, api) = machine_kind(machine)?;
        let url = self.arm_url(&format!("{machine}/extensions/{name}"), api, &[])?;
        self.get_optional(url, machine.subscription()).await
    }

    pub async fn list_extensions(
        &self,
        machine: &ResourceId,
    ) -> Result<Vec<Extension>, AzureError> {
        let (_, api) = machine_kind(machine)?;
        let url = self.arm_url(&format!("{machine}/extensions"), api, &[])?;
        self.list_paged(url, machine.subscription()).await
    }

    /// The machine's agent extensions, detected by publisher + type.
    pub async fn agent_extensions(
        &self,
        machine: &ResourceId,
    ) -> Result<Vec<(AgentKind, Extension)>, AzureError> {
        Ok(self
            .list_extensions(machine)
            .await?
            .into_iter()
            .filter_map(|e| e.agent().map(|k| (k, e)))
            .collect())
    }

    /// Creates or replaces an extension; the result may be a running operation.
    pub async fn put_extension(
        &self,
        machine: &ResourceId,
        name: &str,
        extension: &Extension,
    ) -> Result<Submitted<Extension>, AzureError> {
        let (kind, api) = machine_kind(machine)?;
        let id = format!("{machine}/extensions/{name}");
        let url = self.arm_url(&id, api, &[])?;
        self.submit(
            LroMethod::Put,
            url,
            &id,
            write_extra(kind),
            Some(extension),
            None,
        )
        .await
    }

    /// Deletes (uninstalls) an extension; 404 counts as already done.
    pub async fn delete_extension(
        &self,
        machine: &ResourceId,
        name: &str,
    ) -> Result<Submitted<Extension>, AzureError> {
        let (kind, api) = machine_kind(machine)?;
        let id = format!("{machine}/extensions/{name}");
        let url = self.arm_url(&id, api, &[])?;
        let extra: &[BucketClass] = match kind {
            MachineKind::AzureVM => &[BucketClass::ComputeUpdateVm],
            MachineKind::ArcServer => &[],
        };
        self.submit(LroMethod::Delete, url, &id, extra, None::<&()>, None)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_by_machine_type() {
        let vm = ResourceId::parse(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1",
        )
        .unwrap();
        assert_eq!(
            machine_kind(&vm).unwrap(),
            (MachineKind::AzureVM, "2024-11-01")
        );
        let arc = ResourceId::parse(
            "/subscriptions/s/resourceGroups/rg/providers/microsoft.hybridcompute/machines/a1",
        )
        .unwrap();
        assert_eq!(
            machine_kind(&arc).unwrap(),
            (MachineKind::ArcServer, "2024-07-10")
        );
        let ws = ResourceId::parse("/subscriptions/s/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/w").unwrap();
        assert!(
            machine_kind(&ws)
                .unwrap_err()
                .to_string()
                .contains("virtualMachines")
        );
    }
}
