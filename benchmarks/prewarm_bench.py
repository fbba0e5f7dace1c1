"""Prewarm benchmark: ours vs the seed hook vs `vmtouch -t` vs an fio direct-read ceiling, on local
disk and on an s3fs mount of a slow loopback object store; each run starts from a cold page cache.

    .venv/bin/python benchmarks/prewarm_bench.py [--local-gib 8] [--fuse-gib 2] [--fuse-shards 16]
        [--latency 0.03] [--stream-mibps 64] [--reps 3] [--workdir /var/tmp/prewarm-bench] [--out BENCHMARKS.md]

"ours" is the pod's own postStart command (hook.poststart_command, run by /bin/sh against tools
installed by `modelcache-prewarm install`, python3 on PATH being this interpreter), so the warm
re-run pays every start-up cost a pod pays. Local runs are interleaved rep by rep (ours cold, ours
warm re-run right after it, seed, vmtouch, fio) so drift of the shared disk hits all alike.

Needs vmtouch, fio and s3fs (Debian packages). Appends a "## Prewarm" section to --out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prewarm_common import SEED_HOOK, GiB, MiB, append_section, machine, pod_tools  # noqa: E402
from tests.residency import evict, files_under, resident_fraction, write_file  # noqa: E402
from tests.slowfs import s3fs_mount, slow_http  # noqa: E402

from modelcache_operator.prewarm import hook  # noqa: E402


def make_dataset(root: Path, total: int, shards: int = 0) -> list[Path]:
    """shards > 0: that many equal safetensors shards (a sharded checkpoint). Else half the bytes
    in one big file (a GGUF), the rest in 128 MiB shards. Reused if present; strays removed."""
    root.mkdir(parents=True, exist_ok=True)
    if shards > 0:
        plan = {f"model-{i + 1:05d}-of-{shards:05d}.safetensors": total // shards for i in range(shards)}
    else:
        plan = {"model.gguf": total // 2}
        for i in range((total - total // 2) // (128 * MiB)):
            plan[f"model-{i:05d}.safetensors"] = 128 * MiB
    for p in root.iterdir():
        if p.name not in plan:
            p.unlink()
    for name, size in plan.items():
        p = root / name
        if not p.exists() or p.stat().st_size != size:
            write_file(p, size, seed=len(name))
    return [root / n for n in sorted(plan)]


def machine_busy() -> tuple[float, float]:
    """(idle+iowait seconds, all seconds) summed over CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[3] + v[4], sum(v)


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return time.monotonic() - t0, proc.stdout


def fio_ceiling(files: list[Path]) -> float:
    """Seconds for fio to read every file with O_DIRECT, all files at once (libaio, 4 MiB, QD32)."""
    job = ["[global]", "rw=read", "direct=1", "ioengine=libaio", "iodepth=32", "bs=4M"]
    for i, f in enumerate(files):
        job += [f"[f{i}]", "filename=" + str(f).replace(":", "\\:")]
    jobfile = files[0].parent.parent / "ceiling.fio"
    jobfile.write_text("\n".join(job) + "\n")
    return timed(["fio", "--readonly", str(jobfile)])[0]


