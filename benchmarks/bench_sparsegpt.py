"""SparseGPT per-module time and reconstruction error, side by side in one run:
rac grouped (one Cholesky per shared input), rac per module, the classic per-column loop (the
reference algorithm, re-typed here) and llm-compressor's own ``sparsify_weight`` (run in its venv).

    OMP_NUM_THREADS=2 python benchmarks/bench_sparsegpt.py [--pattern 2:4] [--repeats 3]
    python benchmarks/bench_sparsegpt.py --device cuda --shapes 7b      # GPU rows

Every method gets the same W and the same H (synthetic: low-rank + noise activations, 2048 tokens)
with block size 128 and dampening 0.01 x mean(diag H). The error column is the relative layer
reconstruction error ||(W - W_hat) X||^2 / ||W X||^2 = tr(dW H dW^T) / tr(W H W^T).
Times are the best of ``--repeats``; each repeat runs rac then llm-compressor, so load changes hit both. llm-compressor is not a rac dependency: it is called through
``benchmarks/llmc_worker.py`` under ``--llmc-python`` (a separate venv); missing -> column skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from rac.algorithms.sparsegpt import sparsegpt_prune, sparsegpt_prune_group

HERE = Path(__file__).resolve().parent
SHAPES = {
    "smollm2": {"hidden": 576, "inter": 1536, "kv": 192},
    "7b": {"hidden": 3584, "inter": 18944, "kv": 512},
}
METHODS = ("rac_grouped", "rac_module", "classic", "llmc")
VENV_HINT = "python -m venv V && V/bin/pip install torch==2.13.0 llmcompressor"


def classic_loop(W: torch.Tensor, H: torch.Tensor, sparsity: float, nm: tuple[int, int] | None,
                 block: int = 128, damp: float = 0.01) -> torch.Tensor:
    """The reference per-column SparseGPT loop (one Cholesky per module, ~12 kernels per column)."""
    W, H = W.clone().float(), H.clone().float()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(H.shape[0], device=H.device)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    cols = W.shape[1]
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1 = W[:, i1:i2].clone()
        Q1, Err1 = torch.zeros_like(W1), torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        if nm is None:
            tmp = W1**2 / torch.diag(Hinv1).reshape(1, -1) ** 2
            thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
            mask1 = tmp <= thresh
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            w, d = W1[:, i], Hinv1[i, i]
            if nm is not None and i % nm[1] == 0:
                tmp = W1[:, i : i + nm[1]] ** 2 / torch.diag(Hinv1)[i : i + nm[1]].reshape(1, -1) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, nm[1] - nm[0], dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W


def hessian(d: int, device: str, seed: int, tokens: int = 2048) -> torch.Tensor:
    """H = X^T X / n of synthetic activations with a few dominant directions (like real ones)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(tokens, 32, generator=g) @ torch.randn(32, d, generator=g) + 0.3 * torch.randn(tokens, d, generator=g)
    X = X.to(device)
    return X.t() @ X / X.shape[0]


