"""The Helm chart against the real control plane.

- `helm install` succeeds (kwok runs the operator pod as a fake, so no image is pulled) and every rendered
  object passes `kubectl apply --dry-run=server`; uninstall removes the webhooks and keeps the CRD.
- RBAC proof: the operator runs as the chart's ServiceAccount with only the chart's ClusterRole, takes a
  ModelCache to Ready and mutates an opted-in pod through webhook configurations shaped exactly like the
  chart's (pointed at the local process), without a single 403. Then one rule is removed and the missing
  permission shows up as a 403 and a cache that never gets its Job.
"""

from __future__ import annotations

import base64
import copy
import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from modelcache_devcluster.binaries import Binaries
from modelcache_devcluster.cluster import LocalCluster
from modelcache_operator.builders import naming
from tests.integration.test_modelcache import simple_cache
from tests.support.downloader_role import REVISION_A, downloader_reporter, publish
from tests.support.kube import Cluster, wait_for
from tests.support.operator import WEBHOOK_CONFIG_NAME, OperatorProcess
from tests.support.serviceaccount import serviceaccount_kubeconfig

pytestmark = pytest.mark.integration

CHART = Path(__file__).resolve().parents[2] / "charts" / "modelcache-operator"
CRD_NAME = "modelcaches.modelcache.dev"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")
WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


