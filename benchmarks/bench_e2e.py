"""End-to-end SparseGPT prune of SmolLM2-135M: rac vs llm-compressor on the same calibration tokens.

    OMP_NUM_THREADS=2 python benchmarks/bench_e2e.py [--calib text|prompt] [--tokens 16384]

1. rac's calibration builder makes the token sequences (``text``: the bundled C4 sample packed into
   512-token sequences; ``prompt``: rendered GSM8K-train prompts). Both tools get exactly these ids.
2. rac: the ``hessian`` and ``prune`` stages run as in a pipeline (fresh Hessian cache, sequential,
   50% unstructured, block 128, dampening 0.01, replay batch ``--batch-size``); timed per stage. Once
   per within-block order in ``--orders``: ``true_sequential`` (the default: staged replay, each
   group's Hessian through the groups pruned before it) and ``one_pass`` (SparseGPT's /
   llm-compressor's order: all four Hessians from one dense pass of the block).
3. llm-compressor: ``oneshot`` with ``SparseGPTModifier`` (same settings, lm_head ignored) and the
   sequential pipeline, in its own venv via ``benchmarks/llmc_worker.py``; timed around ``oneshot``.
4. Decode NLL: the dense model's greedy continuations of ``--eval-prompts`` GSM8K-test prompts are
   teacher-forced through the dense and both pruned models; NLL is averaged over the generated
   positions only.
Results: a side-by-side table and ``benchmarks/results/e2e_<calib>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_sparsegpt import llmc_python  # noqa: E402  (shared venv lookup)


def make_recipe(args: argparse.Namespace, true_sequential: bool) -> dict:
    """A resolved rac recipe for the benchmark (the pipeline would pass the same dict to the stages)."""
    from rac.recipe.schema import fill_defaults

    source = {"dataset": "c4", "field": "text", "answer_field": None} if args.calib == "text" \
        else {"dataset": "gsm8k_train"}
    recipe = {
        "version": 1,
        "model": {"id": args.model, "dtype": "float32"},
        "calibration": {"kind": args.calib, "sources": [source], "budget": {"tokens": args.tokens},
                        "text_seq_len": args.seq_len, "max_prompt_tokens": 384, "seed": args.seed},
        "prune": {"method": "sparsegpt", "sparsity": args.sparsity, "block_size": 128, "dampening": 0.01,
                  "sequential": True, "true_sequential": true_sequential, "batch_size": args.batch_size},
        "run": {"device": "cpu"},
    }
    return fill_defaults(recipe)


def run_rac(recipe: dict, work: Path) -> dict:
    """The hessian and prune stages with a fresh cache; returns timings and artifact dirs."""
    from rac.models.load import resolve_model
    from rac.pipeline.cache import Cache
    from rac.pipeline.stage import StageContext
    from rac.stages import hessian, prune

    identity = resolve_model(recipe["model"]).identity
    work.mkdir(parents=True)
    cache = Cache(work / "cache")  # fresh per run: nothing reused between the rac rows
    dirs, seconds, summaries = {}, {}, {}
    for stage in (hessian.STAGE, prune.STAGE):
        out = work / stage.name
        out.mkdir(parents=True)
        ctx = StageContext(recipe=recipe, out_dir=out, inputs=dict(dirs), cache=cache, device="cpu",
                           model_identity=identity, run_dir=work)
        t0 = time.perf_counter()
        summaries[stage.name] = stage.run(ctx)
        seconds[stage.name] = time.perf_counter() - t0
        dirs[stage.name] = out
    report = json.loads((dirs["prune"] / "report.json").read_text())
    sgpt = sum(m["seconds"] for m in report["modules"])
    return {"seconds": sum(seconds.values()), "stage_seconds": seconds, "sparsegpt_seconds": sgpt,
            "summaries": summaries, "dirs": dirs}


def run_llmc(python: str, model_dir: str, calib: Path, args: argparse.Namespace, work: Path) -> dict | None:
    out, js = work / "llmc_weights.safetensors", work / "llmc.json"
    batch = args.batch_size if args.calib == "text" else 1  # variable-length prompts: no pads in its Hessians
    cmd = [python, str(HERE / "llmc_worker.py"), "oneshot", "--model", model_dir, "--calib", str(calib),
           "--out", str(out), "--json", str(js), "--sparsity", str(args.sparsity), "--batch-size", str(batch)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"llm-compressor worker failed (rc {proc.returncode}); column skipped:\n{proc.stderr[-3000:]}",
              file=sys.stderr)
        return None
    result = json.loads(js.read_text())
    result.update(process_seconds=wall, batch_size=batch, weights=out)
    return result


def sparsity_of(model: torch.nn.Module) -> float:
    """Share of zeros over the decoder blocks' linear weights."""
    zeros = total = 0
    for name, p in model.named_parameters():
        if ".layers." in name and name.endswith("proj.weight"):
            zeros, total = zeros + int((p == 0).sum()), total + p.numel()
    return zeros / max(total, 1)


