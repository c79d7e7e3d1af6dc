"""A real English recogniser (CMU PocketSphinx) as a Triton Python-backend model.

Tensors (names fixed, declared by the STTModel `io` contract):
  AUDIO         TYPE_INT16 [-1]  mono 16-bit PCM at `sample_rate` (default 16 kHz); a config may
                                 declare TYPE_FP32 instead (samples in [-1, 1]). With batching
                                 a request is [B, T]: B utterances zero-padded to T samples
  AUDIO_LENGTH  TYPE_INT32 [1]   optional (`optional: true`; TYPE_INT64 also accepted): each
                                 row's true sample count, [B, 1] with batching. Row i is trimmed
                                 to it before decoding, so a padded utterance is transcribed
                                 exactly as if sent alone; 0 gives "" with confidence 0. Without
                                 it every row is decoded whole
  TRANSCRIPT    TYPE_STRING [1]  the recognised words, lower case
  CONFIDENCE    TYPE_FP32  [1]   posterior probability of the hypothesis, 0..1

Model `parameters` (config.pbtxt, all strings):
  grammar       JSGF file in the version directory; the search is restricted to it
                (command-and-control). Without it the wheel's general English n-gram LM is used.
  beam, wbeam   decoder beams (smaller = faster, less accurate), e.g. "1e-48"
  lw            language weight
  noise_snr_db  add white noise at this SNR before decoding: the "degraded" variant, a real and
                reproducible regression for rollback / A-B demos
  noise_seed    seed for that noise (default 0); the noise of an utterance depends only on the
                seed and its (trimmed) audio, and the decoder's feature state is reset before each
                utterance, so results depend neither on request order nor on batching
  dither_snr_db low-level noise added to every input (default 30 dB; "off" disables): espeak
                and other synthetic audio has exact digital silence, which breaks the
                decoder's cepstral mean normalisation
  sample_rate   Hz (default 16000)
  fault_error_fraction  fail this fraction (0..1) of requests, spread evenly over the requests
                the instance receives (deterministic; a batch holding a failed request fails
                whole): the fault knob that makes a served model "start failing" for
                post-promotion monitoring tests
  extra_sys_path  os.pathsep-separated directories added to sys.path (the stub does not
                inherit a virtualenv; alternatively use EXECUTION_ENV_PATH)

The helpers above the class are pure so they are unit-tested without Triton.
"""

from __future__ import annotations

import json
import os
import sys
import zlib
from typing import Any

import numpy as np


def model_parameters(model_config: dict[str, Any]) -> dict[str, str]:
    """`parameters { key: .. value { string_value: .. } }` as a flat dict."""
    return {k: str(v.get("string_value", "")) for k, v in (model_config.get("parameters") or {}).items()}


def decoder_options(params: dict[str, str], version_dir: str) -> dict[str, Any]:
    """Keyword arguments for `pocketsphinx.Decoder` from the model parameters."""
    opts: dict[str, Any] = {"samprate": int(params.get("sample_rate", "16000")), "loglevel": "FATAL"}
    grammar = params.get("grammar")
    if grammar:
        path = grammar if os.path.isabs(grammar) else os.path.join(version_dir, grammar)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"parameter grammar: {path} does not exist")
        opts["jsgf"] = path
    for key in ("beam", "wbeam", "pbeam"):
        if params.get(key):
            opts[key] = float(params[key])
    if params.get("lw"):
        opts["lw"] = float(params["lw"])
    return opts


def input_snr_db(params: dict[str, str]) -> float | None:
    """SNR of the noise added before decoding: the degradation if set, else the dither."""
    if params.get("noise_snr_db"):
        return float(params["noise_snr_db"])
    dither = params.get("dither_snr_db", "30")
    return None if dither.lower() in ("", "off", "none") else float(dither)


def fault_fraction(params: dict[str, str]) -> float:
    """The share of requests to fail on purpose (0 unless `fault_error_fraction` is set)."""
    value = float(params.get("fault_error_fraction") or 0.0)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"fault_error_fraction {value} is not in [0, 1]")
    return value


def injected_fault(index: int, fraction: float) -> bool:
    """Whether request number `index` (0, 1, ...) fails: exactly floor(n * fraction) of the
    first n requests do, evenly spread."""
    return int((index + 1) * fraction) > int(index * fraction)


def as_float(audio: np.ndarray) -> np.ndarray:
    """Flat float32 samples in [-1, 1] from int16 PCM or float input."""
    a = np.asarray(audio)
    if a.dtype == np.int16:
        return (a.astype(np.float32) / 32768.0).reshape(-1)
    return a.astype(np.float32, copy=False).reshape(-1)


