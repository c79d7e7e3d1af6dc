"""pytest fixtures: a real local tritonserver with the pocketsphinx models, and an evaluation set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stt_harness.triton import LocalTriton, local_sphinx_triton


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    """tritonserver (from nvidia-pytriton) serving `sphinx-baseline` and `sphinx-degraded`."""
    with local_sphinx_triton(tmp_path_factory.mktemp("triton")) as server:
        yield server


@pytest.fixture(scope="session")
def small_evalset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthesised command utterances (espeak-ng + sox), deterministic for the seed."""
    from stt_operator.speech.evalset import generate_evalset

    return generate_evalset(tmp_path_factory.mktemp("evalset"), 24, seed=11)
