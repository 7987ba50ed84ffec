"""Quantization plans: which precision each layer of a model gets, as data.

A `QuantPlan` is a default precision plus overrides keyed by module paths, written as
human-editable JSON (schema: edgekit/schemas/quant-plan.schema.json). An override applies to the
module it names and everything under it; where keys nest, the longest (most specific) one wins.

Module paths are the ones the user sees in their own model: `named_modules()` of the framework
model, without edgekit's export wrapper (for MobileViT `mobilevit.encoder.layer.2...`, not
`model.mobilevit...`; for the SD UNet `down_blocks.0...`).

Named plans are plans too, built from the model's structure, not special cases elsewhere:
`fp32`, `fp16`, `int8`, `int8-dynamic`, `int8-weight`, `int4-weight`, and `mixed` (convolutions
and linear layers int8; attention blocks and normalization layers kept fp32, as the layers most
sensitive to rounding).
"""

from __future__ import annotations

import difflib
import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgekit.errors import EdgekitError
from edgekit.json_schema import json_schema, write_json_schema

if TYPE_CHECKING:
    from torch import nn

PLAN_SCHEMA_VERSION = "1.0"
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
NAMED_PLANS = ("fp32", "fp16", "int8", "int8-dynamic", "int8-weight", "int4-weight", "mixed")


class QuantPlan(BaseModel):
    """Default precision + per-module overrides. Hand-editable; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["1.0"] = PLAN_SCHEMA_VERSION
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

    def precision_of(self, path: str) -> LayerPrecision:
        matches = [key for key in self.overrides if path == key or path.startswith(key + ".")]
        return self.overrides[max(matches, key=len)] if matches else self.default

    @property
    def quantizes_activations(self) -> bool:
        """Static int8 layers need calibration data for their activation ranges."""
        return LayerPrecision.INT8 in {self.default, *self.overrides.values()}

    @property
    def uniform_precision(self) -> LayerPrecision | None:
        """The one precision of every layer, or None for a mixed plan."""
        if all(value == self.default for value in self.overrides.values()):
            return self.default
        return None


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
    return {path: plan.precision_of(path) for path in quantizable_layers(module)}


def named_plan(name: str, module: nn.Module) -> QuantPlan:
    """A named plan for `module`: uniform ones, or `mixed`, derived from its structure."""
    if name in {"fp32", "fp16", "int8", "int8-dynamic", "int8-weight", "int4-weight"}:
        return QuantPlan(name=name, default=LayerPrecision(name))
    if name == "mixed":
        return QuantPlan(
            name="mixed",
            default=LayerPrecision.INT8,
            overrides=dict.fromkeys(_sensitive_modules(module), LayerPrecision.FP32),
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


def _sensitive_modules(module: nn.Module) -> list[str]:
    """Outermost attention blocks and every normalization layer: the layers rounding hurts most
    (softmax over int8 scores, statistics of tiny variances), so `mixed` keeps them float."""
    from torch import nn

    norms = (nn.LayerNorm, nn.GroupNorm)
    chosen: list[str] = []
    for path, layer in user_root(module).named_modules():
        inside_chosen = any(path.startswith(p + ".") for p in chosen)
        if path and (is_attention(layer) or isinstance(layer, norms)) and not inside_chosen:
            chosen.append(path)
    return chosen


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
        raise QuantPlanError(
            f"Bad key '{key}' in plan {path}: {error['msg']}.",
            hint=f"precisions are {', '.join(p.value for p in LayerPrecision)}; see "
            "edgekit/schemas/quant-plan.schema.json.",
        ) from exc


def plan_json_schema() -> dict:
    return json_schema(QuantPlan, name="quant-plan", version=PLAN_SCHEMA_VERSION)


def write_schema(path: Path = SCHEMA_PATH) -> None:
    write_json_schema(plan_json_schema(), path)


if __name__ == "__main__":
    write_schema()
