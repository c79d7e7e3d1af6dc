"""One monitoring look's counts (spec.monitoring): events and trials of the served revision
over one window, read from Prometheus by the error-rate preset's own query (presets.py,
`fetch_error_rate`, Triton's counters of the stable revision's Service).

The window is (start, end]: counter increases from the raw samples inside it, so the windows of
consecutive looks share no increment (stats/monitoring.py needs disjoint windows).
"""

from __future__ import annotations

from datetime import datetime

from stt_operator.analysis.model import AnalysisContext, Arm, MonitoringLook, WindowCounts
from stt_operator.analysis.presets import Fetcher, NoDataError, fetch_error_rate
from stt_operator.analysis.prom import PromQueryError, QueryClient

EXACT_WINDOW_MAX_S = 24 * 3600.0  # spec.monitoring.interval is at most 24h


def window_counts(
    client: QueryClient,
    metrics: tuple[tuple[str, str], ...],
    *,
    namespace: str,
    endpoint: str,
    service: str,
    model: str,
    start: datetime,
    end: datetime,
) -> MonitoringLook:
    """Counts of each (name, preset) over (start, end] for the stable revision's Service."""
    ctx = AnalysisContext(
        namespace=namespace,
        endpoint=endpoint,
        candidate=Arm("stable", service, model),
        start=start.timestamp(),
        now=end.timestamp(),
        # Exact increases (raw samples, no edge extrapolation) for every window up to the longest
        # interval, so consecutive windows share no increment; a window grown by holds beyond a
        # day uses increase(), whose extrapolation is negligible at that length.
        exact_window_max_s=EXACT_WINDOW_MAX_S,
    )
    out: list[WindowCounts] = []
    try:
        for name, preset in metrics:
            if preset != "error-rate":  # the API admits no other (api/modeldeployment.py)
                raise ValueError(f"monitoring preset {preset!r} is not supported")
            try:
                data = fetch_error_rate(Fetcher(client, ctx))
            except NoDataError as exc:
                out.append(WindowCounts(name, None, None, str(exc)))
                continue
            out.append(WindowCounts(name, data.candidate_events, data.candidate_exposure))
    except PromQueryError as exc:
        return MonitoringLook((), exc.kind or "QueryFailed", exc.detail)
    return MonitoringLook(tuple(out))
