"""Labelled English command-and-control evaluation sets synthesised with espeak-ng.

Layout of a generated set (all paths relative to the set's directory):

    manifest.json    header: format, seed, normaliser version, generator settings, counts
    manifest.jsonl   one utterance per line: id, audio, text, speaker, language, slice, duration_s
    audio/<id>.wav   16 kHz mono 16-bit PCM

The same seed and arguments give byte-identical audio and manifests: espeak-ng is deterministic,
sox runs in repeatable mode without dither, and noise comes from a seeded numpy generator.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import random
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stt_operator.speech.normalise import DEFAULT_VERSION, normalise_text, normaliser_versions

FORMAT = "stt-evalset/v1"
HEADER_FILE = "manifest.json"
LINES_FILE = "manifest.jsonl"
SAMPLE_RATE = 16_000
LANGUAGE = "en-US"
SLICES = ("clean", "noisy")

# espeak-ng language voices combined with its voice variants: different formant sets, pitch
# ranges and (for +klatt) a different synthesiser, so "speaker" is a meaningful label.
DEFAULT_VOICES: tuple[str, ...] = (
    "en-us",
    "en-us+f3",
    "en-gb",
    "en-gb+m3",
    "en-gb-scotland+f2",
    "en-029+m5",
    "en-us-nyc+f4",
    "en-gb-x-rp+m7",
)
# Words per minute (espeak-ng -s); its default is 175.
DEFAULT_SPEEDS: tuple[int, ...] = (130, 155, 180, 205)

# Command grammar: each template is a list of slots, each slot a tuple of alternatives.
_ROOMS = ("kitchen", "bedroom", "bathroom", "garage", "office", "hallway")
_DEVICES = ("lights", "fan", "heater", "radio")
_NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twenty", "thirty")
GRAMMAR: tuple[tuple[tuple[str, ...], ...], ...] = (
    (("turn",), ("on", "off"), ("the",), _ROOMS, _DEVICES),
    (("turn",), ("on", "off"), ("the",), _DEVICES),
    (("dim", "brighten"), ("the",), _ROOMS, ("lights",)),
    (("set",), ("a",), ("timer",), ("for",), _NUMBERS, ("minutes", "seconds")),
    (("cancel", "stop"), ("the",), ("timer", "alarm")),
    (("play",), ("the",), ("next", "previous"), ("song",)),
    (("pause", "stop", "resume", "play"), ("the",), ("music", "radio")),
    (("volume",), ("up", "down")),
    (("open", "close", "lock"), ("the",), ("front", "back", "garage"), ("door",)),
    (("open", "close"), ("the",), _ROOMS, ("window",)),
    (("set",), ("the",), ("temperature",), ("to",), _NUMBERS, ("degrees",)),
    (("what",), ("time",), ("is",), ("it",)),
    (("what",), ("is",), ("the",), ("weather",), ("today", "tomorrow")),
)


def _template_sentences(template: tuple[tuple[str, ...], ...]) -> list[str]:
    return [" ".join(words) for words in itertools.product(*template)]


def command_sentences() -> list[str]:
    """Every sentence the grammar can produce, in a stable order."""
    return [s for t in GRAMMAR for s in _template_sentences(t)]


def command_vocabulary() -> list[str]:
    """The grammar's words, sorted: the closed vocabulary of the command domain."""
    return sorted({w for t in GRAMMAR for slot in t for w in slot})


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One labelled utterance. `audio` is int16 PCM as stored; `audio_float()` gives [-1, 1)."""

    id: str
    audio: np.ndarray
    sample_rate: int
    text: str
    speaker: str
    language: str
    slice: str
    duration_s: float
    path: Path
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def audio_float(self) -> np.ndarray:
        if self.audio.dtype == np.int16:
            return self.audio.astype(np.float32) / 32768.0
        return self.audio.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _Plan:
    id: str
    text: str
    voice: str
    speed: int
    pitch: int
    noisy: bool
    noise_seed: int


def _require_tools() -> None:
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"evalset generation needs `{tool}` on PATH (Debian package {tool})")


@functools.lru_cache(maxsize=1)
def _known_voices() -> tuple[frozenset[str], frozenset[str]]:
    """(languages, variants) espeak-ng knows; it silently falls back on unknown names otherwise."""

    def table(arg: str) -> list[list[str]]:
        out = subprocess.run(["espeak-ng", arg], capture_output=True, text=True, check=True).stdout
        return [line.split() for line in out.splitlines()[1:] if len(line.split()) >= 5]

    languages = {row[1].lower() for row in table("--voices")}
    languages |= {row[4].rsplit("/", 1)[-1].lower() for row in table("--voices")}
    variants = {row[4].rsplit("/", 1)[-1].lower() for row in table("--voices=variant")}
    return frozenset(languages), frozenset(variants)


def check_voice(voice: str) -> None:
    """Raise ValueError naming `voice` unless espeak-ng knows its language and variant."""
    languages, variants = _known_voices()
    language, _, variant = voice.partition("+")
    if language.lower() not in languages:
        raise ValueError(f"voices: {voice!r}: espeak-ng has no language voice {language!r}")
    if variant and variant.lower() not in variants:
        raise ValueError(f"voices: {voice!r}: espeak-ng has no voice variant {variant!r}")


def _espeak_version() -> str:
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    return " ".join(out.split()[:4])


def plan_utterances(
    n_utterances: int,
    seed: int,
    voices: Sequence[str],
    speeds: Sequence[int],
    noisy_fraction: float,
) -> list[_Plan]:
    """Pure: which sentence, voice, speed and pitch each utterance gets for this seed."""
    rng = random.Random(seed)
    per_template = [_template_sentences(t) for t in GRAMMAR]
    width = max(4, len(str(n_utterances - 1)))
    plans = []
    for i in range(n_utterances):
        # Template first, then sentence: short templates are not drowned by the big ones.
        text = rng.choice(rng.choice(per_template))
        plans.append(
            _Plan(
                id=f"utt-{seed}-{i:0{width}d}",
                text=text,
                voice=rng.choice(list(voices)),
                speed=rng.choice(list(speeds)),
                pitch=rng.randint(35, 65),
                noisy=rng.random() < noisy_fraction,
                noise_seed=rng.getrandbits(32),
            )
        )
    return plans


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise at `snr_db` relative to the speech power of float audio in [-1, 1]."""
    active = np.abs(audio) > 1e-3
    power = float(np.mean(audio[active] ** 2)) if active.any() else float(np.mean(audio**2))
    noise = rng.standard_normal(audio.shape).astype(np.float32) * np.sqrt(power / 10 ** (snr_db / 10))
    return np.clip(audio + noise, -1.0, 32767 / 32768).astype(np.float32)


