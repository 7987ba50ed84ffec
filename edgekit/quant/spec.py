"""What an exporter is asked to realize, and the check that it did.

A `QuantSpec` is a `QuantPlan` resolved against one component: the precision of every
quantizable layer (by the user's module path), where those layers sit inside the module the
exporter traces, and the calibration inputs static int8 needs. Every exporter receives one; a
float export is a spec whose layers are all fp32 (or fp16).

After export, each exporter reads its artifact back from disk and reports the precision each
layer actually has (`Exporter.read_layer_precisions`). `check_realized` compares that with the
plan: a layer realized at another precision, or a planned layer the artifact does not show, fails
the export. Converters skip overrides silently (onnxruntime nodes excluded by a name that no
longer exists, torchao module types that match nothing, coremltools op names that are ignored):
this read-back is what catches them.

Attention products (`QuantPlan.attention_matmuls`) are checked the same way: the spec lists the
precision of every attention block's products (`matmuls`), the exporter's read-back reports each
block's products beside the layers (under the block's path, which no conv/linear layer has), and
a product realized at another precision fails the export. Float products read back as fp32
whatever float they compute in: the question a product's check answers is int8 or not.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import BaseModel, Field

from edgekit.quant.plan import (
    FLOAT_PRECISIONS,
    LayerPrecision,
    MatmulPrecision,
    QuantPlan,
    named_plan,
    product_blocks,
    quantizable_layers,
    resolve,
    user_root,
)

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from edgekit.models.base import LoadedModel


class CalibrationInputs(Protocol):
    """Model inputs for calibrating activation ranges, re-iterable and streamed: iterating
    produces one input at a time (read and preprocessed on demand), so memory stays bounded by
    one batch, however many images or prompts there are."""

    count: int
    # "images", "prompts" or "synthetic"; and what the data was, for the manifest.
    kind: str
    description: str
    sha256: str
    warning: str | None

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]: ...


@dataclass(frozen=True)
class QuantSpec:
    plan: QuantPlan
    # Every quantizable layer (user module path) -> the precision the plan gives it.
    layers: dict[str, LayerPrecision]
    # Path of the user's model inside the module the exporter traces: "" when they are the same,
    # "model." when edgekit's export wrapper holds the user's model as `.model`. Traced graphs
    # name layers by the traced module's paths, i.e. `module_prefix + user path`.
    module_prefix: str = ""
    calibration: CalibrationInputs | None = field(default=None, compare=False)
    # Traced module path -> "module.QualifiedClass", for formats whose files spell paths
    # ambiguously (LiteRT tensor names write `down_blocks.0` and `down_blocks_0` alike).
    module_types: dict[str, str] = field(default_factory=dict, compare=False)
    # Every attention block that computes products (user path) -> the precision the plan gives
    # its products (see edgekit.quant.plan).
    matmuls: dict[str, MatmulPrecision] = field(default_factory=dict)

    @property
    def is_quantized(self) -> bool:
        return any(p not in FLOAT_PRECISIONS for p in self.layers.values()) or bool(
            self.int8_matmuls
        )

    @property
    def int8_matmuls(self) -> list[str]:
        """Attention blocks whose products are planned int8."""
        return [path for path, p in self.matmuls.items() if p == MatmulPrecision.INT8]

    @property
    def float_precision(self) -> LayerPrecision:
        """The precision of everything a plan does not quantize: fp16 when the plan's default or
        any float layer asks for fp16, else fp32."""
        asked = {self.plan.default, *self.layers.values()}
        return LayerPrecision.FP16 if LayerPrecision.FP16 in asked else LayerPrecision.FP32

    @property
    def label(self) -> str:
        """The precision label of artifacts, manifests and tolerances: `fp32`, `fp16`, `int8`,
        `int8-dynamic`... for uniform plans, `mixed` or the plan's name otherwise."""
        uniform = set(self.layers.values())
        if len(uniform) == 1 and not self.int8_matmuls and self.plan.uniform_precision is not None:
            return next(iter(uniform)).value
        return self.plan.name if self.plan.name != "custom" else "mixed"

    def traced_path(self, user_path: str) -> str:
        return self.module_prefix + user_path

    def layers_at(self, *precisions: LayerPrecision) -> list[str]:
        return [path for path, p in self.layers.items() if p in precisions]


def quant_spec(
    plan: QuantPlan,
    module: nn.Module,
    *,
    calibration: CalibrationInputs | None = None,
    executed: set[str] | None = None,
) -> QuantSpec:
    """Resolve `plan` against the traced `module` (refusing keys that name no module).

    `executed` (from `executed_layers`) limits the layers and attention blocks to those the
    component runs: a VAE decoder's module holds the encoder too, whose layers no exported graph
    contains."""
    root = user_root(module)
    prefix = next((name for name, m in module.named_modules() if m is root), "")
    layers = resolve(plan, module)
    blocks = product_blocks(module)
    if executed is not None:
        layers = {path: p for path, p in layers.items() if path in executed}
        blocks = [path for path in blocks if path in executed]
    return QuantSpec(
        plan=plan,
        layers=layers,
        matmuls={path: plan.matmul_precision_of(path) for path in blocks},
        module_prefix=f"{prefix}." if prefix else "",
        calibration=calibration,
        module_types={
            name: f"{type(m).__module__}.{type(m).__qualname__}"
            for name, m in module.named_modules()
        },
    )


