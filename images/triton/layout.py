"""Lay out the nvidia-pytriton wheel's tritonserver as a stand-alone install (image build step).

    python layout.py /opt/tritonserver

Result: `bin/tritonserver` (a wrapper that sets the library path and the backend directory,
then runs `bin/tritonserver-bin`), `lib/` (the wheel's bundled libraries, which the binary's
RPATH `$ORIGIN/../lib` finds), `backends/python/` with the stub built for this interpreter,
and `caches/`. The pytriton package itself can be uninstalled afterwards.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import sysconfig
from pathlib import Path


def main(dest: Path) -> None:
    # Located, not imported: the pytriton package's own dependencies are not installed.
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("nvidia-pytriton is not installed")
    pkg = Path(next(iter(spec.submodule_search_locations))).resolve()
    src = pkg / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = src / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise SystemExit(f"nvidia-pytriton has no Python backend stub for Python {version}")
    libpython = Path(sysconfig.get_config_var("LIBDIR")) / sysconfig.get_config_var("INSTSONAME")
    if not libpython.exists():
        raise SystemExit(f"{libpython} not found: the stub needs a shared libpython")
    (dest / "bin").mkdir(parents=True)
    shutil.copy2(src / "bin" / "tritonserver", dest / "bin" / "tritonserver-bin")
    shutil.copytree(pkg.parent / "nvidia_pytriton.libs", dest / "lib")
    shutil.copytree(src / "caches", dest / "caches")
    backend = dest / "backends" / "python"
    shutil.copytree(src / "backends" / "python", backend, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(stub, backend / stub.name)
    purelib, platlib = sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]
    wrapper = dest / "bin" / "tritonserver"
    wrapper.write_text(
        "#!/bin/sh\n"
        "# tritonserver from the nvidia-pytriton wheel: its libraries, this image's libpython, and\n"
        "# the Python backend laid out beside it. Models import numpy / pocketsphinx / onnxruntime\n"
        "# from the image's venv (the stub does not inherit one).\n"
        f'export LD_LIBRARY_PATH="{dest / "lib"}:{libpython.parent}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"\n'
        f'export PYTHONPATH="{purelib}:{platlib}${{PYTHONPATH:+:$PYTHONPATH}}"\n'
        f'exec "{dest / "bin" / "tritonserver-bin"}" --backend-directory="{dest / "backends"}" '
        f'--cache-directory="{dest / "caches"}" "$@"\n'
    )
    wrapper.chmod(0o755)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
