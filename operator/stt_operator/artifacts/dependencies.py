"""Step 3: can the targeted runtime run this model?

ONNX: the model's IR version and per-domain opsets against (a) the onnxruntime installed in
the validator, probed directly with a one-node model of the same IR/opset, and (b) the
onnxruntime that ships in the targeted Triton release (a table from the Triton release
notes); ops in the default domain must exist in the ONNX schema at that opset; any domain
other than the standard ones is a custom op that needs a library. Also the Triton backend the
format needs, and, for a Python model, the imports its code makes and what it declares in
`requirements.txt`.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from stt_operator.api.sttmodel import ALLOWED_BACKENDS, DEFAULT_BACKEND
from stt_operator.artifacts.report import StepResult

# onnxruntime release (major.minor) -> (highest ai.onnx opset, highest IR version).
# From the ONNX Runtime versioning/compatibility table; extend when a new release lands.
ORT_SUPPORT: dict[tuple[int, int], tuple[int, int]] = {
    (1, 14): (18, 8),
    (1, 15): (19, 9),
    (1, 16): (19, 9),
    (1, 17): (20, 9),
    (1, 18): (21, 10),
    (1, 19): (21, 10),
    (1, 20): (21, 10),
    (1, 21): (22, 10),
    (1, 22): (22, 11),
    (1, 23): (23, 11),
}

# Triton container release -> the onnxruntime version its ONNX Runtime backend is built with
# (Triton release notes, framework matrix). An unknown release uses the nearest older entry.
TRITON_ORT: dict[str, str] = {
    "24.01": "1.16.3",
    "24.04": "1.17.3",
    "24.07": "1.18.1",
    "24.10": "1.19.2",
    "24.12": "1.20.1",
    "25.02": "1.20.1",
    "25.04": "1.21.0",
    "25.06": "1.22.0",
    "25.08": "1.22.0",
    "25.10": "1.23.0",
}

STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
ORT_CONTRIB_DOMAINS = ("com.microsoft", "com.microsoft.nchwc", "com.ms.internal.nhwc")

# What the Triton Python backend's stub environment provides besides the standard library.
PYTHON_BACKEND_PROVIDES = frozenset({"numpy", "triton_python_backend_utils"})


def triton_version_from_image(image: str) -> str | None:
    match = re.search(r":(\d{2}\.\d{2})", image)
    return match.group(1) if match else None


def ort_for_triton(triton_version: str) -> str | None:
    older = [v for v in TRITON_ORT if v <= triton_version]
    return TRITON_ORT[max(older)] if older else None


def _major_minor(version: str) -> tuple[int, int]:
    parts = version.split(".")
    return int(parts[0]), int(parts[1])


def ort_limits(version: str) -> tuple[int, int] | None:
    key = _major_minor(version)
    if key in ORT_SUPPORT:
        return ORT_SUPPORT[key]
    older = [k for k in ORT_SUPPORT if k <= key]
    return ORT_SUPPORT[max(older)] if older else None


@functools.lru_cache(maxsize=64)
def installed_ort_accepts(ir_version: int, opset: int) -> str | None:
    """None if the installed onnxruntime loads a one-node model with this IR and opset."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail / InvalidGraph types
        return _ort_reason(str(exc))
    return None


def _ort_reason(text: str) -> str:
    """ORT's message without the C++ source location and function signature."""
    match = re.search(r"(Unsupported model IR version.*|Opset \d+ .*|ONNX Runtime only .*)", text, re.S)
    reason = match.group(1) if match else text
    return " ".join(reason.split())[:300]


def onnx_problems(model_path: Path, triton_version: str | None) -> tuple[list[str], dict[str, object]]:
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path), load_external_data=False)
    opsets = {o.domain or "": o.version for o in model.opset_import}
    default_opset = opsets.get("", opsets.get("ai.onnx", 0))
    problems: list[str] = []
    details: dict[str, object] = {
        "irVersion": model.ir_version,
        "opsets": opsets,
        "onnxruntime": ort.__version__,
    }

    rejected = installed_ort_accepts(model.ir_version, default_opset or 1)
    if rejected:
        problems.append(
            f"installed onnxruntime {ort.__version__} rejects IR {model.ir_version} / opset "
            f"{default_opset}: {rejected}"
        )
    if triton_version:
        target = ort_for_triton(triton_version)
        limits = ort_limits(target) if target else None
        details["triton"] = triton_version
        details["tritonOnnxruntime"] = target
        if limits:
            max_opset, max_ir = limits
            if default_opset > max_opset:
                problems.append(
                    f"opset {default_opset} is newer than {max_opset}, the highest that onnxruntime {target} "
                    f"in Triton {triton_version} implements"
                )
            if model.ir_version > max_ir:
                problems.append(
                    f"IR version {model.ir_version} is newer than {max_ir}, the highest that onnxruntime "
                    f"{target} in Triton {triton_version} reads"
                )
    custom: dict[str, set[str]] = {}
    unknown: set[str] = set()
    for node in _all_nodes(model.graph):
        domain = node.domain or ""
        if domain in STANDARD_DOMAINS:
            if not onnx.defs.has(node.op_type, domain):
                unknown.add(node.op_type)
        elif domain not in ORT_CONTRIB_DOMAINS and not any(f.domain == domain for f in model.functions):
            custom.setdefault(domain, set()).add(node.op_type)
    for domain, ops in sorted(custom.items()):
        problems.append(
            f"custom op domain {domain!r} ({', '.join(sorted(ops))}) needs a custom op library that neither "
            "onnxruntime nor Triton ships"
        )
    if unknown:
        problems.append(f"ops not in the ONNX standard: {', '.join(sorted(unknown))}")
    contrib = sorted({n.op_type for n in _all_nodes(model.graph) if n.domain in ORT_CONTRIB_DOMAINS})
    if contrib:
        details["onnxruntimeContribOps"] = contrib
    return problems, details


