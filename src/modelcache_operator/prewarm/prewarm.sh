#!/bin/sh
# Page-cache prewarm fallback for images without python3 (POSIX sh, busybox-friendly).
#   prewarm.sh --dir DIR [--dir DIR2] [--concurrency N] [--timeout S] [--log-file PATH]
# File names only ever travel as NUL-separated data into `xargs -0 cat`; no shell parses them.
# Always exits 0 within the timeout: a failing or hanging postStart hook would block the pod.

conc=${PREWARM_CONCURRENCY:-16}
to=${PREWARM_TIMEOUT_SECONDS:-600}
log=
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
    *) echo "modelcache-prewarm: ignoring argument: $1" ;;
  esac
  shift; nargs=$((nargs - 1))
done
if [ "$ndirs" -eq 0 ] && [ -n "${MODEL_DIR:-}" ]; then set -- "$MODEL_DIR"; ndirs=1; fi
if [ "$ndirs" -eq 0 ]; then echo "modelcache-prewarm: no --dir and no \$MODEL_DIR; nothing warmed"; exit 0; fi
case $conc in ''|*[!0-9]*|0) conc=16 ;; esac
to=${to%%.*}
case $to in ''|*[!0-9]*|0) to=1 ;; esac

# Scratch files for counts; a read-only root just loses the counts, never the warming.
tmp=$(mktemp -d 2>/dev/null) || tmp=
errf=/dev/null countf=/dev/null
if [ -n "$tmp" ]; then errf=$tmp/errors countf=$tmp/files; fi
par="-P $conc"
echo | xargs -P 1 true 2>/dev/null || par=  # busybox built without parallel xargs
start=$(date +%s)
# Background jobs, bounded by the polling loop below even where `timeout` is missing. Their
# output never reaches our stdout, so stragglers can't hold the hook's exec stream open.
find "$@" -name .modelcache -prune -o -type f -print0 2>/dev/null | tr -cd '\000' | wc -c >"$countf" &
find "$@" -name .modelcache -prune -o -type f -print0 2>/dev/null \
  | xargs -0 -r -n 8 $par cat -- >/dev/null 2>"$errf" &
pid=$!
timed_out=false
while kill -0 "$pid" 2>/dev/null; do
  if [ $(($(date +%s) - start)) -ge "$to" ]; then
    timed_out=true
    kill "$pid" 2>/dev/null
    break
  fi
  sleep 1
done
elapsed=$(($(date +%s) - start))
files=$(cat "$countf" 2>/dev/null | tr -d ' ')
errors=$(grep -c '^cat:' "$errf" 2>/dev/null)
[ -n "$tmp" ] && rm -rf "$tmp"
line="modelcache-prewarm: mode=sh files=${files:-?} in ${elapsed}s errors=${errors:-0} timeout=$timed_out"
echo "$line"
if [ -n "$log" ]; then echo "$line" >>"$log" 2>/dev/null; fi
exit 0
