"""Quantization plans: which precision each layer of a model gets, as data.

A `QuantPlan` is a default precision plus overrides keyed by module paths, written as
human-editable JSON (schema: edgekit/schemas/quant-plan.schema.json). An override applies to the
module it names and everything under it; where keys nest, the longest (most specific) one wins.

Module paths are the ones the user sees in their own model: `named_modules()` of the framework
model, without edgekit's export wrapper (for MobileViT `mobilevit.encoder.layer.2...`, not
`model.mobilevit...`; for the SD UNet `down_blocks.0...`).

Attention products (schema 1.1): the two activation-by-activation matmuls of an attention
block (scores = Q K^T, output = softmax(scores) V) hold no weights and are no modules, so
`overrides` cannot reach them. `attention_matmuls` sets them per attention block: a key is the
path of an attention block (as `edgekit quantize analyze` reports it, or any attention block
around it; the longest matching key wins) and the value is `int8` (both operands of each product
int8, ranges from calibration) or `fp32` (the product computes in float: fp32, or fp16 where the
ops around it are fp16). Products no key names are float. Quantizing them saves no bytes; it can
save time where a runtime has int8 batched matmuls (ONNX Runtime's QDQ MatMul, LiteRT's
BATCH_MATMUL), at the cost of the most rounding-sensitive arithmetic of the model (softmax
probabilities in 256 levels).

Named plans are plans too, built from the model's structure, not special cases elsewhere:
`fp32`, `fp16`, `int8`, `int8-dynamic`, `int8-weight`, `int4-weight`, and `mixed`:
- convolutions and feed-forward linear layers int8 (weights and activations, ranges from
  calibration);
- the attention blocks' projections (query, key, value, output) with int8 weights and their
  activations quantized per run (`int8-dynamic`): their weights shrink like every other layer's,
  while their activations get a range from each input instead of one range fixed at
  calibration. On a target without per-run quantization (Core ML) they get int8 weights computed
  in float (`int8-weight`); on one with neither, fp32;
- the attention arithmetic (Q K^T, softmax, V products) and normalization layers float.
So `mixed` is as small as `int8` (weights are int8 everywhere) while keeping float what rounds
worst. On mobilevit-small it matched or beat all-int8's SQNR on ONNX Runtime, ExecuTorch and
LiteRT and ran faster than fp32 on each (benchmarks/results/quantization-mobilevit-small-*).
A plan that keeps the attention blocks wholly float is a plan file (`"overrides": {block: "fp32"}`),
or what `edgekit quantize plan` picks when the analysis finds them sensitive.
Every named plan keeps the attention products float, `int8` included:
they are what int8 hurts most, they hold no weights to shrink, and two of the four targets'
quantizers (XNNPACK's, coremltools') cannot quantize them, so `--quant int8` means the same
realized precision on every target. A plan file (hand-written, or `edgekit quantize plan
--quantize-matmuls`) puts them at int8 where a target can run them so.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Collection
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgekit.errors import EdgekitError
from edgekit.json_schema import json_schema, write_json_schema

if TYPE_CHECKING:
    from torch import nn

PLAN_SCHEMA_VERSION = "1.1"  # 1.1: attention_matmuls (1.0 plans read unchanged)
SCHEMA_PATH = Path(__file__).parent.parent / "schemas" / "quant-plan.schema.json"


class QuantPlanError(EdgekitError):
    """A plan file that cannot be read, or one that does not fit the model."""

    exit_code = 2


class LayerPrecision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"  # int8 weights and activations, activation ranges from calibration
    INT8_DYNAMIC = "int8-dynamic"  # int8 weights; activations quantized per run
    INT8_WEIGHT = "int8-weight"  # int8 weights only, computed in float
    # 4-bit weights (symmetric, per output channel) only, computed in float: half the bytes of
    # int8 weights, and about 24 dB more rounding noise per layer (6 dB per bit).
    INT4_WEIGHT = "int4-weight"


FLOAT_PRECISIONS = frozenset({LayerPrecision.FP32, LayerPrecision.FP16})


class MatmulPrecision(StrEnum):
    """What an attention block's products can be planned at. No weight-only schemes (there are
    no weights) and no int8-dynamic: no target's quantizer edgekit drives quantizes
    activation-by-activation products per run."""

    FP32 = "fp32"  # float: fp32, or fp16 where the ops around the product compute in fp16
    INT8 = "int8"  # both operands int8, ranges from calibration


NAMED_PLANS = ("fp32", "fp16", "int8", "int8-dynamic", "int8-weight", "int4-weight", "mixed")


class QuantPlan(BaseModel):
    """Default precision + per-module overrides. Hand-editable; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["1.0", "1.1"] = PLAN_SCHEMA_VERSION
    name: str = Field("custom", description="A label for reports: a named plan or 'custom'.")
    component: str | None = Field(
        None,
        description="For pipelines: the component whose module paths the overrides name (e.g. "
        "'unet'); the others export at float precision. Null: every component.",
    )
    default: LayerPrecision = Field(description="Precision of every layer no override names.")
    overrides: dict[str, LayerPrecision] = Field(
        default_factory=dict,
        description="Module path -> precision, for that module and everything under it; the "
        "longest matching path wins.",
    )
    attention_matmuls: dict[str, MatmulPrecision] = Field(
        default_factory=dict,
        description="Attention block path -> precision of its activation-by-activation "
        "products (Q K^T, softmax V), for that block and the attention blocks under it; the "
        "longest matching path wins. Products no key names are float (fp32).",
    )

    def precision_of(self, path: str) -> LayerPrecision:
        return _longest_match(self.overrides, path, self.default)

    def matmul_precision_of(self, block_path: str) -> MatmulPrecision:
        """The precision of the products of the attention block at `block_path`."""
        return _longest_match(self.attention_matmuls, block_path, MatmulPrecision.FP32)

    @property
    def quantizes_activations(self) -> bool:
        """Static int8 layers need calibration data for their activation ranges."""
        return LayerPrecision.INT8 in {self.default, *self.overrides.values()} or (
            MatmulPrecision.INT8 in self.attention_matmuls.values()
        )

    @property
    def uniform_precision(self) -> LayerPrecision | None:
        """The one precision of every layer, or None for a mixed plan (int8 products in a
        plan make it mixed: named plans keep them float)."""
        if MatmulPrecision.INT8 in self.attention_matmuls.values():
            return None
        if all(value == self.default for value in self.overrides.values()):
            return self.default
        return None


