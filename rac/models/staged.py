"""True-sequential pruning of one decoder block at the cost of about one block forward pass.

"True sequential" prunes the input groups of a block in order (attn_in -> attn_out -> mlp_in ->
mlp_out), each group's Hessian taken through the groups already pruned, so o_proj and down_proj
correct the error of the layers feeding them. Done naively that is four (partial) block replays plus
one more for the block's output. Here each piece of the block runs once, on stored intermediate
activations (CPU, like the block inputs):

1. attn_in: the replay stops at the first q/k/v input (only the input norm runs).
2. attn_out: the replay stops at o_proj's input ``a``, recorded (norm, q/k/v, attention).
3. mlp_in: replay with the attention module replaced by ``o_proj(a)`` (o_proj now pruned); it
   stops at the MLP's input ``m``; the attention output ``s`` is kept.
4. mlp_out: the MLP alone runs on ``m`` up to down_proj's input ``d``, recorded.
5. output: replay with attention -> ``s`` and MLP -> ``down_proj(d)`` (down_proj now pruned).

This needs three facts about the block, checked on a real batch by :func:`verify_layout` (else the
caller falls back to plain replays): the attention module's output is o_proj's output (or a tuple
with it first and ``None`` after), the MLP module takes one positional tensor and its output is
down_proj's output. Everything else
(norms, residuals, extra norms as in Gemma) still runs in the block's own ``forward``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rac.models.capture import BlockInputs, HessianSums, StopForward, add_to_hessian, to_device

# The MLP's down_proj inputs (the widest activations) are kept for step 5 only up to this size;
# above it step 5 runs the (pruned) MLP again instead.
MAX_STORED_MLP_BYTES = 2 * 2**30
GROUPS = ("attn_in", "attn_out", "mlp_in", "mlp_out")


@dataclass(frozen=True)
class StagedLayout:
    """The modules the staged replay substitutes, and the attention output's tail (all ``None``)."""

    modules: dict[str, nn.Linear]  # first linear of each input group
    attn: nn.Module  # parent of the attn_out linear (o_proj)
    mlp: nn.Module  # parent of the mlp_out linear (down_proj)
    attn_tail: tuple | None  # None: the attention returns a bare tensor


def _parent(block: nn.Module, module: nn.Module) -> nn.Module | None:
    for name, child in block.named_modules():
        if any(sub is module for sub in child.children()):
            return child if name else None  # the block itself is not a substitutable parent
    return None


def find_layout(block: nn.Module, groups: dict[str, list[Any]]) -> tuple[dict[str, nn.Linear], nn.Module, nn.Module] | None:
    """(first linear per group, attention module, MLP module), or None when the block lacks one of
    the four groups or the attention/MLP parents (then only plain replays apply)."""
    if any(g not in groups for g in GROUPS):
        return None
    modules = {g: groups[g][0].module for g in GROUPS}
    attn, mlp = _parent(block, modules["attn_out"]), _parent(block, modules["mlp_out"])
    if attn is None or mlp is None or attn is mlp:
        return None
    return modules, attn, mlp


@torch.no_grad()
def verify_layout(block: nn.Module, groups: dict[str, list[Any]], inputs: BlockInputs, device: str) -> StagedLayout | None:
    """Run the first batch through the block and check the two facts the staged replay relies on."""
    found = find_layout(block, groups)
    if found is None or len(inputs) == 0:
        return None
    modules, attn, mlp = found
    seen: dict[str, Any] = {}

    def mlp_args(module: nn.Module, args: tuple, kwargs: dict) -> None:
        seen["mlp_args"] = len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor)

    hooks = [
        mlp.register_forward_pre_hook(mlp_args, with_kwargs=True),
        modules["attn_out"].register_forward_hook(lambda m, a, out: seen.__setitem__("o", out)),
        modules["mlp_out"].register_forward_hook(lambda m, a, out: seen.__setitem__("down", out)),
        attn.register_forward_hook(lambda m, a, out: seen.__setitem__("attn", out)),
        mlp.register_forward_hook(lambda m, a, out: seen.__setitem__("mlp", out)),
    ]
    try:
        block(inputs.hidden[0].to(device), **to_device(inputs.kwargs[0], device))
    finally:
        for hook in hooks:
            hook.remove()
    if any(k not in seen for k in ("o", "down", "attn", "mlp")) or seen["mlp"] is not seen["down"] \
            or not seen.get("mlp_args"):
        return None
    out = seen["attn"]
    if out is seen["o"]:
        return StagedLayout(modules, attn, mlp, None)
    if isinstance(out, tuple) and out and out[0] is seen["o"] and all(x is None for x in out[1:]):
        return StagedLayout(modules, attn, mlp, tuple(out[1:]))
    return None


def layout_like(block: nn.Module, groups: dict[str, list[Any]], verified: StagedLayout | None) -> StagedLayout | None:
    """The layout of ``block`` given one verified on another block of the same class."""
    found = find_layout(block, groups) if verified is not None else None
    if found is None or verified is None:
        return None
    return StagedLayout(found[0], found[1], found[2], verified.attn_tail)


@contextmanager
def _replaced(module: nn.Module, outputs: Callable[[], Any]) -> Iterator[None]:
    """``module(...)`` returns ``outputs()`` instead of computing (an instance-level ``forward``)."""
    module.forward = lambda *args, **kwargs: outputs()
    try:
        yield
    finally:
        module.__dict__.pop("forward", None)


