"""ALPS against SparseGPT (and Wanda) per module: layer reconstruction error and time, side by side.

    OMP_NUM_THREADS=2 python benchmarks/bench_alps.py [--sparsity 0.5 0.7] [--pattern 2:4] [--modules q_proj,down_proj]

Every method gets the same W and H (synthetic low-rank + noise activations of one SmolLM2-135M-shaped
block, as in bench_sparsegpt.py) and the same dampening (0.01 x mean diag H). The error column is
||(W - W_hat) X||^2 / ||W X||^2; the ratio column is SparseGPT's error over ALPS's (> 1: ALPS better).
Writes benchmarks/results/alps_<shapes>_<device>.json with the CPU that produced it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sparsegpt import SHAPES, problems, rel_error, timed  # noqa: E402

from rac.algorithms.alps import alps_prune  # noqa: E402
from rac.algorithms.sparsegpt import sparsegpt_prune  # noqa: E402
from rac.algorithms.wanda import wanda_prune  # noqa: E402
from rac.pipeline.inputs import cpu_model  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description="ALPS vs SparseGPT vs Wanda: layer error and time per module")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shapes", default="smollm2", choices=sorted(SHAPES))
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.7])
    ap.add_argument("--pattern", default=None, help="N:M pattern instead of the sparsities, e.g. 2:4")
    ap.add_argument("--modules", default="q_proj,o_proj,up_proj,down_proj", help="comma-separated module names")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    wanted = set(args.modules.split(","))
    probs = problems(SHAPES[args.shapes], args.device)
    settings = [(None, args.pattern)] if args.pattern else [(s, None) for s in args.sparsity]
    print(f"device={args.device} cpu={cpu_model()!r} threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"{'module':10s}{'shape':>11s}{'target':>8s}{'alps err':>11s}{'gpt err':>11s}{'wanda err':>11s}"
          f"{'gpt/alps':>9s}{'alps s':>8s}{'gpt s':>8s}")
    rows = []
    for H, Ws in probs.values():
        for name, W in Ws.items():
            if name not in wanted:
                continue
            for sparsity, pattern in settings:
                s = sparsity if sparsity is not None else 0.5
                t_alps, alps = timed(partial(alps_prune, W, H, sparsity=s, pattern=pattern), args.device)
                t_gpt, gpt = timed(partial(sparsegpt_prune, W, H, sparsity=s, pattern=pattern), args.device)
                wanda = wanda_prune(W, torch.diagonal(H), sparsity=s, pattern=pattern)
                row = {"module": name, "shape": list(W.shape), "target": pattern or s,
                       "alps_err": rel_error(W, alps.weight, H), "sparsegpt_err": rel_error(W, gpt.weight, H),
                       "wanda_err": rel_error(W, wanda.weight, H), "alps_s": t_alps, "sparsegpt_s": t_gpt}
                row["sparsegpt_over_alps"] = row["sparsegpt_err"] / row["alps_err"]
                rows.append(row)
                print(f"{name:10s}{'x'.join(map(str, W.shape)):>11s}{str(row['target']):>8s}{row['alps_err']:11.5f}"
                      f"{row['sparsegpt_err']:11.5f}{row['wanda_err']:11.5f}{row['sparsegpt_over_alps']:8.2f}x"
                      f"{t_alps:8.2f}{t_gpt:8.2f}")
    for target in sorted({str(r["target"]) for r in rows}):
        sel = [r for r in rows if str(r["target"]) == target]
        ratio = sum(r["sparsegpt_err"] for r in sel) / sum(r["alps_err"] for r in sel)
        slow = sum(r["alps_s"] for r in sel) / sum(r["sparsegpt_s"] for r in sel)
        print(f"target {target}: summed error SparseGPT / ALPS = {ratio:.2f}x; time ALPS / SparseGPT = {slow:.1f}x")
    result = {"rows": rows, "config": {"device": args.device, "cpu": cpu_model(), "shapes": args.shapes,
                                       "threads": torch.get_num_threads(), "torch": torch.__version__,
                                       "date": time.strftime("%Y-%m-%d %H:%M")}}
    out = Path(args.out) if args.out else HERE / "results" / f"alps_{args.shapes}_{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
