"""Namespace scoping of custom PromQL (prom-label-proxy style), as pure text rewriting. The
integration test test_prometheus_analysis.py runs scoped queries on a real Prometheus."""

from __future__ import annotations

import pytest

from stt_operator.analysis.scoping import ScopeError, scope_query

NS = 'namespace="team-a"'


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("up", f"up{{{NS}}}"),
        ('up{job="x"}', f'up{{{NS},job="x"}}'),
        ("up{}", f"up{{{NS}}}"),
        ('{__name__=~".+"}', f'{{{NS},__name__=~".+"}}'),
        ('{__name__=~".+", namespace="team-b"}', f'{{{NS},__name__=~".+",namespace="team-b"}}'),
        ("sum(rate(x[5m]))", f"sum (rate (x{{{NS}}}[5m ]))"),
        ("sum by (namespace) (x)", f"sum by (namespace )(x{{{NS}}})"),
        ("sum(x) without (pod)", f"sum (x{{{NS}}})without (pod )"),
        ("a / on(job) group_left(ns) b", f"a{{{NS}}}/on (job )group_left (ns )b{{{NS}}}"),
        ("a and b or c unless d", f"a{{{NS}}}and b{{{NS}}}or c{{{NS}}}unless d{{{NS}}}"),
        ("x offset 5m", f"x{{{NS}}}offset 5m"),
        ("x @ start()", f"x{{{NS}}}@start ()"),
        ("max_over_time(x[10m:1m])", f"max_over_time (x{{{NS}}}[10m :1m ])"),
        (
            'label_replace(x, "namespace", "team-b", "", "")',
            f'label_replace (x{{{NS}}},"namespace","team-b","","")',
        ),
        ("histogram_quantile(0.95, sum by (le) (rate(h_bucket[5m])))", None),
        ("vector(1)", "vector(1)"),
        ("1 + 2", "1 + 2"),
        ("x > bool 0.5", f"x{{{NS}}}> bool 0.5 "),
        ("job:up:sum", f"job:up:sum{{{NS}}}"),
        ("x # a comment\n + y", f"x{{{NS}}}+y{{{NS}}}"),
        ("topk(3, x)", f"topk (3 ,x{{{NS}}})"),
        # Keywords where an operand starts are metric names to Prometheus: scoped as such.
        ("offset", f"offset{{{NS}}}"),
        ("sum", f"sum{{{NS}}}"),
        ("x and and", f"x{{{NS}}}and and{{{NS}}}"),
        ("rate(offset[5m])", f"rate(offset{{{NS}}}[5m])"),
        ("x offset 1m and bool", f"x{{{NS}}}offset 1m and bool{{{NS}}}"),
        ('count_values("v", x)', f'count_values ("v",x{{{NS}}})'),
    ],
)
def test_every_selector_gets_the_namespace(query: str, expected: str | None) -> None:
    out = scope_query(query, "team-a")
    if expected is not None:
        assert out.replace(" ", "") == expected.replace(" ", "")
        assert "  " not in out
    # Whatever else, every selector carries the matcher: count selectors vs matchers.
    assert out.count(NS) >= query.count("{") or query in ("vector(1)", "1 + 2")


@pytest.mark.parametrize(
    "query",
    [
        "up{",
        "up}",
        "sum(up",
        "up)",
        "x[5m",
        'info(x, {k8s_cluster_name=~".+"})',
        "x[5m{a}]",
        "up{a=(b)}",
        "x ; y",
        "x $ y",
        "sum by (a{b}) (x)",
        "x[[5m]]",
    ],
)
def test_queries_that_cannot_be_scoped_are_refused(query: str) -> None:
    with pytest.raises(ScopeError):
        scope_query(query, "team-a")


def test_namespace_is_escaped() -> None:
    assert scope_query("up", 'a"b') == 'up{namespace="a\\"b"}'


def test_empty_namespace_is_refused() -> None:
    with pytest.raises(ScopeError):
        scope_query("up", "")
