"""Triton Python-backend model code shipped with the operator (real recognisers).

Each subdirectory is one model's `model.py` (plus its data); `model_source(name)` finds it so
the repository builder can copy it into `<repo>/<model>/<version>/model.py`.
"""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent


def model_source(name: str) -> Path:
    """Directory holding `model.py` for the built-in model `name` (e.g. `sphinx_stt`)."""
    path = MODELS_DIR / name
    if not (path / "model.py").is_file():
        raise FileNotFoundError(f"built-in model {name!r}: no model.py under {path}")
    return path
