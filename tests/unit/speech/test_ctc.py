import json
from pathlib import Path

import numpy as np
import pytest

from stt_operator.speech.ctc import Vocabulary, greedy_decode

WORDS = Vocabulary(tokens=("<blank>", "turn", "on", "the", "lights"))


def _logits(path: list[int], size: int, sharp: float = 10.0) -> np.ndarray:
    out = np.zeros((len(path), size), dtype=np.float32)
    out[np.arange(len(path)), path] = sharp
    return out


def test_greedy_merges_repeats_and_drops_blanks() -> None:
    d = greedy_decode(_logits([0, 1, 1, 0, 2, 0, 3, 3, 4, 0], 5), WORDS)
    assert d.text == "turn on the lights"
    assert d.ids == (1, 2, 3, 4)
    assert 0.99 < d.confidence <= 1.0


def test_blank_separates_a_repeated_token() -> None:
    assert greedy_decode(_logits([3, 0, 3], 5), WORDS).text == "the the"
    assert greedy_decode(_logits([3, 3, 3], 5), WORDS).text == "the"


def test_confidence_falls_with_flat_posteriors() -> None:
    sure = greedy_decode(_logits([1, 0, 2], 5, sharp=10), WORDS)
    unsure = greedy_decode(_logits([1, 0, 2], 5, sharp=0.5), WORDS)
    assert unsure.text == sure.text
    assert unsure.confidence < 0.5 < sure.confidence


def test_silence_decodes_empty() -> None:
    d = greedy_decode(_logits([0, 0, 0], 5), WORDS)
    assert d.text == "" and d.ids == ()
    assert d.confidence > 0.99


def test_char_vocabulary_joins_and_encodes() -> None:
    chars = Vocabulary(tokens=("_", "|", "o", "n", "f"), unit="char", word_separator="|")
    ids = chars.encode("on off")
    assert chars.decode(ids) == "on off"
    # o n | o f f : the repeated f needs a blank between its frames.
    path = [2, 3, 0, 1, 2, 4, 0, 4]
    assert greedy_decode(_logits(path, 5), chars).text == "on off"


def test_encode_names_unknown_words() -> None:
    assert WORDS.encode("turn on the lights") == [1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"\['kettle'\]"):
        WORDS.encode("turn on the kettle")


def test_vocabulary_round_trip_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "vocab.json"
    p.write_text(json.dumps(WORDS.to_json()))
    assert Vocabulary.load(p) == WORDS
    p.write_text("[1, 2]")
    with pytest.raises(ValueError, match="'tokens'"):
        Vocabulary.load(p)
    with pytest.raises(ValueError, match="blank index"):
        Vocabulary(tokens=("a",), blank=3)
    with pytest.raises(ValueError, match="logits must be"):
        greedy_decode(np.zeros((4, 3)), WORDS)
