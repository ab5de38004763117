//! Managed identity of machines: read it, and enable the system-assigned identity on a VM while
//! keeping its user-assigned identities (Arc machines get theirs from the Arc agent).

use super::ResourceId;
use super::client::{ArmClient, Submitted};
use super::error::AzureError;
use super::extensions::machine_kind;
use super::lro::LroMethod;
use super::throttle::BucketClass;
use super::types::{Machine, MachineIdentity};
use crate::inventory::MachineKind;

impl ArmClient {
    /// GET the VM or Arc machine (`None` if it does not exist).
    pub async fn get_machine(&self, machine: &ResourceId) -> Result<Option<Machine>, AzureError> {
        let (_, api) = machine_kind(machine)?;
        let url = self.arm_url(machine.as_str(), api, &[])?;
        self.get_optional(url, machine.subscription()).await
    }

    pub async fn get_identity(
        &self,
        machine: &ResourceId,
    ) -> Result<Option<MachineIdentity>, AzureError> {
        Ok(self.get_machine(machine).await?.and_then(|m| m.identity))
    }

    /// Ensures the VM has a system-assigned identity. `Ok(None)` when it already had one;
    /// otherwise the PATCH (a long-running operation) resending every user-assigned identity.
    pub async fn enable_system_assigned_identity(
        &self,
        vm: &ResourceId,
    ) -> Result<Option<Submitted<Machine>>, AzureError> {
        let (kind, api) = machine_kind(vm)?;
        if kind != MachineKind::AzureVM {
            return Err(AzureError::UnsupportedResource {
                id: vm.to_string(),
                expected: "an Azure VM (Arc machines get their system-assigned identity from the Connected Machine agent)",
            });
        }
        let current = self.get_machine(vm).await?.ok_or_else(|| AzureError::Api {
            method: "GET".into(),
            path: vm.to_string(),
            status: 404,
            code: "ResourceNotFound".into(),
            message: "the VM does not exist".into(),
        })?;
        let Some(patch) = MachineIdentity::enable_system_assigned_patch(current.identity.as_ref())
        else {
            return Ok(None);
        };
        let url = self.arm_url(vm.as_str(), api, &[])?;
        self.submit(
            LroMethod::Patch,
            url,
            vm.as_str(),
            &[BucketClass::ComputeUpdateVm],
            Some(&patch),
            current.etag,
        )
        .await
        .map(Some)
    }
}
