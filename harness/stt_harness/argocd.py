"""Run the chart's Argo CD resource customizations (health checks and actions) in real Lua 5.1.

Argo CD evaluates them with gopher-lua, a Lua 5.1 implementation, in a sandbox with the base,
table, string and math libraries and an `os` table reduced to `time` and `date`. This module
builds the same environment with lupa's Lua 5.1 runtime and feeds it objects as the apiserver
returns them. The scripts are read from the ConfigMap the chart renders
(templates/argocd-customizations.yaml), so what is tested is what ships.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "stt-operator"
GROUP = "stt.dev"
KINDS = ("ModelDeployment", "STTModel", "ABTest")
HEALTH_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def render_customizations(helm: str, fmt: str = "split") -> dict[str, str]:
    """The data of the chart's argocd-cm snippet, rendered by the real helm."""
    out = subprocess.run(
        [
            helm, "template", "stt", str(CHART), "-s", "templates/argocd-customizations.yaml",
            "--set", "argocd.customizations.enabled=true", "--set", f"argocd.customizations.format={fmt}",
        ],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    return yaml.safe_load(out)["data"]


class Customizations:
    """Health, discovery and action scripts per kind, parsed from argocd-cm data keys (the split
    form `resource.customizations.health.<group>_<Kind>` / `...actions.<group>_<Kind>`, or the
    legacy single `resource.customizations` key)."""

    def __init__(self, data: Mapping[str, str]) -> None:
        self.health: dict[str, str] = {}
        self.discovery: dict[str, str] = {}
        self.actions: dict[str, dict[str, str]] = {}
        if "resource.customizations" in data:
            for key, entry in yaml.safe_load(data["resource.customizations"]).items():
                kind = key.split("/", 1)[1]
                self.health[kind] = entry["health.lua"]
                if entry.get("actions"):
                    self._actions(kind, yaml.safe_load(entry["actions"]))
        for key, value in data.items():
            for prefix in ("resource.customizations.health.", "resource.customizations.actions."):
                if key.startswith(prefix):
                    group, _, kind = key.removeprefix(prefix).partition("_")
                    assert group == GROUP, key
                    if "health" in prefix:
                        self.health[kind] = value
                    else:
                        self._actions(kind, yaml.safe_load(value))

    def _actions(self, kind: str, block: Mapping[str, Any]) -> None:
        self.discovery[kind] = block["discovery.lua"]
        self.actions[kind] = {d["name"]: d["action.lua"] for d in block.get("definitions") or []}


def _runtime() -> Any:
    from lupa.lua51 import LuaRuntime

    lua = LuaRuntime(unpack_returned_tuples=False, register_eval=False, register_builtins=False)
    # Argo CD's sandbox: no io, no file loading, no debug; os has only time and date.
    lua.execute("io = nil; debug = nil; dofile = nil; loadfile = nil; os = {time = os.time, date = os.date}")
    return lua


def _to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, Mapping):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def _from_lua(lua: Any, value: Any) -> Any:
    if lua.eval("type")(value) != "table":
        return value
    items = list(value.items())
    keys = [k for k, _ in items]
    if keys and keys == list(range(1, len(keys) + 1)):
        return [_from_lua(lua, v) for _, v in items]
    return {k: _from_lua(lua, v) for k, v in items}


def run_script(script: str, obj: Mapping[str, Any]) -> Any:
    """Run one script with `obj` as the global Argo CD sets; returns what it returns, as Python."""
    lua = _runtime()
    lua.globals().obj = _to_lua(lua, obj)
    # Argo CD runs the script as a chunk; `return` at top level hands back the result.
    fn = lua.execute("return function(src) return assert(loadstring(src))() end")
    return _from_lua(lua, fn(script))


