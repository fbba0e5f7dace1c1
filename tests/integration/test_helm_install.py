"""The Helm chart against the real control plane.

- `helm install` succeeds (kwok runs the operator pod as a fake, so no image is pulled) and every rendered
  object passes `kubectl apply --dry-run=server`; uninstall removes the webhooks and keeps the three CRDs.
- RBAC proof: the operator runs as the chart's ServiceAccount with only the chart's ClusterRole and its
  leader-election Role (and the chart's MODELCACHE_NAMESPACE and Lease name), takes a ModelStore and a
  ModelCache to Ready through validating webhooks shaped exactly like the chart's (pointed at the local
  process), mutates an opted-in pod, and cleans up after both, without a single 403. Then one rule is
  removed and the missing permission shows up as a 403 naming it, with the reconcile stopped right where
  that permission was needed.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from modelcache_devcluster.binaries import Binaries
from modelcache_devcluster.cluster import LocalCluster
from modelcache_operator.api import v1alpha2 as api
from modelcache_operator.api.names import LABEL_STORE
from modelcache_operator.builders import compile_cache, naming
from tests.support.downloader_role import REVISION_A, download_job, downloader_reporter, publish
from tests.support.kube import Cluster, nfs_store_manifest, wait_for
from tests.support.operator import WEBHOOK_CONFIG_NAME, OperatorProcess
from tests.support.serviceaccount import serviceaccount_kubeconfig

pytestmark = pytest.mark.integration

CHART = Path(__file__).resolve().parents[2] / "charts" / "modelcache-operator"
CRD_NAMES = tuple(f"{plural}.{api.GROUP}" for plural in (api.STORE_PLURAL, api.PLURAL, api.DOWNLOAD_PLURAL))
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
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
    # The session applied the CRDs with kubectl; these labels let Helm adopt them (the chart README's loop).
    for crd in CRD_NAMES:
        local_cluster.kubectl("label", "--overwrite", "crd", crd, "app.kubernetes.io/managed-by=Helm")
        local_cluster.kubectl("annotate", "--overwrite", "crd", crd, f"meta.helm.sh/release-name={release}",
                              f"meta.helm.sh/release-namespace={namespace}")
    try:
        out = helm(binaries, local_cluster, "install", release, str(CHART), "--namespace", namespace,
                   "--wait", "--timeout", "120s")
        assert "STATUS: deployed" in out and "kubectl get mc" in out  # NOTES.txt
        deployment = k8s.apps.read_namespaced_deployment(f"{release}-modelcache-operator", namespace)
        assert deployment.status.available_replicas == 2
        for crd in CRD_NAMES:
            adopted = json.loads(local_cluster.kubectl("get", "crd", crd, "-o", "json"))["metadata"]
            assert adopted["annotations"]["helm.sh/resource-policy"] == "keep", crd
            assert adopted["annotations"]["meta.helm.sh/release-name"] == release, crd
        secret = k8s.core.read_namespaced_secret(f"{release}-modelcache-operator-webhook-tls", namespace)
        # An upgrade reuses the chart-generated CA (lookup) instead of rotating it.
        helm(binaries, local_cluster, "upgrade", release, str(CHART), "--namespace", namespace,
             "--set", "operator.resyncSeconds=45")
        upgraded = k8s.core.read_namespaced_secret(secret.metadata.name, namespace)
        assert upgraded.data == secret.data
        hooks = {}
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            config = json.loads(local_cluster.kubectl("get", kind, f"{release}-modelcache-operator", "-o", "json"))
            hooks[kind] = [hook["name"] for hook in config["webhooks"]]
            assert {hook["clientConfig"]["caBundle"] for hook in config["webhooks"]} == {secret.data["ca.crt"]}
        assert hooks == {"mutatingwebhookconfiguration": ["inject-pods.modelcache.dev"],
                         "validatingwebhookconfiguration": ["validate-modelcaches.modelcache.dev",
                                                            "validate-modelstores.modelcache.dev"]}
    finally:
        helm(binaries, local_cluster, "uninstall", release, "--namespace", namespace, "--wait", check=False)
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        leftover = local_cluster.kubectl("get", kind, "-o", "name")
        assert f"{release}-modelcache-operator" not in leftover, f"{kind} left behind by uninstall"
    for crd in CRD_NAMES:
        assert local_cluster.kubectl("get", "crd", crd, "-o", "name").strip(), f"uninstall deleted the CRD {crd}"
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


@dataclass(frozen=True)
class ChartIdentity:
    kubeconfig: Path  # the chart's ServiceAccount
    namespace: str  # the release namespace: the chart's MODELCACHE_NAMESPACE
    docs: list[dict[str, Any]]  # the rendered chart


@contextmanager
def chart_identity(k8s: Cluster, cluster: LocalCluster, binaries: Binaries, workdir: Path,
                   drop: tuple[str, str, str] | None = None) -> Iterator[ChartIdentity]:
    """Applies the chart's ServiceAccount, ClusterRole and binding (optionally without one verb, as
    (apiGroup, resource, verb)) and yields a kubeconfig for that ServiceAccount, its namespace and the
    rendered chart."""
    release, namespace = f"r{uuid.uuid4().hex[:6]}", f"mc-rbac-{uuid.uuid4().hex[:6]}"
    create_namespace(k8s, namespace)
    docs = render(binaries, cluster, release, namespace)
    identity = copy.deepcopy([d for d in docs if d["kind"] in RBAC_KINDS])
    if drop:
        role = next(d for d in identity if d["kind"] == "ClusterRole")
        group, resource, verb = drop
        rule = next(r for r in role["rules"] if group in r["apiGroups"] and resource in r["resources"])
        assert rule["resources"] == [resource], f"{resource} shares a rule: dropping {verb} would take more"
        assert verb in rule["verbs"], f"the chart does not grant {verb} on {resource}"
        rule["verbs"].remove(verb)
    kubectl_apply(cluster, identity)
    account = next(d for d in identity if d["kind"] == "ServiceAccount")["metadata"]["name"]
    try:
        yield ChartIdentity(serviceaccount_kubeconfig(k8s, cluster, namespace, account, workdir / "sa.kubeconfig"),
                            namespace, docs)
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
    """The session operator (full admin) would reconcile this test's objects too and hide missing rules."""
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


