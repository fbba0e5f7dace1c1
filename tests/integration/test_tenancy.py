"""Tenancy, tried as a team member would: a ServiceAccount (a real token) with rights to ModelCaches and Pods
in its own namespace and nothing else. Every attempt to reach storage, a node, a Secret or another namespace
is refused with a message naming the reason, and a deletion never removes files."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import kubernetes
import pytest

from modelcache_devcluster.cluster import LocalCluster
from modelcache_operator.api import v1alpha2 as api
from modelcache_operator.builders import naming
from tests.support.kube import OPERATOR_NAMESPACE, Cluster, refusal, wait_for
from tests.support.operator import OperatorProcess
from tests.support.serviceaccount import serviceaccount_client

pytestmark = pytest.mark.integration
SOURCE = {"huggingface": {"repo": "Qwen/Qwen3-0.6B", "revision": "main"}}


@dataclass
class Team:
    namespace: str
    k8s: Cluster  # as the team's ServiceAccount
    store: str  # a store the namespace may use
    other_store: str  # a store it may not

    def cache(self, name: str, **spec: Any) -> dict[str, Any]:
        return {"apiVersion": api.API_VERSION, "kind": "ModelCache", "metadata": {"name": name},
                "spec": {"source": SOURCE, "store": self.store, **spec}}


def nfs_store(name: str, selector: dict[str, Any], path: str) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": "ModelStore", "metadata": {"name": name},
            "spec": {"nfs": {"server": "10.0.0.2", "path": path}, "namespaceSelector": selector}}


@pytest.fixture
def team(k8s: Cluster, namespace: str, operator: OperatorProcess, local_cluster: LocalCluster) -> Iterator[Team]:
    tag = uuid.uuid4().hex[:6]
    allowed, other = f"team-{tag}", f"other-{tag}"
    k8s.create_store(nfs_store(allowed, {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                               f"/exports/{tag}/team"))
    k8s.create_store(nfs_store(other, {"matchLabels": {"kubernetes.io/metadata.name": "somebody-else"}},
                               f"/exports/{tag}/other"))
    k8s.core.create_namespaced_service_account(namespace, {"metadata": {"name": "team"}})
    k8s.rbac.create_namespaced_role(namespace, {"metadata": {"name": "team"}, "rules": [
        {"apiGroups": [api.GROUP], "resources": ["modelcaches"], "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}]})
    k8s.rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "team"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                                  "name": "team"},
        "subjects": [{"kind": "ServiceAccount", "name": "team", "namespace": namespace}]})
    k8s.wait_store_ready(allowed)
    yield Team(namespace, Cluster(serviceaccount_client(k8s, local_cluster, namespace, "team")), allowed, other)
    k8s.delete_store(allowed)
    k8s.delete_store(other)


def create_cache(team: Team, manifest: dict[str, Any], strict: bool = False) -> Any:
    extra = {"field_validation": "Strict"} if strict else {}
    return team.k8s.custom.create_namespaced_custom_object(api.GROUP, api.VERSION, team.namespace, api.PLURAL,
                                                           manifest, **extra)


def test_a_team_reaches_no_storage_node_or_secret_beyond_its_grant(team: Team, k8s: Cluster) -> None:
    refusals = {
        "create a ModelStore": refusal(lambda: team.k8s.create_store(
            nfs_store("mine", {}, "/"))),
        "create a PersistentVolume on /etc": refusal(lambda: team.k8s.core.create_persistent_volume({
            "metadata": {"name": f"etc-{team.namespace}"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                     "hostPath": {"path": "/etc"}}})),
        "a store not allowed for the namespace": refusal(lambda: create_cache(team, {
            **team.cache("a"), "spec": {"source": SOURCE, "store": team.other_store}})),
        "a store that does not exist": refusal(lambda: create_cache(team, {
            **team.cache("b"), "spec": {"source": SOURCE, "store": "no-such-store"}})),
        "spec.storage with a host path": refusal(lambda: create_cache(team, team.cache(
            "c", storage={"hostPath": {"path": "/etc"}}))),
        "spec.storage with an NFS export": refusal(lambda: create_cache(team, team.cache(
            "d", storage={"nfs": {"server": "10.0.0.9", "path": "/"}}))),
        "a storage field outside the schema": refusal(lambda: create_cache(team, team.cache(
            "e", hostPath={"path": "/etc"}), strict=True)),
        "a revision that climbs out of its folder": refusal(lambda: create_cache(team, {
            **team.cache("f"), "spec": {"source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B",
                                                                   "revision": "main/../../../etc"}},
                                        "store": team.store}})),
        "a repo that climbs out of its folder": refusal(lambda: create_cache(team, {
            **team.cache("g"), "spec": {"source": {"huggingface": {"repo": "../etc"}}, "store": team.store}})),
        "a mount path that climbs": refusal(lambda: create_cache(team, team.cache(
            "h", serving={"mountPath": "/models/../etc"}))),
        "read the operator's Secrets": refusal(lambda: team.k8s.core.list_namespaced_secret(OPERATOR_NAMESPACE)),
        "a pod that names another namespace's cache": refusal(lambda: team.k8s.core.create_namespaced_pod(
            team.namespace, {"metadata": {"name": "cross", "labels": {"modelcache.dev/inject": "true"},
                                          "annotations": {"modelcache.dev/caches": "kube-system/owned"}},
                             "spec": {"containers": [{"name": "c", "image": "busybox"}]}})),
    }
    create_cache(team, team.cache("owned"))  # the one legitimate cache, for the status forgery above
    refusals["forge a cache's status"] = refusal(lambda: team.k8s.custom.patch_namespaced_custom_object_status(
        api.GROUP, api.VERSION, team.namespace, api.PLURAL, "owned", {"status": {"phase": "Ready"}}))
    refusals["move a cache to another store"] = refusal(lambda: team.k8s.patch_cache(
        team.namespace, "owned", {"spec": {"store": team.other_store}}))
    expected = {
        "create a ModelStore": (403, 'cannot create resource \\"modelstores\\"'),
        "create a PersistentVolume on /etc": (403, 'cannot create resource \\"persistentvolumes\\"'),
        "a store not allowed for the namespace": (422, f'does not allow namespace \\"{team.namespace}\\"'),
        "a store that does not exist": (422, 'ModelStore \\"no-such-store\\" (spec.store) does not exist'),
        "spec.storage with a host path": (422, "spec.storage was removed in v1alpha2"),
        "spec.storage with an NFS export": (422, "spec.storage was removed in v1alpha2"),
        "a storage field outside the schema": (400, 'unknown field \\"spec.hostPath\\"'),
        "a revision that climbs out of its folder": (422, "must not contain '..' path segments"),
        "a repo that climbs out of its folder": (422, "spec.source.huggingface.repo"),
        "a mount path that climbs": (422, "must not contain '..' path segments"),
        "forge a cache's status": (403, 'cannot patch resource \\"modelcaches/status\\"'),
        "read the operator's Secrets": (403, 'cannot list resource \\"secrets\\"'),
        "a pod that names another namespace's cache": (403, "a pod cannot use another namespace's cache"),
        "move a cache to another store": (422, "spec.store is immutable"),
    }
    assert len(expected) >= 10
    for what, (status, says) in expected.items():
        got_status, body = refusals[what]
        assert (got_status, says in body) == (status, True), f"{what}: {got_status} {body}"


def test_a_hostpath_store_is_refused_while_the_chart_disables_them(k8s: Cluster, operator: OperatorProcess) -> None:
    status, body = refusal(lambda: k8s.create_store({
        "apiVersion": api.API_VERSION, "kind": "ModelStore", "metadata": {"name": f"host-{uuid.uuid4().hex[:6]}"},
        "spec": {"hostPath": {"path": "/etc"}, "namespaceSelector": {}}}))
    assert status == 422 and "spec.hostPath" in body and "stores.allowHostPath" in body, body


def test_a_pod_cannot_mount_another_namespaces_claim(team: Team, k8s: Cluster, namespace: str) -> None:
    """Claims are namespaced: a claim name from another namespace resolves to nothing here, and the pod never
    starts, with the scheduler saying why."""
    other = f"other-{uuid.uuid4().hex[:6]}"
    k8s.ensure_namespace(other)
    try:
        claim = naming.pvc_name("shared")
        k8s.core.create_namespaced_persistent_volume_claim(other, {
            "metadata": {"name": claim}, "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "none",
                                                  "resources": {"requests": {"storage": "1Gi"}}}})
        team.k8s.core.create_namespaced_pod(namespace, {
            "metadata": {"name": "borrow"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}],
                     "volumes": [{"name": "m", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}]}})

        def why() -> str | None:
            events = [e.message for e in k8s.events(namespace)
                      if e.involved_object.name == "borrow" and e.reason == "FailedScheduling"]
            return next(iter(events), None)
        message = wait_for(why, 60, describe="the scheduler's refusal")
        assert f'persistentvolumeclaim "{claim}" not found' in message
        assert team.k8s.core.read_namespaced_pod("borrow", namespace).spec.node_name is None
    finally:
        k8s.core.delete_namespace(other)


def test_deleting_a_cache_never_removes_files(team: Team, k8s: Cluster, namespace: str) -> None:
    create_cache(team, team.cache("mine"))
    cache = wait_for(lambda: ((team.k8s.get_cache(namespace, "mine") or {}).get("status") or {}).get("downloadRef")
                     and team.k8s.get_cache(namespace, "mine"), 30, describe="the cache's download")
    assert cache is not None
    ref = cache["status"]["downloadRef"]
    team.k8s.delete_cache(namespace, "mine")
    wait_for(lambda: team.k8s.get_cache(namespace, "mine") is None, 30, describe="the cache deleted")
    assert k8s.get_download(ref["namespace"], ref["name"]) is not None  # the folder's record stays
    cleanup = k8s.batch.list_job_for_all_namespaces(
        label_selector=f"modelcache.dev/role=cleanup,modelcache.dev/download={ref['name']}").items
    assert cleanup == []
    pv = naming.pv_name(namespace, "mine")
    wait_for(lambda: not k8s.core.list_persistent_volume(field_selector=f"metadata.name={pv}").items, 30,
             describe="its namespace's PV removed")


def test_the_team_token_really_is_limited(team: Team, local_cluster: LocalCluster) -> None:
    """The refusals above come from the token's own rights, not from a client-side check."""
    review = kubernetes.client.AuthorizationV1Api(team.k8s.client).create_self_subject_rules_review(
        {"spec": {"namespace": team.namespace}})
    resources = {r for rule in review.status.resource_rules for r in rule.resources or []}
    assert {"modelcaches", "pods"} <= resources
    assert not resources & {"persistentvolumes", "persistentvolumeclaims", "secrets", "modelstores", "jobs"}
