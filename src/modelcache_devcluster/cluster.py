"""Starts and stops the local control plane. Every process runs in its own session and is stopped by PID."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import node as real_node
from .binaries import Binaries, cache_root
from .images import SANDBOX_IMAGE
from .kwok import DEFAULT_NODES, KWOK_NODE_ANNOTATION, FakeNode, kwok_config
from .pki import make_client_cert, make_pki, write_kubeconfig
from .processes import alive, free_port, http_ok, https_ok, log_tail, stop_processes

# free_port too: the tests and benchmarks that start servers beside a cluster import it from here.
__all__ = ["ClusterState", "ComponentFailed", "LocalCluster", "free_port", "teardown"]

STATE_FILE = "cluster.json"


class ComponentFailed(RuntimeError):
    """A control-plane component did not become healthy; the message carries its log tail."""


@dataclass
class ClusterState:
    state_dir: str
    kubeconfig: str
    server: str
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    real_node: bool = False

    @property
    def pki(self) -> Path:
        return Path(self.state_dir) / "pki"

    def log_path(self, component: str) -> Path:
        return Path(self.state_dir) / "logs" / f"{component}.log"

    def save(self) -> None:
        (Path(self.state_dir) / STATE_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, state_dir: Path) -> ClusterState:
        return cls(**json.loads((state_dir / STATE_FILE).read_text()))


# Metadata level, one record per request (at ResponseComplete, so watches are recorded when they end), for
# counting requests by user: apiserver_request_total has no user or user-agent label.
AUDIT_POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: Metadata
"""


