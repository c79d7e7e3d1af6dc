"""Triton model repository layout: `<repo>/<model>/config.pbtxt` + `<repo>/<model>/<version>/...`.

`repository_layout` is pure (relative path -> content); `write_model` is the thin I/O step
that materialises it (the local Triton fixture, the demo and the init container use it).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

CONFIG_FILE = "config.pbtxt"
# Triton model names become directory names and metric labels: keep them path-safe.
_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

FileContent = str | bytes | Path  # a Path is copied (a file or a directory such as model.savedmodel/)


def check_model_name(name: str) -> str:
    if not _MODEL_NAME_RE.match(name or "") or name in (".", ".."):
        raise ValueError(f"model name {name!r}: use letters, digits, '_', '.', '-' (at most 128, no '/')")
    return name


def check_relative_path(rel: str) -> PurePosixPath:
    p = PurePosixPath(rel)
    if p.is_absolute() or not p.parts or ".." in p.parts:
        raise ValueError(f"repository file {rel!r}: must be a relative path inside the version directory")
    return p


def repository_layout(
    name: str,
    config_pbtxt: str,
    version_files: Mapping[str, FileContent],
    version: int = 1,
) -> dict[str, FileContent]:
    """Relative path (from the repository root) -> content for one model and version."""
    check_model_name(name)
    if version < 1:
        raise ValueError(f"version: Triton versions are integers >= 1, got {version}")
    if not version_files:
        raise ValueError(f"model {name!r}: a version needs at least one file (model.onnx, model.py, ...)")
    layout: dict[str, FileContent] = {f"{name}/{CONFIG_FILE}": config_pbtxt}
    for rel, content in version_files.items():
        layout[f"{name}/{version}/{check_relative_path(rel)}"] = content
    return layout


def write_layout(root: str | Path, layout: Mapping[str, FileContent]) -> Path:
    """Materialise a layout under `root` (created if needed); returns `root`."""
    root = Path(root)
    for rel, content in layout.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            if content.is_dir():
                shutil.copytree(content, dest, dirs_exist_ok=True)
            else:
                shutil.copyfile(content, dest)
        elif isinstance(content, bytes):
            dest.write_bytes(content)
        else:
            dest.write_text(content)
    return root


def write_model(
    root: str | Path,
    name: str,
    config_pbtxt: str,
    version_files: Mapping[str, FileContent],
    version: int = 1,
) -> Path:
    """Write one model entry into the repository at `root`; returns the model directory."""
    write_layout(root, repository_layout(name, config_pbtxt, version_files, version))
    return Path(root) / name