def synthesise(text: str, voice: str, speed: int, pitch: int, workdir: Path) -> np.ndarray:
    """espeak-ng -> sox (16 kHz mono 16-bit, peak -3 dBFS, 0.1 s silence each side) -> int16."""
    raw, out = workdir / "raw.wav", workdir / "out.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), "--", text],
        check=True,
        capture_output=True,
    )
    # -R: repeatable; -D: no dither (dither is random noise and would break determinism).
    subprocess.run(
        [
            *("sox", "-R", "-D", str(raw)),
            *("-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(out)),
            *("gain", "-n", "-3", "pad", "0.1", "0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return read_wav(out)[0]


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """int16 mono samples and the sample rate of a 16-bit PCM WAV file."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                raise ValueError(
                    f"{path}: expected mono 16-bit PCM, got {w.getnchannels()} channel(s) of "
                    f"{8 * w.getsampwidth()} bit"
                )
            return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy(), w.getframerate()
    except wave.Error as e:
        raise ValueError(f"{path}: not a readable PCM WAV file ({e})") from e


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    if audio.dtype != np.int16:
        audio = np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(audio.astype("<i2").tobytes())


def generate_evalset(
    out_dir: str | Path,
    n_utterances: int,
    seed: int = 0,
    noise_snr_db: float | None = None,
    voices: Sequence[str] | None = None,
    speeds: Sequence[int] | None = None,
    noisy_fraction: float = 1.0,
) -> Path:
    """Synthesise `n_utterances` labelled commands into `out_dir`; return the directory.

    With `noise_snr_db` set, a `noisy_fraction` share of utterances (all by default) gets white
    noise at that SNR and the `noisy` slice label; the rest are `clean`.
    """
    if n_utterances < 1:
        raise ValueError(f"n_utterances must be >= 1, got {n_utterances}")
    if not 0.0 <= noisy_fraction <= 1.0:
        raise ValueError(f"noisy_fraction must be within [0, 1], got {noisy_fraction}")
    voices = tuple(voices or DEFAULT_VOICES)
    speeds = tuple(speeds or DEFAULT_SPEEDS)
    for s in speeds:
        if not 80 <= s <= 450:
            raise ValueError(f"speeds: {s} words/minute is outside espeak-ng's 80..450")
    _require_tools()
    for v in voices:
        check_voice(v)
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    plans = plan_utterances(
        n_utterances, seed, voices, speeds, noisy_fraction if noise_snr_db is not None else 0
    )
    lines = []
    with tempfile.TemporaryDirectory(prefix="evalset-") as tmp:
        for p in plans:
            try:
                pcm = synthesise(p.text, p.voice, p.speed, p.pitch, Path(tmp))
            except subprocess.CalledProcessError as e:
                raise RuntimeError(
                    f"voices: espeak-ng/sox failed for voice {p.voice!r}: {e.stderr.decode(errors='replace')}"
                ) from e
            if p.noisy:
                assert noise_snr_db is not None
                noisy = add_noise(
                    pcm.astype(np.float32) / 32768.0, noise_snr_db, np.random.default_rng(p.noise_seed)
                )
                pcm = np.clip(np.round(noisy * 32768.0), -32768, 32767).astype(np.int16)
            rel = f"audio/{p.id}.wav"
            write_wav(out / rel, pcm)
            lines.append(
                {
                    "id": p.id,
                    "audio": rel,
                    "text": p.text,
                    "speaker": p.voice,
                    "language": LANGUAGE,
                    "slice": "noisy" if p.noisy else "clean",
                    "duration_s": round(len(pcm) / SAMPLE_RATE, 4),
                    "speed_wpm": p.speed,
                    "pitch": p.pitch,
                    "snr_db": noise_snr_db if p.noisy else None,
                }
            )
    with open(out / LINES_FILE, "w") as f:
        for line in lines:
            f.write(json.dumps(line, sort_keys=True) + "\n")
    header = {
        "format": FORMAT,
        "seed": seed,
        "n_utterances": n_utterances,
        "normaliser_version": DEFAULT_VERSION,
        "sample_rate": SAMPLE_RATE,
        "language": LANGUAGE,
        "domain": "command-and-control",
        "generator": {
            "synthesiser": _espeak_version(),
            "voices": list(voices),
            "speeds_wpm": list(speeds),
            "noise_snr_db": noise_snr_db,
            "noisy_fraction": noisy_fraction if noise_snr_db is not None else 0.0,
        },
        "slices": {s: sum(1 for line in lines if line["slice"] == s) for s in SLICES},
        "utterances": LINES_FILE,
    }
    (out / HEADER_FILE).write_text(json.dumps(header, indent=2, sort_keys=True) + "\n")
    return out


_REQUIRED = {"id": str, "audio": str, "text": str, "speaker": str, "language": str, "slice": str}


def read_header(path: str | Path) -> dict[str, Any]:
    """The `manifest.json` header of a set (directory or the header file itself)."""
    p = Path(path)
    header_path = p / HEADER_FILE if p.is_dir() else p
    try:
        header = json.loads(header_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{header_path}: evaluation-set header not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{header_path}: not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise ValueError(f"{header_path}: header must be a JSON object")
    version = header.get("normaliser_version", DEFAULT_VERSION)
    if version not in normaliser_versions():
        raise ValueError(
            f"{header_path}: normaliser_version {version!r} is not one of {normaliser_versions()}"
        )
    return header


def load_evalset(path: str | Path, normalise: bool = False) -> list[Utterance]:
    """Read a set from its directory, its `manifest.json` or its `manifest.jsonl`.

    A set without a header (a bare JSON-lines manifest) is accepted; `normalise=True` replaces
    each text with its normalised form under the header's normaliser version.
    """
    p = Path(path)
    if p.is_dir():
        root, lines_path = p, p / LINES_FILE
        header = read_header(p) if (p / HEADER_FILE).exists() else {}
    elif p.name == HEADER_FILE or p.suffix == ".json":
        header = read_header(p)
        root = p.parent
        lines_path = root / header.get("utterances", LINES_FILE)
    else:
        root, lines_path = p.parent, p
        header = read_header(root) if (root / HEADER_FILE).exists() else {}
    version = header.get("normaliser_version", DEFAULT_VERSION)
    if not lines_path.is_file():
        raise FileNotFoundError(f"{lines_path}: evaluation-set manifest not found")
    utterances = []
    seen: set[str] = set()
    for lineno, raw in enumerate(lines_path.read_text().splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{lines_path}:{lineno}"
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e})") from e
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: each line must be a JSON object")
        for field, typ in _REQUIRED.items():
            if not isinstance(entry.get(field), typ):
                raise ValueError(f"{where}: field {field!r} is missing or not a {typ.__name__}")
        if entry["slice"] not in SLICES:
            raise ValueError(f"{where}: field 'slice' is {entry['slice']!r}, expected one of {SLICES}")
        if entry["id"] in seen:
            raise ValueError(f"{where}: duplicate id {entry['id']!r}")
        seen.add(entry["id"])
        audio_path = (root / entry["audio"]).resolve()
        if not audio_path.is_relative_to(root.resolve()):
            raise ValueError(f"{where}: field 'audio' {entry['audio']!r} points outside {root}")
        if not audio_path.is_file():
            raise FileNotFoundError(f"{where}: audio file {entry['audio']!r} not found")
        pcm, rate = read_wav(audio_path)
        known = {*_REQUIRED, "duration_s"}
        utterances.append(
            Utterance(
                id=entry["id"],
                audio=pcm,
                sample_rate=rate,
                text=normalise_text(entry["text"], version) if normalise else entry["text"],
                speaker=entry["speaker"],
                language=entry["language"],
                slice=entry["slice"],
                duration_s=float(entry.get("duration_s", len(pcm) / rate)),
                path=audio_path,
                extra={k: v for k, v in entry.items() if k not in known},
            )
        )
    if not utterances:
        raise ValueError(f"{lines_path}: evaluation set has no utterances")
    return utterances


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m stt_operator.speech.evalset OUT_DIR -n 200 --seed 7 [--snr 10]`."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("-n", "--n-utterances", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--snr", type=float, default=None, help="add white noise at this SNR (dB)")
    ap.add_argument("--noisy-fraction", type=float, default=1.0)
    ap.add_argument("--voices", nargs="*", default=None)
    ap.add_argument("--speeds", nargs="*", type=int, default=None)
    a = ap.parse_args(argv)
    out = generate_evalset(a.out_dir, a.n_utterances, a.seed, a.snr, a.voices, a.speeds, a.noisy_fraction)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
