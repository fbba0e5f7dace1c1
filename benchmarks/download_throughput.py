"""Download throughput and memory: our downloader vs a plain parallel HTTP fetch, same loopback hub, same run.

    .venv/bin/python benchmarks/download_throughput.py --shards 4 --shard-mib 512 --workers 8

The hub is tests.hubs.huggingface.HuggingFaceHub on 127.0.0.1 (sendfile from page cache). The baseline is a
ThreadPool of `requests` GETs of the same /resolve URLs writing the same files; it neither hashes nor
verifies. The downloader runs as the Job runs it (a subprocess, `python -m modelcache_operator.downloader`),
so its time includes interpreter start, listing, sha256 of every byte, and the manifest.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.hubs import make_shards
from tests.hubs.huggingface import HuggingFaceHub

REPO = "bench/model"


def plain_fetch(base: str, sha: str, names: list[str], dest: Path, workers: int) -> float:
    dest.mkdir(parents=True)

    def one(name: str) -> None:
        with requests.get(f"{base}/{REPO}/resolve/{sha}/{name}", stream=True, timeout=60) as r:
            r.raise_for_status()
            with (dest / name).open("wb") as f:
                for chunk in r.iter_content(1 << 20):
                    f.write(chunk)

    t0 = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, names))
    return time.monotonic() - t0


def downloader(url: str, root: Path, workers: int) -> tuple[float, int]:
    env = {**os.environ, "MC_HUB": "huggingface", "MC_REPO": REPO, "MC_ROOT": str(root), "MC_ENDPOINT": url,
           "MC_REPORT": "none", "MC_MAX_WORKERS": str(workers), "HF_HUB_DISABLE_XET": "1",
           "MC_TERMINATION_LOG": str(root.parent / "term")}
    env.pop("MC_HUB_TOKEN", None)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "modelcache_operator.downloader"], env=env,
                          capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"downloader failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the only child we waited for
    return elapsed, peak_kib * 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--shard-mib", type=int, default=512)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--dir", type=Path, default=Path("/tmp/modelcache-bench-download"))
    a = p.parse_args()

    files = make_shards(a.dir / "src", a.shards, a.shard_mib << 20)
    total = a.shards * (a.shard_mib << 20)
    hub = HuggingFaceHub()
    sha = hub.add_repo(REPO, dict(files))
    out = a.dir / "out"
    with hub:
        shutil.rmtree(out, ignore_errors=True)
        plain_s = plain_fetch(hub.url, sha, sorted(files), out / "plain", a.workers)
        shutil.rmtree(out)
        ours_s, peak = downloader(hub.url, out / "volume", a.workers)
        shutil.rmtree(out)

    gib = total / (1 << 30)
    print(f"\n{a.shards} x {a.shard_mib} MiB = {gib:.2f} GiB, {a.workers} workers, loopback hub\n")
    print("| fetcher | seconds | MiB/s | peak RSS |")
    print("|---|---:|---:|---:|")
    mib = 1 << 20
    print(f"| plain parallel GET (requests, no hashing) | {plain_s:.2f} | {total / plain_s / mib:.0f} | - |")
    print(f"| modelcache-download (hash + verify + manifest) | {ours_s:.2f} | {total / ours_s / mib:.0f} "
          f"| {peak / mib:.0f} MiB |")
    print(f"\nthroughput ratio (ours / plain): {plain_s / ours_s:.2f}")


if __name__ == "__main__":
    main()
