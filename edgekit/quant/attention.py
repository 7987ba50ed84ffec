"""Attention matmuls as quantization groups of their own: the two activation-by-activation
products of every attention block (scores = Q K^T, output = softmax(scores) V).

They hold no weights and are no modules, so the per-layer analysis (forward hooks on conv and
linear modules) cannot reach them; yet they are where int8 hurts attention most (softmax
probabilities span orders of magnitude, and 256 levels flatten the small ones). Runtimes that
quantize them feed both operands to the product as int8 (ONNX QDQ MatMul, LiteRT BATCH_MATMUL),
which is what is simulated here: each operand gets the per-tensor affine round trip of
`analyze.fake_quantize_activation`, with its range observed over the calibration inputs
(int8) or taken from each run (int8-dynamic).

How the products are found: a `TorchFunctionMode` sees every torch call made while a model
runs, and forward hooks on the attention blocks tell it which block is running. Inside a block,
each matmul whose operands are both activations (not parameters) is a product of that block,
numbered by call order (0: Q K^T, 1: softmax V for the usual block). `scaled_dot_product_attention`
(diffusers' attention processor, fused in PyTorch) is computed here the reference way (scaled
scores, mask, softmax, weighted sum) so that its two products can be quantized as well; outside
the blocks being quantized, every call runs unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

from edgekit.quant.plan import is_attention, user_root

if TYPE_CHECKING:
    import torch
    from torch import nn

# (block path, product index in the block, operand index 0/1) -> operands' (min, max).
OperandKey = tuple[str, int, int]
# What a product's operands become: (block path, product index, operands) -> operands.
OperandTransform = Callable[[str, int, list["torch.Tensor"]], list["torch.Tensor"]]


def attention_blocks(module: nn.Module) -> dict[str, nn.Module]:
    """Path -> module of every attention block under the user's model (nested ones included:
    the innermost running block owns a product)."""
    root = user_root(module)
    return {path: m for path, m in root.named_modules() if path and is_attention(m)}


@contextmanager
def intercepted_products(module: nn.Module, transform: OperandTransform) -> Iterator[None]:
    """Within the block, every attention product of `module` runs on `transform`'s operands."""
    from torch.overrides import TorchFunctionMode

    running: list[list] = []  # stack of [block path, products seen so far in this call]

    def enter(path: str) -> Callable:
        def hook(_module: nn.Module, _args: tuple) -> None:
            running.append([path, 0])

        return hook

    def leave(_module: nn.Module, _args: tuple, _output: object) -> None:
        running.pop()

    class Products(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if not running:
                return func(*args, **kwargs)
            if func in _matmuls() and _both_activations(args):
                a, b = _operands(running[-1], transform, list(args[:2]))
                return func(a, b, *args[2:], **kwargs)
            if func is _sdpa():
                return _reference_attention(running[-1], transform, *args, **kwargs)
            return func(*args, **kwargs)

    with ExitStack() as stack:
        for path, block in attention_blocks(module).items():
            stack.callback(block.register_forward_pre_hook(enter(path)).remove)
            stack.callback(block.register_forward_hook(leave, always_call=True).remove)
        stack.enter_context(Products())
        yield


def _operands(block: list, transform: OperandTransform, operands: list) -> list:
    path, index = block
    block[1] += 1
    return transform(path, index, operands)


def _matmuls() -> frozenset:
    import torch

    return frozenset(
        {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm}
    )


def _sdpa() -> Callable:
    import torch.nn.functional as F

    return F.scaled_dot_product_attention


def _both_activations(args: tuple) -> bool:
    import torch
    from torch import nn

    return (
        len(args) >= 2
        and all(isinstance(a, torch.Tensor) and not isinstance(a, nn.Parameter) for a in args[:2])
        and all(a.dim() >= 2 for a in args[:2])
    )


def _reference_attention(
    block: list,
    transform: OperandTransform,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """scaled_dot_product_attention as its definition (eval mode: no dropout), its two products
    on transformed operands."""
    import torch

    if enable_gqa:
        repeats = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(repeats, dim=-3)
        value = value.repeat_interleave(repeats, dim=-3)
    q, k = _operands(block, transform, [query, key])
    scores = (q @ k.transpose(-2, -1)) * (scale or 1 / math.sqrt(query.size(-1)))
    if is_causal:
        causal = torch.ones(scores.shape[-2:], dtype=torch.bool).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    probabilities, v = _operands(block, transform, [torch.softmax(scores, dim=-1), value])
    return probabilities @ v


def observe_operand_ranges(module: nn.Module, run: Callable[[], None]) -> dict[OperandKey, tuple]:
    """Min and max of every attention product's operands over what `run` computes (the
    calibration inputs): two numbers per operand, whatever the number of inputs."""
    ranges: dict[OperandKey, list[float]] = {}

    def record(path: str, index: int, operands: list) -> list:
        for position, tensor in enumerate(operands):
            low, high = float(tensor.min()), float(tensor.max())
            seen = ranges.setdefault((path, index, position), [low, high])
            seen[0], seen[1] = min(seen[0], low), max(seen[1], high)
        return operands

    with intercepted_products(module, record):
        run()
    return {key: (low, high) for key, (low, high) in ranges.items()}


def product_blocks(ranges: dict[OperandKey, tuple]) -> dict[str, int]:
    """Block path -> number of products it ran, in model order: the analysis groups."""
    counts: dict[str, int] = {}
    for path, index, _ in ranges:
        counts[path] = max(counts.get(path, 0), index + 1)
    return counts


@contextmanager
def quantized_products(
    module: nn.Module,
    block_path: str,
    *,
    dynamic: bool,
    ranges: dict[OperandKey, tuple],
    fake_quantize: Callable[[torch.Tensor, float, float], torch.Tensor],
) -> Iterator[None]:
    """Within the block, the products of `block_path` run on int8 round trips of their operands:
    observed ranges (static int8) or each run's own (int8-dynamic)."""

    def quantize(path: str, index: int, operands: list) -> list:
        if path != block_path:
            return operands
        quantized = []
        for position, tensor in enumerate(operands):
            if dynamic:
                low, high = float(tensor.min()), float(tensor.max())
            else:
                low, high = ranges[(path, index, position)]
            quantized.append(fake_quantize(tensor, low, high))
        return quantized

    with intercepted_products(module, quantize):
        yield
