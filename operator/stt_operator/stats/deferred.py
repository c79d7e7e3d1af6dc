"""scipy, imported when a statistic is first computed rather than when the operator starts.

`scipy.stats` alone is about 70 MB of resident memory (bench/scale/RESULTS.md); an operator
whose endpoints never run an analysis (Immediate rollouts, no A/B test) never needs it.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _Deferred:
    """Stands for a module; the first attribute read imports it."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


stats: Any = _Deferred("scipy.stats")
special: Any = _Deferred("scipy.special")
optimize: Any = _Deferred("scipy.optimize")
