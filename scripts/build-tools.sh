#!/usr/bin/env bash
# Build the pinned test tools (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok, helm, kube-score, promtool) from the Go module proxy into a cache
# outside the repository.
#
#   scripts/build-tools.sh          build what is missing, print the bin dir
#   scripts/build-tools.sh --print  print the bin dir only (may not exist yet)
#
# The cache is per component: each one lives in $CACHE/components/NAME-KEY, where
# KEY hashes only what that component's build depends on (its pinned version, its
# Go module under tools/, its build recipe, the Go version). Adding or bumping one
# tool therefore rebuilds that tool alone. The printed bin dir, $CACHE/KEY/bin
# (KEY over all component keys), holds symlinks into the component dirs.
#
# Binaries built by the previous layout (one key over every version, real files in
# $CACHE/KEY/bin) are adopted, not rebuilt, for the components whose recipe did
# not change (etcd, kubernetes, kwok), once their embedded Go build info (Go
# version, module versions and checksums against tools/*/go.sum, CGO, -trimpath,
# platform) and their reported version check out.
#
# A failed build names the component and shows the tail of its log. Build times
# go to each component dir's build-time and to $BIN/build-times.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/tools/versions.env"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-trimpath

CACHE=${TIERGATE_TOOLS_CACHE:-$HOME/.cache/tiergate-tools}
COMPONENTS=(etcd k8s kwok helm kube-score promtool)
say() { printf '[build-tools] %s\n' "$*" >&2; }

outputs() {  # the files a component puts in the bin dir
  case $1 in
    etcd) echo etcd ;;
    k8s) echo kube-apiserver kube-controller-manager kube-scheduler ;;
    kwok) echo kwok kwok-stages ;;
    helm) echo helm ;;
    kube-score) echo kube-score ;;
    promtool) echo promtool ;;
  esac
}

# --- recipes: everything a recipe uses goes into its component's key (recipe_text)

