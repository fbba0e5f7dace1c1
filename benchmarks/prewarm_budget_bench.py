"""Prewarm under a memory limit below the model, and next to a 2 TiB sparse file, vs readers that read everything.

    .venv/bin/python benchmarks/prewarm_budget_bench.py [--gib 2] [--shards 16] [--limit-share 0.5] [--reps 3]
        [--workdir /var/tmp/prewarm-budget-bench] [--out BENCHMARKS.md]

Bounded memory: each reader runs cold inside a fresh memory cgroup (v2 memory.max or v1
memory.limit_in_bytes, as the machine has) limited to --limit-share of the model, as a pod whose
limit is below its model. What counts is what is still resident afterwards of the files the server
loads first (the first shards), and how long the reader took: a reader that reads everything evicts
its own first pages to make room for the last ones. Sparse: the same shards plus a 2 TiB sparse file
(as some tools pre-allocate), no limit: ours vs ours on the shards alone. "ours" is the pod's own
postStart command (hook.poststart_command via /bin/sh, tools installed by `install`). Needs root
(cgroups) and vmtouch. Appends a "## Prewarm under a memory limit" section to --out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prewarm_common import SEED_HOOK, GiB, MiB, append_section, machine, pod_tools  # noqa: E402
from tests.prewarm_support import memory_cgroup  # noqa: E402
from tests.residency import evict, resident_fraction, write_file  # noqa: E402

from modelcache_operator.prewarm import hook  # noqa: E402


def shards_in(root: Path, total: int, count: int) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = [root / f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
    for i, p in enumerate(files):
        if not p.exists() or p.stat().st_size != total // count:
            write_file(p, total // count, seed=i)
    return files


def run_in_cgroup(cmd: list[str], env: dict[str, str], limit: int) -> float:
    with memory_cgroup(limit) as (_, procs):
        t0 = time.monotonic()
        subprocess.run(["sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *cmd], env=env, check=True,
                       capture_output=True)
        return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--limit-share", type=float, default=0.5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp/prewarm-budget-bench"))
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    assert shutil.which("vmtouch"), "vmtouch not installed (apt-get install vmtouch)"
    tools, pod_env = pod_tools(args.workdir)
    log = str(args.workdir / "prewarm.log")
    model = args.workdir / "model"
    total = int(args.gib * GiB)
    files = shards_in(model, total, args.shards)
    limit = int(total * args.limit_share)
    first = files[: max(1, len(files) // 4)]  # what the server loads first

    def ours(d: Path) -> list[str]:
        return hook.poststart_command(str(tools), [str(d)], 16, 600, log, container_log="")

    readers = {
        "ours": ours(model),
        "seed hook": ["sh", "-c", SEED_HOOK],
        "vmtouch -t": ["vmtouch", "-q", "-t", str(model)],
    }
    rows: dict[str, dict[str, list[float]]] = {n: {"secs": [], "first": [], "resident": []} for n in readers}
    for rep in range(args.reps):
        for name, cmd in readers.items():
            evict(files)
            assert resident_fraction(files) < 0.02, "could not make the files cold"
            rows[name]["secs"].append(run_in_cgroup(cmd, {**pod_env, "MODEL_DIR": str(model)}, limit))
            rows[name]["first"].append(resident_fraction(first))
            rows[name]["resident"].append(resident_fraction(files) * total)
            print(f"  rep {rep + 1} {name:12s} {rows[name]['secs'][-1]:6.2f}s first={rows[name]['first'][-1]:.1%} "
                  f"resident={rows[name]['resident'][-1] / MiB:.0f}MiB", flush=True)

    # Sparse: the same shards plus a 2 TiB hole-only file, no limit; vs ours on the shards alone.
    sparse_dir = args.workdir / "sparse"
    sparse_dir.mkdir(exist_ok=True)
    for f in files:
        link = sparse_dir / f.name
        if not link.exists():
            os.link(f, link)
    with open(sparse_dir / "preallocated.bin", "wb") as fh:
        fh.truncate(2 << 40)
    sparse: dict[str, list[float]] = {"shards alone": [], "shards + 2 TiB sparse": []}
    for _ in range(args.reps):
        for name, d in (("shards alone", model), ("shards + 2 TiB sparse", sparse_dir)):
            evict(files)
            t0 = time.monotonic()
            subprocess.run(ours(d), env=pod_env, check=True, capture_output=True)
            sparse[name].append(time.monotonic() - t0)
            assert resident_fraction(files) > 0.95, f"{name}: shards not resident"
    write_report(args, rows, sparse, limit=limit, total=total, first=len(first))


def write_report(args: argparse.Namespace, rows: dict[str, dict[str, list[float]]], sparse: dict[str, list[float]],
                 *, limit: int, total: int, first: int) -> None:
    med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in rows.items()}
    lines = [
        "## Prewarm under a memory limit",
        "",
        f"Command: `flock /tmp/modelcache-bench.lock .venv/bin/python benchmarks/prewarm_budget_bench.py "
        f"--gib {args.gib} --shards {args.shards} --limit-share {args.limit_share} --reps {args.reps}`",
        "",
        f"Machine: {machine(args.workdir)}. Model: {args.shards} x "
        f"{total // args.shards // MiB} MiB shards ({args.gib} GiB); each reader runs cold in a fresh memory "
        f"cgroup limited to {limit // MiB} MiB; \"first\" is the first {first} shards (what a server loads "
        f"first). Median of {args.reps} runs. Shared machine: other engineers' jobs ran too.",
        "",
        "| reader (bounded memory) | seconds | first shards resident after | model resident after |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, v in med.items():
        lines.append(f"| {name} | {v['secs']:.2f} | {v['first']:.1%} | {v['resident'] / MiB:.0f} MiB |")
    s_alone, s_sparse = (statistics.median(sparse[k]) for k in ("shards alone", "shards + 2 TiB sparse"))
    lines += [
        "",
        f"- bounded memory: ours took {med['ours']['secs'] / med['seed hook']['secs']:.2f}x the seed hook's time "
        f"and {med['ours']['secs'] / med['vmtouch -t']['secs']:.2f}x vmtouch's, and left "
        f"{med['ours']['first']:.0%} of the first shards resident (seed hook {med['seed hook']['first']:.0%}, "
        f"vmtouch {med['vmtouch -t']['first']:.0%}): it reads only what fits and stops.",
        f"- sparse: shards + a 2 TiB sparse file took {s_sparse:.2f} s vs {s_alone:.2f} s for the shards alone "
        f"({s_sparse / s_alone:.2f}x; goal: about the time the shards alone take); the shards ended resident.",
        "",
    ]
    append_section(args.out, lines)


if __name__ == "__main__":
    main()
