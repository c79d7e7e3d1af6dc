import pytest

from stt_operator.speech.normalise import normalise_text, normaliser_versions, number_to_words


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Turn ON the Kitchen Lights!", "turn on the kitchen lights"),
        ("Set a timer for 5 minutes.", "set a timer for five minutes"),
        ("set the temperature to 21 degrees", "set the temperature to twenty one degrees"),
        ("the 3rd song, then the 22nd", "the third song then the twenty second"),
        ("1,200 people; 50% off", "one thousand two hundred people fifty percent off"),
        ("pi is 3.14", "pi is three point one four"),
        ("agent 007", "agent zero zero seven"),
        ("don't 'quote' me", "don't quote me"),
        ("on/off twenty-five", "on off twenty five"),
        ("  spaces\tand\nnewlines  ", "spaces and newlines"),
        ("\u2018curly\u2019 it\u2019s", "curly it's"),
        ("", ""),
    ],
)
def test_v1_rules(raw: str, expected: str) -> None:
    assert normalise_text(raw) == expected
    assert normalise_text(raw, version="v1") == expected


def test_idempotent_on_normalised_text() -> None:
    once = normalise_text("Play the 2nd song at 10:30!")
    assert normalise_text(once) == once


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (13, "thirteen"),
        (40, "forty"),
        (99, "ninety nine"),
        (105, "one hundred five"),
        (2024, "two thousand twenty four"),
        (1_000_001, "one million one"),
    ],
)
def test_number_to_words(n: int, words: str) -> None:
    assert number_to_words(n) == words


def test_number_out_of_range() -> None:
    with pytest.raises(ValueError, match="outside"):
        number_to_words(-1)


def test_unknown_version_is_named() -> None:
    assert "v1" in normaliser_versions()
    with pytest.raises(ValueError, match="'v9'"):
        normalise_text("x", version="v9")
