"""The downloader's outcome outlives its status patches: the success report goes to the termination log too."""

from __future__ import annotations

from pathlib import Path

from modelcache_operator.api.v1alpha2 import DownloadReport
from modelcache_operator.downloader import load_manifest
from tests.component.conftest import REPO, run_downloader
from tests.hubs import FakeHub


def test_success_writes_the_published_report_to_the_termination_log(hf_hub: FakeHub, root: Path) -> None:
    result = run_downloader(hf_hub, root, MC_JOB_NAME="mc-dl-test")
    assert result.code == 0, result.stderr
    assert result.termination is not None and result.termination["reason"] == "Published"
    report = DownloadReport.model_validate(result.termination["report"])
    manifest = load_manifest(root / hf_hub.repos[REPO].sha)
    assert (report.state, report.jobName, report.resolvedRevision) == ("Published", "mc-dl-test", manifest.revision)
    assert (report.bytesTotal, report.filesTotal, report.format) == (manifest.totalBytes, manifest.fileCount,
                                                                      "safetensors")
    assert report.architecture == "BertModel"
