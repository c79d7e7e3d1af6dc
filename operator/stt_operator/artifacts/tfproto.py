"""Read a TensorFlow SavedModel's `saved_model.pb` without TensorFlow.

TensorFlow's own message classes need the tensorflow package (hundreds of MB, and importing
it registers kernels). The validator needs only a few fields, so this module declares a
subset of the schema with protobuf's descriptor API — the same field numbers as
tensorflow/core/protobuf/{saved_model,meta_graph}.proto and tensorflow/core/framework/
{graph,node_def,function,attr_value,tensor_shape,op_def}.proto. Protobuf skips the fields a
subset leaves out, so any real SavedModel parses; nothing in it is executed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "stt_tfsubset"

# DataType enum values (tensorflow/core/framework/types.proto) → Triton type names.
TF_DTYPES = {
    1: "TYPE_FP32",
    2: "TYPE_FP64",
    3: "TYPE_INT32",
    4: "TYPE_UINT8",
    5: "TYPE_INT16",
    6: "TYPE_INT8",
    7: "TYPE_STRING",
    9: "TYPE_INT64",
    10: "TYPE_BOOL",
    14: "TYPE_BF16",
    17: "TYPE_UINT16",
    19: "TYPE_FP16",
    22: "TYPE_UINT32",
    23: "TYPE_UINT64",
}

_O, _R = (
    descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
)
_T = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "string": _T.TYPE_STRING,
    "bytes": _T.TYPE_BYTES,
    "int64": _T.TYPE_INT64,
    "int32": _T.TYPE_INT32,
    "bool": _T.TYPE_BOOL,
}

# message name → [(field name, number, type, repeated)]; a type not in _SCALARS is a message.
_SCHEMA: dict[str, list[tuple[str, int, str, bool]]] = {
    "SavedModel": [
        ("saved_model_schema_version", 1, "int64", False),
        ("meta_graphs", 2, "MetaGraphDef", True),
    ],
    "MetaGraphDef": [
        ("meta_info_def", 1, "MetaInfoDef", False),
        ("graph_def", 2, "GraphDef", False),
        ("saver_def", 3, "SaverDef", False),
        ("signature_def", 5, "SignatureDefEntry", True),
    ],
    "MetaInfoDef": [("tags", 4, "string", True), ("tensorflow_version", 5, "string", False)],
    "SaverDef": [
        ("filename_tensor_name", 1, "string", False),
        ("save_tensor_name", 2, "string", False),
        ("restore_op_name", 3, "string", False),
    ],
    "SignatureDefEntry": [("key", 1, "string", False), ("value", 2, "SignatureDef", False)],
    "SignatureDef": [
        ("inputs", 1, "TensorInfoEntry", True),
        ("outputs", 2, "TensorInfoEntry", True),
        ("method_name", 3, "string", False),
    ],
    "TensorInfoEntry": [("key", 1, "string", False), ("value", 2, "TensorInfo", False)],
    "TensorInfo": [
        ("name", 1, "string", False),
        ("dtype", 2, "int32", False),
        ("tensor_shape", 3, "TensorShapeProto", False),
    ],
    "TensorShapeProto": [("dim", 2, "Dim", True), ("unknown_rank", 3, "bool", False)],
    "Dim": [("size", 1, "int64", False), ("name", 2, "string", False)],
    "GraphDef": [("node", 1, "NodeDef", True), ("library", 2, "FunctionDefLibrary", False)],
    "NodeDef": [
        ("name", 1, "string", False),
        ("op", 2, "string", False),
        ("input", 3, "string", True),
        ("attr", 5, "AttrEntry", True),
    ],
    "AttrEntry": [("key", 1, "string", False), ("value", 2, "AttrValue", False)],
    "AttrValue": [
        ("list", 1, "ListValue", False),
        ("s", 2, "bytes", False),
        ("func", 10, "NameAttrList", False),
    ],
    "ListValue": [("s", 2, "bytes", True), ("func", 9, "NameAttrList", True)],
    "NameAttrList": [("name", 1, "string", False), ("attr", 2, "AttrEntry", True)],
    "FunctionDefLibrary": [("function", 1, "FunctionDef", True)],
    "FunctionDef": [("signature", 1, "OpDef", False), ("node_def", 3, "NodeDef", True)],
    "OpDef": [("name", 1, "string", False)],
}
# Maps are repeated entry messages on the wire; the entries above stand for them.


@cache
def messages() -> dict[str, Any]:
    """Message classes of the subset schema, built once."""
    file = descriptor_pb2.FileDescriptorProto(name=f"{PACKAGE}.proto", package=PACKAGE, syntax="proto3")
    for name, fields in _SCHEMA.items():
        msg = file.message_type.add(name=name)
        for field_name, number, kind, repeated in fields:
            field = msg.field.add(name=field_name, number=number, label=_R if repeated else _O)
            if kind in _SCALARS:
                field.type = _SCALARS[kind]
            else:
                field.type = _T.TYPE_MESSAGE
                field.type_name = f".{PACKAGE}.{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
        for name in _SCHEMA
    }


def parse_saved_model(path: Path) -> Any:
    """The SavedModel message of `saved_model.pb`; raises google.protobuf DecodeError."""
    model = messages()["SavedModel"]()
    model.ParseFromString(path.read_bytes())
    return model


@dataclass(frozen=True)
class TFTensor:
    name: str
    data_type: str
    dims: tuple[int, ...] | None  # None: unknown rank


def signature_io(
    meta_graph: Any, key: str = "serving_default"
) -> tuple[list[TFTensor], list[TFTensor]] | None:
    """Inputs and outputs of one signature (by its map key), or None when it is absent."""
    for entry in meta_graph.signature_def:
        if entry.key != key:
            continue

        def convert(items: Any) -> list[TFTensor]:
            out = []
            for item in sorted(items, key=lambda e: e.key):
                info = item.value
                shape = info.tensor_shape
                dims = None if shape.unknown_rank else tuple(int(d.size) for d in shape.dim)
                out.append(TFTensor(item.key, TF_DTYPES.get(info.dtype, f"DT_{info.dtype}"), dims))
            return out

        return convert(entry.value.inputs), convert(entry.value.outputs)
    return None


def _functions_called(node: Any, library: set[str]) -> set[str]:
    names = {node.op} & library
    stack = [a.value for a in node.attr]
    while stack:
        value = stack.pop()
        if value.func.name:
            names.add(value.func.name)
            stack.extend(a.value for a in value.func.attr)
        for func in value.list.func:
            names.add(func.name)
            stack.extend(a.value for a in func.attr)
    return names


def ops_outside_saver(meta_graph: Any) -> list[tuple[str, str]]:
    """(where, op) for every NodeDef of the graph and its function library, with `where`
    prefixed `saver:` when the node belongs to the SavedModel's own saver: in TF1 graphs the
    name scope of `saver_def.restore_op_name`, in TF2 the functions the saver nodes call."""
    graph = meta_graph.graph_def
    functions = {f.signature.name: f for f in graph.library.function}
    saver = meta_graph.saver_def
    roots = {
        n.partition(":")[0]
        for n in (saver.filename_tensor_name, saver.save_tensor_name, saver.restore_op_name)
        if n
    }
    scope = saver.restore_op_name.rpartition("/")[0] if "/" in saver.restore_op_name else ""
    saver_functions: set[str] = set()
    pending = [
        name for node in graph.node if node.name in roots for name in _functions_called(node, set(functions))
    ]
    while pending:
        name = pending.pop()
        if name in saver_functions or name not in functions:
            continue
        saver_functions.add(name)
        for node in functions[name].node_def:
            pending.extend(_functions_called(node, set(functions)))
    found: list[tuple[str, str]] = []
    for node in graph.node:
        in_saver = node.name in roots or bool(scope and node.name.startswith(scope + "/"))
        found.append((("saver:" if in_saver else "") + f"node {node.name}", node.op))
    for name, function in functions.items():
        for node in function.node_def:
            prefix = "saver:" if name in saver_functions else ""
            found.append((f"{prefix}function {name} node {node.name}", node.op))
    return found
