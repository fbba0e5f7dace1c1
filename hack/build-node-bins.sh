#!/usr/bin/env bash
# Builds the real node's container runtime (containerd, its runc shim and ctr) from Go modules and caches it
# under $MODELCACHE_BIN_CACHE/containerd-<version>/. A cached build is reused. runc and the CNI plugins come
# from Debian (apt-get install runc containernetworking-plugins); the kubelet from hack/build-bins.sh.
# Run it through `modelcache-devcluster build --real-node`, which passes the pinned version.
set -euo pipefail
: "${CONTAINERD_VERSION:?}" "${MODELCACHE_BIN_CACHE:?}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

out="$MODELCACHE_BIN_CACHE/containerd-$CONTAINERD_VERSION"
if [ -x "$out/containerd" ] && [ -x "$out/ctr" ] && [ -x "$out/containerd-shim-runc-v2" ]; then
  echo "[build-node-bins] containerd $CONTAINERD_VERSION cached" >&2; exit 0
fi
echo "[build-node-bins] building containerd $CONTAINERD_VERSION (about 5 minutes cold on 2 cores)" >&2
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
printf 'module local/containerdbins\n\ngo 1.25.0\n' > "$work/go.mod"
mod=github.com/containerd/containerd/v2
(cd "$work" && go get "$mod@$CONTAINERD_VERSION")
mkdir -p "$out.tmp"
# Static, without the cgo-only snapshotters (btrfs, devmapper, zfs): the node uses overlayfs.
(cd "$work" && go build -trimpath -tags "no_btrfs no_devmapper no_zfs" \
   -ldflags "-s -w -X $mod/version.Version=$CONTAINERD_VERSION" -o "$out.tmp/" \
   "$mod/cmd/containerd" "$mod/cmd/ctr" "$mod/cmd/containerd-shim-runc-v2")
rm -rf "$out"; mv "$out.tmp" "$out"
