"""scipy loads when a statistic is first computed, not when the operator starts (about 70 MB
of resident memory an operator without analyses never needs)."""

from __future__ import annotations

import subprocess
import sys

CONTROLLERS = "from stt_operator.controllers import abtest, looks, modeldeployment, namespaces, sttmodel"


def test_the_operator_starts_without_scipy() -> None:
    code = f"import sys; {CONTROLLERS}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'scipy'))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_the_first_statistic_imports_it() -> None:
    code = (
        f"import sys; {CONTROLLERS}; from stt_operator.stats.deferred import stats; "
        "assert abs(stats.norm.ppf(0.975) - 1.959964) < 1e-6; print('scipy.stats' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "True"
