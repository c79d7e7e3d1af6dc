"""The locally built images (hack/build-images.sh): build or reuse them, run them with podman.

`build_images()` runs the script (a no-op when every image's inputs are unchanged: the archives
are cached by content hash under ~/.cache/stt-operator/images) and returns what images.json
lists: the image reference, the docker-archive a node imports with `ctr -n k8s.io images
import`, the size and the build time. `podman_cmd()` is podman on the script's private store,
so tests run exactly the image that was built.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = Path(os.environ.get("STT_IMAGES_DIR", Path.home() / ".cache" / "stt-operator" / "images"))
IMAGE_NAMES = ("operator", "jobs", "triton")


@dataclass(frozen=True)
class BuiltImage:
    name: str  # operator | jobs | triton
    ref: str  # e.g. localhost/stt-operator:<hash>
    archive: Path  # docker-archive tarball
    hash: str
    size_bytes: int
    build_s: float


def build_images(names: tuple[str, ...] = IMAGE_NAMES, timeout: float = 3600) -> dict[str, BuiltImage]:
    """Build (or reuse) the named images; raise with the script's output tail on failure."""
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "build-images.sh"), *names],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise RuntimeError(f"hack/build-images.sh failed ({proc.returncode}):\n{tail}")
    listed = json.loads((IMAGES_DIR / "images.json").read_text())
    out = {}
    for name in names:
        entry = listed[name]
        out[name] = BuiltImage(
            name=name,
            ref=entry["ref"],
            archive=Path(entry["archive"]),
            hash=entry["hash"],
            size_bytes=int(entry["size_bytes"]),
            build_s=float(entry["build_s"]),
        )
    return out


def podman_cmd() -> list[str]:
    """podman on the build script's private store (same driver, runc: what works on this host)."""
    driver = os.environ.get("STT_IMAGES_DRIVER", "overlay")
    return [
        "podman",
        "--root",
        str(IMAGES_DIR / f"storage-{driver}"),
        "--runroot",
        str(IMAGES_DIR / f"run-{driver}"),
        "--storage-driver",
        driver,
        "--runtime",
        "runc",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "file",
    ]


def podman(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*podman_cmd(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


# podman's default limits ask for more open files and processes than this host grants its
# containers, and runc then refuses to start them ("error setting rlimits"); these fit.
ULIMITS = ("--ulimit=nofile=4096:4096", "--ulimit=nproc=4096:4096")


def podman_run(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`podman run --rm <args>` with limits this host allows."""
    return podman("run", "--rm", *ULIMITS, *args, timeout=timeout, check=check)


def image_config(ref: str) -> dict:
    """The image's OCI config (User, Entrypoint, Cmd, Env, ...)."""
    return json.loads(podman("image", "inspect", ref).stdout)[0]["Config"]
