#!/usr/bin/env python3
"""Warm the node's page cache with a model's files before a server loads them.

Stdlib-only (Python 3.8+): an init container copies this file and its prewarm_*.py siblings into
an emptyDir and the serving image's own ``python3`` runs it from a postStart hook.

    prewarm.py warm --dir DIR [--dir DIR2] [--concurrency N] [--timeout S] [--chunk-bytes B]
                    [--log-file P] [--container-log P] [--memory-headroom B] [--memory-reserve B]
    prewarm.py wait --dir DIR [--timeout S] [--interval S]
    prewarm.py install DEST_DIR

``warm`` always exits 0 within ``--timeout``: a hook that fails or hangs would block the pod. The
one exception is exit 3 on a Python older than 3.8, so the hook can fall back to prewarm.sh.

What ``warm`` reads (prewarm_files): the manifest's regular files (else a walk), weights first,
only their data extents. How much (prewarm_budget, prewarm_plan): no more than the container can
keep; what does not fit is left out and reported. Bounded how (prewarm_run): worker threads in a
forked child process group, killed as a whole at the deadline. How (prewarm_read): each file is
split into a few large contiguous ranges (about ``total / concurrency`` bytes, never smaller than
``--chunk-bytes``), one open file handle per range, pulled front to back into the page cache with
sendfile(2) to /dev/null (no copy to user space). On FUSE mounts (s3fs, ossfs, ...) each file is
read by one handle from its start with 128 KiB reads, at most ``FUSE_FILES_IN_FLIGHT`` files at
once: these daemons serialise the reads of one file and prefetch only ahead of a sequential
reader. Pages already resident are skipped (prewarm_residency), so a re-run costs one
cachestat/mincore call per range.
"""

from __future__ import annotations

import os
import sys
import threading
import time

# Not `typing`: importing it (and the `re` it pulls in) is ~10 ms of every pod start. mypy treats
# any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

if TYPE_CHECKING or __package__:
    from modelcache_operator.prewarm.prewarm_files import MANIFEST, manifest_paths
    from modelcache_operator.prewarm.prewarm_plan import DEFAULT_CHUNK, DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT, Options
    from modelcache_operator.prewarm.prewarm_report import PREFIX
    from modelcache_operator.prewarm.prewarm_run import warm, warm_in_process
else:  # run as a script (`python3 -I -S prewarm.py`): -I leaves our own directory off sys.path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from prewarm_files import MANIFEST, manifest_paths
    from prewarm_plan import DEFAULT_CHUNK, DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT, Options
    from prewarm_report import PREFIX
    from prewarm_run import warm, warm_in_process

# Heavier modules (argparse, shutil) are imported where they are used: the warm path's fixed cost
# is paid on every pod start, even when everything is already cached.
# ruff: noqa: PLC0415

SH_FALLBACK = "prewarm.sh"
# The modules install() copies next to prewarm.py.
SIBLINGS = (
    "prewarm_budget.py", "prewarm_files.py", "prewarm_plan.py", "prewarm_read.py", "prewarm_report.py",
    "prewarm_residency.py", "prewarm_run.py",
)

# --------------------------------------------------------------------------------------------
# wait / install


def manifest_ready(root: str) -> bool:
    try:
        with open(os.path.join(root, MANIFEST), encoding="utf-8") as f:
            manifest_paths(root, f.read())
        return True
    except (OSError, ValueError):  # absent, or still being written
        return False


def wait(root: str, timeout: float, interval: float) -> int:
    deadline = time.monotonic() + timeout if timeout > 0 else None
    finished = threading.Event()

    def watchdog() -> None:
        assert deadline is not None
        # A manifest check stuck on a hung mount must not outlive the timeout.
        if not finished.wait(max(0.0, deadline - time.monotonic()) + interval + 5):
            print(f"{PREFIX} wait: manifest check hung; giving up", flush=True)
            os._exit(1)

    if deadline is not None:
        threading.Thread(target=watchdog, daemon=True).start()
    try:
        while True:
            if manifest_ready(root):
                print(f"{PREFIX} wait: {os.path.join(root, MANIFEST)} present", flush=True)
                return 0
            if deadline is not None and time.monotonic() >= deadline:
                print(f"{PREFIX} wait: no manifest under {root} after {timeout:.0f}s", flush=True)
                return 1
            time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic())))
    finally:
        finished.set()


