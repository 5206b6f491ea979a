"""Sharded safetensors with Hugging Face's own splitter and index format (model.safetensors.index.json)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

INDEX = "model.safetensors.index.json"


def save_sharded(state: dict[str, torch.Tensor], out_dir: Path, max_shard_size: int | str = "5GB") -> list[str]:
    """Write ``state`` as one file or as shards plus an index, exactly like ``save_pretrained``; returns file names."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    split = split_torch_state_dict_into_shards(state, max_shard_size=max_shard_size)
    for filename, names in split.filename_to_tensors.items():
        save_file({name: state[name].contiguous() for name in names}, str(Path(out_dir) / filename),
                  metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (Path(out_dir) / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return sorted(split.filename_to_tensors)
