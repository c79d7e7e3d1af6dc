"""`make demo` (`stt-demo`): the product's loop on one machine, every part real.

Starts a local control plane and a real node (kubelet + containerd, see ``stt_harness.node``)
built from Go modules, the operator's images on that node, Traefik as the Gateway API data
plane, Prometheus run by the Prometheus Operator, and the operator (configured as a Helm
install would be). Then, in namespace `stt-demo`, with progress printed as it happens:

1. two real recognisers: the project's ONNX CTC model, validated by its Job on a labelled
   espeak-ng set and quantized to INT8 by its quantization Job (WER-gated, published to a
   claim, registered as its own STTModel and validated in turn); and the pocketsphinx
   recogniser, with a degraded twin (noisy input, narrow beams: really worse);
2. endpoint `asr` (pocketsphinx) takes a canary of the degraded twin: the operator's evaluator
   replays the labelled set to both revisions, Prometheus scrapes it, the WER analysis fails and
   the route goes back to 100 % stable, while a client's requests through the Gateway all succeed;
3. endpoint `commands` (the CTC model) takes a canary of its INT8 copy, promoted step by step;
4. an A/B test on `asr` (sticky sessions) between the recogniser and its degraded twin reaches
   a verdict with its interval and effect size;
5. `kubectl stt report` writes an HTML report for the A/B test and for each rollout.

It ends by printing the reports' paths and the `kubectl stt` commands to try, and keeps
everything up until Ctrl-C (or `--exit-after`). `Story` is the walk-through itself; the
integration test `tests/integration/test_demo.py` runs it on the test session's cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stt_harness import closedloop as cl
from stt_harness.kubewait import condition, wait_for

if TYPE_CHECKING:
    from stt_harness.cluster import LocalCluster
    from stt_operator.services.kube import Kube

NAMESPACE = "stt-demo"
RECOGNISER, DEGRADED, CTC = "sphinx", "sphinx-degraded", "ctc"
ASR, COMMANDS, AB = "asr", "commands", "sphinx-vs-degraded"
ASR_HOST, COMMANDS_HOST = "asr.demo.test", "commands.demo.test"
SESSION_HEADER = "x-session-id"
ENDED = ("Concluded", "Promoted", "Stopped", "Failed")  # ABTest phases after the verdict


@dataclass
class Track:
    """One endpoint's rollout as the story saw it."""

    endpoint: str
    from_model: str
    to_model: str
    outcome: str = ""  # RolledBack | Promoted
    decision_s: float = 0.0  # model change -> decision
    weights: list[int] = field(default_factory=list)  # the new model's weight in each route seen
    analysis: list[dict[str, Any]] = field(default_factory=list)  # status.analysisRuns
    requests: int = 0
    failed: int = 0
    violations: list[str] = field(default_factory=list)


@dataclass
class StoryResult:
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> status summary
    rollback: Track | None = None
    int8: Track | None = None
    abtest: dict[str, Any] = field(default_factory=dict)  # the ABTest's status at the verdict
    ab_requests: int = 0
    ab_failed: int = 0
    sticky_rules: int = 0  # HTTPRoute rules matching the session header while the test ran
    live_requests: dict[str, float] = field(default_factory=dict)  # client requests per variant (Triton)
    reports: list[Path] = field(default_factory=list)
    seconds: float = 0.0


