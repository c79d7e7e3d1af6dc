"""The pydantic models refuse every spec of the rejected corpus, as the apiserver does (the
integration test `test_crd_admission.py` proves the apiserver side), naming the field."""

from __future__ import annotations

import pytest

from stt_harness.specs import CORPUS, RejectedCase, rejected_cases
from stt_operator.api import ABTest, ModelDeployment, SpecError, STTModel

KINDS = {"STTModel": STTModel, "ModelDeployment": ModelDeployment, "ABTest": ABTest}
CASES = rejected_cases()


def test_corpus_is_large_and_unique() -> None:
    assert len(CASES) > 200, CORPUS
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_models_reject(case: RejectedCase) -> None:
    with pytest.raises(SpecError) as info:
        KINDS[case.doc["kind"]].from_body(case.doc)
    # The field: its last path segment (without list indexes) is named in the error.
    field = case.expect[0].split(".")[-1].split("[")[0]
    if field != "unknown field":
        assert field in str(info.value), f"{case.id}: {field!r} not in {info.value}"
