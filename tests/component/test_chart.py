"""The Helm chart: lint, render with default and non-default values, strict values schema."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelcache_devcluster.binaries import ensure_binaries
from modelcache_operator.api.crd import KINDS, custom_resource_definition
from modelcache_operator.webhook.registration import webhook_configurations
from modelcache_operator.webhook.server import MODELCACHE_WEBHOOK_ID, POD_WEBHOOK_ID

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelcache-operator"
RELEASE, NAMESPACE = "mc", "modelcache-system"
FULLNAME = "mc-modelcache-operator"

# The least-privilege contract, resource by resource (see the comments in templates/rbac.yaml).
OWN = ["get", "list", "watch", "create", "patch", "delete"]  # objects the operator creates and deletes
IDENTITY = ["get", "create", "patch", "delete"]  # the per-download downloader ServiceAccount, Role, RoleBinding
EXPECTED_RULES = {
    ("modelcache.dev", "modelstores"): ["get", "list", "watch", "patch"],
    ("modelcache.dev", "modelstores/status"): ["get", "patch"],
    ("modelcache.dev", "modelcaches"): ["get", "list", "watch", "patch"],
    ("modelcache.dev", "modelcaches/status"): ["get", "patch"],
    ("modelcache.dev", "modelcaches/finalizers"): ["update"],
    ("modelcache.dev", "modeldownloads"): OWN,
    ("modelcache.dev", "modeldownloads/status"): ["get", "patch"],
    ("apiextensions.k8s.io", "customresourcedefinitions"): ["list", "watch"],
    ("", "namespaces"): ["get", "list", "watch"],
    ("", "persistentvolumes"): OWN,
    ("", "persistentvolumeclaims"): OWN,
    ("batch", "jobs"): OWN,
    ("", "pods"): ["get", "list", "watch", "patch"],  # patch: removing our scheduling gates only
    ("", "serviceaccounts"): IDENTITY,
    ("rbac.authorization.k8s.io", "roles"): IDENTITY,
    ("rbac.authorization.k8s.io", "rolebindings"): IDENTITY,
    ("", "events"): ["create", "patch"],
}
CACHE_WEBHOOK, STORE_WEBHOOK = "validate-modelcaches.modelcache.dev", "validate-modelstores.modelcache.dev"
STORE_WEBHOOK_PATH = "/validate-modelstores"

NON_DEFAULT = [
    "--set", "webhook.certManager.enabled=true",
    "--set", "metrics.serviceMonitor.enabled=true",
    "--set", "metrics.serviceMonitor.labels.release=prom",
    "--set", "operator.watchNamespaces={llm,staging}",
    "--set", "image.repository=registry.example.com/mc",
    "--set", "image.tag=1.2.3",
    "--set", "image.pullPolicy=Always",
    "--set-json", 'imagePullSecrets=[{"name": "registry-a"}, {"name": "registry-b"}]',
    "--set", "operator.resyncSeconds=60",
    "--set", "crds.enabled=false",
    "--set", "stores.allowHostPath=true",
    "--set", "replicaCount=3",
    "--set", "leaderElection.leaseDurationSeconds=30",
    "--set", "podDisruptionBudget.enabled=false",
]


@pytest.fixture(scope="module")
def helm() -> str:
    return str(ensure_binaries().helm)


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)


def render(helm: str, *args: str) -> list[dict[str, Any]]:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}s rendered"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def rules_by_resource(role: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    table: dict[tuple[str, str], list[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert (group, resource) not in table, f"{group}/{resource} appears in two rules"
                table[(group, resource)] = rule["verbs"]
    return table


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def env(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container(docs)["env"]}


def env_sources(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each EnvVar without its name: {"value": ...} or {"valueFrom": ...}, exactly as rendered."""
    entries = container(docs)["env"]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"duplicate env: {names}"
    return {e["name"]: {k: v for k, v in e.items() if k != "name"} for e in entries}


