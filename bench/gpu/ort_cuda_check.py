"""onnxruntime's CUDA execution provider on the project's CTC model and its INT8 copy.

Runs what the validator's performance step and the built-in ONNX runner
(`operator/stt_operator/models/onnx_runner/model.py`, parameter `providers`) run, through
`stt_operator.speech.onnx_stt.OnnxSTT`, once with CUDA first and once on CPU only, over the
labelled espeak-ng set: which providers the session really took, per-utterance median latency,
one batch of the whole set, and how many transcripts agree between the two. Needs a GPU and
`onnxruntime-gpu`; without them the CUDA row records the error instead.

    PYTHONPATH=operator python3 bench/gpu/ort_cuda_check.py MODEL_DIR EVALSET_DIR

MODEL_DIR holds `model.onnx`, `ctc-int8.onnx` and `vocab.json` (the operator image's
`/opt/stt-models/onnx_ctc/` and the quantization Job's output). Prints one JSON document.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import onnxruntime as ort

from stt_operator.speech.evalset import load_evalset
from stt_operator.speech.onnx_stt import OnnxSTT

RUNS = {"cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"], "cpu": ["CPUExecutionProvider"]}


def check(model_dir: Path, evalset_dir: Path) -> dict[str, Any]:
    utterances = load_evalset(evalset_dir)
    report: dict[str, Any] = {
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
        "utterances": len(utterances),
        "models": {},
    }
    for name in ("model.onnx", "ctc-int8.onnx"):
        row: dict[str, Any] = {}
        texts: dict[str, list[str]] = {}
        for label, providers in RUNS.items():
            try:
                stt = OnnxSTT(model_dir / name, vocab_path=model_dir / "vocab.json", providers=providers)
                stt.transcribe_batch([u.audio for u in utterances[:4]])  # warm-up (CUDA graphs, kernels)
                times, out = [], []
                for u in utterances:
                    t0 = time.perf_counter()
                    out.append(stt.transcribe_utterance(u).text)
                    times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                stt.transcribe_batch([u.audio for u in utterances])
                batch_s = time.perf_counter() - t0
            except Exception as exc:  # recorded: the point is to see what fails where
                row[label] = {"error": f"{type(exc).__name__}: {exc}"[:600]}
                continue
            texts[label] = out
            row[label] = {
                "session_providers": stt.session.get_providers(),
                "median_ms_per_utterance": round(1000 * statistics.median(times), 3),
                "whole_set_in_one_batch_ms": round(1000 * batch_s, 3),
            }
        if len(texts) == 2:
            row["same_transcripts"] = sum(a == b for a, b in zip(texts["cuda"], texts["cpu"], strict=True))
        report["models"][name] = row
    return report


if __name__ == "__main__":
    print(json.dumps(check(Path(sys.argv[1]), Path(sys.argv[2])), indent=1))
