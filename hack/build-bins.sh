#!/usr/bin/env bash
# Builds the local control plane's binaries from Go modules and caches them under
# $MODELCACHE_BIN_CACHE/<component>-<version>/. A cached build is reused.
# Run it through `modelcache-devcluster build` (or `make bins`), which passes the pinned versions.
set -euo pipefail

# Versions are pinned in src/modelcache_devcluster/binaries.py, which runs this script.
: "${K8S_VERSION:?}" "${ETCD_VERSION:?}" "${KWOK_VERSION:?}" "${HELM_VERSION:?}" "${MODELCACHE_BIN_CACHE:?}"
CACHE_ROOT=$MODELCACHE_BIN_CACHE

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

log() { printf '[build-bins] %s\n' "$*" >&2; }

build_kubernetes() {
  local out="$CACHE_ROOT/kubernetes-$K8S_VERSION"
  if [ -x "$out/kubectl" ] && [ -x "$out/kube-apiserver" ]; then log "kubernetes $K8S_VERSION cached"; return; fi
  log "building kubernetes $K8S_VERSION (tens of minutes cold on 2 cores)"
  local staging="v0.${K8S_VERSION#v1.}" minor work gomod ldflags
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  work=$(mktemp -d); trap 'rm -rf "$work"' RETURN
  gomod=$(cd "$work" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  # k8s.io/kubernetes replaces its staging modules with ./staging paths, which `go install` refuses;
  # a wrapper module pins each one to its published version instead.
  {
    printf 'module local/k8sbins\n\n'
    grep -E '^go |^godebug ' "$gomod"
    printf '\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$K8S_VERSION"
    sed -nE "s#^\s*(k8s\.io/[a-z0-9-]+) => \./staging/.*#\t\1 => \1 $staging#p" "$gomod"
    echo ')'
  } > "$work/go.mod"
  local pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
              k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kubelet)
  (cd "$work" && go get "${pkgs[@]/%/@$K8S_VERSION}")
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p "$out.tmp"
  (cd "$work" && go build -trimpath -tags selinux,notest -ldflags "$ldflags" -o "$out.tmp/" "${pkgs[@]}")
  rm -rf "$out"; mv "$out.tmp" "$out"
}

build_etcd() {
  local out="$CACHE_ROOT/etcd-$ETCD_VERSION"
  if [ -x "$out/etcd" ]; then log "etcd $ETCD_VERSION cached"; return; fi
  log "building etcd $ETCD_VERSION"
  local work; work=$(mktemp -d); trap 'rm -rf "$work"' RETURN
  printf 'module local/etcdbin\n\ngo 1.25.0\n' > "$work/go.mod"
  (cd "$work" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" \
     && mkdir -p "$out.tmp" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$out"; mv "$out.tmp" "$out"
}

build_kwok() {
  local out="$CACHE_ROOT/kwok-$KWOK_VERSION"
  if [ -x "$out/kwok" ]; then log "kwok $KWOK_VERSION cached"; return; fi
  log "building kwok $KWOK_VERSION"
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  # Standalone kwok has no built-in stages; keep the module's stage files beside the binary.
  cp -r "$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage" "$out.tmp/stage"
  chmod -R u+w "$out.tmp/stage"
  rm -rf "$out"; mv "$out.tmp" "$out"
}

build_helm() {
  local out="$CACHE_ROOT/helm-$HELM_VERSION"
  if [ -x "$out/helm" ]; then log "helm $HELM_VERSION cached"; return; fi
  log "building helm $HELM_VERSION"
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  rm -rf "$out"; mv "$out.tmp" "$out"
}

mkdir -p "$CACHE_ROOT"
build_etcd
build_kwok
build_helm
build_kubernetes
log "all binaries ready under $CACHE_ROOT"