def webhooks(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    hooks = one(docs, kind)["webhooks"]
    by_name = {h["name"]: h for h in hooks}
    assert len(by_name) == len(hooks), f"duplicate webhook names in the {kind}"
    return by_name


@pytest.fixture(scope="module")
def defaults(helm: str) -> list[dict[str, Any]]:
    return render(helm)


@pytest.fixture(scope="module")
def custom(helm: str) -> list[dict[str, Any]]:
    return render(helm, *NON_DEFAULT)


def test_lint_strict(helm: str) -> None:
    for extra in ([], NON_DEFAULT):
        result = run_helm(helm, "lint", "--strict", str(CHART), *extra)
        assert result.returncode == 0, result.stdout + result.stderr


def test_default_render_has_exactly_these_objects(defaults: list[dict[str, Any]]) -> None:
    assert kinds(defaults) == sorted([
        "ClusterRole", "ClusterRoleBinding",
        "CustomResourceDefinition", "CustomResourceDefinition", "CustomResourceDefinition", "Deployment",
        "MutatingWebhookConfiguration", "PodDisruptionBudget", "Role", "RoleBinding", "Secret", "Service",
        "Service", "ServiceAccount", "ValidatingWebhookConfiguration",
    ])
    assert [d["metadata"]["name"] for d in defaults if d["kind"] == "CustomResourceDefinition"] == [
        "modelstores.modelcache.dev", "modelcaches.modelcache.dev", "modeldownloads.modelcache.dev"]
    namespaced = [d for d in defaults if d["kind"] in ("Deployment", "Secret", "Service", "ServiceAccount",
                                                       "PodDisruptionBudget", "Role", "RoleBinding")]
    assert {d["metadata"]["namespace"] for d in namespaced} == {NAMESPACE}


def test_rbac_is_exact_and_has_no_wildcards(defaults: list[dict[str, Any]]) -> None:
    role = one(defaults, "ClusterRole")
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
    assert rules_by_resource(role) == EXPECTED_RULES
    binding = one(defaults, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": FULLNAME}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]


def test_the_lease_role_is_namespaced_and_names_its_one_lease(defaults: list[dict[str, Any]]) -> None:
    """create cannot be limited by name (the object does not exist yet); get and update can."""
    role = one(defaults, "Role")
    assert role["metadata"] == {**role["metadata"], "name": f"{FULLNAME}-leader-election", "namespace": NAMESPACE}
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [FULLNAME],
         "verbs": ["get", "update"]}]
    binding = one(defaults, "RoleBinding")
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": f"{FULLNAME}-leader-election"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    lease = env_sources(defaults)["MODELCACHE_LEASE_NAME"]
    assert lease == {"value": FULLNAME}, "the elector's Lease is the one the Role names"


