"""One real node for the local control plane: containerd + runc + a CNI bridge + the kubelet, all private.

Everything lives under <state_dir>/node: containerd's root, state and socket, the CNI config and IPAM state,
the kubelet's root dir, certificates and pod logs. Host-wide objects are few, named, and removed on teardown:
the bridge `mc-cni0` with the gateway address on a private subnet (no masquerade, no forwarding: pods reach
only this machine), one nat chain that sends the `kubernetes` Service address to a TCP relay in front of the
apiserver (there is no kube-proxy), and the pod cgroups under /modelcache-<node> in each hierarchy.

The node is tainted, so only pods that tolerate REAL_NODE_TAINT land on it. Needs root, Debian's runc and
containernetworking-plugins, and containerd from hack/build-node-bins.sh.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from .binaries import REPO_ROOT, cache_root

CONTAINERD_VERSION = "v2.4.2"
NODE_BUILD_SCRIPT = REPO_ROOT / "hack" / "build-node-bins.sh"
REAL_NODE = "real-node-0"
REAL_NODE_LABEL = ("modelcache.dev/real-node", "true")
REAL_NODE_TAINT = {"key": "modelcache.dev/real-node", "value": "true", "effect": "NoSchedule"}
BRIDGE = "mc-cni0"
POD_SUBNET = "10.88.0.0/16"
GATEWAY = "10.88.0.1"
# The apiserver's `kubernetes` Service (first address of --service-cluster-ip-range); pods' in-cluster config.
KUBERNETES_SERVICE = ("10.0.0.1", 443)
NAT_CHAIN = "MODELCACHE-NODE"
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
CGROUP_ROOT = f"/modelcache-{REAL_NODE}"


class NodeSetupFailed(RuntimeError):
    """A host prerequisite of the real node is missing or a host change failed; the message says which."""


@dataclass(frozen=True)
class NodeBinaries:
    containerd: Path
    ctr: Path
    shim: Path
    runc: Path
    cni_bin_dir: Path

    @classmethod
    def at(cls, root: Path) -> NodeBinaries:
        ctrd = root / f"containerd-{CONTAINERD_VERSION}"
        runc = shutil.which("runc") or "/usr/sbin/runc"
        cni = next((Path(d) for d in CNI_BIN_DIRS if (Path(d) / "bridge").exists()), Path(CNI_BIN_DIRS[0]))
        return cls(containerd=ctrd / "containerd", ctr=ctrd / "ctr", shim=ctrd / "containerd-shim-runc-v2",
                   runc=Path(runc), cni_bin_dir=cni)

    def missing(self) -> list[str]:
        missing = [str(p) for p in (self.containerd, self.ctr, self.shim, self.runc) if not p.exists()]
        missing += [f"CNI plugin {self.cni_bin_dir / p}" for p in ("bridge", "host-local", "loopback")
                    if not (self.cni_bin_dir / p).exists()]
        return missing


def ensure_node_binaries() -> NodeBinaries:
    """containerd from Go modules (cached, ~5 minutes cold); runc and CNI plugins must come from apt."""
    binaries = NodeBinaries.at(cache_root())
    if not binaries.containerd.exists():
        env = {**os.environ, "CONTAINERD_VERSION": CONTAINERD_VERSION, "MODELCACHE_BIN_CACHE": str(cache_root())}
        subprocess.run(["bash", str(NODE_BUILD_SCRIPT)], check=True, env=env)
    missing = binaries.missing()
    if missing:
        raise NodeSetupFailed(f"real-node binaries missing: {missing} "
                              "(apt-get install runc containernetworking-plugins; hack/build-node-bins.sh)")
    return binaries


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NodeSetupFailed(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result


@dataclass(frozen=True)
class NodeLayout:
    """Paths of one real node under the cluster's state dir."""

    root: Path

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd" / "config.toml"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet-config.yaml"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.root / "kubelet.kubeconfig"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"

    def pod_dir(self, uid: str) -> Path:
        return self.kubelet_root / "pods" / uid

    def empty_dir(self, uid: str, volume: str) -> Path:
        return self.pod_dir(uid) / "volumes" / "kubernetes.io~empty-dir" / volume