def executed_layers(model: LoadedModel) -> set[str]:
    """Quantizable layers and product-computing attention blocks (user paths) that one forward
    pass of the component runs."""
    ran: set[str] = set()
    root = user_root(model.module)
    layers = quantizable_layers(model.module)
    modules = dict(root.named_modules())
    layers.update({path: modules[path] for path in product_blocks(model.module)})
    handles = [
        layer.register_forward_hook(lambda *_, path=path: ran.add(path))
        for path, layer in layers.items()
    ]
    try:
        model.run_torch(model.sample_inputs(0))
    finally:
        for handle in handles:
            handle.remove()
    return ran


def float_spec(precision: str, module: nn.Module) -> QuantSpec:
    """A uniform float spec: what `--precision fp32|fp16` means."""
    return quant_spec(named_plan(precision, module), module)


class CalibrationRecord(BaseModel):
    kind: Literal["images", "prompts", "synthetic"]
    description: str
    count: int
    sha256: str = Field(description="Of the calibration inputs, in the order they were used.")
    warning: str | None = None

    @classmethod
    def of(cls, calibration: CalibrationInputs) -> CalibrationRecord:
        return cls(
            kind=calibration.kind,
            description=calibration.description,
            count=calibration.count,
            sha256=calibration.sha256,
            warning=calibration.warning,
        )


class LayerRealization(BaseModel):
    planned: LayerPrecision
    realized: LayerPrecision | None = Field(
        description="What the artifact holds for this layer, read back from the file; null when "
        "no layer of the artifact's graph matches the module path."
    )


class PlanCheck(BaseModel):
    """The plan as realized, layer by layer, read back from the artifact."""

    status: Literal["passed", "failed"]
    evidence: str = Field(description="What was read back, e.g. 'QDQ nodes and weight dtypes'.")
    layers: dict[str, LayerRealization]
    failures: list[str]
    counts: dict[str, int] = Field(description="Realized precision -> number of layers.")
    matmuls: dict[str, LayerRealization] = Field(
        default_factory=dict,
        description="Attention block path -> the precision of its activation-by-activation "
        "products (Q K^T, softmax V), planned and read back from the artifact (fp32: float).",
    )
    matmul_counts: dict[str, int] = Field(
        default_factory=dict,
        description="Realized product precision -> number of attention blocks.",
    )

    @property
    def matmul_summary(self) -> str | None:
        """One line for terminal output, e.g. 'attention products: 2 blocks int8, 1 fp32'."""
        if not self.matmuls:
            return None
        counts = ", ".join(f"{n} {precision}" for precision, n in self.matmul_counts.items())
        return f"attention products (by block): {counts}"


def check_realized(
    spec: QuantSpec, realized: Mapping[str, LayerPrecision | None], *, evidence: str
) -> PlanCheck:
    """Compare what the artifact holds with what the plan asked for, layer by layer."""
    failures: list[str] = []
    layers: dict[str, LayerRealization] = {}
    for path, planned in spec.layers.items():
        found = realized.get(path)
        layers[path] = LayerRealization(planned=planned, realized=found)
        if found is None:
            failures.append(f"layer '{path}' (planned {planned}) is not in the exported graph")
        elif found != planned:
            failures.append(f"layer '{path}' is {found} in the artifact, planned {planned}")
    matmuls: dict[str, LayerRealization] = {}
    for path, planned_products in spec.matmuls.items():
        planned = LayerPrecision(planned_products.value)
        found = realized.get(path)
        matmuls[path] = LayerRealization(planned=planned, realized=found)
        if found is None:
            failures.append(
                f"attention products of '{path}' (planned {planned}) are not in the exported graph"
            )
        elif found != planned:
            failures.append(
                f"attention products of '{path}' are {found} in the artifact, planned {planned}"
            )
    return PlanCheck(
        status="failed" if failures else "passed",
        evidence=evidence,
        layers=layers,
        failures=failures,
        counts=_counts(layers),
        matmuls=matmuls,
        matmul_counts=_counts(matmuls),
    )


def _counts(entries: dict[str, LayerRealization]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in entries.values():
        key = entry.realized.value if entry.realized else "missing"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def unreadable_plan_check(spec: QuantSpec, error: str, *, evidence: str) -> PlanCheck:
    """The verdict when the artifact cannot even be read back (a corrupt file)."""
    return PlanCheck(
        status="failed",
        evidence=evidence,
        layers={
            p: LayerRealization(planned=planned, realized=None)
            for p, planned in spec.layers.items()
        },
        failures=[f"cannot read the layers back from the artifact: {error}"],
        counts={"missing": len(spec.layers)},
        matmuls={
            p: LayerRealization(planned=LayerPrecision(planned.value), realized=None)
            for p, planned in spec.matmuls.items()
        },
        matmul_counts={"missing": len(spec.matmuls)} if spec.matmuls else {},
    )
