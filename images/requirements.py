"""Print the requirements of this project (core + the named extras) from pyproject.toml.

    python requirements.py pyproject.toml [extra ...]

Image builds install these first, in a layer that only pyproject.toml invalidates, and the
package itself afterwards with --no-deps: a source change then rebuilds in seconds. Extras
that name the project itself (`stt-operator[models,security]`) are expanded.
"""

from __future__ import annotations

import re
import sys
import tomllib


def requirements(pyproject: dict, extras: list[str]) -> list[str]:
    project = pyproject["project"]
    name = project["name"]
    out = list(project.get("dependencies", []))
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in project.get("optional-dependencies", {})[extra]:
            m = re.fullmatch(rf"{re.escape(name)}\[([^\]]+)\]", req.replace(" ", ""))
            if m:
                todo += m.group(1).split(",")
            else:
                out.append(req)
    return list(dict.fromkeys(out))


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as f:
        print("\n".join(requirements(tomllib.load(f), sys.argv[2:])))
