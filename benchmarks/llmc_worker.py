"""llm-compressor side of the rac benchmarks; runs ONLY under the separate llm-compressor venv.

rac never imports llm-compressor. The benchmarks start this script with that venv's interpreter and
exchange tensors through safetensors files and results through JSON:

    V/bin/python benchmarks/llmc_worker.py sparsify --tensors in.safetensors --out out.safetensors \
        --json out.json [--pattern 2:4] [--sparsity 0.5] [--block-size 128] [--dampening 0.01] [--repeats 1]
    V/bin/python benchmarks/llmc_worker.py oneshot --model HF_DIR --calib calibration.safetensors \
        --out weights.safetensors --json out.json [--sparsity 0.5] [--batch-size 8]

``sparsify``: the input holds ``W.<module>`` [out, in] and ``H.<module>`` [in, in]; each module is
pruned with llm-compressor's own ``sparsify_weight`` (the function its SparseGPTModifier calls), timed
per call (best of ``--repeats``), pruned weights written to ``--out`` as ``W.<module>``.
``oneshot``: the HF model folder is pruned by ``oneshot`` with a ``SparseGPTModifier`` and the
sequential pipeline on exactly the token sequences of a rac calibration set (flat ``input_ids`` +
``offsets``); the pruned decoder-layer weights are written to ``--out`` under their state-dict names.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def _nm(pattern: str | None) -> tuple[int, int]:
    """llm-compressor's (prune_n, prune_m): '2:4' prunes 2 of every 4; (0, 0) is unstructured."""
    if not pattern:
        return 0, 0
    n, m = (int(v) for v in pattern.split(":"))
    return n, m


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cmd_sparsify(args: argparse.Namespace) -> dict:
    from llmcompressor.modifiers.pruning.sparsegpt.sgpt_sparsify import sparsify_weight

    tensors = load_file(args.tensors)
    names = sorted(k[2:] for k in tensors if k.startswith("W."))
    prune_n, prune_m = _nm(args.pattern)
    out: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    device = torch.device(args.device)
    for name in names:
        W, H = tensors[f"W.{name}"].float().to(device), tensors[f"H.{name}"].float().to(device)
        module = torch.nn.Linear(W.shape[1], W.shape[0], bias=False, device=device)
        with torch.no_grad():
            module.weight.copy_(W)
        best = float("inf")
        for _ in range(max(1, args.repeats)):
            hessians = {module: H.clone()}  # sparsify_weight consumes (deletes) the dict entry
            _sync(device)
            t0 = time.perf_counter()
            with torch.no_grad():
                _, pruned = sparsify_weight(module, hessians, args.sparsity, prune_n, prune_m,
                                            args.block_size, args.dampening, False)
            _sync(device)
            best = min(best, time.perf_counter() - t0)
        seconds[name] = best
        out[f"W.{name}"] = pruned.detach().cpu().contiguous()
    save_file(out, args.out)
    return {"seconds": seconds, "threads": torch.get_num_threads()}


def _dataset(calib_path: str):
    """A datasets.Dataset of the calibration set's token sequences (no pads: every row its own length)."""
    from datasets import Dataset

    t = load_file(calib_path)
    ids, offsets = t["input_ids"].tolist(), t["offsets"].tolist()
    rows = [ids[a:b] for a, b in itertools.pairwise(offsets)]
    return Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]}), rows


def cmd_oneshot(args: argparse.Namespace) -> dict:
    import llmcompressor.modifiers.pruning.sparsegpt.base as sgpt_base
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning.sparsegpt import SparseGPTModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dataset, rows = _dataset(args.calib)
    lengths = {len(r) for r in rows}
    if args.batch_size > 1 and len(lengths) > 1:
        raise SystemExit("oneshot worker: batch_size > 1 needs equal-length calibration sequences "
                         "(llm-compressor would put pad tokens into its Hessians); use packed text")
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.model)

    # Time llm-compressor's own SparseGPT calls inside oneshot (a timing wrapper, same function).
    inner = sgpt_base.sparsify_weight
    spent = {"seconds": 0.0, "calls": 0}

    def timed_sparsify(*a, **kw):
        t0 = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            spent["seconds"] += time.perf_counter() - t0
            spent["calls"] += 1

    sgpt_base.sparsify_weight = timed_sparsify
    prune_n, prune_m = _nm(args.pattern)
    modifier = SparseGPTModifier(sparsity=args.sparsity, mask_structure=f"{prune_n}:{prune_m}",
                                 block_size=args.block_size, dampening_frac=args.dampening,
                                 targets=["Linear"], ignore=["re:.*lm_head"])
    t0 = time.perf_counter()
    oneshot(model=model, tokenizer=tokenizer, dataset=dataset, recipe=modifier, pipeline="sequential",
            num_calibration_samples=len(rows), shuffle_calibration_samples=False, batch_size=args.batch_size,
            max_seq_length=max(lengths))
    total = time.perf_counter() - t0
    sgpt_base.sparsify_weight = inner
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
             if ".layers." in k and k.endswith("proj.weight")}
    save_file(state, args.out)
    return {"seconds": total, "sparsegpt_seconds": spent["seconds"], "sparsegpt_calls": spent["calls"],
            "sequences": len(rows), "tokens": sum(len(r) for r in rows), "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("sparsify", "oneshot"):
        p = sub.add_parser(name)
        p.add_argument("--out", required=True)
        p.add_argument("--json", required=True)
        p.add_argument("--sparsity", type=float, default=0.5)
        p.add_argument("--pattern", default=None)
        p.add_argument("--block-size", type=int, default=128)
        p.add_argument("--dampening", type=float, default=0.01)
        if name == "sparsify":
            p.add_argument("--tensors", required=True)
            p.add_argument("--repeats", type=int, default=1)
            p.add_argument("--device", default="cpu")
        else:
            p.add_argument("--model", required=True)
            p.add_argument("--calib", required=True)
            p.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    result = cmd_sparsify(args) if args.cmd == "sparsify" else cmd_oneshot(args)
    result.update(torch=torch.__version__, llmcompressor=__import__("llmcompressor").__version__)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
