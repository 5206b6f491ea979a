"""Data-parallel generation over N engine replicas on Ray, each replica with its own tensor parallelism.

Two paths, both on existing engines:

- vLLM: Ray Data's LLM batch inference (``ray.data.llm``), ``concurrency`` = N vLLM replicas, each
  with the recipe's ``tensor_parallel_size``. Every (prompt, sample) is one request whose seed is
  derived from (seed, request index), so what a replica gets does not change what it samples.
- hf (the stand-in where vLLM is absent, and CPU tests): N Ray actors, each holding an
  :class:`~rac.engines.hf.HFEngine`. The prompts are cut into fixed chunks (``chunk_size``, not
  dependent on N); chunk k is generated with the seed derived from (seed, k) by whichever replica is
  free. Greedy and seeded sampling are therefore identical for any number of replicas.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from rac.engines.base import EngineError, Generation, SamplingConfig, eos_token_ids

if TYPE_CHECKING:
    from rac.pipeline.stage import ProgressReporter

log = logging.getLogger(__name__)
DEFAULT_CHUNK = 16


def derived_seed(seed: int, index: int) -> int:
    """The seed of work unit ``index`` (a request or a chunk): a function of (seed, index) only."""
    return (seed * 1_000_003 + index) % (2**31)


def ensure_ray(address: str | None = None) -> bool:
    """Connect to Ray (``address``, else $RAY_ADDRESS, else a new local cluster); True when this call
    connected (the caller then shuts it down), False when a connection already existed."""
    try:
        import ray
    except ImportError as exc:
        raise EngineError(f"data-parallel generation needs ray (pip install 'rac[ray]'): {exc}") from exc
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise EngineError(f"could not connect to Ray at {address or '(a new local cluster)'}: {exc}") from exc
    return True


class _Replica:
    """One engine replica inside a Ray actor (the class is wrapped by ``ray.remote`` at use)."""

    def __init__(self, name: str, model_spec: dict, device: str, dtype: str | None, options: dict) -> None:
        from rac.engines.base import build_engine

        self.engine = build_engine(name, model_spec, device, dtype, options)

    def generate(self, prompts: list[list[int]], sampling: SamplingConfig) -> list[list[Generation]]:
        return self.engine.generate(prompts, sampling)


class DataParallelEngine:
    """The :class:`~rac.engines.base.Engine` contract over ``replicas`` engine replicas on Ray."""

    def __init__(self, name: str, model_spec: dict, device: str, dtype: str | None, options: dict,
                 replicas: int) -> None:
        from transformers import AutoTokenizer, GenerationConfig

        from rac.models.load import resolve_model

        if replicas < 1:
            raise EngineError(f"data_parallel_size must be >= 1, got {replicas}")
        self.name = f"{name}x{replicas}"
        self.inner, self.replicas, self.device = name, replicas, device
        self.options = {k: v for k, v in options.items() if k not in ("data_parallel_size", "ray_address")}
        self.chunk_size = int(options.get("chunk_size") or options.get("batch_size") or DEFAULT_CHUNK)
        self.model_spec, self.dtype = model_spec, dtype
        ref = resolve_model(model_spec)
        trust = bool(model_spec.get("trust_remote_code", False))
        self.model_path = os.path.join(ref.path, ref.gguf_file) if ref.gguf_file else ref.path
        hub: dict[str, Any] = {"revision": ref.revision} if ref.revision else {}
        gguf = {"gguf_file": ref.gguf_file} if ref.gguf_file else {}
        self.tokenizer = AutoTokenizer.from_pretrained(ref.path, trust_remote_code=trust, **hub, **gguf)
        if self.tokenizer.pad_token is None:  # as rac.models.load.load_model does for the replicas
            self.tokenizer.pad_token = self.tokenizer.eos_token
        try:
            generation = SimpleNamespace(generation_config=GenerationConfig.from_pretrained(ref.path, **hub))
        except OSError:  # no generation_config.json: the tokenizer's EOS alone
            generation = None
        self.eos_ids = eos_token_ids(self.tokenizer, generation)
        self.started_ray = ensure_ray(options.get("ray_address"))
        self.actors: list[Any] = []
        self.last_stats: dict[str, float] = {}

    @classmethod
    def from_options(cls, name: str, model_spec: dict, device: str, dtype: str | None,
                     options: dict) -> DataParallelEngine:
        return cls(name, model_spec, device, dtype, options, int(options["data_parallel_size"]))

    def version(self) -> str:
        import ray

        return f"{self.inner} x{self.replicas} on ray {ray.__version__}"

    def close(self) -> None:
        """Kill the replica actors (freeing their devices) and the Ray cluster if this engine started it."""
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.started_ray:
            ray.shutdown()
            self.started_ray = False

    def _gpus_per_replica(self) -> int:
        return int(self.options.get("tensor_parallel_size") or 1) if self.device.startswith("cuda") else 0

    def generate(
        self, prompts: list[list[int]], sampling: SamplingConfig, progress: ProgressReporter | None = None
    ) -> list[list[Generation]]:
        """``sampling.n`` completions per prompt, in prompt order, whichever replica made them."""
        if any(len(p) == 0 for p in prompts):
            raise EngineError(f"{self.name} engine: empty prompt (0 tokens)")
        start = time.perf_counter()
        if self.inner == "vllm":
            results = self._generate_ray_data(prompts, sampling, progress)
        else:
            results = self._generate_actors(prompts, sampling, progress)
        seconds = time.perf_counter() - start
        produced = sum(len(g.completion_ids) for row in results for g in row)
        self.last_stats = {"seconds": seconds, "tokens": produced, "tokens_per_s": produced / max(seconds, 1e-9),
                           "replicas": self.replicas}
        return results

    def _generate_actors(self, prompts: list[list[int]], sampling: SamplingConfig,
                         progress: ProgressReporter | None) -> list[list[Generation]]:
        import ray
        from ray.util import ActorPool

        if not self.actors:
            remote = ray.remote(num_cpus=1, num_gpus=self._gpus_per_replica())(_Replica)
            self.actors = [remote.remote(self.inner, self.model_spec, self.device, self.dtype, self.options)
                           for _ in range(self.replicas)]
        chunks = [(k, prompts[offset:offset + self.chunk_size])
                  for k, offset in enumerate(range(0, len(prompts), self.chunk_size))]
        handle = progress.task(f"generating ({self.name})", total=len(prompts) * sampling.n) if progress else None
        results: list[list[Generation]] = []
        try:
            pool = ActorPool(self.actors)
            outputs = pool.map(lambda actor, chunk: actor.generate.remote(
                chunk[1], replace(sampling, seed=derived_seed(sampling.seed, chunk[0]))), chunks)
            for (_, chunk), rows in zip(chunks, outputs):  # map yields in submission order
                results += rows
                if handle:
                    handle.advance(len(chunk) * sampling.n)
        except ray.exceptions.RayError as exc:
            raise EngineError(f"{self.name}: a replica failed: {exc}") from exc
        finally:
            if handle:
                handle.close()
        return results

    def _generate_ray_data(self, prompts: list[list[int]], sampling: SamplingConfig,
                           progress: ProgressReporter | None) -> list[list[Generation]]:
        """Ray Data LLM batch inference: one row per (prompt, sample), each with its own seed."""
        import ray
        import ray.data.llm as ray_llm
        from ray.data.llm import vLLMEngineProcessorConfig

        # ray >= 2.4x calls the builder build_processor; older releases build_llm_processor
        build_llm_processor = next(getattr(ray_llm, name) for name in ("build_processor", "build_llm_processor")
                                   if hasattr(ray_llm, name))

        engine_kwargs = {k: self.options[k] for k in ("tensor_parallel_size", "gpu_memory_utilization",
                                                     "max_model_len", "enforce_eager")
                         if self.options.get(k) is not None}
        engine_kwargs.update(dtype=self.dtype or self.model_spec.get("dtype") or "auto",
                             tokenizer=self.tokenizer.name_or_path,
                             trust_remote_code=bool(self.model_spec.get("trust_remote_code", False)))
        config = vLLMEngineProcessorConfig(
            model_source=self.model_path, engine_kwargs=engine_kwargs, concurrency=self.replicas,
            batch_size=self.chunk_size, chat_template_stage=False, tokenize_stage=False,
            detokenize_stage=False)
        greedy = sampling.temperature == 0
        base = {"temperature": sampling.temperature, "top_p": 1.0 if greedy else sampling.top_p,
                "top_k": 0 if greedy else sampling.top_k, "max_tokens": sampling.max_new_tokens,
                "skip_special_tokens": True}
        rows = [{"request": r, "tokenized_prompt": list(prompts[r // sampling.n]),
                 "sampling_params": {**base, "seed": derived_seed(sampling.seed, r)}}
                for r in range(len(prompts) * sampling.n)]
        processor = build_llm_processor(
            config, preprocess=lambda row: row,
            postprocess=lambda row: {"request": row["request"], "ids": list(row["generated_tokens"])})
        handle = progress.task(f"generating ({self.name})", total=len(rows)) if progress else None
        try:
            done = processor(ray.data.from_items(rows)).take_all()
        finally:
            if handle:
                handle.advance(len(rows))
                handle.close()
        by_request = {int(row["request"]): [int(t) for t in row["ids"]] for row in done}
        if len(by_request) != len(rows):
            raise EngineError(f"{self.name}: {len(rows) - len(by_request)} requests came back without output")
        results: list[list[Generation]] = []
        for i, prompt in enumerate(prompts):
            row = []
            for s in range(sampling.n):
                ids = by_request[i * sampling.n + s]
                stopped = bool(ids) and ids[-1] in self.eos_ids
                text = str(self.tokenizer.decode(ids, skip_special_tokens=True))
                row.append(Generation(list(prompt), ids, text, "stop" if stopped else "length"))
            results.append(row)
        return results
