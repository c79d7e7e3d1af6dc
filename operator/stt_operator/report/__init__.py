"""Reports people look at: `kubectl stt report` writes one self-contained HTML file with plots.

`timeline` computes what is plotted (pure), `collect` gathers it from Kubernetes and
Prometheus, `html` draws it with matplotlib (optional extra `report`).
"""
