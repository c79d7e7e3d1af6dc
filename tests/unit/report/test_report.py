"""Reports: what the timeline computes equals the statistics engine at each point; the HTML holds
real PNG images; the kubectl tree shows what the objects say."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from stt_operator.kubectl_plugin import UsageError, abtest_tree, parse_ref, results_table, rollout_tree
from stt_operator.report import collect, html, timeline
from stt_operator.report.collect import Selector, SeriesData, window
from stt_operator.stats import sequential
from stt_operator.stats.ratio import PairedStats, RatioStats

PNG = b"\x89PNG\r\n\x1a\n"


def cumulative(t: np.ndarray, values: np.ndarray) -> list[tuple[float, float]]:
    """Counter samples: a first scrape before any data, then the running total after each look."""
    first = [(float(t[0]) - 15.0, 0.0)]
    return first + [(float(a), float(b)) for a, b in zip(t, np.cumsum(values), strict=True)]


def simulate(seed: int = 3, looks: int = 30, per_look: int = 20, worse: float | None = 0.05) -> dict:
    """worse=None: the candidate is the same model, an independent draw at the same error rate."""
    """Per-utterance errors of two variants on the same utterances, exported as counters per look."""
    rng = np.random.default_rng(seed)
    n = rng.integers(4, 20, size=(looks, per_look))
    base = rng.binomial(n, 0.1)
    cand = rng.binomial(n, 0.1) if worse is None else base + rng.binomial(n, worse)
    t = 1_700_000_000 + 15.0 * np.arange(looks)
    arms = {"control": base, "candidate": cand}

    def exported(f):
        return {v: cumulative(t, f(e).sum(axis=1)) for v, e in arms.items()}

    sums = timeline.RatioSums(
        count=exported(lambda e: np.ones_like(e)),
        x=exported(lambda e: e),
        y=exported(lambda e: n),
        xx=exported(lambda e: e * e),
        yy=exported(lambda e: n * n),
        xy=exported(lambda e: e * n),
    )
    d = cand - base
    pair = timeline.PairSums(
        pairs=cumulative(t, np.full(looks, per_look)),
        ref=cumulative(t, n.sum(1)),
        ref_sq=cumulative(t, (n * n).sum(1)),
        cand=cumulative(t, cand.sum(1)),
        base=cumulative(t, base.sum(1)),
        diff_sq=cumulative(t, (d * d).sum(1)),
        cand_sq=cumulative(t, (cand * cand).sum(1)),
        base_sq=cumulative(t, (base * base).sum(1)),
        cand_x_ref=cumulative(t, (cand * n).sum(1)),
        base_x_ref=cumulative(t, (base * n).sum(1)),
    )
    return {"t": t, "n": n, "base": base, "cand": cand, "sums": sums, "pair": pair}


def test_increases_handle_counter_resets() -> None:
    _, inc = timeline.increases([(0, 5), (1, 8), (2, 2), (3, 4)])  # reset between 1 and 2
    assert inc.tolist() == [0, 3, 5, 7]
    assert timeline.on_grid([(10, 1), (20, 4)], np.array([5.0, 10, 15, 25])).tolist()[1:] == [0, 0, 3]


def test_ratio_band_equals_the_engine_at_every_look() -> None:
    sim = simulate()
    bands = timeline.ratio_over_time(sim["sums"], alpha=0.05, tuning_n=500)
    for look in (1, 10, 29):
        e = sim["cand"][: look + 1].ravel()
        n = sim["n"][: look + 1].ravel()
        r = RatioStats.from_arrays(e, n)
        half = float(sequential.cs_halfwidth(r.se, e.size, 0.05, 500))
        band = bands["candidate"]
        assert band.estimate[look + 1] == pytest.approx(r.ratio)  # point 0 is the scrape before any data
        assert band.upper[look + 1] == pytest.approx(r.ratio + half)
        assert band.samples[look + 1] == e.size
    # The interval narrows as utterances accumulate.
    width = bands["control"].upper - bands["control"].lower
    assert width[-1] < width[2] / 2


def test_paired_evidence_is_the_running_minimum_and_detects_a_worse_candidate() -> None:
    sim = simulate(worse=0.06)
    ev = timeline.paired_evidence_over_time(sim["pair"], alpha=0.05, tuning_n=500)
    finite = ev.p_value[np.isfinite(ev.p_value)]
    assert np.all(np.diff(finite) <= 0)  # running minimum
    assert finite[-1] < 0.001
    last = PairedStats.from_arrays(sim["cand"].ravel(), sim["base"].ravel(), sim["n"].ravel())
    assert ev.effect[-1] == pytest.approx(last.difference)
    # A/A pairs: the plotted evidence crosses alpha in about alpha of the runs at most.
    crossed = [
        np.nanmin(timeline.paired_evidence_over_time(simulate(seed=s, worse=None)["pair"]).p_value) < 0.05
        for s in range(60)
    ]
    assert sum(crossed) <= 8  # expected <= 3 of 60; 8 is beyond the 99.9th percentile of Binomial(60, .05)


def test_split_shares_per_step_and_configured_weight() -> None:
    t = np.arange(5) * 15.0
    requests = {
        "a": cumulative(t, np.array([0, 90, 90, 90, 90])),
        "b": cumulative(t, np.array([0, 10, 10, 30, 10])),
    }
    split = timeline.split_over_time(requests, {"a": 90, "b": 10})
    assert np.isnan(split.share["a"][0])  # nothing sent in the first step
    assert split.share["a"][2] == pytest.approx(0.9)
    assert split.share["b"][4] == pytest.approx(0.25)
    assert split.weight == {"a": 0.9, "b": 0.1}


def test_live_split_is_tritons_count_less_the_replay() -> None:
    # Live traffic 80/20; the evaluator replays 10 utterances a step to each variant; the
    # evaluator is scraped a few seconds after Triton, and b's Triton restarts at step 3.
    t = np.arange(6) * 15.0
    live = {"a": np.array([0, 80, 80, 80, 80, 80]), "b": np.array([0, 20, 20, 20, 20, 20])}
    replay = np.array([0, 10, 10, 10, 10, 10])
    served = {v: cumulative(t, c + replay) for v, c in live.items()}
    served["b"] = [(x, y - 90.0 if x >= 45.0 else y) for x, y in served["b"]]  # reset: restarts from 0
    served["b"] = [(x, max(y, 0.0)) for x, y in served["b"]]
    replayed = {v: [(x + 3.0, y) for x, y in cumulative(t, replay)] for v in live}
    split = timeline.live_split_over_time(served, replayed, {"a": 80, "b": 20})
    totals = {v: float(np.nansum(split.share[v])) for v in split.share}
    assert split.weight == {"a": pytest.approx(0.8), "b": pytest.approx(0.2)}
    assert all(np.all(np.nan_to_num(s) >= 0) for s in split.share.values())
    # Over the whole window the shares come back to the live 80/20 (replay removed).
    assert totals["a"] / (totals["a"] + totals["b"]) == pytest.approx(0.8, abs=0.08)
    # The counts at the end are exact where no counter reset: 5 steps of 80 live requests.
    assert timeline.live_totals(served, replayed)["a"] == pytest.approx(400.0)
    # Without the subtraction the replay would pull the split towards 50/50.
    naive = timeline.split_over_time(served)
    assert float(np.nansum(naive.share["a"])) / len(t) < totals["a"] / len(t) + 1e-9


def test_triton_requests_query_maps_services_and_keeps_the_regex_closed() -> None:
    seen: list[str] = []

    class Source:
        def range(self, query, start, end, step):
            seen.append(query)
            return [({"service": "asr-a-1"}, [(0.0, 1.0)]), ({"service": "other"}, [(0.0, 5.0)])]

    data = SeriesData(0.0, 60.0, 15.0)
    services = {"asr-a-1": "control", "asr-b-2": "candidate", 'x".*|y': "evil"}
    got = collect.triton_requests(Source(), data, "ns", services)
    assert got == {"control": [(0.0, 1.0)]}  # a series of another Service is dropped
    (q,) = seen
    assert 'service=~"asr-a-1|asr-b-2"' in q and 'namespace="ns"' in q and ".*" not in q
    assert "nv_inference_request_success|nv_inference_request_failure" in q and q in data.queries
    assert collect.triton_requests(Source(), data, None, {'x".*': "evil"}) == {}


def test_live_keys_of_an_abtest_and_a_rollout() -> None:
    ab = {
        "kind": "ABTest",
        "metadata": {"name": "t"},
        "status": {"variants": [{"name": "control", "service": "asr-a-1"}, {"name": "candidate"}]},
    }
    assert collect.live_keys(ab) == ({"asr-a-1": "control"}, {"control": "control"})
    md = {
        "kind": "ModelDeployment",
        "metadata": {"name": "asr"},
        "status": {
            "revisions": [
                {"revision": 2, "model": "a", "revisionId": "bbbb"},
                {"revision": 1, "model": "a", "revisionId": "aaaa"},
                {"revision": 3, "model": "b", "revisionId": "cccc"},
            ]
        },
    }
    services, by_model = collect.live_keys(md)
    assert set(services) == {"asr-a-aaaa", "asr-a-bbbb", "asr-b-cccc"}
    assert by_model == {"a": "asr-a-bbbb", "b": "asr-b-cccc"}  # a model's replay: its newest revision


def test_latency_distribution_and_quantile() -> None:
    pts = {"0.1": [(0, 0), (1, 50)], "0.2": [(0, 0), (1, 90)], "+Inf": [(0, 0), (1, 100)]}
    d = timeline.latency_distribution(pts)
    assert d.counts.tolist() == [50, 40, 10]
    assert timeline.quantile(d, 0.5) == pytest.approx(0.1)
    assert timeline.quantile(d, 0.7) == pytest.approx(0.15)
    assert timeline.quantile(d, 0.99) == pytest.approx(0.2)


def test_abtest_report_is_self_contained_with_every_plot() -> None:
    sim = simulate()
    data = SeriesData(float(sim["t"][0]), float(sim["t"][-1]), 15.0)
    data.wer = data.cer = sim["sums"]
    data.pairs = {"candidate": sim["pair"]}
    data.requests = dict(sim["sums"].count)
    data.served = {v: [(x, 3 * y) for x, y in pts] for v, pts in data.requests.items()}
    data.replayed = dict(data.requests)
    t0 = float(sim["t"][0])
    data.latency_buckets = {
        "control": {"0.1": [(t0 - 15, 0), (t0 + 15, 5)], "+Inf": [(t0 - 15, 0), (t0 + 15, 6)]}
    }
    data.queries = ['sum by (variant) (stt_eval_requests_total{endpoint="asr"})']
    ab = {
        "metadata": {"name": "ab<script>", "namespace": "ns"},
        "spec": {"variants": [{"name": "control", "weight": 50}, {"name": "candidate", "weight": 50}]},
        "status": {
            "phase": "Concluded",
            "winner": "control",
            "decision": {"outcome": "Winner", "effect": 0.05},
        },
    }
    page = html.abtest_report(ab, data)
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 6  # WER, CER, evidence, live split, replay split, latency
    assert "Live traffic" in page
    assert all(base64.b64decode(i).startswith(PNG) for i in images)
    assert "<script>" not in page and "ab&lt;script&gt;" in page  # names are escaped
    assert "http://" not in page and "https://" not in page  # nothing loaded from elsewhere


def test_rollout_report_draws_weights_and_verdicts() -> None:
    md = {
        "metadata": {"name": "asr", "namespace": "ns"},
        "spec": {"strategy": {"type": "Canary"}},
        "status": {
            "phase": "RolledBack",
            "analysisRuns": [{"at": "2026-12-03T07:00:30Z", "step": 1, "metric": "wer", "outcome": "Failed"}],
            "revisions": [{"revision": 1, "model": "a", "createdAt": "2026-12-03T07:00:00Z"}],
        },
    }
    data = SeriesData(1.0, 100.0, 15.0)
    data.route_weights = {"asr-a": [(1_796_281_200.0, 100.0), (1_796_281_230.0, 80.0)]}
    figs = html.figures_rollout(md, data)
    assert set(figs) == {"timeline"} and figs["timeline"].startswith(PNG)
    assert "Failed" in html.rollout_report(md, data)
    data.served = {"asr-a": [(0.0, 0.0), (15.0, 40.0)], "asr-b": [(0.0, 0.0), (15.0, 10.0)]}
    figs = html.figures_rollout(md, data)
    assert set(figs) == {"timeline", "split"} and figs["split"].startswith(PNG)


def test_window_and_selector() -> None:
    t0, t1, step = window("2026-12-03T07:00:00Z", "2026-12-03T09:00:00Z", now=0)
    assert t1 - t0 == 7200 and step == 30  # 240 points at most
    # The end is a grid point (the newest samples are in), the start moves back to fit.
    t0, t1, step = window("2026-12-03T07:00:00Z", None, now=1_796_281_250.0)
    assert t1 == 1_796_281_250.0 and (t1 - t0) % step == 0 and t0 <= 1_796_281_200.0 < t0 + step
    assert Selector("asr", "ns").matchers(unit="word") == '{endpoint="asr",namespace="ns",unit="word"}'
    assert Selector('a"b').matchers() == '{endpoint="a\\"b"}'


def test_refs_and_trees() -> None:
    assert parse_ref("asr") == ("modeldeployments", "ModelDeployment", "asr")
    assert parse_ref("abt/x") == ("abtests", "ABTest", "x")
    assert parse_ref("x", default_kind="abt")[1] == "ABTest"
    with pytest.raises(UsageError):
        parse_ref("pods/x")
    with pytest.raises(UsageError):
        parse_ref("abt/")
    md = {
        "metadata": {"name": "asr", "namespace": "ns"},
        "spec": {"strategy": {"type": "Canary"}},
        "status": {
            "phase": "Progressing",
            "stableRevision": "r1",
            "canaryRevision": "r2",
            "currentWeight": 20,
            "revisions": [
                {"revision": 1, "revisionId": "r1", "model": "a"},
                {"revision": 2, "revisionId": "r2", "model": "b"},
            ],
            "analysisRuns": [{"step": 0, "metric": "wer", "outcome": "Passed", "value": 0.1}],
        },
    }
    route = {
        "metadata": {"name": "asr"},
        "spec": {
            "rules": [
                {"backendRefs": [{"name": "asr-a-r1", "weight": 80}, {"name": "asr-b-r2", "weight": 20}]}
            ]
        },
    }
    deps = [
        {
            "metadata": {"name": "asr-a-r1", "labels": {"stt.dev/revision": "r1"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"x": "1"}}},
            "status": {"readyReplicas": 1},
        },
        {
            "metadata": {"name": "asr-b-r2", "labels": {"stt.dev/revision": "r2"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"x": "2"}}},
            "status": {},
        },
    ]
    pods = [
        {
            "metadata": {"name": "p1", "labels": {"x": "1"}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        }
    ]
    tree = rollout_tree(md, route, deps, pods)
    assert tree.splitlines()[0].startswith("ModelDeployment ns/asr  Progressing  strategy Canary")
    assert "│   ├── asr-a-r1  weight 80" in tree
    assert "revision 1 (r1)  model a  [stable]" in tree
    assert "Deployment asr-b-r2  0/1 ready  weight 20" in tree
    assert "Pod p1  Running, ready, restarts 0" in tree
    assert tree.splitlines()[-1].startswith("    └── step 0 wer: Passed")
    ab = {
        "metadata": {"name": "ab", "namespace": "ns"},
        "spec": {"endpoint": {"modelDeploymentRef": {"name": "asr"}}},
        "status": {
            "phase": "Concluded",
            "winner": "b",
            "variants": [{"name": "a", "weight": 50, "wer": 0.2}, {"name": "b", "weight": 50, "wer": 0.1}],
            "decision": {
                "outcome": "Winner",
                "metric": "wer",
                "effect": -0.1,
                "pValue": 0.001,
                "confidenceInterval": {"lower": -0.15, "upper": -0.05, "level": 0.95},
            },
            "sampleRatio": {"pValue": 0.5, "detected": False},
        },
    }
    assert "decision Winner on wer: effect -0.1  interval [-0.15, -0.05]" in abtest_tree(ab)
    table = results_table(ab)
    assert "winner b" in table and "95% interval [-0.15, -0.05], p 0.001" in table


def test_a_series_that_appears_inside_the_window_counts_from_zero() -> None:
    pts = [(100.0, 40.0), (115.0, 50.0)]
    assert timeline.increases(pts, since=0.0)[1].tolist() == [40, 50]  # first seen inside the window
    assert timeline.increases(pts, since=95.0)[1].tolist() == [40, 50]  # even in its first step
    # A sample before the start (the query begins a step early): it was already there, and
    # only what came after the start counts.
    t, inc = timeline.increases([(85.0, 30.0), *pts], since=95.0)
    assert t.tolist() == [100.0, 115.0] and inc.tolist() == [10, 20]
    assert timeline.increases(pts, since=105.0)[1].tolist() == [10]
    assert timeline.increases(pts)[1].tolist() == [0, 10]
