#!/usr/bin/env bash
# Build the local images without any image registry, cached by the content hash of their inputs:
#
#   base      Debian bookworm from Debian packages (mmdebstrap), imported with podman
#   operator  the Dockerfile's default target on that base (`stt-operator run`, slim)
#   jobs      --target jobs: validation/quantization Jobs, evaluator, fetch-model init container
#   triton    --target triton: CPU tritonserver from the nvidia-pytriton wheel + built-in models
#
# Each image is saved as a docker-archive tarball that `ctr -n k8s.io images import` accepts.
# Everything lives outside the repository in $STT_IMAGES_DIR (~/.cache/stt-operator/images):
#   storage-<driver>/  podman's own store (overlay by default, runc), apart from any other podman user
#   <name>-<hash>.tar  the archives; images.json lists ref, archive, hash, size, build time
# An image is rebuilt only when its hash changes (inputs: Dockerfile, .dockerignore,
# pyproject.toml, README.md, operator/, images/, the base's recipe). Usage:
#   bash hack/build-images.sh [operator|jobs|triton ...]   (default: all; prints images.json)
#
# Inside builds pip uses the host's pip configuration and trusts the CA bundle it names: both
# are mounted read-only into the RUN steps (never copied into an image). Needs podman, buildah
# and mmdebstrap (`make deps` installs them).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${STT_IMAGES_DIR:-$HOME/.cache/stt-operator/images}"
SUITE=bookworm
BASE_PACKAGES="python3,python3-venv,python-is-python3,ca-certificates,passwd,libpython3.11"
NICE=(nice -n 10)
mkdir -p "$DIR"
exec 9>"$DIR/.lock"
flock 9 # one build at a time per cache directory (parallel test sessions wait here)

for tool in podman mmdebstrap; do
  command -v "$tool" >/dev/null || { echo "build-images: $tool missing (make deps)" >&2; exit 1; }
done
# A private store. overlay (native, rootful) is fast and shares layers; STT_IMAGES_DRIVER=vfs works
# where overlay mounts are refused (nested containers) at the price of a full copy per layer.
# runc, not crun: crun refuses this host's hybrid cgroup v1 layout.
DRIVER="${STT_IMAGES_DRIVER:-overlay}"
PODMAN=(podman --root "$DIR/storage-$DRIVER" --runroot "$DIR/run-$DRIVER" --storage-driver "$DRIVER"
  --runtime runc --cgroup-manager cgroupfs --events-backend file)

sha() { sha256sum | cut -c1-16; }
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$1" "$(now)"; }

# --- pip configuration of the host, as one file mounted read-only into builds ---------------
# `pip config list` merges files and PIP_* variables; builds see the same values. The CA bundle
# it names (cert=...) and a local find-links directory are mounted at the same paths.
PIP_CONF="$DIR/pip.conf"
MOUNTS=()
python3 - "$PIP_CONF" <<'EOF'
import configparser, os, subprocess, sys
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
conf = configparser.ConfigParser()
conf["global"] = {}
for line in (out.stdout if out.returncode == 0 else "").splitlines():
    key, _, value = line.partition("=")
    option = key.split(".", 1)[-1]
    if option and value:
        conf["global"][option] = value.strip().strip("'\"")
# pip config list does not show variables it has no config for; PIP_* are options too.
for name, value in os.environ.items():
    if name.startswith("PIP_") and name != "PIP_CONFIG_FILE":
        conf["global"][name[4:].lower().replace("_", "-")] = value
with open(sys.argv[1], "w") as f:
    conf.write(f)
EOF
MOUNTS+=(-v "$PIP_CONF:/etc/pip.conf:ro")
for key in cert client-cert; do
  path="$(sed -n "s/^$key = //p" "$PIP_CONF" | head -1)"
  [ -n "$path" ] && [ -f "$path" ] && MOUNTS+=(-v "$path:$path:ro")
done
for path in $(sed -n 's/^find-links = //p' "$PIP_CONF"); do
  [ -d "$path" ] && MOUNTS+=(-v "$path:$path:ro")
done
PIP_CONF_HASH="$(sha <"$PIP_CONF")"

