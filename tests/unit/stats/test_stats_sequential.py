"""Always-valid inference: closed forms, duality, and the A/A property it exists for."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stt_operator.stats import sequential as sq


def test_rho_and_halfwidth_closed_form() -> None:
    alpha, n_star = 0.05, 1000.0
    la = -2 * math.log(alpha)
    r2 = (la + math.log(la + 1)) / n_star
    assert sq.rho_squared(alpha, n_star) == pytest.approx(r2)
    t, sigma = 400.0, 2.0
    expected = sigma * math.sqrt(2 * (t * r2 + 1) / (t * t * r2) * math.log(math.sqrt(t * r2 + 1) / alpha))
    assert float(sq.cs_halfwidth(sigma / math.sqrt(t), t, alpha, n_star)) == pytest.approx(expected)
    # Wider than the fixed-horizon interval: the price of looking at every interval.
    assert expected > 1.96 * sigma / math.sqrt(t)


def test_p_value_is_the_dual_of_the_confidence_sequence() -> None:
    alpha, n_star, t, se = 0.05, 500.0, 800.0, 0.01
    half = float(sq.cs_halfwidth(se, t, alpha, n_star))
    p_two, _, _ = sq.always_valid_p(half / se, t, alpha, n_star)
    assert p_two == pytest.approx(alpha, rel=1e-9)


@settings(deadline=None)  # shared CI machines are slow; no per-example deadline
@given(z=st.floats(-8, 8), t=st.floats(2, 1e6))
def test_p_values_valid_and_ordered(z: float, t: float) -> None:
    two, greater, less = sq.always_valid_p(z, t, 0.05, 1000.0)
    fixed_two, _, _ = sq.fixed_horizon_p(z)
    for p in (two, greater, less):
        assert 0.0 <= p <= 1.0
    assert two >= fixed_two - 1e-12  # never less conservative than a single fixed-horizon test
    if z > 0:
        assert greater <= two + 1e-12  # the one-sided mixture gains power on its side


def test_infinite_z_gives_limits() -> None:
    two, greater, less = sq.always_valid_p(math.inf, 100, 0.05, 100)
    assert two == 0.0 and greater == 0.0 and less == 1.0


def test_aa_false_decisions_bounded_over_120_looks() -> None:
    """Peeking 120 times: the naive z-test rejects far above alpha, the always-valid test does not."""
    rng = np.random.default_rng(0)
    runs, looks, per_look = 2000, 120, 20
    x = rng.standard_normal((runs, looks * per_look))
    sums = np.cumsum(x, axis=1)[:, per_look - 1 :: per_look]
    t = np.arange(1, looks + 1) * per_look
    z = sums / np.sqrt(t)
    p_seq, _, _ = sq.always_valid_p(z, t, 0.05, 500.0)
    p_fix, _, _ = sq.fixed_horizon_p(z)
    seq_rate = np.mean(np.any(p_seq < 0.05, axis=1))
    naive_rate = np.mean(np.any(p_fix < 0.05, axis=1))
    assert seq_rate <= 0.05
    assert naive_rate > 0.25


def test_running_min() -> None:
    assert sq.running_min(None, 0.3) == 0.3
    assert sq.running_min(0.2, 0.3) == 0.2


def test_bad_parameters_named() -> None:
    with pytest.raises(ValueError, match="alpha"):
        sq.rho_squared(1.5, 10)
    with pytest.raises(ValueError, match="tuning_n"):
        sq.rho_squared(0.05, 0)
