#!/usr/bin/env python3
"""Lint, render and validate charts/ama-migrator, offline, without a helm binary or a cluster.

Run from the repository root:

    python3 -m pip install -r ci/requirements.txt
    python3 ci/chart_check.py

For every values scenario (defaults, every optional feature on, namespaced RBAC, the simulator
sidecar, each credential kind, ...):
  * `helm lint --strict` (Kubernetes 1.33) through helm-python-sdk (Helm v4's SDK in the wheel);
  * the values against values.schema.json, with Helm's validator and with python `jsonschema`;
  * render, then validate every manifest and the chart's CRDs against the Kubernetes 1.33 schemas
    (kubernetes-validate, strict: unknown fields fail). ServiceMonitor is a prometheus-operator CRD
    type with no core schema: it is skipped, and said so;
  * the operator's pod is hardened (non-root, read-only root filesystem, no capabilities, seccomp
    RuntimeDefault, resources, /healthz and /readyz probes, `run`), and workload identity is wired;
  * the RBAC grants exactly the rules the code uses (ci/rbac_required_rules.json, exported from
    src/operator/rbac.rs by tests/chart_rbac.rs) plus `secrets get` only with rbac.secretAccess.
Invalid values must be rejected. Prints one line per check and "N passed, N failed"; exits 1 on any
failure, 2 when a dependency is missing.
"""

from __future__ import annotations

import copy
import json
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "ama-migrator"
REQUIRED_RULES = ROOT / "ci" / "rbac_required_rules.json"
KUBE_VERSION = "1.33"
RELEASE = "ama"
NAMESPACE = "ama-system"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
TENANT_ID = "66666666-7777-8888-9999-000000000000"
# Kinds whose schema is not part of Kubernetes itself: skipped by name, never silently.
NON_CORE_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

try:
    import helm_python as helm
    import jsonschema
    import kubernetes_validate
    import yaml
except ImportError as missing:  # pragma: no cover - environment problem, not a chart problem
    print(
        f"error: {missing}. Install the chart tooling first: "
        f"python3 -m pip install -r {ROOT / 'ci' / 'requirements.txt'}",
        file=sys.stderr,
    )
    sys.exit(2)


class Results:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.skipped = 0

    def check(self, name: str, fn: Callable[[], Any]) -> Any:
        try:
            out = fn()
        except Exception as e:  # every failure is reported, then the run goes on
            self.failed += 1
            detail = str(e).strip() or traceback.format_exc()
            print(f"FAIL {name}: {detail}")
            return None
        self.passed += 1
        print(f"PASS {name}")
        return out

    def skip(self, name: str, why: str) -> None:
        self.skipped += 1
        print(f"SKIP {name}: {why}")


def merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# Each scenario: (name, values overrides). "all-features" turns on every optional feature.
SCENARIOS: list[tuple[str, dict]] = [
    ("defaults", {}),
    (
        "all-features",
        {
            "workloadIdentity": {"clientId": CLIENT_ID, "tenantId": TENANT_ID},
            "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
            "podDisruptionBudget": {"enabled": True},
            "rbac": {"secretAccess": True},
            "image": {"digest": "sha256:" + "a" * 64},
            "imagePullSecrets": [{"name": "registry"}],
            "priorityClassName": "system-cluster-critical",
            "podAnnotations": {"example.com/a": "b"},
            "podLabels": {"team": "monitoring"},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "ama-migrator"}},
                }
            ],
            "extraEnv": [{"name": "AMA_MIGRATOR_EXTRA", "value": "1"}],
            "azure": {
                "armEndpoint": "https://management.usgovcloudapi.net/",
                "logAnalyticsEndpoint": "https://api.loganalytics.us/",
            },
        },
    ),
    (
        "namespaced",
        {
            "rbac": {"scope": "namespaced", "watchNamespaces": ["team-a", "team-b"], "secretAccess": True},
            "workloadIdentity": {"clientId": CLIENT_ID},
        },
    ),
    ("namespaced-release-namespace", {"rbac": {"scope": "namespaced"}}),
    ("simulator-sidecar", {"simulator": {"enabled": True}, "replicaCount": 1}),
    ("client-secret", {"azure": {"credential": "client-secret", "existingSecret": "azure-sp"}}),
    ("managed-identity", {"azure": {"credential": "managed-identity", "managedIdentityClientId": CLIENT_ID}}),
    ("no-rbac-existing-serviceaccount", {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "ops"}}),
]