# --- base --------------------------------------------------------------------------------
BASE_HASH="$(printf '%s\n' "$SUITE" "$BASE_PACKAGES" minbase | sha)"
BASE_ARCHIVE="$DIR/base-$BASE_HASH.tar"
BASE_REF="localhost/stt-base:$SUITE-$BASE_HASH"
if ! "${PODMAN[@]}" image exists "$BASE_REF"; then
  if [ ! -s "$BASE_ARCHIVE" ]; then
    echo "build-images: base $BASE_REF (mmdebstrap $SUITE)" >&2
    t0="$(now)"
    "${NICE[@]}" mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" \
      --aptopt='Acquire::Retries "3"' \
      --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
      "$SUITE" "$DIR/rootfs-$BASE_HASH.tar"
    "${PODMAN[@]}" import --change 'CMD ["python3"]' "$DIR/rootfs-$BASE_HASH.tar" "$BASE_REF" >/dev/null
    rm -f "$DIR/rootfs-$BASE_HASH.tar"
    # Kept as an image archive: a new store (another driver, a cleaned one) loads it in seconds.
    "${PODMAN[@]}" save --format docker-archive -o "$BASE_ARCHIVE.part" "$BASE_REF"
    mv "$BASE_ARCHIVE.part" "$BASE_ARCHIVE"
    echo "base $(elapsed "$t0")" >>"$DIR/timings.log"
  else
    "${PODMAN[@]}" load -i "$BASE_ARCHIVE" >/dev/null
  fi
fi

# --- the project's images -----------------------------------------------------------------
# The build context is a snapshot of exactly the hashed files, so an edit made while a build
# runs cannot end up in an image under the old hash.
CONTEXT="$(mktemp -d "$DIR/context.XXXXXX")"
trap 'rm -rf "$CONTEXT"' EXIT
(
  cd "$ROOT"
  find Dockerfile .dockerignore pyproject.toml README.md operator images -type f \
    ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 |
    LC_ALL=C sort -z | xargs -0 cp --parents -t "$CONTEXT"
)
HASH="$(
  cd "$CONTEXT"
  find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  echo "$BASE_REF $PIP_CONF_HASH"
)"
HASH="$(sha <<<"$HASH")"

declare -A REPO=([operator]=localhost/stt-operator [jobs]=localhost/stt-operator-jobs
  [triton]=localhost/stt-triton-cpu)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(operator jobs triton)

for target in "${TARGETS[@]}"; do
  [ -n "${REPO[$target]:-}" ] || { echo "build-images: unknown image $target" >&2; exit 2; }
  ref="${REPO[$target]}:$HASH"
  archive="$DIR/$target-$HASH.tar"
  if [ -s "$archive" ] && [ -s "$archive.json" ]; then
    continue
  fi
  echo "build-images: $ref" >&2
  t0="$(now)"
  if ! "${PODMAN[@]}" image exists "$ref"; then
    # --layers reuses unchanged steps between targets and builds; the stages shared by two
    # targets (build-jobs for jobs and triton) are built once.
    "${NICE[@]}" "${PODMAN[@]}" build --layers --target "$target" --tag "$ref" \
      --build-arg PYTHON_IMAGE="$BASE_REF" "${MOUNTS[@]}" -f "$CONTEXT/Dockerfile" "$CONTEXT" >&2
  fi
  build_s="$(elapsed "$t0")"
  rm -f "$DIR/$target"-*.tar "$DIR/$target"-*.tar.json # older hashes of this image
  for old in $("${PODMAN[@]}" images --format '{{.Repository}}:{{.Tag}}' --filter "reference=${REPO[$target]}"); do
    [ "$old" = "$ref" ] || "${PODMAN[@]}" rmi "$old" >/dev/null 2>&1 || true
  done
  "${PODMAN[@]}" save --format docker-archive -o "$archive.part" "$ref"
  mv "$archive.part" "$archive"
  size="$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$ref")"
  printf '{"name": "%s", "ref": "%s", "archive": "%s", "hash": "%s", "size_bytes": %s, "build_s": %s}\n' \
    "$target" "$ref" "$archive" "$HASH" "$size" "$build_s" >"$archive.json"
  echo "$target $build_s $size" >>"$DIR/timings.log"
done

# images.json: every image's latest archive (what the test fixtures import into containerd).
python3 - "$DIR" <<'EOF'
import glob, json, os, sys
d = sys.argv[1]
images = {}
for path in sorted(glob.glob(os.path.join(d, "*.tar.json")), key=os.path.getmtime):
    entry = json.load(open(path))
    images[entry["name"]] = entry
with open(os.path.join(d, "images.json.part"), "w") as f:
    json.dump(images, f, indent=2)
os.replace(os.path.join(d, "images.json.part"), os.path.join(d, "images.json"))
print(json.dumps(images, indent=2))
EOF
