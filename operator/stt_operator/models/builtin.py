"""Write the built-in models as ready version directories (an image build step).

    python -m stt_operator.models.builtin /opt/stt-models

`<dest>/sphinx_stt/` holds the pocketsphinx recogniser's `model.py` and its command grammar;
`<dest>/onnx_ctc/` the ONNX runner's `model.py` with the project's own CTC model. An STTModel
whose `source.uri` is `file:///opt/stt-models/<name>` is fetched from the image by Triton's
fetch-model init container (or a validation Job) like any other directory artifact.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from stt_operator.models import MODELS_DIR, catalog, model_source

SPHINX = "sphinx_stt"
ONNX_CTC = "onnx_ctc"


def version_files() -> dict[str, dict[str, Path | str]]:
    """Built-in model name -> {file name in the version directory: source path or text}."""
    assets = MODELS_DIR.parent / "speech" / "assets"  # the project's CTC model (speech/onnx_stt.py)
    return {
        SPHINX: dict(catalog.sphinx_version_files()),  # type: ignore[arg-type]
        ONNX_CTC: {
            "model.py": model_source("onnx_runner") / "model.py",
            "model.onnx": assets / "model.onnx",
            "vocab.json": assets / "vocab.json",
        },
    }


def export(dest: Path) -> list[Path]:
    """Write every built-in model under `dest`; returns the model directories."""
    written = []
    for name, files in version_files().items():
        out = dest / name
        out.mkdir(parents=True, exist_ok=True)
        for filename, content in files.items():
            if isinstance(content, Path):
                shutil.copyfile(content, out / filename)
            else:
                (out / filename).write_text(str(content))
        written.append(out)
    return written


if __name__ == "__main__":
    for path in export(Path(sys.argv[1] if len(sys.argv) > 1 else "/opt/stt-models")):
        print(path)
