"""The locally built images (hack/build-images.sh), run with podman: what each one ships.

- operator: `stt-operator` runs as uid 65532, and the operator process's imports work without
  ONNX, onnxruntime or the model scanners (none is installed);
- jobs: a validation Job's container, run with the manifest's own command, arguments and
  environment (`artifacts.jobs.validation_job`), validates a model and writes the termination
  message the operator turns into status; a tampered digest fails with a message naming it;
- triton: the fetch-model init container (jobs image) lays out a repository from the operator's
  rendered config for a built-in model, and the Triton image's `tritonserver`, started with the
  operator's own arguments (`triton.pod.triton_args`), loads it and answers on the model's
  readiness endpoint.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from stt_harness.images import BuiltImage, build_images, image_config, podman, podman_run
from stt_harness.samples import ctc_spec, write_ctc_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def images() -> dict[str, BuiltImage]:
    return build_images()


def test_operator_image_is_slim_and_runs_as_nonroot(images: dict[str, BuiltImage]) -> None:
    ref = images["operator"].ref
    config = image_config(ref)
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["stt-operator"] and config["Cmd"] == ["run"]
    out = podman_run(ref, "--help").stdout
    assert "run the operator" in out
    # Every module the operator process loads: the runner and the controllers it registers.
    probe = (
        "import importlib.util, os, json;"
        "import kopf, stt_operator.runner, stt_operator.controllers.sttmodel,"
        " stt_operator.controllers.modeldeployment, stt_operator.controllers.abtest;"
        "print(json.dumps({'uid': os.getuid(), 'missing': [m for m in "
        "('onnxruntime', 'onnx', 'picklescan', 'fickling', 'boto3', 'pytest', 'stt_harness',"
        " 'stt_operator.testing', 'stt_operator.demo') "
        "if importlib.util.find_spec(m) is None]}))"
    )
    result = json.loads(podman_run("--entrypoint", "python", ref, "-c", probe).stdout)
    assert result["uid"] == 65532
    # The test harness and the demo driver live beside the runtime, not in its image.
    assert result["missing"] == [
        "onnxruntime",
        "onnx",
        "picklescan",
        "fickling",
        "boto3",
        "pytest",
        "stt_harness",
        "stt_operator.testing",
        "stt_operator.demo",
    ]
    # Smaller than the jobs image, which adds ONNX Runtime and the scanners.
    assert images["operator"].size_bytes < images["jobs"].size_bytes


def _job_container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


def _run_job(ref: str, job: dict, models: Path, out: Path) -> int:
    """The Job's container as the kubelet would start it: same command, args, env, user,
    read-only root, the work and tmp volumes, a termination-message file."""
    container = _job_container(job)
    (out / "termination-log").touch()
    (out / "termination-log").chmod(0o666)  # kubelet's file is writable by the container's user
    args = [
        "--user",
        "65532:65532",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--tmpfs",
        "/work:mode=1777",
        "-v",
        f"{models}:/models:ro",
        "-v",
        f"{out / 'termination-log'}:/dev/termination-log",
        "--network",
        "none",
        "--entrypoint",
        container["command"][0],
    ]
    for env in container["env"]:
        args += ["-e", f"{env['name']}={env['value']}"]
    proc = podman_run(*args, ref, *container["args"], check=False, timeout=600)
    (out / "log").write_text(proc.stdout + proc.stderr)
    return proc.returncode


def test_validation_job_runs_in_the_jobs_image(images: dict[str, BuiltImage], tmp_path: Path) -> None:
    from stt_operator.artifacts.jobs import VERDICT_EXIT_CODE, validation_job

    models = tmp_path / "models"
    write_ctc_model(models / "ctc.onnx")
    models.chmod(0o755)
    (models / "ctc.onnx").chmod(0o644)
    owner = {"apiVersion": "stt.dev/v1alpha1", "kind": "STTModel", "name": "m", "uid": "u"}
    good = validation_job("ctc", "ns", ctc_spec("file:///models/ctc.onnx"), images["jobs"].ref, owner)
    (tmp_path / "good").mkdir()
    code = _run_job(images["jobs"].ref, good, models, tmp_path / "good")
    message = (tmp_path / "good" / "termination-log").read_text()
    assert code == 0, (tmp_path / "good" / "log").read_text()[-3000:]
    assert message.strip(), "the Job wrote no termination message"

    tampered = ctc_spec("file:///models/ctc.onnx", sha256="0" * 64)
    bad = validation_job("ctc", "ns", tampered, images["jobs"].ref, owner)
    (tmp_path / "bad").mkdir()
    code = _run_job(images["jobs"].ref, bad, models, tmp_path / "bad")
    message = (tmp_path / "bad" / "termination-log").read_text()
    assert code == VERDICT_EXIT_CODE, (tmp_path / "bad" / "log").read_text()[-3000:]
    assert "sha256" in message.lower() or "digest" in message.lower(), message


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_triton_image_serves_the_operators_rendering(images: dict[str, BuiltImage], tmp_path: Path) -> None:
    from stt_operator.models import catalog
    from stt_operator.triton.config import render_config_pbtxt
    from stt_operator.triton.pod import TritonPodParams, triton_args

    name = "sphinx-cmd"
    config = render_config_pbtxt(name, catalog.sphinx_triton(), catalog.sphinx_io())
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.pbtxt").write_text(config)
    repo = tmp_path / "models"
    repo.mkdir(mode=0o777)
    repo.chmod(0o777)
    # The init container: the jobs image's fetcher, reading the built-in model from its image.
    fetch = podman_run(
        "--user",
        "65532:65532",
        "--read-only",
        "--network",
        "none",
        "-v",
        f"{tmp_path / 'config'}:/config:ro",
        "-v",
        f"{repo}:/models",
        "--entrypoint",
        "python",
        images["jobs"].ref,
        "-m",
        "stt_operator.triton.materialize",
        "--uri=file:///opt/stt-models/sphinx_stt",
        f"--model={name}",
        "--config=/config/config.pbtxt",
        "--repository=/models",
        check=False,
    )
    assert fetch.returncode == 0, fetch.stderr[-3000:]
    assert (repo / name / "1" / "model.py").is_file()

    params = TritonPodParams(model_name=name, config_map="unused", artifact_uri="file:///x", gpus=0)
    args = [a.replace("$(TRITON_ADMIN_KEY)", "secret") for a in triton_args(params)]
    container = f"stt-triton-test-{tmp_path.name[-12:]}".replace("_", "-").lower()
    podman(
        "run",
        "-d",
        "--rm",
        "--name",
        container,
        "--ulimit=nofile=4096:4096",
        "--ulimit=nproc=4096:4096",
        "--user",
        "1000:1000",
        "--shm-size",
        "256m",
        "-v",
        f"{repo}:/models:ro",
        "-p",
        "127.0.0.1::8000",
        images["triton"].ref,
        *args,
    )
    try:
        port = podman("port", container, "8000/tcp").stdout.strip().rsplit(":", 1)[1]
        url = f"http://127.0.0.1:{port}/v2/models/{name}/ready"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not _ready(url):
            state = podman("inspect", "--format", "{{.State.Running}}", container, check=False)
            assert state.returncode == 0 and "true" in state.stdout, podman(
                "logs", container, check=False
            ).stderr
            time.sleep(1)
        logs = podman("logs", container, check=False)
        assert _ready(url), (logs.stdout + logs.stderr)[-4000:]
        # The restricted repository API refuses a caller without the pod's key.
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v2/repository/index", method="POST", data=b"{}"
        )
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(req, timeout=5)
    finally:
        podman("rm", "-f", container, check=False)