def _longest_match(table: dict, path: str, default):
    matches = [key for key in table if path == key or path.startswith(key + ".")]
    return table[max(matches, key=len)] if matches else default


def quantizable_layers(module: nn.Module) -> dict[str, nn.Module]:
    """Path -> layer for every layer a plan can set (convolutions and linear layers), keyed by
    the paths the user sees (see `user_root`)."""
    from torch import nn

    root = user_root(module)
    return {
        path: layer
        for path, layer in root.named_modules()
        if isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Linear)
    }


def user_root(module: nn.Module) -> nn.Module:
    """The user's own model inside edgekit's export wrappers: descend while a module only wraps
    one child and holds no parameters of its own."""
    while True:
        children = list(module.children())
        if len(children) != 1 or list(module.parameters(recurse=False)):
            return module
        module = children[0]


def resolve(plan: QuantPlan, module: nn.Module) -> dict[str, LayerPrecision]:
    """The precision of every quantizable layer under `plan`; refuses keys that match nothing."""
    paths = dict(user_root(module).named_modules())
    for key in plan.overrides:
        if key not in paths:
            close = difflib.get_close_matches(key, list(paths), n=3)
            raise QuantPlanError(
                f"The plan's override '{key}' names no module of this model.",
                hint=(f"did you mean {', '.join(close)}? " if close else "")
                + "module paths are those of the model's named_modules(), e.g. from "
                "`edgekit quantize analyze`.",
            )
    blocks = attention_block_paths(module)
    for key in plan.attention_matmuls:
        if key not in blocks:
            close = difflib.get_close_matches(key, blocks, n=3)
            what = "a module, but no attention block" if key in paths else "no attention block"
            raise QuantPlanError(
                f"The plan's attention_matmuls key '{key}' names {what} of this model.",
                hint=(f"did you mean {', '.join(close)}? " if close else "")
                + "keys are attention block paths, as `edgekit quantize analyze` lists them "
                + ("(this model has none)." if not blocks else "under attention_matmuls."),
            )
    return {path: plan.precision_of(path) for path in quantizable_layers(module)}


def realized_precision(held: set[LayerPrecision], planned: LayerPrecision) -> LayerPrecision | None:
    """What a read-back reports for one planned path, from the precisions its ops hold: where
    they differ (a module called twice, a block with two products), the one that is not the
    plan's, so the check names it; None where nothing was found."""
    others = sorted(held - {planned})
    return others[0] if others else next(iter(held), None)


def product_realization(
    held_by_block: dict[str, set[LayerPrecision]], planned: dict[str, MatmulPrecision]
) -> dict[str, LayerPrecision | None]:
    """`realized_precision` for every planned attention block's products."""
    return {
        block: realized_precision(held_by_block.get(block, set()), LayerPrecision(p.value))
        for block, p in planned.items()
    }


def matmul_refusal(backend: str, blocks: list[str], why: str) -> str:
    """The one line a target gives for int8 attention products it cannot realize."""
    more = f" (and {len(blocks) - 1} more blocks)" if len(blocks) > 1 else ""
    return (
        f"{backend} cannot realize int8 attention products (Q K^T, softmax V) for block "
        f"'{blocks[0]}'{more}: {why}. Plan them fp32 (drop them from attention_matmuls) for "
        f"this target, or export to onnx or tflite, which quantize them."
    )


