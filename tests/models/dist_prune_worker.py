"""One torchrun rank: the hessian and prune stages on a tiny model with a shared cache (test helper)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from rac.models.distributed import init_from_env, is_owner, rank, world_size
from rac.pipeline.cache import Cache
from rac.pipeline.stage import StageContext
from rac.stages import hessian, prune


def main() -> None:
    recipe_file, cache_dir, out_dir = (Path(a) for a in sys.argv[1:4])
    recipe = json.loads(recipe_file.read_text())
    device = init_from_env("cpu")
    assert world_size() == 2, "run me with torchrun --nproc_per_node 2"
    cache = Cache(cache_dir)
    work = out_dir / f"rank{rank()}"
    outs = {}
    for name in ("hessian", "prune"):
        folder = work / name
        folder.mkdir(parents=True)
        ctx = StageContext(recipe=recipe, out_dir=folder, inputs=dict(outs), cache=cache, device=device,
                           model_identity="tiny", run_dir=work)
        summary = (hessian if name == "hessian" else prune).run(ctx)
        outs[name] = folder
    if is_owner():
        shutil.copy(outs["prune"] / "weights.safetensors", out_dir / "weights.safetensors")
        (out_dir / "summary.json").write_text(json.dumps(summary))
    else:
        shutil.copy(outs["prune"] / "weights.safetensors", out_dir / "weights_rank1.safetensors")


if __name__ == "__main__":
    main()
