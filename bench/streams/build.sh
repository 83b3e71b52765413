#!/usr/bin/env bash
# Build streambench (the Go mock upstream and load generator of bench/streams and bench/routing)
# into ~/.cache/tiergate-bench/streambench-KEY/, KEY hashing its source, this script and the Go
# toolchain: it is rebuilt only when one of them changes. Prints the binary's path.
#
#   bench/streams/build.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-trimpath GOWORK=off
CACHE=${TIERGATE_BENCH_CACHE:-$HOME/.cache/tiergate-bench}

KEY=$(
  cd "$HERE"
  {
    go env GOVERSION GOOS GOARCH GOAMD64
    for f in build.sh go.mod $(ls ./*.go | sort); do echo "== $f"; cat "$f"; done
  } | sha256sum | cut -c1-16
)
DIR=$CACHE/streambench-$KEY
BIN=$DIR/streambench

if [[ ! -x $BIN ]]; then
  mkdir -p "$CACHE"
  tmp=$(mktemp -d "$CACHE/.streambench-$KEY.XXXXXX")
  (cd "$HERE" && go build -ldflags "-s -w -X main.version=$KEY" -o "$tmp/streambench" .)
  [[ $("$tmp/streambench" version) == "$KEY" ]] || { echo "streambench: version stamp missing" >&2; exit 1; }
  # A concurrent build of the same key may have won: keep its copy.
  mv -T "$tmp" "$DIR" 2>/dev/null || rm -rf "$tmp"
fi
echo "$BIN"