def refusals(log: str) -> list[str]:
    """The response bodies of the 403s in an operator log (the client's exceptions print them on one line)."""
    return [line for line in log.splitlines() if '"code":403' in line]


def chart_lease_name(identity: ChartIdentity) -> str:
    """The one Lease the chart's leader-election Role lets the operator get and update."""
    [deployment] = [d for d in identity.docs if d["kind"] == "Deployment"]
    chart_env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    return str(chart_env["MODELCACHE_LEASE_NAME"])


def start_operator(identity: ChartIdentity, workdir: Path) -> OperatorProcess:
    operator = OperatorProcess(str(identity.kubeconfig), workdir, manage_webhooks=False,
                               extra_env={"MODELCACHE_NAMESPACE": identity.namespace,
                                          "MODELCACHE_LEASE_NAME": chart_lease_name(identity)})
    operator.start()
    return operator


def cache_manifest(name: str, store: str) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name},
            "spec": {"source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B"}}, "store": store}}


def gated_pod_while_downloading(k8s: Cluster, cluster: LocalCluster, namespace: str, cache: str,
                                operator: OperatorProcess) -> tuple[str, Any, Any]:
    """A pod admitted behind the default policy's scheduling gate while `cache` downloads REVISION_A:
    (its name, the download's reporter, the download Job)."""
    _, download = k8s.wait_download(namespace, cache, diagnostics=operator.log_tail)
    job = download_job(k8s, download, diagnostics=operator.log_tail)
    reporter = downloader_reporter(k8s, cluster, download["metadata"]["namespace"], download["metadata"]["name"])
    reporter.send(api.DownloadReport(jobName=job.metadata.name, state="Downloading", requestedRevision="main",
                                     resolvedRevision=REVISION_A, bytesDone=1, bytesTotal=100), force=True)
    pod = {"metadata": {"name": "gated", "labels": {"modelcache.dev/inject": "true"},
                        "annotations": {"modelcache.dev/caches": cache}},
           "spec": {"containers": [{"name": "vllm", "image": "vllm"}]}}
    wait_for(lambda: pinned_revisions(k8s, namespace, pod) == {cache: REVISION_A}, 30,
             describe="the webhook pinning the revision being downloaded", diagnostics=operator.log_tail)
    created = k8s.core.create_namespaced_pod(namespace, pod)
    assert [g.name for g in created.spec.scheduling_gates] == [f"modelcache.dev/cache-{cache}"]
    return "gated", reporter, job


