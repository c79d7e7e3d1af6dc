"""`stt-operator demo`: the whole product on one machine, with real parts.

Starts a real control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok fake
GPU nodes) built from Go modules, installs the CRDs (this project's and Gateway API's), runs
the operator as its own process, applies `manifests/samples/`, and shows
`kubectl get sttmodels,modeldeployments,abtests`. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from stt_operator.testing.cluster import LocalCluster, default_tools_dir, repo_root
from stt_operator.testing.operator import OperatorProcess


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=Path, help="manifests to apply (default: manifests/samples)")
    parser.add_argument("--nodes", type=int, default=2, help="fake GPU nodes")
    parser.add_argument("--exit-after", type=float, help="stop after N seconds (for scripted runs)")


def _wait_until_settled(cluster: LocalCluster, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jsonpath = "jsonpath={range .items[*]}{.status.phase}{'\\n'}{end}"
        phases = cluster.kubectl("get", "sttmodels,modeldeployments", "-A", "-o", jsonpath).split()
        if phases and all(p in ("Ready", "Healthy", "Failed", "Pending") for p in phases):
            return
        time.sleep(1)


def main(args: argparse.Namespace) -> int:
    root = repo_root() or Path.cwd()
    samples = args.samples or root / "manifests" / "samples"
    crds = [root / "crds", default_tools_dir() / "crds" / "gateway-api"]
    print("starting a local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)…")
    with LocalCluster(nodes=args.nodes, crd_paths=crds, keep_dir=False) as cluster:
        print(f"  up in {cluster.startup_seconds:.1f}s; kubeconfig: {cluster.kubeconfig}")
        with OperatorProcess(cluster.kubeconfig, reconcile_interval_s=2.0) as operator:
            print(f"  operator running (log: {operator.log_path}, metrics :{operator.metrics_port})")
            print(f"applying {samples}")
            print(cluster.kubectl("apply", "-f", str(samples)))
            _wait_until_settled(cluster)
            print(cluster.kubectl("get", "sttmodels,modeldeployments,abtests,deployments,httproutes", "-A"))
            print(f"\nexport KUBECONFIG={cluster.kubeconfig}\nexport PATH={cluster.bin_dir}:$PATH")
            print("try: kubectl get sttm,mdep,abt -A -o wide; kubectl describe mdep -A")
            print("Ctrl-C stops everything")
            stop = {"now": False}
            signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
            started = time.monotonic()
            try:
                while not stop["now"]:
                    if args.exit_after and time.monotonic() - started > args.exit_after:
                        break
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
    print("stopped; everything cleaned up")
    return 0


if __name__ == "__main__":
    sys.exit(main(argparse.ArgumentParser().parse_args()))
