"""The rollout artifact: generated traces with their exact token ids, text and provenance.

Files (see docs/architecture.md):
- ``rollouts.jsonl``: one line per rollout: prompt_index, sample, text, finish_reason, prompt_len,
  completion_len, correct (bool | null), plus source, record, problem, answer and ``dropped``
  (null | "truncated" | "incorrect": kept in the file for inspection, skipped by the mix).
- ``tokens.safetensors``: ``prompt_ids``/``prompt_offsets`` (one slice per prompt_index) and
  ``completion_ids``/``completion_offsets`` (one slice per rollout line), flat int32 + int64 offsets.
- ``provenance.json``: model identity, engine and version, sampling params, seed, on_policy, counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from rac.errors import RacError

ROLLOUTS_FILE = "rollouts.jsonl"
TOKENS_FILE = "tokens.safetensors"
PROVENANCE_FILE = "provenance.json"


class RolloutArtifactError(RacError, ValueError):
    """A rollout artifact is missing files or its files disagree with each other."""


@dataclass
class RolloutSet:
    """All rollouts of one artifact; ``records[k]`` belongs to ``completion_ids[k]``."""

    records: list[dict]
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    provenance: dict = field(default_factory=dict)

    def prompt_of(self, k: int) -> list[int]:
        return self.prompt_ids[self.records[k]["prompt_index"]]

    def kept(self) -> list[int]:
        """Indices of rollouts not dropped (truncated / incorrect)."""
        return [k for k, r in enumerate(self.records) if not r.get("dropped")]


def _flat(rows: list[list[int]]) -> tuple[Any, Any]:
    import torch

    offsets = [0]
    for row in rows:
        offsets.append(offsets[-1] + len(row))
    flat = torch.tensor([t for row in rows for t in row], dtype=torch.int32)
    return flat, torch.tensor(offsets, dtype=torch.int64)


def _split(flat: Any, offsets: Any) -> list[list[int]]:
    values, bounds = flat.tolist(), offsets.tolist()
    return [values[a:b] for a, b in pairwise(bounds)]


def write_rollouts(out_dir: Path, rollouts: RolloutSet) -> None:
    """Write the three artifact files into ``out_dir``."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(rollouts.records) != len(rollouts.completion_ids):
        raise RolloutArtifactError("rollout records and completions differ in number")
    with open(out_dir / ROLLOUTS_FILE, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in rollouts.records)
    prompt_ids, prompt_offsets = _flat(rollouts.prompt_ids)
    completion_ids, completion_offsets = _flat(rollouts.completion_ids)
    save_file(
        {
            "prompt_ids": prompt_ids,
            "prompt_offsets": prompt_offsets,
            "completion_ids": completion_ids,
            "completion_offsets": completion_offsets,
        },
        str(out_dir / TOKENS_FILE),
    )
    (out_dir / PROVENANCE_FILE).write_text(json.dumps(rollouts.provenance, indent=2, sort_keys=True) + "\n")


def read_rollouts(artifact_dir: Path) -> RolloutSet:
    """Load an artifact written by :func:`write_rollouts`, checking that its files agree."""
    from safetensors.torch import load_file

    artifact_dir = Path(artifact_dir)
    for name in (ROLLOUTS_FILE, TOKENS_FILE):
        if not (artifact_dir / name).is_file():
            raise RolloutArtifactError(f"rollout artifact {artifact_dir} lacks {name}")
    with open(artifact_dir / ROLLOUTS_FILE, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    tensors = load_file(str(artifact_dir / TOKENS_FILE))
    prompts = _split(tensors["prompt_ids"], tensors["prompt_offsets"])
    completions = _split(tensors["completion_ids"], tensors["completion_offsets"])
    if len(completions) != len(records):
        raise RolloutArtifactError(
            f"{artifact_dir}: {len(records)} rollout lines but {len(completions)} completions in {TOKENS_FILE}"
        )
    for k, record in enumerate(records):
        index = record.get("prompt_index")
        if not isinstance(index, int) or not 0 <= index < len(prompts):
            raise RolloutArtifactError(f"{artifact_dir}: line {k + 1} has bad prompt_index {index!r}")
        if record.get("completion_len") != len(completions[k]) or record.get("prompt_len") != len(prompts[index]):
            raise RolloutArtifactError(f"{artifact_dir}: line {k + 1} lengths disagree with {TOKENS_FILE}")
    provenance_path = artifact_dir / PROVENANCE_FILE
    provenance = json.loads(provenance_path.read_text()) if provenance_path.is_file() else {}
    return RolloutSet(records, prompts, completions, provenance)


def _percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def summarize(rollouts: RolloutSet, n_samples: int = 3) -> dict:
    """Length statistics, finish reasons, drop counts and a few sample texts (for ``rac rollouts show``)."""
    lengths = [len(c) for c in rollouts.completion_ids]
    reasons: dict[str, int] = {}
    dropped: dict[str, int] = {}
    for record in rollouts.records:
        reasons[record["finish_reason"]] = reasons.get(record["finish_reason"], 0) + 1
        if record.get("dropped"):
            dropped[record["dropped"]] = dropped.get(record["dropped"], 0) + 1
    graded = [r["correct"] for r in rollouts.records if r.get("correct") is not None]
    samples = [
        {
            "prompt_index": r["prompt_index"],
            "sample": r["sample"],
            "problem": r.get("problem", ""),
            "text": r["text"],
            "finish_reason": r["finish_reason"],
            "completion_len": r["completion_len"],
        }
        for r in rollouts.records[: max(0, n_samples)]
    ]
    return {
        "rollouts": len(rollouts.records),
        "prompts": len(rollouts.prompt_ids),
        "kept": len(rollouts.kept()),
        "dropped": dropped,
        "finish_reasons": reasons,
        "accuracy": (sum(graded) / len(graded)) if graded else None,
        "prompt_tokens": sum(len(p) for p in rollouts.prompt_ids),
        "completion_tokens": sum(lengths),
        "completion_len": {
            "mean": (sum(lengths) / len(lengths)) if lengths else 0.0,
            "median": _percentile(lengths, 0.5),
            "p90": _percentile(lengths, 0.9),
            "max": max(lengths, default=0),
        },
        "provenance": rollouts.provenance,
        "samples": samples,
    }
