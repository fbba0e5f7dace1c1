"""Prewarm benchmark: ours vs the seed hook vs `vmtouch -t` vs an fio direct-read ceiling, on local
disk and on an s3fs mount of a slow loopback object store; each run starts from a cold page cache.

    .venv/bin/python benchmarks/prewarm_bench.py [--local-gib 2] [--fuse-gib 1] [--latency 0.03]
        [--stream-mibps 64] [--reps 2] [--workdir /var/tmp/prewarm-bench] [--out BENCHMARKS.md]

Needs vmtouch, fio and s3fs (Debian packages). Appends a "## Prewarm" section to --out.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.residency import evict, files_under, resident_fraction, write_file  # noqa: E402
from tests.slowfs import s3fs_mount, slow_http  # noqa: E402

PROGRAM = ROOT / "src" / "modelcache_operator" / "prewarm" / "prewarm.py"
SEED_HOOK = """find "$MODEL_DIR" -type f -print0 | xargs -0 -I {} -P 4 sh -c 'cat "{}" > /dev/null'"""
MiB = 1 << 20
GiB = 1 << 30


def make_dataset(root: Path, total: int) -> list[Path]:
    """Half the bytes in one big file (a GGUF), the rest in 128 MiB shards; reused if present."""
    root.mkdir(parents=True, exist_ok=True)
    plan = {"model.gguf": total // 2}
    for i in range((total - total // 2) // (128 * MiB)):
        plan[f"model-{i:05d}.safetensors"] = 128 * MiB
    for name, size in plan.items():
        p = root / name
        if not p.exists() or p.stat().st_size != size:
            write_file(p, size, seed=len(name))
    return [root / n for n in sorted(plan)]


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


def measure(
    name: str, files: list[Path], run: Callable[[], float], reps: int, cold: bool = True
) -> dict[str, float]:
    secs, res = [], []
    for _ in range(reps):
        if cold:
            evict(files)
            assert resident_fraction(files) < 0.02, "could not make the files cold"
        secs.append(run())
        res.append(resident_fraction(files))
    size = sum(f.stat().st_size for f in files)
    out = {"secs": statistics.median(secs), "resident": min(res)}
    out["gibps"] = size / GiB / out["secs"]
    print(f"{name:28s} {out['secs']:7.2f}s {out['gibps']:6.2f} GiB/s resident={out['resident']:.1%}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--local-gib", type=float, default=2.0)
    ap.add_argument("--fuse-gib", type=float, default=1.0)
    ap.add_argument("--latency", type=float, default=0.03, help="object store: seconds before each GET answers")
    ap.add_argument("--stream-mibps", type=float, default=64, help="object store: MiB/s per GET stream")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp/prewarm-bench"))
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    for tool in ("vmtouch", "fio", "s3fs"):
        assert shutil.which(tool), f"{tool} not installed (apt-get install {tool})"

    local_dir = args.workdir / "local"
    local = make_dataset(local_dir, int(args.local_gib * GiB))
    env = {**os.environ, "MODEL_DIR": str(local_dir)}
    ours = [sys.executable, str(PROGRAM), "warm"]
    r: dict[str, dict[str, float]] = {}
    print(f"local: {len(local)} files, {args.local_gib} GiB in {local_dir}")
    r["local ours"] = measure("local ours", local, lambda: timed([*ours, "--dir", str(local_dir)])[0], args.reps)
    r["local ours warm re-run"] = measure(
        "local ours warm re-run", local, lambda: timed([*ours, "--dir", str(local_dir)])[0], args.reps, cold=False
    )
    r["local seed hook"] = measure("local seed hook", local, lambda: timed(["sh", "-c", SEED_HOOK], env)[0], args.reps)
    r["local vmtouch -t"] = measure(
        "local vmtouch -t", local, lambda: timed(["vmtouch", "-q", "-t", str(local_dir)])[0], args.reps
    )
    r["local fio direct (ceiling)"] = measure(
        "local fio direct (ceiling)", local, lambda: fio_ceiling(local), args.reps
    )

    store = args.workdir / "store"
    make_dataset(store, int(args.fuse_gib * GiB))
    mnt = args.workdir / "mnt"
    print(f"fuse: s3fs on a loopback store, {args.latency * 1000:.0f} ms/GET, {args.stream_mibps} MiB/s per stream")

    def on_fuse(cmd: Callable[[Path], list[str]]) -> Callable[[], float]:
        def run() -> float:
            # A fresh mount per run: nothing cached in the kernel or in s3fs.
            with s3fs_mount(url, mnt) as m:
                return timed(cmd(m), {**os.environ, "MODEL_DIR": str(m)})[0]
        return run

    with slow_http(store, latency=args.latency, stream_bps=args.stream_mibps * MiB) as url:
        for name, cmd in [
            ("fuse ours", lambda m: [*ours, "--dir", str(m)]),
            ("fuse seed hook", lambda m: ["sh", "-c", SEED_HOOK]),
            ("fuse vmtouch -t", lambda m: ["vmtouch", "-q", "-t", str(m)]),
        ]:
            secs = []
            for _ in range(args.reps):
                secs.append(on_fuse(cmd)())
            size = sum(f.stat().st_size for f in files_under(store))
            med = statistics.median(secs)
            r[name] = {"secs": med, "gibps": size / GiB / med, "resident": -1}
            print(f"{name:28s} {r[name]['secs']:7.2f}s {r[name]['gibps']:6.2f} GiB/s", flush=True)
        with s3fs_mount(url, mnt) as m:
            fuse_files = files_under(m)
            t_cold, _ = timed([*ours, "--dir", str(m)])
            fuse_res = resident_fraction(fuse_files)
            t_warm, _ = timed([*ours, "--dir", str(m)])
        print(f"fuse ours cold {t_cold:.2f}s resident={fuse_res:.1%}, warm re-run {t_warm:.2f}s")

    write_report(args, r, (t_cold, fuse_res, t_warm))


def write_report(
    args: argparse.Namespace, r: dict[str, dict[str, float]], fuse_rerun: tuple[float, float, float]
) -> None:
    def ratio(a: str, b: str) -> str:
        return f"{r[b]['secs'] / r[a]['secs']:.2f}x"

    def sh(cmd: str) -> str:
        return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, check=False).stdout.strip()

    disk = sh(f"df -hT {args.workdir} | tail -1")
    lines = [
        "## Prewarm",
        "",
        f"Command: `.venv/bin/python benchmarks/prewarm_bench.py --local-gib {args.local_gib} "
        f"--fuse-gib {args.fuse_gib} --latency {args.latency} --stream-mibps {args.stream_mibps} --reps {args.reps}`",
        "",
        f"Machine: {sh('nproc')} cores, {sh('free -h | grep Mem')}, kernel {platform.release()}; "
        f"disk: `{disk}`; Python {platform.python_version()}. Every cold run is preceded by fsync + "
        "posix_fadvise(DONTNEED) on each file (checked cold with mincore); FUSE runs each get a fresh "
        f"s3fs mount (kernel_cache, no disk cache) of a loopback object store answering each GET after "
        f"{args.latency * 1000:.0f} ms and streaming {args.stream_mibps:.0f} MiB/s per GET. Median of "
        f"{args.reps} runs. A background Go build shared the 2 cores, so absolute numbers are noisy.",
        "",
        "| run | seconds | GiB/s | resident after |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, v in r.items():
        res = "n/a (new mount)" if v["resident"] < 0 else f"{v['resident']:.1%}"
        lines.append(f"| {name} | {v['secs']:.2f} | {v['gibps']:.2f} | {res} |")
    t_cold, fuse_res, t_warm = fuse_rerun
    warm_ratio = r["local ours warm re-run"]["secs"] / r["local ours"]["secs"]
    lines += [
        "",
        "Ratios (speed, higher is better for ours):",
        f"- local: ours vs vmtouch -t = {ratio('local ours', 'local vmtouch -t')} (goal >= 1x); "
        f"ours vs fio direct ceiling = {ratio('local ours', 'local fio direct (ceiling)')} (goal >= 0.9x); "
        f"ours vs seed hook = {ratio('local ours', 'local seed hook')}",
        f"- FUSE: ours vs seed hook = {ratio('fuse ours', 'fuse seed hook')} (goal >= 3x); "
        f"ours vs vmtouch -t = {ratio('fuse ours', 'fuse vmtouch -t')}",
        f"- warm re-run / cold: local {warm_ratio:.1%} (goal <= 5%); FUSE {t_warm / t_cold:.1%} "
        f"({t_warm:.2f}s vs {t_cold:.2f}s, resident after cold run {fuse_res:.1%})",
        "",
    ]
    text = "\n".join(lines) + "\n"
    with open(args.out, "a", encoding="utf-8") as f:
        f.write(("\n" if args.out.exists() and args.out.stat().st_size else "") + text)
    print(text)


if __name__ == "__main__":
    main()