def helm(binaries: Binaries, cluster: LocalCluster, *args: str, check: bool = True) -> str:
    result = subprocess.run([str(binaries.helm), "--kubeconfig", cluster.state.kubeconfig, *args],
                            capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def render(binaries: Binaries, cluster: LocalCluster, release: str, namespace: str,
           *args: str) -> list[dict[str, Any]]:
    out = helm(binaries, cluster, "template", release, str(CHART), "--namespace", namespace, *args)
    return [d for d in yaml.safe_load_all(out) if d]


def kubectl_apply(cluster: LocalCluster, docs: list[dict[str, Any]], *flags: str) -> str:
    return cluster.kubectl("apply", *flags, "-f", "-", input_text=yaml.safe_dump_all(docs))


def create_namespace(k8s: Cluster, name: str) -> None:
    k8s.core.create_namespace({"metadata": {"name": name}})


def delete_quietly(delete: Any, *args: Any) -> None:
    try:
        delete(*args)
    except ApiException as error:
        if error.status != 404:
            raise


def test_helm_install_and_uninstall(k8s: Cluster, local_cluster: LocalCluster, binaries: Binaries) -> None:
    release, namespace = f"h{uuid.uuid4().hex[:6]}", f"mc-helm-{uuid.uuid4().hex[:6]}"
    create_namespace(k8s, namespace)
    # The session applied the CRD with kubectl; these labels let Helm adopt it (the README documents this).
    local_cluster.kubectl("label", "--overwrite", "crd", CRD_NAME, "app.kubernetes.io/managed-by=Helm")
    local_cluster.kubectl("annotate", "--overwrite", "crd", CRD_NAME, f"meta.helm.sh/release-name={release}",
                          f"meta.helm.sh/release-namespace={namespace}")
    try:
        out = helm(binaries, local_cluster, "install", release, str(CHART), "--namespace", namespace,
                   "--wait", "--timeout", "120s")
        assert "STATUS: deployed" in out and "kubectl get mc" in out  # NOTES.txt
        deployment = k8s.apps.read_namespaced_deployment(f"{release}-modelcache-operator", namespace)
        assert deployment.status.available_replicas == 1
        crd = local_cluster.kubectl("get", "crd", CRD_NAME, "-o", "yaml")
        assert "helm.sh/resource-policy: keep" in crd
        secret = k8s.core.read_namespaced_secret(f"{release}-modelcache-operator-webhook-tls", namespace)
        # An upgrade reuses the chart-generated CA (lookup) instead of rotating it.
        helm(binaries, local_cluster, "upgrade", release, str(CHART), "--namespace", namespace,
             "--set", "operator.resyncSeconds=45")
        upgraded = k8s.core.read_namespaced_secret(secret.metadata.name, namespace)
        assert upgraded.data == secret.data
        mutating = local_cluster.kubectl("get", "mutatingwebhookconfiguration",
                                         f"{release}-modelcache-operator", "-o", "yaml")
        assert secret.data["ca.crt"] in mutating
    finally:
        helm(binaries, local_cluster, "uninstall", release, "--namespace", namespace, "--wait", check=False)
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        leftover = local_cluster.kubectl("get", kind, "-o", "name")
        assert f"{release}-modelcache-operator" not in leftover, f"{kind} left behind by uninstall"
    assert local_cluster.kubectl("get", "crd", CRD_NAME, "-o", "name").strip(), "uninstall deleted the CRD"
    k8s.core.delete_namespace(namespace)


@pytest.mark.parametrize("values", [
    [],
    ["--set", "operator.watchNamespaces={default,llm}", "--set", "image.tag=9.9.9",
     "--set", "webhook.excludeNamespaces={gpu-operator}"],
])
def test_everything_rendered_passes_server_dry_run(k8s: Cluster, local_cluster: LocalCluster,
                                                   binaries: Binaries, values: list[str]) -> None:
    namespace = f"mc-dry-{uuid.uuid4().hex[:6]}"
    create_namespace(k8s, namespace)
    docs = render(binaries, local_cluster, "dry", namespace, *values)
    assert len(docs) >= 10
    out = kubectl_apply(local_cluster, docs, "--dry-run=server", "--server-side", "--force-conflicts")
    assert out.count("(server dry run)") == len(docs), out
    k8s.core.delete_namespace(namespace)


# ----- RBAC proof -----


@contextmanager
def chart_identity(k8s: Cluster, cluster: LocalCluster, binaries: Binaries, workdir: Path,
                   drop: tuple[str, str, str] | None = None) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    """Applies the chart's ServiceAccount, ClusterRole and binding (optionally without one verb, as
    (apiGroup, resource, verb)) and yields a kubeconfig for that ServiceAccount plus the rendered chart."""
    release, namespace = f"r{uuid.uuid4().hex[:6]}", f"mc-rbac-{uuid.uuid4().hex[:6]}"
    create_namespace(k8s, namespace)
    docs = render(binaries, cluster, release, namespace)
    identity = copy.deepcopy([d for d in docs if d["kind"] in RBAC_KINDS])
    if drop:
        role = next(d for d in identity if d["kind"] == "ClusterRole")
        group, resource, verb = drop
        rule = next(r for r in role["rules"] if group in r["apiGroups"] and resource in r["resources"])
        assert verb in rule["verbs"], f"the chart does not grant {verb} on {resource}"
        rule["verbs"].remove(verb)
    kubectl_apply(cluster, identity)
    account = next(d for d in identity if d["kind"] == "ServiceAccount")["metadata"]["name"]
    try:
        yield serviceaccount_kubeconfig(k8s, cluster, namespace, account, workdir / "sa.kubeconfig"), docs
    finally:
        for doc in identity:
            if doc["kind"] != "ServiceAccount":
                cluster.kubectl("delete", doc["kind"], doc["metadata"]["name"], "--ignore-not-found")
        k8s.core.delete_namespace(namespace)


def local_webhooks(docs: list[dict[str, Any]], operator: OperatorProcess, suffix: str) -> list[dict[str, Any]]:
    """The chart's webhook configurations, unchanged except that they call the local operator process."""
    ca_bundle = base64.b64encode(operator.cert.read_bytes()).decode()
    configs = []
    for config in copy.deepcopy([d for d in docs if d["kind"] in WEBHOOK_KINDS]):
        config["metadata"] = {"name": f"{config['metadata']['name']}-{suffix}"}
        for hook in config["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": operator.webhook_url(path), "caBundle": ca_bundle}
        configs.append(config)
    return configs


@pytest.fixture
def only_operator(k8s: Cluster) -> None:
    """The session operator (full admin) would reconcile this test's caches too and hide missing rules."""
    admission = kubernetes.client.AdmissionregistrationV1Api(k8s.client)
    names = [c.metadata.name for c in admission.list_mutating_webhook_configuration().items]
    assert WEBHOOK_CONFIG_NAME not in names, (
        "the session `operator` fixture is running; run the RBAC tests before tests that use it "
        "(pytest collects test_helm_install.py before test_modelcache.py)")


# A 403 as the client reports it ("(403)", "HTTP 403"), in an access log ('" 403 '), or in words; never a bare
# "403", which also turns up in timestamps such as 00:58:36,403.
DENIED = re.compile(r'\(403\)|HTTP 403|" 403 |[Ff]orbidden|Not enough permissions')


def forbidden_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if DENIED.search(line)]


def start_operator(kubeconfig: Path, workdir: Path) -> OperatorProcess:
    operator = OperatorProcess(str(kubeconfig), workdir, manage_webhooks=False)
    operator.start()
    return operator


