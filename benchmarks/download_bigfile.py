"""One big file, each connection capped: our parallel ranged GETs vs aria2c -x8 -s8 vs hf_hub_download.

    flock /tmp/modelcache-bench.lock .venv/bin/python benchmarks/download_bigfile.py \\
        --gib 2 --cap-mib 32 --repeat 3 --dir /mnt/bench-tmpfs

The hub is tests.hubs.huggingface.HuggingFaceHub on 127.0.0.1 in this process; `--cap-mib` throttles every
response body (every connection) like a CDN's per-connection cap. Every fetcher is a subprocess; time is wall
clock from spawn to exit, CPU and peak RSS come from that child's rusage (os.wait4). Each run of ours is also
split into phases by when its requests reach the hub (`RequestLog`), to show where the time goes.

- ours: `python -m modelcache_operator.downloader` as the Job runs it (listing, HEAD, 8 ranged connections,
  sha256 of every byte, checksum check, fsync, manifest).
- aria2c: Debian's aria2, `aria2c -x8 -s8` (8 connections, 8 splits), no hash check.
- hf_hub_download: huggingface_hub's own download into `local_dir` (one stream, Xet disabled).

Then ours once more onto the ossfs-rules FUSE file system (tests/ossfs_rules), to check that the parallel
download still writes strictly sequentially there: no refused write, one upload of the whole file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING

from fetch_runs import MIB, Run, downloader, measure, print_table  # this directory, sys.path[0] of a script

if TYPE_CHECKING:
    from tests.hubs.huggingface import HuggingFaceHub

ROOT = Path(__file__).resolve().parents[1]
REPO = "bench/bigfile"


def ours(url: str, root: Path) -> Run:
    return downloader(url, REPO, root, MC_CONNECTIONS_PER_FILE="8")


class RequestLog:
    """When each request reached the hub and when its answer ended: splits a run of ours into start-up (spawn
    to first request: interpreter, imports), transfer (first to last ranged GET, and how many of the 8
    connections were busy on average) and tail (last byte to exit: fsync, manifest, interpreter exit)."""

    def __init__(self, hub: HuggingFaceHub) -> None:
        self.spans: list[tuple[float, float, bool]] = []  # start, end, ranged
        handle = hub.handle

        def logged(h: BaseHTTPRequestHandler, method: str) -> None:
            t0 = time.monotonic()
            handle(h, method)
            self.spans.append((t0, time.monotonic(), "Range" in h.headers))

        hub.handle = logged  # type: ignore[method-assign]

    def clear(self) -> None:
        """Forget what came before: the other fetchers' requests reach the same hub."""
        self.spans = []

    def phases(self, spawned: float, run: Run) -> Phases:
        """The phases of the run spawned at `spawned` (monotonic), from the requests logged since `clear`."""
        spans = self.spans
        ranged = [(t0, t1) for t0, t1, is_ranged in spans if is_ranged]
        first, last = min(t0 for t0, _ in ranged), max(t1 for _, t1 in ranged)
        return Phases(startup=min(t0 for t0, _, _ in spans) - spawned, transfer=last - first,
                      busy_connections=sum(t1 - t0 for t0, t1 in ranged) / (last - first),
                      tail=spawned + run.seconds - last)


@dataclass
class Phases:
    startup: float
    transfer: float
    busy_connections: float
    tail: float


def aria2(url: str, dest: Path) -> Run:
    dest.mkdir(parents=True)
    return measure(["aria2c", "-x8", "-s8", "--file-allocation=none", "--console-log-level=warn",
                    "--summary-interval=0", "--download-result=hide", "-d", str(dest), "-o", "model.safetensors",
                    url])


