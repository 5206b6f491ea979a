"""Generation with transformers ``generate``: batched, left-padded, KV-cached, CPU or CUDA.

Reproducibility: every batch is sampled under its own seed derived from ``sampling.seed`` and the
batch index (inside a forked RNG, so the caller's global RNG is untouched); the same prompts, seed
and batch size give the same tokens.

CPU fast path (``fast_cpu``, on by default on CPU): for the duration of ``generate`` the Linear
layers run on MKL-packed weights (or transposed-stride weights where packing is unavailable; see
:mod:`rac.engines.cpu_linear`) and the KV cache is a static, preallocated one instead of a per-step
``cat``, whose not-yet-written tail decode steps skip (:mod:`rac.engines.cpu_attention`). Both keep the float32 arithmetic (a different GEMM kernel may round the last bit
differently); greedy tokens equal the plain path's in the tests and in
``benchmarks/bench_generate.py``, which measures the gain.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from itertools import groupby
from typing import TYPE_CHECKING, Any

import torch

from rac.engines.base import EngineError, FinishReason, Generation, SamplingConfig, eos_token_ids
from rac.engines.cpu_attention import cropped_static_attention
from rac.engines.cpu_linear import fast_linear_weights

if TYPE_CHECKING:
    from rac.pipeline.stage import ProgressReporter

log = logging.getLogger(__name__)

# Default batch sizes (when neither the caller nor the recipe names one). On CPU a decode step at
# batch 32 costs far less than two at batch 16 (the weights are read once per step either way),
# while larger batches gain little more and waste steps on padding and on rows that already
# stopped; see benchmarks/README.md, "Generation (hf engine)".
CPU_BATCH_SIZE = 32
DEFAULT_BATCH_SIZE = 16


class HFEngine:
    """Engine over an already loaded ``(model, tokenizer)``; evaluation reuses its model this way."""

    name = "hf"

    def __init__(
        self, model: Any, tokenizer: Any, batch_size: int | None = None, fast_cpu: bool | None = None
    ) -> None:
        """``batch_size``: None = ``CPU_BATCH_SIZE`` on CPU, ``DEFAULT_BATCH_SIZE`` elsewhere.
        ``fast_cpu``: the CPU fast path (None = on when the model is on CPU, off elsewhere)."""
        if fast_cpu is not None and not isinstance(fast_cpu, bool):
            raise EngineError(f"hf engine: fast_cpu must be true, false or null, got {fast_cpu!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.fast_cpu = fast_cpu
        if batch_size is None:
            batch_size = CPU_BATCH_SIZE if self.device.type == "cpu" else DEFAULT_BATCH_SIZE
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise EngineError(f"hf engine: batch_size must be an integer >= 1, got {batch_size!r}")
        self.batch_size = batch_size
        self.eos_ids = eos_token_ids(tokenizer, model)
        if not self.eos_ids:
            raise EngineError("hf engine: the tokenizer/model define no EOS token; generation could not stop")
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else min(self.eos_ids)
        self.last_stats: dict[str, float] = {}
        self.layout = "plain"  # the Linear layout of the last generate: plain, mkl-packed or transposed

    @classmethod
    def from_spec(cls, model_spec: dict, device: str, dtype: str | None, options: dict) -> HFEngine:
        """Load the model of a recipe ``model`` section and wrap it."""
        from rac.models.load import load_model

        model, tokenizer = load_model(model_spec, device, dtype)
        return cls(model, tokenizer, batch_size=options.get("batch_size"), fast_cpu=options.get("fast_cpu"))

    def version(self) -> str:
        import transformers

        return f"transformers {transformers.__version__}, torch {torch.__version__}"

    def close(self) -> None:
        """Nothing to release: the model belongs to whoever passed it in."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def fast(self) -> bool:
        """Whether ``generate`` takes the CPU fast path (resolves ``fast_cpu=None`` by device)."""
        return self.fast_cpu if self.fast_cpu is not None else self.device.type == "cpu"

    def generate(
        self, prompts: list[list[int]], sampling: SamplingConfig, progress: ProgressReporter | None = None
    ) -> list[list[Generation]]:
        """``sampling.n`` completions for every prompt, in prompt order.

        Jobs (prompt, sample) are sorted by prompt length, longest first, so a batch holds prompts of
        similar length (little padding) and an out-of-memory shows up in the first batch.
        """
        if any(len(p) == 0 for p in prompts):
            raise EngineError("hf engine: empty prompt (0 tokens)")
        jobs = [(i, s) for i in range(len(prompts)) for s in range(sampling.n)]
        jobs.sort(key=lambda job: (-len(prompts[job[0]]), job))
        results: list[list[Generation | None]] = [[None] * sampling.n for _ in prompts]
        handle = progress.task("generating (hf)", total=len(jobs)) if progress else None
        start, produced = time.perf_counter(), 0
        batches = [jobs[offset : offset + self.batch_size] for offset in range(0, len(jobs), self.batch_size)]
        index = 0
        try:
            for rows, same_size in groupby(batches, key=len):  # one weight layout per batch size
                with fast_linear_weights(self.model, rows) if self.fast else nullcontext() as layout, \
                        cropped_static_attention(self.model) if self.fast else nullcontext():
                    self.layout = layout or "plain"
                    for batch in same_size:
                        seed = (sampling.seed * 1_000_003 + index) % (2**63)
                        index += 1
                        outs = self._generate_batch([prompts[i] for i, _ in batch], sampling, seed)
                        for (i, s), gen in zip(batch, outs):
                            results[i][s] = gen
                            produced += len(gen.completion_ids)
                        if handle:
                            handle.advance(len(batch))
        finally:
            if handle:
                handle.close()
        seconds = time.perf_counter() - start
        self.last_stats = {"seconds": seconds, "tokens": produced, "tokens_per_s": produced / max(seconds, 1e-9)}
        return [[g for g in row if g is not None] for row in results]

    def _generation_kwargs(self, sampling: SamplingConfig) -> dict:
        from transformers import GenerationConfig

        sample = sampling.temperature > 0
        config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=sample,
            # greedy leaves the sampling knobs unset (transformers warns about them otherwise); when
            # sampling they are all explicit, top_k=0 included (unset would mean transformers' 50)
            temperature=sampling.temperature if sample else None,
            top_p=sampling.top_p if sample else None,
            top_k=sampling.top_k if sample else None,
            pad_token_id=self.pad_id,
            eos_token_id=sorted(self.eos_ids),
            use_cache=True,
            # a preallocated cache written in place, instead of a `cat` of the whole cache per step
            cache_implementation="static" if self.fast else None,
        )
        return {"generation_config": config}

    @torch.inference_mode()
    def _generate_batch(self, prompts: list[list[int]], sampling: SamplingConfig, seed: int) -> list[Generation]:
        """One left-padded batch through ``model.generate``; cut each row at its first EOS."""
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
        device = self.device
        devices = [device] if device.type == "cuda" else []
        if self.fast and hasattr(self.model, "_previous_max_cache_length"):
            # transformers sizes a static cache by the longest one of any earlier call (to spare
            # torch.compile a recompile); without compile that only makes attention read dead slots
            del self.model._previous_max_cache_length
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = self.model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), **self._generation_kwargs(sampling)
            )
        new = out[:, width:].tolist()
        generations = []
        for prompt, row in zip(prompts, new):
            stop = next((k for k, tok in enumerate(row) if tok in self.eos_ids), None)
            completion = row[: stop + 1] if stop is not None else row[: sampling.max_new_tokens]
            reason: FinishReason = "stop" if stop is not None else "length"
            text = self.tokenizer.decode(completion, skip_special_tokens=True)
            generations.append(Generation(list(prompt), completion, text, reason))
        return generations
