"""The Helm chart: lint, render with default and non-default values, strict values schema."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelcache_devcluster.binaries import ensure_binaries
from modelcache_operator.api.crd import custom_resource_definition
from modelcache_operator.webhook.registration import webhook_configurations
from modelcache_operator.webhook.server import MODELCACHE_WEBHOOK_ID, POD_WEBHOOK_ID

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelcache-operator"
RELEASE, NAMESPACE = "mc", "modelcache-system"
FULLNAME = "mc-modelcache-operator"

# The least-privilege contract, resource by resource (see the comments in templates/rbac.yaml).
EXPECTED_RULES = {
    ("modelcache.dev", "modelcaches"): ["list", "watch", "patch"],
    ("modelcache.dev", "modelcaches/status"): ["get", "patch"],
    ("modelcache.dev", "modelcaches/finalizers"): ["update"],
    ("apiextensions.k8s.io", "customresourcedefinitions"): ["list", "watch"],
    ("", "persistentvolumes"): ["create", "patch", "delete"],
    ("", "persistentvolumeclaims"): ["list", "watch", "create", "patch", "delete"],
    ("batch", "jobs"): ["list", "watch", "create", "patch"],
    ("", "pods"): ["list", "watch"],
    ("", "secrets"): ["get"],
    ("", "serviceaccounts"): ["create", "patch"],
    ("rbac.authorization.k8s.io", "roles"): ["create", "patch"],
    ("rbac.authorization.k8s.io", "rolebindings"): ["create", "patch"],
    ("", "events"): ["create"],
}

NON_DEFAULT = [
    "--set", "webhook.certManager.enabled=true",
    "--set", "metrics.serviceMonitor.enabled=true",
    "--set", "metrics.serviceMonitor.labels.release=prom",
    "--set", "operator.watchNamespaces={llm,staging}",
    "--set", "image.repository=registry.example.com/mc",
    "--set", "image.tag=1.2.3",
    "--set", "operator.resyncSeconds=60",
    "--set", "crds.enabled=false",
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
        "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Deployment",
        "MutatingWebhookConfiguration", "Secret", "Service", "Service", "ServiceAccount",
        "ValidatingWebhookConfiguration",
    ])
    namespaced = [d for d in defaults if d["kind"] in ("Deployment", "Secret", "Service", "ServiceAccount")]
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


def test_deployment_is_single_restricted_and_probed(defaults: list[dict[str, Any]]) -> None:
    deployment = one(defaults, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
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
    assert main["readinessProbe"]["tcpSocket"] == {"port": "webhook"}
    assert {p["name"]: p["containerPort"] for p in main["ports"]} == {"webhook": 9443, "metrics": 9090,
                                                                      "webhook-metrics": 9091, "healthz": 8080}
    assert main["resources"]["requests"] and main["resources"]["limits"]["memory"]
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert volumes[mounts["/etc/modelcache/webhook"]]["secret"]["secretName"] == f"{FULLNAME}-webhook-tls"
    values = env(defaults)
    assert values["MODELCACHE_WEBHOOK_CERT"] == "/etc/modelcache/webhook/tls.crt"
    assert values["MODELCACHE_WEBHOOK_KEY"] == "/etc/modelcache/webhook/tls.key"
    assert values["MODELCACHE_WEBHOOK_METRICS_PORT"] == "9091"
    assert values["MODELCACHE_IMAGE"] == main["image"]
    assert values["MODELCACHE_NAMESPACES"] == ""
    assert "MODELCACHE_WEBHOOK_MANAGED" not in values, "the chart renders the webhook configurations itself"


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


def test_modelcache_webhook(defaults: list[dict[str, Any]]) -> None:
    [hook] = one(defaults, "ValidatingWebhookConfiguration")["webhooks"]
    assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
    assert hook["clientConfig"]["service"]["path"] == f"/{MODELCACHE_WEBHOOK_ID}"
    assert hook["rules"][0]["resources"] == ["modelcaches"]
    assert hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert "namespaceSelector" not in hook


def test_development_registration_matches_the_chart(defaults: list[dict[str, Any]]) -> None:
    """Development clusters get their webhook configurations from webhook/registration.py, installs from
    the chart: both must send the same requests with the same policies."""
    dev = {c["kind"]: c["webhooks"][0] for c in webhook_configurations("dev", "https://127.0.0.1:9443", b"ca")}
    for kind, chart_hook in ((k, one(defaults, k)["webhooks"][0]) for k in dev):
        dev_hook = dev[kind]
        for field in ("name", "admissionReviewVersions", "sideEffects", "failurePolicy", "matchPolicy",
                      "timeoutSeconds", "rules", "objectSelector", "reinvocationPolicy"):
            assert dev_hook.get(field) == chart_hook.get(field), (kind, field)
        assert dev_hook["clientConfig"]["url"].endswith(chart_hook["clientConfig"]["service"]["path"])


def test_self_signed_tls_serves_the_webhook_service(defaults: list[dict[str, Any]], tmp_path: Path) -> None:
    secret = one(defaults, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        ca_bundle = one(defaults, kind)["webhooks"][0]["clientConfig"]["caBundle"]
        assert base64.b64decode(ca_bundle) == data["ca.crt"]
    (tmp_path / "ca.crt").write_bytes(data["ca.crt"])
    (tmp_path / "tls.crt").write_bytes(data["tls.crt"])
    verify = subprocess.run(["openssl", "verify", "-CAfile", "ca.crt", "tls.crt"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    san = subprocess.run(["openssl", "x509", "-in", "tls.crt", "-noout", "-ext", "subjectAltName"],
                         cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert f"DNS:{FULLNAME}-webhook.{NAMESPACE}.svc" in san
    assert b"PRIVATE KEY" in data["tls.key"]


def test_crd_is_kept_and_generated(defaults: list[dict[str, Any]]) -> None:
    crd = one(defaults, "CustomResourceDefinition")
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert crd["spec"] == custom_resource_definition()["spec"]


def test_non_default_values(custom: list[dict[str, Any]]) -> None:
    assert "CustomResourceDefinition" not in kinds(custom)
    assert "Secret" not in kinds(custom), "cert-manager writes the TLS Secret"
    certificate = one(custom, "Certificate")
    assert certificate["spec"]["secretName"] == f"{FULLNAME}-webhook-tls"
    assert certificate["spec"]["dnsNames"][0] == f"{FULLNAME}-webhook.{NAMESPACE}.svc"
    assert certificate["spec"]["issuerRef"] == {"kind": "Issuer", "name": f"{FULLNAME}-selfsigned"}
    assert one(custom, "Issuer")["spec"] == {"selfSigned": {}}
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        config = one(custom, kind)
        assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == \
            f"{NAMESPACE}/{FULLNAME}-webhook"
        hook = config["webhooks"][0]
        assert "caBundle" not in hook["clientConfig"]
        assert {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["llm", "staging"]} in \
            hook["namespaceSelector"]["matchExpressions"]
    monitor = one(custom, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "metrics"
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics", "webhook-metrics"]
    values = env(custom)
    assert container(custom)["image"] == "registry.example.com/mc:1.2.3"
    assert values["MODELCACHE_IMAGE"] == "registry.example.com/mc:1.2.3"
    assert values["MODELCACHE_NAMESPACES"] == "llm,staging"
    assert values["MODELCACHE_RESYNC_SECONDS"] == "60"
    rules = rules_by_resource(one(custom, "ClusterRole"))
    assert rules == {**EXPECTED_RULES, ("", "namespaces"): ["list", "watch"]}


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
])
def test_schema_rejects_unknown_or_invalid_values(helm: str, setting: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--set", setting)
    assert result.returncode != 0, f"--set {setting} rendered"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
