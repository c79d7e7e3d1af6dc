"""Sample-ratio mismatch from live counts (pure parts): the replay subtracted from Triton's
counts, and two checks combined into one verdict (the planner side: test_planner.py)."""

from __future__ import annotations

from stt_operator.stats.counts import combine_sample_ratios, live_counts, sample_ratio_mismatch


def test_live_counts_subtract_the_replay() -> None:
    served = {"control": 1300.0, "candidate": 700.0}
    replay = {"control": 500.0, "candidate": 500.0}
    assert live_counts(served, replay) == {"control": 800.0, "candidate": 200.0}
    assert live_counts(served) == served
    # A scrape of the evaluator taken after Triton's: never a negative count.
    assert live_counts({"a": 10.0}, {"a": 12.0}) == {"a": 0.0}


def test_replay_pulls_a_skewed_split_toward_even_unless_subtracted() -> None:
    """90/10 live traffic with weights 90/10 plus a large equal replay: with the replay left in,
    the counts look like a mismatch; subtracted, the split is as configured."""
    weights = {"control": 90.0, "candidate": 10.0}
    served = {"control": 900.0 + 2000.0, "candidate": 100.0 + 2000.0}
    replay = {"control": 2000.0, "candidate": 2000.0}
    assert sample_ratio_mismatch(served, weights).mismatch
    assert not sample_ratio_mismatch(live_counts(served, replay), weights).mismatch


def test_combine_any_alarm_holds() -> None:
    ok = sample_ratio_mismatch({"a": 500, "b": 500}, {"a": 1, "b": 1})
    bad = sample_ratio_mismatch({"a": 800, "b": 200}, {"a": 1, "b": 1})
    assert not ok.mismatch and bad.mismatch
    both = combine_sample_ratios({"replay": ok, "live": bad})
    assert not isinstance(both, str) and both.mismatch and both.p_value == bad.p_value
    assert both.message.startswith("live sample ratio mismatch") and "replay p=" in both.message
    # No live traffic does not clear a replay alarm, and is said.
    held = combine_sample_ratios({"replay": bad, "live": "no live traffic yet"})
    assert not isinstance(held, str) and held.mismatch and "live: no live traffic yet" in held.message
    calm = combine_sample_ratios({"replay": ok, "live": "no live traffic yet"})
    assert not isinstance(calm, str) and not calm.mismatch
    assert combine_sample_ratios({"live": "no data"}) == "live: no data"
    assert combine_sample_ratios({}) == "no sample-ratio check"
