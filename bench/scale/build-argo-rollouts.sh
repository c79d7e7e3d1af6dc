#!/usr/bin/env bash
# Build the Argo Rollouts controller from its Go module, for `run.py --argo`, into
# ~/.cache/stt-operator/tools/argo-rollouts/bin (the module's CRDs stay in src/manifests/crds).
#
# `go install github.com/argoproj/argo-rollouts/cmd/rollouts-controller@VERSION` does not work:
# the module's go.mod has replace directives, which `go install pkg@version` refuses, and
# v1.9.3 / v1.10.x ask for a newer Go than the one installed here (1.26.10 > 1.26.8). So the
# module is downloaded through the module proxy and built inside a writable copy.
set -euo pipefail
version=${1:-v1.9.0}
dir=${ARGO_ROLLOUTS_DIR:-$HOME/.cache/stt-operator/tools/argo-rollouts}
mkdir -p "$dir/bin"
src=$(cd "$dir" && GOFLAGS= go mod download -json "github.com/argoproj/argo-rollouts@$version" |
  sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[ -n "$src" ] || { echo "could not download github.com/argoproj/argo-rollouts@$version" >&2; exit 1; }
rm -rf "$dir/src" && cp -r "$src" "$dir/src" && chmod -R u+w "$dir/src"
cd "$dir/src"
GOFLAGS="-trimpath -mod=mod" nice -n 10 go build -ldflags "-s -w" -o "$dir/bin/rollouts-controller" ./cmd/rollouts-controller
"$dir/bin/rollouts-controller" --version
