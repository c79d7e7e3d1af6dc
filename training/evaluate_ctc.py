"""Measure the shipped ONNX CTC recogniser on freshly generated held-out command sets.

    python training/evaluate_ctc.py [--model PATH] [--n 300] [--seed 4242]

Prints WER / CER per held-out set (jiwer, after the v1 normaliser) and the real-time factor; the
figures in speech/assets/MODEL_CARD.md come from this script.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jiwer

from stt_operator.speech.evalset import DEFAULT_VOICES, generate_evalset, load_evalset
from stt_operator.speech.normalise import normalise_text
from stt_operator.speech.onnx_stt import DEFAULT_MODEL, OnnxSTT

# espeak-ng voices the training recipe never used (see TRAIN_VOICES in train_ctc.py).
UNSEEN_VOICES = ("en-us+m4", "en-gb+f1", "en-029+m1", "en-gb-x-gbclan+m2", "en-us-nyc+f5")


def score(stt: OnnxSTT, set_dir: Path, batch: int = 16) -> dict[str, float]:
    utts = load_evalset(set_dir)
    refs, hyps, compute, audio_s = [], [], 0.0, 0.0
    for k in range(0, len(utts), batch):
        group = utts[k : k + batch]
        out = stt.transcribe_batch([u.audio for u in group])
        compute += out[0].compute_s
        audio_s += sum(u.duration_s for u in group)
        refs += [normalise_text(u.text) for u in group]
        hyps += [normalise_text(t.text) for t in out]
    return {
        "utterances": len(utts),
        "wer": jiwer.wer(refs, hyps),
        "cer": jiwer.cer(refs, hyps),
        "sentence_errors": sum(r != h for r, h in zip(refs, hyps, strict=True)) / len(refs),
        "rtf": compute / audio_s,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    stt = OnnxSTT(a.model, intra_op_threads=a.threads)
    sets = {
        "clean (default voices)": {"voices": DEFAULT_VOICES},
        "noisy 10 dB SNR (default voices)": {"voices": DEFAULT_VOICES, "noise_snr_db": 10.0},
        "clean (unseen voices)": {"voices": UNSEEN_VOICES},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, kw) in enumerate(sets.items()):
            t = time.time()
            d = generate_evalset(Path(tmp) / str(i), a.n, seed=a.seed, **kw)
            r = score(stt, d)
            print(
                f"{name}: n={r['utterances']} WER {100 * r['wer']:.1f}%  CER {100 * r['cer']:.1f}%  "
                f"sentence errors {100 * r['sentence_errors']:.1f}%  RTF {r['rtf']:.4f}  "
                f"({time.time() - t:.0f}s)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
