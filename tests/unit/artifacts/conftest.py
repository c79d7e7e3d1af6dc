"""Builders shared by the artifact tests (real files written under tmp_path)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from stt_harness import samples


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def toy_model(tmp_path: Path) -> Path:
    return samples.write_ctc_model(tmp_path / "model" / "model.onnx", hidden=16)


@pytest.fixture
def toy_evalset(tmp_path: Path) -> Path:
    return samples.write_evalset(tmp_path / "evalset")