def measure_interleaved(
    files: list[Path], runs: list[tuple[str, Callable[[], float], bool]], reps: int
) -> dict[str, dict[str, float]]:
    """Each rep runs every (name, run, cold) in order; cold ones start from an evicted cache."""
    secs: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    res: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    for rep in range(reps):
        for name, run, cold in runs:
            if cold:
                evict(files)
                assert resident_fraction(files) < 0.02, "could not make the files cold"
            secs[name].append(run())
            res[name].append(resident_fraction(files))
            print(f"  rep {rep + 1} {name:28s} {secs[name][-1]:7.2f}s", flush=True)
    size = sum(f.stat().st_size for f in files)
    out: dict[str, dict[str, float]] = {}
    for name, _, _ in runs:
        out[name] = {"secs": statistics.median(secs[name]), "resident": min(res[name]), "busy": -1}
        out[name]["gibps"] = size / GiB / out[name]["secs"]
        print(f"{name:28s} {out[name]['secs']:7.3f}s {out[name]['gibps']:6.2f} GiB/s "
              f"resident={out[name]['resident']:.1%} all={[round(x, 3) for x in secs[name]]}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--local-gib", type=float, default=8.0)
    ap.add_argument("--fuse-gib", type=float, default=2.0)
    ap.add_argument("--fuse-shards", type=int, default=16, help="FUSE model: equal shards (0: GGUF + shards)")
    ap.add_argument("--latency", type=float, default=0.03, help="object store: seconds before each GET answers")
    ap.add_argument("--stream-mibps", type=float, default=64, help="object store: MiB/s per GET stream")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp/prewarm-bench"))
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    for tool in ("vmtouch", "fio", "s3fs"):
        assert shutil.which(tool), f"{tool} not installed (apt-get install {tool})"

    tools, pod_env = pod_tools(args.workdir)
    log = str(args.workdir / "prewarm.log")

    def ours(model_dir: Path) -> list[str]:
        return hook.poststart_command(str(tools), [str(model_dir)], 16, 600, log)

    local_dir = args.workdir / "local"
    local = make_dataset(local_dir, int(args.local_gib * GiB))
    env = {**os.environ, "MODEL_DIR": str(local_dir)}
    print(f"local: {len(local)} files, {args.local_gib} GiB in {local_dir}")
    r = measure_interleaved(local, [
        ("local ours", lambda: timed(ours(local_dir), pod_env)[0], True),
        ("local ours warm re-run", lambda: timed(ours(local_dir), pod_env)[0], False),
        ("local seed hook", lambda: timed(["sh", "-c", SEED_HOOK], env)[0], True),
        ("local vmtouch -t", lambda: timed(["vmtouch", "-q", "-t", str(local_dir)])[0], True),
        ("local fio direct (ceiling)", lambda: fio_ceiling(local), True),
    ], args.reps)

    store = args.workdir / "store"
    make_dataset(store, int(args.fuse_gib * GiB), args.fuse_shards)
    mnt = args.workdir / "mnt"
    print(f"fuse: s3fs on a loopback store, {args.latency * 1000:.0f} ms/GET, {args.stream_mibps} MiB/s per stream")
    size = sum(f.stat().st_size for f in files_under(store))
    fuse_cmds: list[tuple[str, Callable[[Path], list[str]]]] = [
        ("fuse ours", ours),
        ("fuse seed hook", lambda m: ["sh", "-c", SEED_HOOK]),
        ("fuse vmtouch -t", lambda m: ["vmtouch", "-q", "-t", str(m)]),
        ("fuse one cat at a time", lambda m: ["sh", "-c", 'cat "$MODEL_DIR"/* >/dev/null']),
        ("fuse 16 parallel cats", lambda m: [
            "sh", "-c", 'find "$MODEL_DIR" -type f -print0 | xargs -0 -n1 -P 16 cat >/dev/null']),
    ]
    secs: dict[str, list[float]] = {name: [] for name, _ in fuse_cmds}
    busy: dict[str, list[float]] = {name: [] for name, _ in fuse_cmds}
    with slow_http(store, latency=args.latency, stream_bps=args.stream_mibps * MiB) as url:
        for rep in range(args.reps):
            for name, cmd in fuse_cmds:
                # A fresh mount per run: nothing cached in the kernel or in s3fs.
                with s3fs_mount(url, mnt) as m:
                    b0 = machine_busy()
                    secs[name].append(timed(cmd(m), {**pod_env, "MODEL_DIR": str(m)})[0])
                    b1 = machine_busy()
                busy[name].append(1 - (b1[0] - b0[0]) / max(1, b1[1] - b0[1]))
                print(f"  rep {rep + 1} {name:28s} {secs[name][-1]:7.2f}s busy={busy[name][-1]:.0%}", flush=True)
        for name, _ in fuse_cmds:
            med = statistics.median(secs[name])
            r[name] = {"secs": med, "gibps": size / GiB / med, "resident": -1, "busy": statistics.median(busy[name])}
            print(f"{name:28s} {med:7.2f}s {r[name]['gibps']:6.2f} GiB/s all={[round(x, 2) for x in secs[name]]}")
        with s3fs_mount(url, mnt) as m:
            fuse_files = files_under(m)
            t_cold, _ = timed(ours(m), pod_env)
            fuse_res = resident_fraction(fuse_files)
            t_warm, _ = timed(ours(m), pod_env)
        print(f"fuse ours cold {t_cold:.2f}s resident={fuse_res:.1%}, warm re-run {t_warm:.3f}s")

    write_report(args, r, (t_cold, fuse_res, t_warm))


