"""Specs of the built-in recogniser and its deliberately degraded variant.

`sphinx_io()` is the I/O contract of `sphinx_stt/model.py`; `sphinx_triton(...)` the Triton
part of an STTModel spec for the baseline or the degraded variant. The degraded variant is the
same recogniser fed audio with white noise and decoded with narrower beams, so its WER is
really (and reproducibly) worse, which is what rollback and A/B demos need.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from stt_operator.models import model_source
from stt_operator.triton.spec import InstanceGroup as Group
from stt_operator.triton.spec import IOSpec, TensorSpec, TritonSpec

MODEL_DIR_NAME = "sphinx_stt"
GRAMMAR_FILE = "commands.jsgf"
AUDIO, AUDIO_LENGTH, TRANSCRIPT, CONFIDENCE = "AUDIO", "AUDIO_LENGTH", "TRANSCRIPT", "CONFIDENCE"

# The degraded variant: noisy input, narrow beams.
DEGRADED_PARAMETERS: dict[str, str] = {"noise_snr_db": "8", "beam": "1e-20", "wbeam": "1e-12"}


def sphinx_io(sample_rate: int = 16000) -> IOSpec:
    return IOSpec(
        # 16-bit PCM: half the bytes of float32 on the wire (the evaluator's main cost).
        inputs=[
            TensorSpec(AUDIO, "TYPE_INT16", [-1], "audio"),
            # Each row's true sample count, so a zero-padded batch transcribes like single requests.
            TensorSpec(AUDIO_LENGTH, "TYPE_INT32", [1], "audio-length", optional=True),
        ],
        outputs=[
            TensorSpec(TRANSCRIPT, "TYPE_STRING", [1], "transcript"),
            TensorSpec(CONFIDENCE, "TYPE_FP32", [1], "confidence"),
        ],
        sample_rate=sample_rate,
    )


def sphinx_triton(
    *,
    degraded: bool = False,
    grammar: bool = True,
    kind: str = "KIND_CPU",
    count: int = 1,
    execution_env: str | None = None,
    extra_parameters: dict[str, str] | None = None,
) -> TritonSpec:
    """`execution_env`: a conda-pack archive with numpy + pocketsphinx for the stock NGC image,
    e.g. "$$TRITON_MODEL_DIRECTORY/sphinx-env.tar.gz" (Triton's EXECUTION_ENV_PATH)."""
    params: dict[str, str] = {}
    if execution_env:
        params["EXECUTION_ENV_PATH"] = execution_env
    if grammar:
        params["grammar"] = GRAMMAR_FILE
    if degraded:
        params.update(DEGRADED_PARAMETERS)
    params.update(extra_parameters or {})
    return TritonSpec(
        backend="python",
        max_batch_size=16,  # rows decode one after another; 16 per request amortises a call's cost
        instance_group=Group(kind=kind, count=count),
        warmup=True,  # one second of silence per instance before the model reports ready
        parameters=params,
    )


def _jsgf_alternatives(words: Iterable[str]) -> str:
    alts = list(dict.fromkeys(words))
    return alts[0] if len(alts) == 1 else "(" + " | ".join(alts) + ")"


def jsgf_from_templates(templates: Sequence[Sequence[Sequence[str]]], name: str = "commands") -> str:
    """A JSGF grammar accepting every sentence of slot templates (slot = tuple of alternatives)."""
    if not templates:
        raise ValueError("templates: at least one template is needed for a grammar")
    rules = []
    for i, template in enumerate(templates):
        if not template or any(not slot for slot in template):
            raise ValueError(f"templates[{i}]: every slot needs at least one word")
        rules.append(" ".join(_jsgf_alternatives(slot) for slot in template))
    body = "\n    | ".join(rules)
    return f"#JSGF V1.0;\ngrammar {name};\npublic <{name}> = {body};\n"


def command_grammar() -> str:
    """The JSGF of the evaluation sets' command-and-control domain."""
    from stt_operator.speech.evalset import GRAMMAR

    return jsgf_from_templates(GRAMMAR)


def sphinx_version_files(grammar_text: str | None = None) -> dict[str, object]:
    """Files of one version directory: the model code and its grammar."""
    src = model_source(MODEL_DIR_NAME)
    return {"model.py": src / "model.py", GRAMMAR_FILE: grammar_text or command_grammar()}
