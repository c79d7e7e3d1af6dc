#!/usr/bin/env bash
# Builds the real local control plane and cluster tools from Go modules into a cache
# directory outside the repository, and reuses them when nothing changed.
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  (k8s.io/kubernetes v1.36.3)
#   etcd      (go.etcd.io/etcd/server/v3; Debian bookworm's 3.4 is too old for 1.36)
#   kwok      (sigs.k8s.io/kwok; fakes nodes and pod readiness)
#   helm      (helm.sh/helm/v3)
#   Gateway API CRDs copied from the sigs.k8s.io/gateway-api module.
#   Prometheus Operator ServiceMonitor/PodMonitor/PrometheusRule CRDs from its module.
#   prometheus-operator, prometheus-config-reloader (github.com/prometheus-operator/prometheus-operator,
#             built through hack/tools/prometheus-operator) plus its remaining CRDs and the
#             upstream RBAC examples, used by the local cluster's Prometheus (stt_harness.promoperator).
#   prometheus-k8s  Prometheus from github.com/prometheus/prometheus at the version the operator's
#             module requires, with only Kubernetes service discovery (hack/tools/prometheus);
#             Debian's package is built without Kubernetes discovery, which ServiceMonitors need.
#   kwok's stock Stage files (node init + lease heartbeat, pod ready/complete/delete): the kwok
#   binary ships no default stages, so the local cluster hands these to it with --config.
#   The local real node (kubelet, kube-proxy, coredns, the pause image): hack/build-node-tools.sh.
#
# Go: the installed toolchain (1.26.x) satisfies every `go` directive pinned here, so no
# toolchain switch is needed (GOTOOLCHAIN=local makes that explicit).
#
# Prints the bin directory on its last line. Override the location with STT_TOOLS_DIR.
set -euo pipefail

K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
GATEWAY_API_VERSION=v1.6.3
PROMETHEUS_OPERATOR_VERSION=v0.85.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools_dir="${STT_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stt-operator/tools}"
bin="$tools_dir/bin"
mkdir -p "$bin" "$tools_dir/crds"
# Several test sessions may call this at once: one builds, the others wait and then reuse.
exec 9>"$tools_dir/.lock"
flock 9

export GOTOOLCHAIN=local
export GOFLAGS="-mod=mod -trimpath"
export CGO_ENABLED=0

# A stamp per tool: the inputs that decide its build. Same inputs -> reuse the binary.
stamp_of() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }
fresh() { # fresh NAME STAMP
  [[ -x "$bin/$1" && -f "$tools_dir/.stamp-$1" && "$(cat "$tools_dir/.stamp-$1")" == "$2" ]]
}
mark() { echo "$2" > "$tools_dir/.stamp-$1"; }
log() { echo "[build-tools] $*" >&2; }

