"""Every stage touches only the recipe keys it declares in ``Stage.reads`` (what its fingerprint hashes).

Each stage runs on a tiny model with its settings and its recipe dict wrapped in recorders that note
every dotted key read; a key outside the stage's declared reads is a cache-key gap (e.g. evaluate
reading ``run.seed`` undeclared made seeds 0 and 1 share one cached evaluation).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from rac.engine.cache import Cache
from rac.engine.stage import StageContext
from rac.recipe.load import load_recipe
from rac.recipe.settings import Section, recipe_settings
from rac.stages import STAGE_ORDER, load_stages


class RecordingSettings:
    """Proxy over a settings section: notes the dotted path of every value read (a whole section when a
    method such as ``as_dict`` is used)."""

    def __init__(self, target: Any, path: str, seen: set[str]) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_seen", seen)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        path = f"{self._path}.{name}" if self._path else name
        if isinstance(value, Section):
            return RecordingSettings(value, path, self._seen)
        self._seen.add(self._path or "<whole recipe>" if callable(value) else path)
        return value


class RecordingRecipe(Mapping):
    """Read-only view of the recipe dict noting every key path read (leaves; a whole mapping when iterated)."""

    def __init__(self, data: dict, path: str, seen: set[str]) -> None:
        self._data, self._path, self._seen = data, path, seen

    def _key(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        if isinstance(value, dict):
            return RecordingRecipe(value, self._key(key), self._seen)
        self._seen.add(self._key(key))
        return value

    def get(self, key: str, default: Any = None) -> Any:
        if key not in self._data:
            self._seen.add(self._key(key))
            return default
        return self[key]

    def __iter__(self) -> Iterator[str]:
        self._seen.add(self._path or "<whole recipe>")
        return iter(self._data)

    def __len__(self) -> int:
        self._seen.add(self._path or "<whole recipe>")
        return len(self._data)


def undeclared(seen: set[str], reads: tuple[str, ...]) -> list[str]:
    """Keys read that no declared read covers (a read covers itself and everything below it)."""
    return sorted(k for k in seen if not any(k == r or k.startswith((r + ".", r + "[")) for r in reads))


@pytest.fixture()
def every_stage_recipe(tmp_path, tiny_model_dir) -> dict:
    data = tmp_path / "calib.jsonl"
    data.write_text("".join(json.dumps({"q": f"What is {i} + {i}?", "a": str(2 * i)}) + "\n" for i in range(4)))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""version: 1
model: {{id: {tiny_model_dir}}}
calibration:
  kind: rac
  sources: [{{path: calib.jsonl, field: q, answer_field: a}}]
  budget: {{prompts: 2, tokens: null}}
  rollout: {{t_max: 3, batch_size: 2}}
prune: {{sparsity: 0.5, batch_size: 2, closed_loop: {{rounds: 2}}}}  # rounds 2: the closed loop's reads too
recover: {{tokens: 4, batch_size: 1, heldout: 1}}
quantize: {{}}
evaluate:
  max_new_tokens: 2
  limit: 1
  batch_size: 1
  tasks:
    - {{name: gsm8k, type: math, dataset: gsm8k_test}}
    - {{name: probe, type: probe, limit: 1, t_max: 2}}
    - {{name: throughput, type: throughput, batch_size: 1, prompt_len: 4, decode_len: 2, repeats: 1}}
export: {{format: compressed-tensors}}
run: {{device: cpu, seed: 1}}
""")
    return load_recipe(recipe).data


@pytest.mark.slow
def test_every_stage_reads_only_its_declared_keys(every_stage_recipe, tmp_path):
    recipe = every_stage_recipe
    stages = [s for s in load_stages() if s.enabled(recipe)]
    assert [s.name for s in stages] == list(STAGE_ORDER)  # the recipe exercises every stage
    cache, outputs, gaps = Cache(tmp_path / "cache"), {}, {}
    for stage in stages:
        seen: set[str] = set()
        out = tmp_path / "out" / stage.name
        out.mkdir(parents=True)
        ctx = StageContext(recipe=RecordingRecipe(recipe, "", seen), out_dir=out,  # type: ignore[arg-type]
                           inputs={n: outputs[n] for n in stage.needs if n in outputs}, cache=cache,
                           device="cpu", model_identity="", run_dir=tmp_path / "run")
        ctx._settings = RecordingSettings(recipe_settings(recipe), "", seen)
        stage.run(ctx)
        outputs[stage.name] = out
        assert seen, f"{stage.name}: the recorder saw no read at all"
        if undeclared(seen, stage.reads):
            gaps[stage.name] = undeclared(seen, stage.reads)
    assert not gaps, f"stages read recipe keys their fingerprint does not hash: {gaps}"


def test_recorders_see_reads_through_settings_and_dicts():
    seen: set[str] = set()
    settings = RecordingSettings(recipe_settings({"model": {"id": "m"}, "evaluate": {"tasks": []}}), "", seen)
    assert settings.run.seed == 0 and settings.calibration.render.as_dict()["prefix"] == ""
    assert settings.evaluate.limit is None
    recipe = RecordingRecipe({"run": {"seed": 0, "name": None}, "model": {"id": "m"}}, "", seen)
    assert dict(recipe["model"]) == {"id": "m"} and recipe.get("prune") is None
    assert seen == {"run.seed", "calibration.render", "evaluate.limit", "model", "model.id", "prune"}
    assert undeclared(seen, ("model", "evaluate", "calibration.render")) == ["prune", "run.seed"]


def test_undeclared_seed_is_caught_by_the_coverage_rule():
    """The issue's gap: reading run.seed with the old evaluate reads is flagged."""
    old_reads = ("model", "evaluate", "calibration.render")
    assert undeclared({"run.seed", "evaluate.tasks", "calibration.render"}, old_reads) == ["run.seed"]
    assert undeclared({"calibration"}, ("calibration.render",)) == ["calibration"]
    assert undeclared({"calibration.sources[0].path"}, ("calibration.sources",)) == []


def test_stage_modules_never_read_the_recipe_dict_directly():
    """Stage code reads ``ctx.settings``; ``ctx.recipe`` appears only in ``enabled`` (plan-level) lambdas."""
    stages_dir = Path(__file__).resolve().parents[2] / "rac" / "stages"
    offenders = [f"{f.name}:{n}" for f in sorted(stages_dir.glob("*.py"))
                 for n, line in enumerate(f.read_text().splitlines(), 1) if "ctx.recipe" in line]
    assert not offenders, offenders
