"""Serve an ONNX model through Triton's Python backend with onnxruntime.

The local stand-in for Triton's `onnxruntime` backend (the nvidia-pytriton tritonserver has
only the Python backend): every input and output declared in config.pbtxt is passed to and
taken from the ONNX session by name, unchanged, so the model answers exactly as it would on
the onnxruntime backend. Model `parameters`:
  onnx_file       file in the version directory (default model.onnx)
  providers       comma-separated onnxruntime providers (default CPUExecutionProvider)
  intra_op_threads
  extra_sys_path  os.pathsep-separated directories added to sys.path (the stub does not
                  inherit a virtualenv)
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np


def model_parameters(model_config: dict[str, Any]) -> dict[str, str]:
    return {k: str(v.get("string_value", "")) for k, v in (model_config.get("parameters") or {}).items()}


def tensor_names(model_config: dict[str, Any]) -> tuple[list[str], list[str]]:
    return [t["name"] for t in model_config.get("input", [])], [
        t["name"] for t in model_config.get("output", [])
    ]


def check_signature(
    config_inputs: list[str], config_outputs: list[str], onnx_inputs: list[str], onnx_outputs: list[str]
) -> None:
    """Every declared tensor must exist in the ONNX graph (named in the error when not)."""
    missing_in = sorted(set(config_inputs) - set(onnx_inputs))
    missing_out = sorted(set(config_outputs) - set(onnx_outputs))
    if missing_in or missing_out:
        raise ValueError(
            f"config.pbtxt declares tensors the ONNX model lacks: inputs {missing_in}, "
            f"outputs {missing_out}; the model has inputs {onnx_inputs} and outputs {onnx_outputs}"
        )


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = model_parameters(config)
        for entry in filter(None, params.get("extra_sys_path", "").split(os.pathsep)):
            if entry not in sys.path:
                sys.path.append(entry)
        import onnxruntime as ort

        path = os.path.join(
            args["model_repository"], args["model_version"], params.get("onnx_file") or "model.onnx"
        )
        opts = ort.SessionOptions()
        if params.get("intra_op_threads"):
            opts.intra_op_num_threads = int(params["intra_op_threads"])
        providers = [
            p.strip() for p in (params.get("providers") or "CPUExecutionProvider").split(",") if p.strip()
        ]
        self.session = ort.InferenceSession(path, opts, providers=providers)
        self.inputs, self.outputs = tensor_names(config)
        check_signature(
            self.inputs,
            self.outputs,
            [i.name for i in self.session.get_inputs()],
            [o.name for o in self.session.get_outputs()],
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            try:
                feed = {}
                for name in self.inputs:
                    tensor = pb_utils.get_input_tensor_by_name(request, name)
                    if tensor is not None:
                        feed[name] = tensor.as_numpy()
                results = self.session.run(self.outputs, feed)
                responses.append(
                    pb_utils.InferenceResponse(
                        [
                            pb_utils.Tensor(n, np.ascontiguousarray(r))
                            for n, r in zip(self.outputs, results, strict=True)
                        ]
                    )
                )
            except Exception as exc:  # one bad request must not fail the others in the batch
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"onnx_runner: {exc}"))
                )
        return responses

    def finalize(self) -> None:
        self.session = None