k8s_ldflags() {
  local minor=${K8S_VERSION#1.}; minor=${minor%%.*}
  local ld="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.gitCommit=none -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$ld"
}

build_k8s() {  # $1 = output dir
  local cmd
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    (cd "$ROOT/tools/k8s" && go build -ldflags "$(k8s_ldflags)" -o "$1/$cmd" "k8s.io/kubernetes/cmd/$cmd") || return
  done
}

build_etcd() {
  (cd "$ROOT/tools/etcd" && go build -ldflags "-s -w" -o "$1/etcd" go.etcd.io/etcd/server/v3)
}

# helm's Makefile stamps a release with internal/version.{version,metadata,
# gitCommit,gitTreeState} and with the Kubernetes version of the client-go it
# compiles against, in pkg/chartutil (the default .Capabilities.KubeVersion that
# `helm template` checks a chart's kubeVersion against) and pkg/lint/rules
# (deprecation checks). Unstamped, both say v1.20. The commit is not stamped: the
# module proxy does not serve it.
helm_ldflags() {
  local gomod client_go minor major p
  gomod=$(go mod download -json "helm.sh/helm/v3@v$HELM_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
  client_go=$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod")  # e.g. v0.37.0
  [[ $client_go =~ ^v0\.([0-9]+)\. ]] || { echo "no k8s.io/client-go in $gomod" >&2; return 1; }
  major=1 minor=${BASH_REMATCH[1]}
  local ld="-s -w"
  ld+=" -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
  ld+=" -X helm.sh/helm/v3/internal/version.metadata="
  ld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for p in pkg/chartutil pkg/lint/rules; do
    ld+=" -X helm.sh/helm/v3/$p.k8sVersionMajor=$major -X helm.sh/helm/v3/$p.k8sVersionMinor=$minor"
  done
  echo "$ld"
}

build_helm() {
  local ld
  ld=$(helm_ldflags) || return
  GOBIN=$1 go install -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
}

build_kwok() {
  GOBIN=$1 go install -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=v$KWOK_VERSION" \
    "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION" || return
  # kwok's stage definitions ship in its module; keep a copy beside the binary.
  local src
  src=$(go env GOMODCACHE)/sigs.k8s.io/kwok@v$KWOK_VERSION/kustomize/stage
  rm -rf "$1/kwok-stages" && cp -r "$src" "$1/kwok-stages" && chmod -R u+w "$1/kwok-stages"
}

# kube-score's goreleaser build: -s -w and main.version (commit and date are not
# served by the module proxy).
build_kube-score() {
  (cd "$ROOT/tools/kube-score" && go build -ldflags "-s -w -X main.version=$KUBE_SCORE_VERSION" \
    -o "$1/kube-score" github.com/zegl/kube-score/cmd/kube-score)
}

# promtool as Prometheus's .promu.yml builds it: the netgo tag and
# prometheus/common/version stamped (the revision, branch and build user are not
# served by the module proxy; the date is fixed so the build is reproducible).
build_promtool() {
  local v=github.com/prometheus/common/version
  (cd "$ROOT/tools/promtool" && go build -tags netgo \
    -ldflags "-s -w -X $v.Version=$PROMTOOL_VERSION -X $v.Branch=HEAD -X $v.Revision=none -X $v.BuildDate=19700101-00:00:00" \
    -o "$1/promtool" github.com/prometheus/prometheus/cmd/promtool)
}

# --- checks: a built or adopted component must report its pinned version

check_etcd() { "$1/etcd" --version | grep -q "^etcd Version: $ETCD_VERSION\$"; }
check_k8s() {
  local cmd
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    "$1/$cmd" --version | grep -qx "Kubernetes v$K8S_VERSION" || return 1
  done
}
check_kwok() { "$1/kwok" --version | grep -q "^kwok version v$KWOK_VERSION " && [[ -d $1/kwok-stages ]]; }
check_helm() {
  [[ $("$1/helm" version --template '{{.Version}} {{.GitTreeState}}') == "v$HELM_VERSION clean" ]] || return 1
  # The default Kubernetes version must be the one of helm's client-go, not v1.20.
  local chart
  chart=$(mktemp -d)
  mkdir -p "$chart/templates"
  printf 'apiVersion: v2\nname: probe\nversion: 0.0.0\n' >"$chart/Chart.yaml"
  printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\ndata: {v: "%s"}\n' \
    '{{ .Capabilities.KubeVersion.Version }}' >"$chart/templates/v.yaml"
  local v
  v=$("$1/helm" template probe "$chart" | sed -n 's/^data: {v: "\(v1\.[0-9]*\.[0-9]*\)"}$/\1/p')
  rm -rf "$chart"
  [[ -n $v && $v != v1.20.* ]]
}
check_kube-score() { "$1/kube-score" version | grep -q "^kube-score version: $KUBE_SCORE_VERSION,"; }
check_promtool() { "$1/promtool" --version | grep -q "^promtool, version $PROMTOOL_VERSION "; }

# --- keys

SELF=$ROOT/scripts/build-tools.sh
function_text() {  # functions' source lines in this script (`declare -f` output varies by bash)
  local f
  for f; do
    awk -v start="$f() {" '
      index($0, start) == 1 { on = 1; print; if ($0 ~ /}[[:space:]]*$/) on = 0; next }
      on { print; if ($0 == "}") on = 0 }' "$SELF"
  done
}

recipe_text() {  # the shell functions and pins a component's build uses
  local c=$1
  function_text "build_$c" "check_$c"
  case $c in
    k8s) function_text k8s_ldflags; echo "K8S_VERSION=$K8S_VERSION" ;;
    etcd) echo "ETCD_VERSION=$ETCD_VERSION" ;;
    kwok) echo "KWOK_VERSION=$KWOK_VERSION" ;;
    helm) function_text helm_ldflags; echo "HELM_VERSION=$HELM_VERSION" ;;
    kube-score) echo "KUBE_SCORE_VERSION=$KUBE_SCORE_VERSION" ;;
    promtool) echo "PROMTOOL_VERSION=$PROMTOOL_VERSION" ;;
  esac
}

module_dir() {  # the component's Go module under tools/, if it has one
  case $1 in etcd | k8s | kube-score | promtool) echo "$ROOT/tools/$1" ;; esac
}

GO_ID=$(go env GOVERSION GOOS GOARCH GOAMD64 | tr '\n' ' ')
component_key() {
  local c=$1 mod f
  for f in "build_$c" "check_$c"; do
    [[ -n $(function_text "$f") ]] || { say "no function $f() { in $SELF"; exit 1; }
  done
  mod=$(module_dir "$c")
  {
    echo "component=$c go=$GO_ID cgo=$CGO_ENABLED goflags=$GOFLAGS"
    recipe_text "$c"
    if [[ -n $mod ]]; then cat "$mod/go.mod" "$mod/go.sum"; fi
  } | sha256sum | cut -c1-16
}

declare -A KEYS DIRS
for c in "${COMPONENTS[@]}"; do
  KEYS[$c]=$(component_key "$c")
  DIRS[$c]=$CACHE/components/$c-${KEYS[$c]}
done
KEY=$(for c in "${COMPONENTS[@]}"; do echo "$c ${KEYS[$c]}"; done | sha256sum | cut -c1-16)
BIN=$CACHE/$KEY/bin

if [[ ${1:-} == --print ]]; then echo "$BIN"; exit 0; fi

mkdir -p "$CACHE/components" "$CACHE/logs"

complete() {  # $1 = dir: every output of component $2 is there
  local out
  for out in $(outputs "$2"); do [[ -e $1/$out ]] || return 1; done
}

