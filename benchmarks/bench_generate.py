"""Rollout throughput of the ``hf`` engine on CPU: plain path vs the CPU fast path, side by side.

    OMP_NUM_THREADS=1 python benchmarks/bench_generate.py [--batch-sizes 16 32 64] [--max-new-tokens 128]
    python benchmarks/bench_generate.py --dtype bfloat16 --variants plain fast   # bf16 linears in float32

SmolLM2-135M (float32) generates greedily for the first ``B`` GSM8K-test prompts (rendered with the
chat template, the way rollouts render them), one batch of ``B`` per run. For every batch size the
plain engine (``fast_cpu=False``: contiguous weights, dynamic KV cache), the fast engine with the
transposed-stride layout (``transposed``: MKL packing disabled), the fast engine reading the whole
static cache at every step (``uncropped``: the cache-tail cropping of ``rac.engines.cpu_attention``
disabled) and the fast engine as shipped (``fast``: MKL-packed Linear weights, static KV cache,
cropped decode attention) run alternately ``--repeats`` times on the
same model, so a change of machine load hits all; the best run of each is reported.
The completions of the two paths are compared token by token. Tokens/s counts generated tokens
(a row stops at EOS). Results: a table and ``benchmarks/results/generate_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def prompts(tokenizer, count: int, dataset: str = "gsm8k_test") -> list[list[int]]:
    """The first ``count`` GSM8K-test questions, rendered as rollout prompts."""
    from rac.calibration.datasets import load_records
    from rac.calibration.render import render_prompt

    records = load_records({"dataset": dataset, "field": "question", "answer_field": None})
    return [render_prompt(tokenizer, r["question"], {"chat_template": True}) for r in records[:count]]


VARIANTS = ("plain", "transposed", "uncropped", "fast")


@contextmanager
def _no_cropping(model):
    yield False


def timed(engine, variant: str, batch: list[list[int]], sampling) -> tuple[float, int, list[list[int]]]:
    """(seconds, generated tokens, completions) of one ``generate`` call."""
    from rac.engines import cpu_linear, hf

    budget, cropping = cpu_linear.PACKED_BUDGET_BYTES, hf.cropped_static_attention
    cpu_linear.PACKED_BUDGET_BYTES = 0 if variant == "transposed" else budget
    if variant == "uncropped":
        hf.cropped_static_attention = _no_cropping
    start = time.perf_counter()
    try:
        result = engine.generate(batch, sampling)
    finally:
        cpu_linear.PACKED_BUDGET_BYTES, hf.cropped_static_attention = budget, cropping
    seconds = time.perf_counter() - start
    ids = [row[0].completion_ids for row in result]
    return seconds, sum(len(c) for c in ids), ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--dataset", default="gsm8k_test", help="prompt source (gsm8k_train: the demo's rollouts)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy; the demo samples at 0.6")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                        help="which columns to run (plain is the reference for token equality)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="model dtype (bfloat16: on a CPU without bfloat16 GEMMs the fast path computes the "
                             "bfloat16 linears in float32)")
    parser.add_argument("--out", type=Path, help="results JSON (default: results/generate_cpu[_<dtype>].json)")
    args = parser.parse_args()

    from rac.engines.base import SamplingConfig
    from rac.engines.cpu_linear import native_bf16_gemm
    from rac.engines.hf import HFEngine
    from rac.models.load import load_model
    from rac.pipeline.inputs import cpu_model

    suffix = "" if args.dtype == "float32" else f"_{args.dtype}"
    out = args.out or HERE / "results" / f"generate_cpu{suffix}.json"
    model, tokenizer = load_model({"id": "smollm2-135m", "dtype": args.dtype}, "cpu")
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)
    warm = prompts(tokenizer, 4)
    for fast in (False, True):  # first-call costs (allocator, MKL init) out of the timings
        HFEngine(model, tokenizer, batch_size=4, fast_cpu=fast).generate(warm, SamplingConfig(max_new_tokens=4))

    rows = []
    cpu = cpu_model()
    print(f"{cpu} ({torch.backends.cpu.get_cpu_capability()}, native bfloat16 GEMMs: {native_bf16_gemm()}), "
          f"{args.dtype}, threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    variants = [v for v in VARIANTS if v in args.variants]
    reference = variants[0]
    print("| batch | " + " | ".join(f"{v} tok/s" for v in variants) + f" | {variants[-1]} / {reference} | tokens | "
          f"same tokens as {reference} |")
    print("|---" * (len(variants) + 4) + "|")
    for size in args.batch_sizes:
        batch = prompts(tokenizer, size, args.dataset)
        best = {v: float("inf") for v in variants}
        outputs: dict[str, list[list[int]]] = {}
        tokens: dict[str, int] = {}
        layouts: dict[str, str] = {}
        for _ in range(args.repeats):
            for variant in variants:
                engine = HFEngine(model, tokenizer, batch_size=size, fast_cpu=variant != "plain")
                seconds, tokens[variant], outputs[variant] = timed(engine, variant, batch, sampling)
                best[variant] = min(best[variant], seconds)
                layouts[variant] = engine.layout
        rate = {v: tokens[v] / best[v] for v in variants}
        differing = {v: sum(a != b for a, b in zip(outputs[reference], outputs[v])) for v in variants}
        last = variants[-1]
        row = {
            "batch": size, **{f"{v}_tok_s": rate[v] for v in variants}, "ratio": rate[last] / rate[reference],
            "ratio_of": f"{last} / {reference}",
            **{f"tokens_{v}": tokens[v] for v in variants}, "rows_differing": differing,
            "same_tokens": not any(differing.values()), "load_average": os.getloadavg()[0], "layouts": layouts,
        }
        rows.append(row)
        same = "yes" if row["same_tokens"] else f"no (rows differing: {differing})"
        print(f"| {size} | " + " | ".join(f"{rate[v]:.1f}" for v in variants) +
              f" | {row['ratio']:.2f}x | {tokens[last]} | {same} |", flush=True)

    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(), "cpu": cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16_gemm": native_bf16_gemm(),
        "dtype": args.dtype,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "max_new_tokens": args.max_new_tokens, "repeats": args.repeats, "dataset": args.dataset,
        "temperature": args.temperature, "top_p": args.top_p,
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
