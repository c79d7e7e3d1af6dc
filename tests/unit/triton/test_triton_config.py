"""config.pbtxt rendering: every rendered config is parsed back with Triton's own schema."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from stt_operator.api.sttmodel import STTModelSpec
from stt_operator.models import catalog
from stt_operator.triton.config import (
    ConfigError,
    build_model_config,
    parse_config_pbtxt,
    render_config_pbtxt,
    render_for_model,
)
from stt_operator.triton.spec import (
    DynamicBatching,
    InstanceGroup,
    IOSpec,
    LatestPolicy,
    SpecificPolicy,
    TensorSpec,
    TritonSpec,
    VersionPolicy,
)


def _parse(text: str) -> mc.ModelConfig:
    # Independent of our own parse helper: protobuf text_format straight into Triton's schema.
    return text_format.Parse(text, mc.ModelConfig())


OUT = [TensorSpec("y", "TYPE_STRING", [1], "transcript")]


def ctc_io() -> IOSpec:
    return IOSpec(
        inputs=[
            TensorSpec("audio_signal", "TYPE_FP32", [-1], "audio"),
            TensorSpec("length", "TYPE_INT64", [1], "audio-length"),
        ],
        outputs=[TensorSpec("logprobs", "TYPE_FP32", [-1, 29], "logits")],
        sample_rate=16000,
    )


@pytest.mark.parametrize(
    ("model_format", "backend", "filename"),
    [
        ("onnx", "onnxruntime", "model.onnx"),
        ("torchscript", "pytorch", "model.pt"),
        ("pytorch", "pytorch", "model.pt"),
        ("tensorrt-plan", "tensorrt", "model.plan"),
        ("python", "python", "model.py"),
    ],
)
def test_each_backend_renders_a_config_triton_parses(model_format: str, backend: str, filename: str) -> None:
    text = render_config_pbtxt("asr", TritonSpec(), ctc_io(), model_format=model_format)
    cfg = _parse(text)
    assert cfg.name == "asr"
    assert cfg.backend == backend
    assert cfg.default_model_filename == filename
    assert cfg.max_batch_size == 8
    assert [(i.name, mc.DataType.Name(i.data_type), list(i.dims)) for i in cfg.input] == [
        ("audio_signal", "TYPE_FP32", [-1]),
        ("length", "TYPE_INT64", [1]),
    ]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("logprobs", [-1, 29])]
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert cfg.instance_group[0].count == 1


def test_explicit_backend_overrides_the_format_default() -> None:
    cfg = _parse(render_config_pbtxt("asr", TritonSpec(backend="python"), ctc_io(), model_format="onnx"))
    assert cfg.backend == "python"
    assert cfg.default_model_filename == "model.py"


def test_batching_instances_versions_warmup_and_parameters() -> None:
    triton = TritonSpec(
        max_batch_size=16,
        dynamic_batching=DynamicBatching(preferred_batch_sizes=[4, 8], max_queue_delay_microseconds=500),
        instance_group=InstanceGroup(kind="KIND_GPU", count=2, gpus=[0, 1]),
        version_policy=VersionPolicy(latest=LatestPolicy(num_versions=2)),
        warmup=True,
        parameters={"beam": "1e-48", "grammar": "commands.jsgf"},
    )
    cfg = _parse(render_config_pbtxt("asr", triton, ctc_io(), model_format="onnx"))
    assert cfg.max_batch_size == 16
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    group = cfg.instance_group[0]
    assert (group.kind, group.count, list(group.gpus)) == (mc.ModelInstanceGroup.KIND_GPU, 2, [0, 1])
    assert cfg.version_policy.latest.num_versions == 2
    warm = cfg.model_warmup[0]
    assert warm.batch_size == 1
    # A dynamic audio dimension warms up with one second of audio at the declared sample rate.
    assert list(warm.inputs["audio_signal"].dims) == [16000]
    assert warm.inputs["audio_signal"].zero_data
    assert list(warm.inputs["length"].dims) == [1]
    assert cfg.parameters["grammar"].string_value == "commands.jsgf"
    assert cfg.parameters["beam"].string_value == "1e-48"


def test_optional_inputs_are_marked_and_left_out_of_the_warmup() -> None:
    io = IOSpec(
        inputs=[
            TensorSpec("AUDIO", "TYPE_INT16", [-1], "audio"),
            TensorSpec("AUDIO_LENGTH", "TYPE_INT32", [1], "audio-length", optional=True),
        ],
        outputs=OUT,
    )
    cfg = _parse(render_config_pbtxt("asr", TritonSpec(warmup=True), io, model_format="python"))
    assert [(i.name, i.optional) for i in cfg.input] == [("AUDIO", False), ("AUDIO_LENGTH", True)]
    assert list(cfg.model_warmup[0].inputs) == ["AUDIO"]
    # A required input is not marked at all, and the same spec as a camelCase body renders the same.
    assert "optional" not in render_config_pbtxt("asr", TritonSpec(), ctc_io(), model_format="onnx")
    body = {
        "inputs": [
            {"name": "AUDIO", "dataType": "TYPE_INT16", "dims": [-1], "role": "audio"},
            {
                "name": "AUDIO_LENGTH",
                "dataType": "TYPE_INT32",
                "dims": [1],
                "role": "audio-length",
                "optional": True,
            },
        ],
        "outputs": [{"name": "y", "dataType": "TYPE_STRING", "dims": [1], "role": "transcript"}],
    }
    assert render_config_pbtxt("asr", TritonSpec(warmup=True), body, model_format="python") == (
        render_config_pbtxt("asr", TritonSpec(warmup=True), io, model_format="python")
    )


def test_tensorrt_fp16_accelerator_for_onnxruntime_on_gpu() -> None:
    cfg = _parse(render_config_pbtxt("asr", TritonSpec(tensorrt_fp16=True), ctc_io(), model_format="onnx"))
    accel = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert [a.name for a in accel] == ["tensorrt"]
    assert accel[0].parameters["precision_mode"] == "FP16"
    assert int(accel[0].parameters["max_workspace_size_bytes"]) > 0


@pytest.mark.parametrize(
    ("policy", "check"),
    [
        (VersionPolicy(all=True), lambda c: c.version_policy.HasField("all")),
        (
            VersionPolicy(specific=SpecificPolicy([1, 3])),
            lambda c: list(c.version_policy.specific.versions) == [1, 3],
        ),
    ],
)
def test_version_policies(policy: VersionPolicy, check: Any) -> None:
    cfg = _parse(render_config_pbtxt("asr", TritonSpec(version_policy=policy), ctc_io(), model_format="onnx"))
    assert check(cfg)


def test_cpu_instances_without_batching() -> None:
    triton = TritonSpec(max_batch_size=0, instance_group=InstanceGroup(kind="KIND_CPU", count=3))
    cfg = _parse(render_config_pbtxt("asr", triton, ctc_io(), model_format="onnx"))
    assert cfg.max_batch_size == 0
    assert not cfg.HasField("dynamic_batching")
    assert (cfg.instance_group[0].kind, cfg.instance_group[0].count) == (mc.ModelInstanceGroup.KIND_CPU, 3)


@pytest.mark.parametrize(
    ("triton", "io", "fmt", "field"),
    [
        (TritonSpec(tensorrt_fp16=True), None, "python", "triton.tensorrtFp16"),
        (
            TritonSpec(tensorrt_fp16=True, instance_group=InstanceGroup(kind="KIND_CPU")),
            None,
            "onnx",
            "triton.tensorrtFp16",
        ),
        (
            TritonSpec(instance_group=InstanceGroup(kind="KIND_CPU", gpus=[0])),
            None,
            "onnx",
            "instanceGroup.gpus",
        ),
        (TritonSpec(max_batch_size=0, dynamic_batching=DynamicBatching()), None, "onnx", "dynamicBatching"),
        (
            TritonSpec(dynamic_batching=DynamicBatching(preferred_batch_sizes=[32])),
            None,
            "onnx",
            "preferredBatchSizes",
        ),
        (
            TritonSpec(version_policy=VersionPolicy(latest=LatestPolicy(1), all=True)),
            None,
            "onnx",
            "versionPolicy",
        ),
        (TritonSpec(), IOSpec(inputs=[TensorSpec("x", "TYPE_FLOAT", [1])], outputs=OUT), "onnx", "dataType"),
        (TritonSpec(), IOSpec(inputs=[TensorSpec("x", "TYPE_FP32", [0])], outputs=OUT), "onnx", "dims"),
        (
            TritonSpec(),
            IOSpec(inputs=[TensorSpec("x", "TYPE_FP32", [1], "speech")], outputs=OUT),
            "onnx",
            "role",
        ),
        (TritonSpec(), IOSpec(inputs=[TensorSpec("x", "TYPE_FP32", [1])], outputs=[]), "onnx", "io.outputs"),
        (
            TritonSpec(),
            IOSpec(inputs=[TensorSpec("x", "TYPE_FP32", [1])], outputs=[TensorSpec("x", "TYPE_FP32", [1])]),
            "onnx",
            "used twice",
        ),
        (
            TritonSpec(),
            IOSpec(
                inputs=[TensorSpec("x", "TYPE_FP32", [1], "audio")],
                outputs=[TensorSpec("y", "TYPE_STRING", [1], "transcript", optional=True)],
            ),
            "onnx",
            r"io\.outputs\[0\]\.optional",
        ),
        (TritonSpec(), None, "tensorflow-savedmodel", "convert the model to ONNX"),
        (TritonSpec(backend="tensorflow"), None, "onnx", "triton.backend"),
    ],
)
def test_bad_specs_are_rejected_naming_the_field(
    triton: TritonSpec, io: IOSpec | None, fmt: str, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        build_model_config("asr", triton, io or ctc_io(), model_format=fmt)


def test_renders_from_the_api_model_and_a_raw_camelcase_body() -> None:
    body = {
        "language": "en-US",
        "format": "onnx",
        "source": {"uri": "s3://models/asr.onnx"},
        "io": {
            "inputs": [{"name": "audio", "dataType": "TYPE_FP32", "dims": [-1], "role": "audio"}],
            "outputs": [{"name": "text", "dataType": "TYPE_STRING", "dims": [1], "role": "transcript"}],
        },
        "triton": {
            "maxBatchSize": 4,
            "dynamicBatching": {
                "enabled": True,
                "preferredBatchSizes": [2, 4],
                "maxQueueDelayMicroseconds": 100,
            },
            "instanceGroup": {"kind": "KIND_GPU", "count": 1, "gpus": [0]},
            "versionPolicy": {"all": {}},
            "tensorrtFp16": True,
        },
    }
    from_api = render_for_model("asr", STTModelSpec.model_validate(body))
    from_raw = render_for_model("asr", body)
    assert from_api == from_raw
    cfg = parse_config_pbtxt(from_api)
    assert cfg.max_batch_size == 4
    assert list(cfg.dynamic_batching.preferred_batch_size) == [2, 4]
    assert cfg.version_policy.HasField("all")
    assert cfg.optimization.execution_accelerators.gpu_execution_accelerator[0].name == "tensorrt"


def test_disabled_dynamic_batching_is_left_out() -> None:
    cfg = _parse(
        render_config_pbtxt(
            "asr", TritonSpec(dynamic_batching=DynamicBatching(enabled=False)), ctc_io(), model_format="onnx"
        )
    )
    assert not cfg.HasField("dynamic_batching")


def test_parse_errors_name_the_file() -> None:
    with pytest.raises(ConfigError, match=r"config\.pbtxt"):
        parse_config_pbtxt('name: "x" max_batch_size: "eight"')


def test_builtin_recogniser_configs() -> None:
    base = _parse(render_config_pbtxt("b", catalog.sphinx_triton(), catalog.sphinx_io()))
    degraded = _parse(render_config_pbtxt("d", catalog.sphinx_triton(degraded=True), catalog.sphinx_io()))
    assert base.backend == degraded.backend == "python"
    assert base.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert [o.name for o in base.output] == ["TRANSCRIPT", "CONFIDENCE"]
    assert base.output[0].data_type == mc.TYPE_STRING
    assert "noise_snr_db" not in base.parameters
    assert float(degraded.parameters["noise_snr_db"].string_value) < 20
    assert degraded.parameters["grammar"].string_value == catalog.GRAMMAR_FILE
    assert base.input[0].data_type == mc.TYPE_INT16
    assert "EXECUTION_ENV_PATH" not in base.parameters
    packed = _parse(
        render_config_pbtxt(
            "p",
            catalog.sphinx_triton(execution_env="$$TRITON_MODEL_DIRECTORY/env.tar.gz"),
            catalog.sphinx_io(),
        )
    )
    assert packed.parameters["EXECUTION_ENV_PATH"].string_value == "$$TRITON_MODEL_DIRECTORY/env.tar.gz"
    assert list(base.model_warmup[0].inputs["AUDIO"].dims) == [16000]
    # AUDIO_LENGTH trims zero-padded batch rows; clients may leave it out, and so does the warm-up.
    assert [(i.name, i.data_type, i.optional) for i in base.input] == [
        ("AUDIO", mc.TYPE_INT16, False),
        ("AUDIO_LENGTH", mc.TYPE_INT32, True),
    ]
    assert list(base.model_warmup[0].inputs) == ["AUDIO"]
