"""The chart's Argo CD health checks and actions, run in real Lua 5.1 (Argo CD's dialect) on
objects captured from the real control plane by tests/integration/test_gitops.py and
test_abtests.py (STT_CAPTURE_ARGOCD_FIXTURES=1) into tests/data/argocd; and once more in
gopher-lua itself, the interpreter Argo CD embeds (hack/argocd-lua, built with Go)."""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

import pytest

from stt_harness.argocd import (
    FIXTURES,
    ArgoCD,
    Customizations,
    build_gopher_lua,
    keep_empty_shapes,
    merge_patch,
    render_customizations,
    run_gopher,
)
from stt_harness.cluster import ensure_tools

# fixture -> (health status, text in the message, actions offered)
EXPECTED: dict[str, tuple[str, str, set[str]]] = {
    "sttmodel-ready": ("Healthy", "", set()),
    "mdep-healthy": ("Healthy", "model model-a serves the endpoint", {"pause"}),
    "mdep-paused-at-step": ("Suspended", "paused until a person resumes", {"promote", "abort", "pause"}),
    "mdep-paused-by-spec": ("Suspended", "spec.paused is true", {"promote", "abort", "resume"}),
    "mdep-rolled-back": ("Degraded", "rolled back", {"pause", "retry"}),
    "mdep-held-by-abtest": ("Healthy", "held by ABTest ab", {"pause"}),
    "abtest-running": ("Progressing", "splitting asr", {"abort"}),
    "abtest-concluded-announced": ("Healthy", "winner candidate", set()),
    "abtest-stopped": ("Healthy", "ended by a person", set()),
}


@cache
def argocd(fmt: str = "split") -> ArgoCD:
    return ArgoCD(Customizations(render_customizations(str(ensure_tools() / "bin" / "helm"), fmt)))


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def test_every_captured_object_has_an_expectation() -> None:
    assert sorted(p.stem for p in FIXTURES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("fmt", ["split", "legacy"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_health_and_offered_actions_of_captured_objects(name: str, fmt: str) -> None:
    status, text, offered = EXPECTED[name]
    obj = fixture(name)
    health = argocd(fmt).health(obj)
    assert health["status"] == status
    assert text in health["message"], health
    if obj["kind"] == "STTModel":
        assert obj["kind"] not in argocd(fmt).c.discovery  # no actions on a catalogue entry
        return
    actions = argocd(fmt).discover(obj)
    assert {a for a, enabled in actions.items() if enabled} == offered


def test_model_deployment_actions_change_only_what_the_operator_reads() -> None:
    obj = fixture("mdep-paused-at-step")
    a = argocd()
    assert merge_patch(obj, a.act(obj, "promote")) == {
        "metadata": {"annotations": {"stt.dev/promote": "true"}}
    }
    assert merge_patch(obj, a.act(obj, "abort")) == {"metadata": {"annotations": {"stt.dev/abort": "true"}}}
    assert merge_patch(obj, a.act(obj, "pause")) == {"spec": {"paused": True}}
    retry = merge_patch(obj, a.act(obj, "retry"))["metadata"]["annotations"]["stt.dev/retry"]
    assert len(retry) == len("2026-01-01T00:00:00Z") and retry.endswith("Z")
    paused = fixture("mdep-paused-by-spec")
    assert merge_patch(paused, a.act(paused, "resume")) == {"spec": {"paused": False}}


def test_a_spec_change_not_yet_observed_is_progressing() -> None:
    for name in ("mdep-healthy", "sttmodel-ready"):
        obj = copy.deepcopy(fixture(name))
        obj["metadata"]["generation"] = obj["status"]["observedGeneration"] + 1
        health = argocd().health(obj)
        assert health["status"] == "Progressing" and "observe generation" in health["message"]


def test_an_object_without_status_is_progressing() -> None:
    for name in ("mdep-healthy", "sttmodel-ready", "abtest-running"):
        obj = {k: v for k, v in fixture(name).items() if k != "status"}
        assert argocd().health(obj)["status"] == "Progressing"


def test_failed_phases_are_degraded() -> None:
    for name, phase in (
        ("mdep-healthy", "Failed"),
        ("sttmodel-ready", "Failed"),
        ("abtest-running", "Failed"),
    ):
        obj = copy.deepcopy(fixture(name))
        obj["status"]["phase"] = phase
        assert argocd().health(obj)["status"] == "Degraded"


def test_the_sandbox_is_argo_cds() -> None:
    """The scripts may only use what Argo CD's Lua VM offers: no io, no file loading."""
    from stt_harness.argocd import run_script

    assert run_script("return io == nil and dofile == nil and os.execute == nil", {}) is True
    assert run_script("return _VERSION", {}) == "Lua 5.1"


def test_gopher_lua_agrees_on_every_script_and_object() -> None:
    """Argo CD's own interpreter gives the same health, offered actions and action results."""
    binary = build_gopher_lua()
    a = argocd()
    for name in sorted(EXPECTED):
        obj = fixture(name)
        kind = obj["kind"]
        assert run_gopher(binary, a.c.health[kind], obj) == a.health(obj), name
        if kind not in a.c.discovery:
            continue
        offered = run_gopher(binary, a.c.discovery[kind], obj)
        assert {k: not v.get("disabled") for k, v in offered.items()} == a.discover(obj), name
        for action, script in a.c.actions[kind].items():
            if action == "retry":  # a timestamp: only its shape can agree
                stamp = run_gopher(binary, script, obj)["metadata"]["annotations"]["stt.dev/retry"]
                assert stamp.endswith("Z") and len(stamp) == 20
                continue
            assert merge_patch(obj, keep_empty_shapes(run_gopher(binary, script, obj), obj)) == merge_patch(
                obj, a.act(obj, action)
            ), (
                name,
                action,
            )
