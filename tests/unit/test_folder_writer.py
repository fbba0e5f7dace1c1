"""One Job per folder at a time: the view tells a download whose folder another download's running Job is
writing, from the indices alone."""

from __future__ import annotations

from typing import Any

from modelcache_operator.builders.status import JobObservation
from modelcache_operator.operator.observe import download_view

NS = "modelcache-system"


def download(name: str, folder: str = "hf/acme/m/all", phase: str | None = None) -> dict[str, Any]:
    return {"kind": "ModelDownload", "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
            "spec": {"store": "s", "claimName": "writer", "folder": folder},
            "status": {"phase": phase} if phase else {}}


def indices(downloads: list[dict[str, Any]], active: set[str]) -> dict[str, Any]:
    return {
        "store_index": {}, "termination_index": {}, "config_error_index": {}, "cleanup_index": {},
        "caches_by_download": {}, "pods_by_download": {},
        "download_index": {(NS, d["metadata"]["name"]): [d] for d in downloads},
        "job_index": {(NS, name): [JobObservation(name=f"mc-dl-{name}", active=True)] for name in active},
    }


def test_a_running_job_on_the_same_folder_holds_the_others_back() -> None:
    first, second = download("main-1"), download("v2-1")
    view = download_view(second, indices([first, second], active={"main-1"}), NS)
    assert view.folder_writer == "main-1"


def test_other_folders_finished_downloads_and_own_jobs_do_not() -> None:
    mine = download("v2-1")
    other_folder = download("main-1", folder="hf/acme/m/f-123")
    assert download_view(mine, indices([other_folder, mine], active={"main-1"}), NS).folder_writer is None
    published = download("main-1", phase="Ready")  # its pod may still be exiting: it writes nothing more
    assert download_view(mine, indices([published, mine], active={"main-1"}), NS).folder_writer is None
    idle = download("main-1")
    assert download_view(mine, indices([idle, mine], active=set()), NS).folder_writer is None
    running_self = indices([idle, mine], active={"v2-1", "main-1"})
    assert download_view(mine, running_self, NS).folder_writer is None  # it has its Job: nothing to decide
