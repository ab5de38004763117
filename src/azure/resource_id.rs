//! Azure resource IDs: parsed once, compared case-insensitively (ARM treats them so).

use std::fmt;

/// A parsed ARM resource ID such as
/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}`.
#[derive(Clone, Debug, Eq)]
pub struct ResourceId {
    raw: String,
    subscription: String,
    resource_group: Option<String>,
    /// `(namespace/type, name)` pairs after `providers/`, outermost first.
    types: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "malformed Azure resource ID {id:?}: {problem}; expected /subscriptions/<guid>/resourceGroups/<rg>/providers/<Namespace>/<type>/<name>"
)]
pub struct ResourceIdError {
    pub id: String,
    pub problem: &'static str,
}

impl ResourceId {
    pub fn parse(id: &str) -> Result<Self, ResourceIdError> {
        let err = |problem| ResourceIdError {
            id: id.to_string(),
            problem,
        };
        let trimmed = id.trim();
        if !trimmed.starts_with('/') {
            return Err(err("it must start with '/'"));
        }
        let segs: Vec<&str> = trimmed[1..].split('/').collect();
        if segs.iter().any(|s| s.is_empty()) {
            return Err(err("it has an empty segment"));
        }
        if segs.len() < 2 || !segs[0].eq_ignore_ascii_case("subscriptions") {
            return Err(err("it must begin with /subscriptions/<id>"));
        }
        let subscription = segs[1].to_string();
        let mut i = 2;
        let mut resource_group = None;
        if segs.len() > i && segs[i].eq_ignore_ascii_case("resourceGroups") {
            let rg = segs
                .get(i + 1)
                .ok_or_else(|| err("resourceGroups has no name"))?;
            resource_group = Some(rg.to_string());
            i += 2;
        }
        let mut types = Vec::new();
        while i < segs.len() {
            if !segs[i].eq_ignore_ascii_case("providers") {
                return Err(err("expected 'providers' after the scope"));
            }
            let namespace = segs
                .get(i + 1)
                .ok_or_else(|| err("providers has no namespace"))?;
            i += 2;
            let mut first = true;
            while i < segs.len() && !segs[i].eq_ignore_ascii_case("providers") {
                let ty = segs[i];
                let name = segs
                    .get(i + 1)
                    .ok_or_else(|| err("a resource type has no name"))?;
                let full_type = if first {
                    format!("{namespace}/{ty}")
                } else {
                    ty.to_string()
                };
                types.push((full_type, name.to_string()));
                first = false;
                i += 2;
            }
            if first {
                return Err(err("providers/<namespace> has no resource type"));
            }
        }
        Ok(Self {
            raw: trimmed.to_string(),
            subscription,
            resource_group,
            types,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }
    pub fn subscription(&self) -> &str {
        &self.subscription
    }
    pub fn resource_group(&self) -> Option<&str> {
        self.resource_group.as_deref()
    }
    /// The last resource name (`vm1` for a VM ID).
    pub fn name(&self) -> &str {
        self.types
            .last()
            .map(|(_, n)| n.as_str())
            .unwrap_or(&self.subscription)
    }
    /// The outermost resource type, e.g. `Microsoft.Compute/virtualMachines`.
    pub fn top_type(&self) -> Option<&str> {
        self.types.first().map(|(t, _)| t.as_str())
    }
    /// True when the top type equals `ty`, ignoring case.
    pub fn is_type(&self, ty: &str) -> bool {
        self.types.len() == 1 && self.top_type().is_some_and(|t| t.eq_ignore_ascii_case(ty))
    }
    /// Lower-cased form for use as a map key.
    pub fn key(&self) -> String {
        self.raw.to_ascii_lowercase()
    }
}

impl PartialEq for ResourceId {
    fn eq(&self, other: &Self) -> bool {
        self.raw.eq_ignore_ascii_case(&other.raw)
    }
}

impl std::hash::Hash for ResourceId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_and_nested_ids() {
        let id = ResourceId::parse(
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1/extensions/AMA",
        )
        .unwrap();
        assert_eq!(id.subscription(), "s1");
        assert_eq!(id.resource_group(), Some("rg"));
        assert_eq!(id.top_type(), Some("Microsoft.Compute/virtualMachines"));
        assert_eq!(id.name(), "AMA");
        assert!(!id.is_type("Microsoft.Compute/virtualMachines"));
        let vm = ResourceId::parse(
            "/subscriptions/s1/resourcegroups/RG/providers/microsoft.compute/virtualmachines/VM1",
        )
        .unwrap();
        assert!(vm.is_type("Microsoft.Compute/virtualMachines"));
        assert_eq!(vm, ResourceId::parse("/subscriptions/S1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1").unwrap());
    }

    #[test]
    fn rejects_malformed_ids_with_the_problem() {
        for bad in [
            "",
            "subscriptions/s",
            "/subscriptions",
            "/subscriptions/s/resourceGroups",
            "/subscriptions/s/providers/Microsoft.Compute",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines",
            "/subscriptions//x",
        ] {
            let e = ResourceId::parse(bad).unwrap_err();
            assert!(
                e.to_string().contains("malformed Azure resource ID"),
                "{bad}: {e}"
            );
        }
    }
}
