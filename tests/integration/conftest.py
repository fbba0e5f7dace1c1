"""Session fixtures: one real control plane per test run, the CRD, the operator process, and a namespace
per test. Nothing here skips: a component that cannot start fails the run with its log tail."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from modelcache_devcluster.binaries import Binaries, ensure_binaries
from modelcache_devcluster.cluster import LocalCluster
from tests.support.kube import OPERATOR_NAMESPACE, Cluster, wait_for
from tests.support.operator import WEBHOOK_CONFIG_NAME, OperatorProcess, delete_webhook_configurations
from tests.support.real_node import build_images
from tests.support.real_node_flow import RealNodeCluster, client_for

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "crds"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The RBAC proofs (fixture `only_operator`) run before anything starts the full-admin session operator,
    which would reconcile their objects too and hide a missing rule."""
    items.sort(key=lambda item: "only_operator" not in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def binaries() -> Binaries:
    return ensure_binaries()


@pytest.fixture(scope="session")
def local_cluster(binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(binaries, tmp_path_factory.mktemp("cluster"))
    cluster.up()
    yield cluster
    cluster.down()


@pytest.fixture(scope="session")
def api_client(local_cluster: LocalCluster) -> kubernetes.client.ApiClient:
    client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=local_cluster.state.kubeconfig)
    return client


@pytest.fixture(scope="session")
def k8s(api_client: kubernetes.client.ApiClient, local_cluster: LocalCluster) -> Cluster:
    local_cluster.install_crds(CRD_DIR)
    cluster = Cluster(api_client)
    cluster.ensure_namespace(OPERATOR_NAMESPACE)
    return cluster


def _webhook_installed(k8s: Cluster) -> bool:
    admission = kubernetes.client.AdmissionregistrationV1Api(k8s.client)
    try:
        config = admission.read_mutating_webhook_configuration(WEBHOOK_CONFIG_NAME)
    except ApiException:
        return False
    return bool(config.webhooks)


@pytest.fixture(scope="session")
def operator(k8s: Cluster, local_cluster: LocalCluster,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    process = OperatorProcess(local_cluster.state.kubeconfig, tmp_path_factory.mktemp("operator"))
    process.start()
    wait_for(lambda: _webhook_installed(k8s), 30, describe="the operator's webhook configurations",
             diagnostics=process.log_tail)
    yield process
    process.stop()
    delete_webhook_configurations(k8s.client)


@pytest.fixture(scope="session")
def real_cluster(binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNodeCluster]:
    """A second control plane with one real kubelet node (containerd + runc) beside the kwok nodes, its images
    built from this repository. Shared by the modules whose pods must really run."""
    images = build_images()
    workdir = tmp_path_factory.mktemp("real-node")
    cluster = LocalCluster(binaries, workdir / "cluster", real_node=True,
                           node_images=[images[name].archive for name in ("pause", "operator", "serving")])
    cluster.up(timeout=180)
    try:
        yield RealNodeCluster(cluster, client_for(cluster), workdir)
    finally:
        cluster.down()


@pytest.fixture
def namespace(k8s: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    k8s.core.create_namespace({"metadata": {"name": name}})
    wait_for(lambda: k8s.core.list_namespaced_service_account(name, field_selector="metadata.name=default").items,
             30, describe=f"default ServiceAccount in {name}")
    yield name
    k8s.core.delete_namespace(name)
