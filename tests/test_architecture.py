"""The layering docs/architecture.md promises, checked on the source (AST) and in a fresh interpreter.

How imports are counted: every ``import`` statement anywhere in a module, at module level, inside a
function or under ``if TYPE_CHECKING:``, is an edge. A lazy (function-level) import defers loading a
heavy library; it does not make a dependency go away, so it cannot hide an import circle either (nor
can an annotation-only import: two modules that need each other's types are one concept or need a
protocol below both, as ``rac.pipeline.cache_entry.CacheStore``). Only an import of a module's own
parent package is left out (Python always imports the package first).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RAC = REPO / "rac"
GRAPH = "rac.pipeline"  # the generic stage graph: plan, cache, run

# Layers above the generic engine or beside it that it must never import (rac.workflow: the `rac plan`
# preview, the review, the grid executors, which run through rac.app).
FORBIDDEN_FOR_GRAPH = ("rac.app", "rac.workflow", "rac.stages", "rac.models", "rac.engines", "rac.eval",
                       "rac.algorithms", "rac.report", "rac.commands", "rac.cli", "rac.api", "rac.ui")
# Known, named exceptions (reason): bundled data sets are fingerprinted by content, so the plan's
# input hashing looks up their files in rac.calibration.datasets (torch-free).
GRAPH_EXCEPTIONS = {(f"{GRAPH}.inputs", "rac.calibration.datasets")}


def _modules() -> dict[str, Path]:
    out = {}
    for path in RAC.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module] + [f"{node.module}.{alias.name}" for alias in node.names
                                if f"{node.module}.{alias.name}" in MODULES]
    return []


def imports_of(name: str) -> set[str]:
    """rac modules that ``name`` imports anywhere in its body."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    found = {module for node in ast.walk(tree) for module in _imported(node)}
    return {m for m in found if m in MODULES and m != name and not name.startswith(m + ".")}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_rac_has_no_import_circles():
    graph = {name: imports_of(name) for name in MODULES}
    assert _cycles(graph) == []


def test_no_module_under_stages_imports_a_stage_module():
    """Stages share lower modules (rac.calibration, rac.models, ...), never each other's code."""
    stages = {name for name, path in MODULES.items()
              if name.startswith("rac.stages.") and "\nSTAGE = " in path.read_text(encoding="utf-8")}
    assert {"rac.stages.rollout", "rac.stages.prune", "rac.stages.evaluate"} <= stages
    offending = {name: sorted(imports_of(name) & stages) for name in MODULES if name.startswith("rac.stages")}
    assert {k: v for k, v in offending.items() if v} == {}


def test_the_generic_engine_imports_no_application_layer():
    engine = [n for n in MODULES if n.startswith(GRAPH + ".")]
    assert {f"{GRAPH}.plan", f"{GRAPH}.run", f"{GRAPH}.cache", f"{GRAPH}.stage"} <= set(engine)
    bad = sorted((name, dep) for name in engine for dep in imports_of(name)
                 if dep.startswith(FORBIDDEN_FOR_GRAPH) and (name, dep) not in GRAPH_EXCEPTIONS)
    assert bad == []


def test_engine_plans_and_runs_standin_stages_without_torch(tmp_path):
    """A fresh interpreter imports the whole engine package, plans and runs the stand-in stages:
    torch, transformers and vllm stay unloaded (device, identities and env facts are passed in)."""
    script = f"""
import importlib, json, pkgutil, sys
sys.path.insert(0, {str(REPO / "tests" / "pipeline")!r})
import rac.pipeline
for info in pkgutil.iter_modules(rac.pipeline.__path__):
    importlib.import_module("rac.pipeline." + info.name)
from pathlib import Path
from standin import STAGES, loaded
from rac.pipeline.cache import Cache
from rac.pipeline.plan import build_plan
from rac.pipeline.run import run_recipe
recipe = {{"gen": {{"n": 3}}, "scale": {{"factor": 2}}, "report": True, "counts": {str(tmp_path / "counts")!r}}}
cache = Cache({str(tmp_path / "cache")!r})
assert [p.name for p in build_plan(recipe, cache, "m", STAGES)] == ["gen", "scale", "report"]
result = run_recipe(loaded(recipe), STAGES, "m", cache, Path({str(tmp_path / "run")!r}))
heavy = sorted(m for m in ("torch", "transformers", "vllm") if m in sys.modules)
print(json.dumps({{"heavy": heavy, "status": result.metrics["status"]}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"heavy": [], "status": "ok"}
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    assert env["device"] == "cpu" and "torch" not in env
