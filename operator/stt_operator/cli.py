"""The `stt-operator` console script.

Each subcommand lives in its own module, imported only when it runs, so `stt-operator run`
never pays for onnxruntime and `stt-operator evaluate` never imports kopf. A subcommand
module provides `add_arguments(parser)` and `main(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("stt_operator.runner", "run the operator (Kopf) in-cluster or with a kubeconfig"),
    "crds": ("stt_operator.api.crdgen", "print or write the CRD YAML generated from the API models"),
    "validate": ("stt_operator.artifacts.validate_cli", "validate a model artifact (six-step report)"),
    "quantize": ("stt_operator.artifacts.quantize_cli", "quantize an ONNX model with an accuracy gate"),
    "evaluate": ("stt_operator.evaluator.cli", "replay a labelled evaluation set against Triton models"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stt-operator", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text)
        sub_parser.set_defaults(_module=module_name)
        # Arguments are added lazily in main() for the chosen subcommand only.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        parser.parse_args(argv)  # prints help or the usage error and exits
        return 2
    name = argv[0]
    module_name, help_text = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    sub_parser = argparse.ArgumentParser(prog=f"stt-operator {name}", description=help_text)
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
