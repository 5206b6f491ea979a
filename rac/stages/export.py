"""Stage `export`: a Hugging Face folder of the compressed model.

`hf`: safetensors + config + generation config + tokenizer/chat template, loadable by
`AutoModelForCausalLM.from_pretrained`, sharded above `export.max_shard_size` with HF's index. `compressed-tensors`: FP8 W8A8 in the compressed-tensors
layout (fp8 `weight` + per-channel `weight_scale`, `quantization_config` with quant_method
compressed-tensors, dynamic per-token activations) that vLLM and transformers load. Both get a hub
model card (README.md) and `rac_export.json` (recipe, per-scope sparsity, FP8 scheme, metrics).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from torch import nn

from rac.engine.stage import Stage, StageContext
from rac.errors import RacError
from rac.models.compressed import write_compressed_tensors

FORMATS = ("hf", "compressed-tensors")
MARKER = ".rac-export"  # marks a folder written by rac's export


class ExportError(RacError, ValueError):
    """Export settings that cannot produce a loadable model."""


def _write_card(ctx: StageContext, model: nn.Module, out: Path, fmt: str) -> None:
    """README.md (hub model card) and rac_export.json from the recipe, the prune report and the evaluation."""
    import json

    from rac.models.model_card import export_facts, write_card_and_sidecar

    def read(stage: str, name: str) -> dict | None:
        folder = ctx.inputs.get(stage)
        path = Path(folder) / name if folder is not None else None
        return json.loads(path.read_text()) if path is not None and path.is_file() else None

    rows = (read("prune", "report.json") or {}).get("modules")
    report = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
    modules = dict(model.named_modules())
    numel = {str(r["name"]): int(modules[r["name"]].weight.numel()) for r in report
             if r.get("name") in modules and getattr(modules[r["name"]], "weight", None) is not None}
    settings = ctx.settings  # the card records every section (hence the stage's reads)
    recipe = {name: (section.as_dict() if section is not None else None) for name, section in (
        ("model", settings.model), ("calibration", settings.calibration), ("prune", settings.prune),
        ("quantize", settings.quantize), ("evaluate", settings.evaluate), ("export", settings.export),
        ("run", settings.run))}
    write_card_and_sidecar(out, export_facts(recipe, report, numel, read("evaluate", "metrics.json"), fmt))


def write_marker(folder: Path) -> None:
    """Mark ``folder`` as written by rac (only marked folders are replaced by a later export)."""
    import json

    import rac

    (folder / MARKER).write_text(json.dumps({"rac": rac.__version__, "created": time.time()}) + "\n")


def checked_target(value: str, ctx: StageContext) -> Path:
    """``export.path`` resolved (``~`` expanded); refused when it is /, a home directory, the working
    directory or an ancestor, the run or cache directory or an ancestor, or the model."""
    from rac.engine.paths import export_path_problem, resolve_user_path
    from rac.recipe.load import looks_local

    target = resolve_user_path(value)
    model_id = ctx.settings.model.id
    run_dir = Path(ctx.run_dir)
    problem = export_path_problem(target, cache_root=Path(ctx.cache.root), run_dirs=(run_dir, run_dir.parent),
                                  model_paths=[Path(model_id)] if looks_local(model_id) else [])
    if problem:
        raise ExportError(f"export.path {value!r}: refusing to write there: {problem}")
    return target


def check_replaceable(target: Path, overwrite: bool) -> None:
    """Refuse to replace a file, or a non-empty folder rac did not write (unless ``overwrite``)."""
    if target.exists() and not target.is_dir():
        raise ExportError(f"export.path {str(target)!r} exists and is not a folder")
    if target.is_dir() and not overwrite and not (target / MARKER).is_file() and any(target.iterdir()):
        raise ExportError(f"export.path {str(target)!r} exists and was not written by rac (no {MARKER} file); "
                          "choose another path or set export.overwrite: true to replace it")


def publish(out: Path, target: Path, overwrite: bool = False) -> None:
    """Copy ``out`` to ``target`` through a sibling temp folder and renames: on any failure (e.g. a
    full disk) the previous export stays intact and no partial folder is left. An existing folder
    is replaced only when rac wrote it (marker file), it is empty, or ``overwrite`` is set."""
    from rac.engine.paths import safe_rmtree

    check_replaceable(target, overwrite)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".{target.name}.rac-export-*.tmp"):  # left by a killed export
        safe_rmtree(stale, parent)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.rac-export-", suffix=".tmp"))
    try:
        try:
            shutil.copytree(out, tmp, dirs_exist_ok=True)
        except (OSError, shutil.Error) as exc:
            reasons = exc.args[0] if isinstance(exc, shutil.Error) and exc.args else [(None, None, str(exc))]
            reason = reasons[0][2] if isinstance(reasons, list) and reasons else str(exc)
            kept = "the previous export is unchanged" if target.exists() else "nothing was written there"
            raise ExportError(f"export.path {str(target)!r}: copying the export failed ({reason}); {kept}") from exc
        if target.exists():
            aside = parent / f".{target.name}.rac-export-{uuid.uuid4().hex[:8]}.old.tmp"
            os.rename(target, aside)
            try:
                os.rename(tmp, target)
            except BaseException:
                os.rename(aside, target)
                raise
            safe_rmtree(aside, parent)
        else:
            os.rename(tmp, target)
    finally:
        if tmp.exists():
            safe_rmtree(tmp, parent)


def run(ctx: StageContext) -> dict:
    from rac.models.load import apply_weights, load_model

    cfg = ctx.settings.export
    if cfg is None:
        raise ExportError("the export stage needs an export section")
    fmt = cfg.format
    if fmt not in FORMATS:
        raise ExportError(f"export.format: unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    quantize_dir = ctx.inputs.get("quantize")
    if quantize_dir is not None and fmt != "compressed-tensors":
        raise ExportError("export.format: an FP8-quantized model needs format 'compressed-tensors', not 'hf'")
    if quantize_dir is None and fmt == "compressed-tensors":
        raise ExportError("export.format 'compressed-tensors' needs a `quantize` section (FP8); use 'hf' for dense")
    target = checked_target(cfg.path, ctx) if cfg.path else None
    if target is not None:  # before any heavy work
        check_replaceable(target, cfg.overwrite)
    t0 = time.perf_counter()
    out = Path(ctx.out_dir)
    model, tokenizer = load_model(ctx.settings.model.as_dict(), "cpu")
    if ctx.inputs.get("prune") is not None:
        apply_weights(model, ctx.inputs["prune"], ctx.inputs.get("recover"))
    summary: dict = {"format": fmt}
    max_shard = cfg.max_shard_size
    if fmt == "hf":
        model.save_pretrained(str(out), safe_serialization=True, max_shard_size=max_shard)
    else:
        model.config.save_pretrained(str(out))
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(str(out))
        assert quantize_dir is not None  # checked above: compressed-tensors needs a quantize stage
        summary.update(write_compressed_tensors(model, Path(quantize_dir), out, max_shard))
        summary["ignored"] = len(summary["ignored"])
    tokenizer.save_pretrained(str(out))
    summary["files"] = sorted(p.name for p in out.glob("*.safetensors"))
    if cfg.model_card:
        _write_card(ctx, model, out, fmt)
    write_marker(out)
    if target:
        publish(out, target, overwrite=cfg.overwrite)
    summary["path"] = str(target or out)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    ctx.log.info("exported %s model to %s", fmt, summary["path"])
    return summary


STAGE = Stage(
    name="export",
    needs=("prune", "recover", "quantize", "evaluate"),
    reads=("export", "model", "prune", "quantize", "calibration", "evaluate", "run"),
    version="1",
    run=run,
    enabled=lambda r: bool(r.get("export")),
    cached=False,
    description="Hugging Face / compressed-tensors export",
)
