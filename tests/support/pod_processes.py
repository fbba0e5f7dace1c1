"""The host processes of a chart operator Pod's container on the real node, found by the pod name the chart
passes in (MODELCACHE_POD_NAME, from the downward API): the operator (`modelcache-operator run`) and the
webhook server it starts."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def pod_processes(pod: str) -> dict[int, list[bytes]]:
    """Host PID -> argv of every process whose environment names `pod`."""
    found = {}
    marker = f"MODELCACHE_POD_NAME={pod}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or a kernel thread
        if marker in environ:
            found[int(proc.name)] = argv
    return found


def operator_pid(pod: str) -> int:
    """The host PID of the operator process (`modelcache-operator run`, not the webhook) of that pod."""
    for pid, argv in pod_processes(pod).items():
        if b"run" in argv and b"webhook" not in argv:
            return pid
    raise AssertionError(f"no operator process of {pod} on this host")


def signal_pod(pod: str, signum: signal.Signals) -> list[int]:
    """Sends `signum` to every process of the pod; returns their PIDs. Fails when the pod has none."""
    pids = sorted(pod_processes(pod))
    assert pids, f"no process of {pod} on this host"
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            continue  # exited meanwhile
    return pids