def containerd_config(layout: NodeLayout, binaries: NodeBinaries, sandbox_image: str) -> str:
    state = layout.containerd_state
    config = f"""version = 4
root = '{layout.containerd_root}'
state = '{state}'
imports = []
disabled_plugins = ['io.containerd.nri.v1.nri', 'io.containerd.snapshotter.v1.blockfile',
                    'io.containerd.snapshotter.v1.erofs', 'io.containerd.differ.v1.erofs',
                    'io.containerd.internal.v1.tracing']

[plugins.'io.containerd.server.v1.grpc']
  address = '{layout.containerd_socket}'
[plugins.'io.containerd.server.v1.ttrpc']
  address = '{layout.containerd_socket}.ttrpc'
[plugins.'io.containerd.server.v1.debug']
  address = ''
[plugins.'io.containerd.server.v1.metrics']
  address = ''
[plugins.'io.containerd.internal.v1.opt']
  path = '{layout.root / "containerd" / "opt"}'
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{sandbox_image}'
[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  # This machine does not let root lower oom_score_adj (no CAP_SYS_RESOURCE): keep containers at or above ours.
  restrict_oom_score_adj = true
  disable_apparmor = true
  cdi_spec_dirs = []
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '{binaries.runc}'
        Root = '{state / "runc"}'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['{binaries.cni_bin_dir}']
    conf_dir = '{layout.cni_conf_dir}'
    max_conf_num = 1
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
"""
    return config


def cni_config(layout: NodeLayout) -> dict[str, object]:
    """A bridge on POD_SUBNET. isGateway/ipMasq stay off: the gateway address is ours (set up beforehand),
    the plugin then neither masquerades nor turns on IP forwarding, so pods reach only this machine."""
    return {
        "cniVersion": "1.0.0",
        "name": "modelcache-node",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": False, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(layout.cni_ipam_dir),
                      "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY, "rangeStart": "10.88.1.1"}]],
                      "routes": [{"dst": f"{KUBERNETES_SERVICE[0]}/32", "gw": GATEWAY}]}},
            {"type": "loopback"},
        ],
    }


def kubelet_config(layout: NodeLayout, pki: Path, port: int, healthz_port: int) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": GATEWAY,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        # Only clients with certificates of the cluster CA (the apiserver's) may use the kubelet API.
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": CGROUP_ROOT,
        "failCgroupV1": False,
        "failSwapOn": False,
        "resolvConf": str(layout.resolv_conf),
        "podLogsDir": str(layout.pod_logs),
        "registerNode": True,
        "registerWithTaints": [REAL_NODE_TAINT],
        "maxPods": 20,
        "serializeImagePulls": False,
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%",
                         "imagefs.available": "1%", "imagefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "localStorageCapacityIsolation": False,
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": False,
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "5s",
        "fileCheckFrequency": "5s",
        "shutdownGracePeriod": "0s",
        "volumeStatsAggPeriod": "0s",
        "logging": {"format": "text"},
    }


