"""The smoke transcription: one real Triton inference of a known utterance.

The operator ships one utterance (`speech/assets/smoke/`, espeak-ng English, 16 kHz 16-bit
PCM; its text is the file name). The call goes through tritonclient's gRPC client to the
revision's own Service, with the tensor names of the STTModel's `io` roles (the evaluator's
`TritonTranscriber`), and the answer is compared with the text after the evaluator's text
normalisation: equal passes, different fails (with the transcript), no answer is an error.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stt_operator.rollout.plan import SmokeResult

SMOKE_DIR = Path(__file__).resolve().parent.parent / "speech" / "assets" / "smoke"


@functools.cache
def builtin_utterance() -> tuple[str, np.ndarray]:
    """(text, int16 samples) of the built-in utterance."""
    from stt_operator.speech.evalset import read_wav

    (path,) = sorted(SMOKE_DIR.glob("*.wav"))
    audio, _ = read_wav(path)
    return path.stem.replace("_", " "), audio


def judge(expected: str, transcript: str, revision: str) -> SmokeResult:
    from stt_operator.speech.normalise import normalise_text

    if normalise_text(transcript) == normalise_text(expected):
        return SmokeResult(
            revision, "Passed", expected, transcript, f'transcribed "{transcript}" as expected'
        )
    return SmokeResult(
        revision, "Failed", expected, transcript, f'transcribed "{transcript}", expected "{expected}"'
    )


def smoke_transcribe(
    url: str, triton_model: str, io: Mapping[str, Any], revision: str, timeout_s: float
) -> SmokeResult:
    """Transcribe the built-in utterance at `url` (host:port of Triton's gRPC endpoint)."""
    from stt_operator.evaluator.model_io import Target
    from stt_operator.evaluator.replay import TritonTranscriber
    from stt_operator.evaluator.targets import model_io_from_spec

    expected, audio = builtin_utterance()
    try:
        target = Target("smoke", triton_model, url, io=model_io_from_spec(io))
    except ValueError as exc:
        return SmokeResult(revision, "Error", expected, None, f"cannot smoke-test this model: {exc}")

    async def call() -> str:
        transcriber = TritonTranscriber(timeout_s=timeout_s)
        try:
            # One row of a batch: [1, samples] (with its length when the model takes one).
            answer = await asyncio.wait_for(transcriber(target, audio.reshape(1, -1)), timeout_s + 5)
            return str(answer[0])
        finally:
            await transcriber.close()

    try:
        transcript = asyncio.run(call())
    except Exception as exc:  # no answer: connection refused, timeout, an inference error
        return SmokeResult(
            revision, "Error", expected, None, f"no answer from {url}: {type(exc).__name__}: {str(exc)[:300]}"
        )
    return judge(expected, transcript, revision)