def test_operator_works_with_only_the_chart_clusterrole(k8s: Cluster, local_cluster: LocalCluster,
                                                        binaries: Binaries, namespace: str, tmp_path: Path,
                                                        only_operator: None) -> None:
    admission = kubernetes.client.AdmissionregistrationV1Api(k8s.client)
    with chart_identity(k8s, local_cluster, binaries, tmp_path) as (kubeconfig, docs):
        operator = start_operator(kubeconfig, tmp_path / "operator")
        webhooks = local_webhooks(docs, operator, uuid.uuid4().hex[:6])
        try:
            kubectl_apply(local_cluster, webhooks)
            # Through the chart's validating webhook (failurePolicy Fail): the operator must answer it.
            k8s.create_cache(namespace, simple_cache("rbac"))
            job = wait_for(lambda: next(iter(k8s.jobs(namespace, "rbac")), None), 60, describe="the download Job",
                           diagnostics=operator.log_tail)
            publish(downloader_reporter(k8s, local_cluster, namespace, "rbac"), job.metadata.name)
            ready = k8s.wait_phase(namespace, "rbac", "Ready", diagnostics=operator.log_tail)
            assert ready["status"]["resolvedRevision"] == REVISION_A

            pod = k8s.core.create_namespaced_pod(namespace, {
                "metadata": {"name": "server", "labels": {"modelcache.dev/inject": "true"},
                             "annotations": {"modelcache.dev/caches": "rbac"}},
                "spec": {"containers": [{"name": "vllm", "image": "vllm"}]},
            })
            volumes = {v.name: v for v in pod.spec.volumes}
            assert volumes["mc-rbac"].persistent_volume_claim.claim_name == naming.pvc_name("rbac")
            assert pod.metadata.annotations["modelcache.dev/injected"] == "true"

            k8s.core.delete_namespaced_pod("server", namespace, grace_period_seconds=0)
            k8s.delete_cache(namespace, "rbac")
            wait_for(lambda: k8s.get_cache(namespace, "rbac") is None, 60, describe="finalized deletion",
                     diagnostics=operator.log_tail)
            assert not forbidden_lines(operator.log_text()), "\n".join(forbidden_lines(operator.log_text()))
        finally:
            for config in webhooks:
                delete = (admission.delete_mutating_webhook_configuration
                          if config["kind"] == WEBHOOK_KINDS[0] else admission.delete_validating_webhook_configuration)
                delete_quietly(delete, config["metadata"]["name"])
            operator.stop()


# Each removed verb shows up as a 403 naming what was refused; the cache never gets a Job when the Job (or
# anything before it) could not be created.
MISSING_RULES = {
    "jobs-create": (("batch", "jobs", "create"), 'cannot create resource \\"jobs\\" in API group \\"batch\\"'),
    "pvcs-create": (("", "persistentvolumeclaims", "create"),
                    'cannot create resource \\"persistentvolumeclaims\\"'),
    # RBAC escalation check: the downloader Role grants get on modelcaches/status, so the operator needs it.
    "status-get": (("modelcache.dev", "modelcaches/status", "get"),
                   "attempting to grant RBAC permissions not currently held"),
}


@pytest.mark.parametrize("case", sorted(MISSING_RULES))
def test_a_missing_rule_fails_loudly(k8s: Cluster, local_cluster: LocalCluster, binaries: Binaries,
                                     namespace: str, tmp_path: Path, only_operator: None, case: str) -> None:
    drop, fragment = MISSING_RULES[case]
    with chart_identity(k8s, local_cluster, binaries, tmp_path, drop=drop) as (kubeconfig, _):
        operator = start_operator(kubeconfig, tmp_path / "operator")
        try:
            k8s.create_cache(namespace, simple_cache("denied"))
            wait_for(lambda: fragment in operator.log_text(), 60, describe=f"{fragment!r} in the operator log",
                     diagnostics=operator.log_tail)
            assert "(403)" in operator.log_text()
            assert k8s.jobs(namespace, "denied") == []
            phase = ((k8s.get_cache(namespace, "denied") or {}).get("status") or {}).get("phase")
            assert phase not in ("Downloading", "Ready"), phase
            k8s.delete_cache(namespace, "denied")
            wait_for(lambda: k8s.get_cache(namespace, "denied") is None, 60, describe="finalized deletion",
                     diagnostics=operator.log_tail)
        finally:
            operator.stop()