class Story:
    """The walk-through on a running cluster: real node, Gateway, Prometheus stack and an
    operator that serves `namespace`."""

    def __init__(
        self,
        cluster: LocalCluster,
        kube: Kube,
        gateway: Any,
        prometheus_url: str,
        evalset: Path,
        workdir: Path,
        namespace: str = NAMESPACE,
        say: Callable[[str], None] = print,
    ) -> None:
        self.cluster, self.kube, self.gateway = cluster, kube, gateway
        self.prometheus_url, self.evalset, self.workdir = prometheus_url, evalset, workdir
        self.namespace = namespace
        self.t0 = time.monotonic()
        self._say = say
        self._lock = threading.Lock()
        self.result = StoryResult()

    def say(self, text: str) -> None:
        elapsed = time.monotonic() - self.t0
        with self._lock:
            self._say(f"[{int(elapsed // 60):02d}:{int(elapsed % 60):02d}] {text}")

    # --- the story ------------------------------------------------------------------------------

    def run(self) -> StoryResult:
        ns = self.namespace
        self.say(f"1. models in namespace {ns}: the ONNX CTC model (validated, quantized) and pocketsphinx")
        cl.prepare_namespace(self.cluster, self.gateway, ns, self.evalset, self.workdir / "models")
        self.kube.apply(cl.ctc_model(CTC, ns, quantize_to="ctc-int8.onnx"))
        self.kube.apply(cl.sphinx_model(RECOGNISER, ns))
        self.kube.apply(cl.sphinx_model(DEGRADED, ns, degraded=True))
        rollback, int8 = Track(ASR, RECOGNISER, DEGRADED), Track(COMMANDS, CTC, f"{CTC}-int8")
        # The two rollouts run side by side: the pocketsphinx canary needs no Job, the INT8 one
        # waits for the validation and quantization Jobs.
        threads = [
            threading.Thread(target=self._canary, args=(rollback, [{"setWeight": 50}, {"analysis": {}}])),
            threading.Thread(target=self._int8_canary, args=(int8,)),
        ]
        errors: list[BaseException] = []
        for t in threads:
            t.run = _catching(t.run, errors)  # type: ignore[method-assign]
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        self.result.rollback, self.result.int8 = rollback, int8
        self._abtest()
        self._reports()
        self.result.seconds = time.monotonic() - self.t0
        return self.result

    def _int8_canary(self, track: Track) -> None:
        ns = self.namespace
        self.say(
            f"   {CTC}: validation Job, then quantization Job (dynamic INT8, WER-gated) on the real node"
        )
        model = wait_for(
            lambda: (
                (m := self.kube.get(cl.API, "STTModel", CTC, ns))
                and (
                    (m.get("status") or {}).get("quantizedModel")
                    or "False"
                    in (condition(m, "Validated").get("status"), condition(m, "Quantized").get("status"))
                )
                and m
            ),
            900,
            "the CTC model validated and quantized",
        )
        status = model["status"]
        if not status.get("quantizedModel"):
            raise RuntimeError(f"{CTC} was not quantized: {status.get('conditions')}")
        validation, quantization = status.get("validation") or {}, status.get("quantization") or {}
        self.say(
            f"   {CTC}: validated on {validation.get('samples')} espeak-ng utterances, WER "
            f"{_num(validation.get('wer'))}; INT8 copy {status['quantizedModel']}: WER "
            f"{_num(quantization.get('baselineWer'))} -> {_num(quantization.get('quantizedWer'))}, "
            f"speed-up {_num(quantization.get('speedup'), 2)}x, {quantization.get('sizeBytes')} bytes"
        )
        derived = wait_for(
            lambda: (
                (m := self.kube.get(cl.API, "STTModel", track.to_model, ns))
                and condition(m, "Ready").get("status") == "True"
                and m
            ),
            600,
            "the INT8 model validated",
        )
        self.result.models[CTC] = {"validation": validation, "quantization": quantization}
        self.result.models[track.to_model] = {"validation": (derived["status"].get("validation") or {})}
        self.say(
            f"   {track.to_model}: validated by its own Job, "
            f"WER {_num(derived['status']['validation'].get('wer'))}"
        )
        steps = [{"setWeight": 25}, {"analysis": {}}, {"setWeight": 50}, {"analysis": {}}]
        self._canary(track, steps, vocabulary=cl.ctc_vocabulary(), host=COMMANDS_HOST)

    def _canary(
        self,
        track: Track,
        steps: list[dict[str, Any]],
        vocabulary: list[str] | None = None,
        host: str = ASR_HOST,
    ) -> None:
        """Serve `track.from_model`, then change the model under client load and follow the
        canary to its decision, printing every route the operator puts in place."""
        ns, name = self.namespace, track.endpoint
        manifest = cl.canary_endpoint(
            ns,
            track.from_model,
            steps,
            margin=0.05 if vocabulary else 0.03,
            min_samples=20,
            name=name,
            host=host,
        )
        observer = cl.RolloutObserver(self.kube, ns, endpoint=name)
        self.kube.apply(manifest)
        observer.until(
            lambda md: (md.get("status") or {}).get("phase") == "Healthy" and md,
            600,
            f"{name} serving {track.from_model}",
        )
        self.say(f"2. {name}: serving {track.from_model}; canary of {track.to_model} with a WER analysis")
        load = self._client(name, host, vocabulary)
        wait_for(lambda: not load.failed(load.send()), 60, f"a transcription through the Gateway ({name})")
        load.start()
        seen = len(observer.changes)
        try:
            manifest["spec"]["model"]["name"] = track.to_model
            self.kube.apply(manifest)
            started = time.monotonic()

            def decided(md: dict[str, Any]) -> Any:
                nonlocal seen
                for change in observer.changes[seen:]:
                    self.say(f"   {name}: route {_route(change.weights)}")
                seen = len(observer.changes)
                status = md.get("status") or {}
                if (
                    status.get("lastRollback")
                    and status["lastRollback"].get("fromModel", track.to_model) == track.to_model
                ):
                    return "RolledBack"
                if status.get("stableModel") == track.to_model and status.get("phase") == "Healthy":
                    return "Promoted"
                return None

            track.outcome = observer.until(decided, 600, f"the {name} canary decided")
            track.decision_s = time.monotonic() - started
            observer.until(
                lambda md: len(observer.changes[-1].weights) == 1 and md, 120, "one revision routed"
            )
            decided(observer.last)
            end = len(load.requests) + 5
            wait_for(lambda: len(load.requests) >= end, 60, "client requests after the decision")
        finally:
            load.stop()
        md = observer.last
        track.analysis = list(md["status"].get("analysisRuns") or [])
        track.weights = observer.candidate_weights(track.to_model)
        track.requests, track.failed = load.counts()
        track.violations = list(observer.violations)
        last = track.analysis[-1] if track.analysis else {}
        self.say(
            f"   {name}: {track.outcome} after {track.decision_s:.0f}s; WER {_num(last.get('value'))} "
            f"({track.to_model}) vs {_num(last.get('baseline'))} ({track.from_model}); client requests "
            f"{track.requests}, failed {track.failed}"
        )

    def _abtest(self) -> None:
        """An A/B test on `asr` between the recogniser and its degraded twin: sticky sessions,
        the live split checked, a paired verdict on WER."""
        ns = self.namespace
        self.say(f"3. A/B test {AB} on {ASR}: {RECOGNISER} vs {DEGRADED}, 50/50, sticky by {SESSION_HEADER}")
        # What a person does after a rollback: put the good model back in the spec.
        resource = self.kube.resource(cl.API, "ModelDeployment")
        self.kube.merge_patch(resource, ASR, ns, {"spec": {"model": {"name": RECOGNISER}}})
        wait_for(
            lambda: (
                (md := self.kube.get(cl.API, "ModelDeployment", ASR, ns))
                and md["status"].get("phase") == "Healthy"
                and md
            ),
            120,
            f"{ASR} Healthy on {RECOGNISER}",
        )
        self.kube.apply(
            {
                "apiVersion": cl.API,
                "kind": "ABTest",
                "metadata": {"name": AB, "namespace": ns},
                "spec": {
                    "endpoint": {"modelDeploymentRef": {"name": ASR}},
                    "variants": [
                        {"name": "control", "model": {"name": RECOGNISER}, "weight": 50},
                        {"name": "candidate", "model": {"name": DEGRADED}, "weight": 50},
                    ],
                    "duration": "10m",
                    "minDuration": "10s",
                    "primaryMetric": {"name": "wer", "preset": "wer", "minSamples": 20},
                    "minSamplesPerVariant": 20,
                    "stickiness": {"enabled": True, "sessionHeader": SESSION_HEADER},
                    "promotion": {"auto": True},
                },
            }
        )
        # Anonymous clients (no session header): the route's weighted rule splits them, so the
        # live split the operator measures from Triton's counters should match the weights.
        client = self._client(ASR, ASR_HOST)
        last_phase = ""

        def verdict() -> Any:
            nonlocal last_phase
            ab = self.kube.get(cl.API, "ABTest", AB, ns) or {}
            status = ab.get("status") or {}
            if status.get("phase") == "Running":  # the session header's rules, while the test runs
                sticky = [
                    r for r in self._route_rules(ASR) if any(m.get("headers") for m in r.get("matches") or [])
                ]
                self.result.sticky_rules = max(self.result.sticky_rules, len(sticky))
            if status.get("phase") != last_phase:
                last_phase = str(status.get("phase"))
                self.say(f"   {AB}: phase {last_phase} {status.get('variantSummary') or ''}".rstrip())
            # Interim looks record an Inconclusive decision; the verdict ends the test.
            return status.get("phase") in ENDED and ab

        wait_for(
            lambda: (
                (self.kube.get(cl.API, "ABTest", AB, ns) or {}).get("status", {}).get("phase") == "Running"
            ),
            300,
            "the A/B test running",
        )
        client.start()
        try:
            ab = wait_for(verdict, 600, "the A/B verdict")
        finally:
            client.stop()
        status = ab["status"]
        decision = status["decision"]
        ci = decision.get("confidenceInterval") or {}
        self.say(
            f"   {AB}: {decision['outcome']} {status.get('winner') or ''} on {decision.get('metric')}: "
            f"effect "
            f"{_num(decision.get('effect'))} (CI {_num(ci.get('lower'))} .. {_num(ci.get('upper'))}), "
            f"p {_num(decision.get('pValue'), 4)}"
        )
        self.result.abtest = status
        self.result.ab_requests, self.result.ab_failed = client.counts()
        # The live split as Prometheus saw it (Triton's counters less the replay), once the last
        # requests are scraped.
        time.sleep(2 * float(cl.SCRAPE_INTERVAL.removesuffix("s")))
        live = self._live_requests(ab)
        total = sum(live.values()) or 1.0
        self.result.live_requests = live
        self.say(
            f"   {AB}: live split measured from Triton "
            + " ".join(f"{v}={100 * n / total:.0f}% ({n:.0f})" for v, n in sorted(live.items()))
            + f"; weights {status.get('variantSummary')}"
        )

    def _live_requests(self, ab: dict[str, Any]) -> dict[str, float]:
        from stt_operator.report import collect, timeline

        # Up to the verdict (endedAt): the evaluator is deleted right after it, and the replay
        # it sent after its last scrape would count as live.
        t0, t1, step = collect.window(*collect.lifetime(ab), time.time())
        source = collect.PrometheusRange(self.prometheus_url)
        selector = collect.Selector(ASR, self.namespace)
        data = collect.collect_series(source, selector, t0, t1, step)
        collect.add_live_traffic(source, data, ab, selector)
        return timeline.live_totals(data.served, data.replayed, since=data.start)

    def _client(self, endpoint: str, host: str, vocabulary: list[str] | None = None) -> cl.LoadGenerator:
        """A client sending the set's shortest utterance to `endpoint` through the Gateway once a
        second, bounded to 600 requests / 600 s."""
        shortest = min(_utterances(self.evalset), key=lambda u: u.duration_s)
        return cl.LoadGenerator(
            self.gateway.url,
            shortest.audio,
            period_s=1.0,
            max_requests=600,
            max_seconds=600,
            vocabulary=vocabulary,
            endpoint=endpoint,
            host=host,
        )

    def _route_rules(self, endpoint: str) -> list[dict[str, Any]]:
        from stt_operator.builders.routing import GATEWAY_API_VERSION, route_name

        route = self.kube.get(GATEWAY_API_VERSION, "HTTPRoute", route_name(endpoint), self.namespace) or {}
        return list((route.get("spec") or {}).get("rules") or [])

    def _reports(self) -> None:
        self.say("4. reports (kubectl stt report: plots from status and Prometheus range queries)")
        out = self.workdir / "reports"
        out.mkdir(parents=True, exist_ok=True)
        for ref in (f"abt/{AB}", ASR, COMMANDS):
            path = out / f"{ref.replace('/', '-')}.html"
            self.kubectl_stt("report", ref, "--prometheus", self.prometheus_url, "--output-file", str(path))
            self.result.reports.append(path)
            self.say(f"   {path}")

    def kubectl_stt(self, *args: str) -> str:
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)}
        done = subprocess.run(
            [str(Path(sys.executable).with_name("kubectl-stt")), *args, "-n", self.namespace],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kubectl stt {' '.join(args)}: rc {done.returncode}: {done.stderr[-2000:]}")
        return done.stdout


def _catching(run: Callable[[], None], errors: list[BaseException]) -> Callable[[], None]:
    def wrapped() -> None:
        try:
            run()
        except BaseException as exc:  # reported by the joining thread
            errors.append(exc)

    return wrapped


def _utterances(evalset: Path) -> list[Any]:
    from stt_operator.speech.evalset import load_evalset

    return list(load_evalset(evalset))


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def _route(weights: dict[str, int]) -> str:
    return ", ".join(f"{name} {weight}%" for name, weight in sorted(weights.items())) or "(empty)"


# --- the command --------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=1, help="kwok GPU nodes beside the real node")
    parser.add_argument("--exit-after", type=float, help="stop N seconds after the story (scripted runs)")
    parser.add_argument("--workdir", type=Path, help="where reports and logs go (default: a new temp dir)")


def main(args: argparse.Namespace) -> int:
    from stt_harness.cluster import LocalCluster, default_crd_paths, ensure_tools, repo_root
    from stt_harness.gateway import running_gateway
    from stt_harness.promoperator import running_prometheus_operator
    from stt_operator.services.kube import Kube
    from stt_operator.speech.evalset import generate_evalset

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="stt-demo-"))
    for part in ("traefik", "prometheus-operator", "evalset-src"):
        (workdir / part).mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    print("starting a local control plane and a real node (kubelet + containerd) …", flush=True)
    tools = ensure_tools()
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(
            LocalCluster(
                nodes=args.nodes,
                crd_paths=default_crd_paths(tools, repo_root()),
                tools_dir=tools,
                real_node=True,
            )
        )
        print(f"  up in {cluster.startup_seconds:.0f}s; kubeconfig {cluster.kubeconfig}", flush=True)
        print("  images (operator, jobs, CPU Triton) built or reused, imported into the node …", flush=True)
        images = cl.node_images(cluster)
        gateway = stack.enter_context(running_gateway(cluster, workdir / "traefik"))
        prometheus = stack.enter_context(
            running_prometheus_operator(cluster, workdir / "prometheus-operator")
        )
        print(f"  Traefik {gateway.url}, Prometheus {prometheus.url}", flush=True)
        print("  labelled set: 24 espeak-ng command utterances …", flush=True)
        evalset = cl.readable_copy(generate_evalset(workdir / "evalset-src", 24, seed=11), workdir)
        operator = stack.enter_context(
            cl.loop_operator(cluster, images, prometheus.url, workdir / "operator", namespaces=(NAMESPACE,))
        )
        print(
            f"  operator running (log {operator.log_path}); ready after {time.monotonic() - t0:.0f}s\n",
            flush=True,
        )
        kube = Kube(stack.enter_context(cluster.api_client()))
        cluster.kubectl("create", "namespace", NAMESPACE)
        result = Story(cluster, kube, gateway, prometheus.url, evalset, workdir).run()
        print(f"\nthe story took {result.seconds:.0f}s ({time.monotonic() - t0:.0f}s with start-up)")
        print(
            f"\nexport KUBECONFIG={cluster.kubeconfig}\n"
            f"export PATH={cluster.bin_dir}:{Path(sys.executable).parent}:$PATH"
        )
        print(f"export STT_PROMETHEUS_URL={prometheus.url}\ntry:")
        for command in (
            f"kubectl stt status -n {NAMESPACE}",
            f"kubectl stt get {ASR} -n {NAMESPACE}",
            f"kubectl stt get {COMMANDS} -n {NAMESPACE}",
            f"kubectl stt results abt/{AB} -n {NAMESPACE}",
            f"kubectl stt get abt/{AB} -n {NAMESPACE}",
            f"kubectl stt undo {COMMANDS} --to-revision 1 -n {NAMESPACE}",
            f"kubectl stt report {COMMANDS} -n {NAMESPACE}",
            f"kubectl get sttmodels,modeldeployments,abtests,pods -n {NAMESPACE}",
        ):
            print(f"  {command}")
        print("reports:")
        for path in result.reports:
            print(f"  {path}")
        print("Ctrl-C stops everything", flush=True)
        _serve_until_stopped(args.exit_after)
    print("stopped; everything cleaned up")
    return 0


def _serve_until_stopped(exit_after: float | None) -> None:
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    started = time.monotonic()
    try:
        while not stop["now"] and not (exit_after is not None and time.monotonic() - started > exit_after):
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