def rel_error(W: torch.Tensor, W_hat: torch.Tensor, H: torch.Tensor) -> float:
    """||(W - W_hat) X||^2 / ||W X||^2 from H = X^T X / n."""
    W, delta = W.double(), (W - W_hat.to(W.device)).double()
    H = H.double()
    return float(((delta @ H) * delta).sum() / ((W @ H) * W).sum())


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> tuple[float, object]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def problems(shapes: dict, device: str) -> dict[str, tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Input key -> (H, {module: W}) for one decoder block of the given shapes."""
    h, i, kv = shapes["hidden"], shapes["inter"], shapes["kv"]
    layout = {
        "attn_in": {"q_proj": (h, h), "k_proj": (kv, h), "v_proj": (kv, h)},
        "attn_out": {"o_proj": (h, h)},
        "mlp_in": {"gate_proj": (i, h), "up_proj": (i, h)},
        "mlp_out": {"down_proj": (h, i)},
    }
    out = {}
    for gi, (key, mods) in enumerate(layout.items()):
        H = hessian(next(iter(mods.values()))[1], device, gi)
        Ws = {n: (torch.randn(*shape, generator=torch.Generator().manual_seed(7 * gi + j)) * 0.02).to(device)
              for j, (n, shape) in enumerate(mods.items())}
        out[key] = (H, Ws)
    return out


def llmc_python(explicit: str | None) -> str | None:
    """The llm-compressor venv's interpreter, or None (with a hint on stderr) when it is missing."""
    path = explicit or os.environ.get("LLMC_PYTHON") or "/work/venv-llmc/bin/python"
    if shutil.which(path) or Path(path).is_file():
        return path
    print(f"llm-compressor interpreter {path!r} not found; its column is skipped. Create it with:\n"
          f"  {VENV_HINT}\nand pass --llmc-python V/bin/python (or set LLMC_PYTHON).", file=sys.stderr)
    return None


def run_llmc(python: str, probs: dict, args: argparse.Namespace) -> dict[str, tuple[float, torch.Tensor]] | None:
    """llm-compressor's sparsify_weight on the same W and H, in its own venv; None on failure."""
    from safetensors.torch import load_file, save_file

    with tempfile.TemporaryDirectory(prefix="bench_llmc_") as tmp:
        tensors = {}
        for H, Ws in probs.values():
            for name, W in Ws.items():
                tensors[f"W.{name}"], tensors[f"H.{name}"] = W.cpu().contiguous(), H.cpu().clone()
        src, dst, js = (str(Path(tmp) / n) for n in ("in.safetensors", "out.safetensors", "out.json"))
        save_file(tensors, src)
        cmd = [python, str(HERE / "llmc_worker.py"), "sparsify", "--tensors", src, "--out", dst, "--json", js,
               "--sparsity", str(args.sparsity), "--block-size", "128", "--dampening", "0.01",
               "--repeats", "1", "--device", args.device]
        if args.pattern:
            cmd += ["--pattern", args.pattern]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"llm-compressor worker failed (rc {proc.returncode}); column skipped:\n{proc.stderr[-2000:]}",
                  file=sys.stderr)
            return None
        seconds = json.loads(Path(js).read_text())["seconds"]
        pruned = load_file(dst)
        return {name: (seconds[name], pruned[f"W.{name}"]) for name in seconds}


def run_rac(probs: dict, args: argparse.Namespace, nm: tuple[int, int] | None) -> dict[str, dict]:
    """One timed pass of the three in-process methods: method -> module -> (seconds, pruned W)."""
    res: dict[str, dict] = {m: {} for m in METHODS[:3]}
    res["group_seconds"] = {}
    for key, (H, Ws) in probs.items():
        names = list(Ws)
        tg, out = timed(lambda Ws=Ws, H=H, names=names: sparsegpt_prune_group(
            [Ws[n] for n in names], H, sparsities=args.sparsity, patterns=[args.pattern] * len(names)), args.device)
        res["group_seconds"][key] = tg
        rows = sum(Ws[n].shape[0] for n in names)
        for n, r in zip(names, out):
            res["rac_grouped"][n] = (tg * Ws[n].shape[0] / rows, r.weight)
        for n in names:
            W = Ws[n]
            res["rac_module"][n] = timed(lambda W=W, H=H: sparsegpt_prune(W, H, sparsity=args.sparsity,
                                                                          pattern=args.pattern).weight, args.device)
            res["classic"][n] = timed(lambda W=W, H=H: classic_loop(W, H, args.sparsity, nm), args.device)
    return res


def merge_best(best: dict, new: dict) -> None:
    """Keep, per method and module, the fastest (seconds, weight) seen so far."""
    for method, table in new.items():
        slot = best.setdefault(method, {})
        for name, value in table.items():
            old = slot.get(name)
            t = value[0] if isinstance(value, tuple) else value
            if old is None or t < (old[0] if isinstance(old, tuple) else old):
                slot[name] = value


