"""Prompt rendering: THE single path from a problem text to prompt token ids.

Rollouts, prompt-only calibration and evaluation all call :func:`render_prompt`, so calibration
conditions differ only in what the recipe changes (system prompt, forced prefix, template on/off).
"""

from __future__ import annotations

from typing import Any

from rac.errors import RacError

DEFAULT_RENDER: dict[str, Any] = {"chat_template": True, "system_prompt": None, "prefix": ""}


class RenderError(RacError, ValueError):
    """The prompt cannot be rendered as the recipe asks (e.g. no chat template on a base model)."""


def render_text(tokenizer: Any, problem: str, render_cfg: dict | None = None) -> str:
    """The prompt as text: chat template with the generation prompt, then the forced prefix."""
    cfg = {**DEFAULT_RENDER, **(render_cfg or {})}
    if not isinstance(problem, str):
        raise RenderError(f"prompt must be a string, got {type(problem).__name__}")
    prefix = cfg.get("prefix") or ""
    if not cfg.get("chat_template", True):
        system = cfg.get("system_prompt")
        return (f"{system}\n\n" if system else "") + problem + prefix
    if not getattr(tokenizer, "chat_template", None):
        raise RenderError(
            "the tokenizer has no chat template; set calibration.render.chat_template: false "
            "to render raw problem text (base models)"
        )
    messages = []
    if cfg.get("system_prompt"):
        messages.append({"role": "system", "content": cfg["system_prompt"]})
    messages.append({"role": "user", "content": problem})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + prefix


def render_prompt(tokenizer: Any, problem: str, render_cfg: dict | None = None) -> list[int]:
    """Prompt token ids for ``problem``.

    With the chat template the rendered text already carries its special tokens, so it is tokenized
    without adding more; raw text (``chat_template: false``) gets the tokenizer's usual BOS handling.
    """
    cfg = {**DEFAULT_RENDER, **(render_cfg or {})}
    text = render_text(tokenizer, problem, cfg)
    add_special = not cfg.get("chat_template", True)
    ids = tokenizer(text, add_special_tokens=add_special)["input_ids"]
    return [int(i) for i in ids]