def hf_hub(url: str, name: str, sha: str, dest: Path) -> Run:
    code = ("import sys; from huggingface_hub import hf_hub_download; "
            "hf_hub_download(sys.argv[1], sys.argv[2], revision=sys.argv[3], local_dir=sys.argv[4], "
            "endpoint=sys.argv[5])")
    env = {**os.environ, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(dest.parent / "hf-home"),
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    return measure([sys.executable, "-c", code, REPO, name, sha, str(dest), url], env)


def ossfs_check(url: str, base: Path) -> tuple[Run, list[dict[str, object]], list[dict[str, object]]]:
    from tests.ossfs_rules import OssfsRulesMount

    with OssfsRulesMount(base / "bucket", base / "mnt") as m:
        root = m.mountpoint / "volume"
        root.mkdir()
        run = ours(url, root)
        return run, m.events("refused"), [e for e in m.events("upload") if str(e["path"]).endswith(".safetensors")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gib", type=float, default=2)
    p.add_argument("--cap-mib", type=int, default=32, help="per-connection cap of the hub, MiB/s")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--hf-repeat", type=int, default=1, help="hf_hub_download runs (slow: one capped stream)")
    p.add_argument("--dir", type=Path, default=Path("/tmp/modelcache-bench-bigfile"))
    a = p.parse_args()

    sys.path.insert(0, str(ROOT))
    from tests.hubs import make_shards
    from tests.hubs.huggingface import HuggingFaceHub

    size = int(a.gib * (1 << 30))
    [(name, path)] = make_shards(a.dir / "src", 1, size).items()
    hub = HuggingFaceHub()
    sha = hub.add_repo(REPO, {name: path})
    hub.faults.bytes_per_second = a.cap_mib * MIB
    out = a.dir / "out"
    runs: dict[str, list[Run]] = {"ours": [], "aria2c": [], "hf_hub_download": []}
    phases: list[Phases] = []
    requests = RequestLog(hub)
    with hub:
        url = f"{hub.url}/{REPO}/resolve/{sha}/{name}"
        for i in range(a.repeat):
            for fetcher, done in runs.items():
                if fetcher == "hf_hub_download" and i >= a.hf_repeat:
                    continue
                shutil.rmtree(out, ignore_errors=True)
                if fetcher == "ours":
                    requests.clear()
                    spawned = time.monotonic()
                    run = ours(hub.url, out / "volume")
                    phases.append(requests.phases(spawned, run))
                elif fetcher == "aria2c":
                    run = aria2(url, out / "aria2")
                else:
                    run = hf_hub(hub.url, name, sha, out / "hf")
                done.append(run)
                print(f"{fetcher}: {run.seconds:.2f} s, CPU {run.cpu:.2f} s, peak RSS {run.peak_rss / MIB:.0f} MiB",
                      file=sys.stderr)
        shutil.rmtree(out, ignore_errors=True)
        fuse_run, refused, uploads = ossfs_check(hub.url, out)
        shutil.rmtree(out, ignore_errors=True)

    print(f"\n1 file of {size / (1 << 30):.2f} GiB, loopback hub capped at {a.cap_mib} MiB/s per connection, "
          f"median of {a.repeat} interleaved runs (hf_hub_download: {a.hf_repeat})\n")
    med = print_table(runs, size)
    print("\nours, by phase (median): start-up (spawn to first request) "
          f"{statistics.median(x.startup for x in phases):.2f} s, transfer "
          f"{statistics.median(x.transfer for x in phases):.2f} s with "
          f"{statistics.median(x.busy_connections for x in phases):.2f} of 8 connections busy "
          f"(ideal {size / (8 * a.cap_mib * MIB):.2f} s), tail (last byte to exit) "
          f"{statistics.median(x.tail for x in phases):.2f} s")
    print(f"\nratio ours / aria2c -x8 -s8: {med['aria2c'] / med['ours']:.2f}")
    print(f"ratio ours / hf_hub_download: {med['hf_hub_download'] / med['ours']:.2f}")
    print(f"on ossfs-rules: {fuse_run.seconds:.2f} s ({size / fuse_run.seconds / MIB:.0f} MiB/s), "
          f"peak RSS {fuse_run.peak_rss / MIB:.0f} MiB, refused writes: {len(refused)}, "
          f"uploads of the file: {[(u['size'], u['appendedFrom']) for u in uploads]}")


if __name__ == "__main__":
    main()