def to_pcm16(audio: np.ndarray) -> bytes:
    """Float samples in [-1, 1] (any shape) to little-endian 16-bit PCM bytes."""
    flat = np.asarray(audio, dtype=np.float32).reshape(-1)
    return (np.clip(flat, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def request_rows(audio: np.ndarray, lengths: np.ndarray | None) -> list[np.ndarray]:
    """The utterances of one request: each row of AUDIO trimmed to its AUDIO_LENGTH.

    With batching AUDIO is [B, T] and AUDIO_LENGTH [B, 1]; without batching [T] and [1].
    Without AUDIO_LENGTH every row is used whole."""
    a = np.asarray(audio)
    rows = a if a.ndim == 2 else a.reshape(1, -1)
    if lengths is None:
        return list(rows)
    n = np.asarray(lengths)
    if not np.issubdtype(n.dtype, np.integer):
        raise ValueError(f"AUDIO_LENGTH: must be INT32 or INT64 sample counts, got {n.dtype}")
    if n.size != len(rows):
        raise ValueError(
            f"AUDIO_LENGTH: shape {list(n.shape)} gives {n.size} lengths for {len(rows)} AUDIO rows"
        )
    width = rows.shape[1]
    for i, length in enumerate(n.reshape(-1).tolist()):
        if not 0 <= length <= width:
            raise ValueError(
                f"AUDIO_LENGTH: row {i} has length {length}, outside 0..{width} (the padded AUDIO width)"
            )
    return [row[:length] for row, length in zip(rows, n.reshape(-1).tolist(), strict=True)]


def noise_rng(seed: int, audio: np.ndarray) -> np.random.Generator:
    """The noise generator of one utterance: from the seed and its samples only (not its
    padding, position in a batch or the requests before it)."""
    return np.random.default_rng([seed, zlib.crc32(as_float(audio).tobytes())])


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise at `snr_db` relative to the signal's mean power."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    power = float(np.mean(x * x)) if x.size else 0.0
    if power <= 0.0:
        return x
    noise = rng.standard_normal(x.size).astype(np.float32) * np.float32(np.sqrt(power / 10 ** (snr_db / 10)))
    return x + noise


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = model_parameters(config)
        for entry in filter(None, params.get("extra_sys_path", "").split(os.pathsep)):
            if entry not in sys.path:
                sys.path.append(entry)
        from pocketsphinx import Decoder  # after sys.path is extended

        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.decoder = Decoder(**decoder_options(params, version_dir))
        self.snr_db = input_snr_db(params)
        self.seed = int(params.get("noise_seed", "0"))
        self.fault_fraction = fault_fraction(params)
        self.requests_seen = 0

    def transcribe(self, audio: np.ndarray) -> tuple[str, float]:
        audio = as_float(audio)
        if audio.size == 0:
            return "", 0.0
        if self.snr_db is not None:
            audio = add_noise(audio, self.snr_db, noise_rng(self.seed, audio))
        d = self.decoder
        # The front end's noise and cepstral-mean statistics carry over from the previous
        # utterance; reset them so a result depends only on this audio (order, batching).
        d.reinit_feat()
        d.start_utt()
        d.process_raw(to_pcm16(audio), no_search=False, full_utt=True)
        d.end_utt()
        hyp = d.hyp()
        if hyp is None:
            return "", 0.0
        return hyp.hypstr.strip().lower(), float(min(max(hyp.prob, 0.0), 1.0))

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils

        first, self.requests_seen = self.requests_seen, self.requests_seen + len(requests)
        if any(injected_fault(first + i, self.fault_fraction) for i in range(len(requests))):
            # Raised, not answered with an error response: Triton counts a request failed
            # (nv_inference_request_failure) only when execute raises; an error response from
            # the Python backend is counted as a success. The whole batch fails.
            raise RuntimeError("sphinx_stt: injected fault (fault_error_fraction)")
        responses = []
        for request in requests:
            try:
                audio = pb_utils.get_input_tensor_by_name(request, "AUDIO").as_numpy()
                length = pb_utils.get_input_tensor_by_name(request, "AUDIO_LENGTH")  # optional
                # With batching the request is [batch, samples]; without it, [samples].
                rows = request_rows(audio, None if length is None else length.as_numpy())
                texts, confs = zip(*(self.transcribe(row) for row in rows), strict=True)
                shape = (len(rows), 1) if audio.ndim == 2 else (1,)
                out_text = np.array([t.encode() for t in texts], dtype=np.object_).reshape(shape)
                out_conf = np.array(confs, dtype=np.float32).reshape(shape)
                responses.append(
                    pb_utils.InferenceResponse(
                        [pb_utils.Tensor("TRANSCRIPT", out_text), pb_utils.Tensor("CONFIDENCE", out_conf)]
                    )
                )
            except Exception as exc:  # one bad request must not fail the others in the batch
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"sphinx_stt: {exc}")))
        return responses

    def finalize(self) -> None:
        self.decoder = None