# Values the schema must reject: (name, overrides).
INVALID: list[tuple[str, dict]] = [
    ("unknown credential", {"azure": {"credential": "password"}}),
    ("zero replicas", {"replicaCount": 0}),
    ("unknown top-level key", {"replicas": 2}),
    ("client-secret without existingSecret", {"azure": {"credential": "client-secret"}}),
    ("root user allowed", {"podSecurityContext": {"runAsNonRoot": False}}),
    ("unknown rbac scope", {"rbac": {"scope": "everything"}}),
    ("client-id not a GUID", {"workloadIdentity": {"clientId": "my-identity"}}),
    ("port out of range", {"metrics": {"port": 70000}}),
    ("endpoint without scheme", {"azure": {"armEndpoint": "management.azure.com"}}),
]


def render(chart: "helm.Chart", values: dict) -> list[tuple[str, dict]]:
    """Rendered manifests as (template, object), empty documents dropped."""
    out = []
    for template, text in sorted(chart.render(values, name=RELEASE, namespace=NAMESPACE).items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append((template, doc))
    return out


def lint(values: dict) -> None:
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}.0")
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    problems += [{"error": e} for e in report.get("errors", []) or []]
    if problems:
        raise AssertionError("; ".join(f"{m.get('path', '')}: {m['error']}" for m in problems))


def schema_check(chart: "helm.Chart", schema: dict, values: dict) -> None:
    chart.validate_schema(values)
    merged = chart.merge_values(values)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(merged), key=lambda e: list(e.path))
    if errors:
        raise AssertionError("; ".join(f"/{'/'.join(map(str, e.path))}: {e.message}" for e in errors))


def k8s_validate(obj: dict) -> None:
    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        raise AssertionError(f"{path}: {e.message}") from None
    except kubernetes_validate.SchemaNotFoundError as e:
        raise AssertionError(e.message) from None


def find(objs: list[tuple[str, dict]], kind: str) -> list[dict]:
    return [o for _, o in objs if o.get("kind") == kind]


def one(objs: list[tuple[str, dict]], kind: str) -> dict:
    found = find(objs, kind)
    if len(found) != 1:
        raise AssertionError(f"expected one {kind}, rendered {len(found)}")
    return found[0]


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise AssertionError(message)


