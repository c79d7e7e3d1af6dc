"""Start a real `tritonserver` locally: the binary shipped in the `nvidia-pytriton` wheel.

It has the Python backend only and runs models on KIND_CPU. What it needs (docs/triton-and-evaluator.md):
the wheel's bundled shared libraries and the interpreter's `libpython3.x.so` on
`LD_LIBRARY_PATH`, a backend directory holding the Python backend plus the stub built for this
interpreter's version, and the models' Python dependencies importable by the stub (it does not
inherit the virtualenv, so its site-packages go on `PYTHONPATH`).

Used by the pytest fixtures, the demo and the evaluator benchmark.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import Any

from stt_operator.models import catalog
from stt_operator.triton.config import render_config_pbtxt
from stt_operator.triton.repository import write_model

BASELINE_MODEL = "sphinx-baseline"
DEGRADED_MODEL = "sphinx-degraded"


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    libs_dir: Path  # the wheel's bundled .so files (nvidia_pytriton.libs)
    python_backend: Path  # libtriton_python.so + triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for this interpreter's version


def find_tritonserver() -> TritonInstall:
    """Locate the tritonserver shipped in the nvidia-pytriton wheel, or say what is missing."""
    try:
        import pytriton
    except ImportError as exc:
        raise RuntimeError(
            "the local tritonserver comes from the `nvidia-pytriton` wheel: pip install -e '.[local-triton]'"
        ) from exc
    pkg = Path(pytriton.__file__).resolve().parent
    root = pkg / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        binary=root / "bin" / "tritonserver",
        libs_dir=pkg.parent / "nvidia_pytriton.libs",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
    )
    for field_name in ("binary", "libs_dir", "python_backend", "stub"):
        path = getattr(install, field_name)
        if not path.exists():
            raise RuntimeError(f"nvidia-pytriton install is incomplete: {field_name} {path} not found")
    return install


def libpython_dir() -> Path:
    """Directory of this interpreter's shared libpython (the stub links against it)."""
    libdir = Path(sysconfig.get_config_var("LIBDIR") or "")
    name = (
        sysconfig.get_config_var("INSTSONAME")
        or f"libpython{sys.version_info.major}.{sys.version_info.minor}.so"
    )
    if not (libdir / name).exists():
        raise RuntimeError(
            f"{libdir / name} not found: the Python backend stub needs a Python built with --enable-shared"
        )
    return libdir


def prepare_backend_dir(dest: Path, install: TritonInstall) -> Path:
    """`<dest>/python/` with the Python backend and the matching stub; returns `dest`."""
    py = dest / "python"
    py.mkdir(parents=True, exist_ok=True)
    for item in install.python_backend.iterdir():
        if item.is_file():
            shutil.copy2(item, py / item.name)
    shutil.copy2(install.stub, py / install.stub.name)
    return dest


