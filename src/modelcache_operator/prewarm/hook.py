"""Exec commands the webhook injects to install, gate on and run the prewarm program.

Paths and names reach the shell only as positional parameters ("$@"); the script text is a
constant, so a model directory named ``$(reboot)`` is data, never code.
"""

from __future__ import annotations

PROGRAM = "prewarm.py"
FALLBACK = "prewarm.sh"

# $1 tools dir, $2 concurrency, $3 timeout seconds, $4 log file, $5 container log ("" for none),
# $6... model dirs.
# python3 (3.8+) runs prewarm.py, else the sh fallback; both bound themselves by the timeout and
# exit 0. `timeout` (where present and working) is an outer guard in case python3 itself hangs.
# `-I -S`: ignore the image's PYTHON* variables and site-packages; prewarm.py is stdlib-only.
# No separate version probe (a whole interpreter start-up on every pod start): prewarm.py exits
# 0 once it runs, 3 on Python < 3.8; 1 (SyntaxError on older 3.x) or 2 (no -I: Python 2) mean it
# could not run. Those three fall back to prewarm.sh; anything else (e.g. 137 from the guard's
# KILL) does not, so a timed-out run is never repeated.
POSTSTART_SCRIPT = r"""
tools=$1 conc=$2 to=$3 log=$4 clog=$5
shift 5
n=$#
for d do set -- "$@" --dir "$d"; done
shift "$n"
if [ -n "$clog" ]; then set -- --container-log "$clog" "$@"; fi
set -- --concurrency "$conc" --timeout "$to" --log-file "$log" "$@"
guard=
if timeout 5 true >/dev/null 2>&1; then guard="timeout -s KILL $((${to%%.*} + 30))"; fi
rc=127
if command -v python3 >/dev/null 2>&1; then
  $guard python3 -I -S "$tools/prewarm.py" warm "$@"
  rc=$?
fi
case $rc in 1|2|3|127) $guard sh "$tools/prewarm.sh" "$@" ;; esac
exit 0
"""


# The container's own stdout, i.e. its `kubectl logs`: PID 1 is the container's main process. A hook's
# exec output is shown nowhere unless the hook fails, so this is where the user sees the result. Where
# PID 1 is not the server (shareProcessNamespace: the pause process) or runs as another user, the
# write fails quietly and the log file still has the line.
CONTAINER_LOG = "/proc/1/fd/1"


def poststart_command(
    tools_dir: str, model_dirs: list[str], concurrency: int, timeout_seconds: int, log_file: str,
    *, container_log: str = CONTAINER_LOG,
) -> list[str]:
    """postStart exec command: warm the page cache with model_dirs' files; always exits 0. The summary
    goes to stdout, log_file and container_log ("" for none)."""
    if not model_dirs:
        raise ValueError("model_dirs must not be empty")
    if concurrency < 1 or timeout_seconds < 1:
        raise ValueError("concurrency and timeout_seconds must be >= 1")
    return [
        "/bin/sh", "-c", POSTSTART_SCRIPT, "modelcache-prewarm",
        tools_dir, str(concurrency), str(timeout_seconds), log_file, container_log, *model_dirs,
    ]


def wait_command(
    tools_dir: str, model_dir: str, timeout_seconds: int, interval_seconds: float = 2.0
) -> list[str]:
    """Init-container command: exit 0 once model_dir/.modelcache/manifest.json is complete,
    1 after timeout_seconds (0 waits forever). Needs python3 in the container's image."""
    return [
        "python3", "-I", "-S", f"{tools_dir.rstrip('/')}/{PROGRAM}", "wait",
        "--dir", model_dir, "--timeout", str(timeout_seconds), "--interval", str(interval_seconds),
    ]


def install_command(tools_dir: str) -> list[str]:
    """Init-container command (operator image): copy prewarm.py and prewarm.sh into tools_dir."""
    return ["modelcache-prewarm", "install", tools_dir]