def make_node_cert(pki: Path, node: str) -> None:
    """The kubelet's client certificate: system:node:<node> in system:nodes, signed by the cluster CA."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=pki, check=True, capture_output=True)

    (pki / "kubelet-client.ext").write_text("extendedKeyUsage=clientAuth\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/O=system:nodes/CN=system:node:{node}",
            "-keyout", "kubelet.key", "-out", "kubelet.csr")
    openssl("x509", "-req", "-in", "kubelet.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "3650", "-out", "kubelet.crt", "-extfile", "kubelet-client.ext")


def kubelet_kubeconfig(server: str, pki: Path) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "node",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": "node", "user": {"client-certificate": str(pki / "kubelet.crt"),
                                            "client-key": str(pki / "kubelet.key")}}],
        "contexts": [{"name": "node", "context": {"cluster": "local", "user": "node"}}],
    })


def kubelet_argv(kubelet: Path, layout: NodeLayout) -> list[str]:
    label = "=".join(REAL_NODE_LABEL)
    return [
        str(kubelet), f"--config={layout.kubelet_config}", f"--kubeconfig={layout.kubelet_kubeconfig}",
        f"--root-dir={layout.kubelet_root}", f"--cert-dir={layout.root / 'kubelet-pki'}",
        f"--hostname-override={REAL_NODE}", f"--node-ip={GATEWAY}",
        f"--node-labels={label},kubernetes.io/os=linux", "-v=2",
    ]


def write_node_files(layout: NodeLayout, binaries: NodeBinaries, pki: Path, server: str, sandbox_image: str,
                     *, kubelet_port: int, healthz_port: int) -> None:
    for directory in (layout.containerd_root, layout.containerd_state, layout.cni_conf_dir, layout.cni_ipam_dir,
                      layout.kubelet_root, layout.pod_logs):
        directory.mkdir(parents=True, exist_ok=True)
    layout.containerd_config.write_text(containerd_config(layout, binaries, sandbox_image))
    (layout.cni_conf_dir / "10-modelcache.conflist").write_text(json.dumps(cni_config(layout), indent=2))
    # No cluster DNS: pods resolve nothing, which keeps them from reaching beyond this machine by name.
    layout.resolv_conf.write_text(f"nameserver {GATEWAY}\noptions timeout:1 attempts:1\n")
    make_node_cert(pki, REAL_NODE)
    layout.kubelet_kubeconfig.write_text(kubelet_kubeconfig(server, pki))
    layout.kubelet_config.write_text(yaml.safe_dump(kubelet_config(layout, pki, kubelet_port, healthz_port)))


# ----- host changes: each one undone by teardown_host -----

def _cgroup_hierarchies() -> list[Path]:
    base = Path("/sys/fs/cgroup")
    return sorted(p for p in base.iterdir() if p.is_dir() and (p / "cgroup.procs").exists())


def setup_host(relay_port: int) -> None:
    """The bridge with the gateway address, the nat rule for the `kubernetes` Service, the cgroup root."""
    if _run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
        raise NodeSetupFailed(f"bridge {BRIDGE} already exists: another real node runs here, or a previous one "
                              f"was not torn down (`modelcache-devcluster down` or `ip link del {BRIDGE}`)")
    try:
        _setup_host(relay_port)
    except BaseException:
        teardown_host()
        raise


def _setup_host(relay_port: int) -> None:
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "add", f"{GATEWAY}/{POD_SUBNET.split('/')[1]}", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    _run("iptables", "-w", "-t", "nat", "-N", NAT_CHAIN)
    _run("iptables", "-w", "-t", "nat", "-A", NAT_CHAIN, "-s", POD_SUBNET, "-d", f"{KUBERNETES_SERVICE[0]}/32",
         "-p", "tcp", "--dport", str(KUBERNETES_SERVICE[1]), "-j", "DNAT",
         "--to-destination", f"{GATEWAY}:{relay_port}")
    _run("iptables", "-w", "-t", "nat", "-A", "PREROUTING", "-i", BRIDGE, "-j", NAT_CHAIN)
    for hierarchy in _cgroup_hierarchies():
        group = hierarchy / CGROUP_ROOT.lstrip("/")
        group.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):  # a v1 cpuset child starts empty
            if (hierarchy / name).exists() and not (group / name).read_text().strip():
                (group / name).write_text((hierarchy / name).read_text())


def _mounts_under(root: Path) -> list[str]:
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == str(root) or point.startswith(f"{root}/"):
            mounts.append(point)
    return mounts


def unmount_under(root: Path) -> None:
    """Unmounts every mount below root (overlay rootfs, shm, netns, volumes), deepest first."""
    for _ in range(3):
        mounts = _mounts_under(root)
        if not mounts:
            return
        for point in sorted(mounts, key=len, reverse=True):
            _run("umount", "-l", point, check=False)


def _remove_cgroup_tree(group: Path) -> None:
    if not group.exists():
        return
    for child in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        group.rmdir()


def teardown_host() -> None:
    """Undoes setup_host; safe to run when parts were never set up."""
    _run("iptables", "-w", "-t", "nat", "-D", "PREROUTING", "-i", BRIDGE, "-j", NAT_CHAIN, check=False)
    _run("iptables", "-w", "-t", "nat", "-F", NAT_CHAIN, check=False)
    _run("iptables", "-w", "-t", "nat", "-X", NAT_CHAIN, check=False)
    _run("ip", "link", "del", BRIDGE, check=False)
    for hierarchy in _cgroup_hierarchies():
        _remove_cgroup_tree(hierarchy / CGROUP_ROOT.lstrip("/"))


def kill_containers(ctr: Path, socket: Path) -> None:
    """SIGKILLs every task containerd still runs in the k8s.io namespace (the shims outlive containerd)."""
    base = [str(ctr), "--address", str(socket), "--namespace", "k8s.io"]
    listing = _run(*base, "tasks", "list", "--quiet", check=False)
    for task in listing.stdout.split():
        _run(*base, "tasks", "kill", "--all", "--signal", "SIGKILL", task, check=False)
    for task in listing.stdout.split():
        _run(*base, "tasks", "delete", "--force", task, check=False)


def import_images(ctr: Path, socket: Path, archives: Sequence[Path]) -> None:
    for archive in archives:
        _run(str(ctr), "--address", str(socket), "--namespace", "k8s.io", "images", "import",
             "--snapshotter", "overlayfs", str(archive))


def containerd_ready(ctr: Path, socket: Path) -> bool:
    if not socket.exists():
        return False
    return _run(str(ctr), "--address", str(socket), "version", check=False).returncode == 0
