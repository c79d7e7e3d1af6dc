"""`kubectl stt promotion`: the Git change for an ABTest's winner (kubectl_plugin.promotion_patch)."""

from __future__ import annotations

import pytest

from stt_operator.kubectl_plugin import UsageError, promotion_patch

AB = {
    "metadata": {"name": "ab", "namespace": "team-a"},
    "spec": {
        "endpoint": {"modelDeploymentRef": {"name": "asr"}},
        "variants": [
            {"name": "control", "model": {"name": "model-a"}},
            {"name": "candidate", "model": {"name": "model-b"}},
        ],
    },
}


def test_the_recorded_promotion_wins() -> None:
    ab = {
        **AB,
        "status": {
            "winner": "candidate",
            "promotion": {"mode": "Announce", "model": "model-b", "endpoint": "asr"},
        },
    }
    endpoint, model, manifest = promotion_patch(ab)
    assert (endpoint, model) == ("asr", "model-b")
    assert manifest == {
        "apiVersion": "stt.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "asr", "namespace": "team-a"},
        "spec": {"model": {"name": "model-b"}},
    }


def test_a_winner_without_promotion_still_gets_a_patch() -> None:
    assert promotion_patch({**AB, "status": {"winner": "control"}})[1] == "model-a"


def test_no_winner_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no winner to promote"):
        promotion_patch({**AB, "status": {"phase": "Running"}})


def test_the_tree_says_what_is_declared_and_what_serves() -> None:
    from stt_operator.kubectl_plugin import rollout_tree

    md = {
        "metadata": {"name": "asr", "namespace": "team-a"},
        "spec": {"strategy": {"type": "Canary"}},
        "status": {"phase": "Paused", "declaredModel": "model-b", "stableModel": "model-a"},
    }
    assert "declared model model-b, serving model-a" in rollout_tree(md, None, [], [])
    md["status"]["declaredModel"] = "model-a"
    assert "declared model" not in rollout_tree(md, None, [], [])