@torch.no_grad()
def mask_agreement(ours: dict, theirs: dict, blocks: int) -> dict:
    """Share of equal zero/non-zero decisions per block (first, second, middle, last), all linear weights."""
    picks = sorted({0, 1, blocks // 2, blocks - 1})
    out = {}
    for b in picks:
        names = [k for k in theirs if f".layers.{b}." in k and k in ours]
        same = sum(int(((ours[k] == 0) == (theirs[k] == 0)).sum()) for k in names)
        out[b] = same / max(sum(theirs[k].numel() for k in names), 1)
    return out


def decode_nll(model: torch.nn.Module, sequences: list[tuple[list[int], list[int]]]) -> float:
    """Mean NLL over the generated positions of (prompt, continuation) pairs, teacher-forced."""
    from rac.eval.probe import token_states

    total, count = 0.0, 0
    for prompt, cont in sequences:
        _, nll = token_states(model, prompt + cont)
        total += float(nll[len(prompt):].sum())
        count += len(cont)
    return total / count


def held_out(dense: torch.nn.Module, tokenizer, args: argparse.Namespace) -> list[tuple[list[int], list[int]]]:
    """The dense model's greedy continuations of the first GSM8K-test prompts."""
    from rac.calibration.datasets import load_records
    from rac.calibration.render import render_prompt
    from rac.eval.probe import greedy_rollouts

    records = load_records({"dataset": "gsm8k_test", "field": "question"})[: args.eval_prompts]
    prompts = [render_prompt(tokenizer, r["question"], {"chat_template": True}) for r in records]
    conts = greedy_rollouts(dense, tokenizer, prompts, args.eval_tokens, batch_size=len(prompts))
    return list(zip(prompts, conts))


def main() -> None:
    ap = argparse.ArgumentParser(description="End-to-end prune: rac vs llm-compressor, same calibration tokens")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--calib", default="text", choices=("text", "prompt"))
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0, help="calibration sampling seed (another draw of documents)")
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--batch-size", type=int, default=8, help="calibration sequences per forward batch (both tools)")
    ap.add_argument("--eval-prompts", type=int, default=16)
    ap.add_argument("--eval-tokens", type=int, default=128)
    ap.add_argument("--orders", nargs="+", default=["true_sequential", "one_pass"],
                    choices=("true_sequential", "one_pass"), help="rac within-block orders to run (one row each)")
    ap.add_argument("--llmc-python", default=None, help="llm-compressor venv python (env LLMC_PYTHON)")
    ap.add_argument("--no-llmc", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from rac.calibration.mix import CALIB_TENSORS
    from rac.models.load import apply_weights, checkpoint, load_model

    recipes = {order: make_recipe(args, order == "true_sequential") for order in args.orders}
    recipe = recipes[args.orders[0]]
    model_dir = checkpoint(recipe["model"]).path  # GGUF sources: the converted folder
    load = os.getloadavg()
    print(f"model={args.model} calib={args.calib} tokens={args.tokens} sparsity={args.sparsity} "
          f"threads={torch.get_num_threads()} torch={torch.__version__} load={load[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench_e2e_") as tmp:
        work = Path(tmp)
        racs = {}
        for order in args.orders:
            racs[order] = run_rac(recipes[order], work / order)
            r = racs[order]
            print(f"rac {order}: {r['seconds']:.1f} s (hessian stage {r['stage_seconds']['hessian']:.1f} s, "
                  f"prune stage {r['stage_seconds']['prune']:.1f} s, SparseGPT {r['sparsegpt_seconds']:.1f} s)",
                  flush=True)
        first = racs[args.orders[0]]
        calib = first["dirs"]["hessian"] / CALIB_TENSORS
        stats = first["summaries"]["hessian"]
        print(f"calibration: {stats['sequences']} sequences, {stats['tokens']} tokens")
        python = None if args.no_llmc else llmc_python(args.llmc_python)
        llmc = run_llmc(python, model_dir, calib, args, work) if python else None
        if llmc:
            print(f"llm-compressor: {llmc['seconds']:.1f} s in oneshot (SparseGPT {llmc['sparsegpt_seconds']:.1f} s, "
                  f"batch {llmc['batch_size']}), {llmc['process_seconds']:.1f} s with process start")

        dense, tokenizer = load_model(recipe["model"], "cpu")
        dense.eval()
        t0 = time.perf_counter()
        evalset = held_out(dense, tokenizer, args)
        gen_s = time.perf_counter() - t0
        n_tokens = sum(len(c) for _, c in evalset)
        print(f"held-out: {len(evalset)} GSM8K-test prompts, {n_tokens} dense greedy tokens ({gen_s:.0f} s)")
        rows = {"dense": {"seconds": None, "nll": decode_nll(dense, evalset), "sparsity": sparsity_of(dense)}}
        for order, r in racs.items():
            pruned, _ = load_model(recipe["model"], "cpu")
            apply_weights(pruned, r["dirs"]["prune"])
            rows[f"rac {order}"] = {"seconds": r["seconds"], "sparsegpt_seconds": r["sparsegpt_seconds"],
                                    "nll": decode_nll(pruned.eval(), evalset), "sparsity": sparsity_of(pruned)}
        if llmc:
            from safetensors.torch import load_file

            other, _ = load_model(recipe["model"], "cpu")
            missing = other.load_state_dict(load_file(str(llmc["weights"])), strict=False).unexpected_keys
            if missing:
                raise SystemExit(f"llm-compressor weights with unknown names: {missing[:3]}")
            rows["llmc"] = {"seconds": llmc["seconds"], "sparsegpt_seconds": llmc["sparsegpt_seconds"],
                            "nll": decode_nll(other.eval(), evalset), "sparsity": sparsity_of(other)}
            theirs = load_file(str(llmc["weights"]))
            for order, r in racs.items():
                agree = mask_agreement(load_file(str(r["dirs"]["prune"] / "weights.safetensors")), theirs,
                                       len(other.model.layers))
                rows[f"rac {order}"]["mask_agreement_with_llmc"] = agree
                print(f"mask agreement rac {order} vs llm-compressor by block: "
                      + ", ".join(f"{b}: {v:.4f}" for b, v in agree.items()))

    print(f"\n{'':24s}{'prune s':>10s}{'SparseGPT s':>13s}{'sparsity':>10s}{'decode NLL':>12s}")
    for name, r in rows.items():
        sec = "-" if r["seconds"] is None else f"{r['seconds']:.1f}"
        sg = f"{r['sparsegpt_seconds']:.1f}" if r.get("sparsegpt_seconds") is not None else "-"
        print(f"{name:24s}{sec:>10s}{sg:>13s}{r['sparsity']:10.4f}{r['nll']:12.4f}")
    ratios = {}
    for order in racs if "llmc" in rows else ():
        row, ref = rows[f"rac {order}"], rows["llmc"]
        ratios[order] = {"prune_speedup": ref["seconds"] / row["seconds"],
                         "sparsegpt_speedup": ref["sparsegpt_seconds"] / row["sparsegpt_seconds"],
                         "nll_rac_minus_llmc": row["nll"] - ref["nll"]}
        print(f"rac {order} vs llm-compressor: {ratios[order]['prune_speedup']:.2f}x faster end to end, "
              f"{ratios[order]['sparsegpt_speedup']:.2f}x in SparseGPT, decode NLL {row['nll']:.4f} vs "
              f"{ref['nll']:.4f} (dense {rows['dense']['nll']:.4f})")
    result = {"rows": rows, "ratios": ratios, "calibration": stats,
              "rac_stage_seconds": {order: r["stage_seconds"] for order, r in racs.items()},
              "llmc": {k: v for k, v in (llmc or {}).items() if k != "weights"},
              "eval": {"prompts": len(evalset), "tokens": n_tokens, "t_max": args.eval_tokens},
              "config": {**vars(args), "threads": torch.get_num_threads(), "torch": torch.__version__,
                         "loadavg_start": load, "loadavg_end": os.getloadavg(),
                         "date": time.strftime("%Y-%m-%d %H:%M")}}
    out = Path(args.out) if args.out else HERE / "results" / f"e2e_{args.calib}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
