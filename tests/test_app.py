"""rac.app: the wiring hands rac's stages, identities and runtime (device, ranks, env facts) to the engine."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rac import app
from rac.models import distributed
from rac.models.load import ModelLoadError
from rac.pipeline.stage import Stage


def test_rac_environment_records_library_versions():
    env = app.environment_info("cpu")
    assert {"rac", "python", "platform", "git_commit", "device", "cpu_count"} <= set(env)  # the engine's base
    assert {"torch", "transformers", "torch_threads", "vllm"} <= set(env) and env["device"] == "cpu"


def test_run_device_is_resolved_before_any_work():
    assert app.resolve_run_device("cpu") == "cpu"
    with pytest.raises(ModelLoadError, match="run.device='tpu'"):
        app.resolve_run_device("tpu")


def test_run_loaded_passes_identities_runtime_and_a_stage_prefix(monkeypatch):
    seen: dict = {}
    monkeypatch.setattr(app, "model_identities", lambda recipe: ("target-id", {"rollout": "source-id"}))
    monkeypatch.setattr(app, "run_recipe", lambda *args: seen.update(args=args))
    stages = [Stage(name, needs=(), reads=(), version="1", run=lambda ctx: {}) for name in ("a", "b", "c")]
    app.run_loaded(SimpleNamespace(data={}), stages=stages, stop_after="b")
    _loaded, chosen, identity, _cache, _run_dir, _progress, _on_stage, extra, runtime = seen["args"]
    assert [s.name for s in chosen] == ["a", "b"]
    assert identity == "target-id" and extra == {"rollout": "source-id"}
    assert runtime.ranks is distributed and runtime.device is app.resolve_run_device
    assert runtime.environment is app.environment_info