# buildinfo_ok BINARY [GO_SUM]: the binary's embedded build info says it was built
# the way this script builds (Go version, platform, CGO off, -trimpath) and, given
# a go.sum, that every module it holds has exactly that version and checksum there.
buildinfo_ok() {
  local info
  info=$(go version -m "$1" 2>/dev/null) || return 1
  [[ $(head -n1 <<<"$info") == *": $(go env GOVERSION)" ]] || return 1
  local want
  for want in "CGO_ENABLED=0" "-trimpath=true" "GOOS=$(go env GOOS)" "GOARCH=$(go env GOARCH)"; do
    grep -qxF "$(printf '\tbuild\t%s' "$want")" <<<"$info" || return 1
  done
  [[ -z ${2:-} ]] && return 0
  local modules
  modules=$(awk -F'\t' '($2 == "mod" || $2 == "dep" || $2 == "=>") && $5 ~ /^h1:/ { print $3 " " $4 " " $5 }' <<<"$info")
  [[ -n $modules ]] || return 1
  grep -qvxFf "$2" <<<"$modules" && return 1
  return 0
}

# adopt COMPONENT DEST: copy (hard links when possible) the component's outputs
# from a bin dir of the previous single-key layout, when they check out.
adopt() {
  local c=$1 dest=$2 legacy out gosum=
  case $c in etcd | k8s | kwok) ;; *) return 1 ;; esac  # recipes unchanged since that layout
  [[ -n $(module_dir "$c") ]] && gosum=$(module_dir "$c")/go.sum
  for legacy in "$CACHE"/*/bin; do
    [[ -d $legacy && ! -L $legacy/$(outputs "$c" | cut -d' ' -f1) ]] || continue
    complete "$legacy" "$c" || continue
    local ok=1
    for out in $(outputs "$c"); do
      [[ $out == kwok-stages ]] && continue
      buildinfo_ok "$legacy/$out" "$gosum" || { ok=0; break; }
    done
    ((ok)) && "check_$c" "$legacy" 2>/dev/null || continue
    mkdir -p "$dest"
    for out in $(outputs "$c"); do
      cp -al "$legacy/$out" "$dest/" 2>/dev/null || cp -a "$legacy/$out" "$dest/"
    done
    echo "$legacy" >"$dest/adopted-from"
    grep -E "^($(outputs "$c" | tr ' ' '|')) " "$legacy/build-times" >"$dest/build-time" 2>/dev/null || true
    say "$c: adopted the binaries in $legacy (build info and version check out)"
    return 0
  done
  return 1
}

# build_component NAME: make sure $CACHE/components/NAME-KEY is complete. Builds go
# to a temporary dir renamed into place, so a concurrent or broken run never leaves
# a half-filled component dir behind.
build_component() {
  local c=$1 dir=${DIRS[$1]}
  if complete "$dir" "$c"; then say "$c: cached"; return 0; fi
  local tmp
  tmp=$(mktemp -d "$CACHE/components/.$c-${KEYS[$c]}.XXXXXX")
  chmod 755 "$tmp"
  if ! adopt "$c" "$tmp"; then
    local log=$CACHE/logs/$c.log start=$SECONDS
    say "$c: building (log: $log)"
    if ! "build_$c" "$tmp" >"$log" 2>&1; then
      say "FAILED to build $c; last lines of $log:"
      tail -n 30 "$log" >&2
      rm -rf "$tmp"; exit 1
    fi
    if ! complete "$tmp" "$c" || ! "check_$c" "$tmp" >>"$log" 2>&1; then
      say "FAILED to build $c: the build ran but its outputs are missing or misreport their version"
      rm -rf "$tmp"; exit 1
    fi
    say "$c: built in $((SECONDS - start)) s"
    echo "$c $((SECONDS - start))" >"$tmp/build-time"
  fi
  if ! mv -T "$tmp" "$dir" 2>/dev/null; then
    rm -rf "$tmp"  # another run finished the same component first
    complete "$dir" "$c" || { say "FAILED to install $c into $dir"; exit 1; }
  fi
}

for c in "${COMPONENTS[@]}"; do build_component "$c"; done

# The bin dir: symlinks to every component's outputs.
if [[ ! -d $BIN ]]; then
  tmp=$(mktemp -d "$CACHE/.bin-$KEY.XXXXXX")
  chmod 755 "$tmp"
  for c in "${COMPONENTS[@]}"; do
    for out in $(outputs "$c"); do ln -s "${DIRS[$c]}/$out" "$tmp/$out"; done
    cat "${DIRS[$c]}/build-time" >>"$tmp/build-times" 2>/dev/null || true
  done
  mkdir -p "$CACHE/$KEY"
  mv -T "$tmp" "$BIN" 2>/dev/null || rm -rf "$tmp"
fi
for c in "${COMPONENTS[@]}"; do
  for out in $(outputs "$c"); do
    [[ -e $BIN/$out ]] || { say "$BIN/$out is missing; remove $CACHE/$KEY and run again"; exit 1; }
  done
done
say "all tools ready in $BIN"
echo "$BIN"
