"""The kwok side of the local control plane: the fake nodes it manages, and its configuration with the stages
that move their pods (one of them, the failing node's, fails Job pods on purpose)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

KWOK_STAGE_FILES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)
# Fake nodes carry this annotation; kwok manages only them, so a real kubelet can join too.
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
# Job pods on this node fail with this exit code and termination message instead of completing, so tests can
# drive the real Job controller's podFailurePolicy. Only pods that tolerate the node's taint land there.
FAILING_NODE = "failing-node-0"
FAILING_NODE_TAINT = "modelcache.dev/kwok-failing"
FAILING_EXIT_CODE = 11
FAILING_STAGE = f"""
apiVersion: kwok.x-k8s.io/v1alpha2
kind: Stage
metadata: {{name: pod-fail-on-failing-node}}
spec:
  resourceRef: {{apiGroup: v1, kind: Pod}}
  selector:
    matchExpressions:
    - {{key: '.metadata.deletionTimestamp', operator: 'DoesNotExist'}}
    - {{key: '.status.phase', operator: 'In', values: ['Running']}}
    - {{key: '.spec.nodeName', operator: 'In', values: ['{FAILING_NODE}']}}
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      containerStatuses:
      {{{{ range $index, $item := .spec.containers }}}}
      - image: {{{{ $item.image | Quote }}}}
        name: {{{{ $item.name | Quote }}}}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: {FAILING_EXIT_CODE}
            finishedAt: {{{{ $now | Quote }}}}
            reason: Error
            message: '{{"reason": "NotFound", "message": "kwok failing node"}}'
            startedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      phase: Failed
"""


@dataclass(frozen=True)
class FakeNode:
    name: str
    gpus: int
    gpu_product: str | None
    cpu: str
    memory: str
    taints: tuple[dict[str, str], ...] = ()

    def manifest(self) -> dict[str, object]:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
        }
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110", "ephemeral-storage": "1Ti"}
        if self.gpus:
            labels |= {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.count": str(self.gpus),
                "nvidia.com/gpu.product": self.gpu_product or "NVIDIA-H100-80GB-HBM3",
                "nvidia.com/gpu.memory": "81559",
            }
            capacity["nvidia.com/gpu"] = str(self.gpus)
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": labels,
                "annotations": {"node.alpha.kubernetes.io/ttl": "0", KWOK_NODE_ANNOTATION[0]: KWOK_NODE_ANNOTATION[1]},
            },
            "spec": {"taints": list(self.taints)},
            "status": {"allocatable": capacity, "capacity": capacity},
        }


DEFAULT_NODES = (
    FakeNode("gpu-node-0", 8, "NVIDIA-H100-80GB-HBM3", "192", "2048Gi"),
    FakeNode("gpu-node-1", 8, "NVIDIA-H100-80GB-HBM3", "192", "2048Gi"),
    FakeNode("cpu-node-0", 0, None, "32", "128Gi"),
    FakeNode(FAILING_NODE, 0, None, "8", "32Gi", ({"key": FAILING_NODE_TAINT, "effect": "NoSchedule"},)),
)


def kwok_config(stages_dir: Path) -> str:
    """kwok's configuration file: its options, kwok's own stages from `stages_dir` and the failing node's."""
    # Standalone kwok skips its config defaulting, so the parallelism options must be explicit.
    options = {"podPlayStageParallelism": 8, "nodePlayStageParallelism": 4, "nodeLeaseParallelism": 4,
               "podsOnNodeSyncParallelism": 2, "nodeLeaseDurationSeconds": 40,
               "enablePodsOnNodeSyncListPager": True, "enablePodsOnNodeSyncStreamWatch": False}
    docs = [yaml.safe_dump({"apiVersion": "config.kwok.x-k8s.io/v1alpha2", "kind": "KwokConfiguration",
                            "options": options})]
    for name in KWOK_STAGE_FILES:
        stage = yaml.safe_load((stages_dir / name).read_text())
        if stage["metadata"]["name"] == "pod-complete":
            stage["spec"]["selector"]["matchExpressions"].append(
                {"key": ".spec.nodeName", "operator": "NotIn", "values": [FAILING_NODE]})
        docs.append(yaml.safe_dump(stage))
    docs.append(FAILING_STAGE)
    return "\n---\n".join(docs)
