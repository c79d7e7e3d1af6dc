#!/usr/bin/env bash
# Prints the directory holding Argo CD's CRDs (Application, AppProject, ApplicationSet), taken
# from the Argo CD Go module (downloaded once into the module cache, not built). The install
# tests validate manifests/argocd/application.yaml against the real Application schema.
set -euo pipefail

ARGOCD_VERSION=v3.1.0
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
dir=$(go mod download -json "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[[ -f "$dir/manifests/crds/application-crd.yaml" ]] || { echo "no Argo CD CRDs in $dir" >&2; exit 1; }
echo "$dir/manifests/crds"