def server_env(install: TritonInstall, extra_pythonpath: Sequence[str] = ()) -> dict[str, str]:
    env = dict(os.environ)
    libs = [str(install.libs_dir), str(libpython_dir())]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    # The stub runs a fresh interpreter: give it this environment's packages (numpy, pocketsphinx).
    paths = [*extra_pythonpath, sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    # The stub's embedded interpreter runs isolated (PYTHONPATH ignored) and finds its prefix by
    # looking up `python3` on PATH: put this interpreter first, so a virtualenv's pyvenv.cfg and
    # site-packages are found even when the venv is not activated (as under `make test`).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_sphinx_repository(root: Path, models: Mapping[str, bool] | None = None) -> Path:
    """A repository with the pocketsphinx recogniser: model name -> degraded?, rendered by our code."""
    models = models if models is not None else {BASELINE_MODEL: False, DEGRADED_MODEL: True}
    files = catalog.sphinx_version_files()
    for name, degraded in models.items():
        config = render_config_pbtxt(name, catalog.sphinx_triton(degraded=degraded), catalog.sphinx_io())
        write_model(root, name, config, files)
    return root


def build_onnx_repository(
    root: Path, name: str, onnx_path: Path, triton: Any, io: Any, version: int = 1
) -> Path:
    """An ONNX model served locally: our renderer's config with the Python backend (the only one
    the local binary has) and `models/onnx_runner/model.py`, which runs it with onnxruntime."""
    from dataclasses import replace

    from stt_operator.models import model_source

    local = (
        replace(triton, backend="python")
        if is_dataclass(triton)
        else triton.model_copy(update={"backend": "python"})
    )
    config = render_config_pbtxt(name, local, io)
    files = {"model.py": model_source("onnx_runner") / "model.py", "model.onnx": Path(onnx_path)}
    write_model(root, name, config, files, version)
    return root


@dataclass
class LocalTriton:
    """A running tritonserver on loopback ports."""

    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    metrics_port: int
    repository: Path
    log_path: Path

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def metric_by_model(self, name: str) -> dict[str, float]:
        """`{model: value}` of one of Triton's per-model metrics (summed over versions)."""
        return metric_by_model(self.metrics_url, name)

    def settled_metric(
        self, name: str, before: dict[str, float], delta: float, models: Sequence[str], timeout: float = 10.0
    ) -> dict[str, float]:
        """`metric_by_model(name)` once each of `models` has moved by at least `delta` since
        `before` and then stayed still for half a second. Triton counts a request after its
        response is out, so a client can hold the answer a moment before the counter moves; the
        caller then asserts the exact delta (a count past it still fails)."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.metric_by_model(name)
            if all(now.get(m, 0.0) - before.get(m, 0.0) >= delta for m in models):
                time.sleep(0.5)
                return self.metric_by_model(name)
            if time.monotonic() > deadline:
                return now
            time.sleep(0.1)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def metric_by_model(metrics_url: str, name: str) -> dict[str, float]:
    """`{model: value}` of one per-model metric (e.g. `nv_inference_count`) from Triton's /metrics."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    out: dict[str, float] = {}
    for m in re.finditer(rf'^{re.escape(name)}\{{[^}}]*model="([^"]+)"[^}}]*\}} (\S+)$', text, re.M):
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_triton(
    repository: Path,
    workdir: Path,
    *,
    models: Sequence[str] = (),
    timeout: float = 120.0,
    extra_args: Sequence[str] = (),
    grpc_port: int | None = None,
    attempts: int = 3,
) -> LocalTriton:
    """Start tritonserver on free loopback ports and wait until it and `models` are ready.

    A port picked as free can be taken before tritonserver binds it (parallel test runs):
    then it starts again on new ports, up to `attempts` times."""
    install = find_tritonserver()
    backends = prepare_backend_dir(workdir / "backends", install)
    for attempt in range(1, attempts + 1):
        try:
            return _launch(install, repository, workdir, backends, models, timeout, extra_args, grpc_port)
        except _PortTaken:
            if attempt == attempts or grpc_port is not None:
                raise
    raise AssertionError("unreachable")


class _PortTaken(RuntimeError):
    pass


def _launch(
    install: TritonInstall,
    repository: Path,
    workdir: Path,
    backends: Path,
    models: Sequence[str],
    timeout: float,
    extra_args: Sequence[str],
    grpc_port: int | None,
) -> LocalTriton:
    http, grpc, metrics = free_port(), grpc_port or free_port(), free_port()
    log_path = workdir / "tritonserver.log"
    cmd = [
        str(install.binary),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        "--http-address=127.0.0.1",
        f"--http-port={http}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={metrics}",
        "--allow-gpu-metrics=false",
        "--strict-readiness=true",
        "--exit-timeout-secs=5",
        *extra_args,
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=server_env(install))
    server = LocalTriton(proc, http, grpc, metrics, repository, log_path)
    urls = [f"http://{server.http_url}/v2/health/ready"]
    urls += [f"http://{server.http_url}/v2/models/{m}/ready" for m in models]
    # tritonserver opens its metrics port after the HTTP one: a caller that reads a counter right
    # after "ready" would otherwise race it (connection refused).
    if "--allow-metrics=false" not in extra_args:
        urls.append(server.metrics_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = server.log_tail()
            error = _PortTaken if "address already in use" in tail.lower() else RuntimeError
            raise error(f"tritonserver exited with {proc.returncode}:\n{tail}")
        if all(_http_ok(u) for u in urls):
            return server
        time.sleep(0.25)
    server.stop()
    raise TimeoutError(f"tritonserver not ready within {timeout:.0f}s:\n{server.log_tail()}")


@contextlib.contextmanager
def local_sphinx_triton(workdir: Path | None = None, timeout: float = 120.0) -> Iterator[LocalTriton]:
    """tritonserver serving the baseline and degraded pocketsphinx models; stopped on exit."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="triton-")))
        repo = build_sphinx_repository(workdir / "models")
        server = start_triton(repo, workdir, models=[BASELINE_MODEL, DEGRADED_MODEL], timeout=timeout)
        try:
            yield server
        finally:
            server.stop()
