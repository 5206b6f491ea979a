"""Settings objects: frozen, schema-shaped, and with no defaults of their own (the schema has them all)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from rac.recipe.schema import deref, fill_defaults, recipe_schema
from rac.recipe.settings import (
    CalibrationSettings,
    ModelSettings,
    RecipeSettings,
    Section,
    SettingsError,
    build,
    recipe_settings,
)

STAGES_DIR = Path(__file__).resolve().parents[2] / "rac" / "stages"
MINIMAL = {"model": {"id": "m"}, "prune": {}, "quantize": {}, "evaluate": {"tasks": []}, "export": {}}


def _pairs(cls: type[Section], schema: dict, path: str):
    """(settings class, schema node, dotted path) for every section below and including ``cls``."""
    import typing

    from rac.recipe.settings import _section_type

    schema = deref(schema)
    yield cls, schema, path
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        sub = _section_type(hint) or (_section_type(typing.get_args(hint)[0]) if typing.get_origin(hint) is tuple
                                      else None)
        if sub is not None:
            node = deref(schema["properties"][f.name])
            node = deref(node["items"]) if "items" in node else node
            yield from _pairs(sub, node, f"{path}.{f.name}" if path else f.name)


def test_settings_fields_mirror_the_schema_and_have_no_defaults():
    meta = {"version", "base", "name", "description"}  # recipe-level metadata no stage reads
    for cls, schema, path in _pairs(RecipeSettings, recipe_schema(), ""):
        names = {f.name for f in dataclasses.fields(cls)}
        expected = set(schema["properties"]) - (meta if cls is RecipeSettings else set())
        assert names == expected, f"{path or '<root>'}: settings {sorted(names ^ expected)} differ from the schema"
        for f in dataclasses.fields(cls):  # defaults live only in the schema
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, f"{path}.{f.name}"


def test_settings_of_a_minimal_recipe_carry_exactly_the_schema_defaults():
    settings = recipe_settings(MINIMAL)
    filled = fill_defaults(MINIMAL)
    for section in ("model", "calibration", "prune", "quantize", "evaluate", "export", "run"):
        assert getattr(settings, section).as_dict() == filled[section], section
    schema = recipe_schema()["properties"]
    assert settings.calibration.rollout.t_max == schema["calibration"]["properties"]["rollout"]["properties"][
        "t_max"]["default"]
    assert settings.prune.batch_size == schema["prune"]["properties"]["batch_size"]["default"]
    assert settings.run.seed == schema["run"]["properties"]["seed"]["default"]


def test_optional_sections_are_none_and_settings_are_frozen():
    settings = recipe_settings({"model": {"id": "m"}, "evaluate": {"tasks": [{"name": "p", "type": "probe"}]}})
    assert settings.prune is None and settings.quantize is None and settings.export is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.run.seed = 1  # type: ignore[misc]
    task = settings.evaluate.tasks[0]
    assert task["limit"] == 16 and task["t_max"] == 256  # probe defaults from the schema
    with pytest.raises(TypeError):
        task["limit"] = 3  # type: ignore[index]
    assert isinstance(settings.calibration, CalibrationSettings)
    assert settings.calibration.sources[0].dataset == "gsm8k_train"


def test_missing_key_is_an_error_naming_it():
    with pytest.raises(SettingsError, match=r"model\.dtype"):
        build(ModelSettings, {"id": "m", "gguf_file": None, "revision": None, "trust_remote_code": False}, "model")


def test_stages_restate_no_recipe_default():
    """No ``x.get("<schema key>", <default>)`` in the stages: every default comes from the schema."""
    keys: set[str] = set()

    def collect(node):
        if isinstance(node, dict):
            keys.update(node.get("properties", {}))
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(recipe_schema())
    not_recipe = {"report", "m", "meta", "record", "provenance"}  # artifact files, not the recipe
    offenders = []
    for file in sorted(STAGES_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                    and len(node.args) == 2 and isinstance(node.args[0], ast.Constant) and node.args[0].value in keys \
                    and not (isinstance(node.args[1], ast.Constant) and node.args[1].value is None) \
                    and ast.unparse(node.func.value) not in not_recipe:
                offenders.append(f"{file.name}:{node.lineno}: .get({node.args[0].value!r}, ...)")
    assert not offenders, offenders
