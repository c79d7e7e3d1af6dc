"""A stand-in kubelet for the operator's Job pods on kwok nodes (pods on the real node run for real).

kwok schedules pods and marks them Running, but runs no container. For the operator's
validation / quantization Jobs the container's work *is* the test, so this runs the pod's
exact command, args and env as a local process (`artifacts.localjob.run_locally`, with volume
mounts mapped to local folders), then annotates the pod with the exit code and termination
message; the project's kwok stage `pod-complete-local` turns those into the container's
terminated state and the pod's phase, as a kubelet would. The real Job controller then marks
the Job Complete or Failed, and the operator reads the result from the pod, unaware.
"""

from __future__ import annotations

import base64
import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from stt_harness.cluster import KWOK_NODE_ANNOTATION, KWOK_NODE_ANNOTATION_VALUE
from stt_harness.localjob import run_locally

log = logging.getLogger(__name__)

EXIT_CODE_ANNOTATION = "kwok.stt.dev/exit-code"
MESSAGE_ANNOTATION = "kwok.stt.dev/termination-message"
MAX_MESSAGE_BYTES = 4096  # the kubelet's limit for a termination message


@dataclass(frozen=True)
class LocalRun:
    namespace: str
    pod: str
    job: str
    exit_code: int
    message: str


class LocalJobKubelet:
    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        label_selector: str = "app.kubernetes.io/managed-by=stt-operator",
        pvc_root: Path | None = None,
        poll_s: float = 0.5,
        timeout_s: float = 600.0,
    ) -> None:
        self.core = k8s.CoreV1Api(api_client)
        self.batch = k8s.BatchV1Api(api_client)
        self.label_selector = label_selector
        self.pvc_root = pvc_root
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.work_root = Path(tempfile.mkdtemp(prefix="stt-jobpods-"))
        self.runs: list[LocalRun] = []
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LocalJobKubelet:
        self._thread = threading.Thread(target=self._loop, name="local-job-kubelet", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)
        for worker in self._workers:
            worker.join(1)
        shutil.rmtree(self.work_root, ignore_errors=True)

    def __enter__(self) -> LocalJobKubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                pods = self.core.list_pod_for_all_namespaces(label_selector=self.label_selector).items
            except Exception:  # the apiserver may be briefly unavailable; try again next tick
                log.exception("listing pods failed")
                pods = []
            kwok_nodes = self._kwok_nodes()
            for pod in pods:
                if self._runnable(pod) and pod.spec.node_name in kwok_nodes:
                    self._seen.add(pod.metadata.uid)
                    worker = threading.Thread(target=self._run, args=(pod,), daemon=True)
                    self._workers.append(worker)
                    worker.start()
            self._stop.wait(self.poll_s)

    def _kwok_nodes(self) -> set[str]:
        """Nodes kwok plays; a pod on the real node runs in its container there, never here."""
        try:
            nodes = self.core.list_node().items
        except Exception:
            log.exception("listing nodes failed")
            return set()
        return {
            n.metadata.name
            for n in nodes
            if (n.metadata.annotations or {}).get(KWOK_NODE_ANNOTATION) == KWOK_NODE_ANNOTATION_VALUE
        }

    def _runnable(self, pod: Any) -> bool:
        owners = pod.metadata.owner_references or []
        annotations = pod.metadata.annotations or {}
        return (
            pod.metadata.uid not in self._seen
            and pod.metadata.deletion_timestamp is None
            and (pod.status.phase == "Running")
            and any(o.kind == "Job" for o in owners)
            and EXIT_CODE_ANNOTATION not in annotations
        )

    def _secret_dirs(self, pod: Any, work_dir: Path) -> dict[str, Path]:
        dirs: dict[str, Path] = {}
        for volume in pod.spec.volumes or []:
            if volume.secret is None:
                continue
            name = volume.secret.secret_name
            secret = self.core.read_namespaced_secret(name, pod.metadata.namespace)
            folder = work_dir / "secrets" / name
            folder.mkdir(parents=True, exist_ok=True)
            for key, value in (secret.data or {}).items():
                (folder / key).write_bytes(base64.b64decode(value))
            dirs[name] = folder
        return dirs

    def _run(self, pod: Any) -> None:
        namespace, name = pod.metadata.namespace, pod.metadata.name
        job_name = next(o.name for o in pod.metadata.owner_references if o.kind == "Job")
        work_dir = self.work_root / pod.metadata.uid
        pod_spec = self.core.api_client.sanitize_for_serialization(pod.spec)
        try:
            job = self.batch.read_namespaced_job(job_name, namespace)
            deadline = job.spec.active_deadline_seconds
            as_job = {"spec": {"template": {"spec": pod_spec}, "activeDeadlineSeconds": deadline}}
            code, message = run_locally(
                as_job,
                work_dir,
                secret_dirs=self._secret_dirs(pod, work_dir),
                pvc_root=self.pvc_root,
                timeout_s=min(self.timeout_s, deadline or self.timeout_s),
            )
        except Exception as exc:  # report like a crashed container rather than hanging the Job
            log.exception("local run of %s/%s failed", namespace, name)
            code, message = 128, f"local job runner: {exc}"
        message = message.encode()[-MAX_MESSAGE_BYTES:].decode(errors="ignore")
        self.runs.append(LocalRun(namespace, name, job_name, code, message))
        log.info("pod %s/%s (job %s) exited %d", namespace, name, job_name, code)
        try:
            self.core.patch_namespaced_pod(
                name,
                namespace,
                {"metadata": {"annotations": {EXIT_CODE_ANNOTATION: str(code), MESSAGE_ANNOTATION: message}}},
            )
        except Exception:
            log.exception("could not annotate pod %s/%s", namespace, name)
