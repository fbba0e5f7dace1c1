#!/usr/bin/env bash
# Installs the Debian packages the demo and the suite use, once: a no-op (well under a second) when all are
# present. As root it runs apt-get; otherwise it prints the one command to run and exits 1.
# Each package, and what needs it:
#   make openssl                      the Makefile; the local control plane's PKI
#   lua5.4 lua-cjson                  the Argo CD health check test
#   s3fs fuse3                        the FUSE object-store tests of prewarm
#   runc containernetworking-plugins  the real kubelet node's runtime and pod network
#   iptables iproute2                 the real node's bridge and its pod network rules
#   buildah debootstrap               the images built offline for the real node
#   util-linux                        setpriv: prewarm as a user who does not own the model files
#   vmtouch fio aria2                 the prewarm and download benchmarks' baselines
#   libfuse2                          fusepy, for the ossfs-rules test file system
set -euo pipefail

PACKAGES=(make openssl lua5.4 lua-cjson s3fs fuse3 runc containernetworking-plugins iptables iproute2
          buildah debootstrap util-linux vmtouch fio aria2
          libfuse2)

missing=()
for package in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$package" 2>/dev/null || true)
  [[ "$status" == ii* ]] || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

command="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "[system-packages] missing Debian packages: ${missing[*]}" >&2
  echo "[system-packages] run as root, then run make again:  $command" >&2
  exit 1
fi
echo "[system-packages] installing ${missing[*]} (about a minute)" >&2
started=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "[system-packages] installed in $(( $(date +%s) - started ))s" >&2
