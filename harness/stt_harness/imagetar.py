"""Write a one-layer container image as a ``docker save`` archive, from files on disk.

Standard library only, so ``hack/build-node-tools.sh`` runs it as a script with the system
Python (``python3 harness/stt_harness/imagetar.py OUT TAG --file SRC:DEST ... -- ENTRYPOINT``)
and tests import ``image_tar``. ``ctr images import`` (containerd) reads the archive; the image
keeps its tag, so pods name it with ``imagePullPolicy: Never``. Deterministic: same inputs give
the same bytes (mtime 0, numeric owner 0, sorted entries), hence the same image ID.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
    tar.addfile(info)


def layer_tar(files: Mapping[str, Path]) -> bytes:
    """An uncompressed layer holding ``files`` (image path -> host file), parents created."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for dest in sorted(files):
            parts = dest.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    _add_dir(tar, d)
            src = files[dest]
            mode = 0o755 if src.stat().st_mode & 0o111 else 0o644
            _add_bytes(tar, "/".join(parts), src.read_bytes(), mode)
        for d in ("tmp",):  # programs expect a writable /tmp
            if d not in dirs:
                info = tarfile.TarInfo(d)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o1777, 0
                tar.addfile(info)
    return buf.getvalue()


def image_tar(
    out: Path,
    tag: str,
    files: Mapping[str, Path],
    entrypoint: Sequence[str],
    user: str = "65532:65532",
    env: Sequence[str] = ("PATH=/bin:/usr/bin",),
) -> str:
    """Write ``out`` (a docker-save archive) and return the image ID (``sha256:...``)."""
    layer = layer_tar(files)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": list(entrypoint), "User": user, "Env": list(env), "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "stt_harness.imagetar", "created": "1970-01-01T00:00:00Z"}],
        "created": "1970-01-01T00:00:00Z",
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_id = hashlib.sha256(config_bytes).hexdigest()
    manifest = [{"Config": f"{config_id}.json", "RepoTags": [tag], "Layers": [f"{diff_id[7:]}/layer.tar"]}]
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, f"{config_id}.json", config_bytes)
        _add_dir(tar, diff_id[7:])
        _add_bytes(tar, f"{diff_id[7:]}/layer.tar", layer)
        _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
    tmp.replace(out)
    return f"sha256:{config_id}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="one-layer image archive from files (docker save format)")
    ap.add_argument("out", type=Path)
    ap.add_argument("tag")
    ap.add_argument("--file", action="append", default=[], metavar="SRC:DEST", help="host file -> image path")
    ap.add_argument("--user", default="65532:65532")
    ap.add_argument("entrypoint", nargs="+")
    args = ap.parse_args(argv)
    files = {}
    for spec in args.file:
        src, _, dest = spec.partition(":")
        files[dest] = Path(src)
    print(image_tar(args.out, args.tag, files, args.entrypoint, user=args.user))
    return 0


if __name__ == "__main__":
    sys.exit(main())
