"""Render a report as one self-contained HTML file: matplotlib figures inlined as PNG data URIs.

`abtest_report` and `rollout_report` take the object (as the apiserver returns it) and the
range data of `report.collect`, and return the HTML text; `figures_*` return the PNG bytes by
name so tests and people can look at each image on its own. matplotlib is an optional
dependency (extra `report`), imported only here and only when a report is drawn.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stt_operator.report import timeline as tl
from stt_operator.report.collect import SeriesData

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f")
# Client traffic only: what each Triton counted (nv_inference_request_*) less the replay.
LIVE_SPLIT_TITLE = "Live traffic split (Triton's requests less the evaluator's replay)"


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("reports need matplotlib: pip install 'stt-operator[report]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _times(t: np.ndarray) -> list[dt.datetime]:
    return [dt.datetime.fromtimestamp(x, dt.UTC) for x in t]


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    _plt().close(fig)
    return buf.getvalue()


def _color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def _palette(names: Sequence[str]) -> dict[str, str]:
    """One colour per variant name, the same in every figure of a report."""
    return {name: _color(i) for i, name in enumerate(sorted(names))}


def _span(ax: Any, window: tuple[float, float] | None) -> None:
    """Time axes cover the report's whole window, so a short burst of data shows where it was."""
    if window is not None:
        ax.set_xlim(*_times(np.array(window)))


def ratio_figure(
    bands: Mapping[str, tl.Band], metric: str, alpha: float, window: tuple[float, float] | None = None
) -> bytes:
    plt = _plt()
    colors = _palette(list(bands))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for variant, b in sorted(bands.items()):
        x = _times(b.times)
        color = colors[variant]
        ax.plot(x, b.estimate, color=color, label=f"{variant}", marker="." if len(x) < 30 else None)
        ax.fill_between(x, b.lower, b.upper, color=color, alpha=0.18, linewidth=0)
        if np.isfinite(b.estimate).sum() < 3:  # too few looks for a band to show: draw the intervals
            ax.errorbar(
                x, b.estimate, yerr=[b.estimate - b.lower, b.upper - b.estimate], fmt="o", color=color
            )
    _span(ax, window)
    ax.set_title(f"{metric} per variant, with its {1 - alpha:.0%} always-valid interval")
    ax.set_ylabel(metric)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.autofmt_xdate()
    return _png(fig)


# Below this the evidence plot only shows "overwhelming": the axis stops there.
P_FLOOR = 1e-12


def evidence_figure(
    evidence: Mapping[str, tl.Evidence],
    alpha: float,
    colors: Mapping[str, str],
    window: tuple[float, float] | None = None,
) -> bytes:
    plt = _plt()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for candidate, ev in sorted(evidence.items()):
        x = _times(ev.times)
        color = colors.get(candidate, _color(1))
        marker = "o" if len(x) < 30 else None
        top.plot(x, ev.effect * 100, color=color, label=f"{candidate} - control", marker=marker)
        shown = np.clip(ev.p_value, P_FLOOR, 1.0)
        bottom.plot(x, shown, color=color, label=candidate, drawstyle="steps-post", marker=marker)
    _span(bottom, window)
    top.axhline(0, color="black", linewidth=0.8)
    top.set_ylabel("ΔWER (points)")
    top.set_title("Paired difference against the control and its evidence over the looks")
    top.legend(loc="upper right")
    top.grid(alpha=0.3)
    bottom.axhline(alpha, color="black", linestyle="--", linewidth=0.8, label=f"alpha = {alpha}")
    bottom.set_yscale("log")
    bottom.set_ylim(P_FLOOR / 2, 1.5)
    bottom.set_ylabel("always-valid p (running min)")
    bottom.grid(alpha=0.3, which="both")
    bottom.legend(loc="lower left")
    fig.autofmt_xdate()
    return _png(fig)


def split_figure(
    split: tl.Split,
    title: str = "Traffic split (share of requests per step)",
    window: tuple[float, float] | None = None,
) -> bytes:
    """Stacked shares per step; dotted lines at the configured cumulative weights."""
    plt = _plt()
    colors = _palette(list(split.share))
    fig, ax = plt.subplots(figsize=(8, 3.2))
    x = _times(split.times)
    names = sorted(split.share)
    if names and len(x):
        shares = [np.nan_to_num(split.share[v]) * 100 for v in names]
        ax.stackplot(x, shares, labels=names, colors=[colors[v] for v in names], alpha=0.75, step="post")
    boundary = 0.0
    for v in names[:-1]:
        if v in split.weight:
            boundary += split.weight[v] * 100
            ax.axhline(boundary, color="black", linestyle=":", linewidth=1)
    ax.set_ylim(0, 100)
    _span(ax, window)
    ax.set_ylabel("% of requests")
    ax.set_title(title + ("; dotted: configured weights" if split.weight else ""))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.autofmt_xdate()
    return _png(fig)