def store_jobs(k8s: Cluster, store: str) -> list[Any]:
    return [j for j in k8s.download_jobs() if j.metadata.labels.get(LABEL_STORE) == store]


def delete_store(k8s: Cluster, store: str, operator: OperatorProcess) -> None:
    """With the operator still running: its ModelDownloads go with the store, and their finalizers must be
    removed by the operator, or the release namespace could never be deleted."""
    k8s.delete_store(store)
    wait_for(lambda: k8s.get_store(store) is None and k8s.downloads(store) == [], 60,
             describe=f"ModelStore {store} and its ModelDownloads deleted", diagnostics=operator.log_tail)


def test_operator_works_with_only_the_chart_clusterrole(k8s: Cluster, local_cluster: LocalCluster,
                                                        binaries: Binaries, namespace: str, tmp_path: Path,
                                                        only_operator: None) -> None:
    admission = kubernetes.client.AdmissionregistrationV1Api(k8s.client)
    with chart_identity(k8s, local_cluster, binaries, tmp_path) as identity:
        # No Secret access at all; SecretNotFound comes from the download pod, proven under this same
        # ClusterRole on a real kubelet by tests/integration/test_secrets_real_node.py.
        cluster_role = next(d for d in identity.docs if d["kind"] == "ClusterRole")
        assert [r for r in cluster_role["rules"] if {"secrets", "*"} & set(r["resources"])] == []
        operator = start_operator(identity, tmp_path / "operator")
        webhooks = local_webhooks(identity.docs, operator, uuid.uuid4().hex[:6])
        store = f"rbac-{uuid.uuid4().hex[:6]}"
        try:
            kubectl_apply(local_cluster, webhooks)
            # Through the chart's validating webhooks (failurePolicy Fail): the operator answers them from its
            # views of ModelStores and Namespaces, which it may only list and watch. Dry runs until the
            # apiserver has loaded the configuration, so nothing is created without the webhook.
            host_path = {**nfs_store_manifest(f"host-{store}", [namespace]), "spec": {
                "hostPath": {"path": "/var/lib/modelcache"}, "namespaceSelector": {}}}
            refused = wait_for(lambda: webhook_refusal(lambda: k8s.custom.create_cluster_custom_object(
                api.GROUP, api.VERSION, api.STORE_PLURAL, host_path, dry_run="All")), 30,
                describe="the chart's ModelStore webhook refusing a hostPath store", diagnostics=operator.log_tail)
            assert "spec.hostPath: this operator does not allow hostPath stores" in refused, refused
            missing = webhook_refusal(lambda: k8s.custom.create_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, cache_manifest("rbac", store), dry_run="All"))
            assert missing is not None and f'ModelStore \\"{store}\\" (spec.store) does not exist' in missing, missing
            k8s.create_store(nfs_store_manifest(store, [namespace], compileCache={"enabled": True}))
            ready_store = k8s.wait_store_ready(store, 60)
            assert ready_store["status"]["backend"] == "nfs"
            writer = k8s.core.read_namespaced_persistent_volume_claim(naming.store_claim_name(store),
                                                                      identity.namespace)
            assert writer.status.phase == "Bound"
            k8s.create_cache(namespace, cache_manifest("rbac", store))
            gated, reporter, job = gated_pod_while_downloading(k8s, local_cluster, namespace, "rbac", operator)
            publish(reporter, job.metadata.name)
            ready = k8s.wait_phase(namespace, "rbac", "Ready", diagnostics=operator.log_tail)
            assert ready["status"]["resolvedRevision"] == REVISION_A
            # The chart's ClusterRole lets the operator remove its gate (pods: patch) ...
            wait_for(lambda: not k8s.core.read_namespaced_pod(gated, namespace).spec.scheduling_gates, 30,
                     describe="the scheduling gate removed by the operator", diagnostics=operator.log_tail)
            # ... and create the namespace's compile folder (a Job) and claim.
            named = wait_for(lambda: ((k8s.get_cache(namespace, "rbac") or {}).get("status") or {}).get(
                "compileCache"), 30, describe="the compile claim in the cache's status", diagnostics=operator.log_tail)
            assert named["pvcName"] == compile_cache.claim_names(namespace, store)[0]
            assert ready["status"]["downloadRef"]["namespace"] == identity.namespace
            [job] = store_jobs(k8s, store)
            assert job.metadata.namespace == identity.namespace
            # The downloader's Role (which published above): its own ModelDownload's status, nothing else.
            download = ready["status"]["downloadRef"]["name"]
            role = k8s.rbac.read_namespaced_role(naming.downloader_identity_name(download), identity.namespace)
            assert [(r.api_groups, r.resources, r.resource_names, sorted(r.verbs)) for r in role.rules] == [
                ([api.GROUP], [f"{api.DOWNLOAD_PLURAL}/status"], [download], ["get", "patch"])]

            server = {"metadata": {"name": "server", "labels": {"modelcache.dev/inject": "true"},
                                   "annotations": {"modelcache.dev/caches": "rbac"}},
                      "spec": {"containers": [{"name": "vllm", "image": "vllm"}]}}
            # The webhook reads the cache from its watch, a moment behind what the test just read: dry runs
            # until it pins the published revision.
            wait_for(lambda: pinned_revisions(k8s, namespace, server) == {"rbac": REVISION_A}, 15,
                     describe="the webhook pinning the published revision", diagnostics=operator.log_tail)
            pod = k8s.core.create_namespaced_pod(namespace, server)
            volumes = {v.name: v for v in pod.spec.volumes}
            assert volumes["mc-rbac"].persistent_volume_claim.claim_name == naming.pvc_name("rbac")
            assert pod.metadata.annotations["modelcache.dev/injected"] == "true"
            ref = ready["status"]["servedFrom"]
            assert json.loads(pod.metadata.annotations["modelcache.dev/downloads"]) == {
                "rbac": f"{ref['namespace']}/{ref['name']}"}

            k8s.core.delete_namespaced_pod("server", namespace, grace_period_seconds=0)
            k8s.core.delete_namespaced_pod(gated, namespace, grace_period_seconds=0)
            k8s.delete_cache(namespace, "rbac")
            wait_for(lambda: k8s.get_cache(namespace, "rbac") is None, 60, describe="finalized deletion",
                     diagnostics=operator.log_tail)
            delete_store(k8s, store, operator)
            assert not forbidden_lines(operator.log_text()), "\n".join(forbidden_lines(operator.log_text()))
        finally:
            for config in webhooks:
                delete = (admission.delete_mutating_webhook_configuration
                          if config["kind"] == WEBHOOK_KINDS[0] else admission.delete_validating_webhook_configuration)
                delete_quietly(delete, config["metadata"]["name"])
            k8s.delete_store(store)
            operator.stop()