class ArgoCD:
    """What Argo CD would compute for an object of one of the stt.dev kinds."""

    def __init__(self, customizations: Customizations) -> None:
        self.c = customizations

    def health(self, obj: Mapping[str, Any]) -> dict[str, str]:
        result = run_script(self.c.health[obj["kind"]], obj)
        assert isinstance(result, dict) and result.get("status") in HEALTH_STATUSES, result
        return result

    def discover(self, obj: Mapping[str, Any]) -> dict[str, bool]:
        """Action name -> enabled."""
        result = run_script(self.c.discovery[obj["kind"]], obj) or {}
        return {name: not bool((spec or {}).get("disabled")) for name, spec in result.items()}

    def act(self, obj: Mapping[str, Any], action: str) -> dict[str, Any]:
        """The object as the action leaves it (Argo CD patches the live object to this)."""
        result = keep_empty_shapes(run_script(self.c.actions[obj["kind"]][action], obj), obj)
        assert isinstance(result, dict), result
        return result


def keep_empty_shapes(new: Any, old: Any) -> Any:
    """Lua has one empty table for both `[]` and `{}`. Argo CD gives an empty table returned by an
    action the shape the live object had there, so a script that never touched `status.x: []`
    does not patch it to `{}`; this does the same."""
    empty = (list, dict)
    if isinstance(new, empty) and not new and isinstance(old, empty) and not old:
        return type(old)()
    if isinstance(new, dict) and isinstance(old, Mapping):
        return {k: keep_empty_shapes(v, old[k]) if k in old else v for k, v in new.items()}
    if isinstance(new, list) and isinstance(old, list) and len(new) == len(old):
        return [keep_empty_shapes(n, o) for n, o in zip(new, old, strict=True)]
    return new


def merge_patch(live: Any, new: Any) -> Any:
    """The RFC 7386 merge patch that turns `live` into `new` (how Argo CD writes an action's
    result back: only what the script changed)."""
    if not isinstance(live, Mapping) or not isinstance(new, Mapping):
        return new
    patch: dict[str, Any] = {}
    for key in live.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in live:
            patch[key] = value
        elif live[key] != value:
            patch[key] = merge_patch(live[key], value)
    return patch


FIXTURES = ROOT / "tests" / "data" / "argocd"
CAPTURE_ENV = "STT_CAPTURE_ARGOCD_FIXTURES"


def capture(name: str, obj: Mapping[str, Any]) -> None:
    """With STT_CAPTURE_ARGOCD_FIXTURES=1, keep a live object as tests/data/argocd/<name>.json
    (the unit tests run the Lua on these); managedFields are dropped, the rest is as served."""
    import json
    import os

    if os.environ.get(CAPTURE_ENV) != "1":
        return
    body = json.loads(json.dumps(obj))
    body.get("metadata", {}).pop("managedFields", None)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    (FIXTURES / f"{name}.json").write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")


GOPHER_SRC = ROOT / "hack" / "argocd-lua"


def build_gopher_lua() -> Path:
    """Build hack/argocd-lua (gopher-lua, the interpreter Argo CD embeds) into the tools cache,
    again when its source is newer than the binary."""
    import os
    import shutil

    out = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stt-operator" / "argocd-lua"
    sources = [GOPHER_SRC / n for n in ("main.go", "go.mod", "go.sum")]
    if out.exists() and out.stat().st_mtime >= max(s.stat().st_mtime for s in sources):
        return out
    go = shutil.which("go") or "/usr/local/go/bin/go"
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([go, "build", "-o", str(out), "."], cwd=GOPHER_SRC, check=True, timeout=600)
    return out


def run_gopher(binary: Path, script: str, obj: Mapping[str, Any]) -> Any:
    """Run one script in gopher-lua (hack/argocd-lua); returns what it returns, as Python."""
    import json
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".lua") as f:
        f.write(script)
        f.flush()
        res = subprocess.run(
            [str(binary), f.name], input=json.dumps(obj), capture_output=True, text=True, timeout=30
        )
    if res.returncode != 0:
        raise RuntimeError(f"gopher-lua: {res.stderr}")
    return json.loads(res.stdout)