def report(probs: dict, res: dict, args: argparse.Namespace) -> dict:
    """Print the per-module table and per-block totals; return the JSON-able results."""
    methods = [m for m in METHODS if res.get(m)]
    ref = "llmc" if "llmc" in methods else "classic"
    head = "".join(f"{m + ' s':>15s}" for m in methods) + "".join(f"{'err ' + m:>17s}" for m in methods)
    print(f"{'module':10s}{'shape':>12s}{head}{'speedup grouped':>17s}")
    rows, totals = [], {m: 0.0 for m in methods}
    for H, Ws in probs.values():
        for n, W in Ws.items():
            row = {"module": n, "shape": list(W.shape)}
            for m in methods:
                t, w = res[m][n]
                row[f"{m}_s"], row[f"{m}_err"] = t, rel_error(W, w, H)
                totals[m] += t
            row["speedup_grouped_vs_" + ref] = row[f"{ref}_s"] / row["rac_grouped_s"]
            rows.append(row)
            print(f"{n:10s}{'x'.join(map(str, W.shape)):>12s}" + "".join(f"{row[m + '_s']:15.4f}" for m in methods)
                  + "".join(f"{row[m + '_err']:17.6f}" for m in methods) + f"{row['speedup_grouped_vs_' + ref]:16.1f}x")
    print("per decoder block: " + " | ".join(f"{m} {totals[m]:.3f} s" for m in methods))
    ratios = {f"{ref}/{m}": totals[ref] / totals[m] for m in methods if m != ref}
    print("ratios (higher = rac faster): " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    mean_err = {m: sum(r[f"{m}_err"] for r in rows) / len(rows) for m in methods}
    print("mean relative error: " + ", ".join(f"{m} {v:.6f}" for m, v in mean_err.items()))
    return {"modules": rows, "block_seconds": totals, "ratios": ratios, "mean_rel_error": mean_err,
            "group_seconds": res["group_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description="SparseGPT per module: rac vs classic loop vs llm-compressor")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shapes", default=None, choices=sorted(SHAPES), help="default: smollm2 on cpu, 7b on cuda")
    ap.add_argument("--pattern", default=None, help="N:M pattern, e.g. 2:4 (default: unstructured)")
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--llmc-python", default=None, help="llm-compressor venv python (env LLMC_PYTHON)")
    ap.add_argument("--no-llmc", action="store_true", help="skip the llm-compressor column")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/sparsegpt_<...>.json)")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked but CUDA is not available on this machine")
    shapes = args.shapes or ("7b" if args.device.startswith("cuda") else "smollm2")
    nm = tuple(map(int, args.pattern.split(":"))) if args.pattern else None
    print(f"device={args.device} shapes={shapes} pattern={args.pattern or 'unstructured'} sparsity={args.sparsity} "
          f"threads={torch.get_num_threads()} torch={torch.__version__} repeats={args.repeats}")
    probs = problems(SHAPES[shapes], args.device)
    python = None if args.no_llmc else llmc_python(args.llmc_python)
    res: dict = {}
    for _ in range(args.repeats):  # rac and llm-compressor alternate: load changes hit both alike
        merge_best(res, run_rac(probs, args, nm))
        if python:
            llmc = run_llmc(python, probs, args)
            if llmc is None:
                python = None
            else:
                merge_best(res, {"llmc": llmc})
    result = report(probs, res, args)
    result["config"] = {"device": args.device, "shapes": shapes, "pattern": args.pattern, "sparsity": args.sparsity,
                        "threads": torch.get_num_threads(), "torch": torch.__version__, "repeats": args.repeats,
                        "date": time.strftime("%Y-%m-%d %H:%M")}
    out = Path(args.out) if args.out else HERE / "results" / (
        f"sparsegpt_{shapes}_{args.device.split(':')[0]}_{(args.pattern or 'unstructured').replace(':', 'of')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
