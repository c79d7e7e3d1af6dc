"""Memory per object: our own reconcile loops (controllers/handlers.py: Loops) against a Kopf
daemon per object, both fed by Kopf's real per-event processing.

No cluster: each run builds one Kopf registry, feeds it ADDED events of a real ModelDeployment
body (bench/scale/modeldeployment.json, read from a cluster with managedFields removed) under
N names (each created, then updated twice), lets every loop start and settle, and measures
what stays allocated (tracemalloc) per object, grouped by the file that allocated it. The
reconcile itself is replaced by one that
returns "settled" at once: what is measured is what a settled object costs the process.

    python bench/scale/kopf_memory.py --objects 2000

Variants (one fresh interpreter each):
- `ours`: the operator as it runs where the owned kinds have informers (every namespace, or
  named ones: the chart's modes): the events go to `handlers.own_event` as its own informer
  hands them over, without Kopf; the loop is a `Loops` waker;
- `ours-via-kopf`: the operator with a namespace glob, where Kopf watches the kind: its real
  registry (handlers.py imported), so a ModelDeployment has only the watching handler;
- `kopf-daemon`: a Kopf daemon per object running the loop shape the operator used before
  (`_run_loop` awaiting the daemon's stop flag and its wake-up event as two tasks).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fresh import machine, run_fresh

HERE = Path(__file__).resolve().parent
BODY = HERE / "modeldeployment.json"

_PROGRAM = r"""
import asyncio, copy, gc, json, sys, tracemalloc
import kopf
from kopf._cogs.structs import references
from kopf._core.actions import application, lifecycles
from kopf._core.engines import indexing
from kopf._core.intents import registries
from kopf._core.reactor import inventory, processing
from kubernetes import client
from stt_operator.controllers import context
from stt_operator.controllers.kopf_tuning import tune_kopf
from stt_operator.services.kube import Kube
from stt_operator.settings import OperatorSettings

variant, objects, body_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# A glob: Kopf watches the kind (handlers.py decides at import).
settings = OperatorSettings(namespaces=["scale-*"] if variant == "ours-via-kopf" else [])
context._current = context.OperatorContext(settings=settings, kube=Kube(client.ApiClient()))
BODY = json.load(open(body_path))
RESOURCE = references.Resource(
    "stt.dev", "v1alpha1", "modeldeployments", kind="ModelDeployment", namespaced=True
)

if variant.startswith("ours"):
    from stt_operator.controllers import handlers
    handlers.reconcile_now = lambda key, uid: None  # settled at once
    registry = registries.get_default_registry()
else:
    registry = registries.OperatorRegistry()

    async def loop(stopped, body, **_):
        # The former loop's waiting: the daemon's stop flag and the wake-up event, as two tasks.
        event = asyncio.Event()
        stop = asyncio.ensure_future(stopped.wait())
        while not stopped:
            woken = asyncio.ensure_future(event.wait())
            await asyncio.wait({woken, stop}, return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()

    async def on_event(**_):
        pass

    kopf.daemon("stt.dev", "v1alpha1", "modeldeployments", id="loop", registry=registry)(loop)
    kopf.on.event("stt.dev", "v1alpha1", "modeldeployments", id="event", registry=registry)(on_event)

kopf_settings = kopf.OperatorSettings()
tune_kopf(kopf_settings, settings)
memories = inventory.ResourceMemories()


async def no_patch(**_):
    return None, None

application.patch_and_check = no_patch  # a new object's finalizer patch, if any, is not sent


async def main():
    indexers, memo, queue = indexing.OperatorIndexers(), kopf.Memo(), asyncio.Queue()

    async def add(i):
        # Created, then two status updates: each event is decoded afresh, as a watch's are.
        for step, event_type in enumerate(("ADDED", "MODIFIED", "MODIFIED")):
            body = copy.deepcopy(BODY)
            version = str(1000 + 3 * i + step)
            body["metadata"].update(name=f"md-{i}", uid=f"uid-{i:08d}", resourceVersion=version)
            raw = json.loads(json.dumps(body))
            if variant == "ours":  # as the informer hands it over, on the event loop
                handlers.own_event("ModelDeployment", event_type, raw)
                await asyncio.sleep(0)
                continue
            await processing.process_resource_event(
                lifecycle=lifecycles.all_at_once, indexers=indexers, registry=registry,
                settings=kopf_settings, memories=memories, memobase=memo, resource=RESOURCE,
                raw_event={"type": event_type, "object": raw}, event_queue=queue,
            )

    for i in range(50):  # warm-up: first-use allocations are not per object
        await add(i)
    await asyncio.sleep(0.5)
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    for i in range(50, 50 + objects):
        await add(i)
    await asyncio.sleep(1.0)
    gc.collect()
    after = tracemalloc.take_snapshot()
    stats = after.compare_to(before, "filename")
    by_file = {}
    for stat in stats:
        name = stat.traceback[0].filename
        for marker in ("site-packages/", "python3.11/", "operator/"):
            if marker in name:
                name = name.split(marker, 1)[1]
                break
        by_file[name] = by_file.get(name, 0) + stat.size_diff
    total = sum(by_file.values())
    top = sorted(by_file.items(), key=lambda item: -item[1])[:12]
    print(json.dumps({
        "variant": variant,
        "objects": objects,
        "kib_per_object": round(total / objects / 1024, 2),
        "top_kib_per_object": {name: round(size / objects / 1024, 2) for name, size in top},
    }))


asyncio.run(main())
"""


def measure(variant: str, objects: int) -> dict[str, Any]:
    return run_fresh(_PROGRAM, variant, str(objects), str(BODY), timeout_s=600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = [measure(variant, args.objects) for variant in ("kopf-daemon", "ours-via-kopf", "ours")]
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": machine(),
        "body_bytes": len(BODY.read_text()),
        "results": results,
    }
    for result in results:
        print(f"{result['variant']:>12}: {result['kib_per_object']:6.2f} KiB per object")
        for name, kib in result["top_kib_per_object"].items():
            print(f"{'':>14}{kib:6.2f}  {name}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