def write_report(
    args: argparse.Namespace, r: dict[str, dict[str, float]], fuse_rerun: tuple[float, float, float]
) -> None:
    def ratio(a: str, b: str) -> str:
        return f"{r[b]['secs'] / r[a]['secs']:.2f}x"

    lines = [
        "## Prewarm",
        "",
        f"Command: `flock /tmp/modelcache-bench.lock .venv/bin/python benchmarks/prewarm_bench.py "
        f"--local-gib {args.local_gib} --fuse-gib {args.fuse_gib} --fuse-shards {args.fuse_shards} "
        f"--latency {args.latency} --stream-mibps {args.stream_mibps} --reps {args.reps}`",
        "",
        f"Machine: {machine(args.workdir)}. Every cold run is preceded by fsync + "
        "posix_fadvise(DONTNEED) on each file (checked cold with mincore); FUSE runs each get a fresh "
        f"s3fs mount (kernel_cache, no disk cache) of a loopback object store answering each GET after "
        f"{args.latency * 1000:.0f} ms and streaming {args.stream_mibps:.0f} MiB/s per GET. Median of "
        f"{args.reps} runs.",
        "",
        "| run | seconds | GiB/s | resident after | machine CPU busy |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, v in r.items():
        res = "n/a (new mount)" if v["resident"] < 0 else f"{v['resident']:.1%}"
        cpu = "" if v["busy"] < 0 else f"{v['busy']:.0%}"
        lines.append(f"| {name} | {v['secs']:.3f} | {v['gibps']:.2f} | {res} | {cpu} |")
    t_cold, fuse_res, t_warm = fuse_rerun
    warm_ratio = r["local ours warm re-run"]["secs"] / r["local ours"]["secs"]
    best_fuse = min((n for n in r if n.startswith("fuse ") and n != "fuse ours"), key=lambda n: r[n]["secs"])
    lines += [
        "",
        "Ratios (speed, higher is better for ours):",
        f"- local: ours vs vmtouch -t = {ratio('local ours', 'local vmtouch -t')} (goal >= 1x); "
        f"ours vs fio direct ceiling = {ratio('local ours', 'local fio direct (ceiling)')} (goal >= 0.9x); "
        f"ours vs seed hook = {ratio('local ours', 'local seed hook')}",
        f"- FUSE: ours vs the best other reader on the same mount ({best_fuse}) = {ratio('fuse ours', best_fuse)} "
        f"(goal >= 0.9x); ours vs seed hook = {ratio('fuse ours', 'fuse seed hook')}; "
        f"ours vs vmtouch -t = {ratio('fuse ours', 'fuse vmtouch -t')}",
        f"- warm re-run / cold: local {warm_ratio:.1%} (goal <= 5%); FUSE {t_warm / t_cold:.1%} "
        f"({t_warm:.2f}s vs {t_cold:.2f}s, resident after cold run {fuse_res:.1%})",
        "",
    ]
    append_section(args.out, lines)


if __name__ == "__main__":
    main()
