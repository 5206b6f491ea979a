"""Helpers for calibration tests: a synthetic rollout artifact."""

from __future__ import annotations

from pathlib import Path

import pytest

from rac.calibration.render import render_prompt
from rac.calibration.rollouts import RolloutSet, write_rollouts


def make_artifact(path: Path, tokenizer, problems: list[str], completions: list[list[int]], *,
                  on_policy: bool = True, dropped: list[str | None] | None = None,
                  prompt_ids: list[list[int]] | None = None, render: dict | None = None) -> RolloutSet:
    """One rollout per problem, written as the rollout stage would."""
    prompts = prompt_ids or [render_prompt(tokenizer, p, render or {}) for p in problems]
    dropped = dropped or [None] * len(problems)
    records = [
        {"prompt_index": i, "sample": 0, "source": 0, "record": i, "problem": p, "answer": None,
         "text": tokenizer.decode(c, skip_special_tokens=True),
         "finish_reason": "stop" if c and c[-1] == tokenizer.eos_token_id else "length",
         "prompt_len": len(prompts[i]), "completion_len": len(c), "correct": None, "dropped": dropped[i]}
        for i, (p, c) in enumerate(zip(problems, completions))
    ]
    rollouts = RolloutSet(records, prompts, completions, {"on_policy": on_policy})
    write_rollouts(path, rollouts)
    return rollouts


@pytest.fixture()
def artifact_factory(tmp_path, tokenizer):
    def build(problems, completions, **kwargs):
        path = tmp_path / "rollout"
        make_artifact(path, tokenizer, problems, completions, **kwargs)
        return path

    return build
