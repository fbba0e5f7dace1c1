"""The operator as a real process (kopf) against the local control plane, with its webhook on TLS."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import kubernetes
from kubernetes.client.exceptions import ApiException

from modelcache_devcluster.cluster import free_port
from tests.support.kube import OPERATOR_NAMESPACE

WEBHOOK_CONFIG_NAME = "modelcache-test.modelcache.dev"
TEST_IMAGE = "modelcache-operator:test"


def make_webhook_cert(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "webhook.crt", directory / "webhook.key"
    if not cert.exists():
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True)
    return cert, key


class ReplicaUnreachable(OSError):
    """An endpoint of a replica refused: an OSError still (callers that poll a restarting replica catch it)."""


class OperatorProcess:
    def __init__(self, kubeconfig: str, workdir: Path, resync_seconds: float = 2.0,
                 extra_env: dict[str, str] | None = None, manage_webhooks: bool = True,
                 allow_host_path: bool = False, identity: str | None = None):
        """kubeconfig may be a ServiceAccount's (tests.support.serviceaccount); manage_webhooks=False runs it
        as the chart does, serving the webhooks without registering configurations for them. `identity` is
        its leader Lease holder (the chart's pod name): one per instance, kept across restarts, so a restarted
        operator takes its own Lease back at once while another instance waits as a follower."""
        self.identity = identity or f"operator-{uuid.uuid4().hex[:6]}"
        self.kubeconfig = kubeconfig
        self.manage_webhooks = manage_webhooks
        self.allow_host_path = allow_host_path
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = make_webhook_cert(workdir)
        self.resync_seconds = resync_seconds
        self.extra_env = extra_env or {}
        self.log_path = workdir / "operator.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.metrics_port = free_port()
        self.webhook_port = free_port()
        self.webhook_metrics_port = free_port()
        self.liveness_port = free_port()

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": self.kubeconfig,
            "MODELCACHE_RESYNC_SECONDS": str(self.resync_seconds),
            "MODELCACHE_METRICS_PORT": str(self.metrics_port),
            "MODELCACHE_WEBHOOK_PORT": str(self.webhook_port),
            "MODELCACHE_WEBHOOK_METRICS_PORT": str(self.webhook_metrics_port),
            "MODELCACHE_WEBHOOK_HOST": "127.0.0.1",
            "MODELCACHE_WEBHOOK_CERT": str(self.cert),
            "MODELCACHE_WEBHOOK_KEY": str(self.key),
            "MODELCACHE_WEBHOOK_MANAGED": WEBHOOK_CONFIG_NAME if self.manage_webhooks else "",
            "MODELCACHE_IMAGE": TEST_IMAGE,
            "MODELCACHE_NAMESPACE": OPERATOR_NAMESPACE,
            "MODELCACHE_ALLOW_HOST_PATH": "true" if self.allow_host_path else "false",
            "MODELCACHE_POD_NAME": self.identity,
            **self.extra_env,
        }

    def start(self, timeout: float = 60.0) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelcache_operator.cli", "run",
             "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1) as r:
                    # kopf answers its liveness probe before the webhook process listens: wait for both, or
                    # the next ModelCache write meets a refused connection (failurePolicy Fail).
                    if r.status == 200 and self._webhook_listening():
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()  # never leave a half-started operator (and its webhook process) running
        raise RuntimeError(f"operator not live within {timeout}s:\n{self.log_tail()}")

    def _webhook_listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.webhook_port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def child_pids(self) -> list[int]:
        """The processes the operator started: its admission webhook process."""
        if self.process is None:
            return []
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # the process ended while we looked
            if ppid == self.process.pid:
                found.append(int(stat.parent.name))
        return found

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def webhook_url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.webhook_port}{path}"

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def metrics(self) -> str:
        return self._scrape(self.metrics_port)

    def webhook_metrics(self) -> str:
        """The admission webhook runs in its own process, with its own metrics endpoint."""
        return self._scrape(self.webhook_metrics_port)

    def leading(self) -> bool:
        """The leader gauge on this replica's /metrics."""
        return "modelcache_leader 1.0" in self.metrics().splitlines()

    def readiness(self) -> tuple[int, str]:
        """The webhook process's /readyz (the chart's readiness probe): (HTTP status, reason)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.webhook_metrics_port}/readyz", timeout=5) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode()
        except urllib.error.URLError as error:
            raise self._unreachable("/readyz", error) from error

    def _scrape(self, port: int) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                return str(response.read().decode())
        except urllib.error.URLError as error:
            raise self._unreachable(f"/metrics on port {port}", error) from error

    def _unreachable(self, endpoint: str, error: urllib.error.URLError) -> ReplicaUnreachable:
        """A refused endpoint says whether the replica (or its webhook process) is still running, and why not."""
        state = "not started" if self.process is None else (
            f"exited with {self.process.returncode}" if self.process.poll() is not None
            else f"running, webhook processes {self.child_pids()}")
        return ReplicaUnreachable(f"{self.identity} {endpoint}: {error.reason}; operator {state}:\n{self.log_tail()}")


def delete_webhook_configurations(client: kubernetes.client.ApiClient) -> None:
    """A killed operator leaves its failurePolicy=Fail webhooks behind: never let them outlive a run."""
    admission = kubernetes.client.AdmissionregistrationV1Api(client)
    for delete in (admission.delete_mutating_webhook_configuration,
                   admission.delete_validating_webhook_configuration):
        try:
            delete(WEBHOOK_CONFIG_NAME)
        except ApiException as error:
            if error.status != 404:
                raise
