"""A real tritonserver (nvidia-pytriton's binary) serving the real pocketsphinx recogniser from a
model repository our own renderer wrote: health, readiness, transcription over gRPC and HTTP,
the served config, `nv_inference_*` metrics, and the pod template's restricted-API flags."""

from __future__ import annotations

import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from stt_harness.triton import (
    BASELINE_MODEL,
    DEGRADED_MODEL,
    LocalTriton,
    build_sphinx_repository,
    start_triton,
)
from stt_operator.models import catalog
from stt_operator.speech.evalset import synthesise
from stt_operator.triton.config import render_config_pbtxt
from stt_operator.triton.pod import ADMIN_HEADER, TritonPodParams, triton_args
from stt_operator.triton.repository import write_model
from stt_operator.triton.spec import LatestPolicy, VersionPolicy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

COMMAND = "turn off the kitchen lights"


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        pcm = synthesise(COMMAND, "en-us", 160, 50, Path(tmp))
    return pcm.reshape(1, -1)  # 16-bit PCM: the model's AUDIO is TYPE_INT16


def http_status(url: str) -> int:
    try:
        return urllib.request.urlopen(url, timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code


def test_server_and_models_ready(triton_server: LocalTriton) -> None:
    client = httpclient.InferenceServerClient(triton_server.http_url)
    assert client.is_server_live() and client.is_server_ready()
    for model in (BASELINE_MODEL, DEGRADED_MODEL):
        assert client.is_model_ready(model)
    assert not client.is_model_ready("no-such-model")
    assert http_status(f"http://{triton_server.http_url}/v2/models/{BASELINE_MODEL}/ready") == 200


def test_served_config_is_the_rendered_one(triton_server: LocalTriton) -> None:
    rendered = (triton_server.repository / DEGRADED_MODEL / "config.pbtxt").read_text()
    cfg = grpcclient.InferenceServerClient(triton_server.grpc_url).get_model_config(DEGRADED_MODEL).config
    assert cfg.backend == "python"
    assert cfg.max_batch_size == 16
    assert cfg.parameters["noise_snr_db"].string_value in rendered
    assert [o.name for o in cfg.output] == ["TRANSCRIPT", "CONFIDENCE"]


def test_transcribes_synthesised_speech_over_grpc_and_http(
    triton_server: LocalTriton, speech: np.ndarray
) -> None:
    g = grpcclient.InferenceServerClient(triton_server.grpc_url)
    gi = grpcclient.InferInput("AUDIO", list(speech.shape), "INT16")
    gi.set_data_from_numpy(speech)
    gr = g.infer(
        BASELINE_MODEL,
        [gi],
        outputs=[
            grpcclient.InferRequestedOutput("TRANSCRIPT"),
            grpcclient.InferRequestedOutput("CONFIDENCE"),
        ],
    )
    assert gr.as_numpy("TRANSCRIPT").reshape(-1)[0].decode() == COMMAND
    assert 0.0 < float(gr.as_numpy("CONFIDENCE").reshape(-1)[0]) <= 1.0

    h = httpclient.InferenceServerClient(triton_server.http_url)
    hi = httpclient.InferInput("AUDIO", list(speech.shape), "INT16")
    hi.set_data_from_numpy(speech, binary_data=True)
    hr = h.infer(BASELINE_MODEL, [hi], outputs=[httpclient.InferRequestedOutput("TRANSCRIPT")])
    assert hr.as_numpy("TRANSCRIPT").reshape(-1)[0].decode() == COMMAND


def test_bad_requests_fail_clearly(triton_server: LocalTriton) -> None:
    g = grpcclient.InferenceServerClient(triton_server.grpc_url)
    wrong = grpcclient.InferInput("AUDIO", [1, 4], "INT32")
    wrong.set_data_from_numpy(np.zeros((1, 4), np.int32))
    with pytest.raises(InferenceServerException, match=r"(?i)data.?type|INT16"):
        g.infer(BASELINE_MODEL, [wrong])


def _transcribe(
    client: grpcclient.InferenceServerClient, model: str, audio: np.ndarray, lengths: np.ndarray | None = None
) -> list[tuple[str, float]]:
    inputs = [grpcclient.InferInput("AUDIO", list(audio.shape), "INT16")]
    inputs[0].set_data_from_numpy(audio)
    if lengths is not None:
        inputs.append(grpcclient.InferInput("AUDIO_LENGTH", list(lengths.shape), "INT32"))
        inputs[1].set_data_from_numpy(lengths)
    result = client.infer(model, inputs)
    texts = [t.decode() for t in result.as_numpy("TRANSCRIPT").reshape(-1)]
    return list(zip(texts, result.as_numpy("CONFIDENCE").reshape(-1).tolist(), strict=True))


def test_padded_batch_with_audio_length_equals_single_requests(
    triton_server: LocalTriton, small_evalset: Path
) -> None:
    """Three utterances of different lengths in ONE zero-padded [3, T] request with AUDIO_LENGTH
    give exactly the transcripts and confidences of the same utterances sent one at a time
    (without AUDIO_LENGTH), on the baseline and on the degraded (noise-seeded) model."""
    from stt_operator.speech.evalset import load_evalset

    by_length = sorted(load_evalset(small_evalset), key=lambda u: u.audio.size)
    utts = [by_length[0], by_length[len(by_length) // 2], by_length[-1]]
    sizes = [u.audio.size for u in utts]
    assert len(set(sizes)) == 3
    batch = np.zeros((3, max(sizes)), np.int16)
    for row, u in zip(batch, utts, strict=True):
        row[: u.audio.size] = u.audio
    lengths = np.array(sizes, np.int32).reshape(3, 1)

    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    config = client.get_model_config(BASELINE_MODEL).config
    assert [(i.name, i.optional) for i in config.input] == [("AUDIO", False), ("AUDIO_LENGTH", True)]
    for model in (BASELINE_MODEL, DEGRADED_MODEL):
        singles = [_transcribe(client, model, u.audio.reshape(1, -1))[0] for u in utts]
        batched = _transcribe(client, model, batch, lengths)
        assert batched == singles, model
        assert any(text for text, _ in singles), model  # it recognised speech, not just silence
    # Without AUDIO_LENGTH the padding is decoded too: the degraded model's noise then differs.
    assert _transcribe(client, DEGRADED_MODEL, batch) != batched
    # A zero length is an empty utterance.
    assert _transcribe(client, BASELINE_MODEL, batch[:1], np.array([[0]], np.int32)) == [("", 0.0)]


def test_audio_length_beyond_the_padded_width_fails_naming_it(triton_server: LocalTriton) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    audio = np.zeros((2, 1600), np.int16)
    with pytest.raises(InferenceServerException, match=r"AUDIO_LENGTH: row 1 has length 1601"):
        _transcribe(client, BASELINE_MODEL, audio, np.array([[1600], [1601]], np.int32))
    with pytest.raises(InferenceServerException, match="AUDIO_LENGTH"):
        _transcribe(client, DEGRADED_MODEL, audio, np.array([[-5], [3]], np.int32))


def test_inference_metrics_count_requests(triton_server: LocalTriton, speech: np.ndarray) -> None:
    before_ok = triton_server.metric_by_model("nv_inference_request_success")
    before_n = triton_server.metric_by_model("nv_inference_count")
    before_us = triton_server.metric_by_model("nv_inference_compute_infer_duration_us")
    g = grpcclient.InferenceServerClient(triton_server.grpc_url)
    inp = grpcclient.InferInput("AUDIO", list(speech.shape), "INT16")
    inp.set_data_from_numpy(speech)
    for _ in range(3):
        g.infer(DEGRADED_MODEL, [inp])
    after_ok = triton_server.settled_metric("nv_inference_request_success", before_ok, 3, [DEGRADED_MODEL])
    after_n = triton_server.metric_by_model("nv_inference_count")
    after_us = triton_server.metric_by_model("nv_inference_compute_infer_duration_us")
    assert after_ok[DEGRADED_MODEL] - before_ok.get(DEGRADED_MODEL, 0) == 3
    assert after_n[DEGRADED_MODEL] - before_n.get(DEGRADED_MODEL, 0) == 3
    assert after_us[DEGRADED_MODEL] > before_us.get(DEGRADED_MODEL, 0)
    assert after_ok[BASELINE_MODEL] == before_ok[BASELINE_MODEL]  # only the model we called moved
    failures = triton_server.metric_by_model("nv_inference_request_failure")
    assert DEGRADED_MODEL in failures


def test_pod_template_flags_restrict_the_repository_api(tmp_path: Path) -> None:
    """Start tritonserver with the pod template's own flags (explicit mode, one model, restricted
    repository API) and check the model is served but the repository API needs the header.
    The repository also holds two versions under a rendered `latest: 1` policy, and the
    rendered warm-up request runs before the model reports ready."""
    repo = build_sphinx_repository(tmp_path / "models", {BASELINE_MODEL: False, DEGRADED_MODEL: True})
    triton = catalog.sphinx_triton()
    triton.version_policy = VersionPolicy(latest=LatestPolicy(num_versions=1))
    write_model(
        repo, BASELINE_MODEL, render_config_pbtxt(BASELINE_MODEL, triton, catalog.sphinx_io()),
        catalog.sphinx_version_files(), version=2,
    )  # fmt: skip
    key = "pod-uid-1234"
    flags = [
        a.replace("$(TRITON_ADMIN_KEY)", key)
        for a in triton_args(
            TritonPodParams(model_name=BASELINE_MODEL, config_map="c", artifact_uri="file:///m", gpus=0)
        )
        # Every flag of the pod template except the ones the local launcher sets itself.
        if a != "tritonserver"
        and not a.startswith(("--model-repository=", "--http-port=", "--grpc-port=", "--metrics-port="))
    ]
    assert "--exit-on-error=true" in flags and "--strict-readiness=true" in flags
    server = start_triton(repo, tmp_path, models=[BASELINE_MODEL], extra_args=flags)
    try:
        client = httpclient.InferenceServerClient(server.http_url)
        assert client.is_model_ready(BASELINE_MODEL)
        assert client.is_model_ready(BASELINE_MODEL, "2")
        assert not client.is_model_ready(BASELINE_MODEL, "1")  # latest: 1
        assert not client.is_model_ready(DEGRADED_MODEL)  # explicit mode: only --load-model
        assert server.metric_by_model("nv_inference_count") == {BASELINE_MODEL: 1.0}  # the warm-up
        with pytest.raises(InferenceServerException):
            client.get_model_repository_index()
        index = client.get_model_repository_index(headers={ADMIN_HEADER: key})
        assert {m["name"] for m in index} == {BASELINE_MODEL, DEGRADED_MODEL}
        with pytest.raises(InferenceServerException):
            client.load_model(DEGRADED_MODEL, headers={ADMIN_HEADER: "wrong"})
    finally:
        server.stop()


def spelling_ctc_onnx(path: Path, path_ids: list[int], vocab_size: int) -> Path:
    """A real ONNX graph: audio [B, T] float + length [B, 1] int64 -> logits [B, F, V].

    Its logits spell a fixed token path whatever the audio (plus 0 * mean(audio), so the audio
    really flows through the graph): enough to exercise serving and client-side CTC decoding."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = np.full((len(path_ids), vocab_size), -10.0, np.float32)
    table[np.arange(len(path_ids)), path_ids] = 10.0
    nodes = [
        helper.make_node("ReduceMean", ["audio"], ["mean"], keepdims=1),  # [B, 1]
        helper.make_node("Mul", ["mean", "zero"], ["zeroed"]),
        helper.make_node("Unsqueeze", ["zeroed", "axes"], ["zeroed3"]),  # [B, 1, 1]
        helper.make_node("Add", ["zeroed3", "table"], ["logits"]),  # [B, F, V]
    ]
    graph = helper.make_graph(
        nodes,
        "spelling_ctc",
        [
            helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["B", "T"]),
            helper.make_tensor_value_info("length", TensorProto.INT64, ["B", 1]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", len(path_ids), vocab_size])],
        initializer=[
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
            numpy_helper.from_array(np.array([2], np.int64), "axes"),
            numpy_helper.from_array(table[None], "table"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


async def test_onnx_logits_model_through_triton_and_the_evaluator(
    tmp_path: Path, small_evalset: Path
) -> None:
    """An ONNX CTC model (logits out, no transcript) served by the onnxruntime runner in the
    Python backend; the evaluator finds its tensors from the STTModel I/O roles and decodes."""
    from prometheus_client import CollectorRegistry

    from stt_harness.triton import build_onnx_repository
    from stt_operator import evalmetrics as em
    from stt_operator.api.sttmodel import STTModelSpec
    from stt_operator.evaluator.model_io import Target
    from stt_operator.evaluator.replay import Replayer, TritonTranscriber
    from stt_operator.evaluator.targets import model_io_from_spec
    from stt_operator.speech.evalset import load_evalset

    vocab = ["<blank>", "turn", "on", "the", "lights"]
    onnx_path = spelling_ctc_onnx(tmp_path / "ctc.onnx", [0, 1, 1, 0, 2, 3, 3, 0, 4], len(vocab))
    spec = STTModelSpec.model_validate(
        {
            "language": "en-US",
            "format": "onnx",
            "source": {"uri": f"file://{onnx_path}"},
            "io": {
                "inputs": [
                    {"name": "audio", "dataType": "TYPE_FP32", "dims": [-1], "role": "audio"},
                    {"name": "length", "dataType": "TYPE_INT64", "dims": [1], "role": "audio-length"},
                ],
                "outputs": [{"name": "logits", "dataType": "TYPE_FP32", "dims": [9, 5], "role": "logits"}],
                "vocabulary": vocab,
            },
            "triton": {"maxBatchSize": 4, "instanceGroup": {"kind": "KIND_CPU", "count": 1}},
        }
    )
    repo = build_onnx_repository(tmp_path / "models", "ctc", onnx_path, spec.triton, spec.io)
    server = start_triton(repo, tmp_path, models=["ctc"])
    transcriber = TritonTranscriber()
    try:
        reg = CollectorRegistry()
        target = Target("stable", "ctc", server.grpc_url, "ctc-v1", io=model_io_from_spec(spec.io))
        utts = load_evalset(small_evalset)[:5]
        replayer = Replayer([target], transcriber, endpoint="onnx", metrics=em.build_eval_metrics(reg))
        observations = await replayer.run_round(utts)
    finally:
        await transcriber.close()
        server.stop()
    assert len(observations) == 5
    assert {o.score.hypothesis for o in observations} == {"turn on the lights"}
    for o, u in zip(
        sorted(observations, key=lambda o: o.utterance_id), sorted(utts, key=lambda u: u.id), strict=True
    ):
        expected = __import__("jiwer").process_words(u.text, "turn on the lights")
        assert o.score.word_errors == expected.substitutions + expected.deletions + expected.insertions
        assert o.confidence is not None and o.confidence > 0.99
    labels = {"endpoint": "onnx", "variant": "stable", "model": "ctc-v1", "language": "en-US"}
    assert reg.get_sample_value(em.UTTERANCES, labels) == 5


async def test_project_onnx_model_through_triton(tmp_path: Path, small_evalset: Path) -> None:
    """The project's own ONNX CTC recogniser (speech/assets) served by the onnxruntime runner in
    real Triton and evaluated from its I/O roles gives exactly the transcripts onnxruntime gives
    in-process, and recognises the command set."""
    import jiwer
    import onnxruntime as ort

    from stt_harness.triton import build_onnx_repository
    from stt_operator.evaluator.model_io import Target
    from stt_operator.evaluator.replay import ReplayConfig, Replayer, TritonTranscriber
    from stt_operator.evaluator.targets import model_io_from_spec
    from stt_operator.speech.ctc import Vocabulary, greedy_decode
    from stt_operator.speech.evalset import load_evalset
    from stt_operator.speech.onnx_stt import DEFAULT_MODEL, DEFAULT_VOCAB
    from stt_operator.triton.spec import InstanceGroup, IOSpec, TensorSpec, TritonSpec

    frozen = tmp_path / "model.onnx"  # a copy, so both paths see the same bytes
    frozen.write_bytes(DEFAULT_MODEL.read_bytes())
    vocab = Vocabulary.load(DEFAULT_VOCAB)
    utts = load_evalset(small_evalset)
    session = ort.InferenceSession(str(frozen), providers=["CPUExecutionProvider"])
    local = {
        u.id: greedy_decode(
            session.run(["logits"], {"audio": u.audio_float().reshape(1, -1)})[0][0], vocab
        ).text
        for u in utts
    }
    io = IOSpec(
        inputs=[TensorSpec("audio", "TYPE_FP32", [-1], "audio")],
        outputs=[TensorSpec("logits", "TYPE_FP32", [-1, vocab.size], "logits")],
        vocabulary=list(vocab.tokens),
    )
    triton = TritonSpec(max_batch_size=8, instance_group=InstanceGroup(kind="KIND_CPU", count=1))
    repo = build_onnx_repository(tmp_path / "models", "onnx-ctc", frozen, triton, io)
    server = start_triton(repo, tmp_path, models=["onnx-ctc"])
    transcriber = TritonTranscriber()
    try:
        target = Target("onnx", "onnx-ctc", server.grpc_url, io=model_io_from_spec(io))
        replayer = Replayer([target], transcriber, endpoint="onnx", config=ReplayConfig(concurrency=2))
        observations = await replayer.run_round(utts)
    finally:
        await transcriber.close()
        server.stop()
    assert len(observations) == len(utts) == 24
    assert {o.utterance_id: o.score.hypothesis for o in observations} == local
    wer = replayer.state.summaries["onnx"].as_dict()["wer"]
    assert wer == pytest.approx(jiwer.wer([u.text for u in utts], [local[u.id] for u in utts]))
    assert wer < 0.6  # it does recognise the commands (a random vocabulary word would be ~1.0)
