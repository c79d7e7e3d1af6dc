"""Small, real artifacts for tests, benchmarks and demos: ONNX CTC models built with
`onnx.helper`, STTModel specs that describe them, and tiny labelled evaluation sets.

The toy CTC model frames raw audio into 10 ms hops and projects each frame onto the
vocabulary with one MatMul (+ an optional hidden layer), so it runs through exactly the code
path a real acoustic model does (feeds from the contract, CTC decoding) in milliseconds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

HOP = 160
SAMPLE_RATE = 16_000
TOY_VOCAB = ("<blank>", "lights", "on", "off", "fan")


def ctc_onnx_model(
    vocab: Sequence[str] = TOY_VOCAB,
    hidden: int = 0,
    opset: int = 17,
    ir_version: int = 8,
    seed: int = 0,
    audio_name: str = "audio",
    logits_name: str = "logits",
) -> Any:
    """ModelProto: audio float32 [batch, samples] -> logits float32 [batch, frames, vocab]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Reshape", [audio_name, "frame_shape"], ["frames"]),
    ]
    inits = [numpy_helper.from_array(np.array([0, -1, HOP], dtype=np.int64), "frame_shape")]
    last, width = "frames", HOP
    if hidden:
        w1 = rng.normal(0, 0.05, (HOP, hidden)).astype(np.float32)
        inits.append(numpy_helper.from_array(w1, "w_hidden"))
        nodes += [
            helper.make_node("MatMul", ["frames", "w_hidden"], ["h_pre"]),
            helper.make_node("Relu", ["h_pre"], ["h"]),
        ]
        last, width = "h", hidden
    w = rng.normal(0, 0.05, (width, len(vocab))).astype(np.float32)
    inits.append(numpy_helper.from_array(w, "w_out"))
    nodes.append(helper.make_node("MatMul", [last, "w_out"], [logits_name]))
    graph = helper.make_graph(
        nodes,
        "toy_ctc",
        [helper.make_tensor_value_info(audio_name, TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info(logits_name, TensorProto.FLOAT, ["batch", "frames", len(vocab)])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
    model.metadata_props.add(key="sample_rate", value=str(SAMPLE_RATE))
    return model


def write_ctc_model(path: str | Path, **kwargs: Any) -> Path:
    import onnx

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(ctc_onnx_model(**kwargs), str(p))
    return p


def ctc_spec(
    uri: str,
    sha256: str | None = None,
    vocab: Sequence[str] = TOY_VOCAB,
    **overrides: Any,
) -> dict[str, Any]:
    """An STTModel spec (camelCase) describing `ctc_onnx_model`."""
    spec: dict[str, Any] = {
        "language": "en-US",
        "format": "onnx",
        "source": {"uri": uri, **({"sha256": sha256} if sha256 else {})},
        "io": {
            "inputs": [{"name": "audio", "dataType": "TYPE_FP32", "dims": [-1], "role": "audio"}],
            "outputs": [
                {"name": "logits", "dataType": "TYPE_FP32", "dims": [-1, len(vocab)], "role": "logits"}
            ],
            "sampleRate": SAMPLE_RATE,
            "vocabulary": list(vocab),
        },
        "triton": {"maxBatchSize": 8},
    }
    for key, value in overrides.items():
        spec[key] = value
    return spec


def sphinx_spec(parameters: dict[str, str] | None = None, *, degraded: bool = False) -> dict[str, Any]:
    """An STTModel spec (camelCase) for the built-in pocketsphinx recogniser (Python backend)
    that the jobs and Triton images carry under /opt/stt-models; validation is off (no Job).
    `degraded`: the really worse variant (noisy input, narrow beams)."""
    from stt_operator.models import catalog

    io = catalog.sphinx_io()
    tensors = [
        {
            "name": t.name,
            "dataType": t.data_type,
            "dims": list(t.dims),
            "role": t.role,
            **({"optional": True} if t.optional else {}),
        }
        for t in (*io.inputs, *io.outputs)
    ]
    triton = catalog.sphinx_triton(degraded=degraded)
    return {
        "language": "en-US",
        "format": "python",
        "source": {"uri": f"file:///opt/stt-models/{catalog.MODEL_DIR_NAME}"},
        "io": {
            "inputs": tensors[: len(io.inputs)],
            "outputs": tensors[len(io.inputs) :],
            "sampleRate": io.sample_rate,
        },
        "triton": {
            "backend": "python",
            "maxBatchSize": triton.max_batch_size,
            "instanceGroup": {"kind": "KIND_CPU", "count": 1},
            "warmup": triton.warmup,
            "parameters": {**triton.parameters, **(parameters or {})},
        },
        "resources": {"gpu": 0},
        "validation": {"enabled": False},
    }


def write_evalset(
    directory: str | Path, texts: Sequence[str] = ("lights on", "fan off", "lights off"), seconds: float = 0.5
) -> Path:
    """A tiny set in the `speech.evalset` layout (noise audio, real labels) for pipeline tests."""
    from stt_operator.speech.evalset import write_wav

    root = Path(directory)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    lines = []
    n = int(SAMPLE_RATE * seconds)
    n -= n % HOP
    for i, text in enumerate(texts):
        uid = f"utt{i:03d}"
        pcm = (rng.normal(0, 0.1, n) * 32767).clip(-32768, 32767).astype(np.int16)
        write_wav(root / "audio" / f"{uid}.wav", pcm, SAMPLE_RATE)
        lines.append(
            {
                "id": uid,
                "audio": f"audio/{uid}.wav",
                "text": text,
                "speaker": "synthetic",
                "language": "en-US",
                "slice": "clean",
                "duration_s": n / SAMPLE_RATE,
            }
        )
    (root / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


def _pattern(k: int, n_tokens: int) -> np.ndarray:
    """The 10 ms frame that stands for token k (1-based): a band of samples at 0.5."""
    width = HOP // (n_tokens - 1)
    frame = np.zeros(HOP, np.float32)
    frame[(k - 1) * width : k * width] = 0.5
    return frame


def keyed_ctc_model(
    vocab: Sequence[str] = TOY_VOCAB, opset: int = 17, ir_version: int = 8, gain: float = 1.0
) -> Any:
    """A CTC model that transcribes `keyed_audio` exactly: frame patterns -> token logits.

    Useful where a test needs a known-correct transcript (WER 0) through the real pipeline.
    """
    from onnx import TensorProto, helper, numpy_helper

    n = len(vocab)
    weights = np.zeros((HOP, n), np.float32)
    for k in range(1, n):
        weights[:, k] = _pattern(k, n) * 2.0 * gain
    bias = np.zeros(n, np.float32)
    bias[0] = 1.0  # silence -> blank
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["audio", "frame_shape"], ["frames"], name="/frames/Reshape"),
            helper.make_node("MatMul", ["frames", "w_out"], ["scores"], name="/proj/MatMul"),
            helper.make_node("Add", ["scores", "bias"], ["logits"], name="/proj/Add"),
        ],
        "keyed_ctc",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "frames", n])],
        initializer=[
            numpy_helper.from_array(np.array([0, -1, HOP], dtype=np.int64), "frame_shape"),
            numpy_helper.from_array(weights, "w_out"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
    model.metadata_props.add(key="sample_rate", value=str(SAMPLE_RATE))
    return model


def keyed_audio(
    text: str, vocab: Sequence[str] = TOY_VOCAB, frames_per_word: int = 3, seed: int = 0, noise: float = 0.005
) -> np.ndarray:
    """Float audio whose frames spell `text` (words from `vocab`) for `keyed_ctc_model`."""
    rng = np.random.default_rng(seed)
    index = {w: i for i, w in enumerate(vocab)}
    silence = np.zeros(HOP, np.float32)
    frames = [silence]
    for word in text.split():
        frames += [_pattern(index[word], len(vocab))] * frames_per_word + [silence]
    audio = np.concatenate(frames)
    return (audio + rng.normal(0, noise, audio.shape)).astype(np.float32) if noise else audio


def write_keyed_evalset(
    directory: str | Path, texts: Sequence[str] = ("lights on", "fan off", "lights off", "fan on")
) -> Path:
    """An evaluation set `keyed_ctc_model` transcribes without error."""
    from stt_operator.speech.evalset import write_wav

    root = Path(directory)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, text in enumerate(texts):
        uid = f"key{i:03d}"
        audio = keyed_audio(text, seed=i)
        write_wav(root / "audio" / f"{uid}.wav", (audio * 32767).astype(np.int16), SAMPLE_RATE)
        lines.append(
            {
                "id": uid,
                "audio": f"audio/{uid}.wav",
                "text": text,
                "speaker": "keyed",
                "language": "en-US",
                "slice": "clean",
                "duration_s": len(audio) / SAMPLE_RATE,
            }
        )
    (root / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root
