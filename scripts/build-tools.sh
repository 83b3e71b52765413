#!/usr/bin/env bash
# Build the pinned control-plane test tools (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok, helm) from the Go module
# proxy into a cache outside the repository, keyed by their versions.
#
#   scripts/build-tools.sh          build what is missing, print the bin dir
#   scripts/build-tools.sh --print  print the bin dir only (may not exist yet)
#
# Already-built binaries are skipped; a failed build names the component and
# shows the tail of its log. Per-component build times go to $BIN/build-times.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/tools/versions.env"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-trimpath

key_input() {
  cat "$ROOT/tools/versions.env" "$ROOT/tools/k8s/go.mod" "$ROOT/tools/etcd/go.mod"
  go version
}
KEY=$(key_input | sha256sum | cut -c1-16)
CACHE=${TIERGATE_TOOLS_CACHE:-$HOME/.cache/tiergate-tools}
BIN=$CACHE/$KEY/bin

if [[ ${1:-} == --print ]]; then echo "$BIN"; exit 0; fi

mkdir -p "$BIN" "$CACHE/logs"
say() { printf '[build-tools] %s\n' "$*" >&2; }

# build NAME CHECK_CMD... -- BUILD_CMD...: run BUILD_CMD unless $BIN/NAME exists.
build() {
  local name=$1; shift
  if [[ -x $BIN/$name ]]; then say "$name: cached"; return 0; fi
  local log=$CACHE/logs/$name.log start=$SECONDS
  say "$name: building (log: $log)"
  if ! "$@" >"$log" 2>&1; then
    say "FAILED to build $name; last lines of $log:"
    tail -n 30 "$log" >&2
    exit 1
  fi
  if [[ ! -x $BIN/$name ]]; then
    say "FAILED to build $name: the build ran but $BIN/$name is missing"; exit 1
  fi
  say "$name: built in $((SECONDS - start)) s"
  echo "$name $((SECONDS - start))" >>"$BIN/build-times"
}

k8s_ldflags() {
  local minor=${K8S_VERSION#1.}; minor=${minor%%.*}
  local ld="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.gitCommit=none -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$ld"
}

build_k8s() {  # $1 = command name
  (cd "$ROOT/tools/k8s" && go build -ldflags "$(k8s_ldflags)" -o "$BIN/$1" "k8s.io/kubernetes/cmd/$1")
}

build_etcd() {
  (cd "$ROOT/tools/etcd" && go build -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
}

build_helm() {
  GOBIN=$BIN go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
}

build_kwok() {
  GOBIN=$BIN go install -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=v$KWOK_VERSION" \
    "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
  # kwok's stage definitions ship in its module; keep a copy beside the binary.
  local src
  src=$(go env GOMODCACHE)/sigs.k8s.io/kwok@v$KWOK_VERSION/kustomize/stage
  rm -rf "$BIN/kwok-stages" && cp -r "$src" "$BIN/kwok-stages" && chmod -R u+w "$BIN/kwok-stages"
}

build etcd build_etcd
build kube-apiserver build_k8s kube-apiserver
build kube-controller-manager build_k8s kube-controller-manager
build kube-scheduler build_k8s kube-scheduler
build kwok build_kwok
build helm build_helm

"$BIN/kube-apiserver" --version | grep -q "v$K8S_VERSION" \
  || { say "kube-apiserver is not stamped v$K8S_VERSION"; exit 1; }
say "all tools ready in $BIN"
echo "$BIN"