class LocalCluster:
    """Owns the processes of one local control plane, recorded in <state_dir>/cluster.json."""

    def __init__(self, binaries: Binaries, state_dir: Path, nodes: tuple[FakeNode, ...] = DEFAULT_NODES,
                 audit: bool = False, *, real_node: bool = False, node_images: Sequence[Path] = ()):
        """audit=True writes the apiserver's audit log (see AUDIT_POLICY) to `audit_log_path`.
        real_node=True adds one kubelet node (modelcache_devcluster.node) with node_images (docker-archives from
        modelcache_devcluster.images, the sandbox image among them) imported into its containerd."""
        self.binaries = binaries
        self.state_dir = state_dir.resolve()
        self.nodes = nodes
        self.audit = audit
        self.real_node = real_node
        self.node_images = tuple(node_images)
        port = free_port()
        self.state = ClusterState(
            state_dir=str(self.state_dir),
            kubeconfig=str(self.state_dir / "admin.kubeconfig"),
            server=f"https://127.0.0.1:{port}",
            ports={"apiserver": port},
        )

    # ----- lifecycle -----

    def up(self, timeout: float = 120.0) -> ClusterState:
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        make_pki(self.state.pki)
        write_kubeconfig(Path(self.state.kubeconfig), self.state.server, self.state.pki)
        try:
            self._start_etcd(timeout)
            self._start_apiserver(timeout)
            self._start_controller_manager(timeout)
            self._start_scheduler(timeout)
            self._start_kwok()
            self._create_nodes(timeout)
            if self.real_node:
                self._start_real_node(timeout)
        except BaseException:
            self.down()
            raise
        return self.state

    @property
    def audit_log_path(self) -> Path:
        return self.state_dir / "logs" / "audit.jsonl"

    def user_kubeconfig(self, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig for a client-certificate user of its own, so its requests can be told apart."""
        name = "user-" + "".join(c if c.isalnum() else "-" for c in user)
        make_client_cert(self.state.pki, name, user, groups)
        path = self.state_dir / f"{name}.kubeconfig"
        write_kubeconfig(path, self.state.server, self.state.pki, cert_name=name)
        return path

    def down(self) -> None:
        teardown(self.state)
        self.state.pids.clear()
        self.state.save()

    @property
    def node_layout(self) -> real_node.NodeLayout:
        return real_node.NodeLayout(self.state_dir / "node")

    # ----- components -----

    def _spawn(self, component: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = self.state.log_path(component).open("ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=self.state_dir, env=env)
        self.state.pids[component] = proc.pid
        self.state.save()

    def _wait(self, component: str, probe: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.state.pids[component]
            if not alive(pid):
                raise ComponentFailed(f"{component} exited during startup; log tail:\n"
                                      f"{log_tail(self.state.log_path(component))}")
            if probe():
                return
            time.sleep(0.25)
        raise ComponentFailed(f"{component} not healthy within {timeout:.0f}s; log tail:\n"
                              f"{log_tail(self.state.log_path(component))}")

    def _start_etcd(self, timeout: float) -> None:
        # A restart keeps the ports, so the apiserver's --etcd-servers stays right.
        client = self.state.ports.setdefault("etcd", free_port())
        peer = self.state.ports.setdefault("etcd-peer", free_port())
        self._spawn("etcd", [
            str(self.binaries.etcd), "--name=node0", f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{client}", f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=node0=http://127.0.0.1:{peer}", "--unsafe-no-fsync=true",
            "--auto-compaction-retention=1", "--quota-backend-bytes=8589934592",
            "--listen-metrics-urls=", "--log-level=warn",
        ])
        self._wait("etcd", lambda: http_ok(f"http://127.0.0.1:{client}/health"), timeout)

    def apiserver_argv(self) -> list[str]:
        pki = self.state.pki
        return [
            str(self.binaries.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{self.state.ports['etcd']}",
            "--bind-address=127.0.0.1", f"--secure-port={self.state.ports['apiserver']}",
            "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}", "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true",
            f"--cert-dir={self.state_dir / 'apiserver-certs'}",
            "--enable-priority-and-fairness=false", "--profiling=false", "-v=1",
            *self._audit_args(),
            *self._real_node_args(),
        ]

    def _real_node_args(self) -> list[str]:
        """The kubelet client certificate: for logs and exec on the real node, whose kubelet accepts clients
        with certificates of the CA. Aggregator routing: there is no kube-proxy, so the apiserver calls webhook
        Services (a chart-installed operator's) at their endpoints' pod addresses, which this machine reaches
        over the node's bridge."""
        if not self.real_node:
            return []
        pki = self.state.pki
        return [f"--kubelet-client-certificate={pki / 'admin.crt'}", f"--kubelet-client-key={pki / 'admin.key'}",
                "--kubelet-preferred-address-types=InternalIP", "--enable-aggregator-routing=true"]

    def _audit_args(self) -> list[str]:
        if not self.audit:
            return []
        policy = self.state_dir / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log_path}",
                "--audit-log-format=json", "--audit-log-maxsize=0", "--audit-log-maxbackup=0"]

    def _start_apiserver(self, timeout: float) -> None:
        self._spawn("kube-apiserver", self.apiserver_argv())
        self._wait("kube-apiserver", lambda: https_ok(f"{self.state.server}/readyz", self.state.pki), timeout)

    def restart_apiserver(self, timeout: float = 60.0) -> None:
        stop_processes({"kube-apiserver": self.state.pids.pop("kube-apiserver")})
        self._start_apiserver(timeout)

    def restart_etcd(self, downtime: float = 0.0, timeout: float = 60.0) -> None:
        """Stops etcd, waits `downtime` seconds, and starts it again on the same data dir and ports."""
        stop_processes({"etcd": self.state.pids.pop("etcd")})
        time.sleep(downtime)
        self._start_etcd(timeout)
        # The apiserver reconnects by itself; wait until it serves again, so callers see a healthy cluster.
        self._wait("kube-apiserver", lambda: https_ok(f"{self.state.server}/readyz", self.state.pki), timeout)

    def _start_controller_manager(self, timeout: float) -> None:
        port = free_port()
        self.state.ports["kube-controller-manager"] = port
        pki = self.state.pki
        self._spawn("kube-controller-manager", [
            str(self.binaries.kube_controller_manager), f"--kubeconfig={self.state.kubeconfig}",
            f"--authentication-kubeconfig={self.state.kubeconfig}",
            f"--authorization-kubeconfig={self.state.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={port}", "--leader-elect=false", "--controllers=*",
            f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=false", "--node-monitor-period=5s",
            "--node-monitor-grace-period=40s", "--concurrent-job-syncs=10", "--pvclaimbinder-sync-period=2s",
            f"--cert-dir={self.state_dir / 'kcm-certs'}", "-v=1",
        ])
        self._wait("kube-controller-manager", lambda: https_ok(f"https://127.0.0.1:{port}/healthz", None), timeout)
        self._wait("kube-controller-manager", self._default_serviceaccount_exists, timeout)

    def _start_scheduler(self, timeout: float) -> None:
        port = free_port()
        self.state.ports["kube-scheduler"] = port
        self._spawn("kube-scheduler", [
            str(self.binaries.kube_scheduler), f"--kubeconfig={self.state.kubeconfig}",
            f"--authentication-kubeconfig={self.state.kubeconfig}",
            f"--authorization-kubeconfig={self.state.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={port}", "--leader-elect=false",
            f"--cert-dir={self.state_dir / 'scheduler-certs'}", "-v=1",
        ])
        self._wait("kube-scheduler", lambda: https_ok(f"https://127.0.0.1:{port}/healthz", None), timeout)

    def _start_kwok(self) -> None:
        config = self.state_dir / "kwok.yaml"
        config.write_text(kwok_config(self.binaries.kwok_stages))
        key, value = KWOK_NODE_ANNOTATION
        self._spawn("kwok", [
            str(self.binaries.kwok), f"--kubeconfig={self.state.kubeconfig}", f"--config={config}",
            "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={key}={value}",
            "--cidr=10.244.0.0/16", "--node-ip=10.1.0.1",
        ])

    def _start_real_node(self, timeout: float) -> None:
        binaries = real_node.ensure_node_binaries()
        layout = self.node_layout
        relay, kubelet, healthz = free_port(), free_port(), free_port()
        self.state.ports |= {"apiserver-relay": relay, "kubelet": kubelet, "kubelet-healthz": healthz}
        real_node.write_node_files(layout, binaries, self.state.pki, self.state.server, SANDBOX_IMAGE,
                                   kubelet_port=kubelet, healthz_port=healthz)
        real_node.setup_host(relay)  # undoes itself when it fails; never touches another node's bridge
        self.state.real_node = True  # from here on, teardown undoes the host changes
        self.state.save()
        self._spawn("apiserver-relay", [sys.executable, "-m", "modelcache_devcluster.relay",
                                        f"{real_node.GATEWAY}:{relay}", f"127.0.0.1:{self.state.ports['apiserver']}"])
        env = {**os.environ, "PATH": f"{binaries.shim.parent}:{binaries.runc.parent}:{os.environ.get('PATH', '')}"}
        self._spawn("containerd", [str(binaries.containerd), f"--config={layout.containerd_config}",
                                   "--log-level=info"], env=env)
        self._wait("containerd", lambda: real_node.containerd_ready(binaries.ctr, layout.containerd_socket), timeout)
        real_node.import_images(binaries.ctr, layout.containerd_socket, self.node_images)
        self._spawn("kubelet", real_node.kubelet_argv(self.binaries.kubelet, layout), env=env)
        self._wait("kubelet", self._real_node_ready, timeout)

    def _real_node_ready(self) -> bool:
        raw = self.kubectl("get", "node", real_node.REAL_NODE, "-o", "json", "--ignore-not-found", check=False)
        if not raw.strip():
            return False
        conditions = json.loads(raw).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def run_kubectl(self, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        """Runs kubectl against this cluster; the result keeps stderr, where kubectl prints admission warnings."""
        result = subprocess.run([str(self.binaries.kubectl), f"--kubeconfig={self.state.kubeconfig}", *args],
                                input=input_text, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def kubectl(self, *args: str, input_text: str | None = None, check: bool = True) -> str:
        try:
            return self.run_kubectl(*args, input_text=input_text).stdout
        except RuntimeError:
            if check:
                raise
            return ""

    def install_crds(self, crd_dir: Path) -> None:
        """Applies every CRD in `crd_dir` and waits until the apiserver serves them all."""
        files = sorted(crd_dir.glob("*.yaml"))
        self.kubectl("apply", "--server-side", *(f"-f={f}" for f in files))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                     *(f"-f={f}" for f in files))

    def _default_serviceaccount_exists(self) -> bool:
        return bool(self.kubectl("get", "serviceaccount", "default", "-n", "default", "--ignore-not-found",
                                 "-o", "name", check=False).strip())

    def _create_nodes(self, timeout: float) -> None:
        for node in self.nodes:
            self.kubectl("apply", "--server-side", "--field-manager=modelcache-devcluster", "-f", "-",
                         input_text=json.dumps(node.manifest()))
        self._wait("kwok", self._nodes_ready, timeout)

    def _nodes_ready(self) -> bool:
        raw = self.kubectl("get", "nodes", "-o", "json", check=False)
        if not raw:
            return False
        items = json.loads(raw)["items"]
        ready = [
            n for n in items
            if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
            and not any(t["key"].startswith("node.kubernetes.io/") for t in n["spec"].get("taints") or [])
        ]
        return len(ready) >= len(self.nodes)


def teardown(state: ClusterState) -> None:
    """Stops every process of the cluster; with a real node, first the kubelet, then its containers (whose
    shims outlive containerd), then containerd, and then undoes its mounts and host changes."""
    pids = dict(state.pids)
    if state.real_node:
        layout = real_node.NodeLayout(Path(state.state_dir) / "node")
        binaries = real_node.NodeBinaries.at(cache_root())
        stop_processes({k: pids.pop(k) for k in ("kubelet",) if k in pids})
        if "containerd" in pids and alive(pids["containerd"]):
            real_node.kill_containers(binaries.ctr, layout.containerd_socket)
        stop_processes({k: pids.pop(k) for k in ("containerd", "apiserver-relay") if k in pids})
        real_node.unmount_under(layout.root)
        real_node.teardown_host()
    stop_processes(pids)


