"""Run one decoder block at a time on stored inputs; capture block inputs and linear-layer Hessians.

The inputs of the first block (hidden states plus every keyword argument the model passes to its
layers: position embeddings, attention mask, position ids, ...) are captured once with a forward
pre-hook and kept on CPU. A block is then replayed batch by batch on the compute device, which keeps
peak device memory at one block plus one batch of activations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from rac.algorithms.hessian import accumulate_hessian
from rac.models.blocks import find_blocks


class StopForward(Exception):
    """Raised by a hook to abandon the rest of a forward pass once what we need is recorded."""


@dataclass
class BlockInputs:
    """Per-batch inputs of a decoder block (CPU tensors) and the per-token Hessian weights [B, T]."""

    hidden: list[torch.Tensor]
    kwargs: list[dict[str, Any]]
    weights: list[torch.Tensor]

    def __len__(self) -> int:
        return len(self.hidden)

    def with_hidden(self, hidden: list[torch.Tensor]) -> BlockInputs:
        """Same kwargs and weights (they do not change between blocks), new hidden states."""
        return BlockInputs(hidden, self.kwargs, self.weights)


@dataclass
class HessianSums:
    """Unnormalised weighted Hessians per input key, with the total token weight they summed."""

    H: dict[str, torch.Tensor] = field(default_factory=dict)
    total_weight: float = 0.0


def to_device(obj: Any, device: str | torch.device) -> Any:
    """Move tensors inside nested tuples/lists/dicts; other objects pass through unchanged."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(to_device(o, device) for o in obj)
    if isinstance(obj, list):
        return [to_device(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def move_outside_blocks(model: nn.Module, device: str | torch.device) -> None:
    """Move every parameter and buffer that is not inside a decoder block (embeddings, norms, rotary)."""
    prefix = find_blocks(model)[0] + "."
    for name, param in model.named_parameters():
        if not name.startswith(prefix):
            param.data = param.data.to(device)
    for mod_name, module in model.named_modules():
        if (mod_name + ".").startswith(prefix):
            continue
        for buf_name, buf in list(module._buffers.items()):
            if buf is not None:
                module._buffers[buf_name] = buf.to(device)


def _field(batch: Any, name: str) -> torch.Tensor:
    return batch[name] if isinstance(batch, dict) else getattr(batch, name)


@torch.no_grad()
def capture_block_inputs(model: nn.Module, batches: Iterable[dict], device: str) -> BlockInputs:
    """Record what the first decoder block receives for each batch (``input_ids``, ``attention_mask``,
    ``token_weight``), stopping each forward pass right there. Only non-block weights visit ``device``."""
    first = find_blocks(model)[1][0]
    record: dict[str, Any] = {}

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs.pop("hidden_states")
        record["hidden"] = hidden.detach().cpu()
        record["kwargs"] = to_device({k: v for k, v in kwargs.items() if k != "past_key_values"}, "cpu")
        raise StopForward

    inputs = BlockInputs([], [], [])
    move_outside_blocks(model, device)
    handle = first.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in batches:
            ids, mask, weight = (_field(batch, k) for k in ("input_ids", "attention_mask", "token_weight"))
            try:
                model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
            except StopForward:
                pass
            inputs.hidden.append(record.pop("hidden"))
            inputs.kwargs.append(record.pop("kwargs"))
            inputs.weights.append(weight.float().cpu())
    finally:
        handle.remove()
        move_outside_blocks(model, "cpu")
    return inputs


def _block_output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def run_block(block: nn.Module, inputs: BlockInputs, device: str) -> list[torch.Tensor]:
    """The block's outputs (CPU) for every stored batch; the block must already be on ``device``."""
    outputs = []
    for hidden, kwargs in zip(inputs.hidden, inputs.kwargs):
        out = block(hidden.to(device), **to_device(kwargs, device))
        outputs.append(_block_output(out).detach().cpu())
    return outputs


def add_to_hessian(sums: HessianSums, key: str, x: torch.Tensor, weight: torch.Tensor) -> None:
    """sums.H[key] += X^T (w * X) for one batch of layer inputs (:func:`accumulate_hessian`)."""
    sums.H[key] = accumulate_hessian(sums.H.get(key), x, weight.to(x.device))


@contextmanager
def _hessian_hooks(modules: Mapping[str, nn.Module], sums: HessianSums, state: dict) -> Iterator[None]:
    """Pre-hooks adding each module's input into ``sums.H[key]``; the last one in call order stops the pass."""
    handles = []
    remaining: set[str] = set()

    def make(key: str):
        def hook(module: nn.Module, args: tuple) -> None:
            add_to_hessian(sums, key, args[0], state["weight"])
            remaining.discard(key)
            if not remaining:
                raise StopForward

        return hook

    for key, module in modules.items():
        handles.append(module.register_forward_pre_hook(make(key)))
    state["reset"] = lambda: remaining.update(modules)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def collect_hessians(block: nn.Module, inputs: BlockInputs, modules: Mapping[str, nn.Module], device: str) -> HessianSums:
    """H[key] = sum_t w_t x_t x_t^T over the inputs of ``modules[key]`` (float32, on ``device``).

    One replay of the block; each batch's pass stops as soon as every hooked module has seen its
    input, so Hessians of early layers (q/k/v) cost almost nothing. Pads (weight 0) never count.
    """
    sums = HessianSums()
    if not modules:
        return sums
    state: dict[str, Any] = {}
    with _hessian_hooks(modules, sums, state):
        for hidden, kwargs, weight in zip(inputs.hidden, inputs.kwargs, inputs.weights):
            state["weight"] = weight
            state["reset"]()
            try:
                block(hidden.to(device), **to_device(kwargs, device))
            except StopForward:
                pass
            sums.total_weight += float(weight.double().sum())
    missing = [key for key in modules if key not in sums.H]
    if missing:
        raise RuntimeError(f"linear layers for {missing} were never called by {type(block).__name__}.forward")
    return sums


@contextmanager
def on_device(block: nn.Module, device: str) -> Iterator[nn.Module]:
    """Keep ``block`` on ``device`` for the duration, then send it back to CPU (no-op on CPU)."""
    if device == "cpu":
        yield block
        return
    block.to(device)
    try:
        yield block
    finally:
        block.to("cpu")


class BlockWalker:
    """The inputs of decoder block ``l``, produced lazily: first-block inputs are captured on first
    use, then blocks are replayed (with whatever weights they hold at that moment) only as far as a
    caller asks. Blocks whose Hessians are all cached therefore cost no forward pass at all unless a
    later block needs their outputs."""

    def __init__(self, model: nn.Module, batches: Callable[[], Iterable[Any]], device: str) -> None:
        self.model, self.batches, self.device = model, batches, device
        self.blocks = find_blocks(model)[1]
        self.index = 0
        self.inputs: BlockInputs | None = None
        self.forward_passes = 0

    def inputs_for(self, index: int) -> BlockInputs:
        if self.inputs is None:
            self.inputs, self.index = capture_block_inputs(self.model, self.batches(), self.device), 0
        if index < self.index:
            raise RuntimeError(f"block inputs already advanced past block {index} (now at {self.index})")
        while self.index < index:
            with on_device(self.blocks[self.index], self.device) as block:
                self.inputs = self.inputs.with_hidden(run_block(block, self.inputs, self.device))
            self.forward_passes += 1
            self.index += 1
        return self.inputs

    def advance(self, index: int, outputs: list[torch.Tensor]) -> None:
        """Accept block ``index``'s outputs computed by the caller (e.g. the staged replay), so the
        next block's inputs need no replay of it."""
        if self.inputs is None or self.index != index:
            raise RuntimeError(f"block outputs for {index} given while the walker is at {self.index}")
        self.inputs = self.inputs.with_hidden(outputs)
        self.index += 1
