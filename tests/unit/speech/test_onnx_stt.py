import re
from pathlib import Path

import jiwer
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from stt_operator.speech import features
from stt_operator.speech.evalset import command_vocabulary, generate_evalset, load_evalset
from stt_operator.speech.normalise import normalise_text
from stt_operator.speech.onnx_stt import ASSETS, DEFAULT_MODEL, OnnxSTT

CARD = ASSETS / "MODEL_CARD.md"
# A 24-utterance sample scatters a few points around the 300-utterance figure of the card.
MARGIN = 0.10


def card_clean_wer() -> float:
    m = re.search(r"clean \(default voices\): n=\d+ WER ([\d.]+)%", CARD.read_text())
    assert m, f"{CARD} lacks the clean held-out WER line written by training/evaluate_ctc.py"
    return float(m.group(1)) / 100


@pytest.fixture(scope="module")
def stt() -> OnnxSTT:
    return OnnxSTT(intra_op_threads=1)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Seed 77 is used neither by training (1000, 1001) nor by the model card (4242).
    return generate_evalset(tmp_path_factory.mktemp("heldout") / "set", 24, seed=77)


def test_shipped_model_is_small_and_self_describing(stt: OnnxSTT) -> None:
    assert DEFAULT_MODEL.stat().st_size <= 5 * 1024 * 1024
    assert stt.vocab.tokens[stt.vocab.blank] == "<blank>"
    assert list(stt.vocab.tokens[1:]) == command_vocabulary()
    assert [i.name for i in stt.session.get_inputs()] == ["audio"]
    assert [o.name for o in stt.session.get_outputs()] == ["logits"]
    assert onnx.load(str(DEFAULT_MODEL), load_external_data=False).opset_import[0].version == 17


def test_held_out_wer_within_model_card(stt: OnnxSTT, held_out: Path) -> None:
    utts = load_evalset(held_out)
    out = stt.transcribe_batch([u.audio for u in utts])
    refs = [normalise_text(u.text) for u in utts]
    hyps = [normalise_text(t.text) for t in out]
    wer = jiwer.wer(refs, hyps)
    assert wer <= card_clean_wer() + MARGIN, list(zip(refs, hyps, strict=True))
    assert all(0.0 <= t.confidence <= 1.0 for t in out)
    # Right answers are surer than wrong ones on average, or all answers are right.
    right = [t.confidence for t, r, h in zip(out, refs, hyps, strict=True) if r == h]
    wrong = [t.confidence for t, r, h in zip(out, refs, hyps, strict=True) if r != h]
    assert right and (not wrong or np.mean(right) > np.mean(wrong))


def test_batch_and_single_agree(stt: OnnxSTT, held_out: Path) -> None:
    utts = load_evalset(held_out)[:4]
    batch = stt.transcribe_batch([u.audio for u in utts])
    for u, b in zip(utts, batch, strict=True):
        single = stt.transcribe_utterance(u)
        assert single.text == b.text
        assert abs(single.confidence - b.confidence) < 0.05


def test_builtin_front_end_equals_numpy_features(held_out: Path) -> None:
    """The model's own log-mel (output of its Log node) is features.log_mel."""
    model = onnx.load(str(DEFAULT_MODEL))
    (log_node,) = [n for n in model.graph.node if n.op_type == "Log"]
    model.graph.output.append(helper.make_tensor_value_info(log_node.output[0], TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    audio = load_evalset(held_out)[0].audio_float()
    (mel,) = sess.run([log_node.output[0]], {"audio": audio[None]})
    expected = features.log_mel(audio)
    got = mel[0].T if mel.shape[1] == features.N_MELS else mel[0]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-3


def test_short_and_silent_audio(stt: OnnxSTT) -> None:
    t = stt.transcribe(np.zeros(100, dtype=np.int16))
    assert isinstance(t.text, str) and t.compute_s >= 0
    assert stt.transcribe(np.zeros(16000, dtype=np.float32)).text == ""


def test_bad_inputs_are_named(stt: OnnxSTT, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        stt.transcribe(np.zeros(1600, dtype=np.int16), sample_rate=8000)
    with pytest.raises(FileNotFoundError, match=r"missing\.onnx"):
        OnnxSTT(tmp_path / "missing.onnx")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "wrong-io",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
    )
    wrong = tmp_path / "wrong.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(wrong))
    with pytest.raises(ValueError, match=r"expected input 'audio'.*\('x'"):
        OnnxSTT(wrong, vocab_path=ASSETS / "vocab.json")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(DEFAULT_MODEL.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"truncated\.onnx: onnxruntime cannot load"):
        OnnxSTT(truncated)