k8s_stamp=$(stamp_of "$K8S_VERSION" "$(cat "$here/tools/k8s/go.mod" "$here/tools/k8s/go.sum")" "$(go env GOVERSION)")
k8s_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${K8S_VERSION} \
 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36 \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=${K8S_VERSION}"
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  if fresh "$cmd" "$k8s_stamp"; then log "$cmd up to date"; continue; fi
  log "building $cmd ($K8S_VERSION)"; start=$SECONDS
  (cd "$here/tools/k8s" && go build -ldflags "$k8s_ldflags" -o "$bin/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  mark "$cmd" "$k8s_stamp"; log "$cmd built in $((SECONDS-start))s"
done

etcd_stamp=$(stamp_of "$ETCD_VERSION" "$(cat "$here/tools/etcd/go.mod" "$here/tools/etcd/go.sum")" "$(go env GOVERSION)")
if fresh etcd "$etcd_stamp"; then log "etcd up to date"; else
  log "building etcd ($ETCD_VERSION)"; start=$SECONDS
  (cd "$here/tools/etcd" && go build -ldflags "-s -w" -o "$bin/etcd" ./cmd/etcd)
  mark etcd "$etcd_stamp"; log "etcd built in $((SECONDS-start))s"
fi

# The Prometheus Operator and its config reloader: one tools module, same pin as the CRDs below.
po_pin=$(sed -n 's/^[[:space:]]*\(require[[:space:]]*\)\{0,1\}github.com\/prometheus-operator\/prometheus-operator \(v[^ ]*\).*/\2/p' "$here/tools/prometheus-operator/go.mod" | head -1)
if [[ "$po_pin" != "$PROMETHEUS_OPERATOR_VERSION" ]]; then
  log "hack/tools/prometheus-operator pins $po_pin, expected $PROMETHEUS_OPERATOR_VERSION"; exit 1
fi
po_stamp=$(stamp_of "$PROMETHEUS_OPERATOR_VERSION" "$(cat "$here/tools/prometheus-operator/go.mod" "$here/tools/prometheus-operator/go.sum")" "$(go env GOVERSION)")
po_ldflags="-s -w -X github.com/prometheus/common/version.Version=${PROMETHEUS_OPERATOR_VERSION#v}"
for spec in prometheus-operator:operator prometheus-config-reloader:prometheus-config-reloader; do
  name=${spec%%:*}; cmd=${spec#*:}
  if fresh "$name" "$po_stamp"; then log "$name up to date"; continue; fi
  log "building $name ($PROMETHEUS_OPERATOR_VERSION)"; start=$SECONDS
  (cd "$here/tools/prometheus-operator" && nice -n 10 go build -ldflags "$po_ldflags" -o "$bin/$name" \
    "github.com/prometheus-operator/prometheus-operator/cmd/$cmd")
  mark "$name" "$po_stamp"; log "$name built in $((SECONDS-start))s"
done

# Prometheus itself, at the version the operator's module requires (v0.305.0 = Prometheus 3.5.0),
# built from a writable copy of the module with our plugin list (hack/tools/prometheus/plugins.go).
PROMETHEUS_MODULE=v0.305.0
PROMETHEUS_VERSION=3.5.0
prom_stamp=$(stamp_of "$PROMETHEUS_MODULE" "$(cat "$here/tools/prometheus/plugins.go")" "$(go env GOVERSION)")
if fresh prometheus-k8s "$prom_stamp"; then log "prometheus-k8s up to date"; else
  log "building prometheus-k8s (github.com/prometheus/prometheus@$PROMETHEUS_MODULE)"; start=$SECONDS
  src=$(cd "$here/tools/prometheus-operator" && go mod download -json "github.com/prometheus/prometheus@$PROMETHEUS_MODULE" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [[ -n "$src" ]] || { log "cannot download github.com/prometheus/prometheus@$PROMETHEUS_MODULE"; exit 1; }
  work=$(mktemp -d)
  cp -r "$src" "$work/prometheus" && chmod -R u+w "$work/prometheus"
  cp "$here/tools/prometheus/plugins.go" "$work/prometheus/plugins/plugins.go"
  (cd "$work/prometheus" && nice -n 10 go build -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION" \
    -o "$bin/prometheus-k8s" ./cmd/prometheus)
  rm -rf "$work"
  mark prometheus-k8s "$prom_stamp"; log "prometheus-k8s built in $((SECONDS-start))s"
fi

# helm built from source assumes Kubernetes 1.20 for `template`/`lint` unless told otherwise,
# as its release builds are: tell it the release this control plane runs.
helm_k8s="-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=36"
helm_k8s+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=36"
for spec in "kwok sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION|" "helm helm.sh/helm/v3/cmd/helm@$HELM_VERSION|$helm_k8s"; do
  name=${spec%% *}; rest=${spec#* }; pkg=${rest%%|*}; extra=${rest#*|}
  st=$(stamp_of "$pkg" "$extra" "$(go env GOVERSION)")
  if fresh "$name" "$st"; then log "$name up to date"; continue; fi
  log "building $name ($pkg)"; start=$SECONDS
  GOBIN="$bin" GOFLAGS="-trimpath" go install -ldflags "-s -w $extra" "$pkg"
  mark "$name" "$st"; log "$name built in $((SECONDS-start))s"
done

# Data files that ship inside Go modules: downloaded (not built), copied once per version, so a
# warm run needs neither the network nor the module cache.
copy_once() { # copy_once OUT_DIR LINK_NAME MODULE@VERSION RELATIVE_FILE_GLOB...
  local out=$1 link=$2 mod=$3 dir; shift 3
  if [[ ! -f "$out/.done" ]]; then
    dir=$(go mod download -json "$mod" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
    [[ -n "$dir" ]] || { log "cannot download $mod"; exit 1; }
    rm -rf "$out" && mkdir -p "$out"
    # Unquoted on purpose: the arguments are globs relative to the module directory.
    (cd "$dir" && cp $@ "$out"/) && chmod u+w "$out"/* && touch "$out/.done"
    log "copied $# file pattern(s) from $mod"
  fi
  ln -sfn "$out" "$link"
}

# Gateway API: the standard channel is what users install.
copy_once "$tools_dir/crds/gateway-api-$GATEWAY_API_VERSION" "$tools_dir/crds/gateway-api" \
  "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" 'config/crd/standard/*.yaml'

# Prometheus Operator: only the kinds this project's chart and operator write.
copy_once "$tools_dir/crds/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION" "$tools_dir/crds/prometheus-operator" \
  "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
  'example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml' \
  'example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml' \
  'example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml'

# What the operator itself needs at run time (only its fixture installs these): the other CRDs
# it watches and the upstream ClusterRoles of the operator and of Prometheus.
copy_once "$tools_dir/prometheus-operator-runtime-$PROMETHEUS_OPERATOR_VERSION" "$tools_dir/prometheus-operator-runtime" \
  "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
  'example/prometheus-operator-crd/monitoring.coreos.com_prometheuses.yaml' \
  'example/prometheus-operator-crd/monitoring.coreos.com_prometheusagents.yaml' \
  'example/prometheus-operator-crd/monitoring.coreos.com_alertmanagers.yaml' \
  'example/prometheus-operator-crd/monitoring.coreos.com_alertmanagerconfigs.yaml' \
  'example/prometheus-operator-crd/monitoring.coreos.com_probes.yaml' \
  'example/prometheus-operator-crd/monitoring.coreos.com_scrapeconfigs.yaml' \
  'example/prometheus-operator-crd/monitoring.coreos.com_thanosrulers.yaml' \
  'example/rbac/prometheus-operator/prometheus-operator-cluster-role.yaml' \
  'example/rbac/prometheus/prometheus-cluster-role.yaml'

copy_once "$tools_dir/kwok-stages-$KWOK_VERSION" "$tools_dir/kwok-stages" "sigs.k8s.io/kwok@$KWOK_VERSION" \
  kustomize/stage/node/fast/node-initialize.yaml \
  kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
  kustomize/stage/pod/fast/pod-ready.yaml \
  kustomize/stage/pod/fast/pod-complete.yaml \
  kustomize/stage/pod/fast/pod-delete.yaml

source "$here/build-node-tools.sh"
echo "$bin"
