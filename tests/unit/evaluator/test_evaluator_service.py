"""The evaluator's HTTP endpoint, manifests and the whole service loop (in-process transcriber)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter

from stt_operator import evalmetrics as em
from stt_operator.evaluator.manifests import EvaluatorParams, evaluator_deployment, evaluator_objects
from stt_operator.evaluator.model_io import Target
from stt_operator.evaluator.server import MetricsServer
from stt_operator.evaluator.service import EvaluatorConfig, resolve_evalset, run_evaluator
from stt_operator.speech.evalset import write_wav


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_metrics_health_and_readiness_endpoints() -> None:
    reg = CollectorRegistry()
    Counter("probe_total", "x", registry=reg).inc(3)
    ready = {"v": False}
    server = MetricsServer(
        reg, lambda: {"status": "ok", "rounds_completed": 2}, lambda: ready["v"], "127.0.0.1", 0
    )
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        code, body = get(base + "/metrics")
        assert code == 200 and "probe_total 3.0" in body
        code, body = get(base + "/healthz")
        assert code == 200 and json.loads(body)["rounds_completed"] == 2
        assert get(base + "/readyz")[0] == 503
        ready["v"] = True
        assert get(base + "/readyz")[0] == 200
        assert get(base + "/nope")[0] == 404
    finally:
        server.stop()


def make_set(root: Path, texts: list[str]) -> Path:
    (root / "audio").mkdir(parents=True)
    lines = []
    for i, t in enumerate(texts):
        write_wav(root / "audio" / f"{i}.wav", np.full(1600 * (i + 1), 100, np.int16))
        lines.append(
            {
                "id": f"u{i}",
                "audio": f"audio/{i}.wav",
                "text": t,
                "speaker": "s",
                "language": "en-US",
                "slice": "clean",
            }
        )
    (root / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


async def test_service_runs_rounds_and_writes_the_summary(tmp_path: Path) -> None:
    evalset = make_set(tmp_path / "set", ["turn on the lights", "volume up"])

    async def transcriber(target: Target, audio: np.ndarray) -> tuple[str, float | None]:
        return ("turn on the light" if audio.size == 1600 else "volume up"), 0.9

    reg = CollectorRegistry()
    summary = tmp_path / "summary.json"
    cfg = EvaluatorConfig(
        evalset=f"file://{evalset}",
        targets=[Target("a", "m", "h:1")],
        rounds=2,
        round_interval_s=0,
        metrics_port=None,
        summary_path=str(summary),
    )
    result = await run_evaluator(cfg, registry=reg, transcriber=transcriber)
    assert result.rounds == 2
    a = result.summaries["a"]
    assert (a["word_errors"], a["ref_words"], a["utterances"]) == (2, 12, 4)
    labels = {"endpoint": "local", "variant": "a", "model": "m", "language": "en-US", "unit": "word"}
    assert reg.get_sample_value(em.ERRORS, labels) == 2
    assert json.loads(summary.read_text())["variants"]["a"]["wer"] == pytest.approx(2 / 12)


def test_resolve_evalset_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="evalset"):
        resolve_evalset(str(tmp_path / "missing"), tmp_path)
    with pytest.raises(FileNotFoundError, match="evalset"):
        resolve_evalset(f"file://{tmp_path}/missing", tmp_path)
    assert resolve_evalset(f"file://{tmp_path}", tmp_path) == tmp_path


def params(**kw: object) -> EvaluatorParams:
    base: dict[str, object] = {
        "owner_name": "asr-endpoint",
        "namespace": "ml",
        "endpoint": "asr-endpoint",
        "targets": [
            Target("stable", "asr-v1", "asr-v1.ml.svc:8001"),
            Target("canary", "asr-v2", "asr-v2.ml.svc:8001"),
        ],
        "evalset_uri": "pvc://evalsets/commands",
        "owner": {
            "apiVersion": "stt.dev/v1alpha1",
            "kind": "ModelDeployment",
            "name": "asr-endpoint",
            "uid": "u",
        },
    }
    base.update(kw)
    return EvaluatorParams(**base)  # type: ignore[arg-type]


def test_evaluator_objects() -> None:
    cm, dep, svc = evaluator_objects(params())
    config = __import__("yaml").safe_load(cm["data"]["config.yaml"])
    assert config["evalset"] == "/var/lib/evalset/evalsets/commands"
    assert config["rounds"] == 0
    assert [t["variant"] for t in config["targets"]] == ["stable", "canary"]
    assert dep["spec"]["replicas"] == 1
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["args"] == ["evaluate", "--config=/etc/evaluator/config.yaml"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["evalset"]["persistentVolumeClaim"]["claimName"] == "evalsets"
    assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert (
        dep["spec"]["selector"]["matchLabels"].items()
        <= dep["spec"]["template"]["metadata"]["labels"].items()
    )


def test_config_changes_roll_the_pod_and_secrets_are_mounted() -> None:
    a = evaluator_deployment(params())
    b = evaluator_deployment(params(rate=9.0, evalset_secret="s3-creds", evalset_uri="s3://b/set.tar.gz"))
    key = "stt.dev/config-hash"
    assert (
        a["spec"]["template"]["metadata"]["annotations"][key]
        != b["spec"]["template"]["metadata"]["annotations"][key]
    )
    env = b["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "STT_FETCH_CREDENTIALS_DIR", "value": "/var/run/secrets/evalset"}]
    with pytest.raises(ValueError, match="targets"):
        evaluator_deployment(params(targets=[]))


def test_evalset_from_an_http_archive(tmp_path: Path) -> None:
    """A set packed as tar.gz and served over HTTP is fetched, unpacked and loaded."""
    import functools
    import tarfile
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from stt_operator.evaluator.service import load_utterances

    make_set(tmp_path / "src" / "commands", ["volume up", "stop the music"])
    (tmp_path / "www").mkdir()
    with tarfile.open(tmp_path / "www" / "commands.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "commands", arcname="commands")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/commands.tar.gz"
        utts, version = load_utterances(url, tmp_path / "work")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert [u.text for u in utts] == ["volume up", "stop the music"]
    assert version == "v1"


def test_revision_target_from_a_served_revision() -> None:
    from stt_operator.evaluator.manifests import revision_target
    from stt_operator.models.catalog import sphinx_io

    t = revision_target("canary", "asr-ep-asr-v2-1a2b3c4d", "ml", "asr-v2", "asr-v2", sphinx_io())
    assert t.url == "asr-ep-asr-v2-1a2b3c4d.ml.svc:8001"
    assert (t.variant, t.model_label, t.io.transcript) == ("canary", "asr-v2", "TRANSCRIPT")


async def test_stop_interrupts_a_long_round(tmp_path: Path) -> None:
    import asyncio
    import time

    evalset = make_set(tmp_path / "set", ["volume up"] * 3)

    async def slow(target: Target, audio: np.ndarray) -> tuple[str, float | None]:
        await asyncio.sleep(30)
        return "volume up", None

    stop = asyncio.Event()
    cfg = EvaluatorConfig(
        evalset=str(evalset), targets=[Target("a", "m", "h:1")], rounds=0, metrics_port=None
    )
    task = asyncio.create_task(run_evaluator(cfg, registry=CollectorRegistry(), transcriber=slow, stop=stop))
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    stop.set()
    result = await asyncio.wait_for(task, timeout=5)
    assert time.monotonic() - t0 < 2
    assert result.rounds == 0
