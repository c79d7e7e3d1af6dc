"""`stt-operator evaluate` settings: targets, config file, flag precedence, errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from stt_operator.evaluator.cli import add_arguments, build_config, parse_target
from stt_operator.evaluator.manifests import EvaluatorParams, evaluator_config
from stt_operator.evaluator.model_io import Target


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def test_parse_target() -> None:
    assert parse_target("stable=sphinx-baseline@127.0.0.1:8001") == Target(
        "stable", "sphinx-baseline", "127.0.0.1:8001"
    )
    assert parse_target("b=m@triton.ns.svc:8001/asr-v2").model_label == "asr-v2"
    for bad in ("stable", "stable=m", "stable=m@host", "=m@h:1"):
        with pytest.raises(ValueError, match="VARIANT=TRITON_MODEL@HOST:PORT"):
            parse_target(bad)


def test_flags_build_a_config() -> None:
    cfg = build_config(
        parse(
            "--evalset",
            "/data/set",
            "--target",
            "a=m1@h:1",
            "--target",
            "b=m2@h:1",
            "--rate",
            "5",
            "--rounds",
            "3",
        )
    )
    assert [t.variant for t in cfg.targets] == ["a", "b"]
    assert cfg.replay.rate == 5.0
    assert cfg.rounds == 3
    assert cfg.metrics_port == 9102
    assert cfg.baseline is None


def test_file_then_flags(tmp_path: Path) -> None:
    params = EvaluatorParams(
        owner_name="asr",
        namespace="ml",
        endpoint="asr",
        targets=[Target("stable", "m1", "h:8001", "asr-v1"), Target("canary", "m2", "h2:8001", "asr-v2")],
        evalset_uri="s3://sets/commands.tar.gz",
    )
    f = tmp_path / "config.yaml"
    f.write_text(yaml.safe_dump(evaluator_config(params)))
    cfg = build_config(parse("--config", str(f), "--concurrency", "7"))
    assert cfg.replay.batch_size == 1  # one utterance per request unless asked
    assert build_config(parse("--config", str(f), "--batch-size", "8")).replay.batch_size == 8
    with pytest.raises(ValueError, match="batch_size"):
        build_config(parse("--config", str(f), "--batch-size", "0"))
    assert cfg.evalset == "s3://sets/commands.tar.gz"
    assert cfg.rounds == 0  # the in-cluster evaluator replays forever
    assert cfg.replay.concurrency == 7  # the flag wins over the file
    assert cfg.replay.rate == 2.0
    assert cfg.baseline == "stable"
    assert [(t.variant, t.model_label) for t in cfg.targets] == [("stable", "asr-v1"), ("canary", "asr-v2")]
    assert cfg.metrics_port == 9090


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "mapping"),
        ("evalset: x\nrete: 3\n", "unknown keys"),
        ("evalset: x\ntargets: [{variant: a}]\n", "missing"),
        ("evalset: x\nrate: fast\ntargets: [{variant: a, tritonModel: m, url: 'h:1'}]\n", "rate"),
    ],
)
def test_bad_config_files_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(content)
    with pytest.raises(ValueError, match=message):
        build_config(parse("--config", str(f)))


def test_missing_targets_or_evalset() -> None:
    with pytest.raises(ValueError, match="targets"):
        build_config(parse("--evalset", "x"))
    with pytest.raises(ValueError, match="evalset"):
        build_config(parse("--target", "a=m@h:1"))


def test_cli_exit_code_on_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    from stt_operator.cli import main

    assert main(["evaluate", "--evalset", "/nonexistent", "--target", "a=m@h:1", "--metrics-port", "-1"]) == 2
    assert "/nonexistent" in capsys.readouterr().err
