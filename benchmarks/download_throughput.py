"""Download throughput and memory: our downloader vs a plain parallel HTTP fetch, same loopback hub, same run.

    flock /tmp/modelcache-bench.lock .venv/bin/python benchmarks/download_throughput.py \\
        --shards 4 --shard-mib 512 --workers 8 --repeat 3
    # network-bound, as behind a CDN: every connection capped, files below the ranged-GET size so both
    # sides hold the same `--workers` connections
    ... download_throughput.py --shards 32 --shard-mib 48 --workers 8 --cap-mib 32 --repeat 3

The hub is tests.hubs.huggingface.HuggingFaceHub on 127.0.0.1 (sendfile from page cache), in this process;
`--cap-mib` throttles every response body (every connection) like a CDN's per-connection cap.
Every fetcher runs as its own subprocess, so each pays interpreter start and imports and has its own GIL;
time is wall clock from spawn to exit, CPU and peak RSS come from that child's rusage (os.wait4).

- plain: a ThreadPool of `requests` GETs of the same /resolve URLs, 1 MiB reads, writing the same files to
  disk. No hashing, no verification, no fsync. This is the baseline of the 0.8x goal (issue 4).
- plain+sha256: the same, plus sha256 of every byte: what hashing alone costs on this machine.
- modelcache-download: `python -m modelcache_operator.downloader` as the Job runs it: listing, a HEAD per
  file, sha256 of every byte as it arrives, the checksum check, one fsync per file, and the manifest.

Runs are interleaved (plain, plain+sha256, ours, plain, ...) and the median of `--repeat` runs is reported,
because the machine is shared.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fetch_runs import MIB, Run, downloader, measure, print_table  # this directory, sys.path[0] of a script

ROOT = Path(__file__).resolve().parents[1]
REPO = "bench/model"


def plain_fetch(base: str, sha: str, names: list[str], dest: Path, *, workers: int, hash_too: bool) -> None:
    """The baseline, run in a child process (`--plain-child`)."""
    import requests  # in the child: its import time is part of its run

    dest.mkdir(parents=True)

    def one(name: str) -> None:
        digest = hashlib.sha256()
        with requests.get(f"{base}/{REPO}/resolve/{sha}/{name}", stream=True, timeout=60) as r:
            r.raise_for_status()
            with (dest / name).open("wb") as f:
                for chunk in r.iter_content(MIB):
                    f.write(chunk)
                    if hash_too:
                        digest.update(chunk)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, names))


def plain(url: str, sha: str, names: list[str], dest: Path, *, workers: int, hash_too: bool) -> Run:
    cmd = [sys.executable, __file__, "--plain-child", url, sha, str(dest), str(workers), *names]
    return measure(cmd + (["--hash"] if hash_too else []))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--plain-child":
        url, sha, dest, workers, *names = sys.argv[2:]
        hash_too = "--hash" in names
        plain_fetch(url, sha, [n for n in names if n != "--hash"], Path(dest), workers=int(workers),
                    hash_too=hash_too)
        return

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--shard-mib", type=int, default=512)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cap-mib", type=int, default=0, help="per-connection cap of the hub, MiB/s (0: none)")
    p.add_argument("--dir", type=Path, default=Path("/tmp/modelcache-bench-download"))
    a = p.parse_args()

    sys.path.insert(0, str(ROOT))
    from tests.hubs import make_shards
    from tests.hubs.huggingface import HuggingFaceHub

    files = make_shards(a.dir / "src", a.shards, a.shard_mib * MIB)
    total = a.shards * a.shard_mib * MIB
    hub = HuggingFaceHub()
    hub.faults.bytes_per_second = a.cap_mib * MIB or None
    sha = hub.add_repo(REPO, dict(files))
    out = a.dir / "out"
    runs: dict[str, list[Run]] = {"plain": [], "plain+sha256": [], "ours": []}
    with hub:
        for _ in range(a.repeat):
            for name, done in runs.items():
                shutil.rmtree(out, ignore_errors=True)
                if name == "ours":
                    run = downloader(hub.url, REPO, out / "volume", MC_MAX_WORKERS=str(a.workers))
                else:
                    run = plain(hub.url, sha, sorted(files), out / "plain", workers=a.workers,
                                hash_too=name == "plain+sha256")
                done.append(run)
                print(f"{name}: {run.seconds:.2f} s, CPU {run.cpu:.2f} s, peak RSS {run.peak_rss / MIB:.0f} MiB",
                      file=sys.stderr)
        shutil.rmtree(out, ignore_errors=True)

    labels = {"plain": "plain parallel GET (requests, writes files; no hash, no fsync)",
              "plain+sha256": "plain parallel GET + sha256 (no fsync)",
              "ours": "modelcache-download (hash + verify + fsync + manifest)"}
    print(f"\n{a.shards} x {a.shard_mib} MiB = {total / (1 << 30):.2f} GiB, {a.workers} workers, loopback hub "
          f"{f'capped at {a.cap_mib} MiB/s per connection' if a.cap_mib else 'uncapped'}, "
          f"median of {a.repeat} interleaved runs\n")
    med = print_table(runs, total, labels)
    print(f"\nthroughput ratio (ours / plain): {med['plain'] / med['ours']:.2f}")
    print(f"throughput ratio (ours / plain+sha256): {med['plain+sha256'] / med['ours']:.2f}")


if __name__ == "__main__":
    main()