class _Recorder:
    """Pre-hooks that record a module's input per batch, add it to a Hessian and/or stop the pass."""

    def __init__(self, sums: HessianSums, weights: list[torch.Tensor], state: dict) -> None:
        self.sums, self.weights, self.state = sums, weights, state
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def watch(self, module: nn.Module, key: str | None, store: list | None, stop: bool) -> None:
        """On each call of ``module``: add its input to Hessian ``key`` (unless None), append it to
        ``store`` (unless None) and stop the pass if ``stop``."""
        def hook(mod: nn.Module, args: tuple) -> None:
            x = args[0]
            if key is not None:
                add_to_hessian(self.sums, key, x, self.weights[self.state["i"]])
            if store is not None:
                store.append(x.detach().cpu())
            if stop:
                raise StopForward

        self.handles.append(module.register_forward_pre_hook(hook))

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _replay(block: nn.Module, inputs: BlockInputs, device: str, state: dict, call: Callable[[int], Any] | None = None) -> list:
    """Run every batch (``block`` on the stored inputs, or ``call(i)``); hooks may stop a pass early."""
    outputs = []
    for i, (hidden, kwargs) in enumerate(zip(inputs.hidden, inputs.kwargs)):
        state["i"] = i
        try:
            out = call(i) if call else block(hidden.to(device), **to_device(kwargs, device))
            outputs.append(out[0] if isinstance(out, (tuple, list)) else out)
        except StopForward:
            pass
    return outputs


@torch.no_grad()
def staged_block(block: nn.Module, layout: StagedLayout, inputs: BlockInputs, device: str, todo: list[str],
                 missing: Callable[[str], bool], on_group: Callable[[str, HessianSums | None], None]) -> list[torch.Tensor]:
    """Prune one block true-sequentially with one pass per piece; returns the pruned block's outputs (CPU).

    ``todo``: the groups to prune, in order. ``missing(g)``, asked just before the pass that sees g's
    inputs (every earlier group already pruned), says whether g's Hessian must be accumulated here.
    ``on_group(g, sums)`` then prunes group g (``sums`` is None when ``missing(g)`` was False)."""
    mods, state = layout.modules, {"i": 0}
    total = float(sum(float(w.double().sum()) for w in inputs.weights))

    def step(watch: list[tuple[nn.Module, str | None, list | None, bool]],
             call: Callable[[int], Any] | None = None) -> HessianSums:
        sums = HessianSums(total_weight=total)
        watch = [(module, key if key in todo and missing(key) else None, store, stop)
                 for module, key, store, stop in watch]
        if all(key is None and store is None for _, key, store, _ in watch):
            return sums  # nothing to record (a cached Hessian): no pass
        recorder = _Recorder(sums, inputs.weights, state)
        for module, key, store, stop in watch:
            recorder.watch(module, key, store, stop)
        try:
            _replay(block, inputs, device, state, call)
            return sums
        finally:
            recorder.close()

    def done(g: str, sums: HessianSums) -> None:
        if g in todo:
            on_group(g, sums if g in sums.H else None)

    if "attn_in" in todo:  # 1. only the input norm runs
        done("attn_in", step([(mods["attn_in"], "attn_in", None, True)]))
    s: list[torch.Tensor] = []
    m: list[torch.Tensor] = []
    to_mlp = [(layout.mlp, None, m, False), (mods["mlp_in"], "mlp_in", None, True)]  # stop at the MLP's first linear
    record_attn = layout.attn.register_forward_hook(lambda mod, a, out: s.append(_first(out).detach().cpu()))
    try:
        if "attn_out" in todo:  # 2. up to o_proj's input
            a: list[torch.Tensor] = []
            done("attn_out", step([(mods["attn_out"], "attn_out", a, True)]))
            o_proj = mods["attn_out"]
            with _replaced(layout.attn, lambda: _wrap(o_proj(a[state["i"]].to(device)), layout.attn_tail)):
                sums = step(to_mlp)  # 3. o_proj(a) -> MLP input
            a.clear()
        else:  # attention unchanged within the block: 2+3 in one pass
            sums = step(to_mlp)
    finally:
        record_attn.remove()
    done("mlp_in", sums)
    d: list[torch.Tensor] = []
    if "mlp_out" in todo:  # 4. the MLP alone, up to down_proj's input
        width = mods["mlp_out"].in_features
        keep = sum(x[..., :1].numel() for x in m) * width * 4 <= MAX_STORED_MLP_BYTES
        done("mlp_out", step([(mods["mlp_out"], "mlp_out", d if keep else None, True)],
                             call=lambda i: layout.mlp(m[i].to(device))))
    m.clear()  # free the MLP inputs
    attn_out = lambda: _wrap(s[state["i"]].to(device), layout.attn_tail)  # noqa: E731
    down = mods["mlp_out"]
    stored_mlp = _replaced(layout.mlp, lambda: down(d[state["i"]].to(device))) if d else nullcontext()
    with _replaced(layout.attn, attn_out), stored_mlp:  # 5. the block's output from the stored pieces
        return [x.detach().cpu() for x in _replay(block, inputs, device, state)]


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def _wrap(x: torch.Tensor, tail: tuple | None) -> Any:
    return x if tail is None else (x, *tail)
