#!/bin/sh
# Page-cache prewarm fallback for images without python3 (POSIX sh, busybox-friendly).
#   prewarm.sh --dir DIR [--dir DIR2] [--concurrency N] [--timeout S] [--log-file PATH]
# File names only ever travel as NUL-separated data into `xargs -0` and on as "$@"; no shell parses
# them. Regular files only (find -type f: FIFOs, devices and symlinks are never opened); mostly
# unallocated (sparse) files are skipped, except on FUSE, whose block counts mean nothing.
# Always exits 0 within the timeout: a failing or hanging postStart hook would block the pod; at
# the timeout every process it started is killed, so no reader outlives it.
# It cannot read a manifest or measure residency: the summary says resident=n/a(sh-unmeasured).

conc=${PREWARM_CONCURRENCY:-16}
to=${PREWARM_TIMEOUT_SECONDS:-600}
log=
clog=
ndirs=0
# Rebuild "$@" as the list of directories, so names never pass through eval.
nargs=$#
while [ "$nargs" -gt 0 ]; do
  case $1 in
    --dir) case $2 in -*) set -- "$@" "./$2" ;; *) set -- "$@" "$2" ;; esac
           ndirs=$((ndirs + 1)); shift; nargs=$((nargs - 1)) ;;
    --concurrency) conc=$2; shift; nargs=$((nargs - 1)) ;;
    --timeout) to=$2; shift; nargs=$((nargs - 1)) ;;
    --log-file) log=$2; shift; nargs=$((nargs - 1)) ;;
    --container-log) clog=$2; shift; nargs=$((nargs - 1)) ;;
    --memory-headroom|--memory-reserve) shift; nargs=$((nargs - 1)) ;;  # prewarm.py only
    *) echo "modelcache-prewarm: ignoring argument: $1" ;;
  esac
  shift; nargs=$((nargs - 1))
done
if [ "$ndirs" -eq 0 ] && [ -n "${MODEL_DIR:-}" ]; then set -- "$MODEL_DIR"; ndirs=1; fi
if [ "$ndirs" -eq 0 ]; then echo "modelcache-prewarm: no --dir and no \$MODEL_DIR; nothing warmed"; exit 0; fi
case $conc in ''|*[!0-9]*|0) conc=16 ;; esac
to=${to%%.*}
case $to in ''|*[!0-9]*|0) to=1 ;; esac

report() {  # $1: the summary line, to stdout, the log file and the container's log
  echo "$1"
  if [ -n "$log" ]; then echo "$1" >>"$log" 2>/dev/null; fi
  if [ -n "$clog" ]; then (echo "$1" >>"$clog") 2>/dev/null; fi
}

# Only folders that exist; if none does, say so rather than report a warm cache.
n=$# missing=0 sparse_check=1
for d do
  if [ -d "$d" ]; then
    set -- "$@" "$d"
    case $(stat -f -c %T "$d" 2>/dev/null) in *fuse*|*65735546*) sparse_check=0 ;; esac
  else
    missing=$((missing + 1))
  fi
done
shift "$n"
if [ $# -eq 0 ]; then
  report "modelcache-prewarm: mode=sh files=0 in 0s resident=n/a(folder-missing) sparse=0 errors=0 timeout=false"
  exit 0
fi
command -v stat >/dev/null 2>&1 || sparse_check=0

# Scratch files for counts; a read-only root just loses the counts, never the warming.
tmp=$(mktemp -d 2>/dev/null) || tmp=
errf=/dev/null countf=/dev/null
if [ -n "$tmp" ]; then errf=$tmp/errors countf=$tmp/files; fi
par="-P $conc"
echo | xargs -P 1 true 2>/dev/null || par=  # busybox built without parallel xargs
# Reads each file named in "$@" unless it is over 1 MiB and less than half allocated (sparse).
reader='check=$1
shift
for f do
  if [ "$check" = 1 ] && s=$(stat -L -c "%b %B %s" -- "$f" 2>/dev/null); then
    blocks=${s%% *} rest=${s#* }
    size=${rest#* }
    if [ "$size" -gt 1048576 ] && [ $((blocks * ${rest%% *} * 2)) -lt "$size" ]; then echo "sparse: skipped" >&2; continue; fi
  fi
  cat -- "$f" >/dev/null
done'

# SIGKILLs every descendant of this shell (find, xargs, readers), stopping each first so none can
# start another reader; walks /proc with builtins only, so the walk forks nothing it would find.
kill_tree() {
  for round in 1 2; do
    family=" $$ " grew=1
    while [ $grew = 1 ]; do
      grew=0
      for s in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$s" || continue
        pid=${line%% *} rest=${line##*) }
        rest=${rest#* }
        ppid=${rest%% *}
        case $family in *" $ppid "*) case $family in *" $pid "*) ;; *) family="$family$pid " grew=1 ;; esac ;; esac
      done
    done
    for p in $family; do [ "$p" = $$ ] || kill -STOP "$p" 2>/dev/null; done
  done
  for p in $family; do [ "$p" = $$ ] || kill -KILL "$p" 2>/dev/null; done
}

start=$(date +%s)
# Background jobs, bounded by the polling loop below even where `timeout` is missing. Their
# output never reaches our stdout, so stragglers can't hold the hook's exec stream open.
find "$@" -name .modelcache -prune -o -type f -print0 2>/dev/null | tr -cd '\000' | wc -c >"$countf" &
# The check flag rides as the first argument of each batch ("$1" 0 or 1), never in the script.
find "$@" -name .modelcache -prune -o -type f -print0 2>/dev/null \
  | xargs -0 -r -n 8 $par sh -c "$reader" sh "$sparse_check" >/dev/null 2>"$errf" &
pid=$!
timed_out=false
while kill -0 "$pid" 2>/dev/null; do
  if [ $(($(date +%s) - start)) -ge "$to" ]; then
    timed_out=true
    kill_tree
    break
  fi
  sleep 1
done
elapsed=$(($(date +%s) - start))
files=$(cat "$countf" 2>/dev/null | tr -d ' ')
errors=$(grep -c '^cat:' "$errf" 2>/dev/null)
sparse=$(grep -c '^sparse:' "$errf" 2>/dev/null)
[ -n "$tmp" ] && rm -rf "$tmp"
res="n/a(sh-unmeasured)"
[ "$missing" -gt 0 ] && res="n/a(sh-unmeasured,$missing-folders-missing)"
report "modelcache-prewarm: mode=sh files=${files:-?} in ${elapsed}s resident=$res sparse=${sparse:-0} errors=${errors:-0} timeout=$timed_out"
exit 0