def attention_block_paths(module: nn.Module) -> list[str]:
    """Every attention block of the user's model, nested ones included (MobileViT's
    `...attention` holds the self-attention `...attention.attention` that runs the products)."""
    return [path for path, m in user_root(module).named_modules() if path and is_attention(m)]


def product_blocks(module: nn.Module) -> list[str]:
    """The attention blocks that compute products themselves: those with no attention block
    inside (the analysis finds the same ones running: the innermost running block owns a
    product)."""
    blocks = attention_block_paths(module)
    return [b for b in blocks if not any(o.startswith(b + ".") for o in blocks)]


# What `mixed` gives the attention blocks' projections: the first of these the target realizes.
MIXED_ATTENTION_PRECISIONS = (
    LayerPrecision.INT8_DYNAMIC,
    LayerPrecision.INT8_WEIGHT,
    LayerPrecision.FP32,
)


def named_plan(
    name: str, module: nn.Module, target_precisions: Collection[LayerPrecision] | None = None
) -> QuantPlan:
    """A named plan for `module`: uniform ones, or `mixed`, derived from its structure.

    `target_precisions` (an exporter's `layer_precisions`) lets `mixed` pick what the target
    realizes for the attention projections; without it (analysis, planning) `mixed` is written
    as ONNX Runtime, ExecuTorch and LiteRT realize it."""
    if name in {"fp32", "fp16", "int8", "int8-dynamic", "int8-weight", "int4-weight"}:
        return QuantPlan(name=name, default=LayerPrecision(name))
    if name == "mixed":
        available = set(target_precisions or MIXED_ATTENTION_PRECISIONS)
        attention = next(p for p in MIXED_ATTENTION_PRECISIONS if p in available)
        attention_blocks, norms = _attention_blocks_and_norms(module)
        return QuantPlan(
            name="mixed",
            default=LayerPrecision.INT8,
            overrides={
                **dict.fromkeys(attention_blocks, attention),
                **dict.fromkeys(norms, LayerPrecision.FP32),
            },
        )
    raise QuantPlanError(
        f"'{name}' is neither a named plan nor a plan file.",
        hint=f"use one of {', '.join(NAMED_PLANS)} or the path of a plan .json.",
    )


def is_attention(module: nn.Module) -> bool:
    """An attention block: the class names it (transformers', diffusers' Attention classes) or
    it is torch's MultiheadAttention."""
    from torch import nn

    return "attention" in type(module).__name__.lower() or isinstance(module, nn.MultiheadAttention)


def _attention_blocks_and_norms(module: nn.Module) -> tuple[list[str], list[str]]:
    """The outermost attention blocks, and the normalization layers outside them: the parts of
    a model rounding hurts most (softmax over rounded scores, statistics of tiny variances)."""
    from torch import nn

    norms = (nn.LayerNorm, nn.GroupNorm)
    blocks: list[str] = []
    other_norms: list[str] = []
    for path, layer in user_root(module).named_modules():
        if not path or any(path.startswith(b + ".") for b in blocks):
            continue
        if is_attention(layer):
            blocks.append(path)
        elif isinstance(layer, norms):
            other_norms.append(path)
    return blocks, other_norms


def load_plan(value: str, module: nn.Module) -> QuantPlan:
    """A named plan, or a plan JSON file, checked against `module`."""
    path = Path(value)
    if value in NAMED_PLANS or path.suffix != ".json":
        plan = named_plan(value, module)
    else:
        plan = read_plan(path)
    resolve(plan, module)  # every override must name a module of this model
    return plan


def read_plan(path: Path) -> QuantPlan:
    if not path.is_file():
        raise QuantPlanError(
            f"No plan file at '{path}'.",
            hint="write one with `edgekit quantize plan`, or name a plan: "
            f"{', '.join(NAMED_PLANS)}.",
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f", line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise QuantPlanError(
            f"{path} is not valid JSON ({exc.args[0].split(':')[0]}{where}).",
            hint="fix the file; its schema is edgekit/schemas/quant-plan.schema.json.",
        ) from exc
    try:
        return QuantPlan.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        allowed = MatmulPrecision if error["loc"][:1] == ("attention_matmuls",) else LayerPrecision
        raise QuantPlanError(
            f"Bad key '{key}' in plan {path}: {error['msg']}.",
            hint=f"precisions are {', '.join(p.value for p in allowed)}; see "
            "edgekit/schemas/quant-plan.schema.json.",
        ) from exc


def plan_json_schema() -> dict:
    return json_schema(QuantPlan, name="quant-plan", version=PLAN_SCHEMA_VERSION)


def write_schema(path: Path = SCHEMA_PATH) -> None:
    write_json_schema(plan_json_schema(), path)


if __name__ == "__main__":
    write_schema()
