"""Train the project's own compact CTC command recogniser on espeak-ng speech and export ONNX.

    python training/train_ctc.py --out operator/stt_operator/speech/assets

Needs the `train` extra (torch) and the Debian packages espeak-ng and sox. The recipe:

1. synthesise a training set with the project's evaluation-set generator (its own seed and a
   wider voice/speed range than the evaluation default) and a small dev set;
2. compute log-mel features with `stt_operator.speech.features` (the one definition inference
   shares) for a clean copy with random gain and a noisy copy (white / pink / brown noise at a
   random SNR) of every utterance, both with random silence around them, half of the copies
   through a simulation of the INT8-quantized front end (`Int8FrontEnd`);
3. train a frame-stacking TDNN (spliced context -> Linear, residual, LayerNorm) with word-level
   CTC over the command vocabulary, SpecAugment masks, AdamW and a one-cycle schedule;
4. export audio -> logits as ONNX (opset 17, dynamic batch and sample axes) with the log-mel
   front end inside (framing by Slice/Concat, the DFT as a MatMul, the mel projection as a 1x1
   Conv so INT8 dynamic quantization of MatMul/Gemm leaves the power spectrum in float), and
   check it against numpy features and the torch model.

The model is MatMul-dominated on purpose (the DFT and every block are MatMuls), so ONNX
Runtime's dynamic INT8 quantization of MatMul/Gemm covers most of its compute.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn
from torch.nn import functional as F

from stt_operator.speech import features as feat
from stt_operator.speech.ctc import Vocabulary, greedy_decode
from stt_operator.speech.evalset import (
    DEFAULT_VOICES,
    command_vocabulary,
    generate_evalset,
    load_evalset,
    read_header,
)
from stt_operator.speech.onnx_stt import LEAD_PAD_S, TRAIL_PAD_S

TRAIN_VOICES = (
    *DEFAULT_VOICES,
    "en-us+m2",
    "en-us+f4",
    "en-gb+f2",
    "en-gb-x-gbcwmd+m4",
    "en-029+f3",
    "en-us-nyc+m6",
    "en-gb-scotland+m1",
    "en-gb-x-rp+f5",
)
TRAIN_SPEEDS = (120, 140, 160, 175, 190, 210, 230)
BLANK = "<blank>"


# --------------------------------------------------------------------------- model


class LogMel(nn.Module):
    """features.log_mel in ops that export to ONNX and are cheap in ONNX Runtime.

    Frames come from Slices of hop-sized chunks; only the samples under the window and the DFT
    bins some mel filter uses take part, as one MatMul with a [399, 2 * bins] cos | -sin matrix
    (window folded in). The mel filters apply to the squared real and imaginary parts at once
    (power @ fb = re^2 @ fb + im^2 @ fb) as a 1x1 Conv, which INT8 dynamic quantization of
    MatMul/Gemm leaves in float: the power spectrum's range would not survive 8 bits, while the
    DFT's input (audio) and weights (cos/sin) do.
    """

    def __init__(self) -> None:
        super().__init__()
        window = feat.hann_window()
        used = np.flatnonzero(window)
        self.first, self.last = int(used[0]), int(used[-1]) + 1
        assert self.first < feat.HOP and 2 * feat.HOP < self.last <= 3 * feat.HOP
        fb = feat.mel_filterbank()  # [bins, mels]
        bins = np.flatnonzero(fb.sum(axis=1) > 0)
        k = bins[None, :] * np.arange(self.first, self.last)[:, None] * (2 * np.pi / feat.N_FFT)
        w = window[self.first : self.last, None]
        dft = np.concatenate([np.cos(k) * w, -np.sin(k) * w], axis=1).astype(np.float32)
        self.dft = nn.Linear(dft.shape[0], dft.shape[1], bias=False)
        self.dft.weight.data.copy_(torch.from_numpy(dft.T))
        mel = np.concatenate([fb[bins], fb[bins]]).T.astype(np.float32)  # [mels, 2 * used bins]
        self.mel = nn.Conv1d(mel.shape[1], mel.shape[0], kernel_size=1, bias=False)
        self.mel.weight.data.copy_(torch.from_numpy(mel)[:, :, None])
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:  # [B, S] -> [B, T, mels]
        # Callers pad audio shorter than one frame (N_FFT samples); see onnx_stt.
        # Frame t spans hop chunks t, t+1, t+2 (N_FFT = 3 * HOP + 32, and the window's non-zero
        # part ends before the third chunk does): contiguous Slices and a Concat, much cheaper in
        # ONNX Runtime than a Gather of per-sample indices (`unfold` does not export).
        n = (audio.shape[1] - feat.N_FFT) // feat.HOP + 1
        c = audio[:, : (n + 2) * feat.HOP].reshape(audio.shape[0], n + 2, feat.HOP)
        tail = self.last - 2 * feat.HOP
        frames = torch.cat([c[:, :n, self.first :], c[:, 1 : n + 1], c[:, 2 : n + 2, :tail]], dim=-1)
        y = self.dft(frames).transpose(1, 2)  # [B, 2 * bins, T]
        return torch.log(self.mel(y * y) + feat.LOG_FLOOR).transpose(1, 2)


class Splice(nn.Module):
    """Frames t-d, t, t+d side by side: a TDNN context made of Pad/Slice/Concat, no Conv.

    The sequence is extended by repeating its edge frames (Expand + Concat), not by zeros:
    a zero-padded edge is a cue the network latches onto (it learnt to emit the last word at
    the final frame, where that word is out of sight), repeated silence is not.
    """

    def __init__(self, dilation: int) -> None:
        super().__init__()
        self.d = dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        first = x[:, :1].expand(b, self.d, c)
        last = x[:, -1:].expand(b, self.d, c)
        p = torch.cat([first, x, last], dim=1)
        return torch.cat([p[:, : -2 * self.d], x, p[:, 2 * self.d :]], dim=-1)


class Block(nn.Module):
    def __init__(self, d: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.splice = Splice(dilation)
        self.linear = nn.Linear(3 * d, d)
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.drop(F.gelu(self.linear(self.splice(x)))))


class Acoustic(nn.Module):
    """[B, T, mels] log-mel -> [B, T // stack, vocab] CTC logits."""

    def __init__(
        self,
        vocab: int,
        d: int,
        stack: int,
        dilations: tuple[int, ...],
        unique: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.stack = stack
        self.register_buffer("mean", torch.zeros(feat.N_MELS))
        self.register_buffer("std", torch.ones(feat.N_MELS))
        self.inp = nn.Linear(feat.N_MELS * stack, d)
        self.inp_norm = nn.LayerNorm(d)
        self.blocks = nn.ModuleList(Block(d, k, dropout) for k in dilations)
        # Weight sharing: block i reuses the Linear of block i % unique, which buys MatMul
        # compute (and context) without growing the file.
        unique = unique or len(dilations)
        for i, block in enumerate(self.blocks):
            if i >= unique:
                block.linear = self.blocks[i % unique].linear
        self.out = nn.Linear(d, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        b, t, m = x.shape
        n = t // self.stack
        x = x[:, : n * self.stack].reshape(b, n, self.stack * m)
        x = self.inp_norm(F.gelu(self.inp(x)))
        for block in self.blocks:
            x = block(x)
        return self.out(x)


class AudioToLogits(nn.Module):
    def __init__(self, acoustic: Acoustic) -> None:
        super().__init__()
        self.frontend = LogMel()
        self.acoustic = acoustic

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.acoustic(self.frontend(audio))


# --------------------------------------------------------------------------- data


def _coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if colour == "white":
        return white
    spec = np.fft.rfft(white)
    f = np.maximum(np.arange(len(spec)), 1.0)
    spec /= np.sqrt(f) if colour == "pink" else f
    return np.fft.irfft(spec, n)


def pad_silence(x: np.ndarray, lead_s: float, trail_s: float) -> np.ndarray:
    rate = feat.SAMPLE_RATE
    return np.concatenate([np.zeros(round(lead_s * rate)), x, np.zeros(round(trail_s * rate))]).astype(
        np.float32
    )


def augment(audio: np.ndarray, rng: np.random.Generator, noisy: bool) -> np.ndarray:
    # Silence around the speech, of the order onnx_stt adds, so the model never learns to
    # place words by where the input ends.
    x = pad_silence(
        audio, rng.uniform(0.0, 2 * LEAD_PAD_S), rng.uniform(0.5 * TRAIL_PAD_S, 1.5 * TRAIL_PAD_S)
    )
    x = x.astype(np.float64) * 10 ** (rng.uniform(-20, 0) / 20)
    if noisy:
        noise = _coloured_noise(len(x), str(rng.choice(["white", "pink", "brown"])), rng)
        active = np.abs(x) > 1e-3 * np.abs(x).max()
        power = np.mean(x[active] ** 2)
        snr = rng.uniform(0, 30)
        x = x + noise * np.sqrt(power / 10 ** (snr / 10) / np.mean(noise**2))
    return np.clip(x, -1, 1).astype(np.float32)


class Int8FrontEnd:
    """log_mel as ONNX Runtime computes it once dynamic INT8 quantization has reached the
    front end's DFT MatMul: audio frames quantized to uint8 with a per-tensor scale (a batch's
    loudest clip sets it, hence the random widening), cos/sin weights to int8 per tensor.

    Training on a share of such features keeps the INT8 model's WER close to the float one's.
    """

    def __init__(self) -> None:
        lm = LogMel()
        self.first, self.last = lm.first, lm.last
        w = lm.dft.weight.detach().numpy().T.astype(np.float64)  # [samples, 2 * bins]
        scale = np.abs(w).max() / 127
        self.w = np.round(w / scale) * scale
        self.mel = lm.mel.weight.detach().numpy()[:, :, 0].T.astype(np.float64)  # [2 * bins, mels]

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if len(x) < feat.N_FFT:
            x = np.pad(x, (0, feat.N_FFT - len(x)))
        frames = np.lib.stride_tricks.sliding_window_view(x, feat.N_FFT)[:: feat.HOP, self.first : self.last]
        widen = rng.uniform(1.0, 2.0)
        lo, hi = min(0.0, float(frames.min()) * widen), max(0.0, float(frames.max()) * widen)
        scale = max(hi - lo, 1e-12) / 255
        zero = np.round(-lo / scale)
        q = (np.clip(np.round(frames / scale) + zero, 0, 255) - zero) * scale
        y = q @ self.w
        return np.log((y * y) @ self.mel + feat.LOG_FLOOR).astype(np.float32)


def featurise(set_dir: Path, vocab: Vocabulary, augmented: bool, seed: int) -> list[tuple]:
    """(features, label ids, text) per utterance. Augmented: a clean and a noisy copy of each,
    each with even odds computed through the simulated INT8 front end; otherwise the audio
    padded the way onnx_stt pads it."""
    rng = np.random.default_rng(seed)
    int8 = Int8FrontEnd()
    out = []
    for u in load_evalset(set_dir):
        ids = torch.tensor(vocab.encode(u.text))
        if augmented:
            for noisy in (False, True):
                x = augment(u.audio_float(), rng, noisy)
                f = int8(x, rng) if rng.random() < 0.5 else feat.log_mel(x)
                out.append((torch.from_numpy(f), ids, u.text))
        else:
            x = pad_silence(u.audio_float(), LEAD_PAD_S, TRAIL_PAD_S)
            out.append((torch.from_numpy(feat.log_mel(x)), ids, u.text))
    return out


def ensure_set(path: Path, n: int, seed: int, voices: tuple[str, ...], speeds: tuple[int, ...]) -> Path:
    if (path / "manifest.json").exists():
        h = read_header(path)
        if h["seed"] == seed and h["n_utterances"] == n and h["generator"]["voices"] == list(voices):
            return path
    t = time.time()
    generate_evalset(path, n, seed=seed, voices=voices, speeds=speeds)
    print(f"synthesised {n} utterances into {path} in {time.time() - t:.0f}s", flush=True)
    return path


def batches(data: list[tuple], batch_size: int, rng: random.Random, train: bool) -> list[list[tuple]]:
    # Length-sorted buckets, shuffled: little padding, random order.
    order = sorted(range(len(data)), key=lambda i: (data[i][0].shape[0], rng.random() if train else 0))
    groups = [[data[i] for i in order[k : k + batch_size]] for k in range(0, len(order), batch_size)]
    if train:
        rng.shuffle(groups)
    return groups


def collate(group: list[tuple], stack: int) -> tuple[torch.Tensor, ...]:
    feats = nn.utils.rnn.pad_sequence([g[0] for g in group], batch_first=True, padding_value=math.log(1e-6))
    labels = torch.cat([g[1] for g in group])
    in_lens = torch.tensor([g[0].shape[0] // stack for g in group])
    label_lens = torch.tensor([len(g[1]) for g in group])
    return feats, labels, in_lens, label_lens


def spec_augment(x: torch.Tensor, rng: random.Random) -> torch.Tensor:
    x = x.clone()
    for row in x:
        for _ in range(2):
            w = rng.randint(0, 8)
            f0 = rng.randint(0, feat.N_MELS - w)
            row[:, f0 : f0 + w] = row.mean()
        for _ in range(2):
            w = rng.randint(0, min(10, row.shape[0] // 8))
            t0 = rng.randint(0, row.shape[0] - w)
            row[t0 : t0 + w] = row.mean()
    return x


def wer(refs: list[str], hyps: list[str]) -> float:
    import jiwer

    return float(jiwer.wer(refs, hyps))


def evaluate(model: Acoustic, data: list[tuple], vocab: Vocabulary) -> float:
    model.eval()
    refs, hyps = [], []
    with torch.no_grad():
        for group in batches(data, 64, random.Random(0), train=False):
            feats, _, in_lens, _ = collate(group, model.stack)
            logits = model(feats)
            for row, n, g in zip(logits, in_lens, group, strict=True):
                hyps.append(greedy_decode(row[:n].numpy(), vocab).text)
                refs.append(g[2])
    return wer(refs, hyps)


# --------------------------------------------------------------------------- export


def _bypass_identities(m: onnx.ModelProto) -> None:
    """The exporter feeds a shared weight to its second user through an Identity node; point every
    user at the initializer itself so ONNX Runtime's quantizer sees (and quantizes) it."""
    inits = {i.name for i in m.graph.initializer}
    alias = {n.output[0]: n.input[0] for n in m.graph.node if n.op_type == "Identity" and n.input[0] in inits}
    keep = [n for n in m.graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for n in keep:
        for i, name in enumerate(n.input):
            if name in alias:
                n.input[i] = alias[name]
    del m.graph.node[:]
    m.graph.node.extend(keep)


def export(model: Acoustic, vocab: Vocabulary, path: Path, meta: dict[str, str]) -> None:
    full = AudioToLogits(model).eval()
    example = torch.randn(2, 24_000) * 0.1
    torch.onnx.export(
        full,
        (example,),
        str(path),
        input_names=["audio"],
        output_names=["logits"],
        dynamic_axes={"audio": {0: "batch", 1: "samples"}, "logits": {0: "batch", 1: "frames"}},
        opset_version=17,
        dynamo=False,
    )
    m = onnx.load(str(path))
    _bypass_identities(m)
    m.doc_string = "Command-vocabulary CTC recogniser: 16 kHz float audio -> word logits (blank = 0)."
    for k, v in {**meta, "vocabulary": json.dumps(vocab.to_json())}.items():
        m.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))


def check_export(model: Acoustic, path: Path, set_dir: Path) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    utts = load_evalset(set_dir)[:5]
    for u in utts:
        x = u.audio_float()
        onnx_logits = sess.run(["logits"], {"audio": x[None]})[0][0]
        with torch.no_grad():
            torch_logits = model.eval()(torch.from_numpy(feat.log_mel(x))[None])[0].numpy()
        diff = float(np.abs(onnx_logits - torch_logits).max())
        if onnx_logits.shape != torch_logits.shape or diff > 1e-2:
            raise SystemExit(
                f"export check failed on {u.id}: shapes {onnx_logits.shape} vs "
                f"{torch_logits.shape}, max diff {diff}"
            )
    print(f"export check: ONNX (built-in front end) matches numpy features + torch on {len(utts)} utterances")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="directory for model.onnx and vocab.json")
    ap.add_argument("--work", type=Path, default=Path("/tmp/stt-ctc-train"))
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-dev", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--stack", type=int, default=4)
    ap.add_argument("--dilations", default="1,2,3,4,2")
    ap.add_argument("--unique-blocks", type=int, default=4, help="share block weights cyclically")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--max-minutes", type=float, default=40.0, help="stop training after this long")
    a = ap.parse_args(argv)

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    vocab = Vocabulary(tokens=(BLANK, *command_vocabulary()), blank=0, unit="word")

    started = time.time()
    train_dir = ensure_set(a.work / "train", a.n_train, a.seed, TRAIN_VOICES, TRAIN_SPEEDS)
    dev_dir = ensure_set(a.work / "dev", a.n_dev, a.seed + 1, TRAIN_VOICES, TRAIN_SPEEDS)
    t = time.time()
    train = featurise(train_dir, vocab, True, a.seed)
    dev = featurise(dev_dir, vocab, False, a.seed + 1)
    print(f"features: {len(train)} training copies, {len(dev)} dev in {time.time() - t:.0f}s", flush=True)

    model = Acoustic(
        vocab.size, a.d_model, a.stack, tuple(int(k) for k in a.dilations.split(",")), a.unique_blocks
    )
    allf = torch.cat([f for f, _, _ in train[:2000]])
    model.mean.copy_(allf.mean(0))
    model.std.copy_(allf.std(0) + 1e-3)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"model: {n_params / 1e6:.2f} M parameters", flush=True)

    steps_per_epoch = math.ceil(len(train) / a.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=a.lr, total_steps=a.epochs * steps_per_epoch, pct_start=0.15
    )
    ctc = nn.CTCLoss(blank=vocab.blank, zero_infinity=True)
    train_started = time.time()
    for epoch in range(a.epochs):
        model.train()
        total, n = 0.0, 0
        for group in batches(train, a.batch_size, rng, train=True):
            feats, labels, in_lens, label_lens = collate(group, a.stack)
            logp = model(spec_augment(feats, rng)).log_softmax(-1).transpose(0, 1)
            loss = ctc(logp, labels, in_lens, label_lens)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            total += float(loss)
            n += 1
        dev_wer = evaluate(model, dev, vocab)
        elapsed = (time.time() - train_started) / 60
        print(
            f"epoch {epoch + 1}: loss {total / n:.3f}  dev WER {dev_wer:.3f}  {elapsed:.1f} min", flush=True
        )
        if elapsed > a.max_minutes:
            print("time budget reached, stopping early", flush=True)
            break
    train_minutes = (time.time() - train_started) / 60

    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "vocab.json").write_text(json.dumps(vocab.to_json(), indent=1) + "\n")
    meta = {
        "sample_rate": str(feat.SAMPLE_RATE),
        "recipe": "training/train_ctc.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "train_minutes": f"{train_minutes:.1f}",
        "dev_wer": f"{dev_wer:.4f}",
        "frame_stack": str(a.stack),
    }
    export(model, vocab, a.out / "model.onnx", meta)
    check_export(model, a.out / "model.onnx", dev_dir)
    size = (a.out / "model.onnx").stat().st_size
    print(
        f"done: training {train_minutes:.1f} min, total {(time.time() - started) / 60:.1f} min, "
        f"dev WER {dev_wer:.3f}, model.onnx {size / 1e6:.2f} MB",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
