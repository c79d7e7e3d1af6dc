"""`make demo` (`stt-demo`): the whole product on one machine, with real parts.

Starts a real control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok fake
GPU nodes) and a real node (kubelet + containerd + kube-proxy + CoreDNS, see
``stt_harness.node``; tainted, so the walk-through below still runs on kwok) built from Go
modules, installs the CRDs (this project's, Gateway API's, the
Prometheus Operator's), runs the operator as its own process and the stand-in kubelet for its
Job pods, then walks through the product:

1. an ONNX CTC model is registered as an STTModel: its validation Job fetches it, checks its
   format, I/O contract, dependencies, security, integrity and WER on a labelled set;
2. its quantization Job makes an INT8 copy, gates it on WER, and registers it as its own
   STTModel, which is validated in turn;
3. a ModelDeployment serves the float model behind a Gateway API HTTPRoute, then switches
   to the INT8 model without ever routing to a backend that is not ready;
4. an ABTest between the two takes hold of the endpoint, brings up the variant the endpoint
   does not serve, and waits for evaluator data (no evaluator pods run under kwok, so it
   reports that it is paused on missing data rather than deciding anything).

Everything stays up for `kubectl` until Ctrl-C; then everything is removed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stt_harness.cluster import LocalCluster, default_crd_paths, ensure_tools, repo_root
from stt_harness.jobpods import LocalJobKubelet
from stt_harness.operator import OperatorProcess
from stt_harness.resources import API
from stt_harness.samples import ctc_spec, keyed_ctc_model, write_keyed_evalset

NAMESPACE = "stt-demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=2, help="fake GPU nodes")
    parser.add_argument("--no-real-node", action="store_true", help="kwok nodes only (no root needed)")
    parser.add_argument("--exit-after", type=float, help="stop after N seconds (for scripted runs)")


def _artifacts(root: Path) -> dict[str, str]:
    import onnx

    model = root / "models" / "commands-en" / "model.onnx"
    model.parent.mkdir(parents=True)
    onnx.save(keyed_ctc_model(), str(model))
    evalset = write_keyed_evalset(root / "evalsets" / "commands-en")
    (root / "quantized").mkdir()
    return {
        "uri": model.as_uri(),
        "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "evalset": Path(evalset).as_uri(),
        "int8": (root / "quantized" / "commands-en-int8.onnx").as_uri(),
    }


def demo_manifests(artifacts: dict[str, str]) -> list[dict[str, Any]]:
    spec = ctc_spec(
        artifacts["uri"],
        artifacts["sha256"],
        description="command-and-control CTC model (the project's toy model; WER 0 on its set)",
        validation={"evaluationSet": {"uri": artifacts["evalset"]}, "thresholds": {"maxWer": 0.2}},
        quantization={"enabled": True, "mode": "dynamic-int8", "outputUri": artifacts["int8"]},
    )
    meta = {"namespace": NAMESPACE}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": API, "kind": "STTModel", "metadata": {"name": "commands-en", **meta}, "spec": spec},
        {
            "apiVersion": API,
            "kind": "ModelDeployment",
            "metadata": {"name": "commands", **meta},
            "spec": {
                "model": {"name": "commands-en"},
                "strategy": {"type": "Immediate"},
                "scaleDownDelay": "5s",
                "endpoint": {"gatewayRef": {"name": "stt-gateway"}, "hostnames": ["stt.demo.local"]},
            },
        },
    ]


def _wait(cluster: LocalCluster, what: str, query: str, want: str, timeout: float = 300) -> None:
    """Poll `kubectl get <object> -o jsonpath=<path>` (query: "object {path}") until it says `want`."""
    print(f"  waiting for {what}…", flush=True)
    obj, path = query.split(" ", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cluster.kubectl("get", "-n", NAMESPACE, obj, "-o", f"jsonpath={path}", check=False)
        if got.strip() == want:
            return
        time.sleep(1)
    raise TimeoutError(f"{what}: not {want!r} after {timeout}s")


def _apply(cluster: LocalCluster, objects: list[dict[str, Any]]) -> None:
    cluster.kubectl("apply", "-f", "-", input="\n".join(json.dumps(o) for o in objects))


def _show(cluster: LocalCluster, title: str) -> None:
    print(f"\n$ kubectl get sttmodels,modeldeployments,abtests -n {NAMESPACE}   # {title}")
    print(cluster.kubectl("get", "sttmodels,modeldeployments,abtests", "-n", NAMESPACE), flush=True)


def main(args: argparse.Namespace) -> int:
    tools = ensure_tools()
    print(
        "starting a local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
        + ("…" if args.no_real_node else " and a real node…")
    )
    with (
        tempfile.TemporaryDirectory(prefix="stt-demo-") as tmp,
        LocalCluster(
            nodes=args.nodes,
            crd_paths=default_crd_paths(tools, repo_root()),
            tools_dir=tools,
            real_node=not args.no_real_node,
        ) as cluster,
    ):
        print(f"  up in {cluster.startup_seconds:.1f}s; kubeconfig: {cluster.kubeconfig}")
        print(cluster.kubectl("get", "nodes", "-o", "wide"), flush=True)
        with (
            OperatorProcess(cluster.kubeconfig, reconcile_interval_s=1.0) as operator,
            LocalJobKubelet(cluster.api_client()),
        ):
            print(f"  operator running (log: {operator.log_path})")
            artifacts = _artifacts(Path(tmp))
            print("\n1. register an ONNX model; its validation and quantization Jobs run")
            _apply(cluster, demo_manifests(artifacts))
            _wait(cluster, "commands-en validated", "sttmodel/commands-en {.status.phase}", "Ready")
            _wait(cluster, "the INT8 copy validated", "sttmodel/commands-en-int8 {.status.phase}", "Ready")
            _wait(cluster, "the endpoint serving", "modeldeployment/commands {.status.phase}", "Healthy")
            _show(cluster, "float model serving, INT8 copy ready")
            print("2. switch the endpoint to the INT8 model (new revision up, route moved, old removed)")
            cluster.kubectl(
                "patch",
                "modeldeployment",
                "commands",
                "-n",
                NAMESPACE,
                "--type=merge",
                "-p",
                '{"spec":{"model":{"name":"commands-en-int8"}}}',
            )
            _wait(cluster, "the switch", "modeldeployment/commands {.status.stableModel}", "commands-en-int8")
            print(cluster.kubectl("get", "httproute,deployments", "-n", NAMESPACE))
            print("3. an A/B test between the two models")
            _apply(cluster, [_abtest()])
            time.sleep(3)
            _show(cluster, "after the switch")
            print(f"\nexport KUBECONFIG={cluster.kubeconfig}\nexport PATH={cluster.bin_dir}:$PATH")
            print(f"try: kubectl describe sttmodel commands-en -n {NAMESPACE}")
            print(f"     kubectl get events -n {NAMESPACE}")
            print("Ctrl-C stops everything")
            _serve_until_stopped(args.exit_after)
    print("stopped; everything cleaned up")
    return 0


def _abtest() -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "ABTest",
        "metadata": {"name": "fp32-vs-int8", "namespace": NAMESPACE},
        "spec": {
            "endpoint": {"modelDeploymentRef": {"name": "commands"}},
            "variants": [
                {"name": "fp32", "model": {"name": "commands-en"}, "weight": 50},
                {"name": "int8", "model": {"name": "commands-en-int8"}, "weight": 50},
            ],
            "duration": "1h",
            "primaryMetric": {"name": "wer", "preset": "wer", "nonInferiorityMargin": 0.005},
        },
    }


def _serve_until_stopped(exit_after: float | None) -> None:
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    started = time.monotonic()
    try:
        while not stop["now"] and not (exit_after and time.monotonic() - started > exit_after):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass


def cli(argv: list[str] | None = None) -> int:
    """`stt-demo` / `python -m stt_harness.demo`: parse the demo's options and run it."""
    parser = argparse.ArgumentParser(prog="stt-demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