def pinned_revisions(k8s: Cluster, namespace: str, pod: dict[str, Any]) -> dict[str, str] | None:
    """What the webhook pins for a dry-run create of `pod`; None while it refuses the pod."""
    try:
        admitted = k8s.core.create_namespaced_pod(namespace, pod, dry_run="All")
    except ApiException as error:
        if error.status != 403:
            raise
        return None
    pins: dict[str, str] = json.loads((admitted.metadata.annotations or {}).get("modelcache.dev/pinned-revisions",
                                                                                 "{}"))
    return pins


def webhook_refusal(create: Callable[[], Any]) -> str | None:
    """A validating webhook's refusal of `create` (a dry run), or None while the apiserver admits it without
    having loaded the webhook configuration yet."""
    try:
        create()
    except ApiException as error:
        if error.status == 422 and "denied the request" in str(error.body):
            return str(error.body)
        raise
    return None


@dataclass(frozen=True)
class MissingRule:
    drop: tuple[str, str, str]  # (apiGroup, resource, verb)
    refused: str  # in the operator's log, with "(403)"
    store_ready: bool  # the store's own reconcile does not need the rule
    download: bool  # the ModelDownload gets created (and then waits for a Job that never comes)
    in_cache_namespace: bool  # refused in the cache's namespace, else in the operator's (the downloads')
    namespaced: bool = True  # the refusal names the namespace (an RBAC escalation refusal does not)


