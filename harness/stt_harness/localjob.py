"""Run a validation/quantization Job's container as a local process.

Under kwok the Job's pod is scheduled but no container runs. Tests (and the local demo)
run the container's exact command, args and env here instead, with each volume mount mapped
to a local directory (emptyDir -> a scratch folder, Secret -> a folder of key files, PVC -> a
folder under one root), then hand the termination message to the operator the way the
kubelet would. The operator cannot tell the difference.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stt_operator.artifacts.fetch import DEFAULT_PVC_ROOT

DEFAULT_EXECUTABLE: tuple[str, ...] = (sys.executable, "-m", "stt_operator.cli")


@dataclass(frozen=True)
class LocalInvocation:
    argv: list[str]
    env: dict[str, str]
    termination_path: Path


def local_invocation(
    job: Mapping[str, Any],
    work_dir: Path,
    secret_dirs: Mapping[str, Path] | None = None,
    pvc_root: Path | None = None,
    executable: Sequence[str] = DEFAULT_EXECUTABLE,
) -> LocalInvocation:
    """The Job's single container as argv/env with container paths mapped to local ones."""
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "secret" in volume:
            name = volume["secret"]["secretName"]
            if not secret_dirs or name not in secret_dirs:
                raise ValueError(f"Job mounts Secret {name!r}; pass its local folder in secret_dirs")
            mounts[mount["mountPath"]] = Path(secret_dirs[name])
        elif "persistentVolumeClaim" in volume:
            if pvc_root is None:
                raise ValueError("Job mounts a PersistentVolumeClaim; pass pvc_root")
            mounts[mount["mountPath"]] = Path(pvc_root) / volume["persistentVolumeClaim"]["claimName"]
        else:
            local = work_dir / mount["name"]
            local.mkdir(parents=True, exist_ok=True)
            mounts[mount["mountPath"]] = local
    termination = work_dir / "termination-log"
    mounts[container.get("terminationMessagePath", "/dev/termination-log")] = termination

    def rewrite(arg: str) -> str:
        # Longest mount path first so /work/scratch maps inside /work, not beside it.
        for path in sorted(mounts, key=len, reverse=True):
            if arg == path or arg.startswith(path.rstrip("/") + "/"):
                return str(mounts[path]) + arg[len(path) :]
        return arg

    argv = [*executable, *(rewrite(a) for a in container.get("args", []))]
    if pvc_root is not None and any(p.startswith(DEFAULT_PVC_ROOT + "/") for p in mounts):
        argv += ["--pvc-root", str(pvc_root)]
    env = {
        k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "VIRTUAL_ENV", "PYTHONPATH")
    }
    env.update({e["name"]: rewrite(e.get("value", "")) for e in container.get("env", []) if "value" in e})
    env["HOME"] = str(work_dir)
    return LocalInvocation(argv=argv, env=env, termination_path=termination)


def run_locally(
    job: Mapping[str, Any],
    work_dir: Path,
    secret_dirs: Mapping[str, Path] | None = None,
    pvc_root: Path | None = None,
    timeout_s: float | None = None,
) -> tuple[int, str]:
    """Run it; returns (exit code, termination message) as the kubelet would report them."""
    work_dir.mkdir(parents=True, exist_ok=True)
    invocation = local_invocation(job, work_dir, secret_dirs, pvc_root)
    deadline = job["spec"].get("activeDeadlineSeconds")
    completed = subprocess.run(
        invocation.argv,
        env=invocation.env,
        capture_output=True,
        text=True,
        timeout=timeout_s or deadline,
        check=False,
    )
    message = invocation.termination_path.read_text() if invocation.termination_path.exists() else ""
    if not message and completed.returncode != 0:
        # terminationMessagePolicy FallbackToLogsOnError: the log tail stands in.
        message = (completed.stdout + completed.stderr)[-4096:]
    return completed.returncode, message
