# Sourced by hack/build-tools.sh (inside its lock, with its helpers): the local real node.
#
#   kubelet, kube-proxy  from hack/tools/k8s-node: the same k8s.io/kubernetes pin as the control
#                        plane, in a module of its own so the node's extra go.sum lines leave the
#                        control plane's build stamp alone (checked below: the pins must agree)
#   coredns              from hack/tools/coredns (github.com/coredns/coredns)
#   images/pause.tar     the pause image: pause.c from the kubernetes module, static gcc build,
#                        one-layer image archive (harness/stt_harness/imagetar.py) for `ctr import`
#
# containerd, runc, the CNI plugins, iptables and conntrack come from Debian (Makefile `deps`).

COREDNS_VERSION=v1.14.7
PAUSE_TAG=3.10.2

pin_of() { sed -n 's/^[[:space:]]*k8s.io\/kubernetes \(v[^ ]*\).*/\1/p' "$1" | head -1; }
if [[ "$(pin_of "$here/tools/k8s/go.mod")" != "$(pin_of "$here/tools/k8s-node/go.mod")" ]]; then
  log "hack/tools/k8s and hack/tools/k8s-node pin different k8s.io/kubernetes versions"; exit 1
fi

node_stamp=$(stamp_of "$K8S_VERSION" "$(cat "$here/tools/k8s-node/go.mod" "$here/tools/k8s-node/go.sum")" "$(go env GOVERSION)")
for cmd in kubelet kube-proxy; do
  if fresh "$cmd" "$node_stamp"; then log "$cmd up to date"; continue; fi
  log "building $cmd ($K8S_VERSION)"; start=$SECONDS
  (cd "$here/tools/k8s-node" && go build -ldflags "$k8s_ldflags" -o "$bin/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  mark "$cmd" "$node_stamp"; log "$cmd built in $((SECONDS-start))s"
done

coredns_stamp=$(stamp_of "$COREDNS_VERSION" "$(cat "$here/tools/coredns/go.mod" "$here/tools/coredns/go.sum" "$here/tools/coredns/cmd/coredns/main.go")" "$(go env GOVERSION)")
if fresh coredns "$coredns_stamp"; then log "coredns up to date"; else
  log "building coredns ($COREDNS_VERSION)"; start=$SECONDS
  (cd "$here/tools/coredns" && go build -ldflags "-s -w" -o "$bin/coredns" ./cmd/coredns)
  mark coredns "$coredns_stamp"; log "coredns built in $((SECONDS-start))s"
fi

# The pause image, rebuilt when pause.c, the compiler or the image writer change.
mkdir -p "$tools_dir/images"
pause_src="$(cd "$here/tools/k8s-node" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')/build/pause/linux/pause.c"
imagetar="$here/../harness/stt_harness/imagetar.py"
pause_stamp=$(stamp_of "$PAUSE_TAG" "$(sha256sum "$pause_src" "$imagetar")" "$(gcc --version | head -1)")
if [[ -f "$tools_dir/images/pause.tar" && "$(cat "$tools_dir/.stamp-pause" 2>/dev/null)" == "$pause_stamp" ]]; then
  log "pause image up to date"
else
  log "building the pause image from $pause_src"
  work=$(mktemp -d)
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_TAG-$K8S_VERSION" -o "$work/pause" "$pause_src"
  strip "$work/pause"
  python3 "$imagetar" --user 65535:65535 --file "$work/pause:pause" \
    "$tools_dir/images/pause.tar" "stt.local/pause:$PAUSE_TAG" /pause >/dev/null
  rm -rf "$work"
  echo "$pause_stamp" > "$tools_dir/.stamp-pause"
fi
