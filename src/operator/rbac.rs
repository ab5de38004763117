//! The Kubernetes permissions the operator's code uses, as one list, so the Helm chart's RBAC can
//! be tested against it (grant exactly these, nothing more).

/// Where a rule must be granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleScope {
    /// Every namespace plans live in (a ClusterRole).
    Cluster,
    /// Only the operator's own namespace (a Role): the leader-election Lease.
    OperatorNamespace,
}

/// One (apiGroup, resource, verbs) the code calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `""` is the core group.
    pub api_group: &'static str,
    /// Plural resource, `resource/subresource` for subresources.
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    pub scope: RuleScope,
}

/// Every call the operator makes to the Kubernetes API:
/// * plans: watched; `patch` only to add/remove the finalizer (never the spec);
/// * plan status and machine status: server-side apply on the `status` subresource;
/// * machines: watched and server-side applied (`create` because apply may create);
/// * configmaps: one per plan holding the engine's journal and progress (applied, read on start);
/// * events: published through kube's `Recorder` (creates, then patches a series);
/// * leases: kube-lease-manager (polls with get; creates and patches its Lease).
pub const REQUIRED_RULES: &[Rule] = &[
    Rule {
        api_group: "amamigrator.io",
        resource: "migrationplans",
        verbs: &["get", "list", "watch", "patch"],
        scope: RuleScope::Cluster,
    },
    Rule {
        api_group: "amamigrator.io",
        resource: "migrationplans/status",
        verbs: &["get", "patch"],
        scope: RuleScope::Cluster,
    },
    Rule {
        api_group: "amamigrator.io",
        resource: "machinemigrations",
        verbs: &["get", "list", "watch", "create", "patch"],
        scope: RuleScope::Cluster,
    },
    Rule {
        api_group: "amamigrator.io",
        resource: "machinemigrations/status",
        verbs: &["get", "patch"],
        scope: RuleScope::Cluster,
    },
    Rule {
        api_group: "",
        resource: "configmaps",
        verbs: &["get", "create", "patch"],
        scope: RuleScope::Cluster,
    },
    Rule {
        api_group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        scope: RuleScope::Cluster,
    },
    Rule {
        api_group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "patch"],
        scope: RuleScope::OperatorNamespace,
    },
];

/// A rule the code uses only when a feature is on, with the chart value that grants it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionalRule {
    /// The Helm value (`rbac.secretAccess`) under which the chart grants the rule.
    pub chart_value: &'static str,
    pub rule: Rule,
}

/// Calls made only for some plans:
/// * secrets: `get` of the one Secret a plan names in `spec.azure.credentialsSecretRef`, in the
///   plan's namespace, on each reconcile of that plan (never list or watch: the operator does not
///   cache Secrets, so it cannot read one no plan names). Without the grant such a plan is
///   Blocked with a condition saying to set the chart value.
pub const OPTIONAL_RULES: &[OptionalRule] = &[OptionalRule {
    chart_value: "rbac.secretAccess",
    rule: Rule {
        api_group: "",
        resource: "secrets",
        verbs: &["get"],
        scope: RuleScope::Cluster,
    },
}];

/// The verbs required on `(api_group, resource)`, if the code uses that resource at all.
pub fn verbs_for(api_group: &str, resource: &str) -> Option<&'static [&'static str]> {
    REQUIRED_RULES
        .iter()
        .find(|r| r.api_group == api_group && r.resource == resource)
        .map(|r| r.verbs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_per_resource_and_no_wildcards() {
        let mut seen = std::collections::BTreeSet::new();
        for r in REQUIRED_RULES {
            assert!(seen.insert((r.api_group, r.resource)), "{r:?} listed twice");
            assert!(!r.verbs.is_empty());
            assert!(r.verbs.iter().all(|v| *v != "*"), "{r:?} uses a wildcard");
            assert!(r.resource != "*" && r.api_group != "*");
        }
        assert_eq!(
            verbs_for("amamigrator.io", "migrationplans/status"),
            Some(&["get", "patch"][..])
        );
        assert!(
            !verbs_for("amamigrator.io", "migrationplans")
                .unwrap()
                .contains(&"update"),
            "the operator never PUTs a plan (GitOps must see no drift)"
        );
        assert_eq!(verbs_for("", "secrets"), None);
    }

    #[test]
    fn secrets_are_only_read_one_by_name() {
        let secrets: Vec<_> = OPTIONAL_RULES
            .iter()
            .filter(|o| o.rule.resource == "secrets")
            .collect();
        assert_eq!(secrets.len(), 1);
        assert_eq!(secrets[0].rule.verbs, &["get"], "no list/watch of Secrets");
        assert_eq!(secrets[0].chart_value, "rbac.secretAccess");
        let chart = include_str!("../../charts/ama-migrator/templates/rbac.yaml");
        assert!(
            chart.contains("{{- if .Values.rbac.secretAccess }}")
                && chart.contains("resources: [\"secrets\"]\n  verbs: [\"get\"]"),
            "the chart grants exactly get on secrets under rbac.secretAccess"
        );
    }
}
