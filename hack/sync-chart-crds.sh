#!/usr/bin/env bash
# Copies the generated CRDs (crds/*.yaml, from the pydantic API models) into the Helm chart's
# crds/ directory, removing chart copies whose source is gone. The chart's own
# kopf-peerings.yaml (Kopf's peering CRDs) is not generated and stays.
#
#   hack/sync-chart-crds.sh           # copy
#   hack/sync-chart-crds.sh --check   # exit 1 and name the files that drifted
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/crds"
dst="$root/charts/stt-operator/crds"
keep="kopf-peerings.yaml"
check=false
[[ "${1:-}" == "--check" ]] && check=true

shopt -s nullglob
drift=()
for f in "$src"/*.yaml; do
  name=$(basename "$f")
  [[ "$name" == "$keep" ]] && { echo "crds/$keep would shadow the chart's Kopf CRDs; rename it" >&2; exit 2; }
  if ! cmp -s "$f" "$dst/$name"; then
    drift+=("$name")
    $check || cp "$f" "$dst/$name"
  fi
done
for f in "$dst"/*.yaml; do
  name=$(basename "$f")
  [[ "$name" == "$keep" || -f "$src/$name" ]] && continue
  drift+=("$name (stale)")
  $check || rm -f "$f"
done

if $check && ((${#drift[@]})); then
  echo "chart CRDs differ from crds/: ${drift[*]}; run hack/sync-chart-crds.sh" >&2
  exit 1
fi
$check || echo "chart CRDs in sync (${#drift[@]} updated)"