def test_two_replicas_roll_without_losing_one_and_spread_softly(defaults: list[dict[str, Any]]) -> None:
    spec = one(defaults, "Deployment")["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pod = spec["template"]["spec"]
    selector = {"matchLabels": spec["selector"]["matchLabels"]}
    assert pod["affinity"] == {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": selector}}]}}
    assert pod["topologySpreadConstraints"] == [
        {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": selector}
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")]
    budget = one(defaults, "PodDisruptionBudget")["spec"]
    assert budget == {"maxUnavailable": 1, "selector": selector}
    # The Lease is released and the webhook drains within the grace period.
    assert pod["terminationGracePeriodSeconds"] == 30
    assert env_sources(defaults)["MODELCACHE_SHUTDOWN_DELAY_SECONDS"] == {"value": "5"}


@pytest.mark.parametrize(("flags", "affinity", "spread"), [
    (["--set", "highAvailability.spread=false"], None, None),
    (["--set-json", 'affinity={"nodeAffinity": {"x": 1}}'], {"nodeAffinity": {"x": 1}}, 2),
])
def test_spread_can_be_turned_off_or_replaced(helm: str, flags: list[str], affinity: Any, spread: Any) -> None:
    pod = one(render(helm, *flags), "Deployment")["spec"]["template"]["spec"]
    assert pod.get("affinity") == affinity
    assert (len(pod["topologySpreadConstraints"]) if "topologySpreadConstraints" in pod else None) == spread


def test_deployment_is_restricted_and_probed(defaults: list[dict[str, Any]]) -> None:
    deployment = one(defaults, "Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == FULLNAME
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    main = container(defaults)
    assert main["image"] == "ghcr.io/modelcache-dev/modelcache-operator:0.1.0"
    assert main["args"] == ["run", "--liveness", "http://0.0.0.0:8080/healthz"]
    security = main["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 65532
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    # The webhook process's views synced and in contact with the apiserver (webhook/server.py).
    assert main["readinessProbe"] == {"httpGet": {"path": "/readyz", "port": "webhook-metrics"},
                                      "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 2}
    assert {p["name"]: p["containerPort"] for p in main["ports"]} == {"webhook": 9443, "metrics": 9090,
                                                                      "webhook-metrics": 9091, "healthz": 8080}
    assert main["resources"]["requests"] and main["resources"]["limits"]["memory"]
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert volumes[mounts["/etc/modelcache/webhook"]]["secret"]["secretName"] == f"{FULLNAME}-webhook-tls"
    values = env(defaults)
    assert "MODELCACHE_WEBHOOK_MANAGED" not in values, "the chart renders the webhook configurations itself"
    assert env_sources(defaults) == {
        "MODELCACHE_IMAGE": {"value": main["image"]},
        "MODELCACHE_RESYNC_SECONDS": {"value": "30"},
        "MODELCACHE_UPSTREAM_CHECK_SECONDS": {"value": "21600"},
        "MODELCACHE_METRICS_PORT": {"value": "9090"},
        "MODELCACHE_WEBHOOK_PORT": {"value": "9443"},
        "MODELCACHE_WEBHOOK_METRICS_PORT": {"value": "9091"},
        "MODELCACHE_WEBHOOK_CERT": {"value": "/etc/modelcache/webhook/tls.crt"},
        "MODELCACHE_WEBHOOK_KEY": {"value": "/etc/modelcache/webhook/tls.key"},
        "MODELCACHE_NAMESPACES": {"value": ""},
        # Shared downloads and the Secrets ModelStores name live in the operator's own namespace.
        "MODELCACHE_NAMESPACE": {"valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        "MODELCACHE_ALLOW_HOST_PATH": {"value": "false"},
        "MODELCACHE_IMAGE_PULL_POLICY": {"value": "IfNotPresent"},
        "MODELCACHE_IMAGE_PULL_SECRETS": {"value": ""},
        # The Lease holder is the pod's name.
        "MODELCACHE_POD_NAME": {"valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        "MODELCACHE_LEASE_NAME": {"value": FULLNAME},
        "MODELCACHE_LEASE_DURATION_SECONDS": {"value": "15"},
        "MODELCACHE_LEASE_RENEW_DEADLINE_SECONDS": {"value": "10"},
        "MODELCACHE_LEASE_RETRY_PERIOD_SECONDS": {"value": "2"},
        "MODELCACHE_SHUTDOWN_DELAY_SECONDS": {"value": "5"},
    }


@pytest.mark.parametrize(("flags", "allowed"), [
    ([], "false"),
    (["--set", "stores.allowHostPath=false"], "false"),
    (["--set", "stores.allowHostPath=true"], "true"),
    (["--set-json", "stores={\"allowHostPath\": true}"], "true"),
])
def test_host_path_stores_are_opt_in(helm: str, flags: list[str], allowed: str) -> None:
    assert env_sources(render(helm, *flags))["MODELCACHE_ALLOW_HOST_PATH"] == {"value": allowed}


def test_services(defaults: list[dict[str, Any]]) -> None:
    services = {d["metadata"]["name"]: d for d in defaults if d["kind"] == "Service"}
    webhook = services[f"{FULLNAME}-webhook"]["spec"]
    assert webhook["ports"] == [{"name": "https", "port": 443, "targetPort": "webhook", "protocol": "TCP"}]
    metrics = services[f"{FULLNAME}-metrics"]
    assert [(p["port"], p["targetPort"]) for p in metrics["spec"]["ports"]] == [
        (9090, "metrics"), (9091, "webhook-metrics")]
    assert metrics["metadata"]["labels"]["app.kubernetes.io/component"] == "metrics"
    pod_labels = one(defaults, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for service in services.values():
        assert service["spec"]["selector"].items() <= pod_labels.items()


def test_pod_webhook(defaults: list[dict[str, Any]]) -> None:
    [hook] = one(defaults, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
    assert hook["timeoutSeconds"] == 10 and hook["reinvocationPolicy"] == "Never"
    assert hook["objectSelector"] == {"matchLabels": {"modelcache.dev/inject": "true"}}
    assert hook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                              "operations": ["CREATE"], "scope": "Namespaced"}]
    # The webhook process (webhook/server.py) routes POST /{webhook id}.
    assert hook["clientConfig"]["service"] == {"name": f"{FULLNAME}-webhook", "namespace": NAMESPACE,
                                               "path": f"/{POD_WEBHOOK_ID}", "port": 443}
    [excluded] = hook["namespaceSelector"]["matchExpressions"]
    assert excluded == {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                        "values": ["kube-system", NAMESPACE]}


def test_validating_webhooks(defaults: list[dict[str, Any]]) -> None:
    hooks = webhooks(defaults, "ValidatingWebhookConfiguration")
    assert list(hooks) == [CACHE_WEBHOOK, STORE_WEBHOOK]
    expected = {
        CACHE_WEBHOOK: (f"/{MODELCACHE_WEBHOOK_ID}", "modelcaches", "Namespaced"),
        STORE_WEBHOOK: (STORE_WEBHOOK_PATH, "modelstores", "Cluster"),
    }
    for name, (path, resource, scope) in expected.items():
        hook = hooks[name]
        assert set(hook) == {"name", "admissionReviewVersions", "sideEffects", "failurePolicy", "matchPolicy",
                             "timeoutSeconds", "clientConfig", "rules", "matchConditions"}, name
        # Metadata-only updates (finalizers, annotations) skip the webhook; spec changes and creates do not.
        assert hook["matchConditions"] == [{"name": "spec-changes-only", "expression":
                                            "request.operation == 'CREATE' || object.spec != oldObject.spec"}]
        assert hook["admissionReviewVersions"] == ["v1"] and hook["matchPolicy"] == "Equivalent"
        assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
        assert hook["timeoutSeconds"] == 10
        assert set(hook["clientConfig"]) == {"service", "caBundle"}
        assert hook["clientConfig"]["service"] == {"name": f"{FULLNAME}-webhook", "namespace": NAMESPACE,
                                                   "path": path, "port": 443}
        assert hook["rules"] == [{"apiGroups": ["modelcache.dev"], "apiVersions": ["v1alpha2"],
                                  "resources": [resource], "operations": ["CREATE", "UPDATE"], "scope": scope}]
    # Both webhooks share the one certificate.
    assert hooks[CACHE_WEBHOOK]["clientConfig"]["caBundle"] == hooks[STORE_WEBHOOK]["clientConfig"]["caBundle"]


def test_development_registration_matches_the_chart(defaults: list[dict[str, Any]]) -> None:
    """Development clusters get their webhook configurations from webhook/registration.py, installs from
    the chart: both must send the same requests with the same policies, webhook by webhook."""
    dev = {c["kind"]: {h["name"]: h for h in c["webhooks"]}
           for c in webhook_configurations("dev", "https://127.0.0.1:9443", b"ca")}
    assert sorted(dev) == ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]
    for kind, dev_hooks in dev.items():
        chart_hooks = webhooks(defaults, kind)
        assert sorted(dev_hooks) == sorted(chart_hooks), kind
        for name, chart_hook in chart_hooks.items():
            dev_hook = dev_hooks[name]
            for field in ("name", "admissionReviewVersions", "sideEffects", "failurePolicy", "matchPolicy",
                          "timeoutSeconds", "rules", "objectSelector", "reinvocationPolicy", "matchConditions"):
                assert dev_hook.get(field) == chart_hook.get(field), (kind, name, field)
            assert dev_hook["clientConfig"]["url"] == \
                "https://127.0.0.1:9443" + chart_hook["clientConfig"]["service"]["path"], (kind, name)


def test_self_signed_tls_serves_the_webhook_service(defaults: list[dict[str, Any]], tmp_path: Path) -> None:
    secret = one(defaults, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for name, hook in webhooks(defaults, kind).items():
            assert base64.b64decode(hook["clientConfig"]["caBundle"]) == data["ca.crt"], name
    (tmp_path / "ca.crt").write_bytes(data["ca.crt"])
    (tmp_path / "tls.crt").write_bytes(data["tls.crt"])
    verify = subprocess.run(["openssl", "verify", "-CAfile", "ca.crt", "tls.crt"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    san = subprocess.run(["openssl", "x509", "-in", "tls.crt", "-noout", "-ext", "subjectAltName"],
                         cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert f"DNS:{FULLNAME}-webhook.{NAMESPACE}.svc" in san
    assert b"PRIVATE KEY" in data["tls.key"]


def test_crds_are_kept_and_generated(defaults: list[dict[str, Any]]) -> None:
    crds = [d for d in defaults if d["kind"] == "CustomResourceDefinition"]
    assert len(crds) == len(KINDS) == 3
    for kind, crd in zip(KINDS, crds, strict=True):
        generated = custom_resource_definition(kind)
        assert crd["apiVersion"] == generated["apiVersion"]
        assert crd["metadata"] == {"name": kind.crd_name, "annotations": {"helm.sh/resource-policy": "keep"}}
        assert crd["spec"] == generated["spec"], kind.kind


def test_non_default_values(custom: list[dict[str, Any]]) -> None:
    assert "CustomResourceDefinition" not in kinds(custom)
    assert "Secret" not in kinds(custom), "cert-manager writes the TLS Secret"
    certificate = one(custom, "Certificate")
    assert certificate["spec"]["secretName"] == f"{FULLNAME}-webhook-tls"
    assert certificate["spec"]["dnsNames"][0] == f"{FULLNAME}-webhook.{NAMESPACE}.svc"
    assert certificate["spec"]["issuerRef"] == {"kind": "Issuer", "name": f"{FULLNAME}-selfsigned"}
    assert one(custom, "Issuer")["spec"] == {"selfSigned": {}}
    watched = {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["llm", "staging"]}
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        config = one(custom, kind)
        assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == \
            f"{NAMESPACE}/{FULLNAME}-webhook"
        for name, hook in webhooks(custom, kind).items():
            assert set(hook["clientConfig"]) == {"service"}, name
    [pod_hook] = one(custom, "MutatingWebhookConfiguration")["webhooks"]
    assert watched in pod_hook["namespaceSelector"]["matchExpressions"]
    validating = webhooks(custom, "ValidatingWebhookConfiguration")
    assert validating[CACHE_WEBHOOK]["namespaceSelector"] == {"matchExpressions": [watched]}
    assert "namespaceSelector" not in validating[STORE_WEBHOOK], "ModelStores are cluster-scoped"
    monitor = one(custom, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "metrics"
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics", "webhook-metrics"]
    values = env(custom)
    assert container(custom)["image"] == "registry.example.com/mc:1.2.3"
    assert values["MODELCACHE_IMAGE"] == "registry.example.com/mc:1.2.3"
    assert values["MODELCACHE_NAMESPACES"] == "llm,staging"
    assert values["MODELCACHE_RESYNC_SECONDS"] == "60"
    assert values["MODELCACHE_ALLOW_HOST_PATH"] == "true"
    assert values["MODELCACHE_IMAGE_PULL_POLICY"] == "Always"
    assert values["MODELCACHE_IMAGE_PULL_SECRETS"] == "registry-a,registry-b"
    assert container(custom)["imagePullPolicy"] == "Always"
    assert one(custom, "Deployment")["spec"]["replicas"] == 3
    assert values["MODELCACHE_LEASE_DURATION_SECONDS"] == "30"
    assert "PodDisruptionBudget" not in kinds(custom)
    # Namespaces are read in every mode (ModelStore namespaceSelectors), so the rules never change.
    assert rules_by_resource(one(custom, "ClusterRole")) == EXPECTED_RULES


def test_existing_issuer_is_used(helm: str) -> None:
    docs = render(helm, "--set", "webhook.certManager.enabled=true",
                  "--set", "webhook.certManager.issuerRef.name=corp-ca",
                  "--set", "webhook.certManager.issuerRef.kind=ClusterIssuer")
    assert "Issuer" not in kinds(docs)
    assert one(docs, "Certificate")["spec"]["issuerRef"] == {"kind": "ClusterIssuer", "name": "corp-ca"}


@pytest.mark.parametrize(("api_versions", "cert_manager"), [([], False), (["cert-manager.io/v1"], True)])
def test_cert_manager_auto_detection(helm: str, api_versions: list[str], cert_manager: bool) -> None:
    flags = [arg for version in api_versions for arg in ("--api-versions", version)]
    docs = render(helm, *flags)
    assert ("Certificate" in kinds(docs)) is cert_manager
    assert ("Secret" in kinds(docs)) is not cert_manager


def test_cert_manager_can_be_forced_off(helm: str) -> None:
    docs = render(helm, "--api-versions", "cert-manager.io/v1", "--set", "webhook.certManager.enabled=false")
    assert "Certificate" not in kinds(docs) and "Secret" in kinds(docs)


@pytest.mark.parametrize("setting", [
    "bogus=1",
    "webhook.bogus=1",
    "image.registry=x",
    "securityContext.bogus=true",
    "metrics.serviceMonitor.bogus=1",
    "webhook.certManager.enabled=maybe",
    "webhook.timeoutSeconds=31",
    "image.pullPolicy=Sometimes",
    "stores.bogus=1",
    "stores.allowHostPath=maybe",
    "stores.allowHostPath=1",
    "replicaCount=0",
    "leaderElection.bogus=1",
    "podDisruptionBudget.maxUnavailable=0",
    "webhook.shutdownDelaySeconds=-1",
])
def test_schema_rejects_unknown_or_invalid_values(helm: str, setting: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--set", setting)
    assert result.returncode != 0, f"--set {setting} rendered"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr


def test_schema_rejects_a_string_allow_host_path(helm: str) -> None:
    """"true" as a string would render MODELCACHE_ALLOW_HOST_PATH just the same: only a boolean is allowed."""
    result = run_helm(helm, "template", RELEASE, str(CHART), "--set-string", "stores.allowHostPath=true")
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
