"""The one entry point that builds a generation engine: one replica here, or N replicas on Ray.

Above both ``rac.engines.base`` (the registry and one replica) and ``rac.engines.data_parallel``
(replicas on Ray, each built by ``base.build_engine``), so neither imports the other's builder.
"""

from __future__ import annotations

from rac.engines.base import Engine, build_engine, check_engine_available


def get_engine(name: str, model_spec: dict, device: str, dtype: str | None, options: dict | None = None) -> Engine:
    """Build the engine ``name`` for the recipe ``model`` section; ``options`` are engine specific
    (hf: batch_size; vllm: tensor_parallel_size, gpu_memory_utilization, ...); ``data_parallel_size`` > 1
    runs that many replicas on Ray (:mod:`rac.engines.data_parallel`)."""
    check_engine_available(name)
    if int((options or {}).get("data_parallel_size") or 1) > 1:  # N replicas on Ray, each one engine
        from rac.engines.data_parallel import DataParallelEngine

        return DataParallelEngine.from_options(name, model_spec, device, dtype, dict(options or {}))
    return build_engine(name, model_spec, device, dtype, options)