def latency_figure(dists: Mapping[str, tl.Distribution]) -> bytes:
    plt = _plt()
    colors = _palette(list(dists))
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for variant, d in sorted(dists.items()):
        total = d.counts.sum()
        if total <= 0:
            continue
        finite = np.isfinite(d.upper_bounds)
        cdf = np.cumsum(d.counts) / total
        bounds_ms = d.upper_bounds[finite] * 1000
        if not bounds_ms.size:
            continue
        # Start the curve at 0 half a bucket below the first bound, so the first step shows.
        x = np.concatenate([[bounds_ms[0] / 2], bounds_ms])
        y = np.concatenate([[0.0], cdf[finite]])
        ax.step(x, y, where="post", color=colors[variant], label=variant)
        p95 = tl.quantile(d, 0.95)
        if math.isfinite(p95):
            ax.axvline(p95 * 1000, color=colors[variant], linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("request latency (ms, bucket upper bounds)")
    ax.set_ylabel("share of requests ≤ x")
    ax.set_title("Latency distribution per variant (dotted: p95)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    return _png(fig)


def rollout_timeline_figure(md: Mapping[str, Any], weights: Mapping[str, tl.Points]) -> bytes:
    """Route weights over time (when the operator's gauge was scraped) and each analysis verdict."""
    plt = _plt()
    status = md.get("status") or {}
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for i, (backend, pts) in enumerate(sorted(weights.items())):
        if pts:
            ax.plot(
                _times(np.array([p[0] for p in pts])),
                [p[1] for p in pts],
                color=_color(i),
                label=backend,
                drawstyle="steps-post",
                # Two backends at the same weight (50/50) overlap: each later line is thinner
                # and dashed, so the one under it still shows.
                linewidth=max(1.0, 3.0 - 0.7 * i),
                linestyle=("-", "--", "-.", ":")[i % 4],
            )
    marks = {"Passed": ("o", "#2ca02c"), "Failed": ("X", "#d62728")}
    for run in status.get("analysisRuns") or []:
        at = run.get("at")
        if not at:
            continue
        when = dt.datetime.fromisoformat(at.replace("Z", "+00:00"))
        marker, color = marks.get(run.get("outcome", ""), ("s", "#7f7f7f"))
        ax.scatter([when], [102], marker=marker, color=color, zorder=3)
    for rec in status.get("revisions") or []:
        for key, style in (("promotedAt", "-"), ("createdAt", ":")):
            if rec.get(key):
                ax.axvline(
                    dt.datetime.fromisoformat(rec[key].replace("Z", "+00:00")), color="grey", ls=style, lw=0.8
                )
    ax.set_ylim(0, 108)
    ax.set_ylabel("route weight %")
    ax.set_title("Rollout: route weights; analysis verdicts on top (o passed, X failed, ■ other)")
    ax.grid(alpha=0.3)
    if weights:
        ax.legend(loc="center right")
    fig.autofmt_xdate()
    return _png(fig)


def _distributions(data: SeriesData) -> dict[str, tl.Distribution]:
    return {v: tl.latency_distribution(b, data.start) for v, b in data.latency_buckets.items()}


def figures_abtest(ab: Mapping[str, Any], data: SeriesData, alpha: float = 0.05) -> dict[str, bytes]:
    spec = ab.get("spec") or {}
    out: dict[str, bytes] = {}
    for name, sums in (("WER", data.wer), ("CER", data.cer)):
        if sums is not None:
            bands = tl.ratio_over_time(sums, alpha, since=data.start)
            out[name.lower()] = ratio_figure(bands, name, alpha, (data.start, data.end))
    if data.pairs:
        names = {v["name"] for v in spec.get("variants") or []} | set(data.pairs) | set(data.requests)
        out["evidence"] = evidence_figure(
            {c: tl.paired_evidence_over_time(p, alpha, since=data.start) for c, p in data.pairs.items()},
            alpha,
            _palette(list(names)),
            (data.start, data.end),
        )
    weights = {v["name"]: float(v.get("weight", 0)) for v in spec.get("variants") or []}
    if data.served:
        live = tl.live_split_over_time(data.served, data.replayed, weights, since=data.start)
        out["split"] = split_figure(live, LIVE_SPLIT_TITLE, (data.start, data.end))
    if data.requests:
        split = tl.split_over_time(data.requests, since=data.start)
        out["replay"] = split_figure(
            split, "Evaluator replay per variant (equal by design)", (data.start, data.end)
        )
    if data.latency_buckets:
        out["latency"] = latency_figure(_distributions(data))
    return out


def figures_rollout(md: Mapping[str, Any], data: SeriesData, alpha: float = 0.05) -> dict[str, bytes]:
    out = {"timeline": rollout_timeline_figure(md, data.route_weights)}
    if data.wer is not None:
        bands = tl.ratio_over_time(data.wer, alpha, since=data.start)
        out["wer"] = ratio_figure(bands, "WER", alpha, (data.start, data.end))
    if data.served:
        live = tl.live_split_over_time(data.served, data.replayed, since=data.start)
        out["split"] = split_figure(live, LIVE_SPLIT_TITLE + " per revision", (data.start, data.end))
    if data.requests:
        split = tl.split_over_time(data.requests, since=data.start)
        out["replay"] = split_figure(split, "Evaluator replay per role", (data.start, data.end))
    if data.latency_buckets:
        out["latency"] = latency_figure(_distributions(data))
    return out


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


CSS = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}
th{background:#f3f3f3}.muted{color:#666;font-size:.85rem}img{max-width:100%}
"""


def _page(title: str, summary: str, sections: Sequence[tuple[str, str]], data: SeriesData) -> str:
    parts = [f"<h1>{html.escape(title)}</h1>", summary]
    parts += [f"<h2>{html.escape(h)}</h2>{body}" for h, body in sections]
    window = (
        f"{dt.datetime.fromtimestamp(data.start, dt.UTC):%Y-%m-%d %H:%M:%S} to "
        f"{dt.datetime.fromtimestamp(data.end, dt.UTC):%H:%M:%S} UTC, step {data.step:g}s"
    )
    queries = "".join(f"<li><code>{html.escape(q)}</code></li>" for q in data.queries)
    parts.append(
        f'<h2>Data</h2><p class="muted">Window {window}. PromQL:</p><ul class="muted">{queries}</ul>'
    )
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    )


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def abtest_report(ab: Mapping[str, Any], data: SeriesData, alpha: float = 0.05) -> str:
    meta, status = ab["metadata"], ab.get("status") or {}
    decision = status.get("decision") or {}
    ci = decision.get("confidenceInterval") or {}
    summary = _table(
        ["phase", "winner", "outcome", "metric", "effect", "interval", "p", "sample ratio p"],
        [
            [
                status.get("phase"),
                status.get("winner"),
                decision.get("outcome"),
                decision.get("metric"),
                decision.get("effect"),
                f"[{ci['lower']:.4g}, {ci['upper']:.4g}]" if ci else None,
                decision.get("pValue"),
                (status.get("sampleRatio") or {}).get("pValue"),
            ]
        ],
    )
    variants = _table(
        ["variant", "model", "weight %", "samples", "WER", "CER", "p95 ms", "error rate"],
        [
            [
                v.get(k)
                for k in ("name", "model", "weight", "samples", "wer", "cer", "latencyP95Ms", "errorRate")
            ]
            for v in status.get("variants") or []
        ],
    )
    guardrails = _table(
        ["guardrail", "outcome", "p", "Holm p", "effect", "message"],
        [
            [g.get(k) for k in ("metric", "outcome", "pValue", "adjustedPValue", "effect", "message")]
            for g in status.get("guardrails") or []
        ],
    )
    figs = figures_abtest(ab, data, alpha)
    titles = {
        "wer": "WER",
        "cer": "CER",
        "evidence": "Evidence",
        "split": "Live traffic",
        "replay": "Evaluator replay",
        "latency": "Latency",
    }
    sections = [("Variants", variants), ("Guardrails", guardrails)]
    sections += [(titles[k], _img(png, titles[k])) for k, png in figs.items()]
    return _page(f"A/B test {meta.get('namespace')}/{meta['name']}", summary, sections, data)


def rollout_report(md: Mapping[str, Any], data: SeriesData, alpha: float = 0.05) -> str:
    meta, status = md["metadata"], md.get("status") or {}
    summary = _table(
        ["phase", "stable", "canary", "weight", "step", "strategy"],
        [
            [
                status.get("phase"),
                status.get("stableModel"),
                status.get("canaryModel"),
                status.get("currentWeight"),
                status.get("currentStepIndex"),
                ((md.get("spec") or {}).get("strategy") or {}).get("type"),
            ]
        ],
    )
    runs = _table(
        ["at", "step", "metric", "outcome", "value", "baseline", "message"],
        [
            [r.get(k) for k in ("at", "step", "metric", "outcome", "value", "baseline", "message")]
            for r in status.get("analysisRuns") or []
        ],
    )
    revisions = _table(
        ["revision", "model", "created", "promoted", "outcome"],
        [
            [r.get("revision"), r.get("model"), r.get("createdAt"), r.get("promotedAt"), r.get("outcome")]
            for r in status.get("revisions") or []
        ],
    )
    figs = figures_rollout(md, data, alpha)
    titles = {
        "timeline": "Timeline",
        "wer": "WER",
        "split": "Live traffic",
        "replay": "Evaluator replay",
        "latency": "Latency",
    }
    sections = [(titles[k], _img(png, titles[k])) for k, png in figs.items()]
    sections += [("Analysis runs", runs), ("Revisions", revisions)]
    return _page(f"Rollout {meta.get('namespace')}/{meta['name']}", summary, sections, data)
