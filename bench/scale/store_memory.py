"""Memory per object held by an informer (services/informers.py: Store), against holding the
decoded dicts as the Store did before it packed them.

No cluster: a serving Deployment built by the operator's own builders (the pocketsphinx
model of the harness, a status as the controller manager writes it), trimmed as the informer
trims it, held under N names; a Service's identity (what kinds not kept hold) likewise.
tracemalloc measures what stays allocated per object; one indexed read of a Deployment is
timed too (the decode a reconcile now pays).

    python bench/scale/store_memory.py --objects 2000 --json bench/scale/results-store-memory.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from stt_harness.resources import stt_model
from stt_operator.builders.metadata import LABEL_DEPLOYMENT
from stt_operator.builders.revision import serving_params
from stt_operator.builders.serving import Revision, triton_deployment
from stt_operator.services.informers import Store, identity, trimmed

OWNER = {
    "apiVersion": "stt.dev/v1alpha1",
    "kind": "ModelDeployment",
    "name": "asr",
    "uid": "0a1b2c3d-1111-2222-3333-444455556666",
    "controller": True,
    "blockOwnerDeletion": True,
}


def deployment(i: int) -> dict[str, Any]:
    """Endpoint `asr-{i}`'s Deployment as the watch delivers it."""
    params = serving_params(
        deployment_name=f"asr-{i}",
        namespace="bench",
        revision=Revision("model-a", "61b3cfec"),
        role="stable",
        model=stt_model("model-a", "bench"),
        replicas=1,
        resources_override=None,
        triton_image="triton",
        operator_image="operator",
        owner={**OWNER, "name": f"asr-{i}"},
    )
    body = triton_deployment(params)
    body["metadata"].update(
        uid=f"9f1b2c3d-1111-2222-3333-{i:012d}",
        resourceVersion=str(100000 + i),
        generation=1,
        creationTimestamp="2026-12-06T15:00:00Z",
        annotations={"deployment.kubernetes.io/revision": "1"},
    )
    moment = "2026-12-06T15:00:05Z"
    body["status"] = {
        "observedGeneration": 1,
        "replicas": 1,
        "updatedReplicas": 1,
        "readyReplicas": 1,
        "availableReplicas": 1,
        "conditions": [
            {
                "type": "Available",
                "status": "True",
                "lastUpdateTime": moment,
                "lastTransitionTime": moment,
                "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
            },
            {
                "type": "Progressing",
                "status": "True",
                "lastUpdateTime": moment,
                "lastTransitionTime": moment,
                "reason": "NewReplicaSetAvailable",
                "message": f'ReplicaSet "asr-{i}-model-a-61b3cfec-7c9d8f" has successfully progressed.',
            },
        ],
    }
    return body


def kib_per_object(hold: Callable[[int], Any], n: int) -> float:
    """KiB that stay allocated per object once `hold(i)` has held object i, for i < n."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = hold(n)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return round((after - before) / n / 1024, 2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--json")
    args = parser.parse_args()
    n = args.objects
    # The watch's bodies are decoded before either store sees them (as json.loads would leave them).
    deployments = [json.loads(json.dumps(trimmed(deployment(i)))) for i in range(n)]
    services = [json.loads(json.dumps(identity(deployment(i)))) for i in range(n)]

    def decoded(bodies: list[dict[str, Any]]) -> Callable[[int], Any]:
        return lambda count: {b["metadata"]["name"]: json.loads(json.dumps(b)) for b in bodies[:count]}

    def packed(bodies: list[dict[str, Any]], indexed: tuple[str, ...]) -> Callable[[int], Any]:
        def hold(count: int) -> Store:
            store = Store(indexed)
            for b in bodies[:count]:
                store.put("bench", b["metadata"]["name"], json.loads(json.dumps(b)))
            return store

        return hold

    figures: dict[str, Any] = {
        "deployment_kib": {
            "decoded_dict": kib_per_object(decoded(deployments), n),
            "store": kib_per_object(packed(deployments, (LABEL_DEPLOYMENT,)), n),
        },
        "identity_kib": {
            "decoded_dict": kib_per_object(decoded(services), n),
            "store": kib_per_object(packed(services, ()), n),
        },
    }
    store = packed(deployments, (LABEL_DEPLOYMENT,))(n)
    reads = []
    for i in range(0, n, max(1, n // 500)):
        started = time.perf_counter()
        found = store.matching("bench", {LABEL_DEPLOYMENT: f"asr-{i}"})
        reads.append(time.perf_counter() - started)
        assert len(found) == 1 and found[0]["status"]["availableReplicas"] == 1
    figures["indexed_read_us_median"] = round(statistics.median(reads) * 1e6, 1)
    result = {
        "command": " ".join(["python", *sys.argv]),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "objects": n,
        **figures,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
            out.write("\n")


if __name__ == "__main__":
    main()
