"""What the operator process imports: the gRPC client stays out of it (about 14 MB of resident
memory per process that nothing in the operator calls; see bench/scale/import_memory.py)."""

from __future__ import annotations

import json
import subprocess
import sys

_PROGRAM = """
import json, sys
import stt_operator.runner
import stt_operator.controllers.sttmodel, stt_operator.controllers.modeldeployment
import stt_operator.controllers.abtest
from stt_operator.triton.config import mc
heavy = ("grpc", "tritonclient.grpc", "scipy", "statsmodels", "matplotlib", "onnxruntime", "jiwer")
loaded = [m for m in heavy if m in sys.modules]
print(json.dumps({"loaded": loaded, "schema": mc.ModelConfig.DESCRIPTOR.full_name}))
"""


def _run(program: str) -> str:
    argv = [sys.executable, "-c", program]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout.strip()


def test_the_operator_runtime_loads_no_grpc_client_and_no_heavy_statistics() -> None:
    result = json.loads(_run(_PROGRAM).splitlines()[-1])
    assert result == {"loaded": [], "schema": "inference.ModelConfig"}


def test_the_schema_module_is_shared_with_a_later_tritonclient_import() -> None:
    program = (
        "from stt_operator.triton.config import mc\n"
        "import tritonclient.grpc\n"
        "from tritonclient.grpc import model_config_pb2\n"
        "assert model_config_pb2 is mc and tritonclient.grpc.model_config_pb2 is mc\n"
        "assert model_config_pb2.ModelConfig(max_batch_size=4).max_batch_size == 4\n"
        "print('ok')\n"
    )
    assert _run(program) == "ok"
