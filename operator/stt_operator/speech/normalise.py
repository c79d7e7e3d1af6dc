"""Versioned text normaliser applied to both reference and hypothesis before WER / CER.

The version is recorded in every evaluation-set manifest so a score is always comparable with
the normalisation it was computed under; a new rule means a new version, never an edit of v1.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

DEFAULT_VERSION = "v1"

# fmt: off
_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
# fmt: on
_SCALES = ((1_000_000_000, "billion"), (1_000_000, "million"), (1_000, "thousand"))
_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
# Above this a spoken form is rarely what a speaker says; keep the digits rather than guess.
_MAX_SPELLED = 999_999_999_999


def number_to_words(n: int) -> str:
    """Cardinal English words for 0 <= n <= 999 999 999 999 ("twenty one", "one hundred five")."""
    if n < 0 or n > _MAX_SPELLED:
        raise ValueError(f"number_to_words: {n} is outside 0..{_MAX_SPELLED}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] if ones == 0 else f"{_TENS[tens]} {_ONES[ones]}"
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        head = f"{_ONES[hundreds]} hundred"
        return head if rest == 0 else f"{head} {number_to_words(rest)}"
    for scale, name in _SCALES:
        if n >= scale:
            head, rest = divmod(n, scale)
            words = f"{number_to_words(head)} {name}"
            return words if rest == 0 else f"{words} {number_to_words(rest)}"
    raise AssertionError("unreachable")


def _ordinal(cardinal_words: str) -> str:
    *head, last = cardinal_words.split()
    if last in _ORDINAL_IRREGULAR:
        last = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join([*head, last])


_ORDINAL_RE = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_DECIMAL_RE = re.compile(r"\b(\d+)\.(\d+)\b")
_THOUSANDS_RE = re.compile(r"\b(\d{1,3}(?:,\d{3})+)\b")
_INT_RE = re.compile(r"\d+")
_SYMBOLS = {"%": " percent ", "&": " and ", "+": " plus ", "@": " at "}


def _spell_int(digits: str) -> str:
    n = int(digits)
    # Leading zeros ("007") and huge numbers are read digit by digit, the way people say them.
    if (len(digits) > 1 and digits.startswith("0")) or n > _MAX_SPELLED:
        return " ".join(_ONES[int(d)] for d in digits)
    return number_to_words(n)


def _normalise_v1(text: str) -> str:
    s = unicodedata.normalize("NFKC", text).lower()
    s = s.replace("\u2019", "'").replace("\u2018", "'")
    s = _THOUSANDS_RE.sub(lambda m: m.group(1).replace(",", ""), s)
    s = _ORDINAL_RE.sub(lambda m: f" {_ordinal(_spell_int(m.group(1)))} ", s)
    s = _DECIMAL_RE.sub(
        lambda m: f" {_spell_int(m.group(1))} point {' '.join(_ONES[int(d)] for d in m.group(2))} ", s
    )
    s = _INT_RE.sub(lambda m: f" {_spell_int(m.group(0))} ", s)
    for symbol, words in _SYMBOLS.items():
        s = s.replace(symbol, words)
    # Hyphens and slashes separate words ("twenty-five", "on/off"); other punctuation goes.
    s = re.sub(r"[-/_]", " ", s)
    # Keep apostrophes only inside words ("don't"), drop quoting apostrophes.
    s = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", s)
    s = "".join(ch if (ch.isalnum() or ch in " '") else " " for ch in s)
    return " ".join(s.split())


_NORMALISERS: dict[str, Callable[[str], str]] = {"v1": _normalise_v1}


def normaliser_versions() -> list[str]:
    """Every version this build can apply (a manifest naming another one is rejected)."""
    return sorted(_NORMALISERS)


def normalise_text(s: str, version: str = DEFAULT_VERSION) -> str:
    """Lowercase, numbers and a few symbols to words, punctuation stripped, whitespace collapsed.

    `version` selects a frozen rule set; an unknown version is an error, not a silent fallback.
    """
    try:
        fn = _NORMALISERS[version]
    except KeyError:
        raise ValueError(
            f"normaliser version {version!r} is unknown; known versions: {', '.join(normaliser_versions())}"
        ) from None
    if not isinstance(s, str):
        raise TypeError(f"normalise_text expects str, got {type(s).__name__}")
    return fn(s)