# Each removed verb shows up as a 403 naming what was refused, and the reconciles stop right there: no
# download Job ever, and the cache's status shows how far it got.
MISSING_RULES = {
    "jobs-create": MissingRule(
        ("batch", "jobs", "create"), 'cannot create resource \\"jobs\\" in API group \\"batch\\"',
        store_ready=True, download=True, in_cache_namespace=False),
    # The store's writable claim and the cache's read-only one.
    "pvcs-create": MissingRule(
        ("", "persistentvolumeclaims", "create"), 'cannot create resource \\"persistentvolumeclaims\\"',
        store_ready=False, download=False, in_cache_namespace=True),
    "modeldownloads-create": MissingRule(
        ("modelcache.dev", "modeldownloads", "create"),
        'cannot create resource \\"modeldownloads\\" in API group \\"modelcache.dev\\"',
        store_ready=True, download=False, in_cache_namespace=False),
    # RBAC escalation check: the downloader Role grants get on modeldownloads/status, so the operator needs it.
    "status-get": MissingRule(
        ("modelcache.dev", "modeldownloads/status", "get"), "attempting to grant RBAC permissions not currently held",
        store_ready=True, download=True, in_cache_namespace=False, namespaced=False),
}


@pytest.mark.parametrize("case", sorted(MISSING_RULES))
def test_a_missing_rule_fails_loudly(k8s: Cluster, local_cluster: LocalCluster, binaries: Binaries,
                                     namespace: str, tmp_path: Path, only_operator: None, case: str) -> None:
    rule = MISSING_RULES[case]
    store = f"denied-{uuid.uuid4().hex[:6]}"
    with chart_identity(k8s, local_cluster, binaries, tmp_path, drop=rule.drop) as identity:
        operator = start_operator(identity, tmp_path / "operator")
        try:
            k8s.create_store(nfs_store_manifest(store, [namespace]))  # no webhooks registered: straight in
            if rule.store_ready:
                k8s.wait_store_ready(store, 60)
            else:
                # The store's own reconcile is refused first, so the operator knows the store before the cache.
                wait_for(lambda: any(rule.refused in body for body in refusals(operator.log_text())), 60,
                         describe="the store's reconcile refused", diagnostics=operator.log_tail)
            k8s.create_cache(namespace, cache_manifest("denied", store))
            # A refusal that came with or after the cache: in its namespace, or in the operator's.
            where = f'in the namespace \\"{namespace if rule.in_cache_namespace else identity.namespace}\\"'
            wait_for(lambda: any(rule.refused in body and (where in body or not rule.namespaced)
                                 for body in refusals(operator.log_text())), 60,
                     describe=f"{rule.refused!r} {where} in the operator log", diagnostics=operator.log_tail)
            log = operator.log_text()
            assert "(403)" in log
            # Every refusal is the dropped rule's: nothing else is missing.
            assert all(rule.refused in body for body in refusals(log)), "\n".join(refusals(log))
            time.sleep(operator.resync_seconds * 2)  # retries and resyncs change nothing
            assert store_jobs(k8s, store) == []
            cache = k8s.get_cache(namespace, "denied") or {}
            status = cache.get("status") or {}
            if rule.download:
                # The download exists, but its reconcile stops before its Job (and before its first status).
                [download] = k8s.downloads(store)
                assert not (download.get("status") or {}).get("phase"), download.get("status")
                assert status["phase"] == "Downloading"
                assert k8s.condition(cache, "Downloaded")["reason"] == "DownloadPending"
            else:
                # The cache's reconcile stops before it could write a status.
                assert k8s.downloads(store) == []
                assert status == {}, status
            if not rule.store_ready:
                assert not ((k8s.get_store(store) or {}).get("status") or {}).get("phase")
            k8s.delete_cache(namespace, "denied")
            wait_for(lambda: k8s.get_cache(namespace, "denied") is None, 60, describe="finalized deletion",
                     diagnostics=operator.log_tail)
            delete_store(k8s, store, operator)
        finally:
            k8s.delete_store(store)
            operator.stop()