def check_pod(objs: list[tuple[str, dict]], merged: dict) -> None:
    dep = one(objs, "Deployment")
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    expect(dep["spec"]["replicas"] == merged["replicaCount"], "replicas differ from replicaCount")
    psc = spec.get("securityContext", {})
    expect(psc.get("runAsNonRoot") is True, "pod securityContext.runAsNonRoot must be true")
    expect(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "pod seccompProfile must be RuntimeDefault")
    containers = {c["name"]: c for c in spec["containers"]}
    expect("operator" in containers, "no `operator` container")
    for c in spec["containers"]:
        sc = c.get("securityContext", {})
        expect(sc.get("readOnlyRootFilesystem") is True, f"{c['name']}: readOnlyRootFilesystem must be true")
        expect(sc.get("allowPrivilegeEscalation") is False, f"{c['name']}: allowPrivilegeEscalation must be false")
        expect(sc.get("runAsNonRoot") is True, f"{c['name']}: runAsNonRoot must be true")
        expect(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{c['name']}: capabilities must drop ALL")
        expect(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{c['name']}: seccomp RuntimeDefault")
        for kind in ("requests", "limits"):
            res = c.get("resources", {}).get(kind, {})
            expect("cpu" in res and "memory" in res, f"{c['name']}: resources.{kind} needs cpu and memory")
    op = containers["operator"]
    expect(op.get("args") == ["run"], f"operator args are {op.get('args')}, expected ['run']")
    port = next((p for p in op.get("ports", []) if p.get("name") == "metrics"), None)
    expect(port is not None and port["containerPort"] == merged["metrics"]["port"], "no metrics port")
    expect(op["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}, "liveness must GET /healthz")
    expect(op["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}, "readiness must GET /readyz")
    env = {e["name"]: e.get("value") for e in op.get("env", [])}
    expect(env.get("AMA_MIGRATOR_LOG_JSON") == str(merged["logging"]["json"]).lower(), "AMA_MIGRATOR_LOG_JSON")
    credential = "none" if merged["simulator"]["enabled"] else merged["azure"]["credential"]
    expect(env.get("AZURE_CREDENTIAL_KIND") == credential, f"AZURE_CREDENTIAL_KIND is {env.get('AZURE_CREDENTIAL_KIND')}")
    if merged["simulator"]["enabled"]:
        sim = containers.get("simulator")
        expect(sim is not None, "simulator sidecar missing")
        url = f"http://127.0.0.1:{merged['simulator']['port']}/"
        expect(env.get("AMA_MIGRATOR_ARM_ENDPOINT") == url, "ARM endpoint must be the sidecar")
        expect(env.get("AMA_MIGRATOR_LOG_ANALYTICS_ENDPOINT") == url, "Log Analytics endpoint must be the sidecar")
        expect(sim["args"][:2] == ["simulator", "--listen"] and sim["args"][2].startswith("127.0.0.1:"), "sidecar must listen on loopback")
    else:
        expect("simulator" not in containers, "simulator sidecar rendered while disabled")
        for key, var in (("armEndpoint", "AMA_MIGRATOR_ARM_ENDPOINT"), ("logAnalyticsEndpoint", "AMA_MIGRATOR_LOG_ANALYTICS_ENDPOINT")):
            expect(env.get(var) == (merged["azure"][key] or None), f"{var} is {env.get(var)!r}")
    wi = credential == "workload-identity"
    label = pod["metadata"].get("labels", {}).get("azure.workload.identity/use")
    expect(label == ("true" if wi else None), f"pod label azure.workload.identity/use is {label!r} (credential {credential})")
    if credential == "client-secret":
        refs = [s["secretRef"]["name"] for s in op.get("envFrom", [])]
        expect(refs == [merged["azure"]["existingSecret"]], f"client-secret envFrom is {refs}")
    else:
        expect("envFrom" not in op, "envFrom only for client-secret")
    sa_name = spec["serviceAccountName"]
    sas = find(objs, "ServiceAccount")
    if merged["serviceAccount"]["create"]:
        sa = one(objs, "ServiceAccount")
        expect(sa["metadata"]["name"] == sa_name, "the pod does not use the chart's ServiceAccount")
        ann = sa["metadata"].get("annotations", {}) or {}
        want_id = merged["workloadIdentity"]["clientId"] if wi else ""
        expect(ann.get("azure.workload.identity/client-id", "") == want_id, f"client-id annotation is {ann.get('azure.workload.identity/client-id')!r}")
        want_tenant = merged["workloadIdentity"]["tenantId"] if wi and want_id else ""
        expect(ann.get("azure.workload.identity/tenant-id", "") == want_tenant, "tenant-id annotation")
    else:
        expect(not sas and sa_name == merged["serviceAccount"]["name"], "an existing ServiceAccount must be used as is")


def rule_map(rules: list[dict]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs, refusing wildcards and resourceNames."""
    out: dict[tuple[str, str], set[str]] = {}
    for r in rules:
        expect(not r.get("resourceNames") and not r.get("nonResourceURLs"), f"unexpected rule shape {r}")
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                expect("*" not in (g, res) and "*" not in r.get("verbs", []), f"wildcard in {r}")
                out.setdefault((g, res), set()).update(r.get("verbs", []))
    return out


def fmt(m: dict[tuple[str, str], set[str]]) -> str:
    return ", ".join(f"{g or 'core'}/{r}: {sorted(v)}" for (g, r), v in sorted(m.items())) or "nothing"


def diff(got: dict[tuple[str, str], set[str]], want: dict[tuple[str, str], set[str]]) -> str:
    extra = {k: v - want.get(k, set()) for k, v in got.items() if v - want.get(k, set())}
    missing = {k: v - got.get(k, set()) for k, v in want.items() if v - got.get(k, set())}
    return f"grants beyond the code: {fmt(extra)}; missing: {fmt(missing)}"


def check_rbac(objs: list[tuple[str, dict]], merged: dict, required: list[dict]) -> None:
    roles = find(objs, "Role")
    cluster_roles = find(objs, "ClusterRole")
    bindings = find(objs, "RoleBinding") + find(objs, "ClusterRoleBinding")
    if not merged["rbac"]["create"]:
        expect(not roles and not cluster_roles and not bindings, "rbac.create=false must render no RBAC")
        return
    plans: dict[tuple[str, str], set[str]] = {}
    lease: dict[tuple[str, str], set[str]] = {}
    for r in required:
        target = plans if r["scope"] == "plans" else lease
        target[(r["apiGroup"], r["resource"])] = set(r["verbs"])
    if merged["rbac"]["secretAccess"]:
        plans[("", "secrets")] = {"get"}

    lease_roles = [r for r in roles if r["metadata"]["name"].endswith("-leader-election")]
    expect(len(lease_roles) == 1 and lease_roles[0]["metadata"]["namespace"] == NAMESPACE, "one leader-election Role in the release namespace")
    got = rule_map(lease_roles[0]["rules"])
    expect(got == lease, f"leader-election Role {diff(got, lease)}")

    plan_roles = [r for r in roles if r not in lease_roles]
    if merged["rbac"]["scope"] == "cluster":
        expect(len(cluster_roles) == 1 and not plan_roles, f"cluster scope: one ClusterRole, got {len(cluster_roles)} and {len(plan_roles)} Role(s)")
        holders = cluster_roles
    else:
        want_ns = merged["rbac"]["watchNamespaces"] or [NAMESPACE]
        expect(not cluster_roles, "namespaced scope must render no ClusterRole")
        got_ns = sorted(r["metadata"]["namespace"] for r in plan_roles)
        expect(got_ns == sorted(want_ns), f"Roles in {got_ns}, expected {sorted(want_ns)}")
        holders = plan_roles
    for role in holders:
        got = rule_map(role["rules"])
        where = role["metadata"].get("namespace", "cluster")
        expect(got == plans, f"{role['kind']} ({where}) {diff(got, plans)}")

    sa = one(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    bound = set()
    for b in bindings:
        subjects = b.get("subjects", [])
        expect(subjects == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}], f"{b['kind']} {b['metadata']['name']} binds {subjects}")
        bound.add((b["roleRef"]["kind"], b["roleRef"]["name"], b["metadata"].get("namespace")))
    for role in holders + lease_roles:
        key = (role["kind"], role["metadata"]["name"], role["metadata"].get("namespace"))
        expect(key in bound, f"{key} has no binding")
    expect(len(bindings) == len(holders) + len(lease_roles), "one binding per role")


def check_optional(objs: list[tuple[str, dict]], merged: dict) -> None:
    sm = find(objs, "ServiceMonitor")
    pdb = find(objs, "PodDisruptionBudget")
    expect(len(sm) == (1 if merged["metrics"]["serviceMonitor"]["enabled"] else 0), "ServiceMonitor presence follows its value")
    expect(len(pdb) == (1 if merged["podDisruptionBudget"]["enabled"] else 0), "PodDisruptionBudget presence follows its value")
    svc = one(objs, "Service")
    expect(svc["spec"]["ports"][0]["targetPort"] == "metrics", "the Service must target the metrics port")
    selector = one(objs, "Deployment")["spec"]["selector"]["matchLabels"]
    expect(svc["spec"]["selector"] == selector, "the Service selects the operator pods")
    for p in pdb:
        expect(p["spec"]["selector"]["matchLabels"] == selector, "the PDB selects the operator pods")


def main() -> int:
    results = Results()
    schema = json.loads((CHART / "values.schema.json").read_text())
    required = json.loads(REQUIRED_RULES.read_text())["rules"]
    print(f"helm SDK {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__}), "
          f"kubernetes-validate {kubernetes_validate.__version__}, Kubernetes {KUBE_VERSION}")
    with helm.Chart.load(str(CHART)) as chart:
        results.check("values.schema.json is a valid draft-07 schema", lambda: jsonschema.Draft7Validator.check_schema(schema))
        defaults = chart.values
        results.check("values.yaml passes values.schema.json (jsonschema)", lambda: schema_check(chart, schema, {}))

        for crd in chart.crds:
            obj = yaml.safe_load(crd["data"])
            repo_copy = (ROOT / "crds" / Path(crd["filename"]).name).read_text()
            results.check(f"crd {crd['filename']}: same bytes as crds/", lambda: expect(crd["data"] == repo_copy, "drifted; run UPDATE_CRDS=1 cargo test --test chart_crds"))
            results.check(f"crd {crd['filename']}: Kubernetes {KUBE_VERSION} schema", lambda: k8s_validate(obj))
        results.check("chart ships the two CRDs", lambda: expect(len(chart.crds) == 2, f"{len(chart.crds)} CRDs"))

        for name, overrides in SCENARIOS:
            merged = merge(defaults, overrides)
            results.check(f"[{name}] helm lint --strict", lambda: lint(overrides))
            results.check(f"[{name}] values schema", lambda: schema_check(chart, schema, overrides))
            objs = results.check(f"[{name}] render", lambda: render(chart, overrides))
            if objs is None:
                continue
            for template, obj in objs:
                label = f"[{name}] {obj.get('kind')}/{obj.get('metadata', {}).get('name')} ({template.split('/', 1)[-1]})"
                if (obj.get("apiVersion"), obj.get("kind")) in NON_CORE_KINDS:
                    results.skip(label, f"{obj['apiVersion']} {obj['kind']} is a prometheus-operator CRD type, not in the Kubernetes schemas")
                    continue
                results.check(f"{label} validates against Kubernetes {KUBE_VERSION}", lambda: k8s_validate(obj))
            results.check(f"[{name}] operator pod hardened and wired", lambda: check_pod(objs, merged))
            results.check(f"[{name}] RBAC grants exactly what the code uses", lambda: check_rbac(objs, merged, required))
            results.check(f"[{name}] Service, ServiceMonitor, PDB", lambda: check_optional(objs, merged))

        for name, overrides in INVALID:
            def rejected(overrides: dict = overrides) -> None:
                merged = merge(defaults, overrides)
                py_errors = list(jsonschema.Draft7Validator(schema).iter_errors(merged))
                expect(bool(py_errors), "jsonschema accepted it")
                try:
                    chart.validate_schema(overrides)
                except helm.HelmValuesError:
                    return
                raise AssertionError("Helm accepted it")
            results.check(f"invalid values rejected: {name}", rejected)

    print(f"{results.passed} passed, {results.failed} failed, {results.skipped} skipped")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
