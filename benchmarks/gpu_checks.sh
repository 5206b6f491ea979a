#!/usr/bin/env bash
# Every GPU-only measurement of issue 7 in one call, for a session that is lent a GPU:
#   bash benchmarks/gpu_checks.sh            # results under ${OUT:-benchmarks/results}/gpu
# Needs torch with CUDA, transformers and rac importable (PYTHONPATH=. is set here); llm-compressor is
# not needed: bench_sparsegpt's "classic" column is the same per-column loop, and the issue's
# llm-compressor figures (H200, 7B shapes) are the reference. Each step has its own time limit, so
# one slow step does not cost the others; the script never fails on a step, it logs it.
set -u
TAIL=${TAIL:-14}
source "$(dirname "$0")/gpu_lib.sh" 150

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$DEST/gpu.txt"
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$DEST/gpu.txt"

# Hessian: rac's accumulation vs bf16 / TF32 / float32 GEMMs at 7B widths (goal: >= 0.8 of bf16 GEMM)
step hessian $PY benchmarks/bench_hessian.py --device cuda --shapes 7b --rows 16384 --repeats 5 \
    --out "$DEST/hessian_cuda.json"
# SparseGPT per module at 7B shapes: rac grouped / per module / classic loop (llm-compressor's algorithm)
step sparsegpt $PY benchmarks/bench_sparsegpt.py --device cuda --shapes 7b --repeats 3 --no-llmc \
    --out "$DEST/sparsegpt_7b_cuda_unstructured.json"
step sparsegpt_2of4 $PY benchmarks/bench_sparsegpt.py --device cuda --shapes 7b --repeats 2 --no-llmc \
    --pattern 2:4 --out "$DEST/sparsegpt_7b_cuda_2of4.json"
# FP8 (torch._scaled_mm) and 2:4 (semi-structured) linear kernels vs dense bf16 at 7B shapes
step kernels $PY - <<'EOF'
import json, os
from rac.eval.throughput import linear_speedups
rows = linear_speedups([(3584, 3584), (18944, 3584), (3584, 18944)], "cuda", token_counts=(16, 256, 4096))
for r in rows:
    print(r["shape"], r["tokens"], f"dense {r['dense_ms']:.3f} ms", "fp8", r["fp8_speedup"], "2:4", r["sparse24_speedup"],
          r.get("fp8_error", ""), r.get("sparse24_error", ""))
dest = os.path.join(os.environ.get("OUT", "benchmarks/results"), "gpu", "kernels_cuda.json")
with open(dest, "w") as f:
    json.dump(rows, f, indent=2)
EOF
echo "results in $DEST"
