"""bench/stats/ab_matrix.py at reduced size: every preset x split x design keeps its false
rollback and false winner rates consistent with <= alpha (the 95 % Clopper-Pearson lower bound
stays below alpha), never names the worse variant the winner, and detects clear regressions on
even splits. The full-size figures are in bench/stats/RESULTS.md."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ab_matrix", ROOT / "bench" / "stats" / "ab_matrix.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ab_matrix"] = mod
    spec.loader.exec_module(mod)
    return mod


M = _load()
RUNS, POWER_RUNS, LOOKS = 20, 4, 16


@pytest.mark.parametrize("index", range(len(M.cells())), ids=[c.name for c in M.cells()])
def test_cell_error_rates_within_alpha(index: int) -> None:
    cell = M.cells()[index]
    r = M.run_cell((cell, RUNS, POWER_RUNS, LOOKS, 7 + 1000 * index))
    assert M.cp(r.false_rollback, r.runs)[0] <= M.ALPHA, f"{cell.name}: {r.false_rollback}/{r.runs}"
    assert M.cp(r.false_winner, r.runs)[0] <= M.ALPHA, f"{cell.name}: {r.false_winner}/{r.runs}"
    assert r.wrong_winner == 0
    if cell.split == "50/50":
        assert r.power_rollback >= POWER_RUNS // 2 and r.power_winner >= POWER_RUNS // 2, r