def install(dest: str) -> int:
    import shutil

    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(dest, exist_ok=True)
    for name in (os.path.basename(__file__), SH_FALLBACK, *SIBLINGS):
        target = os.path.join(dest, "prewarm.py" if name == os.path.basename(__file__) else name)
        tmp = f"{target}.tmp{os.getpid()}"
        shutil.copyfile(os.path.join(here, name), tmp)
        os.chmod(tmp, 0o755)  # noqa: S103 - run by other users' images
        os.replace(tmp, target)
        print(f"{PREFIX} installed {target}", flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# CLI


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, ""))
    except ValueError:
        return default


def _env_int(name: str) -> int | None:
    try:
        return int(os.environ.get(name, ""))
    except ValueError:
        return None


def parse_args(argv: list[str]) -> argparse.Namespace:
    import argparse

    p = argparse.ArgumentParser(prog="modelcache-prewarm", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    model_dir = os.environ.get("MODEL_DIR")
    w = sub.add_parser("warm", help="read a model's files into the page cache (always exits 0)")
    w.add_argument("--dir", dest="dirs", action="append", help="model directory; repeatable ($MODEL_DIR)")
    w.add_argument("--concurrency", type=int,
                   default=int(_env_float("PREWARM_CONCURRENCY", DEFAULT_CONCURRENCY)))
    w.add_argument("--timeout", type=float, default=_env_float("PREWARM_TIMEOUT_SECONDS", DEFAULT_TIMEOUT))
    w.add_argument("--chunk-bytes", type=int, default=DEFAULT_CHUNK)
    w.add_argument("--log-file")
    w.add_argument("--container-log", help="also write the summary here, e.g. /proc/1/fd/1 (the container's log)")
    w.add_argument("--memory-headroom", type=int, default=_env_int("PREWARM_MEMORY_HEADROOM_BYTES"),
                   help="bytes of the memory limit left to the server (default: 10%%, >= 64 MiB)")
    w.add_argument("--memory-reserve", type=int, default=_env_int("PREWARM_MEMORY_RESERVE_BYTES"),
                   help="bytes of MemAvailable left to the node (default: 5%% of MemTotal, >= 256 MiB)")
    w.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    a = sub.add_parser("wait", help="wait for DIR/.modelcache/manifest.json (exit 1 on timeout)")
    a.add_argument("--dir", default=model_dir, required=model_dir is None)
    a.add_argument("--timeout", type=float, default=0.0, help="seconds; 0 waits forever")
    a.add_argument("--interval", type=float, default=2.0)
    i = sub.add_parser("install", help="copy prewarm.py, its modules and prewarm.sh into DEST_DIR")
    i.add_argument("dest")
    args = p.parse_args(argv)
    if args.cmd == "warm" and not args.dirs:
        args.dirs = [model_dir] if model_dir else []
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["warm"]:
        # Even a bad command line must not fail the hook.
        try:
            args = parse_args(argv)
        except SystemExit:
            print(f"{PREFIX} bad arguments; nothing warmed", flush=True)
            return 0
        if not args.dirs:
            print(f"{PREFIX} no --dir and no $MODEL_DIR; nothing warmed", flush=True)
            return 0
        opts = Options(concurrency=args.concurrency, timeout=args.timeout, chunk_bytes=args.chunk_bytes,
                       log_file=args.log_file, container_log=args.container_log,
                       headroom=args.memory_headroom, reserve=args.memory_reserve)
        return (warm_in_process if args.in_process else warm)(args.dirs, opts)
    args = parse_args(argv)
    if args.cmd == "wait":
        return wait(args.dir, args.timeout, max(0.05, args.interval))
    return install(args.dest)


if __name__ == "__main__":
    if sys.version_info < (3, 8):  # noqa: UP036 - the serving image's python3, not ours
        sys.exit(3)  # the hook runs prewarm.sh instead
    # os._exit skips joining worker threads that may sit in a hung read.
    code = main()
    sys.stdout.flush()
    os._exit(code)