def _all_nodes(graph: object) -> list:
    """Nodes of a graph and of every subgraph (If / Loop / Scan bodies)."""
    from onnx import AttributeProto

    nodes = []
    stack = [graph]
    while stack:
        g = stack.pop()
        for node in g.node:
            nodes.append(node)
            for attr in node.attribute:
                if attr.type == AttributeProto.GRAPH:
                    stack.append(attr.g)
                elif attr.type == AttributeProto.GRAPHS:
                    stack.extend(attr.graphs)
    return nodes


def python_imports(source: str) -> set[str]:
    tree = ast.parse(source)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def parse_requirements(text: str) -> set[str]:
    """Distribution names from a requirements.txt (normalised: lower case, '-' -> '_')."""
    names = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        if match:
            names.add(match.group(0).lower().replace("-", "_"))
    return names


# Import names that differ from their distribution name.
IMPORT_TO_DIST = {"sklearn": "scikit_learn", "cv2": "opencv_python", "yaml": "pyyaml", "PIL": "pillow"}


def python_model_problems(model_py: Path) -> tuple[list[str], dict[str, object]]:
    imports = python_imports(model_py.read_text(encoding="utf-8"))
    requirements_file = model_py.parent / "requirements.txt"
    if not requirements_file.exists():
        requirements_file = model_py.parent.parent / "requirements.txt"
    declared = parse_requirements(requirements_file.read_text()) if requirements_file.exists() else set()
    stdlib = set(sys.stdlib_module_names)
    local = {p.stem for p in model_py.parent.glob("*.py")}
    third_party = sorted(i for i in imports if i not in stdlib and i not in local)
    missing = [
        i
        for i in third_party
        if i not in PYTHON_BACKEND_PROVIDES
        and IMPORT_TO_DIST.get(i, i).lower().replace("-", "_") not in declared
    ]
    details: dict[str, object] = {"imports": third_party, "requirements": sorted(declared)}
    problems = []
    if missing:
        problems.append(
            f"model.py imports {', '.join(missing)} which the Triton Python backend does not provide and "
            + (
                f"{requirements_file.name} does not declare"
                if requirements_file.exists()
                else "no requirements.txt"
            )
        )
    return problems, details


def dependencies_step(
    fmt: str | None,
    model_path: Path | None,
    triton_spec: Mapping[str, object] | None,
    triton_version: str | None,
) -> StepResult:
    if fmt is None or model_path is None:
        return StepResult.skipped("dependencies", "no model format detected")
    triton_spec = triton_spec or {}
    backend = str(triton_spec.get("backend") or DEFAULT_BACKEND.get(fmt, "python"))
    problems: list[str] = []
    details: dict[str, object] = {"backend": backend}
    if fmt in ALLOWED_BACKENDS and backend not in ALLOWED_BACKENDS[fmt]:
        problems.append(
            f"Triton backend {backend!r} cannot serve format {fmt!r}; use one of {ALLOWED_BACKENDS[fmt]}"
        )
    if fmt == "onnx":
        more, extra = onnx_problems(model_path, triton_version)
        problems += more
        details.update(extra)
    elif fmt == "python":
        more, extra = python_model_problems(model_path)
        problems += more
        details.update(extra)
    if problems:
        return StepResult.failed("dependencies", "; ".join(problems), findings=problems, **details)
    summary = f"backend {backend}"
    if fmt == "onnx":
        summary += (
            f"; IR {details['irVersion']}, opsets {details['opsets']} supported by onnxruntime "
            f"{details['onnxruntime']}"
        )
        if details.get("tritonOnnxruntime"):
            summary += f" and by Triton {details['triton']} (onnxruntime {details['tritonOnnxruntime']})"
    elif fmt == "python" and details.get("requirements"):
        summary += f"; needs {', '.join(details['requirements'])} (from requirements.txt) in its environment"
    return StepResult.passed("dependencies", summary, **details)
